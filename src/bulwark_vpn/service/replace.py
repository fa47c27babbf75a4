"""Replacing a folder's whole store (restore, import), all or nothing, through the render journal.

`install_store` takes the folder lock, refuses a running gateway and (without `force`) a store in use, builds the
new store in a private temp folder inside the config folder, records in it the files it makes stale (every file,
and the folders of peers it no longer has), renders and stages them, keeps a copy of the replaced store as a
backup file in `backups/`, then renames the new store into place and the staged files over theirs. A failure
before that rename (bad input, a full disk) leaves the folder byte for byte as it was; a crash after it leaves
the journal in the new store, so the next command finishes the files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bulwark_vpn.errors import ConflictError, ErrorCode, StoreError
from bulwark_vpn.fsutil import PRIVATE_DIR, PRIVATE_FILE, TEMP_PREFIX, SafeFolder, Staged, disk_error
from bulwark_vpn.service.context import LOCK_NAME, Context, folder_lock
from bulwark_vpn.service.files import remove_item, stage_items
from bulwark_vpn.store import RENDER_ALL_PEERS, RENDER_SERVER, STORE_NAME, SQLiteStore, Store

log = logging.getLogger("bulwark_vpn")

COPIES = "backups"
REPLACE_PREFIX = f"{TEMP_PREFIX}replace-"


@dataclass(frozen=True)
class Installed:
    """What replacing the store did."""

    peer_count: int
    replaced_copy: Path | None  # the copy of the store that was replaced (a backup file), if there was one
    files_written: int


def running_here(ctx: Context, store: Store | None) -> str | None:
    """The interface of a live supervisor serving this folder (by its store's id, or its folder), or None."""
    from bulwark_vpn.dataplane.gateway import RuntimeState

    gateway_id = store.gateway_id() if store is not None else None
    try:
        names = [p.stem for p in ctx.run_dir.glob("*.json")]
    except OSError:
        return None
    for name in names:
        state = RuntimeState.load(ctx.run_dir, name)
        if state is None or not state.supervisor_alive():
            continue
        if state.serves(ctx.config_dir, gateway_id) or Path(state.config_dir) == ctx.config_dir.resolve():
            return state.interface
    return None


def _open_old(ctx: Context) -> tuple[Store | None, StoreError | None]:
    if not ctx.has_store():
        return None, None
    try:
        return ctx.open_store(), None
    except StoreError as exc:
        if exc.code in (ErrorCode.STORE_LOCKED, ErrorCode.READ_ONLY, ErrorCode.DISK_FULL):
            raise
        return None, exc  # damaged, empty or newer: replaceable with force (a raw copy is kept)


def _in_use(folder: SafeFolder, old: Store | None, damaged: StoreError | None) -> str | None:
    """Why the folder's current content would be lost, or None when there is nothing to lose."""
    if damaged is not None:
        return f"its store cannot be opened ({damaged.message})"
    if old is not None and (old.is_initialized() or old.peer_count()):
        return f"it already holds a server with {old.peer_count()} peer(s)"
    from bulwark_vpn.adopt import find_linuxserver_config

    if find_linuxserver_config(folder) is not None:
        return "it holds a wg_confs/*.conf not adopted yet"
    return None


def _copy_name(now: float) -> str:
    return f"{COPIES}/replaced-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{os.urandom(2).hex()}"


def _copy_of_old(ctx: Context, folder: SafeFolder, old: Store | None) -> tuple[str, bytes] | None:
    """The replaced store as a backup file (restorable with `bulwark restore`), or its raw bytes when damaged."""
    name = _copy_name(time.time())
    if old is not None:
        from bulwark_vpn.service.backup import archive_of

        return f"{name}.tar.gz", archive_of(old)
    try:
        return f"{name}-{STORE_NAME}", folder.read_bytes(STORE_NAME)
    except FileNotFoundError:
        return None


def install_store(ctx: Context, build: Callable[[Store], None], *, force: bool, action: str,
                  open_new: Callable[[Path], Store] | None = None) -> Installed:
    """Replace the folder's store by a new one that `build` fills (see the module docstring). `open_new` opens
    the new store in the temp folder it is given (restore writes its snapshot there first); by default a new
    empty store is created."""
    config_dir = ctx.config_dir
    created = [p for p in (config_dir, config_dir / LOCK_NAME) if not os.path.lexists(p)]
    try:
        folder = SafeFolder.open(config_dir, create=True)
    except OSError as exc:
        raise disk_error(exc, config_dir) from None
    try:
        with folder_lock(folder, ctx.lock_timeout):
            return _install(ctx, folder, build, force=force, action=action, open_new=open_new)
    except BaseException:
        folder.close()
        _remove_created(config_dir, created)
        raise
    finally:
        folder.close()


def _remove_created(config_dir: Path, created: list[Path]) -> None:
    if config_dir / LOCK_NAME in created:
        with contextlib.suppress(OSError):
            (config_dir / LOCK_NAME).unlink()
    if config_dir in created:
        with contextlib.suppress(OSError):
            config_dir.rmdir()


def _install(ctx: Context, folder: SafeFolder, build: Callable[[Store], None], *, force: bool,
             action: str, open_new: Callable[[Path], Store] | None) -> Installed:
    _remove_leftovers(folder)
    old, damaged = _open_old(ctx)
    try:
        iface = running_here(ctx, old)
        if iface is not None:
            raise ConflictError(f"cannot {action} into the folder of a running gateway", str(ctx.config_dir),
                                f"it runs on '{iface}': take it down first ('bulwark down'), or {action} into "
                                f"another folder", code=ErrorCode.ALREADY_RUNNING)
        reason = _in_use(folder, old, damaged)
        if reason is not None and not force:
            raise ConflictError(f"cannot {action} into a folder in use: {reason}", str(ctx.config_dir),
                                f"give another folder, or --force to replace it (a copy of what is replaced is "
                                f"kept in {COPIES}/)")
        old_folders, old_iface = _old_layout(old)
        tmp_name = f"{REPLACE_PREFIX}{uuid.uuid4().hex[:8]}"
        os.mkdir(tmp_name, PRIVATE_DIR, dir_fd=folder.fd)
        tmp_dir = ctx.config_dir / tmp_name
        staged: Staged | None = None
        copy_written: str | None = None
        entries_before = set(folder.listdir())
        try:
            new = open_new(tmp_dir) if open_new is not None else \
                SQLiteStore.open(tmp_dir, create=True, lock_timeout=ctx.lock_timeout)
            try:
                build(new)
                settings = new.settings()
                new_folders = {p.folder_name for p in new.peers()}
                items = [RENDER_SERVER, RENDER_ALL_PEERS]
                items += [remove_item(f) for f in sorted(old_folders - new_folders)]
                if old_iface is not None and old_iface != settings.interface:
                    items.append(remove_item(f"wg_confs/{old_iface}.conf"))
                new.add_pending(items)
                staged = stage_items(folder, new, items)
                peer_count = new.peer_count()
                written = len(staged.pending)
            finally:
                new.close()
            copy = _copy_of_old(ctx, folder, old) if (old is not None or damaged is not None) else None
            if copy is not None:
                folder.write_many([(copy[0], copy[1], PRIVATE_FILE)])
                copy_written = copy[0]
            if old is not None:
                _checkpoint_and_close(old)
                old = None
            _swap(folder, tmp_name)
        except BaseException:
            if staged is not None:
                staged.abort()
            if copy_written is not None:
                with contextlib.suppress(OSError):
                    folder.remove_file(copy_written)
            shutil.rmtree(tmp_name, dir_fd=folder.fd, ignore_errors=True)
            _remove_new_empty_dirs(folder, entries_before)
            raise
        shutil.rmtree(tmp_name, dir_fd=folder.fd, ignore_errors=True)
        # The new store is in place with its journal: from here a crash heals at the next command.
        staged.commit()
        with ctx.open_store() as store:
            store.clear_pending(items)
        log.debug("bulwark: %s: %d peer(s), %d file(s) written in %s", action, peer_count, written, ctx.config_dir)
        return Installed(peer_count, ctx.config_dir / copy_written if copy_written else None, written)
    finally:
        if old is not None:
            old.close()


def _remove_new_empty_dirs(folder: SafeFolder, before: set[str]) -> None:
    """Folders that staging created for files it then took back (a failed restore leaves no trace)."""
    for name in set(folder.listdir()) - before:
        info = folder.lstat(name)
        if info is not None and stat.S_ISDIR(info.st_mode):
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=folder.fd)


