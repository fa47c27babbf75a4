"""The SQLite store: one file in the config folder, the single source of truth (see `store.base`).

Writes run in `BEGIN IMMEDIATE` transactions (one writer at a time across processes, readers never
blocked thanks to WAL). The schema carries a version and is migrated forward on open; a store written by
a newer Bulwark, or a damaged file, is refused with a StoreError and left untouched.

A `revision` counter in `meta` is bumped by every write so a supervisor can notice changes made by
other processes cheaply. Every sqlite3 error comes out as a StoreError with a code: a lock held too long
(naming the process that holds it), a read-only or full disk, a damaged file. A store file that is a symbolic
link, empty, or not a Bulwark store is refused, never replaced. On a read-only folder the store opens
read-only, so the commands that only read keep working.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import re
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, fields
from pathlib import Path

from bulwark_vpn.addressing import Pool
from bulwark_vpn.errors import ConflictError, ErrorCode, NotFoundError, StoreError, show_value
from bulwark_vpn.fsutil import PRIVATE_FILE, UnsafePathError
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.model import Peer, Settings
from bulwark_vpn.store.base import PeerQuery, PeerRow, PeerSummary, StatusRow
from bulwark_vpn.store.control import ControlPlane
from bulwark_vpn.values import parse_ip_address, parse_network

STORE_NAME = "bulwark.db"
# Whole-value checks for rows read without parsing (listings): what the parsers wrote, nothing else.
_SAFE_NAME = re.compile(r"[a-zA-Z0-9_=+][a-zA-Z0-9_=+.-]{0,62}")
_SAFE_KEY = re.compile(r"[A-Za-z0-9+/]{43}=")
_SAFE_ADDRESS = re.compile(r"[0-9.]{7,15}")
_SAFE_ADDRESS6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_SAFE_NETWORK = re.compile(r"[0-9A-Fa-f:.]{2,45}/[0-9]{1,3}")
# The three checked at once (one match per row of a listing, not three), and with the IPv6 address for status.
_SAFE_SUMMARY = re.compile(rf"(?:{_SAFE_NAME.pattern})\t(?:{_SAFE_KEY.pattern})\t(?:{_SAFE_ADDRESS.pattern})")
_SAFE_STATUS = re.compile(rf"{_SAFE_SUMMARY.pattern}\t(?:{_SAFE_ADDRESS6.pattern})?")
# What `wg show dump` prints as an endpoint: an IPv4 address or a bracketed IPv6 address, and a port.
_SAFE_ENDPOINT = re.compile(r"(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9a-fA-F:.]{2,45}\]):[0-9]{1,5}")
SCHEMA_VERSION = 4
# How long a command waits for another process's write transaction before saying who holds it.
DEFAULT_LOCK_TIMEOUT = 10.0
RESTORE_HINT = ("restore it from a backup ('bulwark restore FILE'); the rendered files in this folder still hold "
                "every key")

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
    # The render journal: files made stale by a change, recorded in the change's own transaction and cleared once
    # rendered, so a crash between the two heals at the next command.
    2: """
    CREATE TABLE pending_renders (item TEXT PRIMARY KEY) WITHOUT ROWID;
    """,
    # The control plane: peer owners and expiry, users, API tokens, sessions, login failures, share links, the
    # audit log and traffic history. Secrets (passwords, tokens, session ids, share links, recovery codes) are
    # stored as hashes only.
    3: """
    ALTER TABLE peers ADD COLUMN owner TEXT;
    ALTER TABLE peers ADD COLUMN expires_at REAL;
    ALTER TABLE peers ADD COLUMN address4_num INTEGER;
    CREATE INDEX peers_owner ON peers(owner);
    CREATE INDEX peers_expires ON peers(expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX peers_address4_num ON peers(address4_num);
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        password_hash TEXT,
        totp_secret TEXT,
        totp_enabled INTEGER NOT NULL DEFAULT 0,
        totp_last_step INTEGER NOT NULL DEFAULT 0,
        peer_limit INTEGER,
        require_2fa INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        password_changed_at REAL
    ) WITHOUT ROWID;
    CREATE TABLE recovery_codes (user TEXT NOT NULL, code_hash TEXT NOT NULL, used_at REAL,
        PRIMARY KEY (user, code_hash)) WITHOUT ROWID;
    CREATE TABLE setup_links (token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, created_at REAL NOT NULL,
        expires_at REAL NOT NULL, used_at REAL) WITHOUT ROWID;
    CREATE TABLE sessions (id_hash TEXT PRIMARY KEY, user TEXT NOT NULL, csrf TEXT NOT NULL,
        created_at REAL NOT NULL, last_seen REAL NOT NULL, mfa_passed INTEGER NOT NULL, address TEXT)
        WITHOUT ROWID;
    CREATE INDEX sessions_user ON sessions(user);
    CREATE TABLE tokens (id INTEGER PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
        name TEXT NOT NULL, owner TEXT NOT NULL, scopes TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL,
        last_used_at REAL, last_used_from TEXT, revoked_at REAL);
    CREATE TABLE auth_failures (scope TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX auth_failures_key ON auth_failures(scope, key, at);
    CREATE TABLE share_links (id INTEGER PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, peer TEXT NOT NULL,
        created_by TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL, used_at REAL,
        revoked_at REAL);
    CREATE TABLE audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, via TEXT NOT NULL,
        address TEXT, operation TEXT NOT NULL, target TEXT, result TEXT NOT NULL, detail TEXT);
    CREATE INDEX audit_at ON audit(at);
    CREATE TABLE traffic (peer TEXT NOT NULL, resolution INTEGER NOT NULL, bucket INTEGER NOT NULL,
        rx INTEGER NOT NULL, tx INTEGER NOT NULL, PRIMARY KEY (peer, resolution, bucket)) WITHOUT ROWID;
    CREATE INDEX traffic_bucket ON traffic(resolution, bucket);
    """,
    # Scale: where each peer was last seen (kept by the supervisor, so a restart, a reboot or a new container
    # reconnects active clients at once; keyed by public key, so a re-keyed peer starts afresh), and a log of the
    # names of changed peers, filled by triggers (see _MIGRATION_STEPS) whoever writes, so the supervisor reloads
    # only what changed.
    4: """
    CREATE TABLE peer_endpoints (public_key TEXT PRIMARY KEY, endpoint TEXT NOT NULL, seen_at INTEGER NOT NULL)
        WITHOUT ROWID;
    CREATE TABLE peer_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL);
    """,
}


def _backfill_address_numbers(conn: sqlite3.Connection) -> None:
    """Schema 3 sorts peers by address in SQL: a number per IPv4 address."""
    rows = conn.execute("SELECT id, address4 FROM peers").fetchall()
    conn.executemany("UPDATE peers SET address4_num=? WHERE id=?",
                     [(int(ipaddress.IPv4Address(address)), row_id) for row_id, address in rows])


_CHANGE_TRIGGERS = (
    "CREATE TRIGGER peers_inserted AFTER INSERT ON peers BEGIN "
    "INSERT INTO peer_changes(name) VALUES (NEW.name); END",
    "CREATE TRIGGER peers_updated AFTER UPDATE ON peers BEGIN "
    "INSERT INTO peer_changes(name) VALUES (OLD.name); "
    "INSERT INTO peer_changes(name) SELECT NEW.name WHERE NEW.name <> OLD.name; END",
    "CREATE TRIGGER peers_deleted AFTER DELETE ON peers BEGIN "
    "INSERT INTO peer_changes(name) VALUES (OLD.name); END",
)


def _add_change_triggers(conn: sqlite3.Connection) -> None:
    """Schema 4: every write to `peers` logs the peer's name (trigger bodies hold semicolons, so they are not in
    the split SQL text)."""
    for statement in _CHANGE_TRIGGERS:
        conn.execute(statement)


# Steps in Python that follow a version's SQL.
_MIGRATION_STEPS = {3: _backfill_address_numbers, 4: _add_change_triggers}


def lock_holders(path: Path) -> list[str]:
    """Other processes with the store (or its WAL) open, as 'pid N (command)': said when a lock is held too long."""
    targets = {str(path), f"{path}-wal", f"{path}-shm"}
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
        except OSError:
            continue
        if links & targets:
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                command = " ".join(a.decode(errors="replace") for a in argv if a)[:80]
            except OSError:
                command = "?"
            found.append(f"pid {entry.name} ({show_value(command)})")  # one line whatever its argv holds
    return found


def _nearly_full(path: Path) -> bool:
    """Under 1 MiB free where the store lives: SQLite reports a full disk as an I/O error when the WAL's
    shared-memory file cannot grow."""
    try:
        info = os.statvfs(path.parent)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < 1 << 20


def translate(exc: sqlite3.Error, path: Path) -> StoreError:
    """A driver error as a StoreError users can act on."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        holders = lock_holders(path)
        held = f"held by {', '.join(holders)}" if holders else "held by another process"
        return StoreError("the store is locked by another writer", str(path), f"{held}: try again when it is done",
                          code=ErrorCode.STORE_LOCKED)
    if "readonly" in text or "read-only" in text:
        return StoreError("the store is read-only", str(path),
                          "only read-only commands (peer list, peer show, status, deploy) work on this folder",
                          code=ErrorCode.READ_ONLY)
    if "full" in text or ("i/o" in text and _nearly_full(path)):
        return StoreError("the disk is full", str(path), "free some space and run the command again: nothing changed",
                          code=ErrorCode.DISK_FULL)
    if "i/o" in text:
        return StoreError("an I/O error on the store", str(path),
                          "check the disk and the kernel log (dmesg); nothing was changed", code=ErrorCode.DISK_FULL)
    if "unable to open" in text:
        return StoreError("cannot open the store", str(path), "check the folder and its permissions",
                          code=ErrorCode.READ_ONLY)
    return StoreError(f"the store is damaged ({exc})", str(path), RESTORE_HINT)



