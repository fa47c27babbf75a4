"""Read-only facts about the host and the Bulwark server that the doctor's checks share.

This module owns *reading*: `HostFacts` runs each query (`ip -j ...`, `wg show dump`, `nft -j list ruleset`,
`ss`, `sysctl`) at most once, through a `Runner` so it works inside a network namespace, and is safe to use
from the check threads; `ServerContext` adds what the store and the runtime state say. Nothing here changes
the system: the store is opened read-only (Store.open would chmod and migrate it), commands run `quiet`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bulwark_vpn.dataplane import firewall, link, table
from bulwark_vpn.dataplane.fwrules import Rule
from bulwark_vpn.dataplane.gateway import DEFAULT_RUN_DIR, RuntimeState
from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.doctor.nftrules import resolve_conntrack_matches
from bulwark_vpn.errors import BulwarkError, ErrorCode
from bulwark_vpn.keys import PrivateKey
from bulwark_vpn.model import Peer, Settings
from bulwark_vpn.store import SCHEMA_VERSION, PeerRow, open_store

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SS_USER = re.compile(r'\("([^"]*)",pid=(\d+),fd=\d+\)')


@dataclass(frozen=True)
class UdpSocket:
    """One bound UDP socket (`ss -uanp`): local address and port, and the processes holding it."""

    address: str
    port: int
    owners: tuple[tuple[str, int], ...]  # (command, pid); empty for a kernel socket


class HostFacts:
    """Queries about the host, each run once and remembered (thread-safe)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._values: dict[object, object] = {}
        self._locks: dict[object, threading.Lock] = {}
        self._guard = threading.Lock()

    def _once(self, key: object, compute: Callable[[], T]) -> T:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                self._values[key] = compute()
            return self._values[key]  # type: ignore[return-value]

    def _json(self, argv: list[str]) -> list[dict[str, Any]]:
        result = self.runner.run(argv, check=False, quiet=True)
        if result.returncode != 0:
            return []
        try:
            data = json.loads(result.stdout.decode() or "[]")
        except ValueError:
            return []
        return data if isinstance(data, list) else []

    # -- links, addresses, routes, rules --

    def links(self) -> dict[str, dict[str, Any]]:
        """Every link by name (`ip -d -j link show`)."""
        return self._once("links", lambda: {link["ifname"]: link for link in self._json(["ip", "-d", "-j", "link",
                                                                                         "show"])})

    def addresses(self) -> list[dict[str, Any]]:
        return self._once("addresses", lambda: self._json(["ip", "-j", "address", "show"]))

    def routes(self, family: int, table: str = "main") -> list[dict[str, Any]]:
        flag = "-6" if family == 6 else "-4"
        return self._once(("routes", family, table), lambda: self._json(["ip", flag, "-j", "route", "show", "table",
                                                                          table]))

    def rules(self, family: int = 4) -> list[dict[str, Any]]:
        flag = "-6" if family == 6 else "-4"
        return self._once(("rules", family), lambda: self._json(["ip", flag, "-j", "rule", "show"]))

    def route_get(self, address: str, mark: int | None = None) -> dict[str, Any] | None:
        """The route the kernel picks for `address` (`ip -j route get`), or None without one."""
        argv = ["ip", "-j", "route", "get", address] + (["mark", str(mark)] if mark else [])
        found = self._once(("route_get", address, mark), lambda: self._json(argv))
        return found[0] if found else None

    def default_interface(self, family: int = 4) -> str | None:
        for route in self.routes(family):
            if route.get("dst") == "default" and route.get("dev"):
                return str(route["dev"])
        return None

    def mtu(self, iface: str) -> int | None:
        link = self.links().get(iface)
        return int(link["mtu"]) if link and "mtu" in link else None

    def full_tunnel_marks(self) -> list[tuple[int, str]]:
        """wg-quick's full-tunnel signature: `ip rule ... not fwmark M lookup T`; (mark, table) pairs."""
        found = []
        for rule in self.rules(4) + self.rules(6):
            if "not" in rule and rule.get("fwmark") and rule.get("table"):
                pair = (int(str(rule["fwmark"]), 0), str(rule["table"]))
                if pair not in found:
                    found.append(pair)
        return found

    # -- sysctl, sockets, firewall, WireGuard --

    def kernel_module(self) -> bool:
        """True if the kernel can create WireGuard links (module loaded, or a probe link works)."""
        def probe() -> bool:
            if Path("/sys/module/wireguard").exists():
                return True
            try:
                return link.kernel_available(self.runner)
            except BulwarkError:
                return False
        return self._once("kernel_module", probe)

    def sysctl(self, name: str) -> str:
        """The value of a sysctl ("" when the key does not exist)."""
        return self._once(("sysctl", name), lambda: self.runner.run(
            ["sysctl", "-n", name], check=False, quiet=True).stdout.decode().strip())

    def udp_sockets(self) -> list[UdpSocket]:
        return self._once("udp", self._read_udp)

    def _read_udp(self) -> list[UdpSocket]:
        result = self.runner.run(["ss", "-H", "-u", "-a", "-n", "-p"], check=False, quiet=True)
        sockets = []
        for line in result.stdout.decode(errors="replace").splitlines():
            fields = line.split()
            if len(fields) < 5:
                continue
            local = fields[3]
            address, _, port = local.rpartition(":")
            if not port.isdigit():
                continue
            owners = tuple((name, int(pid)) for name, pid in _SS_USER.findall(line))
            sockets.append(UdpSocket(address.strip("[]"), int(port), owners))
        return sockets

    def ruleset(self) -> dict[str, Any] | None:
        """`nft -j list ruleset`, or None when nft is missing or fails."""
        return self._once("ruleset", self._read_ruleset)

    def _read_ruleset(self) -> dict[str, Any] | None:
        try:
            result = self.runner.run(["nft", "-j", "list", "ruleset"], check=False, quiet=True)
        except BulwarkError:
            return None
        if result.returncode != 0:
            return None
        try:
            data = json.loads(result.stdout.decode() or "{}")
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        resolve_conntrack_matches(data, self._iptables_rules)
        return data

    def _iptables_rules(self, family: str, table: str, chain: str) -> list[str]:
        """The `-A CHAIN ...` lines of an iptables-nft chain, in order ([] for a native nft table)."""
        tool = {"ip": "iptables", "ip6": "ip6tables"}.get(family)
        if tool is None:
            return []
        try:
            result = self.runner.run([tool, "-w", "-t", table, "-S", chain], check=False, quiet=True)
        except BulwarkError:
            return []
        return [line for line in result.stdout.decode(errors="replace").splitlines() if line.startswith("-A ")]

    def bulwark_rules(self, iface: str) -> tuple[list[Rule] | None, str | None]:
        """Bulwark's own firewall rules for `iface` as the kernel holds them (None: no table or chains), and
        why they could not be read (a rule Bulwark does not write, no firewall tool)."""
        def read() -> tuple[list[Rule] | None, str | None]:
            try:
                return firewall.live_rules(self.runner, iface), None
            except (BulwarkError, ValueError) as exc:
                return None, str(exc)
        return self._once(("bulwark_rules", iface), read)

    def device(self, iface: str) -> LiveDevice | None:
        """The live WireGuard device (one `wg show dump`, kept as text), or None when there is none (or it cannot
        be read)."""
        def read() -> LiveDevice | None:
            try:
                dump = table.read_dump(self.runner, iface)
            except BulwarkError:
                return None
            return None if dump is None else LiveDevice.of(dump)
        return self._once(("device", iface), read)

    def userspace_pid(self, iface: str) -> int | None:
        """The wireguard-go process serving `iface` in this namespace (None for the kernel, or none)."""
        return self._once(("userspace_pid", iface), lambda: link.userspace_pid(iface, self.runner.netns))

    def interfaces_with_key(self, public_key: str) -> list[str]:
        """The local WireGuard interfaces whose public key is `public_key`."""
        def find() -> list[str]:
            found = []
            for name, info in self.links().items():
                if info.get("linkinfo", {}).get("info_kind") not in ("wireguard", "tun"):
                    continue
                result = self.runner.run(["wg", "show", name, "public-key"], check=False, quiet=True)
                if result.returncode == 0 and result.stdout.decode().strip() == public_key:
                    found.append(name)
            return found
        return self._once(("with_key", public_key), find)

    def is_wireguard(self, iface: str) -> bool:
        """True if `iface` is a WireGuard interface (kernel link, or wireguard-go's TUN answering `wg show`)."""
        link = self.links().get(iface, {})
        if link.get("linkinfo", {}).get("info_kind") == "wireguard":
            return True
        return self._once(("is_wg", iface), lambda: self.runner.run(
            ["wg", "show", iface, "public-key"], check=False, quiet=True).returncode == 0)


