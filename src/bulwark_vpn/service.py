"""The operations users ask for. `cli` and `web` call these and only format their results.

Every mutation runs under the config dir's lock: validate everything first (bad input changes nothing),
write the store in one transaction, then regenerate exactly the rendered files that depend on the change.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from bulwark_vpn import adopt as adopt_mod
from bulwark_vpn.addressing import Pool
from bulwark_vpn.config import (
    InitRequest,
    PeerRequest,
    combine,
    parse_config_dir,
    parse_peers,
    peer_requests,
    request_from_env,
    request_from_file,
    settings_update,
)
from bulwark_vpn.errors import ConflictError, InputError, NotFoundError, SystemActionError
from bulwark_vpn.fsutil import atomic_write_many, ensure_private_dir
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey
from bulwark_vpn.model import DEFAULT_KEEPALIVE, IPNetwork, Peer, Settings
from bulwark_vpn.render import layout
from bulwark_vpn.render.qr import qr_pngs, qr_terminal
from bulwark_vpn.store import STORE_NAME, Store
from bulwark_vpn.values import parse_endpoint, parse_peer_name, require_text

log = logging.getLogger("bulwark_vpn")

LOCK_NAME = ".bulwark.lock"
# Settings that appear in client configs: changing one re-renders every peer's files.
_CLIENT_FACING = ("server_url", "server_port", "listen_port", "peer_dns", "allowed_ips", "mtu", "discovered_url")


@contextlib.contextmanager
def _locked(config_dir: Path, *, create: bool = False) -> Iterator[None]:
    """Serialize mutations (store write + file rendering) across processes."""
    if not create and not (config_dir / STORE_NAME).exists():
        raise NotFoundError(f"no Bulwark store in '{config_dir}': run 'bulwark init --config-dir {config_dir}' first")
    ensure_private_dir(config_dir)
    fd = os.open(config_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open_existing(config_dir: Path) -> Store:
    store = Store.open(config_dir, create=False)
    if not store.is_initialized():
        store.close()
        raise NotFoundError(f"the server in '{config_dir}' is not set up: run 'bulwark init --config-dir {config_dir}'")
    return store


def _pools(settings: Settings) -> tuple[Pool, Pool | None]:
    return Pool(settings.subnet4), Pool(settings.subnet6) if settings.subnet6 is not None else None


# -- rendering --------------------------------------------------------------------------------------------


def _write_files(config_dir: Path, files: dict[str, layout.RenderedFile]) -> None:
    folders = {(config_dir / relative).parent for relative in files}
    for folder in sorted(folders):
        ensure_private_dir(folder)
    atomic_write_many([(config_dir / rel, f.content, f.mode) for rel, f in files.items()])


def _render_server(config_dir: Path, store: Store) -> None:
    settings = store.settings()
    key = store.require_server_key()
    _write_files(config_dir, layout.server_files(settings, key, store.server_peer_rows()))


def _render_peers(config_dir: Path, store: Store, peers: list[Peer]) -> None:
    """Every file of these peers, QR codes encoded in parallel, written with two syncs in all."""
    settings = store.settings()
    public = store.require_server_key().public_key()
    files: dict[str, layout.RenderedFile] = {}
    with_config = []
    for peer in peers:
        rendered = layout.peer_files(settings, public, peer)
        files.update(rendered)
        if layout.conf_path(peer) in rendered:
            with_config.append(peer)
    confs = [files[layout.conf_path(p)].content.decode() for p in with_config]
    for peer, png in zip(with_config, qr_pngs(confs), strict=True):
        files[layout.qr_path(peer)] = layout.RenderedFile(png)
    _write_files(config_dir, files)


def _remove_peer_files(config_dir: Path, peer: Peer) -> None:
    folder = config_dir / peer.folder_name
    if folder.is_dir():
        shutil.rmtree(folder)


# -- init -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitResult:
    settings: Settings
    created: bool
    adopted_from: Path | None
    added: tuple[str, ...]
    changed_settings: tuple[str, ...]


def _validate_new_settings(store: Store, old: Settings, new: Settings) -> None:
    """Refuse a subnet change that would leave existing peers outside the new subnet, and renaming the
    interface under a running gateway (its supervisor would be orphaned)."""
    if new.interface != old.interface and _running_gateway(old.interface) is not None:
        raise ConflictError(
            f"cannot rename the interface to '{new.interface}': the gateway runs on '{old.interface}': "
            f"run 'bulwark down' first"
        )
    peers = store.peers()
    outside4 = [p for p in peers if not Pool(new.subnet4).contains_peer_address(p.address4)]
    if outside4 and new.subnet4 != old.subnet4:
        raise ConflictError(
            f"cannot change the subnet to '{new.subnet4}': peer '{outside4[0].name}' has {outside4[0].address4} "
            f"outside it: choose a subnet containing the existing peers, or remove them first"
        )
    if new.subnet6 is not None and new.subnet6 != old.subnet6:
        outside6 = [p for p in peers if p.address6 is not None and p.address6 not in new.subnet6]
        if outside6:
            raise ConflictError(
                f"cannot change the IPv6 subnet to '{new.subnet6}': peer '{outside6[0].name}' has "
                f"{outside6[0].address6} outside it: choose a subnet containing it, or remove the peer first"
            )


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
    pool4, pool6 = _pools(settings)
    with store.transaction():
        for peer in sorted(adopted.peers, key=lambda p: int(p.address4)):
            if pool4.contains_peer_address(peer.address4):
                store.reserve(pool4, peer.address4)
            if peer.address6 is not None and pool6 is not None and pool6.contains_peer_address(peer.address6):
                store.reserve(pool6, peer.address6)
            store.insert_peer(peer)
    return settings


def init_server(config_dir: Path, request: InitRequest) -> InitResult:
    """Create or update the server from validated settings; idempotent. Adopts a linuxserver layout.

    A failed first init removes what it created (the folder, the store, the lock), so a retry still
    adopts an existing linuxserver layout and bad input leaves the disk as it was.
    """
    created = [p for p in (config_dir, config_dir / STORE_NAME, config_dir / LOCK_NAME) if not p.exists()]
    try:
        return _init_server(config_dir, request)
    except BaseException:
        _remove_created(config_dir, created)
        raise


def _remove_created(config_dir: Path, created: list[Path]) -> None:
    if config_dir / STORE_NAME in created:
        for suffix in ("", "-wal", "-shm", "-journal"):
            (config_dir / f"{STORE_NAME}{suffix}").unlink(missing_ok=True)
    if config_dir / LOCK_NAME in created:
        (config_dir / LOCK_NAME).unlink(missing_ok=True)
    if config_dir in created and config_dir.is_dir() and not any(config_dir.iterdir()):
        config_dir.rmdir()


def _init_server(config_dir: Path, request: InitRequest) -> InitResult:
    with _locked(config_dir, create=True), Store.open(config_dir) as store:
        fresh = not store.is_initialized()
        adopted = adopt_mod.adopt_linuxserver(config_dir) if fresh else None
        with store.transaction():
            if adopted is not None:
                _adopt(store, adopted)
            old = store.settings()
            new = request.update.apply_to(old)
            _validate_new_settings(store, old, new)
            if store.server_key() is None:
                store.set_server_key(PrivateKey.generate())
            if new != old or fresh:
                store.save_settings(new)
            _rebase_if_needed(store, old, new)
            missing = [p for p in request.peers if not store.has_peer(p.name)]
            added = [_create_requested(store, new, p) for p in missing]
            _apply_keepalive_peers(store, request.keepalive_peers)
            _apply_server_allowed_ips(store, new, request.peer_routes)
        changed = tuple(f for f in Settings.__dataclass_fields__ if getattr(old, f) != getattr(new, f))
        if new.interface != old.interface:
            (config_dir / "wg_confs" / f"{old.interface}.conf").unlink(missing_ok=True)
        _render_server(config_dir, store)
        client_change = fresh or any(f in _CLIENT_FACING or f.startswith("subnet") for f in changed)
        to_render = store.peers() if client_change else added + _peers_missing_files(config_dir, store)
        _render_peers(config_dir, store, to_render)
        if new.log_confs:
            _log_confs(config_dir, store, added)
        return InitResult(new, fresh, adopted.source if adopted else None, tuple(p.name for p in added), changed)


def init_from_sources(config_dir: Path, *, flags: Mapping[str, object] | None = None, peers: str | None = None,
                      environ: Mapping[str, str] | None = None, settings_file: Path | None = None) -> InitResult:
    """`bulwark init`: flags beat the linuxserver variables in `environ`, which beat the settings file."""
    flag_request = InitRequest(
        update=settings_update(dict(flags or {})),
        peers=peer_requests(parse_peers(peers), (), {}) if peers else (),
    )
    requests = [flag_request, request_from_env(environ or {})]
    if settings_file is not None:
        requests.append(request_from_file(settings_file))
    return init_server(config_dir, combine(*requests))


def _log_confs(config_dir: Path, store: Store, peers: list[Peer]) -> None:
    """LOG_CONFS=true: new peers' QR codes go to the log (the container log), as linuxserver does."""
    settings = store.settings()
    public = store.require_server_key().public_key()
    for peer in peers:
        if peer.private_key is not None:
            config = layout.render_client_config(settings, public, peer)
            log.info("bulwark: peer %s:\n%s", peer.name, qr_terminal(config))


