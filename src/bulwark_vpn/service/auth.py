"""Signing in and proving who you are: password then TOTP, browser sessions, API tokens, login throttling.

Sessions live in the store (server side): the browser holds a random id, the store its hash, the CSRF token,
when it was made and last used, and whether the second factor passed. Idle and absolute timeouts end them;
signing in makes a new one (never reuses an id), signing out and changing the password delete them.

Throttling lives in the store too, so it holds across restarts and across several API processes on one store:
after 5 failures for an account (counted until its next successful sign-in, a day at most) or 5 within a minute
from a client address, each further attempt must wait (5 s, 10 s, 20 s ... up to 15 min since the last failure).
An attempt counts as a failure from before its password check until it succeeds, so parallel attempts see each
other. Every failure is logged as one line fail2ban can match:
`<time> bulwark: authentication failure for user '<name>' from <address>`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace
from typing import Any

from bulwark_vpn.errors import AuthError, ErrorCode, InputError, NotFoundError, show_value
from bulwark_vpn.service import secrets as sec
from bulwark_vpn.service.actors import Actor
from bulwark_vpn.service.audit import audited, record
from bulwark_vpn.service.context import Context
from bulwark_vpn.store import Store
from bulwark_vpn.store.records import SCOPES, SessionRecord, TokenRecord, UserRecord
from bulwark_vpn.values import format_moment, parse_expiry, parse_token_name, parse_user_name, require_text

log = logging.getLogger("bulwark_vpn.auth")

IDLE_TIMEOUT = 30 * 60
ABSOLUTE_TIMEOUT = 12 * 3600
FREE_FAILURES = 5
FAILURE_WINDOW = 60
FIRST_DELAY = 5
MAX_DELAY = 15 * 60
FAILURE_MEMORY = 86400


def _unauthenticated(message: str = "sign in first") -> AuthError:
    return AuthError("not signed in", None, message, code=ErrorCode.UNAUTHENTICATED)


# -- throttling -----------------------------------------------------------------------------------------

def _wait_needed(store: Store, scope: str, key: str, now: float) -> float:
    """Seconds to wait before another attempt for this account or address (0: go ahead)."""
    if scope == "user":
        # An account's failures count until its next successful sign-in (for a day, as the store keeps them): an
        # attacker who waits out each delay climbs to MAX_DELAY, instead of starting over once a minute passed.
        counted = store.auth_failures(scope, key, now - FAILURE_MEMORY)
    else:
        recent = store.auth_failures(scope, key, now - MAX_DELAY - FAILURE_WINDOW)
        counted = [t for t in recent if t >= recent[-1] - FAILURE_WINDOW] if recent else []
    if len(counted) < FREE_FAILURES:
        return 0.0
    delay = min(MAX_DELAY, FIRST_DELAY * 2 ** min(20, len(counted) - FREE_FAILURES))
    return max(0.0, counted[-1] + delay - now)


def _check_throttle(store: Store, user: str, address: str | None, now: float) -> None:
    waits = [_wait_needed(store, "user", user, now)]
    if address:
        waits.append(_wait_needed(store, "address", address, now))
    wait = max(waits)
    if wait > 0:
        raise AuthError("too many failed sign-ins", None, f"try again in {int(wait) + 1} s",
                        code=ErrorCode.THROTTLED)


def _attempt(ctx: Context, store: Store, user: str, address: str | None) -> float:
    """Check the throttle and count this attempt as a failure, in one write transaction, before the (slow) password
    check: concurrent attempts see each other, so a burst cannot all pass the throttle at once. The moment is
    the attempt's, for `_succeeded` to take back."""
    with store.transaction():
        now = ctx.clock()
        _check_throttle(store, user, address, now)
        store.add_auth_failure("user", user, now)
        if address:
            store.add_auth_failure("address", address, now)
        return now


def _succeeded(store: Store, user: str, address: str | None, attempt: float) -> None:
    store.clear_auth_failures("user", user)
    if address:
        store.forget_auth_failure("address", address, attempt)


