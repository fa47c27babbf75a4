"""Files: atomic private writes, and `SafeFolder`, the only way Bulwark touches its config folder.

Bulwark runs as root over a folder that a container user or another tool may write. Inside it, nothing is
ever followed: every folder is opened relative to its parent's descriptor with O_NOFOLLOW, every file is
created with O_EXCL|O_NOFOLLOW as a temp file and renamed over its target, and a symbolic link (or another
kind of file) where Bulwark expects its own file or folder is an `UnsafePathError` naming it, never followed,
replaced or chmod-ed. Writes are staged (temp files written) before the store commits and renamed after, so
a failure before the commit changes nothing and a crash after it leaves each file old or new, never torn.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bulwark_vpn.errors import ErrorCode, SystemActionError, UnsafePathError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
PUBLIC_FILE = 0o644
TEMP_PREFIX = ".bulwark-tmp-"
# Folder descriptors kept open: 65,000 peer folders would exceed the process's file limit.
DIR_CACHE = 256
# Up to this many files are synced one by one (fsync of each file, then of its folder after the rename); more are
# synced with one os.sync(), which also flushes whatever else the machine has to write.
FSYNC_FEW = 32
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def disk_error(exc: OSError, where: object) -> SystemActionError:
    """An OSError of a write as one line: a full or read-only disk says so (and what to do)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return SystemActionError("the disk is full", str(where), "free some space and run the command again",
                                 code=ErrorCode.DISK_FULL)
    if exc.errno == errno.EROFS:
        return SystemActionError("the file system is read-only", str(where),
                                 "only read-only commands (peer list, peer show, status, deploy) work here",
                                 code=ErrorCode.READ_ONLY)
    return SystemActionError(f"cannot write: {exc.strerror or exc}", str(where), "check the path and its permissions")


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) if needed and make it 0700. For folders outside the config folder (/run)."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    os.chmod(path, PRIVATE_DIR)
    return path


def atomic_write(path: Path, data: bytes | str, mode: int = PRIVATE_FILE) -> bool:
    """Write `data` to `path` atomically with `mode`; return False (and touch nothing) if unchanged.

    For files outside the config folder (runtime state, deploy bundles); inside it, use SafeFolder."""
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


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would set it, racing other threads)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777  # unknown: always set the mode explicitly


def _split(relative: str) -> list[str]:
    parts = [p for p in relative.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"not a relative path inside the folder: {relative!r}")
    return parts


@dataclass
class Staged:
    """Temp files written and synced, waiting to be renamed over their targets (`commit`) or removed (`abort`).

    Each is named by its folder (relative), not by an open descriptor: a render of every peer's files would
    otherwise hold one descriptor per peer folder (65,000 peers is more than a process may open)."""

    folder: SafeFolder
    pending: list[tuple[str, str, str]] = field(default_factory=list)  # (folder, temp name, target name)
    removals: list[str] = field(default_factory=list)

    def _each(self, action) -> None:
        current: str | None = None
        for relative, tmp, name in self.pending:
            if relative != current:
                if current:
                    self.folder._release(current)
                current = relative
            dir_fd = self.folder._open_dir(relative, create=False) if relative else self.folder.fd
            action(dir_fd, tmp, name)
        if current:
            self.folder._release(current)

    def commit(self) -> int:
        """Rename every temp over its target, remove the folders listed for removal, then sync (the folders of a
        few files, else everything)."""
        folders = {folder for folder, _, _ in self.pending} if len(self.pending) <= FSYNC_FEW else set()
        self.folder._fresh.clear()
        self._each(lambda dir_fd, tmp, name: os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd))
        done = len(self.pending)
        self.pending = []
        for relative in self.removals:
            self.folder.remove_tree(relative)
            folders.add("/".join(_split(relative)[:-1]))
        if done + len(self.removals) > FSYNC_FEW:
            os.sync()
        else:
            for folder in folders:
                try:
                    os.fsync(self.folder._open_dir(folder, create=False) if folder else self.folder.fd)
                except FileNotFoundError:
                    continue  # removed as well
        return done

    def abort(self) -> None:
        def unlink(dir_fd: int, tmp: str, _name: str) -> None:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass

        with contextlib.suppress(OSError):
            self._each(unlink)
        self.pending = []


