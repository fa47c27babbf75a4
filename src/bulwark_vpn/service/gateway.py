"""Running the gateway: up (attached or detached), down, status, apply, and live per-peer changes.

A running gateway is bound to its store by the store's gateway id (kept in the runtime state): a command given
another folder than the running gateway's refuses, naming the folder that runs it, instead of reporting on or
taking down the wrong gateway.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulwark_vpn.errors import BulwarkError, ConflictError, ErrorCode, NotFoundError, SystemActionError
from bulwark_vpn.fsutil import ensure_private_dir
from bulwark_vpn.model import Peer
from bulwark_vpn.service.context import Context
from bulwark_vpn.service.files import heal, locked, mutate
from bulwark_vpn.service.provision import init_from_sources, require_store_or_input
from bulwark_vpn.store import Store
from bulwark_vpn.values import parse_interface_name, parse_peer_name

log = logging.getLogger("bulwark_vpn")

UP_TIMEOUT = 60.0


@dataclass(frozen=True)
class UpResult:
    interface: str
    backend: str
    pid: int
    config_dir: str
    log: str

    def to_dict(self) -> dict[str, Any]:
        return {"interface": self.interface, "backend": self.backend, "pid": self.pid, "config_dir": self.config_dir}


@dataclass(frozen=True)
class DownResult:
    interface: str
    stopped: bool  # False: nothing was running

    def to_dict(self) -> dict[str, Any]:
        return {"interface": self.interface, "stopped": self.stopped}


@dataclass(frozen=True)
class ApplyResult:
    interface: str
    dry_run: bool
    changes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"interface": self.interface, "dry_run": self.dry_run, "changes": list(self.changes)}


def running_state(ctx: Context, iface: str):
    """The RuntimeState of a live supervisor for `iface`, or None."""
    from bulwark_vpn.dataplane.gateway import RuntimeState

    state = RuntimeState.load(ctx.run_dir, iface)
    return state if state is not None and state.supervisor_alive() else None


def check_same_gateway(ctx: Context, store: Store, iface: str) -> None:
    """Refuse to act on a gateway that runs `iface` from another folder's store."""
    state = running_state(ctx, iface)
    if state is not None and not state.serves(ctx.config_dir, store.gateway_id()):
        raise ConflictError(f"the gateway on '{iface}' runs from another folder", state.config_dir,
                            f"this command was given '{ctx.config_dir}': use that folder for it",
                            code=ErrorCode.OTHER_GATEWAY)


def _interface(store: Store, interface: str | None) -> str:
    """The interface asked for (already parsed), else the store's."""
    return interface if interface is not None else store.settings().interface


def _parsed_interface(interface: object) -> str | None:
    # Parsed before anything opens the store: bad input must not even leave SQLite's -wal/-shm behind.
    return None if interface is None else parse_interface_name(interface)


def apply_live(ctx: Context, store: Store, *, upsert: Iterable[Peer] = (), remove: Iterable[Peer] = (),
               interface: str | None = None) -> None:
    """Apply peer changes to this folder's running gateway at once, touching only these peers. A gateway of
    another folder on the same interface is left alone (its supervisor would undo it anyway)."""
    from bulwark_vpn.dataplane import gateway
    from bulwark_vpn.dataplane.runner import Runner

    iface = interface or store.settings().interface
    state = running_state(ctx, iface)
    if state is None or not state.serves(ctx.config_dir, store.gateway_id()):
        return
    gateway.apply_peer_changes(Runner(log=ctx.log), iface, upsert=upsert, remove=remove)


def _prepare_up(ctx: Context, interface: str | None, backend: str | None, settings_file: Path | None,
                serve: bool | None = None) -> str:
    flags = {"interface": interface, "backend": backend, "serve": serve}
    require_store_or_input(ctx, flags, settings_file)
    result = init_from_sources(ctx, flags=flags, settings_file=settings_file)
    iface = result.settings.interface
    from bulwark_vpn.dataplane.gateway import refuse_if_running
    from bulwark_vpn.dataplane.runner import Runner

    runner = Runner(log=ctx.log)
    with ctx.open_store(read_only=True) as store:
        check_same_gateway(ctx, store, iface)
    replace_dead_gateway(ctx, runner, iface)
    refuse_if_running(runner, ctx.run_dir, iface)
    with locked(ctx) as held:
        # Temp files a crash may have left where the server files go (after a detected crash, heal looks
        # everywhere; a walk of every peer folder here would cost seconds at 65,000 peers).
        held.folder.remove_temp_files(["wg_confs", "server"])
        heal(held)
    return iface