def _apply_keepalive_peers(store: Store, names: tuple[str, ...]) -> None:
    for peer in store.peers():
        wanted = "all" in names or peer.name in names
        if wanted and peer.keepalive is None:
            store.update_peer(replace(peer, keepalive=DEFAULT_KEEPALIVE))


def _apply_server_allowed_ips(store: Store, settings: Settings, routes: tuple[tuple[str, tuple], ...]) -> None:
    """SERVER_ALLOWEDIPS_PEER_<name> given for an existing peer replaces its routed networks."""
    for name, networks in routes:
        if not store.has_peer(name):
            continue
        peer = store.peer(name)
        if peer.server_allowed_ips != networks:
            _check_routes_free(store, settings, name, networks)
            store.update_peer(replace(peer, server_allowed_ips=networks))


def _check_routes_free(store: Store, settings: Settings, name: str, networks: tuple[IPNetwork, ...]) -> None:
    """A network can be routed to one peer only, and never over the tunnel subnet itself."""
    tunnel = [settings.subnet4] + ([settings.subnet6] if settings.subnet6 else [])
    for net in networks:
        for subnet in tunnel:
            if net.version == subnet.version and net.overlaps(subnet):  # type: ignore[arg-type]
                raise ConflictError(
                    f"cannot route '{net}' to peer '{name}': it overlaps the tunnel subnet {subnet}: "
                    f"choose the network behind that peer"
                )
        for other in store.peers():
            if other.name == name:
                continue
            clash = next((n for n in other.server_allowed_ips
                          if n.version == net.version and n.overlaps(net)), None)  # type: ignore[arg-type]
            if clash is not None:
                raise ConflictError(
                    f"cannot route '{net}' to peer '{name}': peer '{other.name}' already has {clash}: "
                    f"a network can be behind one peer only"
                )