class SafeFolder:
    """The config folder, opened once without following links; every path below it is resolved component by
    component from directory descriptors."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self._dirs: dict[str, int] = {"": fd}
        self._secured: set[str] = set()
        # Folders this object made since its last commit: nothing can be in them yet but temp files.
        self._fresh: set[str] = set()

    # -- opening --------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> SafeFolder:
        """Open the config folder itself: a symlink there is refused (pass the real folder); with `create`,
        a missing folder is made 0700 (its parents as usual)."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if not create:
                raise
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(path, PRIVATE_DIR)
            except FileExistsError:
                pass
            except OSError as exc:
                raise disk_error(exc, path) from None
            info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            raise UnsafePathError("the config folder is a symbolic link", str(path),
                                  f"Bulwark never follows links in its folder: pass the real folder "
                                  f"('{os.path.realpath(path)}') if you trust it")
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafePathError("the config folder is not a folder", str(path), "pass a folder")
        fd = os.open(path, _DIR_FLAGS)
        return cls(path, fd)

    def close(self) -> None:
        for fd in set(self._dirs.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        self._dirs = {}

    def __enter__(self) -> SafeFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unsafe(self, relative: str, what: str) -> UnsafePathError:
        return UnsafePathError(f"{what} where Bulwark expects its own", str(self.path / relative),
                               "Bulwark never follows or replaces it: remove it (or move it away) and run the "
                               "command again")

    def _open_dir(self, relative: str, *, create: bool) -> int:
        """The descriptor of a folder below the root, creating missing components (0700) when asked."""
        if relative in self._dirs:
            fd = self._dirs[relative]
            if create:
                self._secure(fd, relative)
            return fd
        parts = _split(relative)
        parent = self._open_dir("/".join(parts[:-1]), create=create) if len(parts) > 1 else self.fd
        name = parts[-1]
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, PRIVATE_DIR, dir_fd=parent)
                self._fresh.add(relative)
            except FileExistsError:
                pass
            except OSError as exc:
                raise disk_error(exc, self.path / relative) from None
            fd = self._open_existing_dir(parent, name, relative)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._unsafe(relative, self._kind(parent, name)) from None
            raise
        self._dirs[relative] = fd
        if create:
            self._secure(fd, relative)
        if len(self._dirs) > DIR_CACHE:
            self._evict()
        return fd

    def _evict(self) -> None:
        """Close the oldest cached folder descriptors (never the root's, never the newest)."""
        for key in list(self._dirs)[:len(self._dirs) - DIR_CACHE // 2]:
            if key:
                os.close(self._dirs.pop(key))

    def _release(self, relative: str) -> None:
        """Close a cached folder descriptor (opened again, from the root and without following links, when
        needed)."""
        fd = self._dirs.pop(relative, None) if relative else None
        if fd is not None:
            os.close(fd)

    def _secure(self, fd: int, relative: str) -> None:
        """Writing into a folder: keys live in 0700 folders (an adopted layout may have had 0755)."""
        if relative not in self._secured:
            if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_DIR:
                os.fchmod(fd, PRIVATE_DIR)
            self._secured.add(relative)

    def _open_existing_dir(self, parent: int, name: str, relative: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._unsafe(relative, self._kind(parent, name)) from None
            raise

    @staticmethod
    def _kind(parent: int, name: str) -> str:
        try:
            mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        except OSError:
            return "something"
        return "a symbolic link" if stat.S_ISLNK(mode) else "a file" if stat.S_ISREG(mode) else "something else"

    def _parent(self, relative: str, *, create: bool) -> tuple[int, str]:
        parts = _split(relative)
        parent = self._open_dir("/".join(parts[:-1]), create=create) if len(parts) > 1 else self.fd
        return parent, parts[-1]

    # -- reading --------------------------------------------------------------------------------------

    def lstat(self, relative: str) -> os.stat_result | None:
        """The entry's own status (links not followed), or None when it or a folder on its way is missing."""
        try:
            parent, name = self._parent(relative, create=False)
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def exists(self, relative: str) -> bool:
        return self.lstat(relative) is not None

    def read_bytes(self, relative: str) -> bytes:
        """A regular file's content; a link there is an UnsafePathError. FileNotFoundError when missing."""
        parent, name = self._parent(relative, create=False)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._unsafe(relative, "a symbolic link") from None
            raise
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise self._unsafe(relative, "something other than a file")
            return fh.read()

    def listdir(self, relative: str = "") -> list[str]:
        try:
            fd = self._open_dir(relative, create=False) if relative else self.fd
        except FileNotFoundError:
            return []
        return os.listdir(fd)

    # -- writing --------------------------------------------------------------------------------------

    def stage(self, files: Iterable[tuple[str, bytes, int]], remove: Iterable[str] = (), *,
              into: Staged | None = None, sync: bool = True) -> Staged:
        """Write each changed file to a temp beside its target (O_EXCL|O_NOFOLLOW) and sync them all once; the
        targets are untouched until `Staged.commit`. Unchanged files are skipped. On any failure the temps
        written so far (also those of `into`, when staging in batches) are removed and the error raised: nothing
        has changed. `sync=False` leaves the sync to the caller's last batch."""
        staged = into or Staged(self)
        umask = _umask()
        token = secrets.token_hex(4)
        last: str | None = None
        try:
            for relative, payload, mode in files:
                parts = _split(relative)
                folder = "/".join(parts[:-1])
                if last and folder != last:
                    self._release(last)  # one descriptor at a time, whatever the number of folders
                last = folder
                parent = self._open_dir(folder, create=True) if folder else self.fd
                name = parts[-1]
                if folder not in self._fresh and self._unchanged(parent, name, relative, payload, mode):
                    continue
                # O_EXCL: a leftover of the same name is never written through; the counter makes names unique.
                tmp = f"{TEMP_PREFIX}{name}-{token}{len(staged.pending):x}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                             dir_fd=parent)
                staged.pending.append((folder, tmp, name))
                try:
                    if mode & umask:
                        os.fchmod(fd, mode)  # the umask took bits the file must have
                    view = memoryview(payload)
                    while view:
                        view = view[os.write(fd, view):]
                    if len(staged.pending) <= FSYNC_FEW:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            if last:
                self._release(last)
            for relative in remove:
                info = self.lstat(relative)
                if info is not None:
                    if stat.S_ISLNK(info.st_mode):
                        raise self._unsafe(relative, "a symbolic link")  # refused before anything commits
                    staged.removals.append(relative)
            if len(staged.pending) > FSYNC_FEW and sync:
                os.sync()
        except OSError as exc:
            staged.abort()
            raise disk_error(exc, self.path) from None
        except BaseException:
            staged.abort()
            raise
        return staged

    def _unchanged(self, parent: int, name: str, relative: str, payload: bytes, mode: int) -> bool:
        """True when the target is a regular file with exactly this content and mode (missing: False); a link or
        anything else there is refused."""
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(info.st_mode):
            raise self._unsafe(relative, "a symbolic link")
        if not stat.S_ISREG(info.st_mode):
            raise self._unsafe(relative, "something other than a file")
        if info.st_size != len(payload) or stat.S_IMODE(info.st_mode) != mode:
            return False
        return self.read_bytes(relative) == payload

    def write_many(self, files: Iterable[tuple[str, bytes, int]]) -> int:
        """Stage and commit at once (when no store transaction needs to sit in between)."""
        return self.stage(files).commit()

    def remove_tree(self, relative: str) -> bool:
        """Remove a folder Bulwark made (a peer's); a link there is refused, not followed. False if missing."""
        try:
            parent, name = self._parent(relative, create=False)
        except FileNotFoundError:
            return False
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(info.st_mode):
            raise self._unsafe(relative, "a symbolic link")
        cached = [key for key in self._dirs if key == relative or key.startswith(relative + "/")]
        for key in cached:
            os.close(self._dirs.pop(key))
            self._secured.discard(key)
        if stat.S_ISDIR(info.st_mode):
            # rmtree with dir_fd works from descriptors and never follows a link planted below (3.11+).
            shutil.rmtree(name, dir_fd=parent)
        else:
            os.unlink(name, dir_fd=parent)
        return True

    def remove_file(self, relative: str) -> bool:
        try:
            parent, name = self._parent(relative, create=False)
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(info.st_mode):
            raise self._unsafe(relative, "a folder")
        os.unlink(name, dir_fd=parent)
        return True

    def temp_files(self, folders: Iterable[str] | None = None) -> Iterator[str]:
        """Leftover temp files (they may hold private keys) in the given folders, or in every folder below."""
        names = [""] + sorted(folders) if folders is not None else None
        todo = names if names is not None else [""]
        seen: set[str] = set()
        while todo:
            relative = todo.pop()
            if relative in seen:
                continue
            seen.add(relative)
            try:
                fd = self._open_dir(relative, create=False) if relative else self.fd
            except (FileNotFoundError, UnsafePathError):
                continue
            with os.scandir(fd) as entries:
                for entry in entries:
                    child = f"{relative}/{entry.name}" if relative else entry.name
                    if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                        yield child
                    elif names is None and entry.is_dir(follow_symlinks=False):
                        todo.append(child)

    def remove_temp_files(self, folders: Iterable[str] | None = None) -> int:
        count = 0
        for relative in list(self.temp_files(folders)):
            if self.remove_file(relative):
                count += 1
        # Temp folders at the top (a store being replaced by a restore or an import): they may hold keys too.
        for name in self.listdir():
            info = self.lstat(name) if name.startswith(TEMP_PREFIX) else None
            if info is not None and stat.S_ISDIR(info.st_mode) and self.remove_tree(name):
                count += 1
        return count
