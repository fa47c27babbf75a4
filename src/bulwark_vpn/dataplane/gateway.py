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

At scale (tens of thousands of peers) the supervisor's work follows what changed, not the peer count: it
holds the wanted device as compact text (`dataplane.table`), applies the store's log of changed peers, and
reads the device at most every DRIFT_INTERVAL seconds, with a duty cycle bound (DRIFT_DUTY) for large devices;
that one read also yields where active peers are (kept in the store, so a restart reconnects them at once)
and the traffic counters.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bulwark_vpn.dataplane import firewall, fwrules, link, netcfg, wg
from bulwark_vpn.dataplane import table as table_mod
from bulwark_vpn.dataplane.apply import (
    AddPeer,
    Change,
    Conflict,
    DesiredDevice,
    RemovePeer,
    SetInterface,
    UpdatePeer,
    apply_changes,
    peer_differences,
)
from bulwark_vpn.dataplane.runner import RollbackStack, Runner, Undo
from bulwark_vpn.errors import BulwarkError, ConflictError, ErrorCode, SystemActionError
from bulwark_vpn.fsutil import atomic_write, ensure_private_dir
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.model import Peer, Settings
from bulwark_vpn.store import PeerRow, Store, open_store

LOGGER = logging.getLogger("bulwark_vpn")

# Where running gateways record what they did. Injected everywhere (tests use their own folder); the CLI takes it
# from --run-dir / BULWARK_RUN_DIR.
DEFAULT_RUN_DIR = Path("/run/bulwark")
POLL_INTERVAL = 0.2  # store revision checks: changes from other processes land within 1 s
DRIFT_INTERVAL = 2.0  # full comparison with the live device, at least this often...
# ...but reading a large device (65k peers: `wg show dump` alone ~0.5 s) may use at most 2% of the time, so the
# supervisor idles well under 5% of a core at any size.
DRIFT_DUTY = 0.02
PRUNE_INTERVAL = 60.0  # how often the applied part of the store's log of changed peers is dropped
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


def conflict_line(conflict: table_mod.Conflict) -> str:
    """One line naming the peer left off, the network and who has it, and the fix."""
    return (
        f"bulwark: peer '{conflict.name}' is left off the device: '{conflict.network}' already belongs to "
        f"peer '{conflict.owner}': disable or remove one of them (bulwark peer disable {conflict.name})"
    )


def spec_of_row(row: PeerRow) -> wg.PeerSpec:
    """A row as a device peer, for the few peers a change or a repair touches (this parses its keys)."""
    return wg.PeerSpec(
        public_key=PublicKey.from_base64(row.public_key),
        allowed_ips=frozenset(ipaddress.ip_network(n) for n in row.tunnel_networks()),
        preshared_key=PresharedKey.from_base64(row.preshared_key) if row.preshared_key else None,
        keepalive=row.keepalive,
    )


def seen_online(dump: str, now: float) -> dict[str, tuple[str, int]]:
    """Public key -> (endpoint, latest handshake) of the peers of a dump with a handshake in the last
    ONLINE_WINDOW seconds: where active clients are."""
    recent = now - ONLINE_WINDOW
    seen = {}
    for fields in table_mod.dump_lines(dump):
        handshake = fields[4]
        if handshake != "0" and fields[2] != table_mod.NONE and int(handshake) > recent:
            seen[fields[0]] = (fields[2], int(handshake))
    return seen


def save_seen_endpoints(runner: Runner, iface: str, store: Store) -> int:
    """Record where the online peers of a live device are (before it goes away: `down`, or `up` replacing a
    gateway whose supervisor died), so the next bring-up reconnects them at once. Returns how many."""
    try:
        dump = table_mod.read_dump(runner, iface)
    except BulwarkError:
        return 0
    if dump is None:
        return 0
    seen = seen_online(dump, time.time())
    store.save_endpoints((key, endpoint, at) for key, (endpoint, at) in seen.items())
    return len(seen)