def _peers_missing_files(config_dir: Path, store: Store) -> list[Peer]:
    return [p for p in store.peers() if not (config_dir / p.folder_name / f"publickey-{p.folder_name}").exists()]


# -- peers ------------------------------------------------------------------------------------------------


def _create_peer(
    store: Store,
    settings: Settings,
    name: str,
    *,
    allowed_ips: tuple[IPNetwork, ...] | None = None,
    server_allowed_ips: tuple[IPNetwork, ...] | None = None,
    keepalive: int | None = None,
    public_key: PublicKey | None = None,
) -> Peer:
    pool4, pool6 = _pools(settings)
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
    )
    store.insert_peer(peer)
    return peer


def _create_requested(store: Store, settings: Settings, request: PeerRequest) -> Peer:
    if request.server_allowed_ips:
        _check_routes_free(store, settings, request.name, request.server_allowed_ips)
    return _create_peer(
        store, settings, request.name, keepalive=request.keepalive, server_allowed_ips=request.server_allowed_ips
    )


def _unique_names(names: list[str]) -> list[str]:
    normalized = [parse_peer_name(n) for n in names]
    if not normalized:
        raise InputError("no peer name given: pass at least one NAME")
    seen: set[str] = set()
    for name in normalized:
        if name in seen:
            raise InputError(f"peer name given twice: '{name}': list each peer once")
        seen.add(name)
    return normalized


