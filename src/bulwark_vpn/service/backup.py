"""`backup` and `restore`: the whole store in one file, and back (the file format: `bulwark_vpn.backupfile`).

A backup is taken from a read-only connection with SQLite's backup API: consistent while the gateway runs and
other commands add peers, and it never waits for the folder lock. A restore checks the file before anything is
touched (format, checksum, schema, every value through the strict parsers), then replaces the store through
`service.replace.install_store`: a running gateway and a store in use are refused (unless forced), a copy of the
replaced store is kept, every file is rendered again. The restored store is a new gateway (a new gateway id): the
gateway it was taken from may still run elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulwark_vpn import backupfile
from bulwark_vpn.backupfile import Manifest, Passphrase, bad
from bulwark_vpn.errors import BulwarkError, ErrorCode, InputError, StoreError
from bulwark_vpn.fsutil import PRIVATE_FILE, disk_error
from bulwark_vpn.service.audit import record
from bulwark_vpn.service.context import Context
from bulwark_vpn.service.replace import install_store, private_tempdir
from bulwark_vpn.store import SCHEMA_VERSION, STORE_NAME, SQLiteStore, Store

log = logging.getLogger("bulwark_vpn")


# -- requests and results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupRequest:
    """Where to write the backup (None: `bulwark-backup-<UTC time>.tar.gz[.age]` in the current folder) and the
    passphrase that encrypts it (None: not encrypted)."""

    out: Path | None = None
    passphrase: Passphrase | None = None


@dataclass(frozen=True)
class BackupResult:
    path: Path
    encrypted: bool
    manifest: Manifest
    bytes_written: int
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "encrypted": self.encrypted, "manifest": self.manifest.to_dict(),
                "bytes": self.bytes_written, "seconds": dict(self.seconds)}


@dataclass(frozen=True)
class RestoreRequest:
    path: Path
    passphrase: Passphrase | None = None
    force: bool = False


@dataclass(frozen=True)
class RestoreResult:
    path: Path
    manifest: Manifest
    config_dir: Path
    peer_count: int
    migrated_from: int | None  # the backup's schema version when it was older than this Bulwark's
    replaced_copy: Path | None
    files_written: int
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "manifest": self.manifest.to_dict(), "config_dir": str(self.config_dir),
                "peer_count": self.peer_count, "migrated_from": self.migrated_from,
                "replaced_copy": str(self.replaced_copy) if self.replaced_copy else None,
                "files_written": self.files_written, "seconds": dict(self.seconds)}


# -- backup -------------------------------------------------------------------------------------------------


def _snapshot(store: Store, target: Path) -> tuple[int, int, str | None]:
    """A consistent copy of the store in `target` as one self-contained file (no WAL); returns its schema
    version, peer count and server public key, read from the copy itself."""
    store.snapshot(target)
    conn = sqlite3.connect(target, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        schema = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        peers = int(conn.execute("SELECT COUNT(*) FROM peers").fetchone()[0])
        row = conn.execute("SELECT value FROM meta WHERE key='server_private_key'").fetchone()
    finally:
        conn.close()
    public = None
    if row is not None:
        from bulwark_vpn.keys import PrivateKey

        public = PrivateKey.from_base64(row[0]).public_key().to_base64()
    return schema, peers, public


def archive_of(store: Store) -> bytes:
    """The store as an unencrypted backup file's bytes (also the copy a restore keeps of what it replaces)."""
    with private_tempdir() as tmp:
        database = Path(tmp) / STORE_NAME
        schema, peers, public = _snapshot(store, database)
        manifest = backupfile.new_manifest(database, schema_version=schema, peer_count=peers,
                                           server_public_key=public)
        return backupfile.build_archive(database, manifest)


