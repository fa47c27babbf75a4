"""The HTTP API, version 1: each route parses nothing itself, calls one service operation with the caller's
context, and returns the result's `to_dict()`. Access rules are on each route (see `web.access`)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse

from bulwark_vpn import service
from bulwark_vpn.web import schemas as s
from bulwark_vpn.web.access import SESSION_COOKIE, Caller, Routes, caller_of, is_https

api = Routes("/api/v1")
CallerDep = Annotated[Caller, Depends(caller_of)]
# Path parameters as their parsers accept them (so generated requests reach the operations).
PeerName = Annotated[str, Path(pattern=r"^[a-zA-Z0-9_=+][a-zA-Z0-9_=+.-]{0,62}$")]
UserName = Annotated[str, Path(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}$")]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorOut, "content": {"application/json": {}}, "description": "the one error shape"}
    for code in (401, 403, 404, 405, 409, 413, 422, 429, 500, 503)}


def _session_cookie(request: Request, response: Response, session: str | None) -> None:
    if session is None:
        response.delete_cookie(SESSION_COOKIE, path="/")
        return
    from bulwark_vpn.service.auth import ABSOLUTE_TIMEOUT

    response.set_cookie(SESSION_COOKIE, session, max_age=ABSOLUTE_TIMEOUT, path="/", httponly=True,
                        secure=is_https(request), samesite="lax")


# -- health ---------------------------------------------------------------------------------------------------

@api.add("GET", "/health", "anonymous", response_model=s.HealthOut, tags=["health"])
def health() -> dict[str, Any]:
    """Says the API answers; reveals nothing else."""
    return {"ok": True}


# -- session --------------------------------------------------------------------------------------------------

@api.add("POST", "/session", "anonymous", response_model=s.SessionOut, responses=ERRORS, tags=["session"])
def sign_in(body: s.SignInBody, request: Request, response: Response, caller: CallerDep) -> dict[str, Any]:
    """Sign in with a user name and password; with TOTP set up, `mfa_required` says to send the code next."""
    from bulwark_vpn.service import auth

    signed = auth.sign_in(caller.ctx, body.user, body.password, caller.address)
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        auth.sign_out(caller.ctx, previous)  # a new id at each sign-in: the old one stops working
    _session_cookie(request, response, signed.session.reveal())
    return signed.to_dict()


@api.add("POST", "/session/totp", "half-signed-in", response_model=s.SessionOut, responses=ERRORS,
         tags=["session"])
def second_factor(body: s.CodeBody, request: Request, response: Response, caller: CallerDep) -> dict[str, Any]:
    """The TOTP code (or a recovery code) after the password; the session is replaced by a new one."""
    from bulwark_vpn.service import auth

    assert caller.session is not None  # noqa: S101 - the rule requires a session
    signed = auth.second_factor(caller.ctx, caller.session, body.code, caller.address)
    _session_cookie(request, response, signed.session.reveal())
    return signed.to_dict()


@api.add("GET", "/session", "session", response_model=s.SessionOut, responses=ERRORS, tags=["session"])
def who_am_i(caller: CallerDep) -> dict[str, Any]:
    """The signed-in user, role and the CSRF token to send with changes."""
    assert caller.actor is not None  # noqa: S101 - the rule requires one
    return {"user": caller.actor.name, "role": caller.actor.role, "csrf": caller.csrf or "",
            "mfa_required": not caller.mfa_passed, "enrol_required": caller.enrol_required}


@api.add("DELETE", "/session", "session", status_code=204, responses=ERRORS, tags=["session"])
def sign_out(request: Request, caller: CallerDep) -> Response:
    from bulwark_vpn.service import auth

    if caller.session:
        auth.sign_out(caller.ctx, caller.session)
    response = Response(status_code=204)
    _session_cookie(request, response, None)
    return response


@api.add("POST", "/session/password", "session", status_code=204, responses=ERRORS, tags=["session"])
def change_password(body: s.PasswordChange, request: Request, caller: CallerDep) -> Response:
    """Every session of the account ends: sign in again with the new password."""
    from bulwark_vpn.service import auth

    auth.change_password(caller.ctx, body.old_password, body.new_password)
    response = Response(status_code=204)
    _session_cookie(request, response, None)
    return response


@api.add("POST", "/session/totp/enrol", "session", response_model=s.TotpEnrolmentOut, responses=ERRORS,
         tags=["session"])
def totp_enrol(caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service import auth

    return auth.begin_totp(caller.ctx).to_dict()


@api.add("POST", "/session/totp/confirm", "session", response_model=s.RecoveryCodesOut, responses=ERRORS,
         tags=["session"])
def totp_confirm(body: s.CodeBody, caller: CallerDep) -> dict[str, Any]:
    """The first code turns TOTP on; the ten recovery codes are shown this once."""
    from bulwark_vpn.service import auth

    return auth.confirm_totp(caller.ctx, body.code).to_dict()


@api.add("POST", "/setup", "anonymous", response_model=s.UserOut, responses=ERRORS, tags=["session"])
def complete_setup(body: s.SetupBody, caller: CallerDep) -> dict[str, Any]:
    """A new user sets their password with the token of their setup link (single use)."""
    from bulwark_vpn.service import accounts

    return accounts.complete_setup(caller.ctx, body.token, body.password).to_dict()


# -- peers ----------------------------------------------------------------------------------------------------

@api.add("GET", "/peers", "read", response_model=s.PeerListOut, responses=ERRORS, tags=["peers"])
def list_peers(caller: CallerDep, search: Annotated[str | None, Query(max_length=100)] = None,
               sort: Annotated[str, Query(max_length=20)] = "created", descending: bool = False,
               offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 50,
               owner: Annotated[str | None, Query(max_length=100)] = None) -> dict[str, Any]:
    """One page of peers (a user's own only), filtered by name, address or key, sorted."""
    request = service.ListPeersRequest.parse(search=search, sort=sort, descending=descending, offset=offset,
                                             limit=limit, owner=owner)
    return service.list_peers(caller.ctx, request).to_dict()


@api.add("POST", "/peers", "peers:write", status_code=201, response_model=s.PeersResultOut, responses=ERRORS,
         tags=["peers"])
def add_peers(body: s.PeerCreate, caller: CallerDep) -> dict[str, Any]:
    """New peers (all or none), applied to the running gateway at once."""
    request = service.AddPeersRequest.parse(body.names, allowed_ips=body.allowed_ips, keepalive=body.keepalive,
                                            public_key=body.public_key, owner=body.owner, expires=body.expires,
                                            server_allowed_ips=body.server_allowed_ips)
    return service.add_peers(caller.ctx, request).to_dict()


@api.add("GET", "/peers/{name}", "read", response_model=s.PeerOut, responses=ERRORS, tags=["peers"])
def show_peer(name: PeerName, caller: CallerDep) -> dict[str, Any]:
    return service.show_peer(caller.ctx, name).to_dict()


@api.add("PATCH", "/peers/{name}", "peers:write", response_model=s.PeerOut, responses=ERRORS, tags=["peers"])
def update_peer(name: PeerName, body: s.PeerUpdate, caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service.peers import UpdatePeerRequest, update_peer

    request = UpdatePeerRequest.parse(name, allowed_ips=body.allowed_ips, keepalive=body.keepalive,
                                      expires=body.expires, owner=body.owner, clear=body.clear)
    return update_peer(caller.ctx, request).to_dict()


@api.add("DELETE", "/peers/{name}", "peers:write", response_model=s.PeersResultOut, responses=ERRORS,
         tags=["peers"])
def remove_peer(name: PeerName, caller: CallerDep) -> dict[str, Any]:
    return service.remove_peers(caller.ctx, service.PeerNamesRequest.parse([name])).to_dict()


@api.add("POST", "/peers/{name}/enable", "peers:write", response_model=s.PeersResultOut, responses=ERRORS,
         tags=["peers"])
def enable_peer(name: PeerName, caller: CallerDep) -> dict[str, Any]:
    return service.set_peers_enabled(caller.ctx, service.PeerNamesRequest.parse([name]), True).to_dict()


@api.add("POST", "/peers/{name}/disable", "peers:write", response_model=s.PeersResultOut, responses=ERRORS,
         tags=["peers"])
def disable_peer(name: PeerName, caller: CallerDep) -> dict[str, Any]:
    return service.set_peers_enabled(caller.ctx, service.PeerNamesRequest.parse([name]), False).to_dict()


_CONFIG_RESPONSES = {**ERRORS, 200: {"content": {"text/plain": {}}, "description": "a wg-quick config"}}


@api.add("GET", "/peers/{name}/config", "read", response_class=PlainTextResponse, responses=_CONFIG_RESPONSES,
         tags=["peers"])
def peer_config(name: PeerName, caller: CallerDep) -> PlainTextResponse:
    """The wg-quick config as a file download (the name `wg-quick up` accepts)."""
    config = service.peer_config(caller.ctx, service.PeerConfigRequest.parse(name))
    return PlainTextResponse(config.text, headers={
        "Content-Disposition": f'attachment; filename="{config.filename}"'})


@api.add("GET", "/peers/{name}/qr.svg", "read", responses={**ERRORS, 200: {"content": {"image/svg+xml": {}}}},
         response_class=Response, tags=["peers"])
def peer_qr_svg(name: PeerName, caller: CallerDep) -> Response:
    from bulwark_vpn.service.peers import peer_qr_svg

    return Response(peer_qr_svg(caller.ctx, service.PeerConfigRequest.parse(name)), media_type="image/svg+xml")


@api.add("GET", "/peers/{name}/qr.png", "read", responses={**ERRORS, 200: {"content": {"image/png": {}}}},
         response_class=Response, tags=["peers"])
def peer_qr_png(name: PeerName, caller: CallerDep) -> Response:
    from bulwark_vpn.service.peers import peer_qr_png

    return Response(peer_qr_png(caller.ctx, service.PeerConfigRequest.parse(name)), media_type="image/png")


@api.add("GET", "/peers/{name}/traffic", "read", response_model=s.TrafficOut, responses=ERRORS, tags=["peers"])
def peer_traffic(name: PeerName, caller: CallerDep,
                 span: Annotated[str, Query(alias="range", max_length=10)] = "day") -> dict[str, Any]:
    """Bytes received and sent over the last hour or day (per minute) or month (per hour)."""
    from bulwark_vpn.service.traffic import traffic

    return traffic(caller.ctx, name, span).to_dict()


@api.add("POST", "/peers/{name}/shares", "peers:write", status_code=201, response_model=s.NewShareOut,
         responses=ERRORS, tags=["shares"])
def share_peer(name: PeerName, body: s.ShareCreate, caller: CallerDep) -> dict[str, Any]:
    """A single-use link to this peer's config, expiring (24h unless given, at most 30d)."""
    from bulwark_vpn.service.share import create_share

    return create_share(caller.ctx, name, body.expires).to_dict()


# -- share links ----------------------------------------------------------------------------------------------

@api.add("GET", "/shares", "read", response_model=s.ShareListOut, responses=ERRORS, tags=["shares"])
def list_shares(caller: CallerDep, peer: Annotated[str | None, Query(max_length=100)] = None) -> dict[str, Any]:
    from bulwark_vpn.service.share import list_shares

    return list_shares(caller.ctx, peer).to_dict()


@api.add("DELETE", "/shares/{share_id}", "peers:write", response_model=s.ShareOut, responses=ERRORS,
         tags=["shares"])
def revoke_share(share_id: int, caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service.share import revoke_share

    return revoke_share(caller.ctx, share_id).to_dict()


@api.add("POST", "/share/redeem", "anonymous", response_model=s.RedeemedOut, responses=ERRORS, tags=["shares"])
def redeem_share(body: s.RedeemBody, caller: CallerDep) -> dict[str, Any]:
    """The config behind a share link, once: the link's token in the body (never in the URL path)."""
    from bulwark_vpn.render.qr import TooLargeForQR, qr_svg
    from bulwark_vpn.service.share import redeem_share

    config = redeem_share(caller.ctx, body.token)
    try:
        svg: str | None = qr_svg(config.text)
    except TooLargeForQR:
        svg = None
    return {**config.to_dict(), "qr_svg": svg}


# -- the gateway ----------------------------------------------------------------------------------------------

@api.add("GET", "/status", "read", response_model=s.StatusOut, responses=ERRORS, tags=["gateway"])
def status(caller: CallerDep, name: Annotated[list[str] | None, Query(max_length=1000)] = None,
           summary: bool = False) -> dict[str, Any]:
    """The interface and its peers' handshakes and traffic (a user sees their own peers only). `name` (repeated)
    lists only those peers, e.g. the page of a list; `summary=true` lists none. `peers_total` and `peers_online`
    always count every peer the caller may see."""
    return service.status(caller.ctx, names=[] if summary else name).to_dict()


@api.add("GET", "/doctor", "admin", response_model=s.DoctorOut, responses=ERRORS, tags=["gateway"])
def doctor_results(request: Request) -> dict[str, Any]:
    """The results of the last run of the checks (404 when none ran since the API started)."""
    from bulwark_vpn.errors import NotFoundError

    last = request.app.state.last_doctor
    if last is None:
        raise NotFoundError("the checks have not run yet", None, "run them (POST /api/v1/doctor)")
    return dict(last)


@api.add("POST", "/doctor", "admin", response_model=s.DoctorOut, responses=ERRORS, tags=["gateway"])
def run_doctor(request: Request, caller: CallerDep) -> dict[str, Any]:
    """Run every server check now (no fix is applied from here)."""
    report = service.run_doctor(caller.ctx).to_dict()
    report["at"] = time.time()
    request.app.state.last_doctor = report
    return report


@api.add("GET", "/traffic", "admin", response_model=s.TrafficOut, responses=ERRORS, tags=["gateway"])
def total_traffic(caller: CallerDep,
                  span: Annotated[str, Query(alias="range", max_length=10)] = "day") -> dict[str, Any]:
    from bulwark_vpn.service.traffic import traffic

    return traffic(caller.ctx, None, span).to_dict()


@api.add("GET", "/settings", "admin", response_model=s.SettingsOut, responses=ERRORS, tags=["gateway"])
def get_settings(caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service.settings import get_settings

    return get_settings(caller.ctx).to_dict()


@api.add("PATCH", "/settings", "admin", response_model=s.SettingsOut, responses=ERRORS, tags=["gateway"])
def update_settings(body: s.SettingsUpdate, caller: CallerDep) -> dict[str, Any]:
    """Change the safe settings (see `safe_to_change`); the files and the running gateway follow."""
    from bulwark_vpn.service.settings import update_settings

    return update_settings(caller.ctx, body.model_dump()).to_dict()


# -- users, tokens, audit -------------------------------------------------------------------------------------

@api.add("GET", "/users", "admin", response_model=s.UserListOut, responses=ERRORS, tags=["users"])
def list_users(caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service import accounts

    return accounts.list_users(caller.ctx).to_dict()


@api.add("POST", "/users", "admin", status_code=201, response_model=s.UserAddedOut, responses=ERRORS,
         tags=["users"])
def add_user(body: s.UserCreate, caller: CallerDep) -> dict[str, Any]:
    """A new account; without a password, the answer carries a single-use setup link for the person."""
    from bulwark_vpn.service import accounts

    request = accounts.AddUserRequest.parse(body.name, role=body.role, peer_limit=body.peer_limit,
                                            password=body.password)
    return accounts.add_user(caller.ctx, request).to_dict()


@api.add("GET", "/users/{name}", "read", response_model=s.UserOut, responses=ERRORS, tags=["users"])
def show_user(name: UserName, caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service import accounts

    return accounts.show_user(caller.ctx, name).to_dict()


@api.add("PATCH", "/users/{name}", "admin", response_model=s.UserOut, responses=ERRORS, tags=["users"])
def update_user(name: UserName, body: s.UserUpdate, caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service import accounts

    request = accounts.UpdateUserRequest.parse(name, role=body.role, peer_limit=body.peer_limit,
                                               require_2fa=body.require_2fa, clear_peer_limit=body.clear_peer_limit)
    return accounts.update_user(caller.ctx, request).to_dict()


@api.add("DELETE", "/users/{name}", "admin", response_model=s.UserOut, responses=ERRORS, tags=["users"])
def remove_user(name: UserName, caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service import accounts

    return accounts.remove_user(caller.ctx, name).to_dict()


@api.add("POST", "/users/{name}/reset-2fa", "admin", response_model=s.UserOut, responses=ERRORS, tags=["users"])
def reset_2fa(name: UserName, caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service import accounts

    return accounts.reset_2fa(caller.ctx, name).to_dict()


@api.add("POST", "/users/{name}/setup-link", "admin", response_model=s.SetupLinkOut, responses=ERRORS,
         tags=["users"])
def setup_link(name: UserName, caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service import accounts

    return accounts.new_setup_link(caller.ctx, name).to_dict()


@api.add("GET", "/tokens", "read", response_model=s.TokenListOut, responses=ERRORS, tags=["tokens"])
def list_tokens(caller: CallerDep) -> dict[str, Any]:
    """Admins see every token, users their own; never the tokens themselves."""
    from bulwark_vpn.service import auth

    return auth.list_tokens(caller.ctx).to_dict()


@api.add("POST", "/tokens", "session", status_code=201, response_model=s.NewTokenOut, responses=ERRORS,
         tags=["tokens"])
def create_token(body: s.TokenCreate, caller: CallerDep) -> dict[str, Any]:
    """A token for scripts, shown this once. Made by a signed-in person (a token cannot make tokens)."""
    from bulwark_vpn.service import auth

    request = auth.CreateTokenRequest.parse(body.name, scopes=body.scopes, expires=body.expires,
                                            now=caller.ctx.clock(), owner=body.owner)
    return auth.create_token(caller.ctx, request).to_dict()


@api.add("DELETE", "/tokens/{token_id}", "peers:write", response_model=s.TokenOut, responses=ERRORS, tags=["tokens"])
def revoke_token(token_id: int, caller: CallerDep) -> dict[str, Any]:
    from bulwark_vpn.service import auth

    return auth.revoke_token(caller.ctx, token_id).to_dict()


@api.add("GET", "/audit", "admin", response_model=s.AuditOut, responses=ERRORS, tags=["audit"])
def audit(caller: CallerDep, user: Annotated[str | None, Query(max_length=100)] = None,
          peer: Annotated[str | None, Query(max_length=100)] = None,
          offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Who did what, when, from where, and the result; newest first."""
    from bulwark_vpn.service.audit import AuditRequest, list_audit

    return list_audit(caller.ctx, AuditRequest.parse(user=user, peer=peer, offset=offset, limit=limit)).to_dict()


# -- backup ---------------------------------------------------------------------------------------------------

_BACKUP_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS, 200: {"content": {"application/octet-stream": {}},
                    "description": "a backup file: tar.gz, or the age format when a passphrase is given"}}


@api.add("POST", "/backup", "admin", response_class=Response, responses=_BACKUP_RESPONSES, tags=["backup"])
def backup(body: s.BackupBody, caller: CallerDep) -> Response:
    """The whole store as one file, as `bulwark backup` writes it (every key of the team: admins only, and
    recorded in the audit log). With `passphrase` it is encrypted in the age format (`age -d` opens it). Restore
    and import replace the store of the gateway that serves this API, so they stay on the gateway's command line
    (`bulwark restore`, `bulwark import`)."""
    from bulwark_vpn.backupfile import Passphrase
    from bulwark_vpn.service.backup import backup_data

    made = backup_data(caller.ctx, None if body.passphrase is None else Passphrase(body.passphrase))
    return Response(made.data, media_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{made.filename}"', "Cache-Control": "no-store"})
