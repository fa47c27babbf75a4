"""Accounts: users and their roles, peer limits, passwords, TOTP second factor and recovery codes, setup links.

There is no default password: `user add` makes a single-use setup link (or takes a password from stdin) and the
person sets their own. An admin may require TOTP for everyone (`require_2fa`) or per user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from bulwark_vpn.errors import ConflictError, ErrorCode, InputError, NotFoundError
from bulwark_vpn.service import secrets as sec
from bulwark_vpn.service.audit import audited, record
from bulwark_vpn.service.context import Context
from bulwark_vpn.store import Store
from bulwark_vpn.store.records import ROLES, UserRecord
from bulwark_vpn.values import format_moment, parse_bool, parse_duration, parse_int, parse_user_name

log = logging.getLogger("bulwark_vpn")

SETUP_LINK_LIFETIME = 72 * 3600


@dataclass(frozen=True)
class UserInfo:
    name: str
    role: str
    peer_limit: int | None
    totp_enabled: bool
    require_2fa: bool
    has_password: bool
    created_at: float
    peers: int
    recovery_codes_left: int

    @classmethod
    def of(cls, user: UserRecord, store: Store) -> UserInfo:
        return cls(user.name, user.role, user.peer_limit, user.totp_enabled, user.require_2fa,
                   user.password_hash is not None, user.created_at, store.owned_count(user.name),
                   store.recovery_codes_left(user.name))

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "created": format_moment(self.created_at)}


@dataclass(frozen=True)
class UserList:
    users: list[UserInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"users": [u.to_dict() for u in self.users], "total": len(self.users)}


@dataclass(frozen=True)
class SetupLink:
    """A single-use link that lets a new user set a password. The token travels in the URL fragment (after #),
    which browsers never send to the server, so it appears in no request line or access log."""

    user: str
    url: str
    token: sec.Secret
    expires_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "url": self.url, "expires_at": self.expires_at,
                "expires": format_moment(self.expires_at)}


@dataclass(frozen=True)
class UserAdded:
    user: UserInfo
    setup: SetupLink | None

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user.to_dict(), "setup": self.setup.to_dict() if self.setup else None}


@dataclass(frozen=True)
class AddUserRequest:
    name: str
    role: str = "user"
    peer_limit: int | None = None
    password: sec.Secret | None = None

    @classmethod
    def parse(cls, name: object, *, role: object = "user", peer_limit: object = None,
              password: object = None) -> AddUserRequest:
        if role not in ROLES:
            raise InputError("invalid role", role, "use admin or user")
        user = parse_user_name(name)
        secret = None if password is None else sec.Secret(sec.check_password_policy(password, user))
        return cls(user, str(role), None if peer_limit is None else parse_int(peer_limit, 0, 65534, "peer limit",
                                                                               "peers this user may own"), secret)


@dataclass(frozen=True)
class UpdateUserRequest:
    """A partial update: None leaves the field as it is; `clear_peer_limit` removes the limit."""

    name: str
    role: str | None = None
    peer_limit: int | None = None
    clear_peer_limit: bool = False
    require_2fa: bool | None = None

    @classmethod
    def parse(cls, name: object, *, role: object = None, peer_limit: object = None, require_2fa: object = None,
              clear_peer_limit: object = False) -> UpdateUserRequest:
        if role is not None and role not in ROLES:
            raise InputError("invalid role", role, "use admin or user")
        return cls(parse_user_name(name), None if role is None else str(role),
                   None if peer_limit is None else parse_int(peer_limit, 0, 65534, "peer limit", "peers it may own"),
                   parse_bool(clear_peer_limit, "clear peer limit"),
                   None if require_2fa is None else parse_bool(require_2fa, "require 2FA"))


def base_url(store: Store) -> str:
    """Where people open the web pages: the `api_url` setting, else the gateway's tunnel address and API port."""
    settings = store.settings()
    if settings.api_url:
        return settings.api_url
    return f"http://{settings.server_address4.ip}:{settings.api_port}"


def _new_setup_link(ctx: Context, store: Store, user: str, lifetime: int = SETUP_LINK_LIFETIME) -> SetupLink:
    token = sec.random_token()
    now = ctx.clock()
    store.add_setup_link(sec.token_hash(token), user, now, now + lifetime)
    return SetupLink(user, f"{base_url(store)}/setup#{token}", sec.Secret(token), now + lifetime)


def add_user(ctx: Context, request: AddUserRequest) -> UserAdded:
    """A new account; without a password, a setup link the person uses to choose one. Admins only."""
    ctx.actor.require_admin()
    with audited(ctx, "user.add", request.name), ctx.open_store() as store, store.transaction():
        now = ctx.clock()
        password_hash = sec.hash_password(request.password.reveal()) if request.password else None
        store.insert_user(UserRecord(request.name, request.role, password_hash, None, False, 0, request.peer_limit,
                                     False, now, now if password_hash else None))
        setup = None if request.password else _new_setup_link(ctx, store, request.name)
        record(ctx, store, "user.add", request.name, detail=f"role {request.role}")
        return UserAdded(UserInfo.of(store.user(request.name), store), setup)


def list_users(ctx: Context) -> UserList:
    ctx.actor.require_admin()
    with ctx.open_store(read_only=True) as store:
        return UserList([UserInfo.of(u, store) for u in store.users()])


def show_user(ctx: Context, name: object) -> UserInfo:
    """A user's account: admins see anyone's, a user only their own."""
    wanted = parse_user_name(name)
    if not ctx.actor.sees_all and wanted != ctx.actor.name:
        raise NotFoundError("no user with this name", wanted, "see 'bulwark user list'")
    with ctx.open_store(read_only=True) as store:
        return UserInfo.of(store.user(wanted), store)


def _last_admin_guard(store: Store, user: UserRecord, new_role: str | None, removing: bool) -> None:
    losing = user.role == "admin" and (removing or (new_role is not None and new_role != "admin"))
    if losing and store.user_count("admin") <= 1:
        raise ConflictError("this is the last admin", user.name, "make another user an admin first")


def update_user(ctx: Context, request: UpdateUserRequest) -> UserInfo:
    ctx.actor.require_admin()
    with audited(ctx, "user.update", request.name), ctx.open_store() as store, store.transaction():
        user = store.user(request.name)
        _last_admin_guard(store, user, request.role, removing=False)
        peer_limit = None if request.clear_peer_limit else (
            request.peer_limit if request.peer_limit is not None else user.peer_limit)
        changed = replace(user, role=request.role or user.role, peer_limit=peer_limit,
                          require_2fa=user.require_2fa if request.require_2fa is None else request.require_2fa)
        store.update_user(changed)
        if changed.role != user.role:
            store.delete_user_sessions(user.name)  # a role change takes effect at the next sign-in
        record(ctx, store, "user.update", user.name)
        return UserInfo.of(changed, store)


def remove_user(ctx: Context, name: object) -> UserInfo:
    """Remove an account, its sessions, setup links and recovery codes; its tokens are revoked. Its peers stay,
    owned by nobody (admins manage them), so no device loses its tunnel."""
    ctx.actor.require_admin()
    wanted = parse_user_name(name)
    with audited(ctx, "user.remove", wanted), ctx.open_store() as store, store.transaction():
        user = store.user(wanted)
        _last_admin_guard(store, user, None, removing=True)
        info = UserInfo.of(user, store)
        for peer_name in list(store.iter_owned(wanted)):
            store.update_peer(replace(store.peer(peer_name), owner=None))
        store.delete_user(wanted)
        record(ctx, store, "user.remove", wanted)
        return info


def reset_2fa(ctx: Context, name: object) -> UserInfo:
    """Turn a user's TOTP off (a lost phone): they enrol again at the next sign-in when 2FA is required."""
    ctx.actor.require_admin()
    wanted = parse_user_name(name)
    with audited(ctx, "user.reset_2fa", wanted), ctx.open_store() as store, store.transaction():
        user = store.user(wanted)
        store.update_user(replace(user, totp_secret=None, totp_enabled=False, totp_last_step=0))
        store.set_recovery_codes(wanted, [])
        store.delete_user_sessions(wanted)
        record(ctx, store, "user.reset_2fa", wanted)
        return UserInfo.of(store.user(wanted), store)


def new_setup_link(ctx: Context, name: object, lifetime: object = None) -> SetupLink:
    """A fresh single-use link for a user to set (or reset) their password; older unused links stop working."""
    ctx.actor.require_admin()
    wanted = parse_user_name(name)
    seconds = SETUP_LINK_LIFETIME if lifetime is None else parse_duration(lifetime, "link lifetime", low=300)
    with audited(ctx, "user.setup_link", wanted), ctx.open_store() as store, store.transaction():
        store.user(wanted)
        link = _new_setup_link(ctx, store, wanted, seconds)
        record(ctx, store, "user.setup_link", wanted)
        return link


def complete_setup(ctx: Context, token: object, password: object) -> UserInfo:
    """A person with a setup link chooses their password (anonymous: the link is the credential). Single use."""
    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        raise InputError("this setup link is not valid", None, "ask an admin for a new one",
                         code=ErrorCode.NOT_FOUND)
    with ctx.open_store() as store, store.transaction():
        user_name = store.take_setup_link(sec.token_hash(token), ctx.clock())
        if user_name is None:
            raise NotFoundError("this setup link is not valid (used, expired or replaced)", None,
                                "ask an admin for a new one")
        user = store.user(user_name)
        chosen = sec.check_password_policy(password, user.name)
        now = ctx.clock()
        store.update_user(replace(user, password_hash=sec.hash_password(chosen), password_changed_at=now))
        store.delete_user_sessions(user.name)
        record(ctx.as_actor(replace(ctx.actor, kind="user", name=user.name)), store, "user.setup", user.name)
        return UserInfo.of(store.user(user.name), store)


def add_user_with_password(ctx: Context, name: object, password: object, *, admin: bool = False,
                           peer_limit: object = None) -> UserAdded:
    return add_user(ctx, AddUserRequest.parse(name, role="admin" if admin else "user", peer_limit=peer_limit,
                                              password=password))
