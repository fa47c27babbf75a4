"""The `backup`, `restore`, `import` and `export` commands: adapters around `service.backup` and
`service.transfer`, registered on the `bulwark` group by `cli.py`.

A passphrase comes from a prompt (on a terminal), `--passphrase-file FILE` (its first line) or
`--passphrase-stdin` (one line): never from the command line or the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bulwark_vpn.cli import _config_dir_option, _context, _echo_json, _json_option, _say, cli
from bulwark_vpn.errors import ExitCode, InputError


def _passphrase_options(func):
    func = click.option("--passphrase-stdin", is_flag=True, help="Read the passphrase from one line of stdin.")(func)
    return click.option("--passphrase-file", type=click.Path(dir_okay=False, path_type=Path),
                        help="Read the passphrase from the first line of this file.")(func)


def _read_passphrase(passphrase_file: Path | None, from_stdin: bool, *, confirm: bool, required: bool):
    from bulwark_vpn.backupfile import Passphrase

    if passphrase_file is not None and from_stdin:
        raise InputError("two passphrase sources given", None, "use --passphrase-file or --passphrase-stdin")
    if passphrase_file is not None:
        try:
            text = passphrase_file.read_text().split("\n", 1)[0].removesuffix("\r")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError("cannot read the passphrase file", str(passphrase_file), str(exc)) from None
        return Passphrase(text)
    if from_stdin:
        return Passphrase(sys.stdin.readline().removesuffix("\n").removesuffix("\r"))
    if not required:
        return None
    if not sys.stdin.isatty():
        raise InputError("a passphrase is needed and this is not a terminal", None,
                         "give --passphrase-file FILE or --passphrase-stdin")
    return Passphrase(click.prompt("passphrase", hide_input=True, confirmation_prompt=confirm, err=True))


# -- backup and restore -------------------------------------------------------------------------------------


@cli.command()
@_config_dir_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The backup file [bulwark-backup-<UTC time>.tar.gz in the current folder].")
@click.option("--encrypt", is_flag=True, help="Encrypt with a passphrase (age format: 'age -d' opens it).")
@_passphrase_options
@_json_option
def backup(config_dir, out, encrypt, passphrase_file, passphrase_stdin, as_json) -> None:
    """Write one file holding the whole store (keys, peers, settings) and a manifest."""
    from bulwark_vpn import service

    if (passphrase_file is not None or passphrase_stdin) and not encrypt:
        raise InputError("a passphrase was given without --encrypt", None, "add --encrypt")
    passphrase = _read_passphrase(passphrase_file, passphrase_stdin, confirm=True, required=encrypt)
    result = service.backup_store(_context(config_dir), service.BackupRequest(out=out, passphrase=passphrase))
    if as_json:
        _echo_json(result.to_dict())
        return
    kind = "encrypted backup" if result.encrypted else "backup"
    _say(f"{kind} of {result.manifest.peer_count} peer(s) written to {result.path} (0600: it holds every "
         f"private key)")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_config_dir_option
@click.option("--force", is_flag=True, help="Replace a store in use (a copy of it is kept in backups/).")
@_passphrase_options
@_json_option
def restore(file, config_dir, force, passphrase_file, passphrase_stdin, as_json) -> None:
    """Replace the store by a backup's and render every file again (not while the gateway runs)."""
    from bulwark_vpn import service

    encrypted = service.backup_is_encrypted(file)
    passphrase = _read_passphrase(passphrase_file, passphrase_stdin, confirm=False, required=encrypted)
    result = service.restore_store(_context(config_dir),
                                   service.RestoreRequest(file, passphrase=passphrase, force=force))
    if as_json:
        _echo_json(result.to_dict())
        return
    if result.replaced_copy:
        _say(f"the replaced store was kept as {result.replaced_copy}")
    if result.migrated_from:
        _say(f"the backup's store (schema {result.migrated_from}) was migrated to this Bulwark's")
    _say(f"restored {result.peer_count} peer(s) from {result.path} (made {result.manifest.created_at}) into "
         f"{result.config_dir}")


# -- import and export --------------------------------------------------------------------------------------


@cli.group("import")
def import_group() -> None:
    """Import a server from wg-quick files, PiVPN or wg-easy (keys, PSKs and addresses kept)."""


def _import_options(func):
    func = _json_option(func)
    func = click.option("--force", is_flag=True,
                        help="Replace a store in use (a copy of it is kept in backups/).")(func)
    func = click.option("--dry-run", is_flag=True, help="Only show what would be imported and every conflict.")(func)
    return _config_dir_option(func)


