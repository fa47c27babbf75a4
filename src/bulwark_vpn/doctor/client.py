"""The client checks of `bulwark doctor --peer-config FILE`: will this wg-quick config connect, and if not, why?

The decisive check is `handshake`: it sends a real WireGuard handshake initiation built from the config's own
keys to its Endpoint and verifies the response (see `doctor.handshake`), so "the server knows this peer and
shares its preshared key" is proven, not guessed. The others look at this machine: the Endpoint, routes that
collide with AllowedIPs, DNS through the tunnel (only when the tunnel is up), wg-quick and the userspace
fallback. Like the server checks, they only read, except the handshake itself.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dnslib import RCODE

from bulwark_vpn.dataplane import dns, link
from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.doctor import handshake
from bulwark_vpn.doctor.checks import TUN_DEVICE, run_checks
from bulwark_vpn.doctor.common import IPAddress, address_kind, listing, resolve
from bulwark_vpn.doctor.facts import HostFacts
from bulwark_vpn.doctor.model import CheckResult, Remedy, fail, ok, skip, warn
from bulwark_vpn.errors import BulwarkError, InputError
from bulwark_vpn.model import IPNetwork, WgConfig, WgPeerSection
from bulwark_vpn.render.wgquick import parse_config
from bulwark_vpn.values import parse_endpoint

HANDSHAKE_ATTEMPTS = 3
HANDSHAKE_TIMEOUT = 1.0
DNS_TIMEOUT = 3.0
SESSION_WINDOW = 180  # seconds: WireGuard rekeys every 2 min while traffic flows
SESSION_WAIT = 1.5  # a handshake takes milliseconds; it is retried only after 5 s


def load_peer_config(path: Path) -> WgConfig:
    """Read and parse a client config; InputError (one line) when it cannot be used."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read the peer config '{path}': {exc.strerror}: check the path") from None
    except UnicodeDecodeError:
        raise InputError(f"invalid peer config '{path}': not a text file") from None
    config = parse_config(text, str(path))
    if not config.peers:
        raise InputError(f"invalid peer config '{path}': no [Peer] section: use the file 'bulwark peer show NAME' "
                         "prints")
    return config


@dataclass
class ClientContext:
    path: Path
    config: WgConfig
    host: HostFacts
    attempts: int = HANDSHAKE_ATTEMPTS
    timeout: float = HANDSHAKE_TIMEOUT
    endpoint: tuple[str, int] | None = None
    addresses: list[IPAddress] = field(default_factory=list)
    endpoint_error: str | None = None

    @property
    def peer(self) -> WgPeerSection:
        # A client config of Bulwark has one [Peer], the server; with several, the first with an Endpoint.
        return next((p for p in self.config.peers if p.endpoint), self.config.peers[0])

    def resolve_endpoint(self) -> None:
        if self.peer.endpoint is None:
            self.endpoint_error = "no Endpoint"
            return
        try:
            self.endpoint = parse_endpoint(self.peer.endpoint)
            self.addresses = resolve(*self.endpoint)
        except BulwarkError as exc:
            self.endpoint_error = str(exc)
        except OSError as exc:
            self.endpoint_error = f"'{self.peer.endpoint}' does not resolve: {exc}"

    def tunnel_interfaces(self) -> list[str]:
        """Local WireGuard interfaces that run this config (same public key): the tunnel is up there."""
        return self.host.interfaces_with_key(str(self.config.interface.private_key.public_key()))


def check_permissions(ctx: ClientContext) -> CheckResult:
    mode = stat.S_IMODE(os.stat(ctx.path).st_mode)
    if mode & 0o077:
        return warn("permissions", f"{ctx.path} is {mode:04o}: its PrivateKey is readable by other users",
                    f"chmod 600 {ctx.path}", Remedy("chmod", {"paths": ((str(ctx.path), 0o600),)}))
    return ok("permissions", f"{ctx.path} is {mode:04o}")