def _row_problem(name: object, public: object, psk: object, address4: object, address6: object,
                 networks: tuple, keepalive: object) -> str | None:
    """What is wrong with a peer row read as text, in the words of the parsers; None when nothing is. A secret is
    never shown."""
    if not (isinstance(name, str) and _SAFE_NAME.fullmatch(name)):
        return "invalid name"
    if not (isinstance(public, str) and _SAFE_KEY.fullmatch(public)):
        return f"invalid public key: '{show_value(public)}'"
    if psk is not None and not (isinstance(psk, str) and _SAFE_KEY.fullmatch(psk)):
        return "invalid preshared key"
    if not (isinstance(address4, str) and _SAFE_ADDRESS.fullmatch(address4)):
        return f"invalid IPv4 address: '{show_value(address4)}'"
    if address6 is not None and not (isinstance(address6, str) and _SAFE_ADDRESS6.fullmatch(address6)):
        return f"invalid IPv6 address: '{show_value(address6)}'"
    if not all(isinstance(n, str) and _SAFE_NETWORK.fullmatch(n) for n in networks):
        return "invalid networks behind the peer"
    if keepalive is not None and not (isinstance(keepalive, int) and 0 <= keepalive <= 65535):
        return "invalid keepalive"
    return None


# Main-file states that passed quick_check in this process (see SQLiteStore._prepare).
_CHECKED: set[tuple[str, int, int, int, int]] = set()


