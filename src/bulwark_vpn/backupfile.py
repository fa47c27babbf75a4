"""The backup file: what it holds, how it is written and how it is read back without trusting it.

A backup is a gzip-compressed tar archive (open it with `tar xzf`) of exactly two regular files:

    manifest.json   {"format": "bulwark-backup", "format_version": 1, "bulwark_version", "schema_version",
                     "peer_count", "created_at", "server_public_key", "sha256", "size"}
    bulwark.db      a consistent SQLite snapshot of the store (every table: settings, keys, peers, users...)

`sha256` and `size` are those of `bulwark.db`. With a passphrase the whole archive is wrapped in the age format
(scrypt recipient, https://age-encryption.org/v1), which `age -d` opens without Bulwark.

Reading trusts nothing: the archive is streamed member by member (never extracted by name), only the two expected
regular files are accepted, each with a size limit (no path traversal, no links, no decompression bomb); the
manifest is parsed strictly, the checksum is checked while the snapshot is copied out, and every manifest value is
checked again against the snapshot itself by the caller. Every refusal is an InputError naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from bulwark_vpn import __version__
from bulwark_vpn.errors import ErrorCode, InputError, UnsafePathError
from bulwark_vpn.fsutil import PRIVATE_FILE, disk_error

FORMAT = "bulwark-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "bulwark.db"
AGE_MAGIC = b"age-encryption.org/v1\n"
AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
GZIP_MAGIC = b"\x1f\x8b"
MAX_MANIFEST = 64 * 1024
# A store of 65,000 peers is about 30 MB; far above any real gateway, far below a decompression bomb's aim.
MAX_DATABASE = 2 * 1024**3
MAX_ENCRYPTED = MAX_DATABASE + 16 * 1024**2
_CHUNK = 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[A-Za-z0-9+/]{43}=")
_VERSION = re.compile(r"[0-9A-Za-z.+-]{1,40}")


class Passphrase:
    """A backup passphrase: never shown in a repr, a log line or an error."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        if not isinstance(text, str) or not text:
            raise InputError("empty passphrase", None, "give a passphrase of at least one character")
        if len(text) > 1024:
            raise InputError("passphrase too long", None, "use at most 1024 characters")
        self._text = text

    def reveal(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return "Passphrase(hidden)"

    __str__ = __repr__


@dataclass(frozen=True)
class Manifest:
    """What a backup says about itself (each value is checked against the snapshot on restore)."""

    bulwark_version: str
    schema_version: int
    peer_count: int
    created_at: str
    server_public_key: str | None
    sha256: str
    size: int
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": self.format_version, "bulwark_version": self.bulwark_version,
                "schema_version": self.schema_version, "peer_count": self.peer_count, "created_at": self.created_at,
                "server_public_key": self.server_public_key, "sha256": self.sha256, "size": self.size}


def bad(path: Path, problem: str, hint: str = "use another backup (this one cannot be restored)",
        code: ErrorCode | None = None) -> InputError:
    """The one line a refused backup gets: the problem, the file, what to do."""
    return InputError(f"cannot restore the backup: {problem}", str(path), hint, code=code)


def file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# -- writing ----------------------------------------------------------------------------------------------


def build_archive(database: Path, manifest: Manifest, *, level: int = 1) -> bytes:
    """The archive's bytes (gzip level 1: keys do not compress, speed matters at 65,000 peers)."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        body = (json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n").encode()
        tar.addfile(_member(MANIFEST, len(body)), io.BytesIO(body))
        with open(database, "rb") as fh:
            tar.addfile(_member(DATABASE, manifest.size), fh)
    return raw.getvalue()


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = PRIVATE_FILE
    info.mtime = int(time.time())
    return info


def encrypt(data: bytes, passphrase: Passphrase) -> bytes:
    """The age format with a passphrase (scrypt): `age -d FILE` opens it."""
    import pyrage

    return bytes(pyrage.passphrase.encrypt(data, passphrase.reveal()))


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` 0600, atomically (temp + fsync + rename + fsync of the folder), never over a link or
    anything but a regular file; the temp is created O_EXCL|O_NOFOLLOW beside the target."""
    folder = path.parent
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise disk_error(exc, path) from None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise UnsafePathError("the output file is a symbolic link", str(path),
                              "Bulwark never writes a backup through a link: give the real path")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise UnsafePathError("the output path is not a regular file", str(path), "give a file name")
    tmp = folder / f".{path.name}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    except OSError as exc:
        raise disk_error(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), PRIVATE_FILE)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- reading ----------------------------------------------------------------------------------------------