def _failed(ctx: Context, store: Store, user: str, address: str | None, why: str,
            counted: bool = False) -> AuthError:
    now = ctx.clock()
    if not counted:
        store.add_auth_failure("user", user, now)
        if address:
            store.add_auth_failure("address", address, now)
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # One line whatever was typed: the name is shown with control characters escaped.
    log.warning("%s bulwark: authentication failure for user '%s' from %s", stamp, show_value(user),
                show_value(address or "-"))
    # The name as typed by anyone on the network: kept escaped, so it cannot add a line (or terminal escapes) to
    # what `bulwark audit` prints.
    record(ctx, store, "auth.login", show_value(user), "unauthenticated", why)
    return AuthError("wrong user name, password or code", None, "check them and try again",
                     code=ErrorCode.UNAUTHENTICATED)


# -- sessions -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SignIn:
    """A session: the id for the cookie (shown once), its CSRF token, and what the person must do next."""

    session: sec.Secret
    csrf: str
    user: str
    role: str
    mfa_required: bool  # the password passed: now the TOTP code (or a recovery code)
    enrol_required: bool  # 2FA is required and not set up: only enrolment is allowed

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "role": self.role, "csrf": self.csrf, "mfa_required": self.mfa_required,
                "enrol_required": self.enrol_required}


def _needs_enrolment(store: Store, user: UserRecord) -> bool:
    return not user.totp_enabled and (user.require_2fa or store.settings().require_2fa)


def _new_session(ctx: Context, store: Store, user: UserRecord, mfa_passed: bool, address: str | None) -> SignIn:
    session = sec.random_token()
    csrf = sec.random_token()
    now = ctx.clock()
    store.add_session(sec.token_hash(session), SessionRecord(user.name, csrf, now, now, mfa_passed, address))
    store.prune_sessions(now - IDLE_TIMEOUT, now - ABSOLUTE_TIMEOUT)
    return SignIn(sec.Secret(session), csrf, user.name, user.role, not mfa_passed and user.totp_enabled,
                  mfa_passed and _needs_enrolment(store, user))


def sign_in(ctx: Context, name: object, password: object, address: str | None) -> SignIn:
    """Step one: user name and password. With TOTP enrolled, the session waits for the code (`second_factor`)."""
    user_name = name if isinstance(name, str) and len(name) <= 64 else ""
    given = password if isinstance(password, str) and len(password) <= sec.MAX_PASSWORD else ""
    with ctx.open_store() as store:
        attempt = _attempt(ctx, store, user_name or "-", address)
        try:
            parse_user_name(user_name)
            user = store.find_user(user_name)
        except InputError:
            user = None
        ok = sec.verify_password(user.password_hash if user else None, given)
        if not ok or user is None:
            with store.transaction():
                error = _failed(ctx, store, user_name or "-", address, "password", counted=True)
            raise error
        with store.transaction():
            _succeeded(store, user.name, address, attempt)
            signed = _new_session(ctx, store, user, mfa_passed=not user.totp_enabled, address=address)
            record(ctx.as_actor(Actor("user", user.name, user.role, via="api", address=address)), store,
                   "auth.login", user.name, detail="password" + (", TOTP next" if user.totp_enabled else ""))
            return signed


class _Refused(Exception):
    def __init__(self, user: str, why: str) -> None:
        self.user, self.why = user, why


def second_factor(ctx: Context, session: str, code: object, address: str | None) -> SignIn:
    """Step two: a TOTP code or a recovery code. The half-signed session is replaced by a new one."""
    with ctx.open_store() as store:
        try:
            return _second_factor(ctx, store, session, code, address)
        except _Refused as refused:
            # Recorded after the attempt's own transaction rolled back, in a transaction of its own.
            with store.transaction():
                error = _failed(ctx, store, refused.user, address, refused.why)
            raise error from None


