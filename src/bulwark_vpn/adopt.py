"""Adopting an existing linuxserver/wireguard `/config`: keep its keys, PSKs and addresses.

Reads `wg_confs/wg0.conf` (or the first `*.conf` there), the peer folders and `.donoteditthisfile`
(the image's record of its original variables), without following any link, and every value through the
strict parsers. Refused with one line naming the file: an interface name (taken from the file name) that is not
valid, a peer at the server's own address (as the file gives it, or as Bulwark renumbers it: the subnet's first
host), a peer outside the tunnel subnet, a peer holding the server's key, two peers with one key or address.
Nothing is written here; the service stores the result.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass
from pathlib import Path

from bulwark_vpn.addressing import Pool
from bulwark_vpn.config import InitRequest, request_from_env
from bulwark_vpn.errors import InputError
from bulwark_vpn.fsutil import SafeFolder
from bulwark_vpn.keys import PrivateKey, PublicKey
from bulwark_vpn.model import Peer, Settings, SettingsUpdate
from bulwark_vpn.render.wgquick import parse_config
from bulwark_vpn.values import parse_interface_name, parse_peer_name, parse_subnet4

_ORIGINAL_NAMES = ("SERVERURL", "SERVERPORT", "PEERDNS", "ALLOWEDIPS", "INTERFACE")


@dataclass(frozen=True)
class Adopted:
    server_key: PrivateKey
    update: SettingsUpdate
    peers: tuple[Peer, ...]
    source: Path


def find_linuxserver_config(folder: SafeFolder) -> str | None:
    """`wg_confs/wg0.conf`, else the first `wg_confs/*.conf` (relative), or None."""
    confs = sorted(n for n in folder.listdir("wg_confs") if n.endswith(".conf") and not n.startswith("."))
    if not confs:
        return None
    chosen = "wg0.conf" if "wg0.conf" in confs else confs[0]
    return f"wg_confs/{chosen}"


def _read_text(folder: SafeFolder, relative: str) -> str:
    try:
        return folder.read_bytes(relative).decode()
    except UnicodeDecodeError:
        raise InputError("cannot adopt a file that is not UTF-8 text", str(folder.path / relative),
                         "fix or remove it") from None


def _original_variables(folder: SafeFolder) -> dict[str, str]:
    """`.donoteditthisfile` holds lines like ORIG_SERVERURL="1.2.3.4"; only the known names are read."""
    try:
        text = _read_text(folder, ".donoteditthisfile")
    except FileNotFoundError:
        return {}
    values = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        name = key.removeprefix("ORIG_")
        if sep and key.startswith("ORIG_") and name in _ORIGINAL_NAMES:
            try:
                parts = shlex.split(value, comments=True) or [""]
            except ValueError:
                continue
            values[name] = parts[0]
    return values


def _subnet_from(original: dict[str, str], server_address: ipaddress.IPv4Interface | None):
    interface = original.get("INTERFACE")  # e.g. "10.13.13" (the /24's first three octets)
    if interface and interface.count(".") == 2:
        return parse_subnet4(f"{interface}.0")
    if server_address is not None:
        prefix = server_address.network.prefixlen
        return parse_subnet4(str(server_address.network) if prefix < 32 else f"{server_address.ip}/24")
    return None


def _client_private_keys(folder: SafeFolder) -> dict[PublicKey, tuple[str, PrivateKey]]:
    """Private keys from peer folders (peer_NAME/peer_NAME.conf or peerN/peerN.conf), by public key. A folder
    whose config cannot be read is skipped: its peer is adopted without its private key."""
    found: dict[PublicKey, tuple[str, PrivateKey]] = {}
    for name in sorted(folder.listdir()):
        if not name.startswith("peer"):
            continue
        info = folder.lstat(name)
        if info is None or not (info.st_mode & 0o170000) == 0o040000:
            continue
        relative = f"{name}/{name}.conf"
        try:
            client = parse_config(_read_text(folder, relative), str(folder.path / relative))
        except (InputError, OSError):
            continue
        key = client.interface.private_key
        found[key.public_key()] = (name, key)
    return found


def _in_tunnel(settings: Settings, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A usable peer address of the tunnel subnet (not its network or broadcast address). An IPv6 peer address
    with no IPv6 subnet on the server (a hand-edited template) is adopted as it is, as before."""
    subnet = settings.subnet4 if address.version == 4 else settings.subnet6
    return subnet is None or Pool(subnet).contains_peer_address(address)


