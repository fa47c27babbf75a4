"""The running gateway: bring the server up from the store, keep it true to the store, take it down.

One supervisor process owns an interface (`bulwark up --foreground`, or the detached child that plain
`bulwark up` starts): it creates the link (kernel module, else wireguard-go as its child), loads the
device, addresses, routes, forwarding, the NAT table and the DNS forwarder, and records what it did in
/run/bulwark/IFACE.json. Its loop applies store changes made by other processes, repairs drift (peers
and the routes of networks behind peers) and restarts a dead wireguard-go; on SIGTERM/SIGINT it undoes
everything. A store it cannot read, or two peers claiming one network (the later one is left off), is
logged once and the last good state keeps serving: no tunnel goes down for it. Per-peer changes from
other processes are also applied at once by `apply_peer_changes`, one `wg set` per peer. `down` signals
only the recorded supervisor process (pid and start time), then removes whatever it left behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bulwark_vpn.dataplane import firewall, fwrules, link, netcfg, wg
from bulwark_vpn.dataplane.apply import (
    AddPeer,
    Change,
    Conflict,
    DesiredDevice,
    RemovePeer,
    apply_changes,
    apply_device,
    diff_device,
    drop_conflicting_peers,
)
from bulwark_vpn.dataplane.runner import RollbackStack, Runner, Undo
from bulwark_vpn.errors import BulwarkError, ConflictError, ErrorCode, SystemActionError
from bulwark_vpn.fsutil import atomic_write, ensure_private_dir
from bulwark_vpn.keys import PrivateKey, PublicKey
from bulwark_vpn.model import Peer, Settings
from bulwark_vpn.store import Store, open_store

LOGGER = logging.getLogger("bulwark_vpn")

# Where running gateways record what they did. Injected everywhere (tests use their own folder); the CLI takes it
# from --run-dir / BULWARK_RUN_DIR.
DEFAULT_RUN_DIR = Path("/run/bulwark")
POLL_INTERVAL = 0.2  # store revision checks: changes from other processes land within 1 s
DRIFT_INTERVAL = 2.0  # full comparison with the live device, at least this often...
DRIFT_DUTY = 0.05  # ...but reading a large device (10k peers: ~0.2 s) may use at most 5% of a core
ONLINE_WINDOW = 180  # a peer with a handshake in the last 3 minutes is online


class LinkLost(SystemActionError):
    """A kernel interface vanished under the supervisor: nothing to restart, so it stops."""


def state_path(run_dir: Path, iface: str) -> Path:
    return run_dir / f"{iface}.json"


def log_path(run_dir: Path, iface: str) -> Path:
    return run_dir / f"{iface}.log"


@dataclass
class RuntimeState:
    """What a running gateway did, so `down`, `status` and a later `up` know it."""

    interface: str
    config_dir: str
    pid: int
    backend: str
    # The one interface NAT goes out of (the egress_interface setting); None = every interface but the tunnel.
    egress: str | None
    forwarding_before: dict[str, bool]
    firewall: bool
    dns: bool
    ready: bool = False
    started_at: float = field(default_factory=time.time)
    # The supervisor's start time (clock ticks after boot, /proc/PID/stat): with the pid, it names one
    # process for good, so a pid reused after a crash is never taken for the supervisor.
    pid_start: int | None = None
    # The store this gateway serves (its gateway id): a command for another folder must not act on it.
    gateway_id: str | None = None

    def save(self, run_dir: Path) -> None:
        ensure_private_dir(run_dir)
        atomic_write(state_path(run_dir, self.interface), json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path, iface: str) -> RuntimeState | None:
        try:
            data = json.loads(state_path(run_dir, iface).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            return None

    def serves(self, config_dir: Path, gateway_id: str | None) -> bool:
        """True if this gateway runs from `config_dir`'s store (same id, or same folder for older state files)."""
        if self.gateway_id is not None and gateway_id is not None:
            return self.gateway_id == gateway_id
        return Path(self.config_dir) == config_dir.resolve()

    def supervisor_alive(self) -> bool:
        """True if the supervisor that wrote this file still runs. After a crash its pid may belong to
        any process: that one must match the recorded start time (or, in a file without it, have a
        `bulwark ... up` command line), so `down` never signals an unrelated process."""
        if not pid_alive(self.pid):
            return False
        if self.pid_start is not None:
            return process_start_time(self.pid) == self.pid_start
        return looks_like_supervisor(self.pid)