@dataclass
class LiveDevice:
    """A device as one `wg show dump` shows it, kept as text: the port and each peer's fields by public key
    (parsing 65,000 lines into key and network objects would cost seconds; the checks need a few fields)."""

    dump: str
    listen_port: int
    peers: dict[str, list[str]]  # public key (base64) -> the 8 fields of its dump line

    @classmethod
    def of(cls, dump: str) -> LiveDevice:
        head = dump.split("\n", 1)[0].split("\t")
        port = int(head[2]) if len(head) == 4 and head[2].isdigit() else 0
        return cls(dump, port, {fields[0]: fields for fields in table.dump_lines(dump)})

    def endpoints(self) -> set[str]:
        """Where the device's peers are (those it has seen)."""
        return {fields[2] for fields in self.peers.values() if fields[2] != table.NONE}


@dataclass
class StoreView:
    """What the store says, read once (None fields when it could not be read): every peer as checked text
    (`rows`), and as model objects only the peers with networks of their own (client AllowedIPs, networks
    behind them), which the routing checks look at."""

    settings: Settings | None = None
    peers: list[Peer] = field(default_factory=list)
    server_key: PrivateKey | None = None
    schema: int | None = None
    problem: str | None = None  # why it could not be read
    rows: list[PeerRow] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.problem is None and self.settings is not None and self.server_key is not None


