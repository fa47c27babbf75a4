"""Peer operations: add, remove, enable/disable, list, show, config and QR code.

Requests are built with their `parse` class methods, which take text (flags, JSON bodies) or typed values and
run each through the one parser of its kind; results have a stable `to_dict()` (what `--json` prints and the
HTTP API returns: fields are only ever added).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

from bulwark_vpn.addressing import Pool
from bulwark_vpn.errors import AuthError, ConflictError, ErrorCode, InputError
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.model import IPNetwork, Peer, Settings
from bulwark_vpn.render import layout
from bulwark_vpn.service.audit import audited, record
from bulwark_vpn.service.context import Context
from bulwark_vpn.service.files import heal_if_needed, locked, mutate, peer_item, remove_item
from bulwark_vpn.store import RENDER_SERVER, Store
from bulwark_vpn.store.base import SORTS, PeerQuery, PeerSummary
from bulwark_vpn.values import (
    Endpoint,
    config_filename,
    format_moment,
    parse_bool,
    parse_endpoint,
    parse_expiry,
    parse_int,
    parse_interface_name,
    parse_keepalive,
    parse_networks,
    parse_peer_name,
    parse_user_name,
    require_text,
)

# -- requests ---------------------------------------------------------------------------------------------


def unique_names(names: Iterable[object]) -> tuple[str, ...]:
    """Peer names, each through the peer-name parser, at least one, none twice."""
    normalized = [parse_peer_name(n) for n in names]
    if not normalized:
        raise InputError("no peer name given", None, "give at least one name")
    seen: set[str] = set()
    for name in normalized:
        if name in seen:
            raise InputError("peer name given twice", name, "list each peer once")
        seen.add(name)
    return tuple(normalized)


def _optional(value: object, parser, *args: Any) -> Any:
    return None if value is None else parser(value, *args)


@dataclass(frozen=True)
class AddPeersRequest:
    """New peers: keys (or the client's own public key), PSK, next free addresses, files."""

    names: tuple[str, ...]
    allowed_ips: tuple[IPNetwork, ...] | None = None
    server_allowed_ips: tuple[IPNetwork, ...] | None = None
    keepalive: int | None = None
    public_key: PublicKey | None = None
    # The running interface to apply to (default: the store's).
    interface: str | None = None
    # The user who owns the peers (a user's own request always owns them); expiry as given (30d, a date).
    owner: str | None = None
    expires: str | None = None

    @classmethod
    def parse(cls, names: Iterable[object], *, allowed_ips: object = None, server_allowed_ips: object = None,
              keepalive: object = None, public_key: object = None, interface: object = None, owner: object = None,
              expires: object = None) -> AddPeersRequest:
        return cls(
            names=unique_names(names),
            allowed_ips=_optional(allowed_ips, parse_networks, "allowed IPs"),
            server_allowed_ips=_optional(server_allowed_ips, parse_networks, "server allowed IPs"),
            keepalive=_optional(keepalive, parse_keepalive),
            public_key=None if public_key is None else PublicKey.parse(public_key),
            interface=_optional(interface, parse_interface_name),
            owner=_optional(owner, parse_user_name),
            expires=None if expires is None else require_text(expires, "expiry", "30d or 2026-12-31"),
        )


@dataclass(frozen=True)
class UpdatePeerRequest:
    """A partial update of one peer: None leaves a field as it is; names in `clear` reset it (allowed_ips back to
    the server's default, keepalive off, expires never, owner none)."""

    name: str
    allowed_ips: tuple[IPNetwork, ...] | None = None
    keepalive: int | None = None
    expires: str | None = None
    owner: str | None = None
    clear: frozenset[str] = frozenset()
    interface: str | None = None

    CLEARABLE: ClassVar[frozenset[str]] = frozenset({"allowed_ips", "keepalive", "expires", "owner"})

    @classmethod
    def parse(cls, name: object, *, allowed_ips: object = None, keepalive: object = None, expires: object = None,
              owner: object = None, clear: Iterable[object] = (), interface: object = None) -> UpdatePeerRequest:
        cleared = frozenset(str(c) for c in clear)
        unknown = cleared - cls.CLEARABLE
        if unknown:
            raise InputError("cannot clear", ", ".join(sorted(unknown)),
                             f"clear some of {', '.join(sorted(cls.CLEARABLE))}")
        return cls(parse_peer_name(name), _optional(allowed_ips, parse_networks, "allowed IPs"),
                   _optional(keepalive, parse_keepalive),
                   None if expires is None else require_text(expires, "expiry", "30d or 2026-12-31"),
                   _optional(owner, parse_user_name), cleared, _optional(interface, parse_interface_name))


@dataclass(frozen=True)
class PeerNamesRequest:
    """Peers named for remove, enable or disable (all or none)."""

    names: tuple[str, ...]
    interface: str | None = None

    @classmethod
    def parse(cls, names: Iterable[object], *, interface: object = None) -> PeerNamesRequest:
        return cls(names=unique_names(names), interface=_optional(interface, parse_interface_name))


@dataclass(frozen=True)
class PeerConfigRequest:
    """One peer's client config; `endpoint` overrides the Endpoint line (a forwarded port on the same host)."""

    name: str
    endpoint: Endpoint | None = None

    @classmethod
    def parse(cls, name: object, *, endpoint: object = None) -> PeerConfigRequest:
        return cls(name=parse_peer_name(name), endpoint=_optional(endpoint, parse_endpoint))


# -- results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer as `peer list` shows it: no secrets."""

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
    owner: str | None = None
    expires_at: float | None = None
    expired: bool = False

    @classmethod
    def of(cls, peer: Peer, settings: Settings, now: float | None = None) -> PeerInfo:
        allowed = peer.allowed_ips if peer.allowed_ips is not None else settings.allowed_ips
        return cls(
            name=peer.name,
            public_key=str(peer.public_key),
            address4=str(peer.address4),
            address6=str(peer.address6) if peer.address6 else None,
            allowed_ips=[str(n) for n in allowed],
            server_allowed_ips=[str(n) for n in peer.server_allowed_ips],
            keepalive=peer.keepalive,
            enabled=peer.enabled,
            has_private_key=peer.private_key is not None,
            config_filename=config_filename(peer.name),
            owner=peer.owner,
            expires_at=peer.expires_at,
            expired=peer.expired(time.time() if now is None else now),
        )

    @classmethod
    def from_summary(cls, peer: PeerSummary, default_allowed: list[str], now: float) -> PeerInfo:
        return cls(
            name=peer.name,
            public_key=peer.public_key,
            address4=peer.address4,
            address6=peer.address6,
            allowed_ips=list(peer.allowed_ips) if peer.allowed_ips is not None else default_allowed,
            server_allowed_ips=list(peer.server_allowed_ips),
            keepalive=peer.keepalive,
            enabled=peer.enabled,
            has_private_key=peer.has_private_key,
            config_filename=config_filename(peer.name),
            owner=peer.owner,
            expires_at=peer.expires_at,
            expired=peer.expires_at is not None and peer.expires_at <= now,
        )

    def to_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies every value and costs 70 µs a peer.
        return {"name": self.name, "public_key": self.public_key, "address4": self.address4,
                "address6": self.address6, "allowed_ips": list(self.allowed_ips),
                "server_allowed_ips": list(self.server_allowed_ips), "keepalive": self.keepalive,
                "enabled": self.enabled, "has_private_key": self.has_private_key,
                "config_filename": self.config_filename, "owner": self.owner, "expires_at": self.expires_at,
                "expires": format_moment(self.expires_at), "expired": self.expired}


@dataclass(frozen=True)
class PeersResult:
    """The peers an operation changed (added, removed, enabled, disabled)."""

    action: str
    peers: list[PeerInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "peers": [p.to_dict() for p in self.peers]}


@dataclass(frozen=True)
class ListPeersRequest:
    """A page of peers: a search text (name, address or public key), a sort, an offset and a limit."""

    search: str | None = None
    sort: str = "created"
    descending: bool = False
    offset: int = 0
    limit: int | None = None
    owner: str | None = None  # admins: only this user's peers

    @classmethod
    def parse(cls, *, search: object = None, sort: object = None, descending: object = False, offset: object = 0,
              limit: object = None, owner: object = None) -> ListPeersRequest:
        text = None
        if search is not None:
            text = require_text(search, "search", "letters, digits or part of an address or key").strip()
            if len(text) > 100:
                raise InputError("invalid search", text, "at most 100 characters")
        if sort is not None and sort not in SORTS:
            raise InputError("invalid sort", sort, f"use one of {', '.join(SORTS)}")
        return cls(search=text or None, sort=str(sort or "created"), descending=parse_bool(descending, "descending"),
                   offset=parse_int(offset, 0, 10_000_000, "offset", "peers to skip"),
                   limit=None if limit is None else parse_int(limit, 1, 1000, "limit", "peers per page"),
                   owner=_optional(owner, parse_user_name))


@dataclass(frozen=True)
class PeerList:
    peers: list[PeerInfo]
    total: int = -1  # how many match in all (all pages)
    offset: int = 0

    def to_dict(self) -> dict[str, Any]:
        total = len(self.peers) if self.total < 0 else self.total
        return {"peers": [p.to_dict() for p in self.peers], "total": total, "offset": self.offset}


@dataclass(frozen=True)
class PeerConfig:
    """A client config and the file name `wg-quick up FILE` accepts for it."""

    name: str
    filename: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- helpers shared with init ----------------------------------------------------------------------------


def pools(settings: Settings) -> tuple[Pool, Pool | None]:
    return Pool(settings.subnet4), Pool(settings.subnet6) if settings.subnet6 is not None else None


def create_peer(store: Store, settings: Settings, name: str, *, allowed_ips: tuple[IPNetwork, ...] | None = None,
                server_allowed_ips: tuple[IPNetwork, ...] | None = None, keepalive: int | None = None,
                public_key: PublicKey | None = None, owner: str | None = None,
                expires_at: float | None = None) -> Peer:
    """A new peer with the next free addresses, inserted (inside the caller's transaction)."""
    pool4, pool6 = pools(settings)
    # A peer that brings its own key pair: only its public key is known, its config stays on the client.
    private = PrivateKey.generate() if public_key is None else None
    peer = Peer(
        name=name,
        public_key=public_key or private.public_key(),  # type: ignore[union-attr]
        private_key=private,
        preshared_key=PresharedKey.generate(),
        address4=store.allocate(pool4),  # type: ignore[arg-type]
        address6=store.allocate(pool6) if pool6 is not None else None,  # type: ignore[arg-type]
        allowed_ips=allowed_ips,
        server_allowed_ips=server_allowed_ips or (),
        keepalive=keepalive,
        owner=owner,
        expires_at=expires_at,
    )
    store.insert_peer(peer)
    return peer


def check_routes_free(store: Store, settings: Settings, name: str, networks: Sequence[IPNetwork]) -> None:
    """A network can be routed to one peer only, and never over the tunnel subnet itself."""
    tunnel = [settings.subnet4] + ([settings.subnet6] if settings.subnet6 else [])
    for net in networks:
        for subnet in tunnel:
            if net.version == subnet.version and net.overlaps(subnet):  # type: ignore[arg-type]
                raise ConflictError(f"cannot route a network to peer '{name}'", str(net),
                                    f"it overlaps the tunnel subnet {subnet}: choose the network behind that peer")
        for other in store.peers():
            if other.name == name:
                continue
            clash = next((n for n in other.server_allowed_ips
                          if n.version == net.version and n.overlaps(net)), None)  # type: ignore[arg-type]
            if clash is not None:
                raise ConflictError(f"cannot route a network to peer '{name}'", str(net),
                                    f"peer '{other.name}' already has {clash}: a network can be behind one peer only")


# -- operations -------------------------------------------------------------------------------------------


def _owner_for(ctx: Context, store: Store, requested: str | None) -> str | None:
    """Who owns new peers: a user always owns what they add; an admin may give them to a user."""
    if not ctx.actor.sees_all:
        if requested is not None and requested != ctx.actor.name:
            raise InputError("you can only add peers for yourself", requested, "leave the owner out")
        return ctx.actor.name
    if requested is not None:
        store.user(requested)  # the owner must exist
    return requested


def _check_peer_limit(ctx: Context, store: Store, owner: str | None, adding: int) -> None:
    if owner is None or ctx.actor.sees_all:
        return
    user = store.user(owner)
    if user.peer_limit is not None and store.owned_count(owner) + adding > user.peer_limit:
        raise ConflictError("this would go over your peer limit", f"{user.peer_limit} peers",
                            "remove a peer you no longer use, or ask an admin to raise the limit")


def add_peers(ctx: Context, request: AddPeersRequest) -> PeersResult:
    """Add peers (all or none): keys, PSK, next free addresses, their files and the server config; applied live."""
    if request.public_key is not None and len(request.names) != 1:
        raise InputError("one public key was given for several peers", ", ".join(request.names),
                         "a client's own key belongs to one peer: add them one at a time")
    if request.server_allowed_ips and len(request.names) != 1:
        raise InputError("networks behind a peer were given for several peers", ", ".join(request.names),
                         "a network can be behind one peer only: add them one at a time")
    ctx.actor.require("peers:write")
    if request.server_allowed_ips and not ctx.actor.sees_all:
        raise AuthError("only an admin routes networks behind a peer", None, "ask an admin",
                        code=ErrorCode.FORBIDDEN)
    expires_at = None if request.expires is None else parse_expiry(request.expires, ctx.clock(), "expiry")
    with audited(ctx, "peer.add", ",".join(request.names)), locked(ctx) as held:
        def change(store: Store) -> tuple[list[Peer], list[str]]:
            for name in request.names:
                if store.has_peer(name):
                    raise ConflictError("a peer with this name already exists", name,
                                        "choose another name or remove it first")
            owner = _owner_for(ctx, store, request.owner)
            _check_peer_limit(ctx, store, owner, len(request.names))
            settings = store.settings()
            if request.public_key is not None and request.public_key == store.require_server_key().public_key():
                raise InputError("this public key is the server's own", str(request.public_key),
                                 "give the client's public key")
            if request.server_allowed_ips:
                check_routes_free(store, settings, request.names[0], request.server_allowed_ips)
            peers = [create_peer(store, settings, name, allowed_ips=request.allowed_ips,
                                 server_allowed_ips=request.server_allowed_ips, keepalive=request.keepalive,
                                 public_key=request.public_key, owner=owner, expires_at=expires_at)
                     for name in request.names]
            for peer in peers:
                record(ctx, store, "peer.add", peer.name, detail=f"{peer.address4}")
            return peers, [RENDER_SERVER] + [peer_item(p.name) for p in peers]

        peers = mutate(held, change)
        settings = held.store.settings()
        from bulwark_vpn.service.gateway import apply_live

        apply_live(ctx, held.store, upsert=peers, interface=request.interface)
        return PeersResult("added", [PeerInfo.of(p, settings, ctx.clock()) for p in peers])


def _owned(ctx: Context, store: Store, name: str) -> Peer:
    """The named peer, if this actor may see it (another user's peer is "not found")."""
    peer = store.peer(name)
    ctx.actor.check_owns(name, peer.owner)
    return peer


def remove_peers(ctx: Context, request: PeerNamesRequest) -> PeersResult:
    """Remove peers (all or none) and their folders; their addresses become reusable; applied live."""
    ctx.actor.require("peers:write")
    with audited(ctx, "peer.remove", ",".join(request.names)), locked(ctx) as held:
        def change(store: Store) -> tuple[list[Peer], list[str]]:
            for name in request.names:
                _owned(ctx, store, name)  # raises NotFoundError before anything changes
            peer_pools = pools(store.settings())
            removed = [store.delete_peer(name, peer_pools) for name in request.names]
            for peer in removed:
                if store.schema_version() >= 3:
                    store.revoke_peer_shares(peer.name, ctx.clock())
                    store.drop_peer_traffic(peer.name)
                record(ctx, store, "peer.remove", peer.name)
            return removed, [RENDER_SERVER] + [remove_item(p.folder_name) for p in removed]

        settings = held.store.settings()
        removed = mutate(held, change)
        from bulwark_vpn.service.gateway import apply_live

        apply_live(ctx, held.store, remove=removed, interface=request.interface)
        return PeersResult("removed", [PeerInfo.of(p, settings, ctx.clock()) for p in removed])


def set_peers_enabled(ctx: Context, request: PeerNamesRequest, enabled: bool) -> PeersResult:
    """Enable or disable peers; a disabled peer keeps its keys and address but is not on the device."""
    ctx.actor.require("peers:write")
    operation = "peer.enable" if enabled else "peer.disable"
    with audited(ctx, operation, ",".join(request.names)), locked(ctx) as held:
        def change(store: Store) -> tuple[list[Peer], list[str]]:
            peers = [_owned(ctx, store, name) for name in request.names]
            changed = [replace(p, enabled=enabled) for p in peers]
            for peer in changed:
                store.update_peer(peer)
                record(ctx, store, operation, peer.name)
            return changed, [RENDER_SERVER]

        changed = mutate(held, change)
        settings = held.store.settings()
        from bulwark_vpn.service.gateway import apply_live

        apply_live(ctx, held.store, upsert=changed, interface=request.interface)
        return PeersResult("enabled" if enabled else "disabled",
                           [PeerInfo.of(p, settings, ctx.clock()) for p in changed])


def update_peer(ctx: Context, request: UpdatePeerRequest) -> PeerInfo:
    """Change a peer's client AllowedIPs, keepalive, expiry or owner; its files follow, applied live."""
    ctx.actor.require("peers:write")
    expires_at = None if request.expires is None else parse_expiry(request.expires, ctx.clock(), "expiry")
    if (request.owner is not None or "owner" in request.clear) and not ctx.actor.sees_all:
        raise AuthError("only an admin gives a peer to another user", None, "ask an admin", code=ErrorCode.FORBIDDEN)
    with audited(ctx, "peer.update", request.name), locked(ctx) as held:
        def change(store: Store) -> tuple[Peer, list[str]]:
            peer = _owned(ctx, store, request.name)
            if request.owner is not None:
                store.user(request.owner)
            updated = replace(
                peer,
                allowed_ips=None if "allowed_ips" in request.clear else request.allowed_ips or peer.allowed_ips,
                keepalive=None if "keepalive" in request.clear else (
                    request.keepalive if request.keepalive is not None else peer.keepalive),
                expires_at=None if "expires" in request.clear else (
                    expires_at if expires_at is not None else peer.expires_at),
                owner=None if "owner" in request.clear else (request.owner or peer.owner),
            )
            if updated == peer:
                return peer, []
            store.update_peer(updated)
            record(ctx, store, "peer.update", peer.name)
            return updated, [RENDER_SERVER, peer_item(peer.name)]

        updated = mutate(held, change)
        from bulwark_vpn.service.gateway import apply_live

        apply_live(ctx, held.store, upsert=[updated], interface=request.interface)
        return PeerInfo.of(updated, held.store.settings(), ctx.clock())


def list_peers(ctx: Context, request: ListPeersRequest | None = None) -> PeerList:
    """Peers without secrets, filtered and paged by the store (fast at tens of thousands of peers). A user sees
    only their own."""
    request = request or ListPeersRequest()
    ctx.actor.require("read")
    heal_if_needed(ctx)
    owner = ctx.actor.owner_filter() or request.owner
    with ctx.open_store(read_only=True) as store:
        default_allowed = [str(n) for n in store.settings().allowed_ips]
        query = PeerQuery(search=request.search, sort=request.sort, descending=request.descending,
                          offset=request.offset, limit=request.limit, owner=owner)
        rows, total = store.peer_summaries(query)
    now = ctx.clock()
    return PeerList([PeerInfo.from_summary(row, default_allowed, now) for row in rows], total, request.offset)


def show_peer(ctx: Context, name: object) -> PeerInfo:
    wanted = parse_peer_name(name)
    ctx.actor.require("read")
    heal_if_needed(ctx)
    with ctx.open_store(read_only=True) as store:
        return PeerInfo.of(_owned(ctx, store, wanted), store.settings(), ctx.clock())


def peer_config(ctx: Context, request: PeerConfigRequest) -> PeerConfig:
    """A peer's wg-quick config, rendered from the store (never read back from the files). Handing out a private
    key is audited when it goes over the API."""
    ctx.actor.require("read")
    heal_if_needed(ctx)
    with ctx.open_store(read_only=True) as store:
        _owned(ctx, store, request.name)
    config = peer_config_unchecked(ctx, request)
    if ctx.actor.via == "api":
        with ctx.open_store() as store:
            record(ctx, store, "peer.config", request.name)
    return config


def peer_config_unchecked(ctx: Context, request: PeerConfigRequest) -> PeerConfig:
    """The config without an ownership check: for a redeemed share link (the link is the permission)."""
    with ctx.open_store(read_only=True) as store:
        peer = store.peer(request.name)
        key = store.require_server_key()
        settings = store.settings()
    if peer.private_key is None:
        raise InputError("this peer's private key is not known here", peer.name,
                         "it was added with its own public key or adopted without its key: its config lives only on "
                         "the client; remove and re-add the peer for a new one")
    if request.endpoint is None and settings.endpoint_host is None:
        raise InputError("the server's public address is unknown", None,
                         "set it ('bulwark init' with a server URL) or give an endpoint HOST:PORT")
    text = layout.render_client_config(settings, key.public_key(), peer,
                                       str(request.endpoint) if request.endpoint else None)
    return PeerConfig(peer.name, config_filename(peer.name), text)


def _qr(config: PeerConfig, render):
    from bulwark_vpn.render.qr import TooLargeForQR

    try:
        return render(config.text)
    except TooLargeForQR as exc:
        raise InputError("this config is too large for a QR code", config.name,
                         f"{exc}: copy the config file instead") from None


def peer_qr_text(ctx: Context, request: PeerConfigRequest) -> str:
    """The config as a terminal QR code (Unicode half blocks)."""
    from bulwark_vpn.render.qr import qr_terminal

    return str(_qr(peer_config(ctx, request), qr_terminal))


def peer_qr_svg(ctx: Context, request: PeerConfigRequest) -> str:
    from bulwark_vpn.render.qr import qr_svg

    return str(_qr(peer_config(ctx, request), qr_svg))


def peer_qr_png(ctx: Context, request: PeerConfigRequest) -> bytes:
    from bulwark_vpn.render.qr import qr_png

    return bytes(_qr(peer_config(ctx, request), lambda text: qr_png(text, scale=6)))
