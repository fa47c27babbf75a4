"""The DNS forwarder that VPN peers use when PEERDNS=auto.

The gateway answers DNS on its tunnel addresses (e.g. 10.13.13.1 and the IPv6 one) and relays each query to the
host's resolvers, so peers resolve names exactly as the host does without the host's resolver having to listen on
the tunnel. This module owns:

* `read_system_resolvers`: the upstreams named in resolv.conf, minus the forwarder's own addresses;
* `DnsForwarder`: UDP and TCP listeners on each address, forwarding with a per-upstream timeout, a TCP retry when
  the upstream truncates, SERVFAIL when every upstream fails; usable from asyncio or from a background thread. It
  answers only its `clients` (the tunnel subnets, plus the networks the DNS_CLIENTS setting names) and the host
  itself: a query from anywhere else gets no answer, even when the firewall that also drops it is not loaded, so
  the forwarder is never an open resolver;
* `probe`: one real query, used by `doctor` to check that the forwarder answers.

It never prints and logs at debug level only: a line per query would flood any real log.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import cast

from dnslib import QTYPE, RCODE, DNSError, DNSHeader, DNSRecord

from bulwark_vpn.errors import InputError, SystemActionError

logger = logging.getLogger(__name__)

DNS_PORT = 53
# What glibc itself uses when resolv.conf names no server.
FALLBACK_RESOLVERS = ("127.0.0.1", "::1")
# Enough for a busy gateway; beyond it UDP queries are dropped (clients retry) instead of piling up tasks.
MAX_INFLIGHT = 256
# An idle TCP client is disconnected after this, so idle connections cannot pin the forwarder's resources.
TCP_IDLE_TIMEOUT = 10.0
# Linux's IP_FREEBIND (15), which Python's socket module does not always export. Set at SOL_IP it also applies to
# IPv6 sockets.
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
# RFC 1035: without EDNS a client accepts at most 512 bytes over UDP.
CLASSIC_UDP_LIMIT = 512

Address = tuple[str, int]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DnsBindError(SystemActionError):
    """The forwarder could not listen on one of its addresses."""


def read_system_resolvers(path: str | os.PathLike[str] = "/etc/resolv.conf",
                          exclude: Iterable[str] = ()) -> list[str]:
    """The `nameserver` addresses (IPv4 and IPv6) in resolv.conf, in order, without duplicates.

    Addresses in `exclude` (the forwarder's own listen addresses) are skipped: forwarding to ourselves would loop.
    If none remain, fall back to glibc's default, the local resolver, and say so in a warning.
    """
    own = {ipaddress.ip_address(address) for address in exclude}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        logger.warning("cannot read %s (%s)", path, exc.strerror)
        lines = []
    found: list[str] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(fields[1])
        except ValueError:
            logger.debug("ignoring nameserver %r in %s: not an IP address", fields[1], path)
            continue
        if address not in own and str(address) not in found:
            found.append(str(address))
    if not found:
        found = [a for a in FALLBACK_RESOLVERS if ipaddress.ip_address(a) not in own]
        logger.warning("no usable nameserver in %s; forwarding DNS to %s", path, ", ".join(found) or "nothing")
    return found


def parse_upstream(spec: str) -> Address:
    """Parse an upstream as `addr`, `v4addr:port` or `[v6addr]:port` into (address, port)."""
    host, port = spec, DNS_PORT
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest:
            port = _parse_port(spec, rest.removeprefix(":"))
    elif spec.count(":") == 1:
        host, _, port_text = spec.partition(":")
        port = _parse_port(spec, port_text)
    return str(_parse_ip(host, spec, "upstream resolver")), port


class DnsForwarder:
    """Answers DNS on `listen` addresses by relaying each query to `upstreams`, tried in order.

    `upstreams` defaults to the system resolvers (see `read_system_resolvers`); each takes the forms that
    `parse_upstream` accepts. `port=0` picks a free port, the same for every address and both protocols, readable
    from `port` after `start()`. `timeout` bounds the time spent on each upstream. Queries are answered only
    from `clients` (networks; see `set_clients`), loopback and the listen addresses themselves (the host).
    """

    def __init__(self, listen: Sequence[str], port: int = DNS_PORT, upstreams: Sequence[str] | None = None,
                 timeout: float = 2.0, max_inflight: int = MAX_INFLIGHT, clients: Sequence[IPNetwork] = ()) -> None:
        if not listen:
            raise InputError("dns forwarder: no listen address; pass the tunnel address(es)")
        self.listen = list(dict.fromkeys(str(_parse_ip(a, a, "listen address")) for a in listen))
        self._own = frozenset(ipaddress.ip_address(a) for a in self.listen)
        self.clients: tuple[IPNetwork, ...] = ()
        self.set_clients(clients)
        self.port = port
        if upstreams is None:
            upstreams = read_system_resolvers(exclude=self.listen)
        self.upstreams = [parse_upstream(spec) for spec in upstreams]
        if not self.upstreams:
            raise InputError("dns forwarder: no upstream resolver; add a nameserver line to /etc/resolv.conf "
                             "or set PEERDNS to a resolver address")
        for host, upstream_port in self.upstreams:
            if host in self.listen and upstream_port == port:
                raise InputError(f"dns forwarder: upstream '{host}' is the forwarder itself; "
                                 "pick another resolver")
        self.timeout = timeout
        self._max_inflight = max_inflight
        self._inflight = 0
        self._transports: list[asyncio.BaseTransport] = []
        self._servers: list[asyncio.AbstractServer] = []
        # UDP query tasks and TCP connection tasks, so that stop() can cancel them.
        self._tasks: set[asyncio.Task[None]] = set()

    def set_clients(self, clients: Sequence[IPNetwork]) -> None:
        """Answer queries from these networks from now on (one assignment: safe while serving)."""
        if not all(isinstance(net, IPNetwork) for net in clients):
            raise InputError(f"dns forwarder: clients must be IP networks: {list(clients)!r}")
        self.clients = tuple(clients)

    def allows(self, source: str) -> bool:
        """True if a query from `source` may be answered: a client network, loopback, or the host itself."""
        try:
            address = ipaddress.ip_address(source.split("%", 1)[0])
        except ValueError:
            return False
        if address.is_loopback or address in self._own:
            return True
        return any(address in net for net in self.clients if net.version == address.version)

    async def start(self) -> None:
        """Listen on every address (UDP and TCP); raise DnsBindError if any cannot be bound."""
        loop = asyncio.get_running_loop()
        self.port, sockets = self._bind_all()
        try:
            for sock in sockets:
                if sock.type == socket.SOCK_DGRAM:
                    transport, _ = await loop.create_datagram_endpoint(lambda: _UdpListener(self), sock=sock)
                    self._transports.append(transport)
                else:
                    self._servers.append(await asyncio.start_server(self._serve_tcp, sock=sock))
        except BaseException:
            for sock in sockets:
                sock.close()
            await self.stop()
            raise
        logger.debug("dns forwarder listening on %s port %d, upstreams %s", ", ".join(self.listen), self.port,
                     ", ".join(f"{h}:{p}" for h, p in self.upstreams))

    async def stop(self) -> None:
        """Close the listeners and cancel queries in flight. Safe to call twice."""
        for transport in self._transports:
            transport.close()
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._transports.clear()
        self._servers.clear()

    def start_in_thread(self) -> ForwarderThread:
        """Run the forwarder on its own event loop in a daemon thread, for sync callers (the supervisor).

        Returns once listening; a bind failure is raised here, in the caller's thread.
        """
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="bulwark-dns", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        return ForwarderThread(self, loop, thread)

    async def resolve(self, query: bytes, *, udp: bool = False) -> bytes | None:
        """Answer one wire-format query: the upstream's reply under the client's id, or SERVFAIL if every
        upstream fails. None means drop it (malformed, or not a query). With `udp`, an answer too large for the
        client's UDP buffer is replaced by a truncated one so that the client asks again over TCP."""
        try:
            request = DNSRecord.parse(query)
        except Exception as exc:  # any parse failure of untrusted bytes is just a malformed packet
            logger.debug("dns: dropping malformed packet (%s)", exc)
            return None
        if request.header.qr:
            # Answering responses would let two misconfigured forwarders bounce packets forever.
            logger.debug("dns: dropping a response sent as a query")
            return None
        for upstream in self.upstreams:
            try:
                reply = await self._ask(upstream, query, request)
            except (OSError, EOFError, TimeoutError, DNSError) as exc:
                logger.debug("dns: upstream %s:%d failed for %s: %r", *upstream, request.q.qname, exc)
                continue
            if udp and len(reply) > _udp_limit(request):
                return _truncated(request, reply)
            return reply
        logger.debug("dns: all upstreams failed for %s; answering SERVFAIL", request.q.qname)
        return _servfail(request)

    async def _ask(self, upstream: Address, query: bytes, request: DNSRecord) -> bytes:
        """One upstream's answer to `query`, over UDP, then over TCP if the UDP answer was truncated."""
        # A fresh random id per hop, so off-path guesses are as hard as against the client's own resolver; the
        # client's id is put back on the way out.
        wire = secrets.randbits(16).to_bytes(2, "big") + query[2:]
        async with asyncio.timeout(self.timeout):
            data = await _udp_exchange(upstream, wire)
            reply = DNSRecord.parse(data)
            if reply.header.tc:
                data = await _tcp_exchange(upstream, wire)
                reply = DNSRecord.parse(data)
        if data[:2] != wire[:2] or not reply.header.qr:
            raise DNSError("the answer does not match the query")
        if reply.questions and reply.questions != request.questions:
            raise DNSError("the answer is for another question")
        return query[:2] + data[2:]

    def _bind_all(self) -> tuple[int, list[socket.socket]]:
        """Bind UDP and TCP sockets on every address to one port (a free one when port is 0)."""
        for _attempt in range(20):
            port, sockets = self.port, []
            try:
                for address in self.listen:
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                        sockets.append(_listen_socket(address, port, kind))
                        port = port or sockets[-1].getsockname()[1]
                return port, sockets
            except OSError as exc:
                for sock in sockets:
                    sock.close()
                # With a picked port, another address or protocol may hold it: pick again.
                if not (self.port == 0 and exc.errno == errno.EADDRINUSE):
                    raise _bind_error(address, port, kind, exc) from exc
        raise DnsBindError(f"cannot find a free port for DNS on {', '.join(self.listen)}; pass an explicit port")

    def _on_datagram(self, data: bytes, client: Address, transport: asyncio.DatagramTransport) -> None:
        if not self.allows(client[0]):
            # No answer at all: a refusal would still reflect traffic toward a spoofed source.
            logger.debug("dns: ignoring a query from %s: not a tunnel peer nor a DNS client", client[0])
            return
        # Counted here, synchronously: many datagrams can arrive before any task gets to run.
        if self._inflight >= self._max_inflight:
            logger.debug("dns: dropping a query from %s: %d queries in flight", client[0], self._inflight)
            return
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._answer_datagram(data, client, transport))
        self._tasks.add(task)
        task.add_done_callback(self._query_done)

    def _query_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1

    async def _answer_datagram(self, data: bytes, client: Address, transport: asyncio.DatagramTransport) -> None:
        reply = await self.resolve(data, udp=True)
        if reply is not None and not transport.is_closing():
            transport.sendto(reply, client)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # always true inside a stream callback
            self._tasks.add(task)
        try:
            peer = writer.get_extra_info("peername")
            if not peer or not self.allows(str(peer[0])):
                logger.debug("dns: closing a TCP connection from %s: not a tunnel peer nor a DNS client", peer)
                return
            while True:
                try:
                    async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                        size = int.from_bytes(await reader.readexactly(2), "big")
                        query = await reader.readexactly(size)
                except (TimeoutError, EOFError, OSError):
                    return
                if self._inflight >= self._max_inflight:
                    return  # closing the connection makes the client retry
                self._inflight += 1
                try:
                    reply = await self.resolve(query)
                finally:
                    self._inflight -= 1
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except OSError as exc:
            logger.debug("dns: tcp client went away: %r", exc)
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()


