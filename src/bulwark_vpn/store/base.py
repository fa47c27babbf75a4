"""The store's interface: what the service, the supervisor, the doctor and deploy may ask of any store.

Today's implementation is SQLite (`store.sqlite`); a PostgreSQL store for several gateways will implement the
same protocol. Every driver error comes out as a `StoreError` with a code (damaged, locked, read-only, newer),
never as the driver's own exception.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bulwark_vpn.addressing import Pool
from bulwark_vpn.keys import PrivateKey
from bulwark_vpn.model import Peer, Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Render journal items: what must be (re)written or removed in the config folder.
RENDER_SERVER = "server"
RENDER_ALL_PEERS = "peers"
RENDER_PEER = "peer:"  # + name
REMOVE_FOLDER = "remove:"  # + folder


@dataclass(frozen=True)
class PeerQuery:
    """Which peers a listing wants, and in which order: filtered and paged by the store, not in Python."""

    search: str | None = None  # a substring of the name, the IPv4/IPv6 address or the public key
    enabled: bool | None = None
    sort: str = "created"  # created | name
    descending: bool = False
    offset: int = 0
    limit: int | None = None


@dataclass(frozen=True)
class PeerSummary:
    """A peer as a listing shows it, read as stored text: no secret, no key object, no address parsing."""

    name: str
    public_key: str
    address4: str
    address6: str | None
    allowed_ips: tuple[str, ...] | None  # None: the server's default
    server_allowed_ips: tuple[str, ...]
    keepalive: int | None
    enabled: bool
    has_private_key: bool
    created_at: float


SORTS = ("created", "name")


class Store(Protocol):
    """One gateway's state: settings, server key, peers, address pools, a revision, the render journal."""

    path: Path
    read_only: bool

    def close(self) -> None: ...
    def __enter__(self) -> Store: ...
    def __exit__(self, *exc: object) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """All writes inside commit together or not at all; one writer at a time."""
        ...

    def revision(self) -> int:
        """Bumped by every write: cheap to poll for changes made by other processes."""
        ...

    def schema_version(self) -> int: ...

    def gateway_id(self) -> str | None:
        """The identity a running gateway is bound to (fixed at init)."""
        ...

    def is_initialized(self) -> bool: ...
    def server_key(self) -> PrivateKey | None: ...
    def require_server_key(self) -> PrivateKey: ...
    def set_server_key(self, key: PrivateKey) -> None: ...
    def settings(self) -> Settings: ...
    def save_settings(self, settings: Settings) -> None: ...

    def peers(self) -> list[Peer]: ...
    def peer(self, name: str) -> Peer: ...
    def has_peer(self, name: str) -> bool: ...
    def peer_count(self) -> int: ...

    def peer_summaries(self, query: PeerQuery) -> tuple[list[PeerSummary], int]:
        """One page of peers matching the query, and how many match in all."""
        ...
    def server_peer_rows(self) -> list[tuple]: ...
    def insert_peer(self, peer: Peer) -> None: ...
    def update_peer(self, peer: Peer) -> None: ...
    def delete_peer(self, name: str, pools: tuple[Pool, Pool | None]) -> Peer: ...

    def allocate(self, pool: Pool) -> IPAddress: ...
    def reserve(self, pool: Pool, address: IPAddress) -> None: ...
    def rebase_pool(self, old: Pool, new: Pool, used: Sequence[IPAddress]) -> None: ...

    def pending_renders(self) -> list[str]:
        """Journal items recorded with a change and not yet rendered (see RENDER_*)."""
        ...

    def add_pending(self, items: Sequence[str]) -> None: ...
    def clear_pending(self, items: Sequence[str]) -> None: ...

    def snapshot(self, target: Path) -> None:
        """A consistent copy of the whole store in a new file (taken while others write)."""
        ...
