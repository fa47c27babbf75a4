"""The DNS forwarder against real sockets: a dnslib upstream on loopback, dig and dnslib as clients, and a network
namespace where the forwarder binds port 53 on a tunnel-like address before that address exists."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark_vpn.dataplane.dns import (
    DnsBindError,
    DnsForwarder,
    ForwarderThread,
    parse_upstream,
    probe,
    read_system_resolvers,
)
from bulwark_vpn.errors import BulwarkError, InputError

REPO = Path(__file__).resolve().parent.parent
MANY = 60  # A records for many.example.test: over 512 bytes, so the upstream truncates it over UDP


class ZoneResolver(BaseResolver):
    """A tiny authoritative zone that records which protocol each question came over."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        qname = str(request.q.qname)
        self.seen.append((handler.protocol, qname))
        reply = request.reply()
        if qname == "www.example.test.":
            reply.add_answer(*RR.fromZone("www.example.test. 60 A 192.0.2.10\nwww.example.test. 60 AAAA 2001:db8::10"))
            reply.rr = [rr for rr in reply.rr if rr.rtype == request.q.qtype]
        elif qname == "many.example.test.":
            reply.add_answer(*RR.fromZone("\n".join(f"many.example.test. 60 A 192.0.2.{i}" for i in range(MANY))))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class ClassicUdpHandler(DNSHandler):
    udplen = 512  # behave like a server without EDNS: truncate big UDP answers