def _dead_gateway(ctx: Context, runner, iface: str):
    """The runtime state of this folder's gateway on `iface` when its supervisor died (SIGKILL, OOM) without taking
    it down (the device may still run, or have gone with it); None otherwise."""
    from bulwark_vpn.dataplane.gateway import RuntimeState

    state = RuntimeState.load(ctx.run_dir, iface)
    if state is None or state.supervisor_alive():
        return None
    with ctx.open_store(read_only=True) as store:
        return state if state.serves(ctx.config_dir, store.gateway_id()) else None


def replace_dead_gateway(ctx: Context, runner, iface: str) -> bool:
    """`up` after this folder's supervisor died: note where the active peers are (the device it left still knows),
    then remove what it left, as `down` would; the bring-up that follows reconnects those peers at once."""
    from bulwark_vpn.dataplane import gateway

    state = _dead_gateway(ctx, runner, iface)
    if state is None:
        return False
    log.warning("bulwark: the supervisor of %s (pid %d) is gone; replacing the gateway it left", iface, state.pid)
    with ctx.open_store() as store:
        gateway.save_seen_endpoints(runner, iface, store)
    gateway.release_system(runner, ctx.run_dir, iface, state)
    return True


def rediscover(ctx: Context) -> None:
    """SERVERURL=auto: rediscover the public address at start-up; the last known one is kept on failure."""
    from dataclasses import replace

    from bulwark_vpn.service.provision import discover_address
    from bulwark_vpn.store import RENDER_ALL_PEERS, RENDER_SERVER

    with ctx.open_store(read_only=True) as store:
        settings = store.settings()
    if settings.server_url != "auto":
        return
    address = discover_address(ctx)
    if address is None:
        log.warning("bulwark: could not discover the public address; keeping %s", settings.discovered_url)
        return
    if address == settings.discovered_url:
        return
    with locked(ctx) as held:
        def change(store: Store) -> tuple[None, list[str]]:
            store.save_settings(replace(store.settings(), discovered_url=address))
            return None, [RENDER_SERVER, RENDER_ALL_PEERS]

        mutate(held, change)


def up_foreground(ctx: Context, *, interface: str | None = None, backend: str | None = None,
                  settings_file: Path | None = None, serve: bool | None = None,
                  ready: Callable[[Any], None] | None = None, prepared: bool = False) -> None:
    """`bulwark up --foreground`: provision from the environment if asked, bring up, supervise until signalled.
    `prepared`: the `bulwark up` that started this process did the provisioning already."""
    from bulwark_vpn.dataplane import gateway
    from bulwark_vpn.service.files import SupervisorRenders

    if not prepared:
        _prepare_up(ctx, interface, backend, settings_file, serve)
    rediscover(ctx)
    gateway.run_foreground(ctx.config_dir, ctx.run_dir, log=ctx.log, ready=ready,
                           background=SupervisorRenders(ctx))


def up_background(ctx: Context, *, interface: str | None = None, backend: str | None = None,
                  settings_file: Path | None = None, serve: bool | None = None) -> UpResult:
    """`bulwark up`: start the supervisor detached and return once the gateway is up."""
    from bulwark_vpn.dataplane.gateway import RuntimeState, log_path

    iface = _prepare_up(ctx, interface, backend, settings_file, serve)
    ensure_private_dir(ctx.run_dir)
    log_file_path = log_path(ctx.run_dir, iface)
    error_path = ctx.run_dir / f"{iface}.error.json"
    error_path.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "bulwark_vpn", "--run-dir", str(ctx.run_dir), "up", "--foreground",
            "--config-dir", str(ctx.config_dir), "--error-file", str(error_path), "--prepared"]
    with open(log_file_path, "wb") as log_file:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                 start_new_session=True, env=dict(ctx.environ) or None)
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        state = RuntimeState.load(ctx.run_dir, iface)
        if state is not None and state.pid == child.pid and state.ready:
            return UpResult(iface, state.backend, state.pid, str(ctx.config_dir),
                            log_file_path.read_text(errors="replace"))
        if child.poll() is not None:
            raise _child_error(error_path, log_file_path, child.returncode)
        time.sleep(0.05)
    child.terminate()
    raise SystemActionError(f"the gateway did not come up in {UP_TIMEOUT:g} s", str(log_file_path),
                            "read that log for the reason")


