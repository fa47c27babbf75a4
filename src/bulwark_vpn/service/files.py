"""The config folder's files, rendered from the store through the render journal.

Journal items (`store.RENDER_*`) name what a change made stale: the server files, every peer's files, one peer's
files, or a path to remove. `mutate` records them with the change and writes them in the same transaction (as
temp files), renames after the commit and clears them; `heal` finishes items a crashed command left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from bulwark_vpn.errors import ErrorCode, NotFoundError, StoreError
from bulwark_vpn.fsutil import SafeFolder, Staged
from bulwark_vpn.model import Peer
from bulwark_vpn.render import layout
from bulwark_vpn.service.context import LOCK_NAME, Context, Held, folder_lock
from bulwark_vpn.store import REMOVE_FOLDER, RENDER_ALL_PEERS, RENDER_PEER, RENDER_SERVER, Store

log = logging.getLogger("bulwark_vpn")

T = TypeVar("T")


def peer_item(name: str) -> str:
    return f"{RENDER_PEER}{name}"


def remove_item(relative: str) -> str:
    return f"{REMOVE_FOLDER}{relative}"


def _peer_file_set(store: Store, peers: Sequence[Peer]) -> tuple[list[tuple[str, bytes, int]], list[str]]:
    """Every file of these peers, QR codes encoded in parallel. A config too large for a QR code gets none (and
    a warning); a stale PNG of it is removed."""
    settings = store.settings()
    public = store.require_server_key().public_key()
    files: dict[str, layout.RenderedFile] = {}
    with_config: list[Peer] = []
    removals: list[str] = []
    for peer in peers:
        rendered = layout.peer_files(settings, public, peer)
        files.update(rendered)
        if layout.conf_path(peer) in rendered:
            with_config.append(peer)
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
    """Render what the items name from the store as it is now (inside the caller's transaction) and stage it."""
    wanted = set(items)
    files: list[tuple[str, bytes, int]] = []
    removals: list[str] = []
    if RENDER_SERVER in wanted:
        files += _server_file_set(store)
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
    peer_files, stale = _peer_file_set(store, peers)
    files += peer_files
    removals += stale
    removals += sorted(item[len(REMOVE_FOLDER):] for item in wanted if item.startswith(REMOVE_FOLDER))
    return folder.stage(files, remove=removals)


def mutate(held: Held, change: Callable[[Store], tuple[T, list[str]]]) -> T:
    """Change the store and render what the change names, all or nothing (see the module docstring)."""
    store = held.store
    staged: Staged | None = None
    items: list[str] = []
    try:
        with store.transaction():
            result, items = change(store)
            if items:
                staged = stage_items(held.folder, store, items)
                if staged.pending or staged.removals:
                    # In the change's own transaction: committed together, or not at all.
                    store.add_pending(items)
                else:
                    staged = None  # every file is already right: nothing to journal
    except BaseException:
        if staged is not None:
            staged.abort()
        raise
    if staged is not None:
        staged.commit()
        store.clear_pending(items)
    return result


def heal(held: Held) -> int:
    """Finish the render journal left by an interrupted command, and after a crash remove its temp files.
    Returns how many journal items were finished."""
    store, folder = held.store, held.folder
    pending = store.pending_renders()
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
    """The config folder locked and its store open, with earlier unfinished work finished first."""
    if not create and not ctx.has_store():
        # Opening the store raises the one "not set up" error, naming the folder.
        ctx.open_store().close()
    folder = SafeFolder.open(ctx.config_dir, create=create)
    try:
        with folder_lock(folder, ctx.lock_timeout) as crashed:
            store = ctx.open_store(create=create)
            try:
                held = Held(folder, store, crashed)
                if heal_first and store.is_initialized():
                    heal(held)
                yield held
            finally:
                store.close()
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
        pending = bool(store.pending_renders())
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