def check_endpoint(ctx: ClientContext) -> CheckResult:
    server_fix = "on the server: bulwark init --server-url PUBLIC_HOST, then bulwark peer show NAME > FILE"
    if ctx.peer.endpoint is None:
        return fail("endpoint", f"{ctx.path} has no Endpoint: the client does not know where the server is",
                    f"add 'Endpoint = HOST:PORT' under [Peer] ({server_fix})")
    if ctx.endpoint_error is not None:
        return fail("endpoint", ctx.endpoint_error, f"fix the Endpoint line ({server_fix})")
    shown = ", ".join(str(a) for a in ctx.addresses)
    kinds = {address_kind(a) for a in ctx.addresses}
    if kinds & {"unspecified", "loopback"}:
        return warn("endpoint", f"Endpoint {ctx.peer.endpoint} is this machine itself: it only works when the server "
                                "runs on this host (from any other host the client talks to itself)", server_fix)
    note = " (a private address: reachable only from inside that network)" if kinds == {"private"} else ""
    return ok("endpoint", f"Endpoint {ctx.peer.endpoint} -> {shown}{note}")


def _probe_address(ctx: ClientContext) -> tuple[str, int] | None:
    if ctx.endpoint is None or not ctx.addresses:
        return None
    return str(ctx.addresses[0]), ctx.endpoint[1]


def check_handshake(ctx: ClientContext) -> CheckResult:
    address = _probe_address(ctx)
    if address is None:
        return skip("handshake", "not checked: the Endpoint cannot be used (see the endpoint check)")
    marks = ctx.host.full_tunnel_marks()
    active = ctx.tunnel_interfaces()
    outcome = handshake.probe(
        address, ctx.config.interface.private_key, ctx.peer.public_key, ctx.peer.preshared_key,
        attempts=ctx.attempts, timeout=ctx.timeout,
        # With the tunnel down, complete the handshake as a client would (the server then records it); with it
        # up, do not: a confirmed probe session would replace the live one on the server.
        confirm=not active, fwmark=marks[0][0] if marks else None,
    )
    if active and outcome.verdict in ("ok", "psk_mismatch"):
        _reclaim_endpoint(ctx)  # the server consumed our initiation
    where = f"{ctx.peer.endpoint} ({address[0]})" if ctx.endpoint and ctx.endpoint[0] != address[0] else \
        ctx.peer.endpoint
    reexport = "on the server: bulwark peer show NAME > FILE (the current keys)"
    if outcome.verdict == "ok":
        rtt = f"{outcome.rtt_ms:.1f} ms" if outcome.rtt_ms is not None else "?"
        return ok("handshake", f"{where} answered a handshake initiation made with this config's keys and its "
                               f"response verified ({rtt}): the server knows this peer")
    if outcome.verdict == "psk_mismatch":
        return fail("handshake", f"{where} answered, so it knows this peer's public key, but its response does not "
                                 "decrypt: the PresharedKey in this config is not the server's",
                    f"{reexport}; or remove the PresharedKey line if the server has none")
    if outcome.verdict == "bad_response":
        return fail("handshake", f"{where} answered with a response that does not verify ({outcome.detail})",
                    f"check that the Endpoint is this server; {reexport}")
    if outcome.verdict == "cookie":
        return warn("handshake", f"{where} is under load and asked for a cookie round trip: not verified",
                    "run the check again in a minute")
    if outcome.verdict == "refused":
        return fail("handshake", f"{outcome.detail}: the server is down, the port is wrong, or not forwarded to it",
                    "on the server: bulwark up (bulwark status); the Endpoint port must be the server's SERVERPORT")
    if outcome.verdict == "unreachable":
        return fail("handshake", outcome.detail, "check this machine's route to the Endpoint (ip route get ADDRESS)")
    return fail("handshake", f"{outcome.detail}: the server does not accept this config's keys (wrong PrivateKey, the "
                             "peer was removed or disabled, or PublicKey is not the server's), or UDP to the port is "
                             "blocked or not forwarded",
                f"on the server: bulwark doctor (port_filter, handshakes); {reexport}")


def _reclaim_endpoint(ctx: ClientContext) -> None:
    """The server now sends this peer's traffic to the probe's port; one packet through the running tunnel
    moves it back to the tunnel's own (WireGuard roams to the source of every authenticated packet)."""
    targets = [n for n in ctx.peer.allowed_ips if n.version == 4 and 0 < n.prefixlen < 32]
    addresses = [str(next(targets[0].hosts()))] if targets else []
    addresses += [d for d in ctx.config.interface.dns if d.count(".") == 3]
    if not addresses:
        return
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"", (addresses[0], 9))  # the discard port: it only has to travel
    except OSError:
        pass