def _second_factor(ctx: Context, store: Store, session: str, code: object, address: str | None) -> SignIn:
    with store.transaction():
        found = _session(ctx, store, session)
        if found is None:
            raise _unauthenticated()
        user = store.user(found.user)
        _check_throttle(store, user.name, address, ctx.clock())
        text = code if isinstance(code, str) else ""
        step = sec.totp_step(user.totp_secret, text, user.totp_last_step, ctx.clock()) if user.totp_secret else None
        if step is not None:
            store.update_user(replace(user, totp_last_step=step))
            how = "TOTP"
        elif 8 <= len(text) <= 16 and store.use_recovery_code(user.name, sec.recovery_hash(user.name, text),
                                                             ctx.clock()):
            how = "recovery code"
        else:
            raise _Refused(user.name, "second factor")
        store.clear_auth_failures("user", user.name)
        store.delete_session(sec.token_hash(session))
        signed = _new_session(ctx, store, user, mfa_passed=True, address=address)
        record(ctx.as_actor(Actor("user", user.name, user.role, via="api", address=address)), store,
               "auth.login", user.name, detail=how)
        return signed


def _session(ctx: Context, store: Store, session: str) -> SessionRecord | None:
    if not isinstance(session, str) or not 20 <= len(session) <= 100:
        return None
    found = store.session(sec.token_hash(session))
    now = ctx.clock()
    if found is None or now - found.last_seen > IDLE_TIMEOUT or now - found.created_at > ABSOLUTE_TIMEOUT:
        return None
    return found


@dataclass(frozen=True)
class SessionView:
    actor: Actor
    csrf: str
    mfa_passed: bool
    enrol_required: bool

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.actor.name, "role": self.actor.role, "csrf": self.csrf,
                "mfa_required": not self.mfa_passed, "enrol_required": self.enrol_required}


def session_actor(ctx: Context, session: str, address: str | None) -> SessionView:
    """The actor behind a session cookie; UNAUTHENTICATED when it is unknown or timed out."""
    with ctx.open_store() as store:
        found = _session(ctx, store, session)
        if found is None:
            raise _unauthenticated("your session ended: sign in again")
        user = store.find_user(found.user)
        if user is None:
            raise _unauthenticated()
        if ctx.clock() - found.last_seen > 30:
            store.touch_session(sec.token_hash(session), ctx.clock())
        actor = Actor("user", user.name, user.role, via="api", address=address)
        return SessionView(actor, found.csrf, found.mfa_passed, found.mfa_passed and _needs_enrolment(store, user))


def sign_out(ctx: Context, session: str) -> None:
    with ctx.open_store() as store:
        found = _session(ctx, store, session)
        store.delete_session(sec.token_hash(session)) if isinstance(session, str) else None
        if found is not None:
            record(ctx, store, "auth.logout", found.user)


def change_password(ctx: Context, old: object, new: object) -> None:
    """A signed-in user changes their own password; every session of theirs ends (sign in again)."""
    if ctx.actor.kind != "user":
        raise AuthError("only a signed-in person changes their password", None, "sign in in the browser",
                        code=ErrorCode.FORBIDDEN)
    with audited(ctx, "user.password", ctx.actor.name), ctx.open_store() as store:
        user = store.user(ctx.actor.name)
        attempt = _attempt(ctx, store, user.name, ctx.actor.address)
        if not sec.verify_password(user.password_hash, old if isinstance(old, str) else ""):
            with store.transaction():
                error = _failed(ctx, store, user.name, ctx.actor.address, "password change", counted=True)
            raise error
        with store.transaction():
            _succeeded(store, user.name, ctx.actor.address, attempt)
        chosen = sec.check_password_policy(new, user.name)
        _change_password(ctx, store, user, chosen)


def _change_password(ctx: Context, store: Store, user: UserRecord, chosen: str) -> None:
    with store.transaction():
        store.update_user(replace(user, password_hash=sec.hash_password(chosen), password_changed_at=ctx.clock()))
        store.delete_user_sessions(user.name)
        record(ctx, store, "user.password", user.name)


# -- TOTP enrolment -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TotpEnrolment:
    secret: sec.Secret
    uri: str
    qr_svg: str

    def to_dict(self) -> dict[str, Any]:
        return {"secret": self.secret.reveal(), "uri": self.uri, "qr_svg": self.qr_svg}


