"""The state store: a protocol (`base.Store`) and today's SQLite implementation behind it.

Open a store with `open_store`; everything else (the service, the supervisor, the doctor, deploy) sees only the
protocol and `StoreError`s.
"""

from __future__ import annotations

from pathlib import Path

from bulwark_vpn.store.base import (
    REMOVE_FOLDER,
    RENDER_ALL_PEERS,
    RENDER_PEER,
    RENDER_SERVER,
    PeerRow,
    StatusRow,
    Store,
)
from bulwark_vpn.store.sqlite import (
    DEFAULT_LOCK_TIMEOUT,
    SCHEMA_VERSION,
    STORE_NAME,
    SQLiteStore,
)

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "PeerRow",
    "StatusRow",
    "REMOVE_FOLDER",
    "RENDER_ALL_PEERS",
    "RENDER_PEER",
    "RENDER_SERVER",
    "SCHEMA_VERSION",
    "STORE_NAME",
    "SQLiteStore",
    "Store",
    "open_store",
]


def open_store(config_dir: Path, *, create: bool = False, read_only: bool = False,
               lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Store:
    """The store of a config folder. `create` makes a new one (init); `read_only` never writes (doctor, status)."""
    return SQLiteStore.open(config_dir, create=create, read_only=read_only, lock_timeout=lock_timeout)
