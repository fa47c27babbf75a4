"""What an import would create, and every reason it cannot: one planner shared by every source format.

An importer reads its files (through the strict parsers) into a `SourceServer` and `SourcePeer`s; `make_plan`
turns them into Bulwark's settings and peers, keeping every key, PSK, address and AllowedIPs, and lists each
conflict (a duplicate name, key or address, an address outside the subnet, a network routed to two peers) and
each line it dropped (PostUp/PreUp/PostDown/PreDown and other wg-quick hooks are never imported as commands).
Nothing here writes anything.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bulwark_vpn.addressing import Pool
from bulwark_vpn.errors import InputError, show_value
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.model import DEFAULT_ALLOWED_IPS, DEFAULT_PORT, IPInterface, IPNetwork, Peer, Settings
from bulwark_vpn.values import parse_peer_name, parse_subnet4, parse_subnet6

# Keys of a wg-quick file that run commands or change the host: reported and dropped, never imported.
HOOK_KEYS = ("preup", "postup", "predown", "postdown")
_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_=+.-]+")


@dataclass(frozen=True)
class SourceServer:
    private_key: PrivateKey
    addresses: tuple[IPInterface, ...]
    listen_port: int | None
    mtu: int | None = None
    interface: str = "wg0"
    # From the clients' configs or the tool's settings: the Endpoint host and port, DNS and AllowedIPs.
    endpoint_host: str | None = None
    endpoint_port: int | None = None
    dns: tuple[str, ...] | None = None
    allowed_ips: tuple[IPNetwork, ...] | None = None


@dataclass(frozen=True)
class SourcePeer:
    name: str
    public_key: PublicKey
    networks: tuple[IPNetwork, ...]  # the server's AllowedIPs for it: its address(es) and routed networks
    source: str  # where it was read, for messages
    private_key: PrivateKey | None = None
    preshared_key: PresharedKey | None = None
    allowed_ips: tuple[IPNetwork, ...] | None = None  # the client's own AllowedIPs, when its config is known
    keepalive: int | None = None
    enabled: bool = True
    dns: tuple[str, ...] | None = None


@dataclass
class Plan:
    """The settings, server key and peers an import creates, with its conflicts, dropped lines and warnings."""

    source: str
    server_key: PrivateKey | None = None
    settings: Settings | None = None
    peers: list[Peer] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from bulwark_vpn.service.peers import PeerInfo
        from bulwark_vpn.service.provision import settings_dict

        settings = self.settings
        return {
            "source": self.source,
            "server_public_key": self.server_key.public_key().to_base64() if self.server_key else None,
            "settings": settings_dict(settings) if settings else None,
            "peers": [PeerInfo.of(p, settings).to_dict() for p in self.peers] if settings else [],
            "conflicts": list(self.conflicts),
            "dropped": list(self.dropped),
            "warnings": list(self.warnings),
        }


def safe_name(raw: str | None, fallback: str) -> tuple[str, bool]:
    """A peer name from free text (a comment, a file name, a wg-easy label): allowed characters kept, others
    turned into '_', cut to 63; the fallback when nothing usable is left. Returns (name, changed)."""
    if raw:
        text = _NAME_CHARS.sub("_", raw.strip()).strip("_").lstrip("-.")[:63]
        try:
            name = parse_peer_name(text)
            return name, name != raw
        except InputError:
            pass
    return fallback, True


def _subnet(server: SourceServer, version: int, plan: Plan) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    address = next((a for a in server.addresses if a.version == version), None)
    if address is None:
        return None
    network = address.network
    try:
        subnet = parse_subnet4(str(network)) if version == 4 else parse_subnet6(str(network))
    except InputError as exc:
        plan.conflicts.append(f"{plan.source}: the server's Address {address} cannot be Bulwark's tunnel subnet "
                              f"({exc.hint or exc.message})")
        return None
    if address.ip != subnet.network_address + 1:
        plan.conflicts.append(f"{plan.source}: the server's Address {address.ip} is not the first address of "
                              f"{subnet}: Bulwark's server takes {subnet.network_address + 1}")
    return subnet


def _most_common(values: list[Any]) -> Any:
    return Counter(values).most_common(1)[0][0] if values else None


def make_plan(plan: Plan, server: SourceServer, peers: list[SourcePeer]) -> Plan:
    """Fill `plan` (which carries the importer's dropped lines and warnings) with settings, peers and conflicts."""
    plan.server_key = server.private_key
    subnet4 = _subnet(server, 4, plan)
    subnet6 = _subnet(server, 6, plan)
    if subnet4 is None and not any(a.version == 4 for a in server.addresses):
        plan.conflicts.append(f"{plan.source}: the server has no IPv4 Address: Bulwark needs an IPv4 tunnel subnet")
    with_client = [p for p in peers if p.allowed_ips is not None]
    allowed = _most_common([p.allowed_ips for p in with_client]) or server.allowed_ips or DEFAULT_ALLOWED_IPS
    dns_values = [p.dns for p in with_client if p.dns is not None]
    dns = _most_common(dns_values) if dns_values else server.dns
    server_ips = {a.ip for a in server.addresses}
    peer_dns = _peer_dns(dns, server_ips, plan)
    for peer in with_client:
        if peer.dns is not None and peer.dns != dns:
            plan.warnings.append(f"{peer.source}: peer '{peer.name}' uses DNS {', '.join(peer.dns) or 'none'}; "
                                 f"Bulwark gives every peer the same DNS ({', '.join(dns or ()) or 'none'}): its "
                                 f"config keeps working, a config rendered again gets the common DNS")
    try:
        settings = Settings(
            interface=server.interface,
            listen_port=server.listen_port or DEFAULT_PORT,
            server_url=server.endpoint_host,
            server_port=server.endpoint_port if server.endpoint_port not in (None, server.listen_port) else None,
            subnet4=subnet4 or Settings().subnet4,  # type: ignore[arg-type]
            subnet6=subnet6,  # type: ignore[arg-type]
            peer_dns=peer_dns,
            allowed_ips=tuple(allowed),
            mtu=server.mtu if server.mtu is None or 1280 <= server.mtu <= 9000 else None,
        )
    except InputError as exc:
        plan.conflicts.append(f"{plan.source}: {exc.line()}")
        return plan
    plan.settings = settings
    plan.peers = _peers(plan, server, peers, settings, allowed)
    return plan


def _peer_dns(dns: tuple[str, ...] | None, server_ips: set, plan: Plan) -> str:
    """The clients' DNS as Bulwark's PEERDNS: the server's own tunnel address means Bulwark's forwarder (auto)."""
    if not dns:
        return ""
    addresses = []
    for item in dns:
        try:
            address = ipaddress.ip_address(item)
        except ValueError:
            plan.warnings.append(f"{plan.source}: the DNS search domain '{show_value(item)}' is not kept "
                                 f"(Bulwark's DNS setting holds server addresses only)")
            continue
        addresses.append(address)
    if addresses and all(a in server_ips for a in addresses):
        return "auto"
    return ", ".join(str(a) for a in addresses)


def _peers(plan: Plan, server: SourceServer, peers: list[SourcePeer], settings: Settings,
           allowed: tuple[IPNetwork, ...]) -> list[Peer]:
    pool4 = Pool(settings.subnet4)
    pool6 = Pool(settings.subnet6) if settings.subnet6 is not None else None
    tunnel = [settings.subnet4] + ([settings.subnet6] if settings.subnet6 else [])
    server_public = server.private_key.public_key()
    names: dict[str, str] = {}
    keys: dict[PublicKey, str] = {}
    addresses: dict[Any, str] = {}
    routed: list[tuple[IPNetwork, str]] = []
    out: list[Peer] = []
    for peer in peers:
        where = f"{peer.source}: peer '{peer.name}'"
        four = [n for n in peer.networks if n.version == 4 and n.prefixlen == 32]
        six = [n for n in peer.networks if n.version == 6 and n.prefixlen == 128]
        address4 = next((n.network_address for n in four if pool4.contains_peer_address(n.network_address)), None)
        address6 = None
        if pool6 is not None:
            address6 = next((n.network_address for n in six if pool6.contains_peer_address(n.network_address)), None)
        ok = True
        if peer.name in names:
            plan.conflicts.append(f"{where}: the name is used twice (also {names[peer.name]}): rename one of them")
            ok = False
        names.setdefault(peer.name, peer.source)
        if peer.public_key == server_public:
            plan.conflicts.append(f"{where}: it holds the server's own public key")
            ok = False
        if peer.public_key in keys:
            plan.conflicts.append(f"{where}: public key {peer.public_key} is used twice (also {keys[peer.public_key]})")
            ok = False
        keys.setdefault(peer.public_key, peer.name)
        if address4 is None:
            shown = ", ".join(str(n) for n in four) or "none"
            plan.conflicts.append(f"{where}: no IPv4 address inside the subnet {settings.subnet4} (its /32: {shown}): "
                                  f"an address outside the subnet cannot be kept")
            ok = False
        for address in (a for a in (address4, address6) if a is not None):
            if address in {a.ip for a in server.addresses}:
                plan.conflicts.append(f"{where}: it has the server's own address {address}")
                ok = False
            elif address in addresses:
                plan.conflicts.append(f"{where}: address {address} is used twice (also '{addresses[address]}')")
                ok = False
            addresses.setdefault(address, peer.name)
        kept = {ipaddress.ip_network((address4, 32))} if address4 is not None else set()
        if address6 is not None:
            kept.add(ipaddress.ip_network((address6, 128)))
        # Everything else in its AllowedIPs is routed to it, as before (a network behind the peer).
        extra = tuple(n for n in peer.networks if n not in kept)
        for net in extra:
            clash = next((s for s in tunnel if s.version == net.version and s.overlaps(net)), None)  # type: ignore[arg-type]
            if clash is not None:
                plan.conflicts.append(f"{where}: the routed network {net} overlaps the tunnel subnet {clash}")
                ok = False
            other = next((name for n, name in routed if n.version == net.version and n.overlaps(net)), None)  # type: ignore[arg-type]
            if other is not None:
                plan.conflicts.append(f"{where}: the routed network {net} is also routed to peer '{other}'")
                ok = False
            routed.append((net, peer.name))
        if not ok or address4 is None:
            continue
        client_allowed = peer.allowed_ips if peer.allowed_ips is not None and peer.allowed_ips != allowed else None
        out.append(Peer(name=peer.name, public_key=peer.public_key, address4=address4,  # type: ignore[arg-type]
                        private_key=peer.private_key, preshared_key=peer.preshared_key,
                        address6=address6, allowed_ips=client_allowed,  # type: ignore[arg-type]
                        server_allowed_ips=extra, keepalive=peer.keepalive, enabled=peer.enabled))
        if peer.private_key is None:
            plan.warnings.append(f"{where}: no client config with its private key: imported as public key only "
                                 f"(its config stays on the device)")
    return out