@dataclass(frozen=True)
class RecoveryCodes:
    codes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"recovery_codes": list(self.codes)}


def begin_totp(ctx: Context) -> TotpEnrolment:
    """A new TOTP secret for the signed-in user (not active until confirmed with a code)."""
    if ctx.actor.kind != "user":
        raise AuthError("TOTP belongs to a signed-in person", None, "sign in in the browser", code=ErrorCode.FORBIDDEN)
    from bulwark_vpn.render.qr import qr_svg

    with ctx.open_store() as store, store.transaction():
        user = store.user(ctx.actor.name)
        if user.totp_enabled:
            raise InputError("TOTP is already set up for this account", user.name,
                             "ask an admin to reset it if the device is lost")
        secret = sec.new_totp_secret()
        store.update_user(replace(user, totp_secret=secret, totp_last_step=0))
        uri = sec.totp_uri(secret, user.name)
        return TotpEnrolment(sec.Secret(secret), uri, qr_svg(uri))


def confirm_totp(ctx: Context, code: object) -> RecoveryCodes:
    """The first code from the app turns TOTP on and gives ten single-use recovery codes (shown once)."""
    with audited(ctx, "user.totp", ctx.actor.name), ctx.open_store() as store, store.transaction():
        user = store.user(ctx.actor.name)
        if user.totp_enabled or not user.totp_secret:
            raise InputError("there is no TOTP enrolment to confirm", user.name, "start the enrolment first")
        step = sec.totp_step(user.totp_secret, code, 0, ctx.clock())
        if step is None:
            raise InputError("this code does not match", None,
                             "type the current 6-digit code from the app (check the phone's clock)")
        store.update_user(replace(user, totp_enabled=True, totp_last_step=step))
        codes = sec.new_recovery_codes()
        store.set_recovery_codes(user.name, [sec.recovery_hash(user.name, c) for c in codes])
        record(ctx, store, "user.totp", user.name, detail="enrolled")
        return RecoveryCodes(codes)


# -- API tokens -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    owner: str
    scopes: list[str]
    prefix: str
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    last_used_from: str | None
    revoked: bool

    @classmethod
    def of(cls, token: TokenRecord) -> TokenInfo:
        return cls(token.id, token.name, token.owner, list(token.scopes), token.prefix, token.created_at,
                   token.expires_at, token.last_used_at, token.last_used_from, token.revoked_at is not None)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "scopes": list(self.scopes), "expires": format_moment(self.expires_at),
                "last_used": format_moment(self.last_used_at)}


@dataclass(frozen=True)
class NewToken:
    """The token itself, shown once (CLI: alone on stdout), and what is kept of it."""

    token: sec.Secret
    info: TokenInfo

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token.reveal(), **self.info.to_dict()}


