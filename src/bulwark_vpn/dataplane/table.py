"""The device the store asks for, held as compact text, and `wg show dump` compared with it as text.

At 65,000 peers a key object, a network object and a dataclass per peer cost seconds of CPU and hundreds of MB;
the supervisor, `status` and `doctor` only need to know, per public key, whether the device says the same thing
as the store. `DeviceTable` keeps per wanted peer its public key, a digest of what `wg` is told about it (preshared
key, allowed IPs, keepalive) and its networks, all as the text `wg` prints. Comparing a dump with it is a split
and a dictionary lookup per line; only the few lines that differ are parsed into objects (`dataplane.wg`) to say
how they differ and to repair them. The table also owns the rule that a network belongs to one peer: the peer
that holds it keeps it, and a peer claiming it later is left off the device.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.store.base import PeerRow

NONE = "(none)"  # what `wg show dump` prints for an absent value


class Entry(NamedTuple):
    """A peer the device should have: its key, the digest of its settings, its networks (own addresses first)."""

    public_key: str
    digest: int
    networks: tuple[str, ...]
    routed: tuple[str, ...]  # the networks behind it (a suffix of `networks`)


class Conflict(NamedTuple):
    """`name` is left off the device: `network` already belongs to `owner`."""

    name: str
    network: str
    owner: str


def _digest(psk: str, allowed: str, keepalive: str) -> int:
    # Python's string hash: salted per process, which is fine, as the table never leaves its process.
    return hash((psk, allowed, keepalive))


def row_digest(row: PeerRow) -> int:
    """The digest of a store row, in the terms of `wg show dump`."""
    allowed = ",".join(sorted(row.tunnel_networks()))
    return _digest(row.preshared_key or NONE, allowed, str(row.keepalive) if row.keepalive else "off")


def dump_digest(fields: list[str]) -> int:
    """The digest of a dump line's fields (public key, PSK, endpoint, allowed IPs, handshake, rx, tx, keepalive)."""
    allowed = fields[3]
    if "," in allowed:
        allowed = ",".join(sorted(allowed.split(",")))
    return _digest(fields[1], allowed, fields[7])


@dataclass
class Drift:
    """How a dump differs from the table: unknown public keys on the device, wanted peers missing from it, peers
    whose settings differ (by name), and the interface's key or port."""

    unknown: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    differing: dict[str, list[str]] = field(default_factory=dict)  # name -> its dump fields
    interface: bool = False

    def __bool__(self) -> bool:
        return bool(self.unknown or self.missing or self.differing or self.interface)


class DeviceTable:
    """The wanted device: the interface's key (base64) and port, and the wanted peers by name."""

    def __init__(self, private_key: str, listen_port: int) -> None:
        self.private_key = private_key
        self.listen_port = listen_port
        self.entries: dict[str, Entry] = {}
        self.by_key: dict[str, str] = {}
        self.owner: dict[str, str] = {}  # network -> name of the wanted peer that has it
        self.left_off: dict[str, Conflict] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def place(self, row: PeerRow) -> Conflict | None:
        """Want this (enabled, unexpired) peer, replacing what was wanted under its name; a Conflict (and the peer
        left off) when one of its networks belongs to another wanted peer."""
        self.drop(row.name)
        networks = row.tunnel_networks()
        for network in networks:
            holder = self.owner.get(network)
            if holder is not None and holder != row.name:
                conflict = Conflict(row.name, network, holder)
                self.left_off[row.name] = conflict
                return conflict
        self.left_off.pop(row.name, None)
        entry = Entry(row.public_key, row_digest(row), networks, row.routed)
        self.entries[row.name] = entry
        self.by_key[row.public_key] = row.name
        for network in networks:
            self.owner[network] = row.name
        return None

    def drop(self, name: str) -> Entry | None:
        """No longer want this peer; returns what was wanted."""
        self.left_off.pop(name, None)
        entry = self.entries.pop(name, None)
        if entry is not None:
            if self.by_key.get(entry.public_key) == name:
                del self.by_key[entry.public_key]
            for network in entry.networks:
                if self.owner.get(network) == name:
                    del self.owner[network]
        return entry

    def routes(self) -> list[str]:
        """The networks behind wanted peers (the tunnel subnet's route comes with the address)."""
        return [network for entry in self.entries.values() for network in entry.routed]

    def compare(self, dump: str) -> Drift:
        """How the device in `dump` (the text of `wg show IFACE dump`) differs from the table."""
        drift = Drift()
        lines = dump.split("\n")
        head = lines[0].split("\t")
        if len(head) != 4 or head[0] != self.private_key or head[2] != str(self.listen_port):
            drift.interface = True
        seen = 0
        by_key, entries = self.by_key, self.entries
        for line in lines[1:]:
            if not line:
                continue
            fields = line.split("\t")
            name = by_key.get(fields[0])
            if name is None:
                drift.unknown.append(fields[0])
                continue
            seen += 1
            if len(fields) != 8 or dump_digest(fields) != entries[name].digest:
                drift.differing[name] = fields
        if seen != len(entries):
            present = {line.split("\t", 1)[0] for line in lines[1:] if line}
            drift.missing = [name for name, entry in entries.items() if entry.public_key not in present]
        return drift


