"""SERVERURL=auto: discover this gateway's public address, and decide which server URL clients get.

Sources, in order, each with a short timeout:
1. the EC2 instance metadata service (IMDSv2 token, then public-ipv4; plain GET only when the
   server has no token support), a 404 meaning "this instance has no public address";
2. STUN binding requests (RFC 5389) over UDP, reading XOR-MAPPED-ADDRESS or MAPPED-ADDRESS;
3. plain-text "what is my IP" HTTP services.
Everything fails quietly (logged at debug level) and returns None, so the caller keeps its last
known address. Standard library only; proxies are never used (IMDS must not go through one, and a
proxy would report its own address).
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import os
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from bulwark_vpn.errors import InputError, show_value
from bulwark_vpn.values import parse_ip_address, parse_server_url

log = logging.getLogger(__name__)

DEFAULT_IMDS_URL = "http://169.254.169.254"
DEFAULT_STUN_SERVERS: tuple[str, ...] = ("stun.cloudflare.com:3478", "stun.l.google.com:19302")
DEFAULT_HTTP_SERVICES: tuple[str, ...] = (
    "https://checkip.amazonaws.com",
    "https://api.ipify.org",
    "https://icanhazip.com",
)
TOKEN_TTL_SECONDS = 60
_MAX_BODY = 256
# What a hostile or broken answer can raise besides OSError: a bad status line, an overlong header line, too many
# headers, a torn chunked body (http.client.HTTPException), or an IMDS token urllib refuses to send back as a header
# (CR/LF or non-Latin-1 characters: ValueError). Each one voids that source only; discovery goes on with the next.
_ANSWER_ERRORS = (OSError, http.client.HTTPException, ValueError)

Source = Literal["imds", "stun", "http"]


@dataclass(frozen=True)
class DiscoveryResult:
    """A discovered public address and where it came from (`server` is the endpoint asked)."""

    address: str
    source: Source
    server: str = ""


# --- validation --------------------------------------------------------------------------------------


def parse_public_address(text: str) -> str | None:
    """The address in a discovery answer if it is a plausible public endpoint, else None.

    An answer is untrusted text (a metadata service, a "what is my IP" site, a STUN server): it goes through the
    strict address parser, so a zone id, a second line or any control character makes the whole answer void.
    Only the final line break a web service adds is tolerated.
    """
    try:
        addr = parse_ip_address(text.removesuffix("\n").removesuffix("\r").strip(" \t"), "discovered address")
    except InputError:
        log.debug("discovery answer refused: %s", show_value(text))
        return None
    # Reserved: 240.0.0.0/4 with the broadcast address 255.255.255.255, and IPv6 space that is not unicast (an
    # IPv4-mapped ::ffff:a.b.c.d included): no client can reach a gateway there.
    if addr.is_unspecified or addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_reserved:
        log.debug("discovery answer is not a usable public address: %s", addr)
        return None
    return str(addr)


# --- HTTP (IMDS and "what is my IP") -------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(url: str, timeout: float, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of one request; HTTP error statuses are returned, network errors raise OSError."""
    request = urllib.request.Request(url, method=method, headers=headers or {})  # noqa: S310 - http(s) only
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read(_MAX_BODY).decode("ascii", "replace")
    except urllib.error.HTTPError as err:
        err.close()
        return err.code, ""


def _imds_token(base: str, timeout: float) -> tuple[str | None, bool]:
    """(token, supported): a session token, or None with supported=False when the server has no tokens."""
    status, body = _http(
        f"{base}/latest/api/token",
        timeout,
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
    )
    if status == 200 and body.strip():
        return body.strip(), True
    # 404/405: an IMDS (or look-alike) without the token API: plain GETs are the only way.
    return None, status not in (404, 405)


def query_imds(imds_url: str = DEFAULT_IMDS_URL, timeout: float = 1.0) -> str | None:
    """The instance's public IPv4 from the metadata service, or None (no IMDS, no public address...)."""
    base = imds_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        return None
    try:
        token, supported = _imds_token(base, timeout)
        if token is None and supported:
            log.debug("IMDS refused a token; not falling back to IMDSv1")
            return None
        headers = {"X-aws-ec2-metadata-token": token} if token else {}
        status, body = _http(f"{base}/latest/meta-data/public-ipv4", timeout, headers=headers)
    except _ANSWER_ERRORS as err:
        log.debug("IMDS at %s unreachable or answering garbage: %s", base, show_value(str(err)))
        return None
    if status != 200:
        log.debug("IMDS public-ipv4 answered %s (404: no public address)", status)
        return None
    return parse_public_address(body)


def query_http_service(url: str, timeout: float = 1.0) -> str | None:
    """The address a plain-text "what is my IP" service reports, or None."""
    if not url.startswith(("http://", "https://")):
        return None
    try:
        status, body = _http(url, timeout)
    except _ANSWER_ERRORS as err:
        log.debug("address service %s failed: %s", url, show_value(str(err)))
        return None
    return parse_public_address(body) if status == 200 else None


# --- STUN (RFC 5389) -----------------------------------------------------------------------------------

STUN_MAGIC_COOKIE = 0x2112A442
STUN_BINDING_REQUEST = 0x0001
STUN_BINDING_SUCCESS = 0x0101
ATTR_MAPPED_ADDRESS = 0x0001
ATTR_XOR_MAPPED_ADDRESS = 0x0020
_HEADER = struct.Struct("!HHI12s")


