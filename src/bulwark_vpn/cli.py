"""The `bulwark` command: parse arguments, call one service function, format the result. Nothing else.

stdout carries only what was asked for (configs, JSON, tables); messages go to stderr.
Exit codes: 0 success, 2 bad input (nothing changed), 1 other failure (see errors.ExitCode).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import click

from bulwark_vpn import __version__, service
from bulwark_vpn.config import default_config_dir
from bulwark_vpn.errors import BulwarkError, ExitCode
from bulwark_vpn.keys import PublicKey
from bulwark_vpn.values import parse_keepalive, parse_networks

_DEBUG = False


def _config_dir_option(func):
    return click.option(
        "--config-dir",
        type=click.Path(file_okay=False, path_type=Path, resolve_path=True),
        default=lambda: default_config_dir(os.environ).resolve(),
        show_default="$BULWARK_CONFIG_DIR, /config in a container, else /etc/bulwark",
        help="Folder holding the store and the rendered files.",
    )(func)


def _interface_option(func):
    return click.option("--interface", help="The running interface to apply to [the store's].")(func)


def _echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _networks(value: str | None, what: str):
    return parse_networks(value, what) if value is not None else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bulwark")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
def cli(debug: bool) -> None:
    """Bulwark: a WireGuard VPN gateway."""
    global _DEBUG
    _DEBUG = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s", stream=sys.stderr)


@cli.command()
@_config_dir_option
@click.option("--settings", "settings_file", type=click.Path(dir_okay=False, path_type=Path),
              envvar="BULWARK_SETTINGS", help="TOML settings file (lower precedence than flags and env).")
@click.option("--interface", help="WireGuard interface name [wg0].")
@click.option("--listen-port", help="UDP port the server listens on [51820].")
@click.option("--server-url", help="Endpoint host for clients: auto, an IP or a DNS name (SERVERURL).")
@click.option("--server-port", help="Port advertised to clients, e.g. a forwarded port (SERVERPORT).")
@click.option("--subnet", "subnet4", help="IPv4 tunnel subnet, e.g. 10.13.13.0/24 (INTERNAL_SUBNET).")
@click.option("--subnet6", help="IPv6 tunnel subnet for dual-stack, e.g. fd13:13:13::/64.")
@click.option("--peer-dns", help="DNS for clients: auto (Bulwark's forwarder) or IPs (PEERDNS).")
@click.option("--allowed-ips", help="Default client AllowedIPs (ALLOWEDIPS) [0.0.0.0/0, ::/0].")
@click.option("--mtu", help="Interface MTU for server and clients.")
@click.option("--backend", type=click.Choice(["auto", "kernel", "userspace"]), help="WireGuard implementation.")
@click.option("--egress-interface", help="Interface toward the private network [from the default route].")
@click.option("--log-confs/--no-log-confs", default=None, help="Print new peers' QR codes to the log (LOG_CONFS).")
@click.option("--peers", help="Peers to create: a count N (peer1..peerN) or names (PEERS).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(config_dir: Path, settings_file: Path | None, peers: str | None, as_json: bool, **flags) -> None:
    """Create or update the server from flags, the linuxserver variables and a settings file."""
    result = service.init_from_sources(config_dir, flags=flags, peers=peers, environ=os.environ,
                                       settings_file=settings_file)
    if as_json:
        _echo_json({
            "created": result.created,
            "adopted_from": str(result.adopted_from) if result.adopted_from else None,
            "added_peers": list(result.added),
            "changed_settings": list(result.changed_settings),
            "config_dir": str(config_dir),
        })
        return
    verb = "created" if result.created else "updated"
    if result.adopted_from:
        click.echo(f"bulwark: adopted the linuxserver/wireguard config {result.adopted_from}", err=True)
    click.echo(f"bulwark: server {verb} in {config_dir}", err=True)
    for name in result.added:
        click.echo(f"bulwark: added peer {name}", err=True)


@cli.group()
def peer() -> None:
    """Add, remove, list and show peers."""


@peer.command("add")
@click.argument("names", nargs=-1, required=True)
@_config_dir_option
@click.option("--allowed-ips", help="Client AllowedIPs for these peers (default: the server's ALLOWEDIPS).")
@click.option("--server-allowed-ips", help="Extra networks behind these peers, routed to them by the server.")
@click.option("--keepalive", help="PersistentKeepalive seconds (e.g. 25).")
@click.option("--public-key", help="The peer's own public key (its private key stays on the client).")
@_interface_option
def peer_add(names, config_dir, allowed_ips, server_allowed_ips, keepalive, public_key, interface) -> None:
    """Add peers: keys, addresses, configs and QR codes."""
    added = service.add_peers(
        config_dir,
        list(names),
        allowed_ips=_networks(allowed_ips, "--allowed-ips"),
        server_allowed_ips=_networks(server_allowed_ips, "--server-allowed-ips"),
        keepalive=parse_keepalive(keepalive) if keepalive is not None else None,
        public_key=PublicKey.parse(public_key) if public_key is not None else None,
        interface=interface,
    )
    for p in added:
        extra = f", {p.address6}" if p.address6 else ""
        click.echo(f"bulwark: added peer {p.name} ({p.address4}{extra})", err=True)


@peer.command("remove")
@click.argument("names", nargs=-1, required=True)
@_config_dir_option
@_interface_option
def peer_remove(names, config_dir, interface) -> None:
    """Remove peers and their files."""
    for p in service.remove_peers(config_dir, list(names), interface):
        click.echo(f"bulwark: removed peer {p.name}", err=True)


def _set_enabled(names, config_dir, interface, enabled: bool) -> None:
    verb = "enabled" if enabled else "disabled"
    for p in service.set_peers_enabled(config_dir, list(names), enabled, interface):
        click.echo(f"bulwark: {verb} peer {p.name}", err=True)


@peer.command("enable")
@click.argument("names", nargs=-1, required=True)
@_config_dir_option
@_interface_option
def peer_enable(names, config_dir, interface) -> None:
    """Enable peers (they are put back on the device)."""
    _set_enabled(names, config_dir, interface, True)


@peer.command("disable")
@click.argument("names", nargs=-1, required=True)
@_config_dir_option
@_interface_option
def peer_disable(names, config_dir, interface) -> None:
    """Disable peers: keys and address are kept, the peer is taken off the device."""
    _set_enabled(names, config_dir, interface, False)


@peer.command("list")
@_config_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (stable fields).")
def peer_list(config_dir, as_json) -> None:
    """List peers (no secrets)."""
    peers = service.list_peers(config_dir)
    if as_json:
        _echo_json([dataclasses.asdict(p) for p in peers])
        return
    for p in peers:
        state = "" if p.enabled else "  (disabled)"
        six = f"  {p.address6}" if p.address6 else ""
        click.echo(f"{p.name:<12} {p.address4:<15}{six}  {p.public_key}{state}")


@peer.command("show")
@click.argument("name")
@_config_dir_option
@click.option("--endpoint", help="Override the Endpoint HOST:PORT (e.g. a forwarded port on the same host).")
@click.option("--qr", is_flag=True, help="Print a terminal QR code instead of the config.")
def peer_show(name, config_dir, endpoint, qr) -> None:
    """Print a peer's wg-quick config (or QR code) to stdout."""
    if qr:
        click.echo(service.peer_qr(config_dir, name, endpoint), nl=False)
    else:
        click.echo(service.peer_config(config_dir, name, endpoint), nl=False)


