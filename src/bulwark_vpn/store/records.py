"""Records of the control plane kept in the store: users, API tokens, browser sessions, login failures, share
links, the audit log and traffic history. Plain data; every secret is stored as a hash, never as given."""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("admin", "user")
SCOPES = ("read", "peers:write", "admin", "metrics")


@dataclass(frozen=True)
class UserRecord:
    name: str
    role: str
    password_hash: str | None
    totp_secret: str | None  # set while enrolling, kept once confirmed
    totp_enabled: bool
    totp_last_step: int  # the last TOTP time step accepted: a code is never accepted twice
    peer_limit: int | None  # how many peers a user may own (None: no limit)
    require_2fa: bool
    created_at: float
    password_changed_at: float | None


@dataclass(frozen=True)
class TokenRecord:
    id: int
    name: str
    owner: str
    scopes: tuple[str, ...]
    prefix: str  # the first characters of the token, to recognise it in a list (never enough to use it)
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    last_used_from: str | None
    revoked_at: float | None


@dataclass(frozen=True)
class SessionRecord:
    user: str
    csrf: str
    created_at: float
    last_seen: float
    mfa_passed: bool
    address: str | None


@dataclass(frozen=True)
class ShareRecord:
    id: int
    peer: str
    created_by: str
    created_at: float
    expires_at: float
    used_at: float | None
    revoked_at: float | None


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: float
    actor: str  # "user:alice", "token:CI (alice)", "cli:root", "supervisor"
    via: str  # cli | api | supervisor
    address: str | None
    operation: str
    target: str | None
    result: str  # ok, or the error code
    detail: str | None
