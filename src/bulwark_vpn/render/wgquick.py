"""wg-quick configuration files: the one renderer and the one parser, which round-trip.

`parse_config(render_config(c)) == c` for every WgConfig (tested with Hypothesis).
"""

from __future__ import annotations

import ipaddress
import re

from bulwark_vpn.errors import InputError
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.model import IPInterface, IPNetwork, WgConfig, WgInterfaceSection, WgPeerSection


def _join(items) -> str:
    return ", ".join(str(item) for item in items)


def render_config(config: WgConfig, *, header: str | None = None) -> str:
    """Render a wg-quick file. Secrets are written deliberately: the result must go to a 0600 file."""
    iface = config.interface
    lines: list[str] = []
    if header:
        lines.extend(f"# {line}" if line else "#" for line in header.splitlines())
    lines.append("[Interface]")
    if iface.addresses:
        lines.append(f"Address = {_join(iface.addresses)}")
    if iface.listen_port is not None:
        lines.append(f"ListenPort = {iface.listen_port}")
    lines.append(f"PrivateKey = {iface.private_key.to_base64()}")
    if iface.mtu is not None:
        lines.append(f"MTU = {iface.mtu}")
    if iface.dns:
        lines.append(f"DNS = {_join(iface.dns)}")
    for peer in config.peers:
        lines.append("")
        lines.append("[Peer]")
        if peer.comment:
            lines.append(f"# {peer.comment}")
        lines.append(f"PublicKey = {peer.public_key.to_base64()}")
        if peer.preshared_key is not None:
            lines.append(f"PresharedKey = {peer.preshared_key.to_base64()}")
        if peer.endpoint:
            lines.append(f"Endpoint = {peer.endpoint}")
        if peer.allowed_ips:
            lines.append(f"AllowedIPs = {_join(peer.allowed_ips)}")
        if peer.keepalive is not None:
            lines.append(f"PersistentKeepalive = {peer.keepalive}")
    return "\n".join(lines) + "\n"


class _Section:
    def __init__(self, kind: str, line: int) -> None:
        self.kind = kind
        self.line = line
        self.values: dict[str, list[str]] = {}
        self.comment: str | None = None