def to_reconnect(endpoints: dict[str, tuple[str, int]]) -> set[str]:
    """The public keys worth a handshake at bring-up: those seen online in the last ONLINE_WINDOW seconds before
    the latest sighting (the clients that were active when the gateway went away)."""
    if not endpoints:
        return set()
    latest = max(at for _, at in endpoints.values())
    return {key for key, (_, at) in endpoints.items() if at >= latest - ONLINE_WINDOW}


class Gateway:
    """Brings one interface up from the store, supervises it, and takes it down.

    What it holds per peer is the `DeviceTable` (text and a digest, no key objects); store changes are applied
    from the store's log of changed peers (work per change, not per peer), and one read of the device (`wg show
    dump`) at most every DRIFT_INTERVAL seconds (less often on a large device, see DRIFT_DUTY) serves drift repair,
    where active peers are (saved in the store for the next bring-up) and the traffic history.
    """

    def __init__(self, config_dir: Path, run_dir: Path = DEFAULT_RUN_DIR, runner: Runner | None = None,
                 log: Callable[[str], None] | None = None,
                 background: Callable[[bool], None] | None = None):
        self.config_dir = config_dir
        self.run_dir = run_dir
        self.runner = runner or Runner(log=log)
        self.log = log or (lambda line: LOGGER.info("%s", line))
        # Work the service layer does from the supervisor's loop (deferred file renders); called with True once
        # when the gateway goes down.
        self.background = background
        self.store = open_store(config_dir)
        self.settings = self.store.settings()
        self.iface = self.settings.interface
        self.child: link.UserspaceProcess | None = None
        self.dns: object | None = None
        self.state: RuntimeState | None = None
        self.table: table_mod.DeviceTable | None = None
        self._key: PrivateKey | None = None
        self._revision = -1
        self._cursor = 0  # position in the store's log of changed peers applied so far
        self._last_prune = 0.0
        self._conflicts: set[table_mod.Conflict] = set()
        # Where online peers were seen (public key -> endpoint, handshake), and what the store holds of it.
        self._seen: dict[str, tuple[str, int]] = {}
        self._saved: dict[str, tuple[str, int]] = {}
        # Expiry: when the device must next drop a peer; traffic history: the counters at the last sample.
        self._next_expiry: float | None = None
        self._counters: dict[str, tuple[int, int]] | None = None
        self._last_sample = 0.0
        self._last_compact = 0.0
        self.api: Any = None

    # -- loading the store --

    def _load(self, endpoints: dict[str, str], ahead: Iterable[str] = ()) -> tuple[str, str]:
        """Read the whole store into a new table; return the `wg setconf` text of the device with the peers in
        `ahead` (public keys) and the `wg addconf` text of the others (both hold keys). All or nothing: a failed
        read leaves the last good table in force."""
        cursor = self.store.last_peer_change()
        revision = self.store.revision()
        settings = self.store.settings()
        key = self.store.require_server_key()
        now = time.time()
        table = table_mod.DeviceTable(key.to_base64(), settings.listen_port)
        early, later, conflicts = table_mod.load_rows_split(table, self.store.peer_rows(), now, endpoints, ahead)
        self._say_conflicts(conflicts, table)
        self.table, self.settings, self._key = table, settings, key
        self._revision, self._cursor = revision, cursor
        self._next_expiry = self.store.next_expiry(now)
        head = table_mod.interface_conf(table.private_key, table.listen_port)
        return head + "".join(early), ("[Interface]\n" + "".join(later)) if later else ""

    def _say_conflicts(self, conflicts: Iterable[table_mod.Conflict], table: table_mod.DeviceTable) -> None:
        for conflict in conflicts:
            if conflict not in self._conflicts:  # said once while it lasts, not at every store change
                self.log(conflict_line(conflict))
        self._conflicts = set(table.left_off.values())

    def _wanted_routes(self) -> list:
        assert self.table is not None  # noqa: S101 - _load ran
        return [ipaddress.ip_network(n) for n in self.table.routes()]

    def _known_endpoints(self) -> dict[str, tuple[str, int]]:
        """Where peers were last seen: the store's record, updated with this process's own sightings."""
        return {**self._saved, **self._seen}

    # -- bring-up --

    def _create_link(self) -> str:
        backend = self.settings.backend
        if backend == "kernel" or (backend == "auto" and link.kernel_available(self.runner)):
            return link.create_link(self.runner, self.iface, "kernel")
        link.ensure_tun_device(self.runner)
        self.child = link.start_userspace_foreground(self.runner, self.iface)
        return "userspace"

    def _load_device(self, conf: str, more: str = "") -> None:
        """Key, port, peers and the endpoints known for them: one `wg setconf` through stdin (and one `wg addconf`
        of `more`, when given)."""
        wg.setconf(self.runner, self.iface, conf)
        if more:
            wg.addconf(self.runner, self.iface, more)

    def _configure_link(self) -> list[Undo]:
        undos = []
        if self.settings.mtu is not None:
            undos.append(netcfg.set_mtu(self.runner, self.iface, self.settings.mtu))
        undos += netcfg.ensure_addresses(self.runner, self.iface, self.settings.server_addresses)
        undos.append(netcfg.set_up(self.runner, self.iface))
        undos += netcfg.ensure_routes(self.runner, self.iface, self._wanted_routes())
        return undos

    def _reconnect(self, keys: Iterable[str]) -> int:
        """A new device peer has no session and the client only re-handshakes after ~15 s of silence: one packet
        toward each of these peers (whose endpoint the device knows) makes the server start the handshake now."""
        assert self.table is not None  # noqa: S101 - _load ran
        count = 0
        for key in keys:
            name = self.table.by_key.get(key)
            if name is not None:
                _poke(self.table.entries[name].networks[0].partition("/")[0])
                count += 1
        return count

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
        """Create and configure everything; on any failure undo what was done and re-raise.

        The device is loaded from stdin with the endpoints where peers were last seen: first (`wg setconf`) the
        peers that were active when the gateway last went away, which get a packet as soon as the link, forwarding,
        firewall and DNS are there (their handshake starts now, not when the client gives up on its old session,
        about 15 s later), then (`wg addconf`) all the others."""
        self._refuse_if_running()
        self._saved = self.store.endpoints()
        active = to_reconnect(self._saved)
        # The peers that were active go on the device first, with everything they need to carry traffic (link,
        # forwarding, firewall, DNS), and get their packet; the others follow in one `wg addconf` (at 65,000 peers
        # wireguard-go takes seconds for them), so an active client waits for none of it.
        conf, more = self._load({key: endpoint for key, (endpoint, _) in self._saved.items()}, active)
        before = netcfg.read_forwarding(self.runner)
        with RollbackStack(self.log) as stack:
            backend = self._create_link()
            stack.push(Undo(f"delete {self.iface}", self._delete_link))
            self._load_device(conf)
            del conf
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
            reconnected = self._reconnect(active)
            if reconnected:
                self.log(f"bulwark: started the handshake of {reconnected} peer(s) active before the restart")
            if more:
                wg.addconf(self.runner, self.iface, more)
                del more
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
        self._housekeeping(force=True)
        return self.state

    def _housekeeping(self, force: bool = False) -> None:
        """Now and then: drop the applied part of the log of changed peers, and endpoints of removed peers."""
        now = time.monotonic()
        if force or now - self._last_prune >= PRUNE_INTERVAL:
            self._last_prune = now
            self.store.prune_peer_changes(self._cursor)
            if force:
                self.store.prune_endpoints()

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

    def apply_store_changes(self) -> list[Change]:
        """Apply what changed in the store since the last time: only the peers in its log of changes (plus the
        interface when the settings or the key changed), without reading the device."""
        assert self.table is not None  # noqa: S101 - _load ran
        if self.store.last_peer_change() < self._cursor:
            # The log went back: another store file (a restore) took this one's place. Start from the store.
            self.log("bulwark: the store was replaced; loading it again")
            old_settings = self.settings
            self._load({})
            if self.settings != old_settings:
                self._settings_changed(old_settings)
            return self.check_device()
        revision = self.store.revision()
        settings = self.store.settings()
        key = self.store.require_server_key()
        names, cursor = self.store.peer_changes(self._cursor)
        rows = {row.name: row for row in self.store.peer_rows(names)} if names else {}
        changes: list[Change] = []
        if key != self._key or settings.listen_port != self.table.listen_port:
            changes.append(SetInterface(private_key=key if key != self._key else None,
                                        listen_port=settings.listen_port
                                        if settings.listen_port != self.table.listen_port else None))
            self.table.private_key, self.table.listen_port, self._key = key.to_base64(), settings.listen_port, key
        now = time.time()
        routes_added: list[str] = []
        routes_gone: list[str] = []
        for name in names:
            changes += self._replace(name, rows.get(name), now, routes_added, routes_gone)
        if names:
            # A removal may free a network that a peer left off was waiting for.
            for name in [n for n in self.table.left_off if n not in rows]:
                changes += self._replace(name, next(iter(self.store.peer_rows([name])), None), now, routes_added,
                                         routes_gone)
        if changes:
            apply_changes(self.runner, self.iface, changes)
        if routes_gone:
            netcfg.remove_routes(self.runner, self.iface, [ipaddress.ip_network(n) for n in routes_gone])
        if routes_added:
            netcfg.ensure_routes(self.runner, self.iface, [ipaddress.ip_network(n) for n in routes_added])
        self._conflicts = set(self.table.left_off.values())
        old_settings = self.settings
        self._revision, self._cursor, self.settings = revision, cursor, settings
        if settings != old_settings:
            self._settings_changed(old_settings)
        self._next_expiry = self.store.next_expiry(now)
        return changes

    def _replace(self, name: str, row: PeerRow | None, now: float, routes_added: list[str],
                 routes_gone: list[str]) -> list[Change]:
        """Make the table want what the store now says of one peer; the device changes that takes."""
        assert self.table is not None  # noqa: S101 - _load ran
        old = self.table.entries.get(name)
        wanted = row is not None and row.enabled and not (row.expires_at is not None and row.expires_at <= now)
        changes: list[Change] = []
        if wanted:
            assert row is not None  # noqa: S101 - wanted implies a row
            conflict = self.table.place(row)
            if conflict is not None:
                self._say_conflicts([conflict], self.table)
            new = self.table.entries.get(name)
            if old is not None and (new is None or new.public_key != old.public_key):
                changes.append(RemovePeer(PublicKey.from_base64(old.public_key)))
            if new is not None and new != old:
                changes.append(AddPeer(spec_of_row(row)))
                routes_added += new.routed
            gone = set(old.routed if old is not None else ()) - set(new.routed if new is not None else ())
        else:
            old = self.table.drop(name)
            if old is not None:
                changes.append(RemovePeer(PublicKey.from_base64(old.public_key)))
            gone = set(old.routed) if old is not None else set()
        routes_gone += [n for n in gone if n not in self.table.owner]
        return changes

    def _expire(self, now: float) -> None:
        """Take peers whose expiry passed off the device."""
        assert self.table is not None  # noqa: S101 - _load ran
        expired = [name for name in self.store.expired_names(now) if name in self.table.entries]
        if expired:
            self.log(f"bulwark: {len(expired)} peer(s) expired; taking {'it' if len(expired) == 1 else 'them'} "
                     f"off the device")
            changes: list[Change] = []
            gone: list[str] = []
            for name in expired:
                changes += self._replace(name, None, now, [], gone)
            apply_changes(self.runner, self.iface, changes)
            if gone:
                netcfg.remove_routes(self.runner, self.iface, [ipaddress.ip_network(n) for n in gone])
        self._next_expiry = self.store.next_expiry(now)

    def check_device(self) -> list[Change]:
        """One read of the device: repair what differs from the table, note where active peers are (saved in the
        store when it changed) and, once a minute, the traffic counters."""
        assert self.table is not None  # noqa: S101 - _load ran
        dump = table_mod.read_dump(self.runner, self.iface)
        if dump is None:
            return []
        changes = device_changes(self.table, self.store.peer_rows, dump)
        if changes:
            apply_changes(self.runner, self.iface, changes)
            for change in changes:
                self.log(f"[#] sync: {change.describe()}")
        netcfg.sync_routes(self.runner, self.iface, self._wanted_routes())
        now = time.time()
        self._remember_endpoints(seen_online(dump, now), now)
        if changes:
            # A peer put back after being removed by hand lost its session: reconnect it now.
            added = {str(c.peer.public_key) for c in changes if isinstance(c, AddPeer)}
            for key in added & set(self._seen):
                self.runner.run(["wg", "set", self.iface, "peer", key, "endpoint", self._seen[key][0]], check=False)
            self._reconnect(added & set(self._seen))
        self._sample_traffic(dump, now)
        return changes

    def _remember_endpoints(self, seen: dict[str, tuple[str, int]], now: float) -> None:
        """Keep where active peers are; write to the store what moved, and refresh what is older than a minute."""
        assert self.table is not None  # noqa: S101 - _load ran
        # A wanted peer missing from the device (removed by hand) keeps its last known endpoint.
        kept = {k: v for k, v in self._seen.items() if k not in seen and k in self.table.by_key
                and v[1] > now - ONLINE_WINDOW}
        self._seen = {**kept, **seen}
        changed = [(key, endpoint, at) for key, (endpoint, at) in seen.items()
                   if (saved := self._saved.get(key)) is None or saved[0] != endpoint or at - saved[1] >= 60]
        if changed:
            self.store.save_endpoints(changed)
            self._saved.update((key, (endpoint, at)) for key, endpoint, at in changed)

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

    def _restart_userspace(self) -> None:
        status = self.child.poll() if self.child is not None else None
        self.log(f"bulwark: wireguard-go for {self.iface} exited (status {status}); restarting it")
        if self.child is not None:
            self.child.stop()
        self.child = link.start_userspace_foreground(self.runner, self.iface)
        known = self._known_endpoints()
        self._load_device(*self._load({key: endpoint for key, (endpoint, _) in known.items()}))
        self._configure_link()
        self._reconnect(set(self._seen))

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
        """Until `stop` is set: apply store changes, repair drift, restart a dead wireguard-go.

        Each pass (5 a second) costs a revision check; store changes cost what changed; the device is read at most
        every DRIFT_INTERVAL seconds, and less often when reading it is slow (DRIFT_DUTY)."""
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
                if self._next_expiry is not None and time.time() >= self._next_expiry:
                    self._expire(time.time())
                if self.store.revision() != self._revision:
                    self.apply_store_changes()
                now = time.monotonic()
                if now - last_drift >= interval:
                    last_drift = now
                    self.check_device()
                    self._check_firewall()
                    interval = max(DRIFT_INTERVAL, (time.monotonic() - now) / DRIFT_DUTY)
                    self._housekeeping()
                last_error = None  # a whole pass worked: the next failure is news again
                if self.background is not None:
                    self.background(False)
            except LinkLost:
                raise
            except (BulwarkError, sqlite3.Error) as exc:
                # The device keeps the last state applied and the next pass retries: a store that cannot be
                # read, or a command that fails, must not take every tunnel down. Said once, not each pass.
                message = f"bulwark: supervisor: {exc}"
                if message != last_error:
                    self.log(message)
                last_error = message

    def _sample_traffic(self, dump: str, now: float) -> None:
        """Once a minute (from a read of the device made anyway): each peer's byte counters into the store's
        traffic history (growth since the last sample); once an hour: fold old minute points into hourly ones."""
        from bulwark_vpn.service import traffic

        if now - self._last_sample < traffic.MINUTE or self.store.schema_version() < 3:
            return
        assert self.table is not None  # noqa: S101 - _load ran
        self._last_sample = now
        names = self.table.by_key
        counters = {}
        for fields in table_mod.dump_lines(dump):
            if fields[5] != "0" or fields[6] != "0":
                name = names.get(fields[0])
                if name is not None:
                    counters[name] = (int(fields[5]), int(fields[6]))
        if self._counters is not None:
            traffic.record_sample(self.store, now, counters, self._counters)
        self._counters = counters
        if now - self._last_compact >= traffic.HOUR:
            self._last_compact = now
            traffic.compact(self.store, now)

    # -- teardown --

    def tear_down(self) -> None:
        """Undo everything the bring-up did (recorded in the state file), even after a crash. Where active peers
        are is saved first, for the next bring-up."""
        state = self.state or RuntimeState.load(self.run_dir, self.iface)
        try:
            save_seen_endpoints(self.runner, self.iface, self.store)
        except BulwarkError as exc:
            self.log(f"bulwark: could not save where peers are: {exc}")
        if self.background is not None:
            try:
                self.background(True)
            except BulwarkError as exc:
                self.log(f"bulwark: {exc}")
        self._stop_api()
        self._stop_dns()
        self._delete_link()
        release_system(self.runner, self.run_dir, self.iface, state)
        self.store.close()