def _offset_key(offset: int) -> str:
    # Zero-padded hex sorts like the integer, for IPv6 offsets beyond SQLite's 64-bit integers.
    return f"{offset:032x}"


def _translated(method):
    """Turn the driver's errors into StoreErrors; Bulwark's own errors pass through."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    return wrapper


class SQLiteStore(ControlPlane):
    """One config folder's SQLite store. Use as a context manager or call close()."""

    def __init__(self, path: Path, conn: sqlite3.Connection, *, read_only: bool = False,
                 identity: tuple[int, int] | None = None) -> None:
        self.path = path
        self._conn = conn
        self.read_only = read_only
        # (device, inode) of the store file as checked before SQLite opened it; None for a store being created.
        self._identity = identity

    # -- opening and schema -------------------------------------------------------------------------

    @classmethod
    def open(cls, config_dir: Path, *, create: bool = True, read_only: bool = False,
             lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> SQLiteStore:
        """Open (and create or migrate) the store in `config_dir`. A read-only folder or file opens read-only."""
        path = config_dir / STORE_NAME
        info = _lstat(path)
        if info is None and not create:
            raise NotFoundError("no Bulwark store in this folder", str(config_dir),
                                "create one with 'bulwark init' (or restore a backup)",
                                code=ErrorCode.NOT_INITIALIZED)
        if info is not None:
            if stat.S_ISLNK(info.st_mode):
                raise UnsafePathError("the store is a symbolic link", str(path),
                                      "Bulwark never follows links in its folder: put the real file there")
            if not stat.S_ISREG(info.st_mode):
                raise UnsafePathError("the store is not a file", str(path), "move it away")
            if info.st_size == 0:
                raise StoreError("the store is empty (0 bytes)", str(path),
                                 "restore it from a backup ('bulwark restore FILE'), or remove it to set up a new "
                                 "server, which adopts the rendered files")
        for suffix in _SIDE_FILES:
            side = _lstat(Path(f"{path}{suffix}"))
            if side is not None and not stat.S_ISREG(side.st_mode):
                # SQLite opens these by name; it refuses a link itself, but only as "cannot open": say which.
                kind = "a symbolic link" if stat.S_ISLNK(side.st_mode) else "not a file"
                raise UnsafePathError(f"the store's {suffix[1:]} file is {kind}", f"{path}{suffix}",
                                      "Bulwark never follows or replaces it: remove it (or move it away) and run the "
                                      "command again")
        conn, read_only = _connect(path, create=create and info is None, read_only=read_only,
                                   timeout=lock_timeout)
        store = cls(path, conn, read_only=read_only,
                    identity=(info.st_dev, info.st_ino) if info is not None else None)
        try:
            store._prepare()
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, path) from None
        except BaseException:
            conn.close()
            raise
        return store

    def _prepare(self) -> None:
        conn = self._conn
        # quick_check reads the whole file (30-100 ms at 65,000 peers): once per process for a given state of the
        # main file (a damaged or replaced file has another size, time or inode; commits go to the WAL).
        info = os.stat(self.path)
        state = (str(self.path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if state not in _CHECKED:
            result = conn.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {result[0] if result else 'no answer'}")
            _CHECKED.add(state)
        if self.read_only:
            version = self._schema_version()
            if version > SCHEMA_VERSION:
                raise self._newer(version)
            if version == 0:
                raise StoreError("this is not a Bulwark store", str(self.path), RESTORE_HINT)
            return
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        self._make_private()
        self._migrate()

    def _make_private(self) -> None:
        """chmod 0600 the file SQLite opened, never what its name points to now: a command can wait for a lock between
        the checks in `open` and here (another process holding the database), time enough to put a link to any file
        in the store's place, and a chmod by name followed it (as root).

        Through an O_PATH descriptor: closing an ordinary descriptor of the database would drop every POSIX lock
        this process holds on it, SQLite's own included (the next writer then deletes the WAL under a live reader,
        such as the supervisor); an O_PATH one holds no locks and drops none."""
        fd = os.open(self.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            if stat.S_ISLNK(info.st_mode):
                raise UnsafePathError("the store is a symbolic link", str(self.path),
                                      "Bulwark never follows links in its folder: put the real file there")
            if self._identity is not None and (info.st_dev, info.st_ino) != self._identity:
                raise UnsafePathError("the store was replaced while it was being opened", str(self.path),
                                      "another process swapped the file: check who writes this folder")
            if stat.S_IMODE(info.st_mode) != PRIVATE_FILE:
                os.chmod(f"/proc/self/fd/{fd}", PRIVATE_FILE)  # the file this descriptor is, no link followed
        finally:
            os.close(fd)

    def _newer(self, version: int) -> StoreError:
        return StoreError(f"the store has schema version {version}, newer than this Bulwark's ({SCHEMA_VERSION})",
                          str(self.path), "upgrade Bulwark", code=ErrorCode.STORE_NEWER)

    def _schema_version(self) -> int:
        has_meta = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            if self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreError("this is not a Bulwark store", str(self.path),
                                 "point --config-dir at a Bulwark folder, or move the file away")
            return 0
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        if self._schema_version() == SCHEMA_VERSION:
            return
        with self.transaction():
            current = self._schema_version()
            if current > SCHEMA_VERSION:
                raise self._newer(current)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                if version in _MIGRATION_STEPS:
                    _MIGRATION_STEPS[version](self._conn)
                self._set_meta("schema_version", str(version))
            if self._get_meta("revision") is None:
                self._set_meta("revision", "0")
            if self._get_meta("gateway_id") is None:
                self._set_meta("gateway_id", uuid.uuid4().hex)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction: takes the write lock at once, commits or rolls back as a whole."""
        if self._conn.in_transaction:
            yield
            return
        if self.read_only:
            raise StoreError("the store is read-only", str(self.path),
                             "only read-only commands (peer list, peer show, status, deploy) work on this folder",
                             code=ErrorCode.READ_ONLY)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise translate(exc, self.path) from None

    @_translated
    def snapshot(self, target: Path) -> None:
        """A consistent copy of the store (the backup API sees committed writes still in the WAL)."""
        copy = sqlite3.connect(target)
        try:
            self._conn.backup(copy)
        finally:
            copy.close()

    @_translated
    def reset_identity(self) -> None:
        """A new gateway id and an empty render journal: for a store restored from a backup, which is a new
        gateway (commands must never take the backed-up gateway, still running elsewhere, for this one). Browser
        sessions of the old gateway end too: people sign in again (accounts, tokens and links are kept)."""
        with self.transaction():
            self._set_meta("gateway_id", uuid.uuid4().hex)
            self._conn.execute("DELETE FROM pending_renders")
            if self._schema_version() >= 3:
                self._conn.execute("DELETE FROM sessions")
            self._bump()

    @_translated
    def schema_version(self) -> int:
        return self._schema_version()

    @_translated
    def gateway_id(self) -> str | None:
        return self._get_meta("gateway_id")

    # -- render journal -------------------------------------------------------------------------------

    @_translated
    def pending_renders(self) -> list[str]:
        if self._schema_version() < 2:
            return []
        return [row[0] for row in self._conn.execute("SELECT item FROM pending_renders ORDER BY item")]

    @_translated
    def add_pending(self, items: Sequence[str]) -> None:
        with self.transaction():
            self._conn.executemany("INSERT OR IGNORE INTO pending_renders(item) VALUES(?)", [(i,) for i in items])

    @_translated
    def clear_pending(self, items: Sequence[str]) -> None:
        with self.transaction():
            self._conn.executemany("DELETE FROM pending_renders WHERE item=?", [(i,) for i in items])

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

    @_translated
    def revision(self) -> int:
        """A counter bumped by every write; cheap to poll."""
        return int(self._get_meta("revision") or 0)

    # -- settings and server key ----------------------------------------------------------------------

    @_translated
    def is_initialized(self) -> bool:
        return self._get_meta("server_private_key") is not None

    @_translated
    def server_key(self) -> PrivateKey | None:
        value = self._get_meta("server_private_key")
        return PrivateKey.from_base64(value) if value else None

    @_translated
    def require_server_key(self) -> PrivateKey:
        key = self.server_key()
        if key is None:
            raise NotFoundError(f"the server in '{self.path.parent}' is not set up: run 'bulwark init'")
        return key

    @_translated
    def set_server_key(self, key: PrivateKey) -> None:
        with self.transaction():
            self._set_meta("server_private_key", key.to_base64())
            self._bump()

    @_translated
    def settings(self) -> Settings:
        stored = dict(self._conn.execute("SELECT key, value FROM settings").fetchall())
        try:
            return _settings_from_json(stored)
        except (ValueError, TypeError) as exc:
            raise StoreError(
                f"the store '{self.path}' holds a damaged setting ({exc}): restore it from a backup"
            ) from None

    @_translated
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

    @_translated
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

    @_translated
    def server_peer_rows(self) -> list[tuple]:
        """Enabled peers as (name, public key, PSK, address4, address6, routed networks, keepalive) text,
        for rendering the server config without a model object per peer."""
        rows = self._conn.execute(
            "SELECT name, public_key, preshared_key, address4, address6, server_allowed_ips, keepalive "
            "FROM peers WHERE enabled = 1 ORDER BY id"
        ).fetchall()
        return [(*row[:5], json.loads(row[5]), row[6]) for row in rows]

    @_translated
    def peer_rows(self, names: Iterable[str] | None = None) -> Iterator[PeerRow]:
        """Peers as checked text, in store order; the named ones (those that exist) when `names` is given."""
        if names is None:
            cursor = self._conn.execute(f"SELECT {_ROW_COLUMNS} FROM peers ORDER BY id")  # noqa: S608 - constant
            yield from map(self._row, cursor)
            return
        wanted = sorted(set(names))
        found: list[tuple[int, PeerRow]] = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ", ".join("?" * len(chunk))  # only "?" marks: every name travels as a parameter
            query = f"SELECT id, {_ROW_COLUMNS} FROM peers WHERE name IN ({marks})"  # noqa: S608
            found += [(row[0], self._row(row[1:])) for row in self._conn.execute(query, chunk)]
        yield from (row for _, row in sorted(found))

    def _row(self, row: tuple) -> PeerRow:
        name, public, psk, address4, address6, routed, keepalive, enabled, expires = row
        networks: tuple[str, ...] = ()
        if routed != "[]":
            try:
                networks = tuple(json.loads(routed))
            except (ValueError, TypeError):
                networks = (None,)  # type: ignore[assignment]
        reason = _row_problem(name, public, psk, address4, address6, networks, keepalive)
        if reason is not None:
            raise StoreError(f"the store '{self.path}' holds a damaged peer '{show_value(name)}' ({reason}): restore "
                             f"it from a backup")
        return PeerRow(name, public, psk, address4, address6, networks, keepalive or None, bool(enabled), expires)

    @_translated
    def status_rows(self, names: Iterable[str] | None = None) -> Iterator[StatusRow]:
        columns = "SELECT id, name, public_key, address4, address6, enabled, expires_at FROM peers"
        if names is None:
            rows: Iterable[tuple] = self._conn.execute(f"{columns} ORDER BY id")  # noqa: S608 - constant
        else:
            wanted = sorted(set(names))
            found: list[tuple] = []
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                marks = ", ".join("?" * len(chunk))  # only "?" marks: every name travels as a parameter
                found += self._conn.execute(f"{columns} WHERE name IN ({marks})", chunk).fetchall()  # noqa: S608
            rows = sorted(found)
        for _, name, public, address4, address6, enabled, expires_at in rows:
            if not (isinstance(name, str) and isinstance(public, str) and isinstance(address4, str)
                    and (address6 is None or isinstance(address6, str))
                    and (expires_at is None or (isinstance(expires_at, (int, float)) and expires_at == expires_at))
                    and _SAFE_STATUS.fullmatch(f"{name}\t{public}\t{address4}\t{address6 or ''}")):
                raise StoreError(f"the store holds a damaged peer '{show_value(name)}'", str(self.path),
                                 RESTORE_HINT)
            yield StatusRow(name, public, address4, address6, bool(enabled),
                            None if expires_at is None else float(expires_at))

    @_translated
    def expired_names(self, now: float) -> list[str]:
        return [row[0] for row in self._conn.execute(
            "SELECT name FROM peers WHERE expires_at IS NOT NULL AND expires_at <= ? AND enabled = 1", (now,))]

    @_translated
    def next_expiry(self, now: float) -> float | None:
        row = self._conn.execute("SELECT MIN(expires_at) FROM peers WHERE expires_at IS NOT NULL AND expires_at > ? "
                                 "AND enabled = 1", (now,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- the log of changed peers, and where peers were last seen -------------------------------------

    @_translated
    def last_peer_change(self) -> int:
        if self._schema_version() < 4:
            return 0
        # AUTOINCREMENT keeps the last position in sqlite_sequence, also once the log was pruned.
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'peer_changes'").fetchone()
        return int(row[0]) if row is not None else 0

    @_translated
    def peer_changes(self, after: int) -> tuple[list[str], int]:
        if self._schema_version() < 4:
            return [], after
        rows = self._conn.execute("SELECT seq, name FROM peer_changes WHERE seq > ? ORDER BY seq", (after,)).fetchall()
        if not rows:
            return [], after
        return list(dict.fromkeys(name for _, name in rows)), int(rows[-1][0])

    @_translated
    def prune_peer_changes(self, upto: int) -> None:
        with self.transaction():
            self._conn.execute("DELETE FROM peer_changes WHERE seq <= ?", (upto,))

    @_translated
    def endpoints(self) -> dict[str, tuple[str, int]]:
        if self._schema_version() < 4:
            return {}
        return {public: (endpoint, int(seen)) for public, endpoint, seen in self._conn.execute(
            "SELECT public_key, endpoint, seen_at FROM peer_endpoints")
            if isinstance(public, str) and _SAFE_KEY.fullmatch(public) and isinstance(endpoint, str)
            and _SAFE_ENDPOINT.fullmatch(endpoint)}

    @_translated
    def save_endpoints(self, seen: Iterable[tuple[str, str, int]]) -> None:
        rows = [(public, endpoint, int(at)) for public, endpoint, at in seen
                if _SAFE_KEY.fullmatch(public) and _SAFE_ENDPOINT.fullmatch(endpoint)]
        if not rows:
            return
        with self.transaction():
            self._conn.executemany(
                "INSERT INTO peer_endpoints(public_key, endpoint, seen_at) VALUES(?, ?, ?) ON CONFLICT(public_key) "
                "DO UPDATE SET endpoint=excluded.endpoint, seen_at=excluded.seen_at", rows)

    @_translated
    def prune_endpoints(self) -> None:
        """Forget the endpoints of peers removed (or re-keyed) since they were seen."""
        if self._schema_version() < 4:
            return
        with self.transaction():
            self._conn.execute("DELETE FROM peer_endpoints WHERE public_key NOT IN (SELECT public_key FROM peers)")

    @_translated
    def peer(self, name: str) -> Peer:
        row = self._conn.execute(f"SELECT {_PEER_COLUMNS} FROM peers WHERE name=?", (name,)).fetchone()  # noqa: S608
        if row is None:
            raise NotFoundError(f"no peer named '{name}': see 'bulwark peer list'")
        return self._peer(row)

    @_translated
    def has_peer(self, name: str) -> bool:
        return self._conn.execute("SELECT 1 FROM peers WHERE name=?", (name,)).fetchone() is not None

    @_translated
    def peers_with_networks(self) -> list[Peer]:
        rows = self._conn.execute(
            f"SELECT {_PEER_COLUMNS} FROM peers WHERE allowed_ips IS NOT NULL "  # noqa: S608 - constant
            "OR server_allowed_ips != '[]' ORDER BY id").fetchall()
        return [self._peer(row) for row in rows]

    @_translated
    def peer_names(self) -> list[str]:
        return [row[0] for row in self._conn.execute("SELECT name FROM peers ORDER BY id")]

    @_translated
    def peer_count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM peers").fetchone()[0])

    @_translated
    def peer_summaries(self, query: PeerQuery) -> tuple[list[PeerSummary], int]:
        """Filtered, sorted and paged in SQL; rows checked with two whole-value patterns (a damaged row is a
        StoreError naming the peer, as everywhere) but never parsed into key or address objects."""
        # Only constant SQL text is built here; every value travels as a parameter.
        where: list[str] = []
        params: list[object] = []
        if query.search:
            pattern = "%" + query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(name LIKE ? ESCAPE '\\' OR address4 LIKE ? ESCAPE '\\' OR address6 LIKE ? ESCAPE '\\' "
                         "OR public_key LIKE ? ESCAPE '\\')")
            params += [pattern] * 4
        if query.enabled is not None:
            where.append("enabled = ?")
            params.append(int(query.enabled))
        if query.owner is not None:
            where.append("owner = ?")
            params.append(query.owner)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = {"created": "id", "name": "name", "address": "address4_num", "owner": "owner, name",
                 "expires": "expires_at IS NULL, expires_at"}[query.sort] + (" DESC" if query.descending else "")
        total = int(self._conn.execute(f"SELECT COUNT(*) FROM peers{clause}", params).fetchone()[0])  # noqa: S608
        limit = -1 if query.limit is None else query.limit
        columns = ("name, public_key, address4, address6, allowed_ips, server_allowed_ips, keepalive, enabled, "
                   "private_key IS NOT NULL, created_at, owner, expires_at")
        sql = f"SELECT {columns} FROM peers{clause} ORDER BY {order} LIMIT ? OFFSET ?"  # noqa: S608
        rows = self._conn.execute(sql, [*params, limit, query.offset]).fetchall()
        return [self._summary(row) for row in rows], total

    def _summary(self, row: tuple) -> PeerSummary:
        (name, public, address4, address6, allowed, routed, keepalive, enabled, has_private, created, owner,
         expires) = row
        if not (isinstance(name, str) and isinstance(public, str) and isinstance(address4, str)
                and _SAFE_SUMMARY.fullmatch(f"{name}\t{public}\t{address4}")):
            raise StoreError(f"the store holds a damaged peer '{show_value(name)}'", str(self.path), RESTORE_HINT)
        try:
            allowed_list = None if allowed is None else tuple(str(n) for n in json.loads(allowed))
            routed_list = () if routed == "[]" else tuple(str(n) for n in json.loads(routed))
        except (ValueError, TypeError):
            raise StoreError(f"the store holds a damaged peer '{name}'", str(self.path), RESTORE_HINT) from None
        if (address6 is not None and not (isinstance(address6, str) and _SAFE_ADDRESS6.fullmatch(address6))) or \
                not all(_SAFE_NETWORK.fullmatch(n) for n in (*(allowed_list or ()), *routed_list)):
            raise StoreError(f"the store holds a damaged peer '{name}'", str(self.path), RESTORE_HINT)
        return PeerSummary(name, public, address4, address6, allowed_list, routed_list, keepalive, bool(enabled),
                           bool(has_private), float(created), owner, expires)

    @_translated
    def insert_peer(self, peer: Peer) -> None:
        """Insert a peer whose addresses are already allocated (see allocate)."""
        now = time.time()
        try:
            with self.transaction():
                self._conn.execute(
                    f"INSERT INTO peers({_PEER_COLUMNS}, address4_num, created_at, updated_at) "
                    f"VALUES({', '.join('?' * _PEER_COLUMN_COUNT)}, ?, ?, ?)",
                    (*_peer_to_row(peer), int(peer.address4), now, now),
                )
                self._bump()
        except sqlite3.IntegrityError as exc:
            raise ConflictError(_conflict_message(peer, exc)) from None

    @_translated
    def update_peer(self, peer: Peer) -> None:
        """Replace the stored fields of the peer with the same name."""
        with self.transaction():
            cursor = self._conn.execute(
                "UPDATE peers SET public_key=?, private_key=?, preshared_key=?, address4=?, address6=?, "
                "allowed_ips=?, server_allowed_ips=?, keepalive=?, enabled=?, owner=?, expires_at=?, "
                "address4_num=?, updated_at=? WHERE name=?",
                (*_peer_to_row(peer)[1:], int(peer.address4), time.time(), peer.name),
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no peer named '{peer.name}': see 'bulwark peer list'")
            self._bump()

    @_translated
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

    @_translated
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

    @_translated
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

    @_translated
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


for _name, _method in vars(ControlPlane).items():
    if callable(_method) and not _name.startswith("_") and _name != "transaction":
        setattr(SQLiteStore, _name, _translated(_method))


# A constant column list, interpolated into queries (never user input).
_PEER_COLUMNS = (
    "name, public_key, private_key, preshared_key, address4, address6, allowed_ips, "
    "server_allowed_ips, keepalive, enabled, owner, expires_at"
)
_PEER_COLUMN_COUNT = 12
# What the data plane reads (PeerRow), also constant.
_ROW_COLUMNS = ("name, public_key, preshared_key, address4, address6, server_allowed_ips, keepalive, enabled, "
                "expires_at")


def _nets_to_json(nets) -> str | None:
    return None if nets is None else json.dumps([str(n) for n in nets])


def _nets_from_json(text: str | None):
    # The strict parser, not ipaddress: a damaged or planted row may hold a zone id ('fd00::%x\n...'), which
    # ipaddress.ip_network accepts; here it makes the row damaged (a StoreError), never a value.
    return None if text is None else tuple(parse_network(n, "stored network") for n in json.loads(text))


def _address(text: object, version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = parse_ip_address(text, "stored address")
    if address.version != version:
        raise ValueError(f"not an IPv{version} address: {text!r}")
    return address


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
        peer.owner,
        peer.expires_at,
    )


def _peer_from_row(row: tuple) -> Peer:
    name, public, private, psk, addr4, addr6, allowed, server_allowed, keepalive, enabled, owner, expires = row
    return Peer(
        name=name,
        public_key=PublicKey.from_base64(public),
        private_key=PrivateKey.from_base64(private) if private else None,
        preshared_key=PresharedKey.from_base64(psk) if psk else None,
        address4=_address(addr4, 4),  # type: ignore[arg-type]
        address6=_address(addr6, 6) if addr6 else None,  # type: ignore[arg-type]
        allowed_ips=_nets_from_json(allowed),
        server_allowed_ips=_nets_from_json(server_allowed) or (),
        keepalive=keepalive,
        enabled=bool(enabled),
        owner=owner,
        expires_at=expires,
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
            value = ipaddress.IPv4Network(parse_network(value, "stored subnet"))
        elif key == "subnet6" and value is not None:
            value = ipaddress.IPv6Network(parse_network(value, "stored IPv6 subnet"))
        elif key in _NETWORK_LIST_FIELDS:
            value = tuple(parse_network(n, "stored network") for n in value)
        values[key] = value
    return Settings(**values)


# SQLite's own files beside the store: the write-ahead log, its shared-memory index, a rollback journal.
_SIDE_FILES = ("-wal", "-shm", "-journal")


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _writable(path: Path, exists: bool) -> bool:
    """False on a read-only file system or a file or folder we may not write (access() knows both)."""
    folder_ok = os.access(path.parent, os.W_OK)
    return folder_ok and (not exists or os.access(path, os.W_OK))


def _connect(path: Path, *, create: bool, read_only: bool, timeout: float) -> tuple[sqlite3.Connection, bool]:
    """A connection, read-write when the file and folder allow it, else read-only (`mode=ro`, and `immutable`
    when the folder cannot even hold the WAL's shared-memory file: nobody can write there either). A writable
    folder that fails (a full disk) is reported as such, never taken for a read-only one."""
    uri = path.absolute().as_uri()
    read_only = read_only or not _writable(path, exists=not create)
    if read_only and create:
        raise StoreError("cannot create the store: the folder is read-only", str(path.parent),
                         "pick a writable folder", code=ErrorCode.READ_ONLY)
    attempts = [(f"{uri}?mode=ro", True), (f"{uri}?mode=ro&immutable=1", True)] if read_only else \
        [(f"{uri}?mode={'rwc' if create else 'rw'}", False)]
    last: sqlite3.Error | None = None
    for target, ro in attempts:
        conn = None
        try:
            conn = sqlite3.connect(target, uri=True, timeout=timeout, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn, ro
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            last = exc
    assert last is not None  # noqa: S101 - the loop ran at least once
    raise translate(last, path)