class ForwarderThread:
    """A DnsForwarder running on its own event loop in a daemon thread; `stop()` shuts it down."""

    def __init__(self, forwarder: DnsForwarder, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.forwarder = forwarder
        self._loop = loop
        self._thread: threading.Thread | None = thread

    @property
    def port(self) -> int:
        return self.forwarder.port

    def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, cancel queries in flight and end the thread. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.forwarder.stop(), self._loop).result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(timeout)
            if not thread.is_alive():
                self._loop.close()

    def __enter__(self) -> ForwarderThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def probe(address: str, port: int = DNS_PORT, name: str = ".", timeout: float = 1.0) -> bool:
    """Send one real query (NS of `name`) over UDP; True if a valid DNS response to it arrives within `timeout`.

    Any response counts, SERVFAIL included: the question is whether something answers DNS there.
    """
    return probe_rcode(address, port, name, timeout) is not None


def probe_rcode(address: str, port: int = DNS_PORT, name: str = ".", timeout: float = 1.0) -> int | None:
    """The response code of one real query (NS of `name`, the root by default, which every working resolver
    answers), or None when nothing answers in time. SERVFAIL from a forwarder means its upstreams failed."""
    query = DNSRecord.question(name, "NS")
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
            sock.connect((address, port))
            sock.send(query.pack())
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    reply = DNSRecord.parse(sock.recv(65535))
                except DNSError:
                    continue
                if reply.header.id == query.header.id and reply.header.qr:
                    return int(reply.header.rcode)
    except OSError as exc:
        logger.debug("dns probe of %s port %d failed: %r", address, port, exc)
    return None


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, forwarder: DnsForwarder) -> None:
        self._forwarder = forwarder
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self._transport is not None:
            self._forwarder._on_datagram(data, addr, self._transport)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from clients that went away: nothing to do.
        logger.debug("dns: udp listener error: %r", exc)