class Upstream:
    """A dnslib authoritative server on UDP and TCP, on one address and port (port 0: pick one)."""

    def __init__(self, address: str, port: int = 0) -> None:
        self.address, self.resolver = address, ZoneResolver()
        quiet = DNSLogger(logf=lambda _line: None)
        udp = DNSServer(self.resolver, address, port, handler=ClassicUdpHandler, logger=quiet)
        self.port = udp.server.server_address[1]
        tcp = DNSServer(self.resolver, address, self.port, tcp=True, handler=ClassicUdpHandler, logger=quiet)
        self.servers = [udp, tcp]
        for server in self.servers:  # a short poll interval makes stop() quick
            threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def spec(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
            server.server.server_close()


def serve_upstream_forever(address: str, port: str) -> None:
    """Entry point for the namespace test's upstream subprocess: serve until stdin closes."""
    upstream = Upstream(address, int(port))
    print("ready", flush=True)
    sys.stdin.read()
    upstream.stop()


def loopback() -> str:
    """A random address in 127/8, so parallel runs and local resolvers (127.0.0.53...) do not collide."""
    return f"127.{random.randrange(1, 255)}.{random.randrange(0, 256)}.{random.randrange(1, 255)}"


def closed_port(address: str) -> int:
    """A port with nothing listening on `address` (UDP and TCP): queries to it are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def dig(server: str, port: int, *args: str, netns: str | None = None) -> str:
    command = ["dig", f"@{server}", "-p", str(port), "+time=3", "+tries=1", *args]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(loopback())
    yield server
    server.stop()


@pytest.fixture
def forwarder(upstream: Upstream) -> Iterator[ForwarderThread]:
    with DnsForwarder([loopback()], port=0, upstreams=[upstream.spec], timeout=1.0).start_in_thread() as handle:
        yield handle


def address_of(handle: ForwarderThread) -> str:
    return handle.forwarder.listen[0]


# --- resolving through the forwarder -------------------------------------------------------------------------


def test_dig_resolves_a_and_aaaa(forwarder: ForwarderThread) -> None:
    address, port = address_of(forwarder), forwarder.port
    assert dig(address, port, "www.example.test", "+short").split() == ["192.0.2.10"]
    assert dig(address, port, "www.example.test", "AAAA", "+short").split() == ["2001:db8::10"]
    assert dig(address, port, "www.example.test", "+tcp", "+short").split() == ["192.0.2.10"]
    assert "status: NXDOMAIN" in dig(address, port, "nope.example.test")


def test_dnslib_client_over_udp_and_tcp_keeps_the_query_id(forwarder: ForwarderThread) -> None:
    for tcp in (False, True):
        query = DNSRecord.question("www.example.test")
        reply = DNSRecord.parse(query.send(address_of(forwarder), forwarder.port, tcp=tcp, timeout=3))
        assert reply.header.id == query.header.id
        assert reply.header.rcode == RCODE.NOERROR
        assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.10"]


def test_truncated_upstream_answer_is_fetched_again_over_tcp(upstream: Upstream,
                                                              forwarder: ForwarderThread) -> None:
    output = dig(address_of(forwarder), forwarder.port, "many.example.test")  # dig sends EDNS, 1232 bytes
    assert f"ANSWER: {MANY}," in output
    assert "Truncated" not in output  # the forwarder answered dig in full over UDP
    assert ("udp", "many.example.test.") in upstream.resolver.seen
    assert ("tcp", "many.example.test.") in upstream.resolver.seen


def test_client_without_edns_is_sent_to_tcp_for_a_big_answer(forwarder: ForwarderThread) -> None:
    query = DNSRecord.question("many.example.test")  # no OPT record: a 512-byte UDP client
    reply = DNSRecord.parse(query.send(address_of(forwarder), forwarder.port, timeout=3))
    assert reply.header.tc and reply.header.id == query.header.id and not reply.rr
    output = dig(address_of(forwarder), forwarder.port, "many.example.test", "+noedns")
    assert "Truncated, retrying in TCP mode" in output
    assert f"ANSWER: {MANY}," in output


def test_ipv6_listener_and_upstream() -> None:
    server = Upstream("::1")
    try:
        with DnsForwarder(["::1"], port=0, upstreams=[server.spec]).start_in_thread() as handle:
            assert dig("::1", handle.port, "www.example.test", "AAAA", "+short").split() == ["2001:db8::10"]
            assert dig("::1", handle.port, "www.example.test", "+tcp", "+short").split() == ["192.0.2.10"]
    finally:
        server.stop()


# --- failures ------------------------------------------------------------------------------------------------


def test_upstream_down_gives_servfail_fast() -> None:
    down = loopback()
    with DnsForwarder([loopback()], port=0, upstreams=[f"{down}:{closed_port(down)}"],
                      timeout=2.0).start_in_thread() as handle:
        started = time.monotonic()
        output = dig(address_of(handle), handle.port, "www.example.test")
        assert "status: SERVFAIL" in output
        assert time.monotonic() - started < 1.5  # the refusal is immediate: no waiting for the timeout


def test_silent_upstream_times_out_and_the_next_one_answers(upstream: Upstream) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind((loopback(), 0))
        silent = "{}:{}".format(*blackhole.getsockname())
        with DnsForwarder([loopback()], port=0, upstreams=[silent, upstream.spec],
                          timeout=0.3).start_in_thread() as handle:
            assert dig(address_of(handle), handle.port, "www.example.test", "+short").split() == ["192.0.2.10"]
        with DnsForwarder([loopback()], port=0, upstreams=[silent], timeout=0.3).start_in_thread() as handle:
            started = time.monotonic()
            assert "status: SERVFAIL" in dig(address_of(handle), handle.port, "www.example.test")
            assert 0.25 < time.monotonic() - started < 1.5


def test_malformed_packets_are_dropped_and_the_forwarder_still_answers(forwarder: ForwarderThread) -> None:
    address, port = address_of(forwarder), forwarder.port
    response = DNSRecord.question("www.example.test").reply().pack()  # a response is not a query
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        for junk in (b"", b"\x12", b"\x00\x01garbage\xff" * 5, os.urandom(300), response):
            sock.sendto(junk, (address, port))
        with pytest.raises(TimeoutError):
            sock.recv(65535)
    with socket.create_connection((address, port), timeout=3) as conn:  # junk then a query on one TCP stream
        query = DNSRecord.question("www.example.test")
        conn.sendall(b"\x00\x05junk!" + len(query.pack()).to_bytes(2, "big") + query.pack())
        size = int.from_bytes(conn.recv(2), "big")
        reply = b""
        while len(reply) < size:
            reply += conn.recv(size - len(reply))
        assert DNSRecord.parse(reply).header.id == query.header.id
    assert dig(address, port, "www.example.test", "+short").split() == ["192.0.2.10"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_resolve_never_raises_on_arbitrary_bytes(packet: bytes) -> None:
    down = "127.0.0.1"
    forwarder = DnsForwarder(["127.0.0.2"], upstreams=[f"{down}:{closed_port(down)}"], timeout=0.5)
    reply = asyncio.run(forwarder.resolve(packet, udp=True))
    if reply is not None:  # it parsed as a query: the answer is our SERVFAIL with the same id
        assert reply[:2] == packet[:2] and DNSRecord.parse(reply).header.rcode == RCODE.SERVFAIL


@pytest.mark.slow
def test_queries_in_flight_are_bounded() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind((loopback(), 0))
        silent = "{}:{}".format(*blackhole.getsockname())
        forwarder = DnsForwarder([loopback()], port=0, upstreams=[silent], timeout=0.5, max_inflight=2)
        with forwarder.start_in_thread() as handle, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(1.5)
            for _ in range(10):
                client.sendto(DNSRecord.question("www.example.test").pack(), (address_of(handle), handle.port))
            answers = [DNSRecord.parse(client.recv(65535)) for _ in range(2)]
            assert all(a.header.rcode == RCODE.SERVFAIL for a in answers)
            client.settimeout(0.7)
            with pytest.raises(TimeoutError):  # the other 8 were dropped, not queued
                client.recv(65535)
            assert probe(address_of(handle), handle.port, timeout=2.0)  # slots are released


# --- lifecycle, binding, probe -------------------------------------------------------------------------------


def test_asyncio_lifecycle_and_probe(upstream: Upstream) -> None:
    async def scenario() -> tuple[bool, bool]:
        forwarder = DnsForwarder([loopback()], port=0, upstreams=[upstream.spec])
        await forwarder.start()
        loop = asyncio.get_running_loop()
        up = await loop.run_in_executor(None, probe, forwarder.listen[0], forwarder.port)
        await forwarder.stop()
        await forwarder.stop()  # twice is fine
        down = await loop.run_in_executor(None, probe, forwarder.listen[0], forwarder.port)
        return up, down

    assert asyncio.run(scenario()) == (True, False)


def test_probe_is_false_when_nothing_answers() -> None:
    address = loopback()
    assert probe(address, closed_port(address), timeout=0.5) is False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind((address, 0))
        started = time.monotonic()
        assert probe(address, blackhole.getsockname()[1], timeout=0.3) is False
        assert time.monotonic() - started < 1.0


def test_port_taken_names_the_program_holding_it() -> None:
    address = loopback()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((address, 0))
        port = squatter.getsockname()[1]
        forwarder = DnsForwarder([address], port=port, upstreams=["127.0.0.1"])
        with pytest.raises(DnsBindError) as raised:
            forwarder.start_in_thread()
    message = str(raised.value)
    assert isinstance(raised.value, BulwarkError) and "\n" not in message
    assert f"'{address}' port {port}/udp" in message
    assert "in use by '" in message and f"(pid {os.getpid()})" in message


def test_binds_an_address_no_interface_has_yet() -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface: IP_FREEBIND lets the forwarder bind it anyway.
    with DnsForwarder(["192.0.2.1"], port=0, upstreams=["127.0.0.1"]).start_in_thread() as handle:
        assert handle.port > 0


def test_stop_twice_from_sync_code(upstream: Upstream) -> None:
    handle = DnsForwarder([loopback()], port=0, upstreams=[upstream.spec]).start_in_thread()
    handle.stop()
    handle.stop()


# --- configuration -------------------------------------------------------------------------------------------


def test_read_system_resolvers(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\n; another comment\nsearch example.test\n"
        "nameserver 10.13.13.1\n"  # the forwarder's own address: skipped
        "nameserver 192.0.2.53  # inline comment\n"
        "nameserver not-an-ip\n"
        "nameserver 2001:db8::53\n"
        "nameserver fe80::1%eth0\n"
        "nameserver 192.0.2.53\n"
        "options edns0 trust-ad\n"
    )
    assert read_system_resolvers(conf, exclude=["10.13.13.1", "fd13::1"]) == [
        "192.0.2.53", "2001:db8::53", "fe80::1%eth0"]


def test_read_system_resolvers_falls_back_to_the_local_resolver(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.13.13.1\n")
    assert read_system_resolvers(conf, exclude=["10.13.13.1"]) == ["127.0.0.1", "::1"]
    assert read_system_resolvers(tmp_path / "missing") == ["127.0.0.1", "::1"]
    assert "no usable nameserver" in caplog.text


def test_parse_upstream() -> None:
    assert parse_upstream("192.0.2.53") == ("192.0.2.53", 53)
    assert parse_upstream("192.0.2.53:5353") == ("192.0.2.53", 5353)
    assert parse_upstream("2001:db8::53") == ("2001:db8::53", 53)
    assert parse_upstream("[2001:db8::53]:5353") == ("2001:db8::53", 5353)
    for bad in ("resolver.example", "192.0.2.53:x", "[2001:db8::53]:99999", "192.0.2.300"):
        with pytest.raises(InputError):
            parse_upstream(bad)


def test_answers_its_client_networks_loopback_and_its_own_addresses_only() -> None:
    tunnel, lan = ipaddress.ip_network("10.13.13.0/24"), ipaddress.ip_network("10.0.1.0/24")
    forwarder = DnsForwarder(["10.13.13.1", "fd13::1"], upstreams=["192.0.2.53"], clients=[tunnel])
    assert all(forwarder.allows(a) for a in ("10.13.13.7", "127.0.0.1", "::1", "fd13::1", "10.13.13.1"))
    assert not any(forwarder.allows(a) for a in ("10.0.1.10", "fd13::7", "192.0.2.1", "garbage", "10.13.13.7\n"))
    forwarder.set_clients([tunnel, lan])  # what a live DNS_CLIENTS change does
    assert forwarder.allows("10.0.1.10")
    assert not DnsForwarder(["10.13.13.1"], upstreams=["192.0.2.53"]).allows("10.13.13.7")  # none by default
    with pytest.raises(InputError, match="clients must be IP networks"):
        forwarder.set_clients(["0.0.0.0/0"])  # type: ignore[list-item]


def test_rejects_forwarding_to_itself_and_empty_settings() -> None:
    with pytest.raises(InputError, match="forwarder itself"):
        DnsForwarder(["10.13.13.1"], upstreams=["10.13.13.1"])
    with pytest.raises(InputError, match="no upstream"):
        DnsForwarder(["10.13.13.1"], upstreams=[])
    with pytest.raises(InputError, match="listen address"):
        DnsForwarder(["wg0"], upstreams=["192.0.2.53"])


# --- in a network namespace, on port 53 ----------------------------------------------------------------------

FORWARDER_SCRIPT = """
import ipaddress, sys
from bulwark_vpn.dataplane.dns import DnsForwarder
clients = [ipaddress.ip_network(n) for n in sys.argv[2].split(",") if n] if len(sys.argv) > 2 else []
# upstreams: the netns resolv.conf
handle = DnsForwarder(sys.argv[1].split(","), port=53, clients=clients).start_in_thread()
print("ready", flush=True)
sys.stdin.read()
handle.stop()
"""
UPSTREAM_SCRIPT = "import sys; from tests.test_dns import serve_upstream_forever; serve_upstream_forever(*sys.argv[1:])"


class Namespace:
    def __init__(self, name: str) -> None:
        self.name = name
        self.processes: list[subprocess.Popen[str]] = []

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True, timeout=10)

    def spawn(self, script: str, *args: str) -> subprocess.Popen[str]:
        """Run a Python script in the namespace and wait until it prints "ready"."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", script, *args], cwd=REPO, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.processes.append(process)
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            process.kill()
            pytest.fail(f"{script.splitlines()[-1]} failed to start: {process.communicate()[1]}")
        return process


