"""`init`: create or update the server from settings, adopting an existing linuxserver `/config`.

Idempotent: a setting that is not given never resets a stored one; peers that exist are left as they are; a
changed setting re-renders only the files that depend on it. A failed first init removes what it created (the
folder, the store, the lock), so a retry still adopts and bad input leaves the disk as it was.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bulwark_vpn import adopt as adopt_mod
from bulwark_vpn.addressing import Pool
from bulwark_vpn.config import (
    InitRequest,
    PeerRequest,
    combine,
    parse_peers,
    peer_requests,
    request_from_env,
    request_from_file,
    settings_update,
)
from bulwark_vpn.errors import ConflictError, ErrorCode, NotFoundError
from bulwark_vpn.keys import PrivateKey
from bulwark_vpn.model import DEFAULT_KEEPALIVE, IPNetwork, Peer, Settings, SettingsUpdate
from bulwark_vpn.render import layout
from bulwark_vpn.service.context import LOCK_NAME, Context
from bulwark_vpn.service.files import locked, mutate, peer_item, remove_item
from bulwark_vpn.service.peers import check_routes_free, create_peer, pools
from bulwark_vpn.store import RENDER_ALL_PEERS, RENDER_SERVER, STORE_NAME, Store
from bulwark_vpn.values import peer_folder

log = logging.getLogger("bulwark_vpn")

# Settings that appear in client configs: changing one re-renders every peer's files.
CLIENT_FACING = ("server_url", "server_port", "listen_port", "peer_dns", "allowed_ips", "mtu", "discovered_url",
                 "subnet4", "subnet6", "files")
# The variables that provision a server (linuxserver's, and Bulwark's own).
PROVISIONING_VARIABLES = ("PEERS", "SERVERURL", "SERVERPORT", "INTERNAL_SUBNET", "INTERNAL_SUBNET6", "PEERDNS",
                          "ALLOWEDIPS", "PERSISTENTKEEPALIVE_PEERS", "LOG_CONFS", "BULWARK_LISTEN_PORT",
                          "BULWARK_SUBNET6", "BULWARK_MTU", "BULWARK_INTERFACE", "BULWARK_BACKEND",
                          "BULWARK_EGRESS_INTERFACE", "BULWARK_SETTINGS", "BULWARK_FILES")


@dataclass(frozen=True)
class InitResult:
    settings: Settings
    created: bool
    adopted_from: Path | None
    added: tuple[str, ...]
    changed_settings: tuple[str, ...]
    config_dir: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "adopted_from": str(self.adopted_from) if self.adopted_from else None,
            "added_peers": list(self.added),
            "changed_settings": list(self.changed_settings),
            "config_dir": str(self.config_dir),
            "settings": settings_dict(self.settings),
        }


def settings_dict(settings: Settings) -> dict[str, Any]:
    """Settings as JSON-friendly values (networks as text)."""
    out: dict[str, Any] = {}
    for key, value in asdict(settings).items():
        if isinstance(value, tuple):
            out[key] = [str(v) for v in value]
        elif value is None or isinstance(value, bool | int | str):
            out[key] = value
        else:
            out[key] = str(value)
    return out


def _validate_new_settings(ctx: Context, store: Store, old: Settings, new: Settings) -> None:
    """Refuse a subnet change that would leave existing peers outside the new subnet, and renaming the
    interface under a running gateway (its supervisor would be orphaned)."""
    if new.interface != old.interface:
        from bulwark_vpn.service.gateway import running_state

        if running_state(ctx, old.interface) is not None:
            raise ConflictError("cannot rename the interface while the gateway runs", new.interface,
                                f"it runs on '{old.interface}': take it down first ('bulwark down')")
    if new.subnet4 == old.subnet4 and (new.subnet6 is None or new.subnet6 == old.subnet6):
        return  # the peers' addresses are only checked against a new subnet
    peers = store.peers()
    # The server takes the subnet's first host: a changed subnet (an IPv6 /126 around a peer, say) must not put it
    # on a peer's address.
    server_ips = {a.ip for a in new.server_addresses}
    clash = next(((p, a) for p in peers for a in (p.address4, p.address6) if a in server_ips), None)
    if clash is not None:
        raise ConflictError("a peer would hold the server's own tunnel address", str(clash[1]),
                            f"peer '{clash[0].name}' has it (the server takes the subnet's first host): choose "
                            f"another subnet or remove that peer")
    outside4 = [p for p in peers if not Pool(new.subnet4).contains_peer_address(p.address4)]
    if outside4 and new.subnet4 != old.subnet4:
        raise ConflictError("cannot change the subnet", str(new.subnet4),
                            f"peer '{outside4[0].name}' has {outside4[0].address4} outside it: choose a subnet "
                            f"containing the existing peers, or remove them first")
    if new.subnet6 is not None and new.subnet6 != old.subnet6:
        outside6 = [p for p in peers if p.address6 is not None and p.address6 not in new.subnet6]
        if outside6:
            raise ConflictError("cannot change the IPv6 subnet", str(new.subnet6),
                                f"peer '{outside6[0].name}' has {outside6[0].address6} outside it: choose a subnet "
                                f"containing it, or remove the peer first")


def _rebase_if_needed(store: Store, old: Settings, new: Settings) -> None:
    if new.subnet4 != old.subnet4:
        store.rebase_pool(Pool(old.subnet4), Pool(new.subnet4), [p.address4 for p in store.peers()])
    if new.subnet6 is not None and new.subnet6 != old.subnet6:
        used6 = [p.address6 for p in store.peers() if p.address6 is not None]
        pool6 = Pool(new.subnet6)
        store.rebase_pool(Pool(old.subnet6 or new.subnet6), pool6, used6)
        # IPv6 turned on after peers exist: give each of them an address in it too.
        for peer in store.peers():
            if peer.address6 is None:
                store.update_peer(replace(peer, address6=store.allocate(pool6)))  # type: ignore[arg-type]


def _adopt(store: Store, adopted: adopt_mod.Adopted) -> Settings:
    settings = adopted.update.apply_to(Settings())
    store.save_settings(settings)
    store.set_server_key(adopted.server_key)
    pool4, pool6 = pools(settings)
    for peer in sorted(adopted.peers, key=lambda p: int(p.address4)):
        if pool4.contains_peer_address(peer.address4):
            store.reserve(pool4, peer.address4)
        if peer.address6 is not None and pool6 is not None and pool6.contains_peer_address(peer.address6):
            store.reserve(pool6, peer.address6)
        store.insert_peer(peer)
    return settings


def _apply_keepalive_peers(store: Store, names: tuple[str, ...]) -> list[str]:
    changed: list[str] = []
    if not names:
        return changed
    for peer in store.peers():
        wanted = "all" in names or peer.name in names
        if wanted and peer.keepalive is None:
            store.update_peer(replace(peer, keepalive=DEFAULT_KEEPALIVE))
            changed.append(peer.name)
    return changed


def _apply_server_allowed_ips(store: Store, settings: Settings,
                              routes: tuple[tuple[str, tuple[IPNetwork, ...]], ...]) -> None:
    """SERVER_ALLOWEDIPS_PEER_<name> given for an existing peer replaces its routed networks."""
    for name, networks in routes:
        if not store.has_peer(name):
            continue
        peer = store.peer(name)
        if peer.server_allowed_ips != networks:
            check_routes_free(store, settings, name, networks)
            store.update_peer(replace(peer, server_allowed_ips=networks))


def _create_requested(store: Store, settings: Settings, request: PeerRequest) -> Peer:
    if request.server_allowed_ips:
        check_routes_free(store, settings, request.name, request.server_allowed_ips)
    return create_peer(store, settings, request.name, keepalive=request.keepalive,
                       server_allowed_ips=request.server_allowed_ips)


def _discovery_sources(environ: Mapping[str, str]) -> dict[str, Any]:
    """BULWARK_IMDS_URL, BULWARK_STUN_SERVERS and BULWARK_IP_SERVICES (comma lists) override the sources."""
    sources: dict[str, Any] = {}
    if "BULWARK_IMDS_URL" in environ:
        sources["imds_url"] = environ["BULWARK_IMDS_URL"] or None
    for key, arg in (("BULWARK_STUN_SERVERS", "stun_servers"), ("BULWARK_IP_SERVICES", "http_services")):
        if key in environ:
            sources[arg] = tuple(x.strip() for x in environ[key].split(",") if x.strip())
    return sources


def discover_address(ctx: Context) -> str | None:
    """The public address from IMDSv2, then STUN, then HTTP (answers through the strict parser); None if none."""
    from bulwark_vpn import publicip

    result = publicip.discover_public_address(**_discovery_sources(ctx.environ))
    if result is None:
        return None
    log.info("bulwark: public address %s (from %s)", result.address, result.source)
    return result.address


def init_server(ctx: Context, request: InitRequest) -> InitResult:
    """Create or update the server from validated settings; idempotent. Adopts a linuxserver layout."""
    config_dir = ctx.config_dir
    created = [p for p in (config_dir, config_dir / STORE_NAME, config_dir / LOCK_NAME) if not os.path.lexists(p)]
    try:
        return _init_server(ctx, request)
    except BaseException:
        _remove_created(config_dir, created)
        raise


def _remove_created(config_dir: Path, created: list[Path]) -> None:
    if config_dir / STORE_NAME in created:
        for suffix in ("", "-wal", "-shm", "-journal"):
            (config_dir / f"{STORE_NAME}{suffix}").unlink(missing_ok=True)
    if config_dir / LOCK_NAME in created:
        (config_dir / LOCK_NAME).unlink(missing_ok=True)
    if config_dir in created and config_dir.is_dir() and not config_dir.is_symlink() and not any(config_dir.iterdir()):
        config_dir.rmdir()


def _wants_discovery(update: SettingsUpdate, store: Store) -> bool:
    stored = store.settings() if store.is_initialized() else Settings()
    return update.apply_to(stored).server_url == "auto"


def _init_server(ctx: Context, request: InitRequest) -> InitResult:
    with locked(ctx, create=True) as held:
        store, folder = held.store, held.folder
        update = request.update
        if _wants_discovery(update, store):
            # SERVERURL=auto: discover now, so the configs written below carry an Endpoint (kept when it fails).
            address = discover_address(ctx)
            if address is not None:
                update = replace(update, discovered_url=address)
            else:
                log.warning("bulwark: could not discover the public address: clients get no Endpoint until it is "
                            "known (set SERVERURL to a name or address to skip discovery)")
        fresh = not store.is_initialized()
        adopted = adopt_mod.adopt_linuxserver(folder) if fresh else None

        def change(store: Store) -> tuple[InitResult, list[str]]:
            if adopted is not None:
                _adopt(store, adopted)
            old = store.settings()
            new = update.apply_to(old)
            _validate_new_settings(ctx, store, old, new)
            if store.server_key() is None:
                store.set_server_key(PrivateKey.generate())
            if new != old or fresh:
                store.save_settings(new)
            _rebase_if_needed(store, old, new)
            missing = [p for p in request.peers if not store.has_peer(p.name)]
            added = [_create_requested(store, new, p) for p in missing]
            keepalive_changed = _apply_keepalive_peers(store, request.keepalive_peers)
            _apply_server_allowed_ips(store, new, request.peer_routes)
            changed = tuple(f for f in Settings.__dataclass_fields__ if getattr(old, f) != getattr(new, f))
            items = [RENDER_SERVER]
            if new.interface != old.interface:
                items.append(remove_item(f"wg_confs/{old.interface}.conf"))
            if fresh or any(f in CLIENT_FACING for f in changed):
                items.append(RENDER_ALL_PEERS)
            else:
                stale = {p.name for p in added} | set(keepalive_changed)
                if new.files != "none":
                    # A peer folder deleted by hand comes back (one listing, not a look per peer).
                    present = set(folder.listdir())
                    stale |= {name for name in store.peer_names() if peer_folder(name) not in present}
                items += [peer_item(name) for name in sorted(stale)]
            result = InitResult(new, fresh, adopted.source if adopted else None, tuple(p.name for p in added),
                                changed, ctx.config_dir)
            return result, items

        result = mutate(held, change)
        if result.settings.log_confs:
            _log_confs(store, [store.peer(name) for name in result.added])
        return result


def _log_confs(store: Store, peers: list[Peer]) -> None:
    """LOG_CONFS=true: new peers' QR codes go to the log (the container log), as linuxserver does. They hold
    private keys: anyone who can read the log can connect as these peers, which the warning says each time."""
    from bulwark_vpn.render.qr import TooLargeForQR, qr_terminal

    settings = store.settings()
    public = store.require_server_key().public_key()
    shown = [p for p in peers if p.private_key is not None]
    if shown:
        log.warning("bulwark: LOG_CONFS is on: the QR codes below contain private keys; anyone who can read this "
                    "log can connect as these peers (turn it off with LOG_CONFS=false)")
    for peer in shown:
        config = layout.render_client_config(settings, public, peer)
        try:
            log.info("bulwark: peer %s:\n%s", peer.name, qr_terminal(config))
        except TooLargeForQR:
            log.warning("bulwark: peer %s: the config is too large for a QR code", peer.name)


def init_from_sources(ctx: Context, *, flags: Mapping[str, object] | None = None, peers: object = None,
                      settings_file: Path | None = None) -> InitResult:
    """`bulwark init`: flags beat the linuxserver variables in `ctx.environ`, which beat the settings file."""
    flag_request = InitRequest(
        update=settings_update(dict(flags or {})),
        peers=peer_requests(parse_peers(peers, "peers"), (), {}) if peers else (),
    )
    requests = [flag_request, request_from_env(ctx.environ)]
    if settings_file is not None:
        requests.append(request_from_file(settings_file))
    return init_server(ctx, combine(*requests))


def has_provisioning_input(ctx: Context, flags: Mapping[str, object], settings_file: Path | None) -> bool:
    """True when flags, a settings file or the linuxserver variables ask for a server to be set up."""
    given = any(v is not None for k, v in flags.items() if k not in ("interface", "backend", "serve"))
    return given or settings_file is not None or any(ctx.environ.get(name) for name in PROVISIONING_VARIABLES)


def require_store_or_input(ctx: Context, flags: Mapping[str, object], settings_file: Path | None) -> None:
    """`up` on a folder without a store and without any provisioning input refuses: a mistyped folder must not
    bring up an empty gateway with fresh keys."""
    if not ctx.has_store() and not has_provisioning_input(ctx, flags, settings_file):
        raise NotFoundError("no Bulwark store in this folder and nothing to set one up from", str(ctx.config_dir),
                            "run 'bulwark init' for it first, or set the linuxserver variables (PEERS, SERVERURL...)",
                            code=ErrorCode.NOT_INITIALIZED)