def add_peers(
    config_dir: Path,
    names: list[str],
    *,
    allowed_ips: tuple[IPNetwork, ...] | None = None,
    server_allowed_ips: tuple[IPNetwork, ...] | None = None,
    keepalive: int | None = None,
    public_key: PublicKey | None = None,
    interface: str | None = None,
) -> list[Peer]:
    """Add peers (all or none): keys, PSK, next free addresses, their files and the server config.

    `public_key` adds one peer that keeps its private key on the client (Bulwark never sees it).
    """
    wanted = _unique_names(names)
    if public_key is not None and len(wanted) != 1:
        raise InputError(f"--public-key was given with {len(wanted)} peers: add one peer per public key")
    if server_allowed_ips and len(wanted) != 1:
        raise InputError(
            f"--server-allowed-ips was given with {len(wanted)} peers: a network can be behind one peer only, "
            f"add them one at a time"
        )
    with _locked(config_dir), _open_existing(config_dir) as store:
        for name in wanted:
            if store.has_peer(name):
                raise ConflictError(f"a peer named '{name}' already exists: choose another name or remove it first")
        settings = store.settings()
        if public_key is not None and public_key == store.require_server_key().public_key():
            raise InputError(f"public key '{public_key}' is the server's own key: give the client's public key")
        if server_allowed_ips:
            _check_routes_free(store, settings, wanted[0], server_allowed_ips)
        with store.transaction():
            peers = [
                _create_peer(store, settings, n, allowed_ips=allowed_ips, server_allowed_ips=server_allowed_ips,
                             keepalive=keepalive, public_key=public_key)
                for n in wanted
            ]
        _render_server(config_dir, store)
        _render_peers(config_dir, store, peers)
        _apply_live(config_dir, store, upsert=peers, interface=interface)
        return peers


def remove_peers(config_dir: Path, names: list[str], interface: str | None = None) -> list[Peer]:
    """Remove peers (all or none) and their files; their addresses become reusable."""
    wanted = _unique_names(names)
    with _locked(config_dir), _open_existing(config_dir) as store:
        for name in wanted:
            store.peer(name)  # raises NotFoundError before anything changes
        pools = _pools(store.settings())
        with store.transaction():
            removed = [store.delete_peer(name, pools) for name in wanted]
        _render_server(config_dir, store)
        for peer in removed:
            _remove_peer_files(config_dir, peer)
        _apply_live(config_dir, store, remove=removed, interface=interface)
        return removed


def set_peers_enabled(config_dir: Path, names: list[str], enabled: bool, interface: str | None = None) -> list[Peer]:
    """Enable or disable peers; a disabled peer keeps its keys and address but is not on the device."""
    wanted = _unique_names(names)
    with _locked(config_dir), _open_existing(config_dir) as store:
        peers = [store.peer(name) for name in wanted]
        with store.transaction():
            changed = [replace(p, enabled=enabled) for p in peers]
            for peer in changed:
                store.update_peer(peer)
        _render_server(config_dir, store)
        _apply_live(config_dir, store, upsert=changed, interface=interface)
        return changed