def device_changes(table: table_mod.DeviceTable, rows_of: Callable[[list[str]], Iterable[PeerRow]],
                   dump: str) -> list[Change]:
    """The changes that turn the device in `dump` into the table's: the dump is compared as text, and only the
    peers that differ are read (`rows_of(names)`, from the store) and parsed, so nothing is made for the peers
    that match."""
    drift = table.compare(dump)
    if not drift:
        return []
    changes: list[Change] = []
    if drift.interface:
        head = dump.split("\n", 1)[0].split("\t")
        key = PrivateKey.from_base64(table.private_key)
        changes.append(SetInterface(private_key=key if head[0] != table.private_key else None,
                                    listen_port=table.listen_port if head[2:3] != [str(table.listen_port)]
                                    else None))
    for key_text in drift.unknown:
        try:
            changes.append(RemovePeer(PublicKey.from_base64(key_text)))
        except BulwarkError:
            continue  # not a key wg could have printed
    rows = {row.name: row for row in rows_of([*drift.missing, *drift.differing])}
    additions: list[Change] = []
    for name, fields in drift.differing.items():
        row = rows.get(name)
        if row is None or table.entries.get(name) is None or table.entries[name].public_key != row.public_key:
            continue  # changed in the store meanwhile: the store's own change applies it
        spec = spec_of_row(row)
        live = wg.parse_peer_line(fields)
        differing = peer_differences(spec, live)
        if differing:
            changes.append(UpdatePeer(spec, differing, live))
    for name in drift.missing:
        row = rows.get(name)
        if row is not None and table.entries.get(name) is not None:
            additions.append(AddPeer(spec_of_row(row)))
    return changes + additions