def _child_error(error_path: Path, log_file: Path, status: int) -> BulwarkError:
    """The supervisor's own error (same code, same line) when it wrote one, else its last log line."""
    try:
        data = json.loads(error_path.read_text())
        error_path.unlink(missing_ok=True)
        return BulwarkError(str(data["message"]), code=ErrorCode(data["code"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    reason = lines[-1].removeprefix("bulwark: ") if lines else f"exit status {status}"
    return SystemActionError("the gateway did not come up", reason, f"see {log_file}")


def down(ctx: Context, *, interface: object = None) -> DownResult:
    """`bulwark down`: tear this folder's gateway down (through its supervisor when it runs)."""
    from bulwark_vpn.dataplane import gateway
    from bulwark_vpn.dataplane.runner import Runner

    interface = _parsed_interface(interface)
    if interface is not None and not ctx.has_store():
        iface = interface
    else:
        with ctx.open_store(read_only=True) as store:
            iface = _interface(store, interface)
            check_same_gateway(ctx, store, iface)
        runner = Runner(log=ctx.log)
        if _dead_gateway(ctx, runner, iface) is not None and gateway.link.link_exists(runner, iface):
            # Its supervisor could not note where the peers are: the device it left still knows.
            with ctx.open_store() as store:
                gateway.save_seen_endpoints(runner, iface, store)
    return DownResult(iface, gateway.stop_gateway(ctx.run_dir, iface))


def status(ctx: Context, *, interface: object = None, names: Iterable[object] | None = None,
           require_names: bool = False):
    """The live interface and its peers (names from the store, counters from the device). With `names`, only
    those peers are listed (a page of a long list), the counts cover all; unknown names are left out, or with
    `require_names` refused."""
    report = _status(ctx, interface, names)
    if require_names and names is not None:
        listed = {p.name for p in report.peers}
        missing = [name for name in (parse_peer_name(n) for n in names) if name not in listed]
        if missing:
            raise NotFoundError("no such peer", missing[0], "see 'bulwark peer list'", code=ErrorCode.NOT_FOUND)
    return report


def _status(ctx: Context, interface: object, names: Iterable[object] | None):
    from dataclasses import replace

    from bulwark_vpn.dataplane import gateway

    interface = _parsed_interface(interface)
    wanted = None if names is None else [parse_peer_name(n) for n in names]
    if not ctx.actor.can("metrics"):  # the metrics are the status: a metrics token reads it too
        ctx.actor.require("read")
    with ctx.open_store(read_only=True) as store:
        iface = _interface(store, interface)
        check_same_gateway(ctx, store, iface)
        owner = ctx.actor.owner_filter()
        if owner is None:
            return gateway.gateway_status(store, ctx.run_dir, iface, names=wanted)
        # A user: their own peers only, and the counts of their own.
        owned = list(store.iter_owned(owner))
        report = gateway.gateway_status(store, ctx.run_dir, iface, names=owned)
        shown = report.peers if wanted is None else [p for p in report.peers if p.name in set(wanted)]
        return replace(report, peers=shown, peers_total=len(owned),
                       peers_online=sum(1 for p in report.peers if p.online))


def apply_now(ctx: Context, *, dry_run: bool = False, interface: object = None) -> ApplyResult:
    """Make the live device match the store now; with dry_run only describe the changes. The device is compared
    as the supervisor compares it (text, one read), so only the peers that differ are parsed."""
    from bulwark_vpn.dataplane import table
    from bulwark_vpn.dataplane.apply import apply_changes
    from bulwark_vpn.dataplane.gateway import device_changes
    from bulwark_vpn.dataplane.runner import Runner

    interface = _parsed_interface(interface)
    runner = Runner(log=ctx.log)
    with ctx.open_store(read_only=True) as store:
        settings = store.settings()
        iface = _interface(store, interface)
        check_same_gateway(ctx, store, iface)
        dump = table.read_dump(runner, iface)
        if dump is None:
            raise NotFoundError("the interface is not up", iface, "bring the gateway up first ('bulwark up')",
                                code=ErrorCode.NOT_RUNNING)
        wanted = table.DeviceTable(store.require_server_key().to_base64(), settings.listen_port)
        table.load_rows(wanted, store.peer_rows(), time.time())
        changes = device_changes(wanted, store.peer_rows, dump)
    if not dry_run and changes:
        apply_changes(runner, iface, changes)
    return ApplyResult(iface, dry_run, [change.describe() for change in changes])
