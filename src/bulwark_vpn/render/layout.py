"""The linuxserver/wireguard `/config` layout, as pure functions: model -> {relative path: file}.

    wg_confs/wg0.conf                     server config (wg-quick format; PostUp/PostDown left out:
                                          Bulwark's data plane does NAT and forwarding itself)
    server/privatekey-server, server/publickey-server
    peer_NAME/peer_NAME.conf, .png, privatekey-peer_NAME, publickey-peer_NAME, presharedkey-peer_NAME
    (numbered peers: peer1/peer1.conf, ...)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bulwark_vpn.fsutil import PRIVATE_FILE
from bulwark_vpn.keys import PrivateKey, PublicKey
from bulwark_vpn.model import Peer, Settings, WgConfig, WgInterfaceSection, WgPeerSection
from bulwark_vpn.render.wgquick import guard_lines, render_config
from bulwark_vpn.values import format_endpoint, peer_folder

PUBLIC_KEY_FILE = 0o644


@dataclass(frozen=True)
class RenderedFile:
    content: bytes
    mode: int = PRIVATE_FILE


def server_wg_config(settings: Settings, server_key: PrivateKey, peers: list[Peer]) -> WgConfig:
    """The server's wg-quick config: enabled peers only, each with its /32 (/128) and routed networks."""
    return WgConfig(
        interface=WgInterfaceSection(
            private_key=server_key,
            addresses=settings.server_addresses,
            listen_port=settings.listen_port,
            mtu=settings.mtu,
        ),
        peers=tuple(
            WgPeerSection(
                public_key=peer.public_key,
                preshared_key=peer.preshared_key,
                allowed_ips=peer.tunnel_networks(),
                keepalive=peer.keepalive,
                comment=peer.folder_name,
            )
            for peer in peers
            if peer.enabled
        ),
    )


def peer_dns(settings: Settings) -> tuple[str, ...]:
    """The DNS servers a client uses: PEERDNS=auto means the server's tunnel addresses."""
    if settings.peer_dns == "auto":
        return tuple(str(addr.ip) for addr in settings.server_addresses)
    return tuple(item.strip() for item in settings.peer_dns.split(",") if item.strip())


def client_endpoint(settings: Settings, override: str | None = None) -> str | None:
    if override:
        return override
    host = settings.endpoint_host
    return format_endpoint(host, settings.advertised_port) if host else None


def client_wg_config(
    settings: Settings, server_public: PublicKey, peer: Peer, endpoint: str | None = None
) -> WgConfig:
    """A peer's wg-quick config. `endpoint` overrides HOST:PORT (e.g. a forwarded port on the same host)."""
    if peer.private_key is None:
        raise ValueError(f"peer '{peer.name}' has no private key in the store")
    addresses: list = [ipaddress.ip_interface(f"{peer.address4}/32")]
    if peer.address6 is not None:
        addresses.append(ipaddress.ip_interface(f"{peer.address6}/128"))
    return WgConfig(
        interface=WgInterfaceSection(
            private_key=peer.private_key,
            addresses=tuple(addresses),
            mtu=settings.mtu,
            dns=peer_dns(settings),
        ),
        peers=(
            WgPeerSection(
                public_key=server_public,
                preshared_key=peer.preshared_key,
                endpoint=client_endpoint(settings, endpoint),
                allowed_ips=peer.allowed_ips if peer.allowed_ips is not None else settings.allowed_ips,
                keepalive=peer.keepalive,
            ),
        ),
    )


def render_client_config(settings: Settings, server_public: PublicKey, peer: Peer, endpoint: str | None = None) -> str:
    config = client_wg_config(settings, server_public, peer, endpoint)
    header = None
    if config.peers[0].endpoint is None:
        header = "Endpoint unknown: set SERVERURL (bulwark init --server-url HOST) or use --endpoint HOST:PORT"
    return render_config(config, header=header)


def render_server_config_rows(settings: Settings, server_key: PrivateKey, rows) -> str:
    """The server config straight from store rows (name, public key, PSK, address4, address6, routed
    networks as text, keepalive) of enabled peers, without building a model object per peer.

    Byte-identical to `render_config(server_wg_config(...))` (tested); it exists because `peer add` on a
    10,000-peer store must re-render this file in a few milliseconds, not 0.2 s.
    """
    head = render_config(server_wg_config(settings, server_key, []))
    lines: list[str] = []
    for name, public, psk, address4, address6, routed, keepalive in rows:
        lines += ["", "[Peer]", f"# {peer_folder(name)}", f"PublicKey = {public}"]
        if psk:
            lines.append(f"PresharedKey = {psk}")
        nets = [f"{address4}/32"] + ([f"{address6}/128"] if address6 else []) + list(routed)
        lines.append(f"AllowedIPs = {', '.join(nets)}")
        if keepalive is not None:
            lines.append(f"PersistentKeepalive = {keepalive}")
    # Row values are text straight from the store, not model values: the same line guard as every renderer, so a
    # damaged or planted store row can never add a line (a PostUp run as root) to the server config.
    return head + guard_lines(lines) if lines else head


def server_files(settings: Settings, server_key: PrivateKey, rows) -> dict[str, RenderedFile]:
    """wg_confs/IFACE.conf and the server key files; `rows` as for render_server_config_rows."""
    conf = render_server_config_rows(settings, server_key, rows)
    return {
        f"wg_confs/{settings.interface}.conf": RenderedFile(conf.encode()),
        "server/privatekey-server": RenderedFile(f"{server_key.to_base64()}\n".encode()),
        "server/publickey-server": RenderedFile(f"{server_key.public_key()}\n".encode(), PUBLIC_KEY_FILE),
    }


def peer_files(settings: Settings, server_public: PublicKey, peer: Peer) -> dict[str, RenderedFile]:
    """The files of one peer's folder except the QR code (see `qr_path`), which is encoded in batches.

    A peer adopted without its private key gets only its public key (and PSK).
    """
    folder = peer.folder_name
    files = {f"{folder}/publickey-{folder}": RenderedFile(f"{peer.public_key}\n".encode(), PUBLIC_KEY_FILE)}
    if peer.preshared_key is not None:
        files[f"{folder}/presharedkey-{folder}"] = RenderedFile(f"{peer.preshared_key.to_base64()}\n".encode())
    if peer.private_key is not None:
        conf = render_client_config(settings, server_public, peer)
        files[f"{folder}/privatekey-{folder}"] = RenderedFile(f"{peer.private_key.to_base64()}\n".encode())
        files[conf_path(peer)] = RenderedFile(conf.encode())
    return files


def conf_path(peer: Peer) -> str:
    return f"{peer.folder_name}/{peer.folder_name}.conf"


def qr_path(peer: Peer) -> str:
    """The PNG QR code of the peer's config (the file a phone scans)."""
    return f"{peer.folder_name}/{peer.folder_name}.png"