def dump_lines(dump: str) -> Iterator[list[str]]:
    """The peer lines of a dump, split into their 8 fields."""
    for line in dump.split("\n")[1:]:
        if line:
            fields = line.split("\t")
            if len(fields) == 8:
                yield fields


def read_dump(runner: Runner, iface: str) -> str | None:
    """The text of `wg show IFACE dump` (it holds the private key and PSKs: never logged), None without it."""
    result = runner.run(["wg", "show", iface, "dump"], check=False, quiet=True)
    if result.returncode == 0:
        return result.stdout.decode()
    exists = runner.run(["ip", "link", "show", "dev", iface], check=False, quiet=True).returncode == 0
    if not exists:
        return None
    raise runner.failure(["wg", "show", iface, "dump"], result)


def peer_conf(row: PeerRow, endpoint: str | None = None) -> str:
    """One peer's `[Peer]` section of a `wg setconf` file (holds its PSK). Every value is checked text (PeerRow)."""
    lines = ["", "[Peer]", f"PublicKey = {row.public_key}"]
    if row.preshared_key is not None:
        lines.append(f"PresharedKey = {row.preshared_key}")
    lines.append("AllowedIPs = " + ", ".join(row.tunnel_networks()))
    if endpoint is not None:
        lines.append(f"Endpoint = {endpoint}")
    if row.keepalive:
        lines.append(f"PersistentKeepalive = {row.keepalive}")
    return "\n".join(lines) + "\n"


def interface_conf(private_key: str, listen_port: int) -> str:
    """The `[Interface]` section of a `wg setconf` file (holds the private key)."""
    return f"[Interface]\nPrivateKey = {private_key}\nListenPort = {listen_port}\n"


def load_rows(table: DeviceTable, rows: Iterable[PeerRow], now: float,
              endpoints: Mapping[str, str] | None = None) -> tuple[list[str], list[Conflict]]:
    """Place every enabled, unexpired row in `table` (store order) and return the `[Peer]` sections of the placed
    ones (with their known endpoints) and the conflicts."""
    early, later, conflicts = load_rows_split(table, rows, now, endpoints)
    return early + later, conflicts


def load_rows_split(table: DeviceTable, rows: Iterable[PeerRow], now: float,
                    endpoints: Mapping[str, str] | None = None,
                    ahead: Iterable[str] = ()) -> tuple[list[str], list[str], list[Conflict]]:
    """`load_rows`, with the sections of the peers in `ahead` (public keys) apart from the others."""
    early: list[str] = []
    later: list[str] = []
    conflicts: list[Conflict] = []
    known = endpoints or {}
    first = set(ahead)
    for row in rows:
        if not row.enabled or (row.expires_at is not None and row.expires_at <= now):
            continue
        conflict = table.place(row)
        if conflict is not None:
            conflicts.append(conflict)
        else:
            (early if row.public_key in first else later).append(peer_conf(row, known.get(row.public_key)))
    return early, later, conflicts
