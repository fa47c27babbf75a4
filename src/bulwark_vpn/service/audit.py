"""The audit log: who (a user, a token, the CLI, the supervisor), what (operation and peer), when, from where, and
the result, kept in the store for a set number of days (`audit_retention_days`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bulwark_vpn.errors import BulwarkError, InputError
from bulwark_vpn.service.context import Context
from bulwark_vpn.store import Store
from bulwark_vpn.store.records import AuditRecord
from bulwark_vpn.values import parse_int, require_text

log = logging.getLogger("bulwark_vpn")


def record(ctx: Context, store: Store, operation: str, target: str | None = None, result: str = "ok",
           detail: str | None = None) -> None:
    """One audit entry, in the caller's transaction when there is one (so it commits with the change)."""
    if store.read_only or store.schema_version() < 3:
        return
    retention = store.settings().audit_retention_days
    store.add_audit(AuditRecord(0, ctx.clock(), ctx.actor.label, ctx.actor.via, ctx.actor.address, operation, target,
                                result, detail), retention)


@contextlib.contextmanager
def audited(ctx: Context, operation: str, target: str | None = None) -> Iterator[None]:
    """Record an operation that failed on the system's side (a 5xx: a command or the disk failed) after its own
    transaction rolled back. Refused input (a 4xx) is not recorded: bad input changes nothing, the store included;
    failed sign-ins are recorded where they happen. A successful operation records itself in its transaction."""
    try:
        yield
    except BulwarkError as exc:
        if exc.http_status >= 500:
            with contextlib.suppress(BulwarkError), ctx.open_store() as store:
                record(ctx, store, operation, target, str(exc.code), exc.line()[:200])
        raise


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    via: str
    address: str | None
    operation: str
    target: str | None
    result: str
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    total: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries], "total": self.total, "offset": self.offset}


@dataclass(frozen=True)
class AuditRequest:
    user: str | None = None  # entries of this user (their sessions and tokens)
    peer: str | None = None
    offset: int = 0
    limit: int = 100

    @classmethod
    def parse(cls, *, user: object = None, peer: object = None, offset: object = 0,
              limit: object = 100) -> AuditRequest:
        from bulwark_vpn.values import parse_peer_name

        name = None
        if user is not None and user != "":
            name = require_text(user, "user", "a user name")
            if len(name) > 64:
                raise InputError("invalid user", name, "at most 64 characters")
        return cls(user=name, peer=parse_peer_name(peer) if peer not in (None, "") else None,
                   offset=parse_int(offset, 0, 10_000_000, "offset", "entries to skip"),
                   limit=parse_int(limit, 1, 1000, "limit", "entries per page"))


def list_audit(ctx: Context, request: AuditRequest | None = None) -> AuditPage:
    """The newest entries first; admins only."""
    ctx.actor.require_admin()
    request = request or AuditRequest()
    with ctx.open_store(read_only=True) as store:
        if store.schema_version() < 3:
            return AuditPage([], 0, request.offset)
        records, total = store.audit(user=request.user, target=request.peer, offset=request.offset,
                                     limit=request.limit)
    return AuditPage([AuditEntry(**r.__dict__) for r in records], total, request.offset)
