"""SERVERURL=auto against real local servers: a stateful fake IMDS, a STUN responder, an HTTP echo.

Everything binds 127.0.0.1 on a random port; no test sends a packet anywhere else.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import pytest

from bulwark_vpn.publicip import (
    STUN_MAGIC_COOKIE,
    DiscoveryResult,
    discover_public_address,
    parse_public_address,
    parse_stun_response,
    query_http_service,
    query_imds,
    query_stun,
    resolve_server_url,
    stun_request,
)
from tests.fakes import FakeImds, serve_imds

PUBLIC = "203.0.113.7"
TIMEOUT = 0.5

# --- fake IMDS (tests/fakes.py) ------------------------------------------------------------------------


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    with serve_imds(FakeImds(public_ipv4=PUBLIC)) as state:
        yield state


def test_imdsv2_token_then_public_ipv4(imds: FakeImds) -> None:
    assert query_imds(imds.url, TIMEOUT) == PUBLIC
    assert [r[:2] for r in imds.requests] == [("PUT", "/latest/api/token"), ("GET", "/latest/meta-data/public-ipv4")]
    assert imds.requests[1][2] is True  # the GET carried a valid token


def test_imds_without_public_address_is_none(imds: FakeImds) -> None:
    imds.public_ipv4 = None
    assert query_imds(imds.url, TIMEOUT) is None


def test_imds_without_token_support_uses_a_plain_get(imds: FakeImds) -> None:
    imds.mode = "no-tokens"
    assert query_imds(imds.url, TIMEOUT) == PUBLIC
    assert [r[0] for r in imds.requests] == ["PUT", "GET"]


def test_fake_imds_refuses_tokenless_get_in_required_mode(imds: FakeImds) -> None:
    # The fake is strict like the real one: a plain GET (IMDSv1) is refused with 401.
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{imds.url}/latest/meta-data/public-ipv4", timeout=TIMEOUT)  # noqa: S310
    assert info.value.code == 401


def test_imds_unreachable_is_none(unused_port: int) -> None:
    assert query_imds(f"http://127.0.0.1:{unused_port}", TIMEOUT) is None


def test_imds_answer_that_is_not_an_address_is_none(imds: FakeImds) -> None:
    imds.public_ipv4 = "<html>oops</html>"
    assert query_imds(imds.url, TIMEOUT) is None


@pytest.fixture
def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- fake STUN -----------------------------------------------------------------------------------------

StunMode = Literal["xor", "mapped-only", "wrong-txid", "wrong-cookie", "stray-then-right", "silent"]


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def stun_answer(txid: bytes, address: str, port: int, *, xor: bool = True, cookie: int = STUN_MAGIC_COOKIE) -> bytes:
    """A Binding success response as a STUN server sends it."""
    ip = ipaddress.ip_address(address)
    family = 1 if ip.version == 4 else 2
    raw = ip.packed
    if xor:
        mask = struct.pack("!I", STUN_MAGIC_COOKIE) + (txid if ip.version == 6 else b"")
        raw = bytes(a ^ b for a, b in zip(raw, mask, strict=True))
        port ^= STUN_MAGIC_COOKIE >> 16
    # A SOFTWARE attribute first (unknown to the parser, skipped) with odd length to test padding.
    body = _attr(0x8022, b"fake-stun") + _attr(0x0020 if xor else 0x0001, struct.pack("!BBH", 0, family, port) + raw)
    return struct.pack("!HHI12s", 0x0101, len(body), cookie, txid) + body


@dataclass
class FakeStun:
    mode: StunMode = "xor"
    mapped: str = PUBLIC
    server: str = ""
    seen: list[bytes] = field(default_factory=list)


@pytest.fixture
def stun() -> Iterator[FakeStun]:
    state = FakeStun()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    state.server = f"127.0.0.1:{sock.getsockname()[1]}"
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            kind, _, cookie, txid = struct.unpack("!HHI12s", data[:20])
            state.seen.append(data)
            if kind != 0x0001 or cookie != STUN_MAGIC_COOKIE or state.mode == "silent":
                continue
            for reply in _replies(state, txid):
                sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(2)
        sock.close()


def _replies(state: FakeStun, txid: bytes) -> list[bytes]:
    wrong_txid = bytes(b ^ 0xFF for b in txid)
    if state.mode == "wrong-txid":
        return [stun_answer(wrong_txid, state.mapped, 40000)]
    if state.mode == "wrong-cookie":
        return [stun_answer(txid, state.mapped, 40000, cookie=0x01020304)]
    if state.mode == "mapped-only":
        return [stun_answer(txid, state.mapped, 40000, xor=False)]
    if state.mode == "stray-then-right":
        return [stun_answer(wrong_txid, "198.51.100.99", 1), stun_answer(txid, state.mapped, 40000)]
    return [stun_answer(txid, state.mapped, 40000)]


def test_stun_xor_mapped_address(stun: FakeStun) -> None:
    assert query_stun(stun.server, TIMEOUT) == PUBLIC
    (request,) = stun.seen
    assert len(request) == 20 and request[:4] == b"\x00\x01\x00\x00"


def test_stun_plain_mapped_address(stun: FakeStun) -> None:
    stun.mode = "mapped-only"
    assert query_stun(stun.server, TIMEOUT) == PUBLIC


@pytest.mark.parametrize("mode", ["wrong-txid", "wrong-cookie", "silent"])
def test_stun_rejects_foreign_answers(stun: FakeStun, mode: StunMode) -> None:
    stun.mode = mode
    started = time.monotonic()
    assert query_stun(stun.server, TIMEOUT) is None
    assert time.monotonic() - started < TIMEOUT + 0.5


def test_stun_skips_a_stray_answer_and_takes_the_right_one(stun: FakeStun) -> None:
    stun.mode = "stray-then-right"
    assert query_stun(stun.server, TIMEOUT) == PUBLIC


def test_stun_ipv6_xor_address_parses() -> None:
    txid = bytes(range(12))
    answer = stun_answer(txid, "2001:db8::42", 51820)
    assert parse_stun_response(answer, txid) == "2001:db8::42"
    assert parse_stun_response(answer[:-4], txid) is None  # truncated
    assert parse_stun_response(answer, bytes(12)) is None  # another transaction


def test_stun_request_layout() -> None:
    txid = b"abcdefghijkl"
    assert stun_request(txid) == b"\x00\x01\x00\x00\x21\x12\xa4\x42" + txid


# --- HTTP "what is my IP" ------------------------------------------------------------------------------


@pytest.fixture
def http_echo() -> Iterator[dict[str, object]]:
    state: dict[str, object] = {"status": 200, "body": PUBLIC + "\n"}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            data = str(state["body"]).encode()
            self.send_response(int(str(state["status"])))
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_http_service_plain_text(http_echo: dict[str, object]) -> None:
    assert query_http_service(str(http_echo["url"]), TIMEOUT) == PUBLIC


@pytest.mark.parametrize(("status", "body"), [(200, "<html>you are here</html>"), (500, PUBLIC), (200, "127.0.0.1")])
def test_http_service_bad_answers_are_none(http_echo: dict[str, object], status: int, body: str) -> None:
    http_echo["status"], http_echo["body"] = status, body
    assert query_http_service(str(http_echo["url"]), TIMEOUT) is None


def test_parse_public_address() -> None:
    assert parse_public_address(" 198.51.100.1\n") == "198.51.100.1"
    assert parse_public_address("2001:db8::1") == "2001:db8::1"
    for bad in ("", "0.0.0.0", "127.0.0.1", "169.254.169.254", "fe80::1", "224.0.0.1", "example.com"):
        assert parse_public_address(bad) is None


# --- the whole chain -------------------------------------------------------------------------------------


def test_discovery_prefers_imds(imds: FakeImds, stun: FakeStun, http_echo: dict[str, object]) -> None:
    result = discover_public_address(
        imds_url=imds.url, stun_servers=[stun.server], http_services=[str(http_echo["url"])], timeout=TIMEOUT
    )
    assert result == DiscoveryResult(PUBLIC, "imds", imds.url)
    assert stun.seen == []


def test_discovery_falls_back_to_stun_when_imds_has_no_public_address(imds: FakeImds, stun: FakeStun) -> None:
    imds.public_ipv4 = None
    stun.mapped = "198.51.100.20"
    result = discover_public_address(imds_url=imds.url, stun_servers=[stun.server], http_services=[], timeout=TIMEOUT)
    assert result == DiscoveryResult("198.51.100.20", "stun", stun.server)


def test_discovery_falls_back_to_http(unused_port: int, stun: FakeStun, http_echo: dict[str, object]) -> None:
    stun.mode = "silent"
    result = discover_public_address(
        imds_url=f"http://127.0.0.1:{unused_port}",
        stun_servers=[stun.server],
        http_services=[str(http_echo["url"])],
        timeout=TIMEOUT,
    )
    assert result == DiscoveryResult(PUBLIC, "http", str(http_echo["url"]))


def test_discovery_all_failing_is_none(unused_port: int) -> None:
    result = discover_public_address(
        imds_url=f"http://127.0.0.1:{unused_port}",
        stun_servers=[f"127.0.0.1:{unused_port}"],
        http_services=[f"http://127.0.0.1:{unused_port}/"],
        timeout=TIMEOUT,
    )
    assert result is None


# --- resolve_server_url -------------------------------------------------------------------------------


def _never() -> DiscoveryResult | None:
    raise AssertionError("discovery must not run when the operator set an address")


def test_operator_override_always_wins() -> None:
    assert resolve_server_url("vpn.example.org", "198.51.100.1", _never) == "vpn.example.org"
    assert resolve_server_url(" 198.51.100.5 ", None, _never) == "198.51.100.5"


@pytest.mark.parametrize("configured", ["auto", "AUTO", "", None])
def test_auto_uses_discovery(configured: str | None) -> None:
    found = DiscoveryResult("198.51.100.9", "stun", "x")
    assert resolve_server_url(configured, "198.51.100.1", lambda: found) == "198.51.100.9"


def test_failed_discovery_keeps_the_last_known_address() -> None:
    assert resolve_server_url("auto", "198.51.100.1", lambda: None) == "198.51.100.1"
    assert resolve_server_url("auto", None, lambda: None) is None


def test_discovery_raising_oserror_keeps_the_last_known_address() -> None:
    def broken() -> DiscoveryResult | None:
        raise OSError("network is unreachable")

    assert resolve_server_url(None, "198.51.100.1", broken) == "198.51.100.1"