def process_start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks after boot (field 22 of /proc/PID/stat); None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def looks_like_supervisor(pid: int) -> bool:
    """True if `pid` runs `bulwark up` (as `bulwark`, `python -m bulwark_vpn` or a `bulwark` script)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    bulwark = any("bulwark_vpn" in arg or Path(arg).name == "bulwark" for arg in argv)
    return bulwark and "up" in argv


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie (exited, not yet reaped) is not alive.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


# -- desired state ----------------------------------------------------------------------------------


def peer_spec(peer: Peer) -> wg.PeerSpec:
    return wg.PeerSpec(
        public_key=peer.public_key,
        allowed_ips=frozenset(peer.tunnel_networks()),
        preshared_key=peer.preshared_key,
        keepalive=peer.keepalive,
    )


def desired_device(settings: Settings, key: PrivateKey, peers: Iterable[Peer],
                   now: float | None = None) -> DesiredDevice:
    """The device the store asks for: enabled peers that have not expired."""
    moment = time.time() if now is None else now
    return DesiredDevice(
        private_key=key,
        listen_port=settings.listen_port,
        peers={p.public_key: peer_spec(p) for p in peers if p.enabled and not p.expired(moment)},
    )


def next_expiry(peers: Iterable[Peer], now: float) -> float | None:
    """When the next enabled peer expires (a moment in the future), if any does."""
    moments = [p.expires_at for p in peers if p.enabled and p.expires_at is not None and p.expires_at > now]
    return min(moments) if moments else None


def extra_routes(peers: Iterable[Peer], only: Iterable[PublicKey] | None = None) -> list:
    """Networks behind enabled peers (site-to-site), of the peers in `only` when given: the tunnel
    subnet's own route comes with the address."""
    keys = set(only) if only is not None else None
    return [
        net for p in peers if p.enabled and (keys is None or p.public_key in keys) for net in p.server_allowed_ips
    ]


def describe_conflict(conflict: Conflict, peers: Iterable[Peer]) -> str:
    """One line naming the peer left out, the network and who has it, and the fix."""
    names = {p.public_key: p.name for p in peers}
    skipped = names.get(conflict.public_key, str(conflict.public_key))
    owner = names.get(conflict.owner, str(conflict.owner))
    return (
        f"bulwark: peer '{skipped}' is left off the device: '{conflict.network}' already belongs to "
        f"peer '{owner}': disable or remove one of them (bulwark peer disable {skipped})"
    )


