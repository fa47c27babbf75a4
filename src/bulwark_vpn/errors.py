"""Bulwark's exception tree and exit codes, documented in one place.

BulwarkError
├── InputError        bad input from the user (a name, CIDR, port, key, endpoint, file): exit 2, nothing changed
│   ├── NotFoundError the named peer/interface does not exist
│   └── ConflictError a duplicate name, a full subnet, an address in use
├── StoreError        the store cannot be read or is corrupted: exit 2 (the user must fix the file)
└── SystemActionError a system command (ip, wg, nft, wireguard-go) failed: exit 1

Every message is one line: what failed, the offending value in quotes, then the fix.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    BAD_INPUT = 2


class BulwarkError(Exception):
    """Base of all errors the core raises on purpose."""

    exit_code = ExitCode.FAILURE


class InputError(BulwarkError, ValueError):
    """The user gave a value we cannot accept; nothing was changed."""

    exit_code = ExitCode.BAD_INPUT


class NotFoundError(InputError):
    """A named object (peer, interface) does not exist."""


class ConflictError(InputError):
    """The request collides with existing state (duplicate name, full subnet)."""


class StoreError(BulwarkError):
    """The store is unreadable, corrupted or from a newer Bulwark."""

    exit_code = ExitCode.BAD_INPUT


class SystemActionError(BulwarkError):
    """A command that changes the system failed."""