def _old_layout(old: Store | None) -> tuple[set[str], str | None]:
    if old is None or not old.is_initialized():
        return set(), None
    return {p.folder_name for p in old.peers()}, old.settings().interface


def _checkpoint_and_close(store: Store) -> None:
    """Fold the old store's write-ahead log into it and close it, so no WAL of it is left beside the new one."""
    conn = getattr(store, "_conn", None)
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def _swap(folder: SafeFolder, tmp_name: str) -> None:
    """Rename the new store over the old one (same folder, one rename), then sync the folder."""
    fd = folder.fd
    try:
        # The old store is closed and its copy made: its WAL must not be read as the new store's.
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{STORE_NAME}{suffix}", dir_fd=fd)
        tmp_fd = os.open(tmp_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        try:
            os.replace(STORE_NAME, STORE_NAME, src_dir_fd=tmp_fd, dst_dir_fd=fd)
        finally:
            os.close(tmp_fd)
        os.fsync(fd)
    except OSError as exc:
        raise disk_error(exc, folder.path / STORE_NAME) from None


def _remove_leftovers(folder: SafeFolder) -> None:
    """Temp folders of a replace that crashed before its rename (they may hold keys)."""
    for name in folder.listdir():
        if name.startswith(REPLACE_PREFIX):
            info = folder.lstat(name)
            if info is not None and stat.S_ISDIR(info.st_mode):
                shutil.rmtree(name, dir_fd=folder.fd, ignore_errors=True)


def private_tempdir() -> tempfile.TemporaryDirectory[str]:
    """A 0700 temp folder outside the config folder (snapshots before they are archived)."""
    tmp = tempfile.TemporaryDirectory(prefix="bulwark-")
    os.chmod(tmp.name, PRIVATE_DIR)
    return tmp