def _name_from_folder(folder: str) -> str:
    return parse_peer_name(folder[len("peer_"):] if folder.startswith("peer_") else folder)


def adopt_linuxserver(folder: SafeFolder) -> Adopted | None:
    """Read a linuxserver layout in the config folder, or None when there is none."""
    relative = find_linuxserver_config(folder)
    if relative is None:
        return None
    source = folder.path / relative
    interface = parse_interface_name(Path(relative).stem, f"interface name of {source}")
    server = parse_config(_read_text(folder, relative), str(source))
    original = _original_variables(folder)
    server_v4 = next((a for a in server.interface.addresses if a.version == 4), None)
    env_like = {name: original[name] for name in ("SERVERURL", "SERVERPORT", "PEERDNS", "ALLOWEDIPS")
                if original.get(name)}
    request: InitRequest = request_from_env(env_like)
    subnet4 = _subnet_from(original, server_v4)
    v6 = next((a for a in server.interface.addresses if a.version == 6), None)
    update = SettingsUpdate(
        interface=interface,
        listen_port=server.interface.listen_port or None,
        subnet4=subnet4,
        subnet6=v6.network if v6 is not None and v6.network.prefixlen < 128 else None,  # type: ignore[arg-type]
        mtu=server.interface.mtu,
    ).merged_over(request.update)
    server_public = server.interface.private_key.public_key()
    # The addresses the file gives the server, and those Bulwark will give it (the first host of the subnet): a
    # file whose server sits at 10.13.13.5 with a peer at 10.13.13.1 would otherwise leave that peer on the
    # renumbered server's own address.
    settings = update.apply_to(Settings())
    server_ips = {a.ip for a in server.interface.addresses} | {a.ip for a in settings.server_addresses}
    clients = _client_private_keys(folder)
    peers: list[Peer] = []
    seen_keys: set[PublicKey] = set()
    seen_addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for index, section in enumerate(server.peers, start=1):
        folder_name, private = clients.get(section.public_key, (section.comment or f"peer_adopted{index}", None))
        addr4 = next((n for n in section.allowed_ips if n.version == 4 and n.prefixlen == 32), None)
        if addr4 is None:
            continue
        addr6 = next((n for n in section.allowed_ips if n.version == 6 and n.prefixlen == 128), None)
        addresses = {addr4.network_address} | ({addr6.network_address} if addr6 is not None else set())
        if section.public_key == server_public:
            raise InputError(f"cannot adopt {source}: a peer holds the server's own key", str(section.public_key),
                             "remove that [Peer] section")
        if addresses & server_ips:
            raise InputError(f"cannot adopt {source}: a peer has the server's own address", str(addr4),
                             "give that peer another address")
        outside = next((a for a in addresses if not _in_tunnel(settings, a)), None)
        if outside is not None:
            raise InputError(f"cannot adopt {source}: a peer's address is outside the tunnel subnet", str(outside),
                             f"the subnet is {settings.subnet4}"
                             f"{f' and {settings.subnet6}' if settings.subnet6 else ''} (from ORIG_INTERFACE in "
                             f".donoteditthisfile or the server's Address): make them agree")
        if section.public_key in seen_keys:
            raise InputError(f"cannot adopt {source}: two peers have the same public key", str(section.public_key),
                             "remove the duplicate [Peer] section")
        if addresses & seen_addresses:
            raise InputError(f"cannot adopt {source}: two peers have the same address", str(addr4),
                             "give each peer its own address")
        seen_keys.add(section.public_key)
        seen_addresses |= addresses
        extra = tuple(n for n in section.allowed_ips if n not in (addr4, addr6))
        try:
            name = _name_from_folder(folder_name)
        except InputError:
            name = f"peer_adopted{index}"
        peers.append(
            Peer(
                name=name,
                public_key=section.public_key,
                private_key=private,
                preshared_key=section.preshared_key,
                address4=addr4.network_address,  # type: ignore[arg-type]
                address6=addr6.network_address if addr6 is not None else None,  # type: ignore[arg-type]
                server_allowed_ips=extra,
                keepalive=section.keepalive,
            )
        )
    return Adopted(server_key=server.interface.private_key, update=update, peers=tuple(peers), source=source)