async def _udp_exchange(server: Address, wire: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(_family(server[0]), socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        # connect() makes the kernel accept datagrams from the upstream only and report its ICMP errors, so a
        # down upstream fails at once instead of after the timeout.
        await loop.sock_connect(sock, server)
        await loop.sock_sendall(sock, wire)
        while True:
            data = await loop.sock_recv(sock, 65535)
            if data[:2] == wire[:2]:
                return data  # anything else is stale or forged; keep waiting until the timeout


async def _tcp_exchange(server: Address, wire: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*server)
    try:
        writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()
        size = int.from_bytes(await reader.readexactly(2), "big")
        return await reader.readexactly(size)
    finally:
        writer.close()


def _listen_socket(address: str, port: int, kind: socket.SocketKind) -> socket.socket:
    family = _family(address)
    # IPPROTO_TCP spelled out for TCP: asyncio turns Nagle off only on connections whose socket says so.
    sock = socket.socket(family, kind, socket.IPPROTO_TCP if kind == socket.SOCK_STREAM else 0)
    try:
        # FREEBIND lets us bind the tunnel address before the wg interface has it, so the supervisor can start
        # the forwarder first; queries arrive as soon as the address is added.
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            # Restarting must not fail on connections in TIME_WAIT. Linux still refuses a second listener.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_error(address: str, port: int, kind: socket.SocketKind, exc: OSError) -> DnsBindError:
    where = f"'{address}' port {port}/{'udp' if kind == socket.SOCK_DGRAM else 'tcp'}"
    if exc.errno == errno.EADDRINUSE:
        owner = _port_owner(port, "udp" if kind == socket.SOCK_DGRAM else "tcp") or "another program"
        return DnsBindError(f"cannot listen for DNS on {where}: the port is in use by {owner}; stop that resolver "
                            "or make it listen on its own addresses only (dnsmasq: bind-interfaces), "
                            "or set PEERDNS to a resolver address")
    if exc.errno == errno.EACCES:
        return DnsBindError(f"cannot listen for DNS on {where}: permission denied; run as root "
                            "or grant CAP_NET_BIND_SERVICE")
    return DnsBindError(f"cannot listen for DNS on {where}: {exc.strerror}; check the tunnel address")


def _port_owner(port: int, proto: str) -> str | None:
    """Name the process holding a local port, e.g. "'dnsmasq' (pid 812)", from /proc; None if not visible."""
    inodes = set()
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl local_address rem_address st ... inode (field 9)
            listening = proto == "udp" or fields[3] == "0A"  # 0A: TCP_LISTEN
            if int(fields[1].rsplit(":", 1)[1], 16) == port and listening and fields[9] != "0":
                inodes.add(f"socket:[{fields[9]}]")
    for pid_dir in Path("/proc").iterdir() if inodes else ():
        if not pid_dir.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (pid_dir / "fd").iterdir()):
                return f"'{(pid_dir / 'comm').read_text().strip()}' (pid {pid_dir.name})"
        except OSError:
            continue  # the process ended, or is not ours to inspect
    return None


def _udp_limit(request: DNSRecord) -> int:
    # RFC 6891: an EDNS client advertises its UDP buffer in the OPT record's class field.
    sizes = [rr.rclass for rr in request.ar if rr.rtype == QTYPE.OPT]
    return max([CLASSIC_UDP_LIMIT, *sizes])


def _truncated(request: DNSRecord, reply: bytes) -> bytes:
    header = DNSRecord.parse(reply).header
    return DNSRecord(DNSHeader(id=request.header.id, bitmap=header.bitmap, tc=1), questions=request.questions).pack()


def _servfail(request: DNSRecord) -> bytes:
    header = DNSHeader(id=request.header.id, qr=1, opcode=request.header.opcode, rd=request.header.rd, ra=1,
                       rcode=RCODE.SERVFAIL)
    return DNSRecord(header, questions=request.questions).pack()


def _parse_ip(text: str, value: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InputError(f"dns forwarder: {what} is not an IP address: '{value}'") from None


def _parse_port(spec: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InputError(f"dns forwarder: bad port in upstream resolver: '{spec}'; use addr, addr:port "
                         "or [v6addr]:port")
    return int(text)


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET
