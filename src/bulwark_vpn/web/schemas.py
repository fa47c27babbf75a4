"""The API's request and response shapes, for the OpenAPI document and for checking responses against it.

Request fields arrive as plain JSON values and go through the service's parsers (the same as the CLI's): pydantic
here only checks the JSON types and sizes. Response models mirror the service results' `to_dict()`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    # Strict: JSON true is not the number 1, and 5 is not the text "5" (the service's parsers take it from there).
    model_config = ConfigDict(extra="forbid", strict=True)


Text = Field(max_length=4096)


class ErrorBody(Model):
    code: str
    message: str
    value: str | None = None
    hint: str | None = None


class ErrorOut(Model):
    error: ErrorBody


class HealthOut(Model):
    ok: bool


# -- peers ----------------------------------------------------------------------------------------------------

class PeerOut(Model):
    name: str
    public_key: str
    address4: str
    address6: str | None
    allowed_ips: list[str]
    server_allowed_ips: list[str]
    keepalive: int | None
    enabled: bool
    has_private_key: bool
    config_filename: str
    owner: str | None
    expires_at: float | None
    expires: str | None
    expired: bool


class PeerListOut(Model):
    peers: list[PeerOut]
    total: int
    offset: int


class PeersResultOut(Model):
    action: str
    peers: list[PeerOut]


class PeerCreate(Model):
    names: list[str] = Field(min_length=1, max_length=100)
    allowed_ips: str | list[str] | None = None
    keepalive: int | str | None = None
    public_key: str | None = Field(default=None, max_length=100)
    owner: str | None = Field(default=None, max_length=100)
    expires: str | None = Field(default=None, max_length=100)
    server_allowed_ips: str | list[str] | None = None


class PeerUpdate(Model):
    allowed_ips: str | list[str] | None = None
    keepalive: int | str | None = None
    expires: str | None = Field(default=None, max_length=100)
    owner: str | None = Field(default=None, max_length=100)
    clear: list[str] = Field(default_factory=list, max_length=10)


class PeerConfigOut(Model):
    name: str
    filename: str
    text: str


class TrafficPoint(Model):
    at: int
    rx: int
    tx: int


class TrafficOut(Model):
    peer: str | None
    range: str
    resolution: int
    points: list[TrafficPoint]


# -- status and doctor ----------------------------------------------------------------------------------------

class PeerStatusOut(Model):
    name: str
    public_key: str
    address4: str
    address6: str | None
    enabled: bool
    endpoint: str | None
    latest_handshake: int
    rx_bytes: int
    tx_bytes: int
    online: bool
    expired: bool = False


class StatusOut(Model):
    model_config = ConfigDict(extra="allow")

    interface: str
    up: bool
    backend: str | None
    pid: int | None
    listen_port: int | None
    public_key: str
    addresses: list[str]
    peers: list[PeerStatusOut]
    peers_total: int = 0
    peers_online: int = 0


class CheckOut(Model):
    name: str
    status: str
    evidence: str
    fix: str | None
    fixable: bool


class FixOut(Model):
    name: str
    ok: bool
    detail: str


class DoctorOut(Model):
    checks: list[CheckOut]
    fixes: list[FixOut]
    declined: bool
    failed: bool
    at: float | None = None


# -- accounts and sessions ------------------------------------------------------------------------------------

class SignInBody(Model):
    user: str = Field(max_length=100)
    password: str = Field(max_length=300)


class BackupBody(Model):
    # Checked by the backup's own passphrase rule (1 to 1024 characters); never logged, never in a URL.
    passphrase: str | None = Field(None, max_length=1024)


class CodeBody(Model):
    code: str = Field(max_length=40)


class PasswordChange(Model):
    old_password: str = Field(max_length=300)
    new_password: str = Field(max_length=300)


class SetupBody(Model):
    token: str = Field(max_length=200)
    password: str = Field(max_length=300)


class SessionOut(Model):
    user: str
    role: str
    csrf: str
    mfa_required: bool
    enrol_required: bool


class TotpEnrolmentOut(Model):
    secret: str
    uri: str
    qr_svg: str


class RecoveryCodesOut(Model):
    recovery_codes: list[str]


class UserOut(Model):
    name: str
    role: str
    peer_limit: int | None
    totp_enabled: bool
    require_2fa: bool
    has_password: bool
    created_at: float
    created: str | None
    peers: int
    recovery_codes_left: int


class UserListOut(Model):
    users: list[UserOut]
    total: int


class SetupLinkOut(Model):
    user: str
    url: str
    expires_at: float
    expires: str | None


class UserAddedOut(Model):
    user: UserOut
    setup: SetupLinkOut | None


class UserCreate(Model):
    name: str = Field(max_length=100)
    role: str = Field(default="user", max_length=20)
    peer_limit: int | None = None
    password: str | None = Field(default=None, max_length=300)


class UserUpdate(Model):
    role: str | None = Field(default=None, max_length=20)
    peer_limit: int | None = None
    clear_peer_limit: bool = False
    require_2fa: bool | None = None


class TokenOut(Model):
    id: int
    name: str
    owner: str
    scopes: list[str]
    prefix: str
    created_at: float
    expires_at: float | None
    expires: str | None
    last_used_at: float | None
    last_used: str | None
    last_used_from: str | None
    revoked: bool


class NewTokenOut(TokenOut):
    token: str


class TokenListOut(Model):
    tokens: list[TokenOut]
    total: int


class TokenCreate(Model):
    name: str = Field(max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=10)
    expires: str | None = Field(default=None, max_length=100)
    owner: str | None = Field(default=None, max_length=100)


# -- share links ----------------------------------------------------------------------------------------------

class ShareOut(Model):
    id: int
    peer: str
    created_by: str
    created_at: float
    expires_at: float
    expires: str | None
    used: bool
    revoked: bool


class NewShareOut(ShareOut):
    url: str


class ShareListOut(Model):
    shares: list[ShareOut]
    total: int


class ShareCreate(Model):
    expires: str | None = Field(default=None, max_length=20)


class RedeemBody(Model):
    token: str = Field(max_length=200)


class RedeemedOut(Model):
    name: str
    filename: str
    text: str
    qr_svg: str | None


# -- audit and settings ---------------------------------------------------------------------------------------

class AuditEntryOut(Model):
    id: int
    at: float
    actor: str
    via: str
    address: str | None
    operation: str
    target: str | None
    result: str
    detail: str | None


class AuditOut(Model):
    entries: list[AuditEntryOut]
    total: int
    offset: int


class SettingsOut(Model):
    model_config = ConfigDict(extra="allow")

    settings: dict[str, Any]
    safe_to_change: list[str]


class SettingsUpdate(Model):
    model_config = ConfigDict(extra="allow")