def stun_request(transaction_id: bytes) -> bytes:
    """A Binding request with no attributes."""
    return _HEADER.pack(STUN_BINDING_REQUEST, 0, STUN_MAGIC_COOKIE, transaction_id)


def _decode_address(value: bytes, transaction_id: bytes, xor: bool) -> str | None:
    if len(value) < 4:
        return None
    family, port = value[1], struct.unpack("!H", value[2:4])[0]
    raw = value[4:]
    if family == 0x01 and len(raw) == 4:
        mask = struct.pack("!I", STUN_MAGIC_COOKIE)
    elif family == 0x02 and len(raw) == 16:
        mask = struct.pack("!I", STUN_MAGIC_COOKIE) + transaction_id
    else:
        return None
    if xor:
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
        port ^= STUN_MAGIC_COOKIE >> 16
    return str(ipaddress.ip_address(raw))


def parse_stun_response(data: bytes, transaction_id: bytes) -> str | None:
    """The mapped address in a Binding success response for `transaction_id`, or None.

    Rejects other message types, a wrong magic cookie or transaction id, and truncated messages.
    XOR-MAPPED-ADDRESS is preferred over MAPPED-ADDRESS.
    """
    if len(data) < _HEADER.size:
        return None
    kind, length, cookie, txid = _HEADER.unpack_from(data)
    if kind != STUN_BINDING_SUCCESS or cookie != STUN_MAGIC_COOKIE or txid != transaction_id:
        return None
    if length % 4 or len(data) < _HEADER.size + length:
        return None
    found: dict[int, str] = {}
    offset, end = _HEADER.size, _HEADER.size + length
    while offset + 4 <= end:
        attr, size = struct.unpack_from("!HH", data, offset)
        value = data[offset + 4 : offset + 4 + size]
        if attr in (ATTR_MAPPED_ADDRESS, ATTR_XOR_MAPPED_ADDRESS) and len(value) == size:
            address = _decode_address(value, transaction_id, xor=attr == ATTR_XOR_MAPPED_ADDRESS)
            if address is not None:
                found[attr] = address
        offset += 4 + size + (-size % 4)
    return found.get(ATTR_XOR_MAPPED_ADDRESS) or found.get(ATTR_MAPPED_ADDRESS)


def _split_host_port(server: str, default_port: int = 3478) -> tuple[str, int]:
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit() or (host.count(":") and not host.startswith("[")):
        return server.strip("[]"), default_port
    return host.strip("[]"), int(port)


def query_stun(server: str, timeout: float = 1.0) -> str | None:
    """Our address as the STUN `server` ("host:port") sees it, or None."""
    host, port = _split_host_port(server)
    transaction_id = os.urandom(12)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(sockaddr)
            sock.send(stun_request(transaction_id))
            return _await_stun_answer(sock, transaction_id, time.monotonic() + timeout)
    except (OSError, IndexError, ValueError, OverflowError) as err:
        # ValueError: a name IDNA cannot encode (a label over 63 characters); OverflowError: a port over 65535.
        log.debug("STUN server %s failed: %s", server, show_value(str(err)))
        return None


def _await_stun_answer(sock: socket.socket, transaction_id: bytes, deadline: float) -> str | None:
    # Stray datagrams (a late answer to an earlier request, a wrong transaction id) are ignored
    # until the deadline; a timeout raises OSError.
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        address = parse_stun_response(sock.recv(2048), transaction_id)
        if address is not None:
            return parse_public_address(address)


# --- the whole discovery -------------------------------------------------------------------------------


def discover_public_address(
    *,
    imds_url: str | None = DEFAULT_IMDS_URL,
    stun_servers: Sequence[str] = DEFAULT_STUN_SERVERS,
    http_services: Sequence[str] = DEFAULT_HTTP_SERVICES,
    timeout: float = 1.0,
) -> DiscoveryResult | None:
    """This host's public address from IMDS, then STUN, then HTTP services; None when all fail.

    Pass `imds_url=None` (or empty sequences) to skip a source.
    """
    if imds_url:
        address = query_imds(imds_url, timeout)
        if address:
            return DiscoveryResult(address, "imds", imds_url)
    for server in stun_servers:
        address = query_stun(server, timeout)
        if address:
            return DiscoveryResult(address, "stun", server)
    for url in http_services:
        address = query_http_service(url, timeout)
        if address:
            return DiscoveryResult(address, "http", url)
    log.debug("public address discovery failed on every source")
    return None


def is_auto(configured: str | None) -> bool:
    """True when the server URL is to be discovered (unset, empty or "auto")."""
    return configured is None or configured.strip().lower() in ("", "auto")


def resolve_server_url(
    configured: str | None,
    last_known: str | None,
    discover: Callable[[], DiscoveryResult | None],
) -> str | None:
    """The server URL clients should use.

    An operator's value (anything but unset/"auto") always wins and `discover` is not called.
    Otherwise a successful discovery wins; a failed one keeps `last_known` (which may be None).
    """
    if configured is not None and not is_auto(configured):
        return parse_server_url(configured)
    try:
        result = discover()
    except OSError as err:
        log.debug("public address discovery raised: %s", err)
        result = None
    return result.address if result is not None else last_known
