"""The config folder's files, rendered from the store through the render journal.

Journal items (`store.RENDER_*`) name what a change made stale: the server files, every peer's files, one peer's
files, or a path to remove. `mutate` records them with the change and writes them in the same transaction (as
temp files), renames after the commit and clears them; `heal` finishes items a crashed command left behind.

Each peer's files follow the `files` setting: `full` (the linuxserver layout: config, keys and a QR code PNG),
`configs` (no PNG) or `none` (no folder: configs come from `peer show` and the API).

The server config is the one file that grows with the peer count (about 170 bytes a peer: 11 MB at 65,000), so a
change does not rewrite it once it is larger than DEFER_SERVER_BYTES: the change records the `server` item in its
own transaction like any other, and leaves it pending. A background renderer finishes it a moment later, once for
however many changes came meanwhile: the supervisor when the gateway runs (it holds the render lock for its
lifetime), else a `bulwark render --background` process that the command starts (and that exits when nothing is
pending). The renderer renders from the store without the folder lock, then takes the lock, checks that the store
did not change meanwhile (its revision), writes, renames and clears the item. A crash at any point leaves the item
in the journal: the next command (or `up`) sees it and makes sure a renderer runs, so store and files meet again
within about a second; `bulwark render` finishes everything at once, in the foreground.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from bulwark_vpn.errors import BulwarkError, ErrorCode, NotFoundError, StoreError, SystemActionError
from bulwark_vpn.fsutil import SafeFolder, Staged
from bulwark_vpn.keys import PublicKey
from bulwark_vpn.model import Peer, Settings
from bulwark_vpn.render import layout
from bulwark_vpn.service.context import LOCK_NAME, Context, Held, folder_lock
from bulwark_vpn.store import REMOVE_FOLDER, RENDER_ALL_PEERS, RENDER_PEER, RENDER_SERVER, Store

log = logging.getLogger("bulwark_vpn")

T = TypeVar("T")

# A server config larger than this (about 1,500 peers) is rewritten by the background renderer, not by the change.
DEFER_SERVER_BYTES = 256 * 1024
# The background renderer waits this long after the last change before it renders: a burst of changes costs one
# rewrite; a steady stream of changes gets one at least every MAX_DEFER_SECONDS.
SETTLE_SECONDS = 0.5
MAX_DEFER_SECONDS = 5.0
# It runs at a lower CPU priority than the commands and the data plane (nice, of its thread or process).
RENDER_NICENESS = 10
# Peers rendered (and their QR codes encoded) per batch when every peer's files are written.
BATCH = 1000


def peer_item(name: str) -> str:
    return f"{RENDER_PEER}{name}"


def remove_item(relative: str) -> str:
    return f"{REMOVE_FOLDER}{relative}"


def server_conf_path(interface: str) -> str:
    return f"wg_confs/{interface}.conf"


def _peer_file_set(settings: Settings, public: PublicKey | None,
                   peers: Sequence[Peer]) -> tuple[list[tuple[str, bytes, int]], list[str]]:
    """Every file of these peers as the `files` setting wants them (QR codes encoded in one batch), and what to
    remove: a PNG the layout does not want (or a config too large for a QR code: with a warning), or the whole
    folder when peers get no files. Pure: no store (it runs in a thread while the previous batch is written)."""
    if settings.files == "none" or public is None:
        return [], [p.folder_name for p in peers]
    files: dict[str, layout.RenderedFile] = {}
    with_config: list[Peer] = []
    removals: list[str] = []
    for peer in peers:
        rendered = layout.peer_files(settings, public, peer)
        files.update(rendered)
        if layout.conf_path(peer) in rendered and settings.files == "full":
            with_config.append(peer)
        else:
            removals.append(layout.qr_path(peer))
    from bulwark_vpn.render.qr import qr_pngs

    confs = [files[layout.conf_path(p)].content.decode() for p in with_config]
    for peer, png in zip(with_config, qr_pngs(confs), strict=True):
        if png is None:
            log.warning("bulwark: the config of peer %s is too large for a QR code (%d bytes): no %s written",
                        peer.name, len(files[layout.conf_path(peer)].content), layout.qr_path(peer))
            removals.append(layout.qr_path(peer))
        else:
            files[layout.qr_path(peer)] = layout.RenderedFile(png)
    return [(rel, f.content, f.mode) for rel, f in files.items()], removals


def _server_file_set(store: Store) -> list[tuple[str, bytes, int]]:
    files = layout.server_files(store.settings(), store.require_server_key(), store.server_peer_rows())
    return [(rel, f.content, f.mode) for rel, f in files.items()]


def stage_items(folder: SafeFolder, store: Store, items: Iterable[str]) -> Staged:
    """Render what the items name from the store as it is now (inside the caller's transaction) and stage it
    (every peer: in batches, so memory does not grow with the peer count)."""
    wanted = set(items)
    staged = Staged(folder)
    try:
        if RENDER_SERVER in wanted:
            folder.stage(_server_file_set(store), into=staged, sync=False)
        if RENDER_ALL_PEERS in wanted:
            peers = store.peers()
        else:
            peers = []
            for item in sorted(wanted):
                if item.startswith(RENDER_PEER):
                    try:
                        peers.append(store.peer(item[len(RENDER_PEER):]))
                    except NotFoundError:
                        continue  # removed since: its folder has its own removal item
        settings = store.settings()
        public = store.require_server_key().public_key() if settings.files != "none" else None
        batches = [peers[start:start + BATCH] for start in range(0, len(peers), BATCH)]
        if len(batches) == 1:
            files, removals = _peer_file_set(settings, public, batches[0])
            folder.stage(files, remove=removals, into=staged, sync=False)
        elif batches:
            # Rendering (configs, QR codes: mostly outside the GIL) of the next batch overlaps writing this one
            # (in the kernel): at 65,000 peers each takes tens of seconds.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulwark-render") as pool:
                ahead = pool.submit(_peer_file_set, settings, public, batches[0])
                for index in range(len(batches)):
                    files, removals = ahead.result()
                    if index + 1 < len(batches):
                        ahead = pool.submit(_peer_file_set, settings, public, batches[index + 1])
                    folder.stage(files, remove=removals, into=staged, sync=False)
        removed = sorted(item[len(REMOVE_FOLDER):] for item in wanted if item.startswith(REMOVE_FOLDER))
        folder.stage([], remove=removed, into=staged)  # and the one sync of every temp written
    except BaseException:
        staged.abort()
        raise
    return staged


def _server_is_large(folder: SafeFolder, store: Store) -> bool:
    info = folder.lstat(server_conf_path(store.settings().interface))
    return info is not None and info.st_size > DEFER_SERVER_BYTES


def mutate(held: Held, change: Callable[[Store], tuple[T, list[str]]]) -> T:
    """Change the store and render what the change names, all or nothing (see the module docstring); a large
    server config is left to the background renderer."""
    store = held.store
    staged: Staged | None = None
    items: list[str] = []
    try:
        with store.transaction():
            before = store.revision()
            result, items = change(store)
            deferred = [RENDER_SERVER] if RENDER_SERVER in items and _server_is_large(held.folder, store) else []
            items = [item for item in items if item not in deferred]
            if deferred and store.revision() == before:
                deferred = []  # nothing the server files are made of changed (a no-op init, every `up`)
            if items:
                staged = stage_items(held.folder, store, items)
                if staged.pending or staged.removals:
                    # In the change's own transaction: committed together, or not at all.
                    store.add_pending(items)
                else:
                    staged = None  # every file is already right: nothing to journal
            if deferred:
                store.add_pending(deferred)
                held.deferred = True
    except BaseException:
        if staged is not None:
            staged.abort()
        raise
    if staged is not None:
        staged.commit()
        store.clear_pending(items)
    return result


def heal(held: Held, *, everything: bool = False) -> int:
    """Finish the render journal left by an interrupted command, and after a crash remove its temp files; a large
    server config is left to the background renderer unless `everything`. Returns how many items were finished."""
    store, folder = held.store, held.folder
    pending = store.pending_renders()
    if pending and not everything and RENDER_SERVER in pending and _server_is_large(folder, store):
        pending.remove(RENDER_SERVER)
        held.deferred = True
    if pending:
        log.info("bulwark: finishing %d file update(s) left by an interrupted command", len(pending))
        staged = stage_items(folder, store, pending)
        staged.commit()
        store.clear_pending(pending)
    if held.crashed_before:
        removed = folder.remove_temp_files()
        if removed:
            log.info("bulwark: removed %d temporary file(s) left by an interrupted command", removed)
    return len(pending)


@contextlib.contextmanager
def locked(ctx: Context, *, create: bool = False, heal_first: bool = True) -> Iterator[Held]:
    """The config folder locked and its store open, with earlier unfinished work finished first. A deferred item
    left behind (by this command or an earlier one) gets a background renderer once the lock is released."""
    if not create and not ctx.has_store():
        # Opening the store raises the one "not set up" error, naming the folder.
        ctx.open_store().close()
    folder = SafeFolder.open(ctx.config_dir, create=create)
    deferred = False
    try:
        with folder_lock(folder, ctx.lock_timeout) as crashed:
            store = ctx.open_store(create=create)
            try:
                held = Held(folder, store, crashed)
                if heal_first and store.is_initialized():
                    heal(held)
                yield held
                deferred = held.deferred
            finally:
                store.close()
        if deferred:
            ensure_renderer(ctx, folder)
    finally:
        folder.close()


def heal_if_needed(ctx: Context) -> None:
    """Before a read: if an interrupted command left files behind the store (a pending journal, or a lock file
    still naming a holder that died), finish them when the folder can be written. A read never waits for a busy
    folder: the command holding the lock does this work itself. A read-only folder is read as it is (the store is
    what commands answer from)."""
    if not os.access(ctx.config_dir, os.W_OK):
        return
    with ctx.open_store(read_only=True) as store:
        pending = store.pending_renders()
    if pending == [RENDER_SERVER] and _renderer_runs(ctx.config_dir):
        return  # the deferred server config: the background renderer is on it
    if not pending and not _lock_names_a_holder(ctx):
        return
    try:
        with locked(replace(ctx, lock_timeout=0)):
            pass
    except StoreError as exc:
        if exc.code != ErrorCode.STORE_LOCKED:
            raise


def _lock_names_a_holder(ctx: Context) -> bool:
    try:
        fd = os.open(ctx.config_dir / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return bool(os.read(fd, 1))
    finally:
        os.close(fd)


def render_all(held: Held) -> None:
    """Render every file of the folder again from the store (after a restore or an import)."""
    mutate(held, lambda store: (None, [RENDER_SERVER, RENDER_ALL_PEERS]))


def relative_files(folder: Path) -> list[str]:
    """Regular files below `folder`, relative, sorted (for tests and `doctor`)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


# -- the background renderer ------------------------------------------------------------------------------


class RenderLock:
    """Who renders deferred items: an exclusive flock on the config folder itself (no file of its own), held by
    the supervisor for its lifetime or by a background `bulwark render` while it works."""

    def __init__(self, config_dir: Path) -> None:
        self.fd = os.open(config_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.held = False

    def take(self) -> bool:
        """True when this process now holds it (non-blocking)."""
        if not self.held:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
        return self.held

    def release(self) -> None:
        if self.held:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self.held = False

    def close(self) -> None:
        self.release()
        os.close(self.fd)


def _renderer_runs(config_dir: Path) -> bool:
    try:
        probe = RenderLock(config_dir)
    except OSError:
        return False
    try:
        if probe.take():
            return False
        return True
    except OSError:
        return False
    finally:
        probe.close()


def ensure_renderer(ctx: Context, folder: SafeFolder | None = None) -> bool:
    """Start a background renderer unless one runs (the supervisor, or an earlier one). True if one was started.

    Called after the commit that left the item pending: a renderer that is just finishing checks the journal again
    after it lets go of the render lock, so one of the two always sees the item."""
    if _renderer_runs(ctx.config_dir):
        return False
    argv = [sys.executable, "-m", "bulwark_vpn", "render", "--background", "--config-dir", str(ctx.config_dir)]
    try:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, env=dict(ctx.environ) or None, close_fds=True)
    except OSError as exc:
        log.warning("bulwark: could not start the background renderer (%s): the server config catches up at the "
                    "next command", exc)
        return False
    return True


def flush_deferred(ctx: Context, folder: SafeFolder, *, wait: float = 5.0) -> int:
    """Render the pending server config: from the store without the folder lock, then (locked) written only if
    the store did not change meanwhile, else rendered again under the lock. Also finishes any other pending item.
    Returns how many items were finished (0 when none was pending or the folder stayed busy)."""
    with ctx.open_store() as store:
        pending = store.pending_renders()
        if not pending:
            return 0
        revision = store.revision()
        early = _server_file_set(store) if RENDER_SERVER in pending else None
        try:
            with folder_lock(folder, wait) as crashed:
                pending = store.pending_renders()
                if not pending:
                    return 0
                staged = Staged(folder)
                rest = list(pending)
                try:
                    if early is not None and RENDER_SERVER in pending and store.revision() == revision:
                        folder.stage(early, into=staged)
                        rest.remove(RENDER_SERVER)
                    if rest:
                        more = stage_items(folder, store, rest)
                        staged.pending += more.pending
                        staged.removals += more.removals
                except BaseException:
                    staged.abort()
                    raise
                staged.commit()
                store.clear_pending(pending)
                if crashed:
                    folder.remove_temp_files()
                return len(pending)
        except StoreError as exc:
            if exc.code == ErrorCode.STORE_LOCKED:
                return 0  # busy: the next pass tries again
            raise


def run_background_renderer(ctx: Context, *, settle: float = SETTLE_SECONDS) -> int:
    """`bulwark render --background`: hold the render lock (or leave at once: another renderer runs), let changes
    settle, render what is pending, and repeat until nothing is; then check once more after letting go of the
    lock. Returns how many items were finished."""
    _lower_priority(thread=False)
    lock = RenderLock(ctx.config_dir)
    folder = SafeFolder.open(ctx.config_dir)
    done = 0
    try:
        while lock.take():
            while True:
                time.sleep(settle)
                done += flush_deferred(ctx, folder)
                with ctx.open_store(read_only=True) as store:
                    if not store.pending_renders():
                        break
            lock.release()
            with ctx.open_store(read_only=True) as store:
                if not store.pending_renders():
                    break
    finally:
        lock.close()
        folder.close()
    return done


def _lower_priority(*, thread: bool) -> None:
    """Render at a lower CPU priority than commands and the data plane: Linux keeps a nice value per thread."""
    with contextlib.suppress(OSError):
        target = threading.get_native_id() if thread else 0
        current = os.getpriority(os.PRIO_PROCESS, target)
        os.setpriority(os.PRIO_PROCESS, target, max(current, RENDER_NICENESS))


class SupervisorRenders:
    """The supervisor's share of the journal: it holds the render lock while it runs (so commands start no
    renderer of their own) and finishes deferred items in a thread of its own (rendering 65,000 peers takes a few
    tenths of a second: the supervisor's loop keeps applying changes meanwhile); at teardown it finishes what is
    left."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.lock = RenderLock(ctx.config_dir)
        self.folder = SafeFolder.open(ctx.config_dir)
        self.store = ctx.open_store(read_only=True)  # polled 5 times a second: one connection
        self._since: float | None = None  # when the store last changed with items pending
        self._first: float | None = None  # when pending items were first seen
        self._last_check = 0.0
        self._revision = -1
        self._worker: threading.Thread | None = None
        self.error: Exception | None = None

    def __call__(self, closing: bool) -> None:
        try:
            self._pass(closing)
        finally:
            if closing:
                self.lock.close()
                self.folder.close()
                self.store.close()

    def _busy(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def _flush(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            _lower_priority(thread=True)
        try:
            if flush_deferred(self.ctx, self.folder):
                self._since = self._first = None
        except Exception as exc:  # reported by the loop, which says it once
            self.error = exc

    def _pass(self, closing: bool) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            if isinstance(error, BulwarkError):
                raise error
            # Whatever went wrong writing files must not take the tunnels down: the loop says it and goes on.
            raise SystemActionError(f"cannot write the config folder's files: {error}") from error
        if not self.lock.take() and not closing:
            return  # a background renderer started before this supervisor is still at work
        if closing and self._worker is not None:
            self._worker.join()
        if self._busy():
            return
        now = time.monotonic()
        revision = self.store.revision()
        if not closing and revision == self._revision and self._since is None and now - self._last_check < 2:
            return
        self._last_check = now
        changed, self._revision = revision != self._revision, revision
        pending = bool(self.store.pending_renders())
        if not pending:
            self._since = self._first = None
            return
        if self._since is None or changed:
            self._since = now  # wait until changes settle...
        if self._first is None:
            self._first = now  # ...but not longer than MAX_DEFER_SECONDS
        if closing:
            self._flush()
        elif now - self._since >= SETTLE_SECONDS or now - self._first >= MAX_DEFER_SECONDS:
            self._worker = threading.Thread(target=self._flush, name="bulwark-render", daemon=True)
            self._worker.start()


@dataclass(frozen=True)
class RenderResult:
    """What `bulwark render` finished."""

    finished: int

    def to_dict(self) -> dict[str, Any]:
        return {"finished": self.finished}


def render_pending(ctx: Context, *, everything: bool = False) -> RenderResult:
    """`bulwark render`: bring the folder level with the store now, in the foreground (the large server config
    included); with `everything`, render every file again."""
    ctx.actor.require_admin()
    with locked(ctx, heal_first=False) as held:
        finished = heal(held, everything=True)
        if everything:
            render_all(held)
    return RenderResult(finished)


def background_render(ctx: Context) -> RenderResult:
    """`bulwark render --background`: what a command starts when it leaves the server config pending."""
    try:
        return RenderResult(run_background_renderer(ctx))
    except BulwarkError as exc:
        log.warning("bulwark: background renderer: %s", exc)
        raise