def _run_import(config_dir, request, as_json) -> None:
    from bulwark_vpn import service

    result = service.import_server(_context(config_dir), request)
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(_describe_import(result), nl=False)
    if result.conflicts:
        sys.exit(ExitCode.BAD_INPUT)


def _describe_import(result) -> str:
    """The plan as people read it: the server, each peer, then what was dropped, warnings and conflicts."""
    plan = result.plan
    lines = []
    settings = plan.settings
    if settings is not None:
        six = f", {settings.subnet6}" if settings.subnet6 else ""
        endpoint = f"{settings.endpoint_host}:{settings.advertised_port}" if settings.endpoint_host else "unknown"
        lines.append(f"server {settings.interface}: port {settings.listen_port}, subnet {settings.subnet4}{six}, "
                     f"endpoint {endpoint}")
    width = max([12, *(len(p.name) for p in plan.peers)])
    for peer in plan.peers:
        six = f"  {peer.address6}" if peer.address6 else ""
        kind = "" if peer.private_key is not None else "  (public key only)"
        state = "" if peer.enabled else "  (disabled)"
        lines.append(f"  {peer.name:<{width}} {str(peer.address4):<15}{six}{kind}{state}")
    lines += [f"dropped: {line}" for line in plan.dropped]
    lines += [f"warning: {line}" for line in plan.warnings]
    lines += [f"conflict: {line}" for line in plan.conflicts]
    if result.dry_run:
        verdict = (f"{len(plan.conflicts)} conflict(s): nothing can be imported until they are fixed"
                   if plan.conflicts else f"{len(plan.peers)} peer(s) would be imported into {result.config_dir}")
        if result.folder_in_use and not plan.conflicts:
            verdict += f" (the folder is in use: {result.folder_in_use}; --force replaces it)"
        lines.append(f"dry run: {verdict}")
    else:
        lines.append(f"imported {len(plan.peers)} peer(s) into {result.config_dir}")
        if result.replaced_copy:
            lines.append(f"the replaced store was kept as {result.replaced_copy}")
    return "\n".join(lines) + "\n"


@import_group.command("wg-quick")
@click.argument("server", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("clients", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@_import_options
def import_wg_quick(server, clients, config_dir, dry_run, force, as_json) -> None:
    """A server config (wg0.conf) and client configs, matched by public key, that give private keys."""
    from bulwark_vpn import service

    request = service.ImportRequest("wg-quick", server, tuple(clients), dry_run=dry_run, force=force)
    _run_import(config_dir, request, as_json)


@import_group.command("pivpn")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@_import_options
def import_pivpn(folder, config_dir, dry_run, force, as_json) -> None:
    """PiVPN's WireGuard folder (/etc/wireguard: wg0.conf, configs/*.conf, configs/clients.txt)."""
    from bulwark_vpn import service

    request = service.ImportRequest("pivpn", folder, dry_run=dry_run, force=force)
    _run_import(config_dir, request, as_json)


@import_group.command("wg-easy")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_import_options
def import_wg_easy(file, config_dir, dry_run, force, as_json) -> None:
    """wg-easy's wg0.json (v14) or its SQLite database wg-easy.db (v15)."""
    from bulwark_vpn import service

    request = service.ImportRequest("wg-easy", file, dry_run=dry_run, force=force)
    _run_import(config_dir, request, as_json)


@cli.group("export")
def export_group() -> None:
    """Write the server and its peers for another tool (wg-quick files, linuxserver/wireguard's /config)."""


def _export(kind: str, folder: Path, config_dir, as_json: bool) -> None:
    from bulwark_vpn import service

    result = service.export_server(_context(config_dir), service.ExportRequest(kind, folder))
    if as_json:
        _echo_json(result.to_dict())
        return
    for warning in result.warnings:
        _say(warning)
    _say(f"exported the server and {result.peer_count} peer(s) ({result.client_configs} client config(s)) to "
         f"{result.folder}")


@export_group.command("wg-quick")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@_config_dir_option
@_json_option
def export_wg_quick(folder, config_dir, as_json) -> None:
    """A plain server config and one client config per peer whose private key is known (a new, empty folder)."""
    _export("wg-quick", folder, config_dir, as_json)


@export_group.command("linuxserver")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@_config_dir_option
@_json_option
def export_linuxserver(folder, config_dir, as_json) -> None:
    """linuxserver/wireguard's /config layout, which that image (and Bulwark's adoption) takes back."""
    _export("linuxserver", folder, config_dir, as_json)
