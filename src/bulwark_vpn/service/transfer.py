"""`import` (wg-quick files, PiVPN, wg-easy) and `export` (wg-quick files, linuxserver/wireguard's /config).

An import creates the server it reads: its key, port, subnets, and every peer with its keys, PSK, addresses and
AllowedIPs, so clients keep working unchanged. It goes into an empty folder; a folder in use is refused unless
`force` (then the store is replaced as by a restore, a copy of it kept in `backups/`): merging two servers would
change the server key of one of them, which no client of it would survive. With `dry_run` nothing is written and
the plan (peers, conflicts, dropped lines, warnings) is returned; an import with a conflict is refused whole.

An export writes into a new (or empty) folder, privately, through `SafeFolder` (links refused, never followed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bulwark_vpn.errors import ConflictError, InputError
from bulwark_vpn.fsutil import PRIVATE_FILE, SafeFolder, disk_error
from bulwark_vpn.importers.plan import Plan
from bulwark_vpn.render import layout
from bulwark_vpn.service.context import Context
from bulwark_vpn.service.files import heal_if_needed
from bulwark_vpn.service.peers import pools
from bulwark_vpn.service.replace import install_store
from bulwark_vpn.store import Store

IMPORT_KINDS = ("wg-quick", "pivpn", "wg-easy")
EXPORT_KINDS = ("wg-quick", "linuxserver")
# linuxserver/wireguard's own server template lines (its container does NAT with them); constants, no user data.
LINUXSERVER_HOOKS = (
    "PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -A FORWARD -o %i -j ACCEPT; "
    "iptables -t nat -A POSTROUTING -o eth+ -j MASQUERADE",
    "PostDown = iptables -D FORWARD -i %i -j ACCEPT; iptables -D FORWARD -o %i -j ACCEPT; "
    "iptables -t nat -D POSTROUTING -o eth+ -j MASQUERADE",
)


@dataclass(frozen=True)
class ImportRequest:
    kind: str  # wg-quick | pivpn | wg-easy
    source: Path  # the server config, the PiVPN folder, or wg-easy's file
    clients: tuple[Path, ...] = ()  # wg-quick client configs
    dry_run: bool = False
    force: bool = False

    def __post_init__(self) -> None:
        if self.kind not in IMPORT_KINDS:
            raise InputError("unknown import format", self.kind, f"use one of {', '.join(IMPORT_KINDS)}")


@dataclass(frozen=True)
class ImportResult:
    plan: Plan
    dry_run: bool
    imported: bool
    config_dir: Path
    folder_in_use: str | None  # why the target folder would need force (dry run), None when it is free
    replaced_copy: Path | None = None

    @property
    def conflicts(self) -> list[str]:
        return self.plan.conflicts

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "dry_run": self.dry_run, "imported": self.imported,
                "config_dir": str(self.config_dir), "folder_in_use": self.folder_in_use,
                "replaced_copy": str(self.replaced_copy) if self.replaced_copy else None}


def read_plan(ctx: Context, request: ImportRequest) -> Plan:
    """Read the source files into a plan (nothing written)."""
    ctx.actor.require_admin()  # every key of the team goes in or out: admins only
    from bulwark_vpn.importers import wgeasy, wgquick

    if request.kind == "wg-quick":
        return wgquick.import_wg_quick(request.source, request.clients)
    if request.kind == "pivpn":
        return wgquick.import_pivpn(request.source)
    return wgeasy.import_wg_easy(request.source, ctx.environ)


def _folder_in_use(ctx: Context) -> str | None:
    if not ctx.has_store():
        return None
    from bulwark_vpn.errors import StoreError

    try:
        with ctx.open_store(read_only=True) as store:
            if store.is_initialized() or store.peer_count():
                return f"it already holds a server with {store.peer_count()} peer(s)"
    except StoreError as exc:
        return f"its store cannot be opened ({exc.message})"
    return None


def _fill(plan: Plan, store: Store) -> None:
    assert plan.settings is not None and plan.server_key is not None  # noqa: S101 - checked by the caller
    store.save_settings(plan.settings)
    store.set_server_key(plan.server_key)
    pool4, pool6 = pools(plan.settings)
    with store.transaction():
        for peer in sorted(plan.peers, key=lambda p: int(p.address4)):
            store.reserve(pool4, peer.address4)
            if peer.address6 is not None and pool6 is not None:
                store.reserve(pool6, peer.address6)
            store.insert_peer(peer)


def import_server(ctx: Context, request: ImportRequest) -> ImportResult:
    """Import a server and its peers (see the module docstring)."""
    ctx.actor.require_admin()  # every key of the team goes in or out: admins only
    plan = read_plan(ctx, request)
    if request.dry_run:
        return ImportResult(plan, True, False, ctx.config_dir, _folder_in_use(ctx))
    if plan.conflicts or plan.settings is None:
        first = plan.conflicts[0] if plan.conflicts else "nothing to import"
        raise ConflictError(f"cannot import {request.source}: {len(plan.conflicts)} conflict(s), the first",
                            first, "see them all with --dry-run; nothing was changed")
    installed = install_store(ctx, lambda store: _fill(plan, store), force=request.force, action="import")
    return ImportResult(plan, False, True, ctx.config_dir, None, installed.replaced_copy)


# -- export ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRequest:
    kind: str  # wg-quick | linuxserver
    folder: Path

    def __post_init__(self) -> None:
        if self.kind not in EXPORT_KINDS:
            raise InputError("unknown export format", self.kind, f"use one of {', '.join(EXPORT_KINDS)}")


@dataclass(frozen=True)
class ExportResult:
    kind: str
    folder: Path
    files: list[str]
    peer_count: int
    client_configs: int
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "folder": str(self.folder), "files": list(self.files),
                "peer_count": self.peer_count, "client_configs": self.client_configs,
                "warnings": list(self.warnings)}


def _wg_quick_files(store: Store) -> tuple[list[tuple[str, bytes, int]], int, list[str]]:
    from bulwark_vpn.render.wgquick import render_config
    from bulwark_vpn.values import config_filename

    settings, key, peers = store.settings(), store.require_server_key(), store.peers()
    files = [(f"{settings.interface}.conf", render_config(layout.server_wg_config(settings, key, peers)).encode(),
              PRIVATE_FILE)]
    warnings = []
    clients = 0
    for peer in peers:
        if peer.private_key is None:
            continue
        text = layout.render_client_config(settings, key.public_key(), peer)
        files.append((f"clients/{config_filename(peer.name)}", text.encode(), PRIVATE_FILE))
        clients += 1
    disabled = [p.name for p in peers if not p.enabled]
    if disabled:
        warnings.append(f"disabled peers are left out of the server config: {', '.join(disabled[:5])}"
                        + (" ..." if len(disabled) > 5 else ""))
    if settings.endpoint_host is None:
        warnings.append("the server's public address is unknown: the client configs have no Endpoint")
    return files, clients, warnings


def _donoteditthisfile(store: Store, warnings: list[str]) -> bytes:
    """linuxserver's record of the variables it was set up with (its container then keeps these files)."""
    settings = store.settings()
    names = []
    for peer in store.peers():
        number = peer.name[4:] if peer.folder_name == peer.name else None
        names.append(number or peer.name)
    lines = [f'ORIG_SERVERURL="{settings.endpoint_host or "auto"}"',
             f'ORIG_SERVERPORT="{settings.advertised_port}"',
             f'ORIG_PEERDNS="{", ".join(layout.peer_dns(settings))}"',
             f'ORIG_PEERS="{",".join(names)}"',
             f'ORIG_ALLOWEDIPS="{", ".join(str(n) for n in settings.allowed_ips)}"']
    if settings.subnet4.prefixlen == 24:
        lines.append(f'ORIG_INTERFACE="{".".join(str(settings.subnet4.network_address).split(".")[:3])}"')
    else:
        warnings.append(f"linuxserver/wireguard supports /24 tunnel subnets only: {settings.subnet4} is kept in the "
                        f"files, set INTERNAL_SUBNET to match before its container regenerates anything")
    return ("\n".join(lines) + "\n").encode()


