"""Where an operation runs and how it holds the config folder: `Context`, the folder lock, and the write path
every mutation takes (journal, stage, commit, rename).

A mutation:
1. takes the folder lock (bounded wait; a crashed holder is noticed from the lock file's content);
2. finishes whatever an earlier command left pending (the render journal), and after a crash removes leftover
   temp files, so the folder always catches up with the store before new work;
3. in ONE store transaction: changes the store, records the files the change makes stale, renders them and
   writes them as temp files (so a full disk, a QR code that cannot be made, any failure rolls everything
   back: nothing changed);
4. after the commit: renames the temps over their targets and clears the journal items.
A crash between 3 and 4 leaves the journal items in the store: the next command (or `up`) renders them again.

One item is deferred instead: the server config (`wg_confs/IFACE.conf`) holds every peer, so once it is large a
peer change records it in the journal (in its own transaction, as above) but does not render it; a background
renderer does, a moment later, for however many changes came meanwhile (see `service.files`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from bulwark_vpn.errors import ErrorCode, StoreError, show_value
from bulwark_vpn.fsutil import PRIVATE_FILE, SafeFolder, disk_error
from bulwark_vpn.service.actors import ROOT, Actor
from bulwark_vpn.store import DEFAULT_LOCK_TIMEOUT, STORE_NAME, Store, open_store

LOCK_NAME = ".bulwark.lock"
DEFAULT_RUN_DIR = Path("/run/bulwark")


@dataclass(frozen=True)
class Context:
    """What every operation needs besides its request: the config folder, the runtime folder, the environment it
    may read linuxserver variables from, and how long to wait for a busy folder. Built once by a client (the
    CLI from its flags, the web app from its settings): nothing here reads the process environment by itself."""

    config_dir: Path
    run_dir: Path = DEFAULT_RUN_DIR
    environ: Mapping[str, str] = field(default_factory=dict)
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    # Progress lines ("[#] ip link add ..."); None logs them.
    log: Callable[[str], None] | None = None
    # Who asks (the CLI: an admin; the API: a session's user or a token) and the clock (tests move it).
    actor: Actor = ROOT
    clock: Callable[[], float] = time.time
    # A long-running process (the API) keeps one open store per thread instead of opening one per call.
    stores: StoreCache | None = None

    def as_actor(self, actor: Actor) -> Context:
        return replace(self, actor=actor)

    def open_store(self, *, create: bool = False, read_only: bool = False) -> Store:
        if self.stores is not None and not create:
            return self.stores.get(self)
        return open_store(self.config_dir, create=create, read_only=read_only, lock_timeout=self.lock_timeout)

    def has_store(self) -> bool:
        return os.path.lexists(self.config_dir / STORE_NAME)


class _Kept:
    """A store handed out by a StoreCache: `close()` and leaving a `with` block keep it open for the next call."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


class StoreCache:
    """One open store per thread (SQLite connections belong to their thread), opened on first use: the API answers
    without paying the store's open and integrity check at every request."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, ctx: Context) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = _Kept(open_store(ctx.config_dir, lock_timeout=ctx.lock_timeout))
            self._local.store = store
        return store  # type: ignore[no-any-return]


@dataclass
class Held:
    """The locked folder and its open store, for one mutation."""

    folder: SafeFolder
    store: Store
    crashed_before: bool  # the previous holder died holding the lock
    # A journal item was left for the background renderer (the server config of a large gateway): once the lock
    # is released, make sure one runs.
    deferred: bool = False


def _holder_text(fd: int) -> str:
    """Who holds the lock, as its holder wrote it (escaped: the file may have been written by anyone)."""
    try:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return show_value(text) if text else ""


def _holder_stamp(fd: int) -> int:
    """When the lock file was last written: each holder writes it on acquisition, so this changes hands with it."""
    try:
        return os.fstat(fd).st_mtime_ns
    except OSError:
        return 0


def _acquire(fd: int, timeout: float, path: Path) -> None:
    """Wait while the lock changes hands (a queue of commands makes progress); give up when one holder keeps it
    longer than `timeout`, naming it. A change of hands is a new holder text or a new write of the same text: the
    API's threads all hold it as the same process and command, one after the other."""
    holder, stamp = _holder_text(fd), _holder_stamp(fd)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            current, current_stamp = _holder_text(fd), _holder_stamp(fd)
            if (current, current_stamp) != (holder, stamp):
                holder, stamp, deadline = current, current_stamp, time.monotonic() + timeout
            elif time.monotonic() >= deadline:
                raise StoreError("the config folder is busy", str(path),
                                 f"held by {holder or 'another process'} for more than {timeout:g} s: try again "
                                 f"when it is done", code=ErrorCode.STORE_LOCKED) from None
            time.sleep(0.02)


@contextlib.contextmanager
def folder_lock(folder: SafeFolder, timeout: float) -> Iterator[bool]:
    """Hold the folder's lock; yields True when the previous holder crashed while holding it.

    The holder writes "pid N: command" into the lock file and empties it on a clean release, so a non-empty
    file at acquisition means its writer died mid-command (its temp files may remain)."""
    try:
        fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE,
                     dir_fd=folder.fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise folder._unsafe(LOCK_NAME, "a symbolic link") from None
        raise disk_error(exc, folder.path / LOCK_NAME) from None
    try:
        _acquire(fd, timeout, folder.path)
        crashed = bool(_holder_text(fd))
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv[:4]))
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()}: {command}\n".encode(errors="replace"), 0)
        yield crashed
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