@dataclass(frozen=True)
class PeerInfo:
    """What `peer list` shows: no secrets."""

    name: str
    public_key: str
    address4: str
    address6: str | None
    allowed_ips: list[str]
    keepalive: int | None
    enabled: bool

    @classmethod
    def of(cls, peer: Peer, settings: Settings) -> PeerInfo:
        allowed = peer.allowed_ips if peer.allowed_ips is not None else settings.allowed_ips
        return cls(
            name=peer.name,
            public_key=str(peer.public_key),
            address4=str(peer.address4),
            address6=str(peer.address6) if peer.address6 else None,
            allowed_ips=[str(n) for n in allowed],
            keepalive=peer.keepalive,
            enabled=peer.enabled,
        )


def list_peers(config_dir: Path) -> list[PeerInfo]:
    with _open_existing(config_dir) as store:
        settings = store.settings()
        return [PeerInfo.of(p, settings) for p in store.peers()]


def get_settings(config_dir: Path) -> Settings:
    with _open_existing(config_dir) as store:
        return store.settings()


def peer_config(config_dir: Path, name: str, endpoint: str | None = None) -> str:
    """A peer's wg-quick config; `endpoint` (HOST:PORT) overrides the Endpoint line."""
    wanted = parse_peer_name(name)
    if endpoint is not None:
        parse_endpoint(endpoint)
    with _open_existing(config_dir) as store:
        peer = store.peer(wanted)
        key = store.require_server_key()
        settings = store.settings()
        if peer.private_key is None:
            raise InputError(
                f"peer '{wanted}' was adopted without its private key: its config lives only on the client; "
                f"remove and re-add the peer to get a new one"
            )
        if endpoint is None and settings.endpoint_host is None:
            raise InputError(
                "the server's public address is unknown: set it with 'bulwark init --server-url HOST' "
                "or pass '--endpoint HOST:PORT'"
            )
        return layout.render_client_config(settings, key.public_key(), peer, endpoint)


def peer_qr(config_dir: Path, name: str, endpoint: str | None = None) -> str:
    return qr_terminal(peer_config(config_dir, name, endpoint))


# -- running the gateway ------------------------------------------------------------------------------

UP_TIMEOUT = 60.0


def _running_gateway(iface: str):
    """The RuntimeState of a live supervisor for `iface`, or None."""
    from bulwark_vpn.dataplane import gateway

    state = gateway.RuntimeState.load(iface)
    return state if state is not None and state.supervisor_alive() else None


def _apply_live(config_dir: Path, store: Store, *, upsert: Iterable[Peer] = (), remove: Iterable[Peer] = (),
                interface: str | None = None) -> None:
    """Apply peer changes to the running gateway at once, touching only these peers."""
    from bulwark_vpn.dataplane import gateway
    from bulwark_vpn.dataplane.runner import Runner

    iface = interface or store.settings().interface
    state = _running_gateway(iface)
    if state is None or Path(state.config_dir).resolve() != config_dir.resolve():
        return
    gateway.apply_peer_changes(Runner(), iface, upsert=upsert, remove=remove)


def _prepare_up(config_dir: Path, interface: str | None, backend: str | None, environ: dict[str, str]) -> Settings:
    return init_from_sources(config_dir, flags={"interface": interface, "backend": backend}, environ=environ).settings


def bring_up_foreground(config_dir: Path, *, interface: str | None = None, backend: str | None = None,
                        environ: dict[str, str] | None = None, ready=None) -> None:
    """`bulwark up --foreground`: provision from env if needed, bring up, supervise until signalled."""
    from bulwark_vpn.dataplane import gateway

    _prepare_up(config_dir, interface, backend, dict(environ or {}))
    _discover_endpoint(config_dir, dict(environ or {}))
    gateway.run_foreground(config_dir, ready=ready)