def _tunnel_routes(ctx: ClientContext) -> set[str]:
    names = set(ctx.tunnel_interfaces())
    names.add(ctx.path.stem)  # wg-quick names the interface after the file
    return names


def _local_routes(ctx: ClientContext) -> list[tuple[IPNetwork, dict]]:
    skip_devs = _tunnel_routes(ctx)
    found = []
    for family in (4, 6):
        for route in ctx.host.routes(family):
            dst = route.get("dst")
            if dst in (None, "default") or route.get("dev") in skip_devs:
                continue
            net = ipaddress.ip_network(dst, strict=False)
            if (net.version == 6 and net.is_link_local) or net.is_multicast:
                continue
            found.append((net, route))
    return found


def check_allowed_ips(ctx: ClientContext) -> CheckResult:
    allowed = [n for n in ctx.peer.allowed_ips if n.prefixlen > 0]
    full = [str(n) for n in ctx.peer.allowed_ips if n.prefixlen == 0]
    routes = _local_routes(ctx)
    hard, soft = [], []
    endpoint_ips = ctx.addresses
    for net in allowed:
        for endpoint in (e for e in endpoint_ips if e.version == net.version and e in net):
            longest = max((r.prefixlen for r, _ in routes if r.version == endpoint.version and endpoint in r),
                          default=0)
            if longest < net.prefixlen:
                hard.append(f"AllowedIPs {net} contains the Endpoint {endpoint}: the encrypted packets would be "
                            "routed into the tunnel itself")
        for rnet, route in routes:
            if rnet.version != net.version or not rnet.overlaps(net):
                continue
            if any(e in rnet for e in endpoint_ips if e.version == rnet.version) and rnet.prefixlen > net.prefixlen:
                continue  # the route that carries the tunnel to its Endpoint
            where = f"{rnet} dev {route.get('dev')}"
            if rnet == net:
                hard.append(f"AllowedIPs {net} is also the local route {where}: wg-quick up fails ('File exists')")
            elif rnet.prefixlen > net.prefixlen:
                soft.append(f"the local route {where} is more specific than AllowedIPs {net}: that part bypasses "
                            "the tunnel")
            else:
                soft.append(f"AllowedIPs {net} takes part of the local network {where} into the tunnel")
    note = f"; {', '.join(full)}: full tunnel (wg-quick keeps the Endpoint outside it)" if full else ""
    if hard:
        return fail("allowed_ips", "; ".join(hard + soft),
                    "narrow AllowedIPs so it leaves out the Endpoint and the local networks "
                    "(on the server: bulwark peer add NAME --allowed-ips CIDRS)")
    if soft:
        return warn("allowed_ips", "; ".join(soft), "narrow AllowedIPs, or accept that the more specific route wins")
    shown = listing([str(n) for n in allowed]) or "(none besides the full tunnel)"
    return ok("allowed_ips", f"no local route overlaps AllowedIPs {shown}{note}")


def check_dns(ctx: ClientContext) -> CheckResult:
    servers = []
    for item in ctx.config.interface.dns:
        try:
            servers.append(ipaddress.ip_address(item))
        except ValueError:
            continue  # a search domain
    if not servers:
        return skip("dns", "not checked: the config sets no DNS server")
    tunnel = []
    for server in servers:
        route = ctx.host.route_get(str(server))
        dev = route.get("dev") if route else None
        if dev and ctx.host.is_wireguard(str(dev)):
            tunnel.append((server, dev))
    if not tunnel:
        return skip("dns", f"not checked: the tunnel is down (DNS {listing([str(s) for s in servers])} is not routed "
                           f"through WireGuard); bring it up (wg-quick up {ctx.path}) and run this again")
    dead = [dev for dev in dict.fromkeys(dev for _, dev in tunnel) if not _session_up(ctx, str(dev), tunnel)]
    if dead:
        return skip("dns", f"not checked: the tunnel on {', '.join(dead)} has no working session (no handshake in "
                           "the last 3 min), so nothing can cross it: see the handshake check")
    silent, answered, servfail = [], [], []
    for server, dev in tunnel:
        started = time.monotonic()
        rcode = dns.probe_rcode(str(server), timeout=DNS_TIMEOUT)
        if rcode is None:
            silent.append(f"{server} via {dev}")
        elif rcode == RCODE.SERVFAIL:
            servfail.append(f"{server} via {dev}")
        else:
            answered.append(f"{server} via {dev} in {(time.monotonic() - started) * 1000:.0f} ms")
    if silent:
        return fail("dns", f"no DNS answer through the tunnel from {', '.join(silent)} in {DNS_TIMEOUT:g} s",
                    "on the server: bulwark doctor (dns check); or set another resolver in DNS =")
    if servfail:
        return warn("dns", f"{', '.join(servfail)} answers through the tunnel, but SERVFAIL for every name: the "
                           f"server's upstream resolver does not answer it",
                    "on the server: bulwark doctor (dns check names the upstream); or set another resolver in DNS =")
    return ok("dns", f"DNS answered through the tunnel: {', '.join(answered)}")