def _poke(address) -> None:
    """One UDP datagram to the discard port of a peer's tunnel address (it only triggers a handshake)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"", (str(address), 9))
    except OSError as exc:
        LOGGER.debug("poke %s: %s", address, exc)


# -- per-peer changes from other processes ----------------------------------------------------------


def apply_peer_changes(
    runner: Runner, iface: str, *, upsert: Iterable[Peer] = (), remove: Iterable[Peer] = ()
) -> list[Change]:
    """Apply exactly these peers to a live device (no full read): one `wg set` per peer.

    A disabled peer in `upsert` is removed from the device. Does nothing when the interface is down.
    """
    if not link.link_exists(runner, iface):
        return []
    changes: list[Change] = []
    routes: list = []
    unrouted: list = []
    for peer in upsert:
        if peer.enabled:
            changes.append(AddPeer(peer_spec(peer)))
            routes += peer.server_allowed_ips
        else:
            changes.append(RemovePeer(peer.public_key))
            unrouted += peer.server_allowed_ips
    for peer in remove:
        changes.append(RemovePeer(peer.public_key))
        unrouted += peer.server_allowed_ips
    apply_changes(runner, iface, changes)
    if unrouted:
        netcfg.remove_routes(runner, iface, unrouted)
    if routes:
        netcfg.ensure_routes(runner, iface, routes)
    return changes


# -- the gateway --------------------------------------------------------------------------------------


class Gateway:
    """Brings one interface up from the store, supervises it, and takes it down."""

    def __init__(self, config_dir: Path, run_dir: Path = DEFAULT_RUN_DIR, runner: Runner | None = None,
                 log: Callable[[str], None] | None = None):
        self.config_dir = config_dir
        self.run_dir = run_dir
        self.runner = runner or Runner(log=log)
        self.log = log or (lambda line: LOGGER.info("%s", line))
        self.store = open_store(config_dir)
        self.settings = self.store.settings()
        self.iface = self.settings.interface
        self.child: link.UserspaceProcess | None = None
        self.dns: object | None = None
        self.state: RuntimeState | None = None
        self._revision = -1
        self._desired: DesiredDevice | None = None
        self._peers: list[Peer] = []
        self._conflicts: set[Conflict] = set()
        # Where online peers were last seen, to reconnect them at once after a wireguard-go restart.
        self._endpoints: dict[PublicKey, str] = {}
        # Expiry: when the device must next drop a peer; traffic history: the counters at the last sample.
        self._next_expiry: float | None = None
        self._counters: dict[str, tuple[int, int]] | None = None
        self._last_sample = 0.0
        self._last_compact = 0.0
        self.api: Any = None

    # -- bring-up --

    def _load(self) -> None:
        """Read the store; all or nothing, so a failed read leaves the last good desired state in force."""
        revision = self.store.revision()
        settings = self.store.settings()
        peers = self.store.peers()
        desired = desired_device(settings, self.store.require_server_key(), peers)
        kept, conflicts = drop_conflicting_peers(desired.peers)
        for conflict in conflicts:
            if conflict not in self._conflicts:  # said once, not at every store change
                self.log(describe_conflict(conflict, peers))
        self._conflicts = set(conflicts)
        self._revision, self.settings, self._peers = revision, settings, peers
        self._desired = DesiredDevice(desired.private_key, desired.listen_port, kept)
        self._next_expiry = next_expiry(peers, time.time())

    def _wanted_routes(self) -> list:
        assert self._desired is not None  # noqa: S101 - _load ran
        return extra_routes(self._peers, only=self._desired.peers)

    def _create_link(self) -> str:
        backend = self.settings.backend
        if backend == "kernel" or (backend == "auto" and link.kernel_available(self.runner)):
            return link.create_link(self.runner, self.iface, "kernel")
        link.ensure_tun_device(self.runner)
        self.child = link.start_userspace_foreground(self.runner, self.iface)
        return "userspace"

    def _load_device(self) -> None:
        """Key, port and every peer: in one `wg addconf` when there are many."""
        assert self._desired is not None  # noqa: S101 - _load ran
        apply_changes(self.runner, self.iface, diff_device(self._desired, None))

    def _configure_link(self) -> list[Undo]:
        undos = []
        if self.settings.mtu is not None:
            undos.append(netcfg.set_mtu(self.runner, self.iface, self.settings.mtu))
        undos += netcfg.ensure_addresses(self.runner, self.iface, self.settings.server_addresses)
        undos.append(netcfg.set_up(self.runner, self.iface))
        undos += netcfg.ensure_routes(self.runner, self.iface, self._wanted_routes())
        return undos

    def _firewall_spec(self) -> firewall.FirewallSpec:
        return firewall.spec_from_settings(self.settings, self.iface)

    def _dns_clients(self) -> list:
        """Who the forwarder answers: the tunnel subnets and the DNS_CLIENTS networks."""
        tunnel = [self.settings.subnet4] + ([self.settings.subnet6] if self.settings.subnet6 else [])
        return tunnel + list(self.settings.dns_clients)

    def _start_dns(self) -> Undo | None:
        if self.settings.peer_dns != "auto":
            return None
        from bulwark_vpn.dataplane.dns import DnsForwarder

        listen = [str(a.ip) for a in self.settings.server_addresses]
        self.dns = DnsForwarder(listen, clients=self._dns_clients()).start_in_thread()
        self.log(f"[#] dns forwarder listening on {', '.join(listen)} port 53")
        return Undo("stop the DNS forwarder", self._stop_dns)

    def _stop_dns(self) -> None:
        if self.dns is not None:
            self.dns.stop()  # type: ignore[attr-defined]
            self.dns = None

    def bring_up(self) -> RuntimeState:
        """Create and configure everything; on any failure undo what was done and re-raise."""
        self._refuse_if_running()
        self._load()
        before = netcfg.read_forwarding(self.runner)
        with RollbackStack(self.log) as stack:
            backend = self._create_link()
            stack.push(Undo(f"delete {self.iface}", self._delete_link))
            self._load_device()
            stack.push(self._configure_link())
            ipv6 = True if self.settings.subnet6 is not None else None
            egress = self.settings.egress_interface
            if ipv6:
                self._keep_router_advertisements(egress)
            stack.push(netcfg.set_forwarding(self.runner, ipv4=True, ipv6=ipv6))
            stack.push(firewall.install_firewall(self.runner, self._firewall_spec()))
            dns_undo = self._start_dns()
            if dns_undo is not None:
                stack.push(dns_undo)
            api_undo = self._start_api()
            if api_undo is not None:
                stack.push(api_undo)
            self.state = RuntimeState(
                interface=self.iface, config_dir=str(self.config_dir.resolve()), pid=os.getpid(), backend=backend,
                egress=egress, forwarding_before={"ipv4": before.ipv4, "ipv6": before.ipv6}, firewall=True,
                dns=dns_undo is not None, ready=True, pid_start=process_start_time(os.getpid()),
                gateway_id=self.store.gateway_id(),
            )
            self.state.save(self.run_dir)
        return self.state

    def _start_api(self) -> Undo | None:
        """The HTTP API and web pages as a thread of this process when the `serve` setting is on."""
        if not self.settings.serve:
            return None
        try:
            import fastapi  # noqa: F401 - the web extra is installed
            import uvicorn  # noqa: F401

            from bulwark_vpn.web.server import BackgroundServer, ServeOptions
        except ImportError:
            self.log("bulwark: the API is not installed: pip install 'bulwark-vpn[web]' (the gateway runs without it)")
            return None
        from bulwark_vpn.service import Context

        ctx = Context(self.config_dir, run_dir=self.run_dir)
        self.api = BackgroundServer(ctx, ServeOptions()).start()
        self.log(f"[#] API and web pages on {', '.join('http://' + str(x) for x in self.api.listen)}")
        return Undo("stop the API", self._stop_api)

    def _stop_api(self) -> None:
        if self.api is not None:
            self.api.stop()
            self.api = None

    def _keep_router_advertisements(self, egress: str | None) -> None:
        """IPv6 forwarding makes an interface with accept_ra=1 ignore router advertisements, and a SLAAC
        host would lose its IPv6 default route. accept_ra=2 keeps them (and means the same as 1 once
        forwarding is off again, so it is left in place after `down`). Done on the uplink: the egress
        interface when one is set, else the interfaces of the default routes. The name is written with '/':
        sysctl reads dots as separators, so a VLAN uplink `eth0.100` would otherwise be looked up as `eth0/100`."""
        defaults = [netcfg.egress_interface(self.runner, 6), netcfg.egress_interface(self.runner)]
        uplinks = [egress] if egress else defaults
        for uplink in dict.fromkeys(u for u in uplinks if u):
            name = f"net/ipv6/conf/{uplink}/accept_ra"
            current = self.runner.run(["sysctl", "-n", name], check=False, quiet=True).stdout.decode().strip()
            if current == "1":
                self.runner.run(["sysctl", "-q", "-w", f"{name}=2"])

    def _refuse_if_running(self) -> None:
        refuse_if_running(self.runner, self.run_dir, self.iface, own_pid=os.getpid())

    def _delete_link(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None
        if link.link_exists(self.runner, self.iface):
            link.delete_link(self.runner, self.iface)

    # -- supervision --

    def sync(self, *, read_live: bool = True) -> list[Change]:
        """Make the device match the store now (reload the store if it changed)."""
        if self.store.revision() != self._revision:
            old_settings = self.settings
            self._load()
            if self.settings != old_settings:
                self._settings_changed(old_settings)
        assert self._desired is not None  # noqa: S101 - _load ran
        live = wg.read_device(self.runner, self.iface) if read_live else None
        if live is None:
            return []
        self._remember_endpoints(live)
        changes = apply_device(self.runner, self.iface, self._desired, live=live)
        if changes:
            for change in changes:
                self.log(f"[#] sync: {change.describe()}")
            # A peer put back after being removed by hand lost its session: reconnect it now.
            self._reconnect_peers({c.peer.public_key for c in changes if isinstance(c, AddPeer)})
        netcfg.sync_routes(self.runner, self.iface, self._wanted_routes())
        return changes

    def _settings_changed(self, old: Settings) -> None:
        if old.server_addresses != self.settings.server_addresses or old.mtu != self.settings.mtu:
            self._repair_link_config()
        if self.dns is not None:
            self.dns.forwarder.set_clients(self._dns_clients())  # type: ignore[attr-defined]
        if self.state is not None and self.state.firewall:
            firewall.install_firewall(self.runner, self._firewall_spec())
            if self.state.egress != self.settings.egress_interface:
                self.state.egress = self.settings.egress_interface
                self.state.save(self.run_dir)

    def _repair_link_config(self) -> None:
        present = netcfg.addresses_on(self.runner, self.iface)
        wanted = set(self.settings.server_addresses)
        for address in present - wanted:
            if address.ip.version == 4 or not address.ip.is_link_local:
                netcfg.remove_address(self.runner, self.iface, address)
        self._configure_link()

    def _remember_endpoints(self, live: wg.DeviceState) -> None:
        """Where online peers are; a wanted peer missing from the device keeps its last known endpoint."""
        recent = time.time() - ONLINE_WINDOW
        seen = {
            key: peer.endpoint for key, peer in live.peers.items() if peer.endpoint and peer.latest_handshake > recent
        }
        wanted = self._desired.peers if self._desired is not None else {}
        missing = {k: v for k, v in self._endpoints.items() if k not in live.peers and k in wanted}
        self._endpoints = {**missing, **seen}

    def _reconnect_peers(self, only: set[PublicKey] | None = None) -> None:
        """A new or re-added device peer has no session and the server does not know where the client is;
        the client only re-handshakes after ~15 s of silence. Restore its endpoint and send one packet
        toward it: that makes the server initiate the handshake now."""
        wanted = self._desired.peers if self._desired is not None else {}
        by_key = {p.public_key: p for p in self._peers if p.public_key in wanted}
        for key, endpoint in self._endpoints.items():
            peer = by_key.get(key)
            if peer is None or (only is not None and key not in only):
                continue
            self.runner.run(["wg", "set", self.iface, "peer", str(key), "endpoint", endpoint], check=False)
            _poke(peer.address4)

    def _restart_userspace(self) -> None:
        status = self.child.poll() if self.child is not None else None
        self.log(f"bulwark: wireguard-go for {self.iface} exited (status {status}); restarting it")
        if self.child is not None:
            self.child.stop()
        self.child = link.start_userspace_foreground(self.runner, self.iface)
        self._load()
        self._load_device()
        self._configure_link()
        self._reconnect_peers()

    def _link_lost(self) -> bool:
        if self.child is not None and self.child.poll() is not None:
            return True
        if self.runner.netns is None:
            # Polled 5 times a second: sysfs (this process's namespace) is cheaper than running `ip`.
            return not Path(f"/sys/class/net/{self.iface}").exists()
        return not link.link_exists(self.runner, self.iface)

    def _check_firewall(self) -> None:
        """Put our rules back when they are missing or differ from the settings (a rule deleted by hand would
        otherwise leave an exposure open that the settings keep closed)."""
        if self.state is None or not self.state.firewall:
            return
        spec = self._firewall_spec()
        try:
            live = firewall.live_rules(self.runner, self.iface)
            problem = None if live is not None else "is missing"
            if live is not None and fwrules.differences(fwrules.policy(spec), live):
                problem = "differs from the settings"
        except ValueError:
            problem = "holds a rule Bulwark does not write"
        if problem is not None:
            self.log(f"bulwark: the firewall of {self.iface} {problem}; reinstalling it")
            firewall.install_firewall(self.runner, spec)

    def supervise(self, stop: threading.Event) -> None:
        """Until `stop` is set: apply store changes, repair drift, restart a dead wireguard-go."""
        last_drift = time.monotonic()
        interval = DRIFT_INTERVAL
        last_error: str | None = None
        while not stop.wait(POLL_INTERVAL):
            try:
                if self._link_lost():
                    if self.state is None or self.state.backend != "userspace":
                        raise LinkLost(f"interface '{self.iface}' disappeared; stopping")
                    self._restart_userspace()
                    continue
                now = time.monotonic()
                expiring = self._next_expiry is not None and time.time() >= self._next_expiry
                if expiring:
                    self._revision = -1  # reload: the desired device drops the peers that just expired
                    self.log("bulwark: a peer expired; taking it off the device")
                if self.store.revision() != self._revision or now - last_drift >= interval:
                    last_drift = now
                    self.sync()
                    self._check_firewall()
                    last_error = None  # a whole pass worked: the next failure is news again
                    interval = max(DRIFT_INTERVAL, (time.monotonic() - now) / DRIFT_DUTY)
                self._sample_traffic()
            except LinkLost:
                raise
            except (BulwarkError, sqlite3.Error) as exc:
                # The device keeps the last state applied and the next pass retries: a store that cannot be
                # read, or a command that fails, must not take every tunnel down. Said once, not each pass.
                message = f"bulwark: supervisor: {exc}"
                if message != last_error:
                    self.log(message)
                last_error = message

    def _sample_traffic(self) -> None:
        """Once a minute: each peer's byte counters into the store's traffic history (growth since the last
        sample); once an hour: fold old minute points into hourly ones."""
        from bulwark_vpn.service import traffic

        now = time.time()
        if now - self._last_sample < traffic.MINUTE or self.store.schema_version() < 3:
            return
        self._last_sample = now
        live = wg.read_device(self.runner, self.iface)
        if live is None:
            return
        names = {p.public_key: p.name for p in self._peers}
        counters = {names[key]: (peer.rx_bytes, peer.tx_bytes) for key, peer in live.peers.items() if key in names}
        if self._counters is not None:
            traffic.record_sample(self.store, now, counters, self._counters)
        self._counters = counters
        if now - self._last_compact >= traffic.HOUR:
            self._last_compact = now
            traffic.compact(self.store, now)

    # -- teardown --

    def tear_down(self) -> None:
        """Undo everything the bring-up did (recorded in the state file), even after a crash."""
        state = self.state or RuntimeState.load(self.run_dir, self.iface)
        self._stop_api()
        self._stop_dns()
        self._delete_link()
        release_system(self.runner, self.run_dir, self.iface, state)
        self.store.close()


def run_foreground(config_dir: Path, run_dir: Path = DEFAULT_RUN_DIR, log: Callable[[str], None] | None = None,
                   ready: Callable[[RuntimeState], None] | None = None) -> None:
    """`bulwark up --foreground`: bring up, supervise until SIGTERM/SIGINT, tear down."""
    gateway = Gateway(config_dir, run_dir, log=log)
    stop = threading.Event()

    def _signal(signum: int, _frame: object) -> None:
        gateway.log(f"bulwark: {signal.Signals(signum).name} received, bringing {gateway.iface} down")
        stop.set()

    previous = {sig: signal.signal(sig, _signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        state = gateway.bring_up()
        if ready is not None:
            ready(state)
        gateway.supervise(stop)
    finally:
        try:
            if gateway.state is not None:
                gateway.tear_down()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def stop_gateway(run_dir: Path, iface: str, runner: Runner | None = None, timeout: float = 15.0) -> bool:
    """`bulwark down`: ask the supervisor to tear down; clean up directly if it is gone. False if nothing ran."""
    runner = runner or Runner()
    state = RuntimeState.load(run_dir, iface)
    if state is not None and state.supervisor_alive():
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and state.supervisor_alive():
            time.sleep(0.05)
        if state.supervisor_alive():
            raise SystemActionError(f"the supervisor of '{iface}' did not stop in {timeout:g} s", f"pid {state.pid}",
                                    "stop it by hand (kill) and run 'bulwark down' again")
        if _leftovers(runner, run_dir, iface):
            # Its teardown stopped partway (a failed command, a kill during it): finish the job.
            LOGGER.warning("bulwark: the supervisor of %s left parts of the gateway behind; removing them", iface)
            release_system(runner, run_dir, iface, state)
    elif _leftovers(runner, run_dir, iface):
        release_system(runner, run_dir, iface, state)
    else:
        return False
    log_path(run_dir, iface).unlink(missing_ok=True)
    return True


def _leftovers(runner: Runner, run_dir: Path, iface: str) -> bool:
    """True if the state file, the link or the firewall table of `iface` is still there."""
    return (state_path(run_dir, iface).exists() or link.link_exists(runner, iface)
            or firewall.firewall_present(runner, iface))


def refuse_if_running(runner: Runner, run_dir: Path, iface: str, own_pid: int | None = None) -> None:
    """ConflictError when a Bulwark supervisor already runs `iface`, or the interface exists and is not Bulwark's:
    the same condition gives the same error whichever command meets it."""
    state = RuntimeState.load(run_dir, iface)
    if state is not None and state.supervisor_alive() and state.pid != own_pid:
        raise ConflictError(f"the gateway on '{iface}' is already up", f"pid {state.pid}",
                            "take it down first ('bulwark down')", code=ErrorCode.ALREADY_RUNNING)
    if link.link_exists(runner, iface) and (state is None or not state.supervisor_alive()):
        raise ConflictError("the interface already exists and is not Bulwark's", iface,
                            f"remove it ('ip link del {iface}' or 'wg-quick down {iface}') or choose another "
                            f"interface name")


def release_system(runner: Runner, run_dir: Path, iface: str, state: RuntimeState | None) -> None:
    """Remove what a gateway put on the system: its firewall table, the link, forwarding it turned on
    (back to the values recorded at bring-up) and its state file. Also used after a supervisor crash."""
    firewall.remove_firewall(runner, iface)
    if link.link_exists(runner, iface):
        link.delete_link(runner, iface)
    if state is not None:
        before = state.forwarding_before
        netcfg.set_forwarding(runner, ipv4=before.get("ipv4"), ipv6=before.get("ipv6"))
    state_path(run_dir, iface).unlink(missing_ok=True)


# -- status -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerStatus:
    name: str
    public_key: str
    address4: str
    address6: str | None
    enabled: bool
    endpoint: str | None
    latest_handshake: int
    rx_bytes: int
    tx_bytes: int
    online: bool


@dataclass(frozen=True)
class ExposureStatus:
    """The network exposures the settings open (all False / empty: closed, the default)."""

    peer_to_peer: bool
    lan_to_peers: bool
    host_access: bool
    # Networks besides the tunnel whose DNS queries the forwarder answers.
    dns_clients: list[str]

    @classmethod
    def of(cls, settings: Settings) -> ExposureStatus:
        return cls(peer_to_peer=settings.peer_to_peer, lan_to_peers=settings.lan_to_peers,
                   host_access=settings.host_access, dns_clients=[str(n) for n in settings.dns_clients])


@dataclass(frozen=True)
class GatewayStatus:
    interface: str
    up: bool
    backend: str | None
    pid: int | None
    listen_port: int | None
    public_key: str
    addresses: list[str]
    peers: list[PeerStatus]
    exposure: ExposureStatus
    # The one interface tunnel traffic is masqueraded out of; None = every interface but the tunnel.
    egress_interface: str | None
    # Counted over every peer of the gateway, whichever `peers` lists (see gateway_status's `names`).
    peers_total: int = 0
    peers_online: int = 0

    def to_dict(self) -> dict:
        """What `status --json` prints and the API returns; fields are only ever added."""
        return asdict(self)


def gateway_status(store: Store, run_dir: Path, iface: str | None = None, runner: Runner | None = None,
                   now: float | None = None, names: Collection[str] | None = None) -> GatewayStatus:
    """The interface and every peer's endpoint, handshake and transfer; public keys only.

    With `names`, only those peers are listed (unknown names are left out), so a page of 50 peers on a
    10,000-peer gateway reads 50 peers from the store instead of all; the counts still cover every peer."""
    runner = runner or Runner()
    settings = store.settings()
    peers = store.peers() if names is None else [store.peer(n) for n in dict.fromkeys(names) if store.has_peer(n)]
    key = store.require_server_key()
    name = iface or settings.interface
    state = RuntimeState.load(run_dir, name)
    device = wg.read_device(runner, name) if link.link_exists(runner, name) else None
    moment = time.time() if now is None else now
    live = device.peers if device is not None else {}
    rows = []
    for peer in peers:
        seen = live.get(peer.public_key)
        handshake = seen.latest_handshake if seen else 0
        rows.append(PeerStatus(
            name=peer.name, public_key=str(peer.public_key), address4=str(peer.address4),
            address6=str(peer.address6) if peer.address6 else None, enabled=peer.enabled,
            endpoint=seen.endpoint if seen else None, latest_handshake=handshake,
            rx_bytes=seen.rx_bytes if seen else 0, tx_bytes=seen.tx_bytes if seen else 0,
            online=bool(handshake) and moment - handshake < ONLINE_WINDOW,
        ))
    # The device holds exactly the store's enabled peers (apply removes any other), so its recent handshakes
    # are the online count without reading every peer from the store.
    online = sum(1 for p in live.values() if p.latest_handshake and moment - p.latest_handshake < ONLINE_WINDOW)
    return GatewayStatus(
        interface=name, up=device is not None,
        backend=state.backend if state is not None and device is not None else None,
        pid=state.pid if state is not None and device is not None else None,
        listen_port=device.listen_port if device is not None else None,
        public_key=str(key.public_key()),
        addresses=[str(a) for a in settings.server_addresses],
        peers=rows,
        exposure=ExposureStatus.of(settings),
        egress_interface=settings.egress_interface,
        peers_total=len(rows) if names is None else store.peer_count(),
        peers_online=online,
    )