def bring_up_background(config_dir: Path, *, interface: str | None = None, backend: str | None = None,
                        environ: dict[str, str] | None = None) -> tuple[object, str]:
    """`bulwark up`: start the supervisor detached, return once the gateway is up (state, its log)."""
    import subprocess
    import sys
    import time

    from bulwark_vpn.dataplane import gateway

    settings = _prepare_up(config_dir, interface, backend, dict(environ or {}))
    iface = settings.interface
    existing = gateway.RuntimeState.load(iface)
    if existing is not None and existing.supervisor_alive():
        raise ConflictError(f"interface '{iface}' is already up (pid {existing.pid}): run 'bulwark down' first")
    ensure_private_dir(gateway.RUN_DIR)
    log_path = gateway.RUN_DIR / f"{iface}.log"
    argv = [sys.executable, "-m", "bulwark_vpn", "up", "--foreground", "--config-dir", str(config_dir)]
    with open(log_path, "wb") as log_file:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        state = gateway.RuntimeState.load(iface)
        if state is not None and state.pid == child.pid and state.ready:
            return state, log_path.read_text(errors="replace")
        if child.poll() is not None:
            lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
            reason = lines[-1].removeprefix("bulwark: ") if lines else f"exit status {child.returncode}"
            raise SystemActionError(f"the gateway did not come up: {reason}")
        time.sleep(0.05)
    child.terminate()
    raise SystemActionError(f"the gateway did not come up in {UP_TIMEOUT:g}s: see {log_path}")


def bring_down(config_dir: Path | None, interface: str | None = None) -> bool:
    """`bulwark down`: tear the gateway down (through its supervisor when it runs). False if nothing ran."""
    from bulwark_vpn.dataplane import gateway

    iface = interface
    if iface is None and config_dir is not None and (config_dir / STORE_NAME).exists():
        iface = get_settings(config_dir).interface
    if iface is None:
        raise InputError("no interface given: pass --interface or --config-dir")
    return gateway.stop_gateway(iface)


def status(config_dir: Path, interface: str | None = None):
    """The live interface and its peers (names from the store, counters from the device)."""
    from bulwark_vpn.dataplane import gateway

    return gateway.gateway_status(config_dir, interface)


def apply_now(config_dir: Path, *, dry_run: bool = False, interface: str | None = None) -> list[str]:
    """Make the live device match the store now; with dry_run only describe the changes."""
    from bulwark_vpn.dataplane import gateway
    from bulwark_vpn.dataplane.apply import apply_device
    from bulwark_vpn.dataplane.runner import Runner

    with _open_existing(config_dir) as store:
        settings = store.settings()
        iface = interface or settings.interface
        desired = gateway.desired_device(settings, store.require_server_key(), store.peers())
    runner = Runner()
    if not gateway.link.link_exists(runner, iface):
        raise NotFoundError(f"interface '{iface}' is not up: run 'bulwark up' first")
    return [change.describe() for change in apply_device(runner, iface, desired, dry_run=dry_run)]


def _discover_endpoint(config_dir: Path, environ: dict[str, str] | None = None) -> None:
    """SERVERURL=auto: find the public address (IMDSv2, STUN, HTTP); keep the last known on failure.

    BULWARK_IMDS_URL, BULWARK_STUN_SERVERS and BULWARK_IP_SERVICES (comma lists) override the sources.
    """
    with _open_existing(config_dir) as store:
        settings = store.settings()
    if settings.server_url != "auto":
        return
    from bulwark_vpn import publicip

    env = environ or {}
    sources: dict = {}
    if "BULWARK_IMDS_URL" in env:
        sources["imds_url"] = env["BULWARK_IMDS_URL"] or None
    for key, arg in (("BULWARK_STUN_SERVERS", "stun_servers"), ("BULWARK_IP_SERVICES", "http_services")):
        if key in env:
            sources[arg] = tuple(x.strip() for x in env[key].split(",") if x.strip())
    found: list = []

    def discover():
        found.append(publicip.discover_public_address(**sources))
        return found[-1]

    address = publicip.resolve_server_url(settings.server_url, settings.discovered_url, discover)
    if address is None or address == settings.discovered_url:
        if not found or found[-1] is None:
            log.warning("bulwark: could not discover the public address; keeping %s", settings.discovered_url)
        return
    with _locked(config_dir), _open_existing(config_dir) as store:
        store.save_settings(replace(store.settings(), discovered_url=address))
        _render_server(config_dir, store)
        _render_peers(config_dir, store, store.peers())
    log.info("bulwark: public address %s (from %s)", address, found[-1].source if found else "?")