def default_backup_name(encrypted: bool, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"bulwark-backup-{stamp}.tar.gz" + (".age" if encrypted else "")


@dataclass(frozen=True)
class BackupData:
    """A backup file's bytes, for a caller that sends them rather than writing them (the HTTP API)."""

    data: bytes
    encrypted: bool
    manifest: Manifest
    filename: str
    seconds: dict[str, float]


def backup_data(ctx: Context, passphrase: Passphrase | None = None) -> BackupData:
    """The whole store as one backup file's bytes (encrypted with `passphrase` when given). Recorded in the audit
    log: it holds every key of the team."""
    ctx.actor.require_admin()  # every key of the team goes in or out: admins only
    encrypted = passphrase is not None
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with private_tempdir() as tmp, ctx.open_store(read_only=True) as store:
        if not store.is_initialized():
            raise InputError("nothing to back up: the server is not set up", str(ctx.config_dir),
                             "run 'bulwark init' first")
        database = Path(tmp) / STORE_NAME
        schema, peers, public = _snapshot(store, database)
        seconds["snapshot"] = time.perf_counter() - start
        mark = time.perf_counter()
        manifest = backupfile.new_manifest(database, schema_version=schema, peer_count=peers,
                                           server_public_key=public)
        data = backupfile.build_archive(database, manifest)
        seconds["archive"] = time.perf_counter() - mark
    if passphrase is not None:
        mark = time.perf_counter()
        data = backupfile.encrypt(data, passphrase)
        seconds["encrypt"] = time.perf_counter() - mark
    with contextlib.suppress(BulwarkError), ctx.open_store() as store, store.transaction():
        record(ctx, store, "backup", detail=f"{peers} peer(s), {'encrypted' if encrypted else 'not encrypted'}")
    return BackupData(data, encrypted, manifest, default_backup_name(encrypted), seconds)


def backup_store(ctx: Context, request: BackupRequest) -> BackupResult:
    """Write one backup file of the whole store (0600, atomic, never through a link)."""
    start = time.perf_counter()
    backup = backup_data(ctx, request.passphrase)
    out = (request.out or Path(backup.filename)).absolute()
    seconds = dict(backup.seconds)
    mark = time.perf_counter()
    backupfile.write_private(out, backup.data)
    seconds["write"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - start
    log.debug("bulwark: backup of %d peer(s) written to %s", backup.manifest.peer_count, out)
    return BackupResult(out, backup.encrypted, backup.manifest, len(backup.data), seconds)


def backup_is_encrypted(path: Path) -> bool:
    """True when the file starts like an age file (the client then asks for the passphrase)."""
    try:
        with open(path, "rb") as fh:
            return backupfile.is_encrypted(fh.read(64))
    except OSError:
        return False


# -- restore ------------------------------------------------------------------------------------------------


def _unpack(request: RestoreRequest) -> tuple[bytes, Manifest]:
    """The archive's bytes (decrypted) and its manifest, checked without writing anything."""
    data = backupfile.read_source(request.path)
    if backupfile.is_encrypted(data):
        data = backupfile.decrypt(request.path, data, request.passphrase)
    return data, _check_archive(request.path, data)


def _check_archive(path: Path, archive: bytes) -> Manifest:
    class _Sink:
        name = "(checked, not written)"

        def write(self, chunk: bytes) -> int:
            return len(chunk)

    manifest = backupfile.read_archive(path, archive, _Sink())  # type: ignore[arg-type]
    if manifest.schema_version > SCHEMA_VERSION:
        raise bad(path, f"it holds a store of schema version {manifest.schema_version}, newer than this "
                  f"Bulwark's ({SCHEMA_VERSION})", "upgrade Bulwark to restore it", code=ErrorCode.STORE_NEWER)
    return manifest


def _open_restored(path: Path, archive: bytes, manifest: Manifest, tmp_dir: Path) -> SQLiteStore:
    """Write the snapshot into the temp folder and open it as a store (migrated when older)."""
    target = tmp_dir / STORE_NAME
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as out:
            backupfile.read_archive(path, archive, out)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise disk_error(exc, tmp_dir.parent) from None
    _check_raw(path, target, manifest)
    try:
        return SQLiteStore.open(tmp_dir, create=False)
    except StoreError as exc:
        if exc.code == ErrorCode.STORE_NEWER:
            raise bad(path, "it holds a store newer than this Bulwark", "upgrade Bulwark to restore it",
                      code=ErrorCode.STORE_NEWER) from None
        if exc.code in (ErrorCode.DISK_FULL, ErrorCode.READ_ONLY):
            raise
        raise bad(path, f"its snapshot is not a readable Bulwark store ({exc.message})") from None


def _check_raw(path: Path, database: Path, manifest: Manifest) -> None:
    """The manifest's claims against the snapshot itself (read-only, before any migration)."""
    try:
        conn = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
        try:
            schema = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            peers = conn.execute("SELECT COUNT(*) FROM peers").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise bad(path, f"its snapshot is not a readable Bulwark store ({exc})") from None
    if schema is None or str(schema[0]) != str(manifest.schema_version):
        raise bad(path, "the manifest's schema version does not match the snapshot", "it was altered")
    if peers is None or int(peers[0]) != manifest.peer_count:
        raise bad(path, "the manifest's peer count does not match the snapshot", "it was altered")


def verify_content(path: Path, store: Store, manifest: Manifest) -> None:
    """Every value of the restored store through the strict parsers: a backup may come from anywhere, and what
    is in it is rendered into files that wg-quick runs."""
    from bulwark_vpn.values import parse_ip_address, parse_network

    try:
        key = store.require_server_key()
        if manifest.server_public_key is not None and key.public_key().to_base64() != manifest.server_public_key:
            raise bad(path, "the manifest's server key does not match the snapshot", "it was altered")
        settings = store.settings()
        for net in (settings.subnet4, *((settings.subnet6,) if settings.subnet6 else ()), *settings.allowed_ips):
            parse_network(str(net), "a network in the settings")
        for peer in store.peers():
            if peer.address6 is not None:
                parse_ip_address(str(peer.address6), f"address of peer {peer.name}")
            for net in (*(peer.allowed_ips or ()), *peer.server_allowed_ips):
                parse_network(str(net), f"AllowedIPs of peer {peer.name}")
        for row in store.server_peer_rows():
            name, _public, _psk, address4, address6, routed, _keepalive = row
            parse_ip_address(address4, f"address of peer {name}")
            if address6 is not None:
                parse_ip_address(address6, f"address of peer {name}")
            for net in routed:
                parse_network(net, f"routed network of peer {name}")
    except (InputError, StoreError) as exc:
        if isinstance(exc, InputError) and exc.message.startswith("cannot restore"):
            raise
        raise bad(path, f"it holds a damaged or unsafe value ({exc.line()})", "it was altered: use another "
                  "backup") from None


def restore_store(ctx: Context, request: RestoreRequest) -> RestoreResult:
    """Replace the folder's store by the backup's (see the module docstring)."""
    ctx.actor.require_admin()  # every key of the team goes in or out: admins only
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    archive, manifest = _unpack(request)
    seconds["check"] = time.perf_counter() - start
    state: dict[str, Any] = {}

    def open_new(tmp_dir: Path) -> Store:
        mark = time.perf_counter()
        store = _open_restored(request.path, archive, manifest, tmp_dir)
        state["schema_after"] = store.schema_version()
        seconds["extract"] = time.perf_counter() - mark
        return store

    def build(store: Store) -> None:
        mark = time.perf_counter()
        verify_content(request.path, store, manifest)
        store.reset_identity()  # type: ignore[attr-defined]
        seconds["verify"] = time.perf_counter() - mark
        state["render_start"] = time.perf_counter()

    installed = install_store(ctx, build, force=request.force, action="restore", open_new=open_new)
    seconds["render"] = time.perf_counter() - state.get("render_start", start)
    seconds["total"] = time.perf_counter() - start
    migrated = manifest.schema_version if manifest.schema_version < SCHEMA_VERSION else None
    return RestoreResult(request.path, manifest, ctx.config_dir, installed.peer_count, migrated,
                         installed.replaced_copy, installed.files_written, seconds)


def manifest_json(manifest: Manifest) -> str:
    return json.dumps(manifest.to_dict(), indent=2, sort_keys=True)
