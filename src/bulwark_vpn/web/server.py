"""Serving the app with uvicorn: on the loopback and the gateway's tunnel address by default (reachable from the
host and the VPN, not from the internet), on the addresses given with `--listen` otherwise; TLS with a
certificate, or plain HTTP behind a reverse proxy whose address is trusted for X-Forwarded-For/Proto.

It runs on its own (`bulwark serve`) or as a thread of the gateway's supervisor (`bulwark up --serve`, or the
`serve` setting): one process to supervise in a container, and the API lives and dies with the gateway.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bulwark_vpn.errors import InputError, SystemActionError
from bulwark_vpn.service import Context
from bulwark_vpn.values import parse_network, require_text

log = logging.getLogger("bulwark_vpn.web")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


@dataclass(frozen=True)
class Listen:
    address: str
    port: int

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


def parse_listen(value: object) -> Listen:
    """ADDR:PORT with an IP address (IPv6 in brackets): 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8443."""
    from bulwark_vpn.values import parse_endpoint, parse_ip_address

    hint = "use ADDRESS:PORT with an IP address, e.g. 127.0.0.1:8080 or [::1]:8080"
    text = require_text(value, "listen address", hint)
    try:
        endpoint = parse_endpoint(text, "listen address")
        address = parse_ip_address(endpoint.host, "listen address")
    except InputError:
        raise InputError("invalid listen address", value, hint) from None
    return Listen(str(address), endpoint.port)


@dataclass(frozen=True)
class ServeOptions:
    listen: tuple[Listen, ...] = ()  # empty: the defaults (loopback and the tunnel addresses, the API port)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, *, listen: Sequence[object] = (), tls_cert: object = None, tls_key: object = None,
              trusted_proxies: Sequence[object] = ()) -> ServeOptions:
        if (tls_cert is None) != (tls_key is None):
            raise InputError("TLS needs both a certificate and its key", None, "give --tls-cert and --tls-key")
        paths: list[Path | None] = []
        for what, value in (("TLS certificate", tls_cert), ("TLS key", tls_key)):
            if value is None:
                paths.append(None)
                continue
            path = Path(require_text(value, what, "a file path"))
            if not path.is_file():
                raise InputError(f"cannot read the {what}", str(path), "check the path")
            paths.append(path)
        return cls(tuple(parse_listen(v) for v in listen), paths[0], paths[1],
                   tuple(parse_network(v, "trusted proxy") for v in trusted_proxies))


def default_listen(ctx: Context) -> tuple[Listen, ...]:
    with ctx.open_store(read_only=True) as store:
        settings = store.settings()
    port = settings.api_port
    return (Listen("127.0.0.1", port), *(Listen(str(a.ip), port) for a in settings.server_addresses))


def _socket(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.address else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP, and
    # with Nagle on, a response written in two pieces waits for the client's delayed ACK: 40 ms per request on a
    # kept-alive connection, as a browser's are. TCP_NODELAY is set here too; accepted sockets inherit it.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The tunnel address exists only while the gateway is up: bind to it anyway.
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((listen.address, listen.port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise SystemActionError(f"cannot listen on {listen}: {exc.strerror}", str(listen),
                                "pick another --listen address or port (the API port setting)") from None
    sock.set_inheritable(True)
    return sock


# A client has this long, from connecting or from the end of the previous response, to send a whole request (head
# and body). Without it, connections that send a request slowly, or half of one, hold server slots for as long as
# they stay open: a few hundred of them and every caller gets 503.
REQUEST_TIMEOUT = 10.0


def _guarded_protocol(request_timeout: float):
    """uvicorn's HTTP/1.1 protocol with a deadline for receiving each request."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedProtocol(H11Protocol):
        _deadline = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(request_timeout, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            # Still receiving: no request head yet (IDLE) or a body not finished (SEND_BODY). A request fully
            # received and being answered is left alone, however long the answer takes.
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol


def build_server(ctx: Context, options: ServeOptions, *, request_timeout: float = REQUEST_TIMEOUT):
    """A uvicorn server for the app and its listening sockets (bound now, so errors come before anything runs)."""
    from dataclasses import replace

    import uvicorn

    from bulwark_vpn.service.context import StoreCache
    from bulwark_vpn.web.app import WebConfig, create_app

    base = replace(ctx, stores=StoreCache())

    def context_factory() -> Context:
        return base

    app = create_app(context_factory, WebConfig(trusted_proxies=options.trusted_proxies))
    listen = options.listen or default_listen(ctx)
    sockets = [_socket(item) for item in listen]
    config = uvicorn.Config(app, access_log=False, log_level="warning", server_header=False, date_header=True,
                            proxy_headers=False, ssl_certfile=str(options.tls_cert) if options.tls_cert else None,
                            ssl_keyfile=str(options.tls_key) if options.tls_key else None, timeout_keep_alive=5,
                            limit_concurrency=256, http=_guarded_protocol(request_timeout))
    return uvicorn.Server(config), sockets, listen


def serve_forever(ctx: Context, options: ServeOptions, ready=None) -> None:
    """`bulwark serve`: run until SIGTERM/SIGINT."""
    server, sockets, listen = build_server(ctx, options)
    scheme = "https" if options.tls_cert else "http"
    log.info("bulwark: the API and web pages are served on %s", ", ".join(f"{scheme}://{x}" for x in listen))
    if ready is not None:
        ready(listen)
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()


class BackgroundServer:
    """The API as a thread of the supervisor (`up --serve`)."""

    def __init__(self, ctx: Context, options: ServeOptions, *, request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.server, self.sockets, self.listen = build_server(ctx, options, request_timeout=request_timeout)
        self.thread = threading.Thread(target=self._run, name="bulwark-api", daemon=True)

    def _run(self) -> None:
        try:
            self.server.run(sockets=self.sockets)
        except Exception as exc:  # noqa: BLE001 - the gateway keeps running without its API, and says so
            log.error("bulwark: the API stopped: %s", exc)

    def start(self) -> BackgroundServer:
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        for sock in self.sockets:
            sock.close()
