"""Bulwark's exception tree, its error codes and what each code means to the CLI and the HTTP API.

BulwarkError(message, value=None, hint=None, code=...)
├── InputError          bad input (a name, CIDR, port, key, endpoint, file): nothing was changed
│   ├── NotFoundError   the named peer, user, token, interface or folder does not exist
│   ├── ConflictError   a duplicate name, a full subnet, an address in use, a gateway already running
│   └── UnsafePathError a symbolic link (or another foreign file) where Bulwark expects its own file
├── StoreError          the store cannot be read, is damaged, is locked, is newer than this Bulwark
├── RenderError         a renderer was handed a value that could add a line or a section (a bug or an attack)
├── AuthError           the HTTP API: not signed in, not allowed, throttled
└── SystemActionError   a system command (ip, wg, nft, wireguard-go) or the disk failed

Every error renders as one line: `<message>: '<value>': <hint>` (value and hint when known). Control characters
and line separators are shown escaped in all three parts (a message often interpolates a path or a stored name), so a
hostile value can never add a line to a log or a terminal.
`ERROR_TABLE` maps each code to the CLI's exit code and the API's HTTP status: one policy, two renderings.
Core messages never name CLI flags; the CLI adds them where it knows which flag was meant.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    BAD_INPUT = 2


class ErrorCode(StrEnum):
    """Stable machine-readable codes: the `code` field of `--json` errors and of every API error body."""

    INVALID_VALUE = "invalid_value"
    NOT_FOUND = "not_found"
    NOT_INITIALIZED = "not_initialized"
    CONFLICT = "conflict"
    ALREADY_RUNNING = "already_running"
    NOT_RUNNING = "not_running"
    OTHER_GATEWAY = "other_gateway"
    UNSAFE_PATH = "unsafe_path"
    UNSAFE_VALUE = "unsafe_value"
    STORE_DAMAGED = "store_damaged"
    STORE_NEWER = "store_newer"
    STORE_LOCKED = "store_locked"
    READ_ONLY = "read_only"
    DISK_FULL = "disk_full"
    SYSTEM_ACTION = "system_action"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    THROTTLED = "throttled"
    TOO_LARGE = "too_large"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INTERNAL = "internal"


# code -> (exit code, HTTP status). Tested: every code has a row, and the two columns agree in kind
# (a bad-input exit code is a 4xx status).
ERROR_TABLE: dict[ErrorCode, tuple[ExitCode, int]] = {
    ErrorCode.INVALID_VALUE: (ExitCode.BAD_INPUT, 422),
    ErrorCode.NOT_FOUND: (ExitCode.BAD_INPUT, 404),
    ErrorCode.NOT_INITIALIZED: (ExitCode.BAD_INPUT, 409),
    ErrorCode.CONFLICT: (ExitCode.BAD_INPUT, 409),
    ErrorCode.ALREADY_RUNNING: (ExitCode.BAD_INPUT, 409),
    ErrorCode.NOT_RUNNING: (ExitCode.BAD_INPUT, 409),
    ErrorCode.OTHER_GATEWAY: (ExitCode.BAD_INPUT, 409),
    ErrorCode.UNSAFE_PATH: (ExitCode.BAD_INPUT, 409),
    ErrorCode.UNSAFE_VALUE: (ExitCode.BAD_INPUT, 422),
    ErrorCode.STORE_DAMAGED: (ExitCode.BAD_INPUT, 500),
    ErrorCode.STORE_NEWER: (ExitCode.BAD_INPUT, 500),
    ErrorCode.STORE_LOCKED: (ExitCode.FAILURE, 503),
    ErrorCode.READ_ONLY: (ExitCode.FAILURE, 503),
    ErrorCode.DISK_FULL: (ExitCode.FAILURE, 507),
    ErrorCode.SYSTEM_ACTION: (ExitCode.FAILURE, 500),
    ErrorCode.UNAUTHENTICATED: (ExitCode.BAD_INPUT, 401),
    ErrorCode.FORBIDDEN: (ExitCode.BAD_INPUT, 403),
    ErrorCode.THROTTLED: (ExitCode.FAILURE, 429),
    ErrorCode.TOO_LARGE: (ExitCode.BAD_INPUT, 413),
    ErrorCode.METHOD_NOT_ALLOWED: (ExitCode.BAD_INPUT, 405),
    ErrorCode.INTERNAL: (ExitCode.FAILURE, 500),
}

MAX_SHOWN = 120
_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_LINE_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(text: str, named: dict[str, str]) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char in named:
            out.append(named[char])
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or code in (0x2028, 0x2029) or not char.isprintable():
            out.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def show_value(value: object) -> str:
    """A value as it may appear inside one line: control characters and separators escaped, length capped."""
    shown = _escape(value if isinstance(value, str) else repr(value), _NAMED_ESCAPES)
    return shown if len(shown) <= MAX_SHOWN else shown[: MAX_SHOWN - 3] + "..."


def one_line(text: str) -> str:
    """Message text made safe for one line: control characters and separators escaped (a backslash stays one, so
    ordinary text reads as written). Messages often carry a path, a file name or a store value interpolated by an
    f-string; this is what keeps them on one line whatever those hold."""
    return _escape(text, _LINE_ESCAPES)


class BulwarkError(Exception):
    """Base of all errors the core raises on purpose."""

    default_code = ErrorCode.INTERNAL

    def __init__(self, message: str, value: object = None, hint: str | None = None, *,
                 code: ErrorCode | None = None) -> None:
        self.message = message
        self.value = value
        self.hint = hint
        self.code = code or self.default_code
        super().__init__(self.line())

    def line(self) -> str:
        """The one line users read: `message: 'value': hint`."""
        parts = [one_line(self.message)]
        if self.value is not None:
            parts.append(f"'{show_value(self.value)}'")
        if self.hint:
            parts.append(one_line(self.hint))
        return ": ".join(parts)

    def __str__(self) -> str:
        return self.line()

    @property
    def exit_code(self) -> ExitCode:
        return ERROR_TABLE[self.code][0]

    @property
    def http_status(self) -> int:
        return ERROR_TABLE[self.code][1]

    def to_dict(self) -> dict[str, Any]:
        """The one JSON error shape of `--json` and of the HTTP API."""
        return {
            "code": str(self.code),
            "message": self.line(),
            "value": None if self.value is None else show_value(self.value),
            "hint": self.hint,
        }


class InputError(BulwarkError, ValueError):
    """The user gave a value we cannot accept; nothing was changed."""

    default_code = ErrorCode.INVALID_VALUE


class NotFoundError(InputError):
    """A named object (peer, user, interface, folder) does not exist."""

    default_code = ErrorCode.NOT_FOUND


class ConflictError(InputError):
    """The request collides with existing state (duplicate name, full subnet, gateway running)."""

    default_code = ErrorCode.CONFLICT


class UnsafePathError(InputError):
    """A symbolic link or a foreign file where Bulwark expects its own: never followed, never replaced."""

    default_code = ErrorCode.UNSAFE_PATH


class StoreError(BulwarkError):
    """The store is unreadable, damaged, locked or from a newer Bulwark."""

    default_code = ErrorCode.STORE_DAMAGED


class RenderError(BulwarkError):
    """A renderer refused a value that could add a line or a section to the file it writes."""

    default_code = ErrorCode.UNSAFE_VALUE


class AuthError(BulwarkError):
    """The HTTP API refused a caller: unauthenticated, forbidden or throttled."""

    default_code = ErrorCode.UNAUTHENTICATED


class SystemActionError(BulwarkError):
    """A command that changes the system failed, or the disk refused a write."""

    default_code = ErrorCode.SYSTEM_ACTION