@pytest.fixture
def netns() -> Iterator[Namespace]:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 to create a network namespace")
    namespace = Namespace(f"bwdns-{os.getpid()}")
    etc = Path("/etc/netns") / namespace.name  # `ip netns exec` bind-mounts these files over /etc
    subprocess.run(["ip", "netns", "add", namespace.name], check=True, timeout=10)
    try:
        namespace.ip("link", "set", "lo", "up")
        try:
            namespace.ip("link", "add", "bw0", "type", "dummy")
        except subprocess.CalledProcessError:  # no dummy module (some containers): one end of a veth pair will do
            namespace.ip("link", "add", "bw0", "type", "veth", "peer", "name", "bw0peer")
            namespace.ip("link", "set", "bw0peer", "up")
        namespace.ip("link", "set", "bw0", "up")
        etc.mkdir(parents=True)
        yield namespace
    finally:
        for process in namespace.processes:
            if process.poll() is None:
                process.kill()
            with process:  # waits, and closes its pipes
                pass
        subprocess.run(["ip", "netns", "del", namespace.name], timeout=10)
        shutil.rmtree(etc, ignore_errors=True)


def test_forwarder_on_port_53_in_a_namespace(netns: Namespace) -> None:
    netns.ip("addr", "add", "10.213.13.53/24", "dev", "bw0")
    netns.spawn(UPSTREAM_SCRIPT, "10.213.13.53", "53")
    # The forwarder's own address comes first, as when the host points at itself: it must be skipped.
    (Path("/etc/netns") / netns.name / "resolv.conf").write_text("nameserver 10.213.13.1\nnameserver 10.213.13.53\n")

    # Started before the tunnel addresses exist, as the supervisor may do: IP_FREEBIND makes that work.
    # dig's source is the namespace's first address, 10.213.13.53: a client network must include it.
    forwarder = netns.spawn(FORWARDER_SCRIPT, "10.213.13.1,fd13:213:13::1", "10.213.13.0/24,fd13:213:13::/64")
    netns.ip("addr", "add", "10.213.13.1/24", "dev", "bw0")
    netns.ip("-6", "addr", "add", "fd13:213:13::1/64", "dev", "bw0", "nodad")

    assert dig("10.213.13.1", 53, "www.example.test", "+short", netns=netns.name).split() == ["192.0.2.10"]
    assert dig("10.213.13.1", 53, "www.example.test", "+tcp", "+short", netns=netns.name).split() == ["192.0.2.10"]
    assert dig("fd13:213:13::1", 53, "www.example.test", "AAAA", "+short",
               netns=netns.name).split() == ["2001:db8::10"]
    assert f"ANSWER: {MANY}," in dig("10.213.13.1", 53, "many.example.test", netns=netns.name)

    _, errors = forwarder.communicate(timeout=10)  # closing stdin asks it to stop
    assert forwarder.returncode == 0, errors