@dataclass(frozen=True)
class TokenList:
    tokens: list[TokenInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": [t.to_dict() for t in self.tokens], "total": len(self.tokens)}


@dataclass(frozen=True)
class CreateTokenRequest:
    name: str
    scopes: tuple[str, ...]
    expires_at: float | None
    owner: str | None = None  # admins may make tokens for a user; default: the caller

    @classmethod
    def parse(cls, name: object, *, scopes: object, expires: object = None, now: float,
              owner: object = None) -> CreateTokenRequest:
        items = scopes if isinstance(scopes, list | tuple) else require_text(
            scopes, "scopes", f"use some of {', '.join(SCOPES)}, separated by commas").split(",")
        chosen = tuple(dict.fromkeys(s.strip() if isinstance(s, str) else s for s in items))
        if not chosen or any(s not in SCOPES for s in chosen):
            raise InputError("invalid scopes", ",".join(map(str, chosen)), f"use some of {', '.join(SCOPES)}")
        return cls(parse_token_name(name), tuple(str(s) for s in chosen),
                   None if expires is None else parse_expiry(expires, now, "token expiry"),
                   None if owner is None else parse_user_name(owner))


def create_token(ctx: Context, request: CreateTokenRequest) -> NewToken:
    """A token for scripts: `bwk_` and 256 random bits, stored hashed. It never grants more than its owner's
    role (a user's token with the admin scope is still a user's); tokens work whatever the owner's 2FA."""
    owner = request.owner or ctx.actor.name
    if owner != ctx.actor.name:
        ctx.actor.require_admin()
    if ctx.actor.kind == "token":
        raise AuthError("a token cannot make tokens", None, "sign in, or use the CLI on the gateway",
                        code=ErrorCode.FORBIDDEN)
    with audited(ctx, "token.create", request.name), ctx.open_store() as store, store.transaction():
        owner_record = store.find_user(owner)
        if owner_record is None:
            if ctx.actor.kind != "cli":
                raise NotFoundError("no user with this name", owner, "see 'bulwark user list'")
            raise NotFoundError("a token belongs to a user: no user with this name", owner,
                                "create one first ('bulwark user add NAME --admin'), or pass --user")
        if ctx.actor.kind == "user" and _needs_enrolment(store, store.user(ctx.actor.name)):
            # Tokens work whatever the owner's 2FA: minting one first would make the requirement moot.
            raise AuthError("this account must set up TOTP first", None, "set it up on the account page",
                            code=ErrorCode.FORBIDDEN)
        if "admin" in request.scopes and owner_record.role != "admin":
            raise InputError("only an admin's token may have the admin scope", owner, "use read or peers:write")
        secret = sec.random_token(sec.TOKEN_PREFIX)
        token = store.add_token(sec.token_hash(secret), secret[:8], request.name, owner, request.scopes,
                                ctx.clock(), request.expires_at)
        record(ctx, store, "token.create", request.name, detail=f"owner {owner}, scopes {','.join(request.scopes)}")
        return NewToken(sec.Secret(secret), TokenInfo.of(token))


def list_tokens(ctx: Context) -> TokenList:
    """Admins see every token, users their own."""
    with ctx.open_store(read_only=True) as store:
        return TokenList([TokenInfo.of(t) for t in store.tokens(None if ctx.actor.is_admin else ctx.actor.name)])


def revoke_token(ctx: Context, token_id: object) -> TokenInfo:
    """End a token: admins any, users their own (another's is "not found"); never with a read-only token."""
    from bulwark_vpn.values import parse_int

    wanted = parse_int(token_id, 1, 2**62, "token id", "see 'bulwark token list'")
    # Revoking changes something: a read-only token (a dashboard's) may not end the owner's other tokens.
    ctx.actor.require("peers:write")
    with audited(ctx, "token.revoke", str(wanted)), ctx.open_store() as store, store.transaction():
        token = store.token(wanted)
        if not ctx.actor.is_admin and token.owner != ctx.actor.name:
            raise NotFoundError("no API token with this id", wanted, "see 'bulwark token list'")
        store.revoke_token(wanted, ctx.clock())
        record(ctx, store, "token.revoke", token.name)
        return TokenInfo.of(store.token(wanted))


def token_actor(ctx: Context, token: str, address: str | None) -> Actor:
    """The actor of an `Authorization: Bearer` token; UNAUTHENTICATED for anything not a live token."""
    if not isinstance(token, str) or not token.startswith(sec.TOKEN_PREFIX) or len(token) > 100:
        raise _unauthenticated("give a valid API token")
    with ctx.open_store() as store:
        found = store.token_by_hash(sec.token_hash(token))
        now = ctx.clock()
        if found is None or found.revoked_at is not None or (found.expires_at is not None and found.expires_at <= now):
            raise _unauthenticated("this token is unknown, revoked or expired")
        owner = store.find_user(found.owner)
        if owner is None:
            raise _unauthenticated("this token's user no longer exists")
        if found.last_used_at is None or now - found.last_used_at > 60 or found.last_used_from != address:
            store.token_used(found.id, now, address)
        scopes = frozenset(found.scopes) if owner.role == "admin" else frozenset(found.scopes) - {"admin"}
        return Actor("token", owner.name, owner.role, scopes, via="api", address=address, token_name=found.name)
