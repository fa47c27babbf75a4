"""Who may call each route, stated on the route itself, and the caller behind a request.

Every route is registered through `Routes.add` with an access rule; a route without one cannot be made, and a test
enumerates the app's routes to prove it. Rules:

- `anonymous`: anyone (health, sign-in, setup links, share links, the OpenAPI document, the pages' shell);
- `half-signed-in`: a session whose password passed and whose TOTP code is awaited (the TOTP step only);
- `session`: a person signed in in a browser, second factor included (own password, own TOTP);
- `read`: a signed-in person or a token with the read scope (the service limits users to their own peers);
- `peers:write`: a signed-in person or a token with the peers:write scope;
- `admin`: an admin's session, or an admin's token with the admin scope;
- `metrics`: an admin, or a token with the metrics scope, or a request from this host's loopback.

A browser session must also send its CSRF token (`X-CSRF-Token`) with every request that changes something.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request

from bulwark_vpn.errors import AuthError, ErrorCode
from bulwark_vpn.service import Context
from bulwark_vpn.service.actors import Actor

RULES = ("anonymous", "half-signed-in", "session", "read", "peers:write", "admin", "metrics")
SESSION_COOKIE = "bulwark_session"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Caller:
    """The request's actor (None: anonymous), how it authenticated, and its service context."""

    ctx: Context
    actor: Actor | None
    session: str | None = None
    csrf: str | None = None
    mfa_passed: bool = True
    enrol_required: bool = False

    @property
    def address(self) -> str | None:
        return self.ctx.actor.address


def client_address(request: Request) -> str | None:
    """The client's address: the direct peer, or, behind a trusted proxy, the last address it forwarded for."""
    direct = request.client.host if request.client else None
    trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = request.app.state.config.trusted_proxies
    if direct is None or not trusted or not _within(direct, trusted):
        return direct
    # Every X-Forwarded-For line, in order: a proxy may add its own line after the client's (HAProxy's `option
    # forwardfor` does), and the first line alone is the client's own claim.
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return direct
    return direct


def is_https(request: Request) -> bool:
    """Served over TLS, directly or (only from a trusted proxy) as X-Forwarded-Proto says."""
    if request.url.scheme == "https":
        return True
    direct = request.client.host if request.client else None
    trusted = request.app.state.config.trusted_proxies
    if not (direct and trusted and _within(direct, trusted)):
        return False
    # The value the trusted proxy added last, not a line or item the client sent before it.
    claims = [p.strip() for p in ",".join(request.headers.getlist("x-forwarded-proto")).split(",") if p.strip()]
    return bool(claims) and claims[-1].lower() == "https"


def _within(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _forbidden(message: str, hint: str) -> AuthError:
    return AuthError(message, None, hint, code=ErrorCode.FORBIDDEN)


def _unauthenticated(hint: str = "sign in, or send an API token as 'Authorization: Bearer TOKEN'") -> AuthError:
    return AuthError("not signed in", None, hint, code=ErrorCode.UNAUTHENTICATED)


def resolve_caller(request: Request) -> Caller:
    """Bearer token first, then the session cookie; anonymous otherwise."""
    from bulwark_vpn.service import auth

    base: Context = request.app.state.context_factory()
    address = client_address(request)
    anonymous = base.as_actor(Actor("anonymous", "-", role="none", scopes=frozenset(), via="api", address=address))
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated("send an API token as 'Authorization: Bearer TOKEN'")
        actor = auth.token_actor(base, token.strip(), address)
        return Caller(base.as_actor(actor), actor)
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        try:
            view = auth.session_actor(base, session, address)
        except AuthError:
            return Caller(anonymous, None)
        return Caller(base.as_actor(view.actor), view.actor, session, view.csrf, view.mfa_passed,
                      view.enrol_required)
    return Caller(anonymous, None)


def _loopback(request: Request) -> bool:
    """A request from this host itself: a loopback connection that no proxy relayed. A reverse proxy on this host
    connects from the loopback for every client it serves; the forwarding headers it adds say so, named as a
    trusted proxy or not."""
    if any(name in request.headers for name in ("x-forwarded-for", "forwarded", "x-real-ip")):
        return False
    direct = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(direct).is_loopback
    except ValueError:
        return False


def enforce(rule: str) -> Callable[[Request], Caller | None]:
    """The dependency that lets a request through `rule` or raises the error that says why not."""

    def dependency(request: Request) -> Caller | None:
        if rule == "anonymous":
            # Resolved when the route asks for it (caller_of): the pages' shell and static files never do, so
            # they open no store and read no session.
            request.state.caller = None
            return None
        caller = resolve_caller(request)
        request.state.caller = caller
        if rule == "metrics" and caller.actor is None and _loopback(request):
            # This host's loopback reads the metrics without a token: as an actor that may do only that.
            reader = Actor("loopback", "-", role="admin", scopes=frozenset({"metrics"}), via="api",
                           address=caller.address)
            caller = request.state.caller = Caller(caller.ctx.as_actor(reader), reader)
            return caller
        actor = caller.actor
        if actor is None:
            raise _unauthenticated()
        if caller.session is not None:
            if rule == "half-signed-in":
                if caller.mfa_passed:
                    raise _forbidden("the second factor already passed", "nothing to do")
            elif not caller.mfa_passed:
                raise _unauthenticated("give your TOTP code first")
            elif caller.enrol_required and rule != "session":
                raise _forbidden("this account must set up TOTP first", "set it up on the account page")
            if request.method in UNSAFE_METHODS:
                sent = request.headers.get(CSRF_HEADER, "")
                from bulwark_vpn.service.secrets import same

                if not caller.csrf or not same(sent, caller.csrf):
                    raise _forbidden("the CSRF token is missing or wrong",
                                     f"send the session's token in the {CSRF_HEADER} header")
        elif rule in ("session", "half-signed-in"):
            raise _forbidden("this needs a signed-in person, not a token", "sign in in the browser")
        if rule == "admin" or (rule == "metrics" and not actor.can("metrics")):
            actor.require_admin()
        elif rule in ("read", "peers:write"):
            actor.require(rule)
        return caller

    return dependency


class Routes:
    """An APIRouter whose every route carries an access rule (in the OpenAPI document too)."""

    def __init__(self, prefix: str = "", tags: list[str] | None = None) -> None:
        self.router = APIRouter(prefix=prefix, tags=list(tags or []))

    def add(self, method: str, path: str, access: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        if access not in RULES:
            raise ValueError(f"unknown access rule {access!r}")
        extra = dict(kwargs.pop("openapi_extra", None) or {})
        extra["x-bulwark-access"] = access
        dependencies = [Depends(enforce(access)), *kwargs.pop("dependencies", [])]
        return self.router.api_route(path, methods=[method], dependencies=dependencies, openapi_extra=extra,
                                     **kwargs)


def caller_of(request: Request) -> Caller:
    """The caller `enforce` resolved for this request (use as a dependency in the route's parameters)."""
    caller: Caller | None = request.state.caller
    if caller is None:  # an anonymous route: resolved now, once
        caller = request.state.caller = resolve_caller(request)
    return caller


def app_routes(app: Any) -> list[Any]:
    """Every route of the app, including those of included routers (walked, whatever FastAPI wraps them in)."""
    found: list[Any] = []
    stack = list(app.routes)
    while stack:
        route = stack.pop(0)
        inner = getattr(route, "original_router", None) or getattr(route, "router", None)
        if inner is not None and not hasattr(route, "methods"):
            stack.extend(inner.routes)
        else:
            found.append(route)
    return found