def read_store(config_dir: Path) -> StoreView:
    """Open the store read-only (through the store interface: quick_check on open, no migration, no chmod) and read
    settings, key and peers; a problem is described, never raised."""
    try:
        with open_store(config_dir, read_only=True, lock_timeout=5) as store:
            schema = store.schema_version()
            return StoreView(store.settings(), store.peers_with_networks(), store.server_key(), schema,
                             rows=list(store.peer_rows()))
    except BulwarkError as exc:
        if exc.code == ErrorCode.NOT_INITIALIZED:
            return StoreView(problem="missing")
        if exc.code == ErrorCode.STORE_NEWER:
            return StoreView(schema=SCHEMA_VERSION + 1, problem=exc.line())
        return StoreView(problem=f"unreadable: {exc.line()}")


@dataclass
class ServerContext:
    """Everything the server checks look at: the store, the runtime state, the host (through `host`)."""

    config_dir: Path
    iface: str
    store: StoreView
    state: RuntimeState | None
    host: HostFacts
    now: float
    run_dir: Path = DEFAULT_RUN_DIR

    @classmethod
    def load(cls, config_dir: Path, interface: str | None = None, runner: Runner | None = None,
             now: float | None = None, run_dir: Path = DEFAULT_RUN_DIR) -> ServerContext:
        store = read_store(config_dir)
        iface = interface or (store.settings.interface if store.settings is not None else "wg0")
        return cls(config_dir, iface, store, RuntimeState.load(run_dir, iface), HostFacts(runner or Runner()),
                   time.time() if now is None else now, run_dir)

    @property
    def settings(self) -> Settings:
        """The stored settings (callers check `store.usable` first)."""
        assert self.store.settings is not None  # noqa: S101 - guarded by store.usable
        return self.store.settings

    @property
    def link_exists(self) -> bool:
        return self.iface in self.host.links()

    @property
    def running(self) -> bool:
        """Bulwark runs (or ran and left) this interface: a state file or the link itself exists."""
        return self.state is not None or self.link_exists

    def device(self) -> LiveDevice | None:
        return self.host.device(self.iface) if self.link_exists else None

    def wanted(self) -> table.DeviceTable:
        """The device the store asks for (as the supervisor holds it)."""
        assert self.store.server_key is not None  # noqa: S101 - guarded by store.usable
        wanted = table.DeviceTable(self.store.server_key.to_base64(), self.settings.listen_port)
        table.load_rows(wanted, self.store.rows, self.now)
        return wanted

    def peer_names(self) -> dict[str, str]:
        """Public key (base64) -> peer name."""
        return {row.public_key: row.name for row in self.store.rows}

    def cli(self, command: str) -> str:
        """A `bulwark` command line for this config dir (and interface, when not the store's)."""
        return f"bulwark {command} --config-dir {shlex.quote(str(self.config_dir))}"
