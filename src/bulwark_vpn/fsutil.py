"""Atomic, private file writes: temp file in the same folder, chmod, fsync, os.replace."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PUBLIC_FILE = 0o644


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed and make it 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path


def atomic_write(path: Path, data: bytes | str, mode: int = PRIVATE_FILE) -> bool:
    """Write `data` to `path` atomically with `mode`; return False (and touch nothing) if unchanged."""
    payload = data.encode() if isinstance(data, str) else data
    try:
        if path.read_bytes() == payload and (path.stat().st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def atomic_write_many(files: list[tuple[Path, bytes, int]]) -> int:
    """Write many files atomically with two filesystem syncs in all instead of two fsyncs per file.

    Each changed file goes to a temp file in its folder; one sync makes every temp durable before any
    rename (so a crash leaves each file old or new, never empty); the renames follow, then one more
    sync makes them durable. Unchanged files are skipped. Returns how many files were written.
    """
    pending: list[tuple[str, Path]] = []
    try:
        for path, payload, mode in files:
            try:
                if path.read_bytes() == payload and (path.stat().st_mode & 0o777) == mode:
                    continue
            except OSError:
                pass
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            pending.append((tmp, path))
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
        if not pending:
            return 0
        os.sync()
        for tmp, path in pending:
            os.replace(tmp, path)
        pending_done = len(pending)
        pending = []
        os.sync()
        return pending_done
    finally:
        for tmp, _ in pending:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