def _config_dir_snapshot(config_dir: Path) -> tuple[tuple[str, bytes], ...]:
    """The config dir's files for a Kubernetes Secret: the store as a consistent SQLite snapshot (a live
    gateway keeps recent writes in the WAL, which a byte copy of the main file would miss), the rendered
    files as they are; no WAL, shared-memory or lock files."""
    import sqlite3
    import tempfile

    files = [
        (str(path.relative_to(config_dir)), path.read_bytes())
        for path in sorted(config_dir.rglob("*"))
        if path.is_file() and not path.name.startswith(".") and not path.name.startswith(STORE_NAME)
    ]
    with tempfile.TemporaryDirectory() as tmp, _open_existing(config_dir):
        snapshot = Path(tmp) / STORE_NAME
        source = sqlite3.connect(config_dir / STORE_NAME)
        target = sqlite3.connect(snapshot)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        files.append((STORE_NAME, snapshot.read_bytes()))
    return tuple(files)


# -- deployment files ---------------------------------------------------------------------------------

DEPLOY_TARGETS = ("docker", "kubernetes", "terraform", "systemd")


def render_deployment(config_dir: Path, target: str, out_dir: Path, **overrides: object) -> list[Path]:
    """Write the deployment files for `target` from the store's settings and peers (or the defaults).

    Every override goes through the parser of its kind (see `deploy.DeployOptions`), and every file is
    rendered before the first one is written: a refused value leaves `out_dir` as it was.
    """
    from bulwark_vpn import deploy

    renderers = {"docker": deploy.render_docker, "kubernetes": deploy.render_kubernetes,
                 "terraform": deploy.render_terraform, "systemd": deploy.render_systemd}
    if target not in renderers:
        raise InputError("unknown deploy target", target, f"use one of {', '.join(DEPLOY_TARGETS)}")
    config_dir = parse_config_dir(str(config_dir))
    out_dir = parse_config_dir(str(out_dir), "output folder")
    settings = Settings()
    peers: tuple[str, ...] = ()
    secret_files: tuple[tuple[str, bytes], ...] = ()
    if (config_dir / STORE_NAME).exists():
        with _open_existing(config_dir) as store:
            settings = store.settings()
            peers = tuple(p.name for p in store.peers())
        if overrides.get("storage") == "secret":
            secret_files = _config_dir_snapshot(config_dir)
    if overrides.get("aws_ssh_public_key") is not None:
        overrides["aws_ssh_public_key"] = _ssh_public_key_text(overrides["aws_ssh_public_key"])
    options = deploy.DeployOptions.from_settings(
        settings, peers=overrides.pop("peers", None) or peers or None,
        secret_files=secret_files or None, **overrides,
    )
    files = renderers[target](options)
    return deploy.write_bundle(files, out_dir)


def _ssh_public_key_text(value: object) -> str:
    """An SSH public key given as its text, or as the path of a file holding it (`~/.ssh/id_ed25519.pub`)."""
    hint = "give a key line ('ssh-ed25519 AAAA... you@host') or the path of a readable .pub file"
    text = require_text(value, "SSH public key", hint)
    if text.startswith(("ssh-", "ecdsa-", "sk-")):
        return text
    try:
        return Path(text).expanduser().read_text().strip()
    except (OSError, UnicodeDecodeError):
        raise InputError("invalid SSH public key", value, hint) from None


# -- doctor -----------------------------------------------------------------------------------------------


def run_doctor(config_dir: Path | None, *, interface: str | None = None, peer_config: Path | None = None,
               fix: bool = False, confirm=None):
    """`bulwark doctor`: the server checks (or those of a client config, `peer_config`); with `fix`, the safe
    fixes once `confirm(results, fixable)` agrees, then the checks again. See `bulwark_vpn.doctor`."""
    from bulwark_vpn import doctor

    return doctor.diagnose(config_dir, interface=interface, peer_config=peer_config, fix=fix, confirm=confirm)