def run_foreground(config_dir: Path, run_dir: Path = DEFAULT_RUN_DIR, log: Callable[[str], None] | None = None,
                   ready: Callable[[RuntimeState], None] | None = None,
                   background: Callable[[bool], None] | None = None) -> None:
    """`bulwark up --foreground`: bring up, supervise until SIGTERM/SIGINT, tear down."""
    gateway = Gateway(config_dir, run_dir, log=log, background=background)
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


class PeerStatus(NamedTuple):
    """A peer as `status` shows it (a named tuple: 65,000 of them are made per call)."""

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
    expired: bool = False  # its expiry has passed: the supervisor took it off the device

    def to_dict(self) -> dict[str, Any]:
        # By hand: asdict deep-copies and costs tens of microseconds a peer.
        return {"name": self.name, "public_key": self.public_key, "address4": self.address4,
                "address6": self.address6, "enabled": self.enabled, "endpoint": self.endpoint,
                "latest_handshake": self.latest_handshake, "rx_bytes": self.rx_bytes, "tx_bytes": self.tx_bytes,
                "online": self.online, "expired": self.expired}


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

    def to_dict(self, peers: bool = True) -> dict:
        """What `status --json` prints and the API returns; fields are only ever added. Without `peers`, all but
        the peers (which the CLI streams)."""
        out = {"interface": self.interface, "up": self.up, "backend": self.backend, "pid": self.pid,
               "listen_port": self.listen_port, "public_key": self.public_key, "addresses": list(self.addresses),
               "exposure": asdict(self.exposure), "egress_interface": self.egress_interface,
               "peers_total": self.peers_total, "peers_online": self.peers_online}
        if peers:
            out["peers"] = [peer.to_dict() for peer in self.peers]
        return out