def _split(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _sections(text: str, source: str) -> list[_Section]:
    sections: list[_Section] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            # A "# name" comment right after [Peer] names the peer (linuxserver writes "# peer_NAME").
            if sections and sections[-1].kind == "peer" and not sections[-1].values and sections[-1].comment is None:
                sections[-1].comment = line[1:].strip() or None
            continue
        if line.startswith("["):
            kind = line.strip("[]").strip().lower()
            if kind not in ("interface", "peer"):
                raise InputError(f"{source}:{number}: unknown section '{line}': use [Interface] or [Peer]")
            sections.append(_Section(kind, number))
            continue
        key, sep, value = line.partition("=")
        if not sep or not sections:
            raise InputError(f"{source}:{number}: cannot parse '{line[:60]}': expected 'Key = value' in a section")
        sections[-1].values.setdefault(key.strip().lower(), []).append(value.split("#", 1)[0].strip())
    return sections


def _one(section: _Section, key: str, source: str) -> str | None:
    values = section.values.get(key)
    if not values:
        return None
    return values[-1]


def _int(value: str | None, key: str, source: str, low: int, high: int) -> int | None:
    if value is None or value == "" or (value == "off" and key == "persistentkeepalive"):
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not low <= number <= high:
        raise InputError(f"{source}: invalid {key} '{value}': use a number from {low} to {high}")
    return number


def _interfaces(values: list[str], source: str) -> tuple[IPInterface, ...]:
    out: list[IPInterface] = []
    for item in (x for raw in values for x in _split(raw)):
        try:
            out.append(ipaddress.ip_interface(item))
        except ValueError:
            raise InputError(f"{source}: invalid Address '{item}': use ADDRESS/PREFIX, e.g. 10.13.13.2/32") from None
    return tuple(out)


def _networks(values: list[str], source: str) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for item in (x for raw in values for x in _split(raw)):
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise InputError(f"{source}: invalid AllowedIPs entry '{item}': use CIDRs like 10.0.0.0/16") from None
    return tuple(out)


def parse_config(text: str, source: str = "config") -> WgConfig:
    """Parse a wg-quick file (keys case-insensitive, repeated Address/AllowedIPs lines merged)."""
    sections = _sections(text, source)
    interfaces = [s for s in sections if s.kind == "interface"]
    if len(interfaces) != 1:
        raise InputError(f"{source}: expected exactly one [Interface] section, found {len(interfaces)}")
    iface = interfaces[0]
    private = _one(iface, "privatekey", source)
    if private is None:
        raise InputError(f"{source}: [Interface] has no PrivateKey: add 'PrivateKey = <key from wg genkey>'")
    interface = WgInterfaceSection(
        private_key=PrivateKey.from_base64(private),
        addresses=_interfaces(iface.values.get("address", []), source),
        listen_port=_int(_one(iface, "listenport", source), "listenport", source, 0, 65535),
        mtu=_int(_one(iface, "mtu", source), "mtu", source, 576, 65535),
        dns=tuple(x for raw in iface.values.get("dns", []) for x in _split(raw)),
    )
    peers = []
    for section in (s for s in sections if s.kind == "peer"):
        public = _one(section, "publickey", source)
        if public is None:
            raise InputError(f"{source}:{section.line}: [Peer] has no PublicKey")
        psk = _one(section, "presharedkey", source)
        peers.append(
            WgPeerSection(
                public_key=PublicKey.from_base64(public),
                allowed_ips=_networks(section.values.get("allowedips", []), source),
                preshared_key=PresharedKey.from_base64(psk) if psk else None,
                endpoint=_one(section, "endpoint", source) or None,
                keepalive=_int(_one(section, "persistentkeepalive", source), "persistentkeepalive", source, 0, 65535),
                comment=section.comment,
            )
        )
    return WgConfig(interface=interface, peers=tuple(peers))


def format_endpoint(host: str, port: int) -> str:
    """host:port, with IPv6 literals bracketed as wg expects."""
    bare = host.strip("[]")
    try:
        if ipaddress.ip_address(bare).version == 6:
            return f"[{bare}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _valid_host(host: str, bracketed: bool) -> bool:
    """An IP address ([IPv6] only in brackets) or a DNS name: nothing else may reach a config line."""
    if not host.isascii() or not host.isprintable() or "%" in host:  # no scope id: it names a local interface
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if bracketed or address is not None:
        return address is not None and (address.version == 6) == bracketed
    labels = host.removesuffix(".").split(".")  # a fully qualified name may end with a dot
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        return False
    # All-numeric labels are a mistyped IPv4 address (999.1.1.1), not a name.
    return not all(label.isdigit() for label in labels)


def parse_endpoint(text: str) -> tuple[str, int]:
    """Parse HOST:PORT or [IPv6]:PORT; raise InputError naming the value otherwise.

    HOST is an IP address or a DNS name (labels of letters, digits and '-'). Whitespace (even around
    the value), control characters and anything else are refused: the endpoint is written into wg-quick
    files, where a newline would smuggle in a line such as `PostUp = ...` that wg-quick runs as root.
    """
    shown = text.encode("unicode_escape").decode("ascii")  # one line, control characters visible
    value = text  # not stripped: the text is written into configs as given, so it must be clean as is
    bracketed = value.startswith("[")
    host, port_text = "", ""
    if bracketed:
        host, _, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = value.rpartition(":")
    if not host or not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise InputError(
            f"invalid endpoint: '{shown}': use HOST:PORT with a port from 1 to 65535, "
            f"e.g. 203.0.113.5:51821 or [2001:db8::1]:51820"
        )
    if not _valid_host(host, bracketed):
        raise InputError(
            f"invalid endpoint: '{shown}': the host must be an IP address (IPv6 in brackets, [2001:db8::1]) "
            f"or a DNS name of letters, digits, '-' and '.', e.g. vpn.example.com:51820"
        )
    return host, int(port_text)