def _has_session(ctx: ClientContext, dev: str) -> bool:
    result = ctx.host.runner.run(["wg", "show", dev, "latest-handshakes"], check=False, quiet=True)
    stamps = [int(f) for line in result.stdout.decode().splitlines() for f in line.split()[1:2] if f.isdigit()]
    return any(stamp and time.time() - stamp < SESSION_WINDOW for stamp in stamps)


def _session_up(ctx: ClientContext, dev: str, tunnel: list) -> bool:
    """True if `dev` has a live session, after giving it one chance to make one (wg-quick up alone sends
    nothing: the first packet through the tunnel starts the handshake)."""
    if _has_session(ctx, dev):
        return True
    server = next(str(s) for s, d in tunnel if d == dev)
    try:
        with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"", (server, 9))  # the discard port: it only has to start the handshake
    except OSError:
        return False
    deadline = time.monotonic() + SESSION_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if _has_session(ctx, dev):
            return True
    return False


def check_wg_quick(ctx: ClientContext) -> CheckResult:
    missing = [tool for tool in ("wg-quick", "wg") if shutil.which(tool) is None]
    if missing:
        return fail("wg_quick", f"{' and '.join(missing)} not installed", "apt-get install -y wireguard-tools")
    if ctx.config.interface.dns and shutil.which("resolvconf") is None:
        return warn("wg_quick", "wg-quick is installed, but the config has DNS = and 'resolvconf' is missing: "
                                "'wg-quick up' fails on that line",
                    "apt-get install -y openresolv (or remove the DNS line and set the resolver yourself)")
    return ok("wg_quick", f"wg-quick at {shutil.which('wg-quick')}")


def check_backend(ctx: ClientContext) -> CheckResult:
    if ctx.host.kernel_module():
        return ok("backend", "kernel WireGuard module available")
    userspace = shutil.which(link.USERSPACE)
    if userspace is None:
        return fail("backend", "no WireGuard kernel module and no wireguard-go: wg-quick cannot create the interface",
                    "apt-get install -y wireguard-go (or load the module: modprobe wireguard)")
    if not TUN_DEVICE.exists():
        return fail("backend", f"no kernel module and {TUN_DEVICE} is missing: wireguard-go cannot run",
                    f"modprobe tun (in a container: --device {TUN_DEVICE})")
    return ok("backend", f"no kernel module; wg-quick falls back to wireguard-go at {userspace}")


CLIENT_CHECKS: tuple[tuple[str, Callable[[ClientContext], CheckResult]], ...] = (
    ("permissions", check_permissions),
    ("endpoint", check_endpoint),
    ("handshake", check_handshake),
    ("allowed_ips", check_allowed_ips),
    ("dns", check_dns),
    ("wg_quick", check_wg_quick),
    ("backend", check_backend),
)


def run_client_checks(path: Path, *, runner: Runner | None = None, attempts: int = HANDSHAKE_ATTEMPTS,
                      timeout: float = HANDSHAKE_TIMEOUT) -> list[CheckResult]:
    """Every client check for the wg-quick config at `path`; InputError when the file cannot be parsed."""
    config = load_peer_config(path)
    ctx = ClientContext(path, config, HostFacts(runner or Runner()), attempts, timeout)
    ctx.resolve_endpoint()
    # The handshake goes last: while the tunnel is up, its probe briefly moves the server's idea of where this
    # peer is, which would swallow the answers the other checks (DNS through the tunnel) wait for.
    first = [(name, check) for name, check in CLIENT_CHECKS if name != "handshake"]
    results = {r.name: r for r in run_checks(ctx, first)}
    results["handshake"] = run_checks(ctx, [("handshake", check_handshake)])[0]
    return [results[name] for name, _ in CLIENT_CHECKS]
