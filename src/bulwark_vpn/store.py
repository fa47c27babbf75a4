"""The state store: one SQLite file in the config dir, the single source of truth.

Writes run in `BEGIN IMMEDIATE` transactions (one writer at a time across processes, readers never
blocked thanks to WAL). The schema carries a version and is migrated forward on open; a store written by
a newer Bulwark, or a damaged file, is refused with a StoreError and left untouched.

A `revision` counter in `meta` is bumped by every write so a supervisor can notice changes made by
other processes cheaply.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, fields
from pathlib import Path

from bulwark_vpn.addressing import Pool
from bulwark_vpn.errors import ConflictError, NotFoundError, StoreError
from bulwark_vpn.fsutil import PRIVATE_FILE, ensure_private_dir
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.model import Peer, Settings

STORE_NAME = "bulwark.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE peers (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        public_key TEXT NOT NULL UNIQUE,
        private_key TEXT,
        preshared_key TEXT,
        address4 TEXT NOT NULL UNIQUE,
        address6 TEXT UNIQUE,
        allowed_ips TEXT,
        server_allowed_ips TEXT NOT NULL DEFAULT '[]',
        keepalive INTEGER,
        enabled INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    -- Offsets released by removed peers, per IP family, reused smallest first (no semicolons in here).
    CREATE TABLE free_offsets (family INTEGER NOT NULL, offset TEXT NOT NULL, PRIMARY KEY (family, offset))
        WITHOUT ROWID;
    """,
}


def _offset_key(offset: int) -> str:
    # Zero-padded hex sorts like the integer, for IPv6 offsets beyond SQLite's 64-bit integers.
    return f"{offset:032x}"