def _linuxserver_files(store: Store) -> tuple[list[tuple[str, bytes, int]], int, list[str]]:
    from bulwark_vpn.render.wgquick import render_config
    from bulwark_vpn.service.files import _peer_file_set

    settings, key = store.settings(), store.require_server_key()
    warnings: list[str] = []
    server = layout.server_files(settings, key, store.server_peer_rows())
    conf_name = f"wg_confs/{settings.interface}.conf"
    full = server[conf_name].content.decode()
    head = render_config(layout.server_wg_config(settings, key, []))
    with_hooks = head + "\n".join(LINUXSERVER_HOOKS) + "\n" + full[len(head):]
    files = [(rel, f.content, f.mode) for rel, f in server.items() if rel != conf_name]
    files.append((conf_name, with_hooks.encode(), PRIVATE_FILE))
    # The linuxserver layout whatever this folder's own `files` setting: configs, keys and QR codes.
    peer_files, _stale = _peer_file_set(replace(settings, files="full"), key.public_key(), store.peers())
    files += peer_files
    files.append((".donoteditthisfile", _donoteditthisfile(store, warnings), PRIVATE_FILE))
    clients = sum(1 for rel, _, _ in peer_files if rel.endswith(".conf"))
    return files, clients, warnings


def export_server(ctx: Context, request: ExportRequest) -> ExportResult:
    """Write the server and its peers into a new or empty folder (see the module docstring)."""
    ctx.actor.require_admin()  # every key of the team goes in or out: admins only
    heal_if_needed(ctx)
    with ctx.open_store(read_only=True) as store:
        store.require_server_key()
        peer_count = store.peer_count()
        files, clients, warnings = (_wg_quick_files if request.kind == "wg-quick" else _linuxserver_files)(store)
    target = request.folder.absolute()
    if target == ctx.config_dir or ctx.config_dir in target.parents:
        raise InputError("cannot export into the config folder", str(target), "give a folder outside it")
    try:
        folder = SafeFolder.open(target, create=True)
    except OSError as exc:
        raise disk_error(exc, target) from None
    with folder:
        if folder.listdir():
            raise ConflictError("the export folder is not empty", str(target), "give a new or empty folder")
        folder.write_many(files)
    return ExportResult(request.kind, target, sorted(rel for rel, _, _ in files), peer_count, clients, warnings)
