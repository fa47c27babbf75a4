"""Share links: one person downloads one peer's config (or sees its QR code) once, without an account.

A link carries 256 random bits, stored hashed; it is single use, expires, and can be revoked. The token travels
in the URL fragment (`https://vpn.example.com/share#TOKEN`): browsers never send the fragment to the server, so
the token appears in no request line or access log; the page posts it in a request body to redeem it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bulwark_vpn.errors import ErrorCode, InputError, NotFoundError
from bulwark_vpn.service import secrets as sec
from bulwark_vpn.service.accounts import base_url
from bulwark_vpn.service.audit import audited, record
from bulwark_vpn.service.context import Context
from bulwark_vpn.store.records import ShareRecord
from bulwark_vpn.values import format_moment, parse_duration, parse_int, parse_peer_name

DEFAULT_LIFETIME = 24 * 3600


@dataclass(frozen=True)
class ShareInfo:
    id: int
    peer: str
    created_by: str
    created_at: float
    expires_at: float
    used: bool
    revoked: bool

    @classmethod
    def of(cls, share: ShareRecord) -> ShareInfo:
        return cls(share.id, share.peer, share.created_by, share.created_at, share.expires_at,
                   share.used_at is not None, share.revoked_at is not None)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "expires": format_moment(self.expires_at)}


@dataclass(frozen=True)
class NewShare:
    url: str
    token: sec.Secret
    info: ShareInfo

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, **self.info.to_dict()}


@dataclass(frozen=True)
class ShareList:
    shares: list[ShareInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"shares": [s.to_dict() for s in self.shares], "total": len(self.shares)}


def create_share(ctx: Context, peer: object, expires: object = None) -> NewShare:
    """A single-use link to one peer's config; the peer must have its private key here."""
    name = parse_peer_name(peer)
    lifetime = DEFAULT_LIFETIME if expires is None else parse_duration(expires, "link lifetime", low=60,
                                                                        high=30 * 86400)
    ctx.actor.require("peers:write")
    with audited(ctx, "share.create", name), ctx.open_store() as store, store.transaction():
        found = store.peer(name)
        ctx.actor.check_owns(name, found.owner)
        if found.private_key is None:
            raise InputError("this peer's private key is not known here", name,
                             "its config lives only on the client: there is nothing to share")
        token = sec.random_token()
        now = ctx.clock()
        share = store.add_share(sec.token_hash(token), name, ctx.actor.label, now, now + lifetime)
        record(ctx, store, "share.create", name, detail=f"expires {format_moment(now + lifetime)}")
        return NewShare(f"{base_url(store)}/share#{token}", sec.Secret(token), ShareInfo.of(share))


def list_shares(ctx: Context, peer: object = None) -> ShareList:
    name = None if peer is None else parse_peer_name(peer)
    with ctx.open_store(read_only=True) as store:
        if name is not None:
            ctx.actor.check_owns(name, store.peer(name).owner)
        shares = store.shares(name)
        if not ctx.actor.sees_all:
            owned = set(store.iter_owned(ctx.actor.name))
            shares = [s for s in shares if s.peer in owned]
        return ShareList([ShareInfo.of(s) for s in shares])


def revoke_share(ctx: Context, share_id: object) -> ShareInfo:
    wanted = parse_int(share_id, 1, 2**62, "share link id", "see the peer's share links")
    with audited(ctx, "share.revoke", str(wanted)), ctx.open_store() as store, store.transaction():
        share = store.share(wanted)
        try:
            owner = store.peer(share.peer).owner
        except NotFoundError:
            owner = None
        if not ctx.actor.sees_all and owner != ctx.actor.name:
            raise NotFoundError("no share link with this id", wanted, "see the peer's share links")
        store.revoke_share(wanted, ctx.clock())
        record(ctx, store, "share.revoke", share.peer)
        return ShareInfo.of(store.share(wanted))


def redeem_share(ctx: Context, token: object):
    """The config behind a share link, once (anonymous: the link is the credential)."""
    from bulwark_vpn.service.peers import PeerConfigRequest, peer_config_unchecked

    if not isinstance(token, str) or not 20 <= len(token) <= 100:
        raise NotFoundError("this share link is not valid", None, "ask for a new one", code=ErrorCode.NOT_FOUND)
    with ctx.open_store() as store, store.transaction():
        share = store.take_share(sec.token_hash(token), ctx.clock())
        if share is None:
            raise NotFoundError("this share link is not valid (used, expired or revoked)", None,
                                "ask for a new one")
        record(ctx, store, "share.redeem", share.peer, detail=f"link {share.id}")
    return peer_config_unchecked(ctx, PeerConfigRequest(share.peer))
