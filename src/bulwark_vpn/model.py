"""The one canonical model: server settings, peers and the derived client/server configurations.

Every other module (store, renderers, data plane, deploy generators) speaks these types.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Literal

from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.values.names import peer_folder

# The same rule as values.parse_peer_name, checked on every Peer (cheap; the parser gives the message).
_PEER_NAME = re.compile(r"[a-zA-Z0-9_=+][a-zA-Z0-9_=+.-]{0,62}")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Backend = Literal["auto", "kernel", "userspace"]

DEFAULT_INTERFACE = "wg0"
DEFAULT_PORT = 51820
DEFAULT_SUBNET4 = ipaddress.IPv4Network("10.13.13.0/24")
DEFAULT_ALLOWED_IPS: tuple[IPNetwork, ...] = (
    ipaddress.IPv4Network("0.0.0.0/0"),
    ipaddress.IPv6Network("::/0"),
)
DEFAULT_KEEPALIVE = 25
# What each peer gets in the config folder: the linuxserver layout (config, keys, QR code PNG), the same without
# the PNG, or nothing (configs then come from `bulwark peer show` and the API).
FILE_LAYOUTS = ("full", "configs", "none")


@dataclass(frozen=True)
class Settings:
    """Server-wide settings. All fields have a value; partial updates use `SettingsUpdate`."""

    interface: str = DEFAULT_INTERFACE
    listen_port: int = DEFAULT_PORT
    # Host or IP that clients use as Endpoint ("auto": discovered); None until known.
    server_url: str | None = None
    # Port advertised in client Endpoints (a forwarded port); None means the listen port.
    server_port: int | None = None
    subnet4: ipaddress.IPv4Network = DEFAULT_SUBNET4
    subnet6: ipaddress.IPv6Network | None = None
    # "auto" = the server's tunnel address(es), where Bulwark serves DNS; "" = no DNS line; else a list.
    peer_dns: str = "auto"
    allowed_ips: tuple[IPNetwork, ...] = DEFAULT_ALLOWED_IPS
    mtu: int | None = None
    log_confs: bool = False
    backend: Backend = "auto"
    # The one interface tunnel traffic is masqueraded out of; None = every interface but the tunnel.
    egress_interface: str | None = None
    # Last public address discovered for server_url=auto (kept when discovery fails).
    discovered_url: str | None = None
    # Network exposure, closed by default (see docs/deploy.md): peers reach each other; hosts outside the
    # tunnel open connections to peers; peers reach every service of the gateway host (not only DNS and
    # ICMP); networks besides the tunnel whose DNS queries the forwarder answers.
    peer_to_peer: bool = False
    lan_to_peers: bool = False
    host_access: bool = False
    dns_clients: tuple[IPNetwork, ...] = ()
    # The control plane (the HTTP API and web pages): started with the gateway when `serve`; its TCP port, open
    # to peers on the tunnel addresses; the address people open in a browser (share and setup links use it).
    serve: bool = False
    api_port: int = 8080
    api_url: str | None = None
    require_2fa: bool = False  # every user must enrol TOTP before using the API
    audit_retention_days: int = 90
    # Each peer's files in the config folder: one of FILE_LAYOUTS.
    files: str = "full"

    def __post_init__(self) -> None:
        # The same strict parsers as every input path: a Settings holding a value that could add a line to a
        # rendered file cannot exist, whether it came from a flag, a file, an API body or a damaged store.
        from bulwark_vpn import values

        values.parse_interface_name(self.interface)
        if self.egress_interface is not None:
            values.parse_interface_name(self.egress_interface, "egress interface")
        if self.server_url is not None and self.server_url != "":
            values.parse_server_url(self.server_url)
        if self.discovered_url is not None:
            values.parse_host(self.discovered_url, "discovered address")
        if self.peer_dns not in ("auto", ""):
            values.parse_dns_servers(self.peer_dns)
        if self.api_url is not None:
            values.parse_base_url(self.api_url, "API URL")
        if self.files not in FILE_LAYOUTS:
            from bulwark_vpn.errors import InputError

            raise InputError("invalid file layout", self.files, f"use one of {', '.join(FILE_LAYOUTS)}")
        for number, low, high, what in ((self.listen_port, 1, 65535, "listen port"),
                                        (self.server_port, 1, 65535, "server port"),
                                        (self.api_port, 1, 65535, "API port"),
                                        (self.audit_retention_days, 1, 3650, "audit retention"),
                                        (self.mtu, 1280, 9000, "MTU")):
            if number is not None:
                values.parse_int(number, low, high, what, "")

    @property
    def advertised_port(self) -> int:
        return self.server_port if self.server_port is not None else self.listen_port

    @property
    def server_address4(self) -> ipaddress.IPv4Interface:
        return ipaddress.IPv4Interface(f"{next(self.subnet4.hosts())}/{self.subnet4.prefixlen}")

    @property
    def server_address6(self) -> ipaddress.IPv6Interface | None:
        if self.subnet6 is None:
            return None
        return ipaddress.IPv6Interface(f"{self.subnet6.network_address + 1}/{self.subnet6.prefixlen}")

    @property
    def server_addresses(self) -> tuple[IPInterface, ...]:
        six = self.server_address6
        return (self.server_address4,) if six is None else (self.server_address4, six)

    @property
    def endpoint_host(self) -> str | None:
        """The Endpoint host clients use, or None when it is not known yet."""
        if self.server_url in (None, "", "auto"):
            return self.discovered_url
        return self.server_url


@dataclass(frozen=True)
class SettingsUpdate:
    """A partial update of Settings: a field left as None is "not given" and keeps its stored value.

    `clear` names optional fields to reset to None deliberately (e.g. {"subnet6"}).
    """

    interface: str | None = None
    listen_port: int | None = None
    server_url: str | None = None
    server_port: int | None = None
    subnet4: ipaddress.IPv4Network | None = None
    subnet6: ipaddress.IPv6Network | None = None
    peer_dns: str | None = None
    allowed_ips: tuple[IPNetwork, ...] | None = None
    mtu: int | None = None
    log_confs: bool | None = None
    backend: Backend | None = None
    egress_interface: str | None = None
    peer_to_peer: bool | None = None
    lan_to_peers: bool | None = None
    host_access: bool | None = None
    dns_clients: tuple[IPNetwork, ...] | None = None
    serve: bool | None = None
    api_port: int | None = None
    api_url: str | None = None
    require_2fa: bool | None = None
    audit_retention_days: int | None = None
    files: str | None = None
    # Set by discovery (SERVERURL=auto), never by users.
    discovered_url: str | None = None
    clear: frozenset[str] = frozenset()

    def merged_over(self, other: SettingsUpdate) -> SettingsUpdate:
        """This update, falling back to `other` where this one is not given."""
        values = {
            name: getattr(self, name) if getattr(self, name) is not None else getattr(other, name)
            for name in self.__dataclass_fields__
            if name != "clear"
        }
        # A value given here beats a clear from the lower-precedence update, and a clear here beats its value.
        kept = frozenset(name for name in other.clear if getattr(self, name) is None)
        return SettingsUpdate(**values, clear=self.clear | kept)

    def apply_to(self, settings: Settings) -> Settings:
        changes = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name != "clear" and getattr(self, name) is not None
        }
        for name in self.clear:
            changes[name] = None
        return replace(settings, **changes)


@dataclass(frozen=True)
class Peer:
    """One client of the gateway."""

    name: str
    public_key: PublicKey
    address4: ipaddress.IPv4Address
    # None for a peer adopted without its private key (it lives only on the client).
    private_key: PrivateKey | None = None
    preshared_key: PresharedKey | None = None
    address6: ipaddress.IPv6Address | None = None
    # Client-side AllowedIPs (routes sent through the tunnel); None = the server's default.
    allowed_ips: tuple[IPNetwork, ...] | None = None
    # Extra networks behind this peer routed to it by the server (site-to-site).
    server_allowed_ips: tuple[IPNetwork, ...] = ()
    keepalive: int | None = None
    enabled: bool = True
    # The user who owns it (sees and manages it through the API), None for peers only admins manage.
    owner: str | None = None
    # When it stops working (Unix time), None for never; an expired peer is taken off the device.
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def __post_init__(self) -> None:
        if not _PEER_NAME.fullmatch(self.name):
            from bulwark_vpn import values

            values.parse_peer_name(self.name)  # raises, naming the value
        if self.keepalive is not None and not 0 <= self.keepalive <= 65535:
            from bulwark_vpn.errors import InputError

            raise InputError("invalid keepalive", self.keepalive, "use a number from 0 to 65535")

    @property
    def folder_name(self) -> str:
        """linuxserver layout: numbered peers are `peerN`, named ones `peer_NAME`."""
        return peer_folder(self.name)

    def tunnel_networks(self) -> tuple[IPNetwork, ...]:
        """What the server routes to this peer: its /32 (and /128) plus server_allowed_ips."""
        # Built from (address, prefix) tuples: parsing text costs ~10 ms per 1,000 peers on every render.
        nets: list[IPNetwork] = [ipaddress.IPv4Network((self.address4, 32))]
        if self.address6 is not None:
            nets.append(ipaddress.IPv6Network((self.address6, 128)))
        nets.extend(self.server_allowed_ips)
        return tuple(nets)


@dataclass(frozen=True)
class WgInterfaceSection:
    private_key: PrivateKey
    addresses: tuple[IPInterface, ...] = ()
    listen_port: int | None = None
    mtu: int | None = None
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class WgPeerSection:
    public_key: PublicKey
    allowed_ips: tuple[IPNetwork, ...] = ()
    preshared_key: PresharedKey | None = None
    endpoint: str | None = None
    keepalive: int | None = None
    # Comment lines "# Name" before the section: linuxserver writes "# peer_NAME".
    comment: str | None = None


@dataclass(frozen=True)
class WgConfig:
    """A wg-quick configuration file: one [Interface] and its [Peer]s."""

    interface: WgInterfaceSection
    peers: tuple[WgPeerSection, ...] = field(default_factory=tuple)
