"""Adopting an existing linuxserver/wireguard `/config`: keep its keys, PSKs and addresses.

Reads `wg_confs/wg0.conf` (or the first `*.conf` there), the peer folders and `.donoteditthisfile`
(the image's record of its original variables). Nothing is written here; the service stores the result.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from pathlib import Path

from bulwark_vpn.config import InitRequest, request_from_env
from bulwark_vpn.errors import InputError
from bulwark_vpn.keys import PrivateKey, PublicKey
from bulwark_vpn.model import Peer, SettingsUpdate
from bulwark_vpn.render.wgquick import parse_config
from bulwark_vpn.values import parse_peer_name, parse_subnet4


@dataclass(frozen=True)
class Adopted:
    server_key: PrivateKey
    update: SettingsUpdate
    peers: tuple[Peer, ...]
    source: Path


def find_linuxserver_config(config_dir: Path) -> Path | None:
    folder = config_dir / "wg_confs"
    if not folder.is_dir():
        return None
    confs = sorted(folder.glob("*.conf"))
    preferred = [c for c in confs if c.name == "wg0.conf"]
    candidates = preferred or confs
    return candidates[0] if candidates else None


def _original_variables(config_dir: Path) -> dict[str, str]:
    """`.donoteditthisfile` holds lines like ORIG_SERVERURL="1.2.3.4"."""
    path = config_dir / ".donoteditthisfile"
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("ORIG_"):
            parts = shlex.split(value, comments=True) or [""]
            values[key[len("ORIG_"):]] = parts[0]
    return values


def _subnet_from(original: dict[str, str], server_address: ipaddress.IPv4Interface | None):
    interface = original.get("INTERFACE")  # e.g. "10.13.13" (the /24's first three octets)
    if interface and interface.count(".") == 2:
        return parse_subnet4(f"{interface}.0")
    if server_address is not None:
        prefix = server_address.network.prefixlen
        return parse_subnet4(str(server_address.network) if prefix < 32 else f"{server_address.ip}/24")
    return None


def _client_private_keys(config_dir: Path) -> dict[PublicKey, tuple[str, PrivateKey]]:
    """Private keys from peer folders (peer_NAME/peer_NAME.conf or peerN/peerN.conf), by public key."""
    found: dict[PublicKey, tuple[str, PrivateKey]] = {}
    for conf in sorted(config_dir.glob("peer*/peer*.conf")):
        if conf.stem != conf.parent.name:
            continue
        try:
            client = parse_config(conf.read_text(), str(conf))
        except (InputError, OSError):
            continue
        key = client.interface.private_key
        found[key.public_key()] = (conf.parent.name, key)
    return found


def _name_from_folder(folder: str) -> str:
    return parse_peer_name(folder[len("peer_"):] if folder.startswith("peer_") else folder)


def adopt_linuxserver(config_dir: Path) -> Adopted | None:
    """Read a linuxserver layout in `config_dir`, or None when there is none."""
    conf_path = find_linuxserver_config(config_dir)
    if conf_path is None:
        return None
    server = parse_config(conf_path.read_text(), str(conf_path))
    original = _original_variables(config_dir)
    server_v4 = next((a for a in server.interface.addresses if a.version == 4), None)
    env_like = {
        name: original[name]
        for name in ("SERVERURL", "SERVERPORT", "PEERDNS", "ALLOWEDIPS")
        if original.get(name)
    }
    request: InitRequest = request_from_env(env_like)
    subnet4 = _subnet_from(original, server_v4)
    v6 = next((a for a in server.interface.addresses if a.version == 6), None)
    update = SettingsUpdate(
        interface=conf_path.stem,
        listen_port=server.interface.listen_port,
        subnet4=subnet4,
        subnet6=v6.network if v6 is not None and v6.network.prefixlen < 128 else None,
        mtu=server.interface.mtu,
    ).merged_over(request.update)
    clients = _client_private_keys(config_dir)
    peers = []
    for index, section in enumerate(server.peers, start=1):
        folder, private = clients.get(section.public_key, (section.comment or f"peer_adopted{index}", None))
        addr4 = next((n for n in section.allowed_ips if n.version == 4 and n.prefixlen == 32), None)
        if addr4 is None:
            continue
        addr6 = next((n for n in section.allowed_ips if n.version == 6 and n.prefixlen == 128), None)
        extra = tuple(n for n in section.allowed_ips if n not in (addr4, addr6))
        peers.append(
            Peer(
                name=_name_from_folder(folder),
                public_key=section.public_key,
                private_key=private,
                preshared_key=section.preshared_key,
                address4=addr4.network_address,
                address6=addr6.network_address if addr6 is not None else None,
                server_allowed_ips=extra,
                keepalive=section.keepalive,
            )
        )
    return Adopted(server_key=server.interface.private_key, update=update, peers=tuple(peers), source=conf_path)