@pytest.mark.netns
def test_queries_from_outside_the_client_networks_get_no_answer_without_any_firewall(netns: Namespace) -> None:
    # No nft table in this namespace: the forwarder alone must refuse to be an open resolver.
    netns.ip("addr", "add", "10.213.13.53/24", "dev", "bw0")
    netns.ip("addr", "add", "192.0.2.77/32", "dev", "bw0")  # a source outside the client networks
    netns.spawn(UPSTREAM_SCRIPT, "10.213.13.53", "53")
    (Path("/etc/netns") / netns.name / "resolv.conf").write_text("nameserver 10.213.13.53\n")
    netns.ip("addr", "add", "10.213.13.1/24", "dev", "bw0")
    forwarder = netns.spawn(FORWARDER_SCRIPT, "10.213.13.1", "10.213.13.0/24")

    def ask(source: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = ["ip", "netns", "exec", netns.name, "dig", "-b", source, "@10.213.13.1", "+time=1", "+tries=1",
                   "+short", "www.example.test", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)

    assert ask("10.213.13.53").stdout.split() == ["192.0.2.10"]  # a client network: answered
    assert ask("10.213.13.53", "+tcp").stdout.split() == ["192.0.2.10"]
    stranger, stranger_tcp = ask("192.0.2.77"), ask("192.0.2.77", "+tcp")
    assert stranger.returncode == 9 and "timed out" in stranger.stdout  # UDP: no answer at all
    assert stranger_tcp.returncode != 0 and "192.0.2.10" not in stranger_tcp.stdout  # TCP: closed unanswered
    forwarder.communicate(timeout=10)
    assert forwarder.returncode == 0