@cli.command()
@_config_dir_option
@click.option("--interface", help="Interface name (remembered in the store) [wg0].")
@click.option("--backend", type=click.Choice(["auto", "kernel", "userspace"]), help="WireGuard implementation.")
@click.option("--foreground", is_flag=True, help="Stay attached and supervise (systemd, containers).")
def up(config_dir, interface, backend, foreground) -> None:
    """Bring the gateway up from the store (provisioning from the linuxserver variables if needed)."""
    if foreground:
        service.bring_up_foreground(config_dir, interface=interface, backend=backend, environ=dict(os.environ),
                                    ready=lambda state: click.echo(f"bulwark: {state.interface} is up "
                                                                   f"({state.backend}, pid {state.pid})", err=True))
        return
    state, log_text = service.bring_up_background(config_dir, interface=interface, backend=backend,
                                                  environ=dict(os.environ))
    click.echo(log_text, err=True, nl=False)


@cli.command()
@_config_dir_option
@click.option("--interface", help="Interface to take down [the store's].")
def down(config_dir, interface) -> None:
    """Take the gateway down: interface, NAT table, DNS forwarder, wireguard-go."""
    if service.bring_down(config_dir, interface):
        click.echo("bulwark: the gateway is down", err=True)
    else:
        click.echo("bulwark: nothing to take down", err=True)


@cli.command()
@_config_dir_option
@click.option("--interface", help="Interface [the store's].")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (stable fields).")
def status(config_dir, interface, as_json) -> None:
    """Show the interface and each peer's endpoint, handshake and transfer. Exit 1 when down."""
    report = service.status(config_dir, interface)
    if as_json:
        _echo_json(dataclasses.asdict(report))
    else:
        from bulwark_vpn.render.status import render_status

        click.echo(render_status(report), nl=False)
    if not report.up:
        sys.exit(ExitCode.FAILURE)


@cli.command()
@_config_dir_option
@click.option("--interface", help="Interface [the store's].")
@click.option("--dry-run", is_flag=True, help="Only show what would change.")
def apply(config_dir, interface, dry_run) -> None:
    """Make the live device match the store now (the supervisor does this on its own)."""
    changes = service.apply_now(config_dir, dry_run=dry_run, interface=interface)
    for line in changes:
        click.echo(line)
    if not changes:
        click.echo("bulwark: the device matches the store", err=True)


@cli.command()
def demo() -> None:
    """The notes' local trial in one command: server and client namespaces, wg-quick, ping, status."""
    from bulwark_vpn.demo import run_demo

    result = run_demo(lambda line: click.echo(line, err=True))
    click.echo(result.ping, nl=False)
    click.echo(f"client transfer (peer, received, sent): {result.transfer}")
    click.echo(result.status, nl=False)
    if not result.ok:
        click.echo("bulwark: demo: the client could not reach the server through the tunnel", err=True)
        sys.exit(ExitCode.FAILURE)


