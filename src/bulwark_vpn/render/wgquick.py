"""wg-quick configuration files: the one renderer and the one parser, which round-trip.

`parse_config(render_config(c)) == c` for every WgConfig (tested with Hypothesis).
"""

from __future__ import annotations

import ipaddress
import re

from bulwark_vpn.errors import InputError, RenderError
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.model import IPInterface, IPNetwork, WgConfig, WgInterfaceSection, WgPeerSection
from bulwark_vpn.values import (
    has_unsafe_char,
    parse_dns_name,
    parse_dns_servers,
    parse_endpoint,
    parse_int,
    parse_ip_address,
    parse_network,
)

__all__ = ["guard_lines", "parse_config", "render_config"]


def _join(items) -> str:
    return ", ".join(str(item) for item in items)


# Printable ASCII and the line breaks the join puts in: the common case, checked in one pass over the whole text.
_PRINTABLE_LINES = re.compile(r"[\x20-\x7e\n]*")


def guard_lines(lines: list[str]) -> str:
    """Join rendered lines, refusing any that holds a line break or another control character: a value must never
    add a line (wg-quick runs PreUp/PostUp lines as root) or a section. Every wg-quick renderer ends here."""
    text = "\n".join(lines)
    if not (_PRINTABLE_LINES.fullmatch(text) and text.count("\n") == len(lines) - 1):
        for line in lines:
            if "\n" in line or has_unsafe_char(line):
                raise RenderError("refusing to write a config line holding a control character or line break",
                                  line.split("=", 1)[0].strip() or line[:20],
                                  "the value came from an unchecked source: report it as a bug")
    return text + "\n"


def render_config(config: WgConfig, *, header: str | None = None) -> str:
    """Render a wg-quick file. Secrets are written deliberately: the result must go to a 0600 file."""
    iface = config.interface
    lines: list[str] = []
    if header:
        lines.extend(f"# {line}" if line else "#" for line in header.split("\n"))
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
    return guard_lines(lines)


class _Section:
    def __init__(self, kind: str, line: int) -> None:
        self.kind = kind
        self.line = line
        self.values: dict[str, list[str]] = {}
        self.comment: str | None = None


def _split(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


# A key as wg writes it (44 base64 characters): a line quoted in an error may be a PrivateKey or PresharedKey line,
# and errors reach the terminal and the container log.
_KEY_TEXT = re.compile(r"[A-Za-z0-9+/]{43}=")


def _redacted(line: str) -> str:
    key, sep, _ = line.partition("=")
    if sep and key.strip().lower() in ("privatekey", "presharedkey"):
        return f"{key}= (hidden)"
    return _KEY_TEXT.sub("(key hidden)", line)


def _sections(text: str, source: str) -> list[_Section]:
    sections: list[_Section] = []
    # wg-quick splits on "\n" alone; other separators (U+2028, U+0085, a lone CR) stay inside a line and are
    # refused, never taken as line breaks.
    for number, raw_line in enumerate(text.split("\n"), start=1):
        raw_line = raw_line.removesuffix("\r")
        if has_unsafe_char(raw_line.replace("\t", " ")):
            raise InputError(f"{source}:{number}: a control character or line separator in the line",
                             _redacted(raw_line)[:60], "remove it")
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
                raise InputError(f"{source}:{number}: unknown section '{_redacted(line)[:60]}': use [Interface] or "
                                 "[Peer]")
            sections.append(_Section(kind, number))
            continue
        key, sep, value = line.partition("=")
        if not sep or not sections:
            raise InputError(f"{source}:{number}: cannot parse '{_redacted(line)[:60]}': expected 'Key = value' in "
                             "a section")
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
    return parse_int(value, low, high, f"{key} in {source}", "as wg-quick accepts")


def _interfaces(items: list[str], source: str) -> tuple[IPInterface, ...]:
    out: list[IPInterface] = []
    for item in (x for raw in items for x in _split(raw)):
        address, _, prefix = item.partition("/")
        parse_ip_address(address, f"Address in {source}")
        if prefix and not prefix.isdigit():
            raise InputError(f"invalid Address in {source}", item, "use ADDRESS/PREFIX, e.g. 10.13.13.2/32")
        try:
            out.append(ipaddress.ip_interface(item))
        except ValueError:
            raise InputError(f"invalid Address in {source}", item, "use ADDRESS/PREFIX, e.g. 10.13.13.2/32") from None
    return tuple(out)


def _networks(items: list[str], source: str) -> tuple[IPNetwork, ...]:
    return tuple(parse_network(x, f"AllowedIPs entry in {source}") for raw in items for x in _split(raw))


def _dns_entry(item: str, source: str) -> str:
    """A DNS= entry: a server address, or (as wg-quick allows) a search domain."""
    if ":" in item or item.replace(".", "").isdigit():
        return str(parse_dns_servers([item], f"DNS in {source}")[0])
    return parse_dns_name(item, f"DNS search domain in {source}")


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
    dns = [x for raw in iface.values.get("dns", []) for x in _split(raw)]
    interface = WgInterfaceSection(
        private_key=PrivateKey.from_base64(private),
        addresses=_interfaces(iface.values.get("address", []), source),
        listen_port=_int(_one(iface, "listenport", source), "listenport", source, 0, 65535),
        mtu=_int(_one(iface, "mtu", source), "mtu", source, 576, 65535),
        dns=tuple(_dns_entry(item, source) for item in dns),
    )
    peers = []
    for section in (s for s in sections if s.kind == "peer"):
        public = _one(section, "publickey", source)
        if public is None:
            raise InputError(f"{source}:{section.line}: [Peer] has no PublicKey")
        psk = _one(section, "presharedkey", source)
        endpoint = _one(section, "endpoint", source) or None
        peers.append(
            WgPeerSection(
                public_key=PublicKey.parse(public),
                allowed_ips=_networks(section.values.get("allowedips", []), source),
                preshared_key=PresharedKey.from_base64(psk) if psk else None,
                endpoint=str(parse_endpoint(endpoint, f"Endpoint in {source}")) if endpoint else None,
                keepalive=_int(_one(section, "persistentkeepalive", source), "persistentkeepalive", source, 0, 65535),
                comment=section.comment,
            )
        )
    return WgConfig(interface=interface, peers=tuple(peers))