def gateway_status(store: Store, run_dir: Path, iface: str | None = None, runner: Runner | None = None,
                   now: float | None = None, names: Collection[str] | None = None) -> GatewayStatus:
    """The interface and every peer's endpoint, handshake and transfer; public keys only. One read of the device
    (`wg show dump`, as text) joined with the store's rows (as text) in one pass.

    With `names`, only those peers are listed (unknown names are left out), so a page of 50 peers on a
    10,000-peer gateway reads 50 peers from the store instead of all; the counts still cover every peer."""
    runner = runner or Runner()
    settings = store.settings()
    key = store.require_server_key()
    name = iface or settings.interface
    state = RuntimeState.load(run_dir, name)
    # `wg` writes the dump (0.4 s at 65,000 peers) while this process reads the store.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulwark-dump") as pool:
        reading = pool.submit(table_mod.read_dump, runner, name)
        store_rows = list(store.status_rows(names))
        if names is not None:  # in the order asked for
            order = {name: index for index, name in enumerate(dict.fromkeys(names))}
            store_rows.sort(key=lambda row: order[row.name])
        dump = reading.result()
    moment = time.time() if now is None else now
    live: dict[str, list[str]] = {}
    listen_port = None
    if dump is not None:
        head = dump.split("\n", 1)[0].split("\t")
        listen_port = int(head[2]) if len(head) == 4 and head[2].isdigit() else None
        live = {fields[0]: fields for fields in table_mod.dump_lines(dump)}
    online_after = moment - ONLINE_WINDOW
    rows = []
    none = table_mod.NONE
    for row in store_rows:
        seen = live.get(row.public_key)
        expired = row.expires_at is not None and row.expires_at <= moment
        if seen is None:
            rows.append(PeerStatus(row.name, row.public_key, row.address4, row.address6, row.enabled, None, 0, 0, 0,
                                   False, expired))
            continue
        handshake = int(seen[4])
        rows.append(PeerStatus(row.name, row.public_key, row.address4, row.address6, row.enabled,
                               seen[2] if seen[2] != none else None, handshake, int(seen[5]), int(seen[6]),
                               handshake > 0 and handshake > online_after, expired))
    up = dump is not None
    # The device holds exactly the store's enabled peers (apply removes any other), so its recent handshakes
    # are the online count without reading every peer from the store.
    online = sum(1 for fields in live.values() if int(fields[4]) > online_after)
    return GatewayStatus(
        interface=name, up=up,
        backend=state.backend if state is not None and up else None,
        pid=state.pid if state is not None and up else None,
        listen_port=listen_port,
        public_key=str(key.public_key()),
        addresses=[str(a) for a in settings.server_addresses],
        peers=rows,
        exposure=ExposureStatus.of(settings),
        egress_interface=settings.egress_interface,
        peers_total=len(rows) if names is None else store.peer_count(),
        peers_online=online,
    )