class Store:
    """Access to one config dir's SQLite store. Use as a context manager or call close()."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # -- opening and schema -------------------------------------------------------------------------

    @classmethod
    def open(cls, config_dir: Path, *, create: bool = True) -> Store:
        """Open (and create or migrate) the store in `config_dir`."""
        path = config_dir / STORE_NAME
        if not path.exists() and not create:
            raise NotFoundError(
                f"no Bulwark store in '{config_dir}': run 'bulwark init --config-dir {config_dir}' first"
            )
        if create:
            ensure_private_dir(config_dir)
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store '{path}': {exc}: check the path and its permissions") from None
        store = cls(path, conn)
        try:
            store._prepare()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"the store '{path}' is unreadable or corrupted ({exc}): restore it from a backup "
                f"or move it away and run 'bulwark init' to adopt the rendered files"
            ) from None
        except BaseException:
            conn.close()
            raise
        return store

    def _prepare(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        result = conn.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {result[0] if result else 'no answer'}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        os.chmod(self.path, PRIVATE_FILE)
        self._migrate()

    def _schema_version(self) -> int:
        has_meta = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            return 0
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        if self._schema_version() == SCHEMA_VERSION:
            return
        with self.transaction():
            current = self._schema_version()
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the store '{self.path}' has schema version {current}, newer than this Bulwark "
                    f"({SCHEMA_VERSION}): upgrade Bulwark"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                self._set_meta("schema_version", str(version))
            if self._get_meta("revision") is None:
                self._set_meta("revision", "0")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction: takes the write lock at once, commits or rolls back as a whole."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- meta -----------------------------------------------------------------------------------------

    def _get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def _bump(self) -> None:
        self._conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='revision'")

    def revision(self) -> int:
        """A counter bumped by every write; cheap to poll."""
        return int(self._get_meta("revision") or 0)

    # -- settings and server key ----------------------------------------------------------------------

    def is_initialized(self) -> bool:
        return self._get_meta("server_private_key") is not None

    def server_key(self) -> PrivateKey | None:
        value = self._get_meta("server_private_key")
        return PrivateKey.from_base64(value) if value else None

    def require_server_key(self) -> PrivateKey:
        key = self.server_key()
        if key is None:
            raise NotFoundError(f"the server in '{self.path.parent}' is not set up: run 'bulwark init'")
        return key

    def set_server_key(self, key: PrivateKey) -> None:
        with self.transaction():
            self._set_meta("server_private_key", key.to_base64())
            self._bump()

    def settings(self) -> Settings:
        stored = dict(self._conn.execute("SELECT key, value FROM settings").fetchall())
        try:
            return _settings_from_json(stored)
        except (ValueError, TypeError) as exc:
            raise StoreError(
                f"the store '{self.path}' holds a damaged setting ({exc}): restore it from a backup"
            ) from None

    def save_settings(self, settings: Settings) -> None:
        with self.transaction():
            for key, value in _settings_to_json(settings).items():
                self._conn.execute(
                    "INSERT INTO settings(key, value) VALUES(?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key, value),
                )
            self._bump()

    # -- peers ----------------------------------------------------------------------------------------

    def peers(self) -> list[Peer]:
        rows = self._conn.execute(f"SELECT {_PEER_COLUMNS} FROM peers ORDER BY id").fetchall()  # noqa: S608
        return [self._peer(row) for row in rows]

    def _peer(self, row: tuple) -> Peer:
        try:
            return _peer_from_row(row)
        except (ValueError, TypeError) as exc:
            # Keys and addresses are validated on the way in; a bad one means the file was damaged.
            raise StoreError(
                f"the store '{self.path}' holds a damaged peer '{row[0]}' ({exc}): restore it from a backup"
            ) from None

    def server_peer_rows(self) -> list[tuple]:
        """Enabled peers as (name, public key, PSK, address4, address6, routed networks, keepalive) text,
        for rendering the server config without a model object per peer."""
        rows = self._conn.execute(
            "SELECT name, public_key, preshared_key, address4, address6, server_allowed_ips, keepalive "
            "FROM peers WHERE enabled = 1 ORDER BY id"
        ).fetchall()
        return [(*row[:5], json.loads(row[5]), row[6]) for row in rows]

    def peer(self, name: str) -> Peer:
        row = self._conn.execute(f"SELECT {_PEER_COLUMNS} FROM peers WHERE name=?", (name,)).fetchone()  # noqa: S608
        if row is None:
            raise NotFoundError(f"no peer named '{name}': see 'bulwark peer list'")
        return self._peer(row)

    def has_peer(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM peers WHERE name=?", (name,)).fetchone() is not None

    def peer_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM peers").fetchone()[0])

    def insert_peer(self, peer: Peer) -> None:
        """Insert a peer whose addresses are already allocated (see allocate)."""
        now = time.time()
        try:
            with self.transaction():
                self._conn.execute(
                    f"INSERT INTO peers({_PEER_COLUMNS}, created_at, updated_at) "
                    f"VALUES({', '.join('?' * _PEER_COLUMN_COUNT)}, ?, ?)",
                    (*_peer_to_row(peer), now, now),
                )
                self._bump()
        except sqlite3.IntegrityError as exc:
            raise ConflictError(_conflict_message(peer, exc)) from None

    def update_peer(self, peer: Peer) -> None:
        """Replace the stored fields of the peer with the same name."""
        with self.transaction():
            cursor = self._conn.execute(
                "UPDATE peers SET public_key=?, private_key=?, preshared_key=?, address4=?, address6=?, "
                "allowed_ips=?, server_allowed_ips=?, keepalive=?, enabled=?, updated_at=? WHERE name=?",
                (*_peer_to_row(peer)[1:], time.time(), peer.name),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no peer named '{peer.name}': see 'bulwark peer list'")
            self._bump()

    def delete_peer(self, name: str, pools: tuple[Pool, Pool | None]) -> Peer:
        """Delete a peer and release its addresses to the free lists."""
        with self.transaction():
            peer = self.peer(name)
            self._conn.execute("DELETE FROM peers WHERE name=?", (name,))
            pool4, pool6 = pools
            if pool4.contains_peer_address(peer.address4):
                self._release(4, pool4.offset(peer.address4))
            if peer.address6 is not None and pool6 is not None and pool6.contains_peer_address(peer.address6):
                self._release(6, pool6.offset(peer.address6))
            self._bump()
        return peer

    # -- allocation -----------------------------------------------------------------------------------

    def allocate(self, pool: Pool) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """Take the next never-used offset, else the smallest released one. Must run in a transaction.

        O(log n): one meta read/write, or one indexed min() and delete on the free list.
        """
        family = pool.network.version
        cursor_key = f"cursor{family}:{pool.network}"
        cursor = int(self._get_meta(cursor_key) or pool.first_offset)
        if cursor <= pool.last_offset:
            self._set_meta(cursor_key, str(cursor + 1))
            return pool.address(cursor)
        while True:
            row = self._conn.execute(
                "SELECT offset FROM free_offsets WHERE family=? ORDER BY offset LIMIT 1", (family,)
            ).fetchone()
            if row is None:
                raise ConflictError(
                    f"the tunnel subnet '{pool.network}' is full ({pool.capacity} peers): "
                    f"remove unused peers or widen the subnet (e.g. INTERNAL_SUBNET with a shorter prefix)"
                )
            self._conn.execute("DELETE FROM free_offsets WHERE family=? AND offset=?", (family, row[0]))
            offset = int(row[0], 16)
            # A freed offset may lie outside the pool after the subnet changed; skip it.
            if pool.first_offset <= offset <= pool.last_offset:
                return pool.address(offset)

    def reserve(self, pool: Pool, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        """Mark an adopted address as used: advance the cursor past it, free the gap it skips."""
        family = pool.network.version
        cursor_key = f"cursor{family}:{pool.network}"
        cursor = int(self._get_meta(cursor_key) or pool.first_offset)
        offset = pool.offset(address)
        if offset >= cursor:
            for gap in range(cursor, offset):
                self._release(family, gap)
            self._set_meta(cursor_key, str(offset + 1))
        else:
            self._conn.execute(
                "DELETE FROM free_offsets WHERE family=? AND offset=?", (family, _offset_key(offset))
            )

    def rebase_pool(self, old: Pool, new: Pool, used: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> None:
        """After a subnet change: restart allocation in `new`, reserving the addresses still in use."""
        family = new.network.version
        with self.transaction():
            self._conn.execute("DELETE FROM free_offsets WHERE family=?", (family,))
            self._conn.execute("DELETE FROM meta WHERE key LIKE ?", (f"cursor{family}:%",))
            for address in sorted(used):
                self.reserve(new, address)
            self._bump()

    def _release(self, family: int, offset: int) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO free_offsets(family, offset) VALUES(?, ?)", (family, _offset_key(offset))
        )


# A constant column list, interpolated into queries (never user input).
_PEER_COLUMNS = (
    "name, public_key, private_key, preshared_key, address4, address6, allowed_ips, "
    "server_allowed_ips, keepalive, enabled"
)
_PEER_COLUMN_COUNT = 10


def _nets_to_json(nets) -> str | None:
    return None if nets is None else json.dumps([str(n) for n in nets])


def _nets_from_json(text: str | None):
    return None if text is None else tuple(ipaddress.ip_network(n) for n in json.loads(text))


def _peer_to_row(peer: Peer) -> tuple:
    return (
        peer.name,
        peer.public_key.to_base64(),
        peer.private_key.to_base64() if peer.private_key else None,
        peer.preshared_key.to_base64() if peer.preshared_key else None,
        str(peer.address4),
        str(peer.address6) if peer.address6 else None,
        _nets_to_json(peer.allowed_ips),
        _nets_to_json(peer.server_allowed_ips),
        peer.keepalive,
        int(peer.enabled),
    )


def _peer_from_row(row: tuple) -> Peer:
    name, public, private, psk, addr4, addr6, allowed, server_allowed, keepalive, enabled = row
    return Peer(
        name=name,
        public_key=PublicKey.from_base64(public),
        private_key=PrivateKey.from_base64(private) if private else None,
        preshared_key=PresharedKey.from_base64(psk) if psk else None,
        address4=ipaddress.IPv4Address(addr4),
        address6=ipaddress.IPv6Address(addr6) if addr6 else None,
        allowed_ips=_nets_from_json(allowed),
        server_allowed_ips=_nets_from_json(server_allowed) or (),
        keepalive=keepalive,
        enabled=bool(enabled),
    )


def _conflict_message(peer: Peer, exc: sqlite3.IntegrityError) -> str:
    text = str(exc)
    if "peers.name" in text:
        return f"a peer named '{peer.name}' already exists: choose another name or remove it first"
    if "public_key" in text:
        return f"public key '{peer.public_key}' is already used by another peer: generate a new key"
    return f"address of peer '{peer.name}' is already in use ({text}): check the store"


_NETWORK_FIELDS = {"subnet4", "subnet6"}
_NETWORK_LIST_FIELDS = {"allowed_ips", "dns_clients"}


def _settings_to_json(settings: Settings) -> dict[str, str]:
    out = {}
    for key, value in asdict(settings).items():
        if key in _NETWORK_FIELDS and value is not None:
            value = str(value)
        elif key in _NETWORK_LIST_FIELDS:
            value = [str(n) for n in value]
        out[key] = json.dumps(value)
    return out


def _settings_from_json(stored: dict[str, str]) -> Settings:
    known = {f.name for f in fields(Settings)}
    values = {}
    for key, raw in stored.items():
        if key not in known:
            continue
        value = json.loads(raw)
        if key == "subnet4":
            value = ipaddress.IPv4Network(value)
        elif key == "subnet6" and value is not None:
            value = ipaddress.IPv6Network(value)
        elif key in _NETWORK_LIST_FIELDS:
            value = tuple(ipaddress.ip_network(n) for n in value)
        values[key] = value
    return Settings(**values)