def read_source(path: Path) -> bytes:
    """A backup file's bytes: a regular file (a FIFO or device is refused), within the size limit."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise InputError("cannot restore the backup: no such file", str(path), "check the path") from None
    except OSError as exc:
        raise InputError(f"cannot restore the backup: cannot read it ({exc.strerror})", str(path),
                         "check the path and its permissions") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise bad(path, "not a regular file", "give the backup file itself")
        if info.st_size > MAX_ENCRYPTED:
            raise bad(path, f"larger than {MAX_ENCRYPTED // 1024**2} MiB", "this is not a Bulwark backup")
        return fh.read(MAX_ENCRYPTED + 1)


def is_encrypted(data: bytes) -> bool:
    return data.startswith(AGE_MAGIC) or data.lstrip().startswith(AGE_ARMOR)


def decrypt(path: Path, data: bytes, passphrase: Passphrase | None) -> bytes:
    """The archive inside an age file; a wrong passphrase, a truncated or altered file each said as such."""
    if passphrase is None:
        raise bad(path, "it is encrypted and no passphrase was given",
                  "give the passphrase (from a prompt, a file or standard input)")
    import pyrage

    try:
        return bytes(pyrage.passphrase.decrypt(data, passphrase.reveal()))
    except pyrage.DecryptError as exc:
        text = str(exc).lower()
        if "incomplete" in text or "truncat" in text or "eof" in text:
            raise bad(path, "the encrypted file is truncated") from None
        if "header" in text or "parse" in text or "invalid" in text and "mac" not in text:
            raise bad(path, f"the encrypted file is damaged ({exc})") from None
        raise bad(path, "wrong passphrase (or the encrypted file was altered)",
                  "give the passphrase used for 'bulwark backup --encrypt'") from None


class _Limited(io.RawIOBase):
    """A read-only stream that refuses to yield more than `limit` bytes (a decompression bomb stops here)."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self._inner = inner
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            raise _TooLarge
        view = memoryview(buffer)[: min(len(buffer), self._left)]
        data = self._inner.read(len(view))
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)


class _TooLarge(Exception):
    pass


def _members(path: Path, archive: bytes) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    if not archive.startswith(GZIP_MAGIC):
        raise bad(path, "not a Bulwark backup (neither a gzip archive nor an age-encrypted file)",
                  "give a file made by 'bulwark backup'")
    _check_compressed(path, archive)
    gz = gzip.GzipFile(fileobj=io.BytesIO(archive), mode="rb")
    # The whole archive may not unpack to more than the two members' limits plus tar's own blocks.
    stream = io.BufferedReader(_Limited(gz,  # type: ignore[arg-type]
                                                MAX_MANIFEST + MAX_DATABASE + 64 * 1024), _CHUNK)
    tar = tarfile.open(fileobj=stream, mode="r|")
    for member in tar:
        yield member, tar.extractfile(member) if member.isreg() else None  # type: ignore[misc]


def _check_compressed(path: Path, archive: bytes) -> None:
    """One pass over the gzip stream, output discarded in bounded chunks: a stream that stops before its end is
    truncated (or damaged there), a decoding error or a bad CRC is damage, and trailing bytes are refused."""
    limit = MAX_MANIFEST + MAX_DATABASE + 64 * 1024
    decoder = zlib.decompressobj(wbits=31)
    pending, total = archive, 0
    try:
        while not decoder.eof:
            if not pending:
                raise bad(path, "the file is truncated or damaged (its compressed data ends early)")
            total += len(decoder.decompress(pending, _CHUNK))
            pending = decoder.unconsumed_tail
            if total > limit:
                raise bad(path, "it unpacks to more than the size limit", "it is not a Bulwark backup")
    except zlib.error as exc:
        raise bad(path, f"the archive is damaged ({exc})") from None
    if decoder.unused_data:
        raise bad(path, "the archive is damaged (bytes after its end)")


