"""Network values: IP addresses, networks (CIDRs), tunnel subnets, DNS names, hosts, endpoints, DNS servers.

`ipaddress` is only ever handed text that already matched a character class of hex digits, dots, colons and
one `/`: on its own it accepts an IPv6 zone id (`fe80::1%anything`, newlines included), which once let a
`PreUp` line into every client config.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import NamedTuple

from bulwark_vpn.errors import InputError
from bulwark_vpn.values.text import require_text

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_ADDRESS_CHARS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_NETWORK_CHARS = re.compile(r"([0-9A-Fa-f:.]{2,45})(?:/([0-9]{1,3}))?")
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")

MIN_PREFIX4 = 8
MAX_PREFIX4 = 30
MIN_PREFIX6 = 32
MAX_PREFIX6 = 126


def parse_ip_address(value: object, what: str = "IP address") -> IPAddress:
    """An IPv4 or IPv6 address, without zone id, brackets or spaces."""
    hint = "use an IPv4 or IPv6 address, e.g. 203.0.113.5 or 2001:db8::1"
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value  # already a value (library callers); only text is parsed
    text = require_text(value, what, hint)
    if not _ADDRESS_CHARS.fullmatch(text):
        raise InputError(f"invalid {what}", value, hint)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InputError(f"invalid {what}", value, hint) from None


def parse_network(value: object, what: str = "network") -> IPNetwork:
    """A CIDR such as 10.0.0.0/16 or 2001:db8::/32; host bits are cleared (as `wg` does); a bare address is a
    host route (/32 or /128)."""
    hint = "use a CIDR such as 10.0.0.0/16 or 2001:db8::/32"
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value  # already a value (library callers); only text is parsed
    text = require_text(value, what, hint).strip(" \t")
    match = _NETWORK_CHARS.fullmatch(text)
    if not match:
        raise InputError(f"invalid {what}", value, hint)
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InputError(f"invalid {what}", value, hint) from None


def parse_networks(value: object, what: str = "AllowedIPs", *, allow_empty: bool = False) -> tuple[IPNetwork, ...]:
    """A comma-separated CIDR list (or a list of CIDRs from TOML/JSON); at least one unless `allow_empty`,
    duplicates dropped."""
    hint = "use CIDRs separated by commas, e.g. 10.0.0.0/16, ::/0"
    if isinstance(value, list | tuple):
        items: Iterable[object] = value
    else:
        items = require_text(value, what, hint).split(",")
    nets: list[IPNetwork] = []
    from_text = not isinstance(value, list | tuple)
    for item in items:
        if from_text and isinstance(item, str) and not item.strip(" \t"):
            continue  # "a, b," in text; an empty entry in a TOML or JSON list is an error below
        net = parse_network(item, f"{what} entry")
        if net not in nets:
            nets.append(net)
    if not nets and not allow_empty:
        raise InputError(f"invalid {what}", value, "give at least one CIDR, e.g. 0.0.0.0/0")
    return tuple(nets)


def _refuse_special(net: IPNetwork, value: object, what: str, hint: str) -> None:
    address = net.network_address
    special = (
        "multicast" if net.is_multicast else
        "loopback" if net.is_loopback else
        "link-local" if net.is_link_local else
        "unspecified" if address.is_unspecified or (net.version == 4 and int(address) >> 24 == 0) else
        "reserved" if net.version == 4 and net.is_reserved else
        "IPv4-mapped" if net.version == 6 and net.subnet_of(ipaddress.IPv6Network("::ffff:0:0/96")) else  # type: ignore[arg-type]
        None
    )
    if special is not None:
        article = "an" if special[0] in "aeiouIU" else "a"
        raise InputError(f"invalid {what}", value, f"{article} {special} range cannot be a tunnel subnet: {hint}")


def parse_subnet4(value: object) -> ipaddress.IPv4Network:
    """INTERNAL_SUBNET: `10.13.13.0` (means /24, as linuxserver/wireguard) or `10.20.0.0/16`, /8 to /30."""
    what, hint = "IPv4 subnet", "use a private network like 10.13.13.0/24 (a bare address means /24)"
    text = require_text(value, what, hint).strip(" \t")
    if "/" not in text:
        text = f"{text}/24"
    try:
        net = parse_network(text, what)
    except InputError:
        raise InputError(f"invalid {what}", value, hint) from None
    if net.version != 4:
        raise InputError(f"invalid {what}", value, hint)
    if not MIN_PREFIX4 <= net.prefixlen <= MAX_PREFIX4:
        raise InputError(f"invalid {what}", value,
                         f"the prefix must be between /{MIN_PREFIX4} and /{MAX_PREFIX4} (a /30 holds the server "
                         f"and one peer)")
    _refuse_special(net, value, what, hint)
    return net  # type: ignore[return-value]


def parse_subnet6(value: object) -> ipaddress.IPv6Network:
    """The optional IPv6 tunnel subnet, e.g. `fd13:13:13::/64`, /32 to /126."""
    what, hint = "IPv6 subnet", "use a unique local network like fd13:13:13::/64"
    try:
        net = parse_network(value, what)
    except InputError:
        raise InputError(f"invalid {what}", value, hint) from None
    if net.version != 6:
        raise InputError(f"invalid {what}", value, hint)
    if not MIN_PREFIX6 <= net.prefixlen <= MAX_PREFIX6:
        raise InputError(f"invalid {what}", value,
                         f"the prefix must be between /{MIN_PREFIX6} and /{MAX_PREFIX6}: {hint}")
    _refuse_special(net, value, what, hint)
    return net  # type: ignore[return-value]


def parse_dns_name(value: object, what: str = "DNS name") -> str:
    """A host name: labels of letters, digits and '-', at most 253 characters, an optional final dot. A name whose
    last label is all digits is a mistyped IPv4 address (999.1.1.1, 1.2.3), not a name."""
    hint = "use a DNS name of letters, digits, '-' and '.', e.g. vpn.example.com"
    text = require_text(value, what, hint)
    labels = text.removesuffix(".").split(".")
    if not text or len(text) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise InputError(f"invalid {what}", value, hint)
    if labels[-1].isdigit():
        raise InputError(f"invalid {what}", value, "not a valid IP address nor a DNS name: " + hint)
    return text


def parse_host(value: object, what: str = "host") -> str:
    """An IP address (IPv6 bare or in brackets) or a DNS name, in canonical text (IPv6 without brackets)."""
    hint = "use an IP address or a DNS name, e.g. 203.0.113.5 or vpn.example.com (no scheme, no port)"
    text = require_text(value, what, hint)
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if _ADDRESS_CHARS.fullmatch(bare) and (":" in bare or bare.replace(".", "").isdigit()):
        try:
            return str(ipaddress.ip_address(bare))
        except ValueError:
            raise InputError(f"invalid {what}", value, "not a valid IP address: " + hint) from None
    if bare != text:
        raise InputError(f"invalid {what}", value, hint)
    try:
        return parse_dns_name(text, what)
    except InputError:
        raise InputError(f"invalid {what}", value, hint) from None


def parse_server_url(value: object) -> str:
    """SERVERURL: `auto`, an IP address or a DNS name."""
    text = require_text(value, "server URL", "use auto, an IP address or a DNS name").strip(" \t")
    if text.lower() == "auto":
        return "auto"
    try:
        return parse_host(text, "server URL")
    except InputError:
        raise InputError("invalid server URL", value,
                         "use auto, an IP address or a DNS name (no scheme, no port)") from None


class Endpoint(NamedTuple):
    """HOST:PORT where HOST is an IP address or a DNS name; renders IPv6 in brackets, as wg expects."""

    host: str
    port: int

    def __str__(self) -> str:
        return format_endpoint(self.host, self.port)


def format_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_endpoint(value: object, what: str = "endpoint") -> Endpoint:
    """HOST:PORT or [IPv6]:PORT. Not stripped: the text is written into configs as given, so it must be clean."""
    hint = ("use HOST:PORT with a port from 1 to 65535, e.g. vpn.example.com:51820, 203.0.113.5:51821 "
            "or [2001:db8::1]:51820")
    text = require_text(value, what, hint)
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep or ":" not in host:
            raise InputError(f"invalid {what}", value, hint)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise InputError(f"invalid {what}", value, hint)
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        raise InputError(f"invalid {what}", value, hint)
    try:
        canonical = parse_host(f"[{host}]" if ":" in host else host, what)
    except InputError:
        raise InputError(f"invalid {what}", value,
                         "the host must be an IP address (IPv6 in brackets, [2001:db8::1]:51820) or a DNS name, "
                         "e.g. vpn.example.com:51820") from None
    return Endpoint(canonical, int(port_text))


def parse_dns_servers(value: object, what: str = "DNS servers") -> tuple[IPAddress, ...]:
    """PEERDNS as a list: IP addresses separated by commas (no zone ids, no names)."""
    hint = "use auto or IP addresses separated by commas, e.g. 1.1.1.1, 2606:4700:4700::1111"
    items = value if isinstance(value, list | tuple) else require_text(value, what, hint).split(",")
    out: list[IPAddress] = []
    for item in items:
        if isinstance(item, str):
            item = item.strip(" \t")
            if not item:
                continue
        try:
            address = parse_ip_address(item, f"{what} entry")
        except InputError:
            raise InputError(f"invalid {what} entry", item, hint) from None
        if address.is_multicast or address.is_unspecified:
            raise InputError(f"invalid {what} entry", item, hint)
        if address not in out:
            out.append(address)
    return tuple(out)


_URL = re.compile(r"(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::([0-9]{1,5}))?(/[A-Za-z0-9._~/-]*)?")


def parse_base_url(value: object, what: str = "URL") -> str:
    """An http(s) URL people open (the web pages' address): scheme, host, optional port and path prefix; no user,
    query or fragment. Returned without a trailing slash."""
    hint = "use an address like https://vpn.example.com or http://10.13.13.1:8080"
    text = require_text(value, what, hint).strip(" \t")
    match = _URL.fullmatch(text)
    if not match:
        raise InputError(f"invalid {what}", value, hint)
    scheme, host, port, path = match.groups()
    try:
        canonical = parse_host(host, what)
    except InputError:
        raise InputError(f"invalid {what}", value, hint) from None
    if port is not None and not 1 <= int(port) <= 65535:
        raise InputError(f"invalid {what}", value, hint)
    shown = f"[{canonical}]" if ":" in canonical else canonical
    return f"{scheme}://{shown}{':' + port if port else ''}{(path or '').rstrip('/')}"


_URL_PATH = re.compile(r"(?:/[A-Za-z0-9._~!+,;=:@%-]*)*(?:\?[A-Za-z0-9._~!+,;=:@%/?&-]*)?")


def parse_https_url(value: object, what: str = "URL") -> str:
    """An https URL: `https://HOST[:PORT]/path?query`, HOST a DNS name or an IP address (IPv6 in brackets).

    No user name or password (they would be written into files), no fragment, and none of the characters a
    shell, a YAML or an HCL string would treat specially (quotes, `$`, backslash, spaces, `{}`, backticks).
    """
    hint = "give an https:// URL such as https://files.example.org/bulwark_vpn-0.1.0-py3-none-any.whl"
    text = require_text(value, what, hint)
    if not text.startswith("https://"):
        raise InputError(f"invalid {what}", value, hint)
    rest = text.removeprefix("https://")
    split = min((rest.index(c) for c in "/?" if c in rest), default=len(rest))
    authority, tail = rest[:split], rest[split:]
    host, port = authority, ""
    if authority.startswith("["):
        host, sep, after = authority.partition("]")
        host += sep
        port = after
    elif ":" in authority:
        host, _, port = authority.rpartition(":")
        port = ":" + port
    if port and not (port.startswith(":") and _PORT.fullmatch(port[1:]) and 1 <= int(port[1:]) <= 65535):
        raise InputError(f"invalid {what}", value, hint)
    if not _URL_PATH.fullmatch(tail) or len(text) > 2048:
        raise InputError(f"invalid {what}", value, hint)
    try:
        parse_host(host, what)
    except InputError:
        raise InputError(f"invalid {what}", value, hint) from None
    return text