# Every deploy value is plain text here: DeployOptions parses each with the parser of its kind, so a bad one is
# one line naming it (exit 2), never a usage dump or a traceback.
@cli.command()
@click.argument("target", metavar="{docker|kubernetes|terraform|systemd}")
@_config_dir_option
@click.option("--out", "out_dir", required=True, metavar="DIRECTORY", help="Folder to write the files into.")
@click.option("--image", help="Container image name [bulwark-vpn].")
@click.option("--tag", "image_tag", help="Image tag [this version].")
@click.option("--digest", "image_digest", help="Image digest (sha256:...), pins the image.")
@click.option("--pull-policy", "image_pull_policy", metavar="[Always|IfNotPresent|Never]",
              help="Kubernetes imagePullPolicy.")
@click.option("--server-url", help="Endpoint host for clients [the store's, else auto].")
@click.option("--service-type", metavar="[LoadBalancer|NodePort]", help="Kubernetes Service type.")
@click.option("--node-port", metavar="PORT", help="NodePort for the UDP Service (30000-32767).")
@click.option("--storage", metavar="[pvc|secret]", help="Kubernetes state: a PVC or a Secret.")
@click.option("--namespace", help="Kubernetes namespace [bulwark].")
@click.option("--region", "aws_region", help="AWS region.")
@click.option("--instance-type", "aws_instance_type", help="EC2 instance type [t3.micro].")
@click.option("--vpc-id", "aws_vpc_id", help="Use this existing VPC instead of creating one.")
@click.option("--subnet-id", "aws_subnet_id", help="Use this existing public subnet.")
@click.option("--vpc-cidr", "aws_vpc_cidr", help="CIDR of the VPC peers should reach [10.0.0.0/16].")
@click.option("--ssh-cidr", "aws_ssh_cidr", help="Open SSH only from this CIDR (default: no SSH).")
@click.option("--ssh-public-key", "aws_ssh_public_key", help="SSH public key: a file path or the key text.")
@click.option("--wheel-url", help="Install Bulwark from this wheel URL instead of the package index.")
def deploy(target, config_dir, out_dir, **options) -> None:
    """Write deployment files (docker, kubernetes, terraform, systemd) from the store's settings."""
    written = service.render_deployment(config_dir, target, out_dir, **options)
    for path in written:
        click.echo(str(path))


@cli.command()
@_config_dir_option
@click.option("--interface", help="Interface [the store's].")
@click.option("--peer-config", type=click.Path(dir_okay=False, path_type=Path),
              help="Check this client wg-quick config instead (run it on the client).")
@click.option("--fix", is_flag=True, help="Apply the safe fixes after showing them (asks on a terminal).")
@click.option("--yes", is_flag=True, help="Answer yes to --fix (for scripts).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (stable fields).")
def doctor(config_dir, interface, peer_config, fix, yes, as_json) -> None:
    """Check the gateway (or a client config): ok / warn / fail, evidence and fix. Exit 1 when a check fails."""
    from bulwark_vpn.render import doctor as view

    shown = []

    def confirm(results, fixable) -> bool:
        if not as_json:
            click.echo(view.render_results(results), nl=False)
            shown.append(True)
        click.echo(view.render_plan(fixable), err=True, nl=False)
        if yes or (sys.stdin.isatty() and click.confirm("apply these fixes?", err=True)):
            return True
        reason = "" if sys.stdin.isatty() else "not a terminal and no --yes: "
        click.echo(f"bulwark: {reason}nothing changed (--yes applies them)", err=True)
        return False

    report = service.run_doctor(config_dir, interface=interface, peer_config=peer_config, fix=fix, confirm=confirm)
    if report.fixes:
        click.echo(view.render_outcomes(report.fixes) + "bulwark: the checks after the fixes:", err=True)
    if as_json:
        _echo_json(view.results_json(report.final))
    elif not shown or report.fixes:
        click.echo(view.render_results(report.final), nl=False)
    if fix and not report.fixes and not report.declined and any(r.status in ("warn", "fail") for r in report.checks):
        click.echo("bulwark: none of these can be fixed by doctor --fix: see the fix lines", err=True)
    if report.failed:
        sys.exit(ExitCode.FAILURE)


def main() -> None:
    """Entry point: one place maps BulwarkError to a one-line message and an exit code."""
    # Everything Bulwark creates (store, WAL, keys, configs) is private to root by default.
    os.umask(0o077)
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("bulwark: aborted", err=True)
        sys.exit(ExitCode.FAILURE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.BAD_INPUT)
    except BulwarkError as exc:
        if _DEBUG:
            raise
        click.echo(f"bulwark: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        # A file or device the system refused (read-only /run, missing permission): one line, no traceback.
        if _DEBUG:
            raise
        where = f": '{exc.filename}'" if exc.filename else ""
        click.echo(f"bulwark: {exc.strerror or exc}{where}: check the path and its permissions", err=True)
        sys.exit(ExitCode.FAILURE)