def read_archive(path: Path, archive: bytes, database_out: IO[bytes]) -> Manifest:
    """Check the archive and copy its snapshot to `database_out`; return the manifest (checksum verified)."""
    manifest: Manifest | None = None
    seen: set[str] = set()
    try:
        for member, fh in _members(path, archive):
            name = member.name
            if name in seen:
                raise bad(path, f"it holds '{_shown(name)}' twice", "it was altered: use another backup")
            seen.add(name)
            if name not in (MANIFEST, DATABASE) or not member.isreg() or fh is None:
                raise bad(path, f"unexpected member '{_shown(name)}' ({_kind(member)})",
                          "a Bulwark backup holds only manifest.json and bulwark.db: it was altered or is not one")
            if name == MANIFEST:
                if member.size > MAX_MANIFEST:
                    raise bad(path, "the manifest is too large")
                manifest = parse_manifest(path, fh.read(MAX_MANIFEST + 1))
            else:
                if manifest is None:
                    raise bad(path, "the snapshot comes before the manifest", "it is not a Bulwark backup")
                if member.size != manifest.size:
                    raise bad(path, "the snapshot's size does not match the manifest",
                              "the file was altered or damaged: use another backup")
                _copy_checked(path, fh, database_out, manifest)
    except _TooLarge:
        raise bad(path, "it unpacks to more than the size limit", "it is not a Bulwark backup") from None
    except (EOFError, tarfile.ReadError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        text = str(exc).lower()
        if isinstance(exc, EOFError) or "end" in text or "truncat" in text or "unexpected" in text:
            raise bad(path, "the file is truncated or damaged (it ends before the archive does)") from None
        raise bad(path, f"the archive is damaged ({exc})") from None
    if manifest is None:
        raise bad(path, "no manifest.json inside", "it is not a Bulwark backup")
    if DATABASE not in seen:
        raise bad(path, "no bulwark.db inside", "it is not a whole Bulwark backup")
    return manifest


def _copy_checked(path: Path, fh: IO[bytes], out: IO[bytes], manifest: Manifest) -> None:
    digest = hashlib.sha256()
    size = 0
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        try:
            out.write(chunk)
        except OSError as exc:
            raise disk_error(exc, getattr(out, "name", "?")) from None
    if size != manifest.size:
        raise bad(path, "the file is truncated (the snapshot ends early)")
    if digest.hexdigest() != manifest.sha256:
        raise bad(path, "the checksum does not match (the snapshot was altered or damaged)",
                  "use another backup: this one cannot be trusted")


def parse_manifest(path: Path, raw: bytes) -> Manifest:
    """The manifest, every field checked for type and form; a newer format is refused with the upgrade hint."""
    try:
        data = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise bad(path, "the manifest is not valid JSON", "it was altered or is not a Bulwark backup") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad(path, "not a Bulwark backup (no bulwark-backup manifest)", "give a file made by 'bulwark backup'")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise bad(path, "the manifest has no valid format_version")
    if version > FORMAT_VERSION:
        raise bad(path, f"it was made by a newer Bulwark (backup format {version}, this one reads "
                  f"{FORMAT_VERSION})", "upgrade Bulwark to restore it", code=ErrorCode.STORE_NEWER)

    def integer(key: str, low: int, high: int) -> int:
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise bad(path, f"the manifest's {key} is not valid", "it was altered: use another backup")
        return value

    def text(key: str, pattern: re.Pattern[str], optional: bool = False) -> str | None:
        value = data.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise bad(path, f"the manifest's {key} is not valid", "it was altered: use another backup")
        return value

    created = data.get("created_at")
    if not isinstance(created, str) or not re.fullmatch(r"[0-9TZ:.+-]{10,40}", created):
        raise bad(path, "the manifest's created_at is not valid", "it was altered: use another backup")
    return Manifest(
        bulwark_version=text("bulwark_version", _VERSION) or "",
        schema_version=integer("schema_version", 1, 10_000),
        peer_count=integer("peer_count", 0, 100_000_000),
        created_at=created,
        server_public_key=text("server_public_key", _KEY, optional=True),
        sha256=text("sha256", _SHA256) or "",
        size=integer("size", 1, MAX_DATABASE),
        format_version=version,
    )


def _shown(name: str) -> str:
    from bulwark_vpn.errors import show_value

    return show_value(name)[:60]


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym() or member.islnk():
        return "a link"
    if member.isdir():
        return "a folder"
    if member.isreg():
        return "a file"
    return "a special file"


def new_manifest(database: Path, *, schema_version: int, peer_count: int, server_public_key: str | None) -> Manifest:
    sha256, size = file_digest(database)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return Manifest(__version__, schema_version, peer_count, created, server_public_key, sha256, size)
