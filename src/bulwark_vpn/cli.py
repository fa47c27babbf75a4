"""The `bulwark` command: parse arguments, call one service operation, format the result. Nothing else.

stdout carries only what was asked for (configs, JSON, tables); messages go to stderr. `--json` prints the
operation's `to_dict()`, and an error as `{"error": {code, message, value, hint}}`. Exit codes come from the
error's code (see errors.ERROR_TABLE): 0 success, 2 bad input (nothing changed), 1 other failure.

Heavy modules (the service layer, cryptography, QR codes, the data plane) are imported inside the commands,
so `bulwark --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from bulwark_vpn import __version__
from bulwark_vpn.errors import BulwarkError, ErrorCode, ExitCode, InputError

_STATE: dict[str, Any] = {"debug": False, "json": False, "run_dir": None}


def _config_dir(value: str | None) -> Path:
    from bulwark_vpn.config import default_config_dir, parse_config_dir

    path = parse_config_dir(value, "--config-dir") if value is not None else default_config_dir(os.environ)
    # Made absolute, never resolved: a symbolic link as the folder itself is refused, not followed.
    return path.absolute()


def _config_dir_option(func):
    return click.option(
        "--config-dir", "config_dir",
        show_default="$BULWARK_CONFIG_DIR, /config in a container, else /etc/bulwark",
        help="Folder holding the store and the rendered files.",
    )(func)


def _json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (stable fields).")(func)


def _interface_option(func):
    return click.option("--interface", help="The running interface to act on [the store's].")(func)


def _context(config_dir: str | None):
    from bulwark_vpn.service import DEFAULT_RUN_DIR, Context

    run_dir = Path(_STATE["run_dir"]) if _STATE["run_dir"] else DEFAULT_RUN_DIR
    return Context(config_dir=_config_dir(config_dir), run_dir=run_dir, environ=dict(os.environ))


def _echo_json(value: object) -> None:
    import json

    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _stream_json(value: dict[str, Any], key: str) -> None:
    """A large JSON object written one list item per line as it goes (valid JSON; the same value as _echo_json)."""
    import json

    items = value[key]
    rest = {k: v for k, v in value.items() if k != key}
    out = sys.stdout
    out.write("{\n  " + json.dumps(key) + ": [")
    for index, item in enumerate(items):
        out.write(("," if index else "") + "\n    " + json.dumps(item, sort_keys=True))
    out.write("\n  ]" if items else "]")
    for k in sorted(rest):
        out.write(f",\n  {json.dumps(k)}: {json.dumps(rest[k], sort_keys=True)}")
    out.write("\n}\n")


def _say(line: str) -> None:
    click.echo(f"bulwark: {line}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bulwark")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("--run-dir", envvar="BULWARK_RUN_DIR", hidden=True, help="Runtime state folder [/run/bulwark].")
def cli(debug: bool, run_dir: str | None) -> None:
    """Bulwark: a WireGuard VPN gateway."""
    _STATE["debug"] = debug
    if run_dir is not None:
        from bulwark_vpn.config import parse_config_dir

        _STATE["run_dir"] = str(parse_config_dir(run_dir, "--run-dir").absolute())
    _setup_logging(debug)


def _setup_logging(debug: bool) -> None:
    """Log lines go to whatever sys.stderr is when they are written (so an in-process run can capture them)."""
    import logging

    class _StderrHandler(logging.StreamHandler):
        @property  # type: ignore[override]
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, value) -> None:
            pass

    logger = logging.getLogger("bulwark_vpn")
    if not any(getattr(h, "bulwark_stderr", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.bulwark_stderr = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


# -- init -------------------------------------------------------------------------------------------------


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
@click.option("--backend", help="WireGuard implementation: auto, kernel or userspace.")
@click.option("--egress-interface", help="Interface toward the private network [from the default route].")
@click.option("--log-confs/--no-log-confs", default=None, help="Print new peers' QR codes to the log (LOG_CONFS).")
@click.option("--peers", help="Peers to create: a count N (peer1..peerN) or names (PEERS).")
@_json_option
def init(config_dir, settings_file, peers, as_json, **flags) -> None:
    """Create or update the server from flags, the linuxserver variables and a settings file."""
    from bulwark_vpn import service

    result = service.init_from_sources(_context(config_dir), flags=flags, peers=peers, settings_file=settings_file)
    if as_json:
        _echo_json(result.to_dict())
        return
    if result.adopted_from:
        _say(f"adopted the linuxserver/wireguard config {result.adopted_from}")
    _say(f"server {'created' if result.created else 'updated'} in {result.config_dir}")
    for name in result.added:
        _say(f"added peer {name}")


# -- peers ------------------------------------------------------------------------------------------------


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
@_json_option
def peer_add(names, config_dir, allowed_ips, server_allowed_ips, keepalive, public_key, interface, as_json) -> None:
    """Add peers: keys, addresses, configs and QR codes."""
    from bulwark_vpn import service

    request = service.AddPeersRequest.parse(names, allowed_ips=allowed_ips, server_allowed_ips=server_allowed_ips,
                                            keepalive=keepalive, public_key=public_key, interface=interface)
    result = service.add_peers(_context(config_dir), request)
    if as_json:
        _echo_json(result.to_dict())
        return
    for p in result.peers:
        _say(f"added peer {p.name} ({p.address4}{', ' + p.address6 if p.address6 else ''})")


def _names_command(verb: str, doc: str):
    @peer.command(verb, help=doc)
    @click.argument("names", nargs=-1, required=True)
    @_config_dir_option
    @_interface_option
    @_json_option
    def command(names, config_dir, interface, as_json) -> None:
        from bulwark_vpn import service

        request = service.PeerNamesRequest.parse(names, interface=interface)
        ctx = _context(config_dir)
        if verb == "remove":
            result = service.remove_peers(ctx, request)
        else:
            result = service.set_peers_enabled(ctx, request, verb == "enable")
        if as_json:
            _echo_json(result.to_dict())
            return
        for p in result.peers:
            _say(f"{result.action} peer {p.name}")

    return command


_names_command("remove", "Remove peers and their files.")
_names_command("enable", "Enable peers (they are put back on the device).")
_names_command("disable", "Disable peers: keys and address are kept, the peer is taken off the device.")


@peer.command("list")
@_config_dir_option
@click.option("--search", help="Only peers whose name, address or public key contains this.")
@_json_option
def peer_list(config_dir, search, as_json) -> None:
    """List peers (no secrets)."""
    from bulwark_vpn import service

    result = service.list_peers(_context(config_dir), service.ListPeersRequest.parse(search=search))
    if as_json:
        _stream_json(result.to_dict(), "peers")
        return
    width = max([12, *(len(p.name) for p in result.peers)])
    for p in result.peers:
        state = "" if p.enabled else "  (disabled)"
        six = f"  {p.address6}" if p.address6 else ""
        click.echo(f"{p.name:<{width}} {p.address4:<15}{six}  {p.public_key}{state}")


@peer.command("show")
@click.argument("name")
@_config_dir_option
@click.option("--endpoint", help="Override the Endpoint HOST:PORT (e.g. a forwarded port on the same host).")
@click.option("--qr", is_flag=True, help="Print a terminal QR code instead of the config.")
@_json_option
def peer_show(name, config_dir, endpoint, qr, as_json) -> None:
    """Print a peer's wg-quick config (or QR code) to stdout."""
    from bulwark_vpn import service

    request = service.PeerConfigRequest.parse(name, endpoint=endpoint)
    ctx = _context(config_dir)
    if qr:
        click.echo(service.peer_qr_text(ctx, request), nl=False)
        return
    config = service.peer_config(ctx, request)
    if as_json:
        _echo_json(config.to_dict())
    else:
        click.echo(config.text, nl=False)


# -- the gateway ------------------------------------------------------------------------------------------


@cli.command()
@_config_dir_option
@click.option("--interface", help="Interface name (remembered in the store) [wg0].")
@click.option("--backend", help="WireGuard implementation: auto, kernel or userspace.")
@click.option("--settings", "settings_file", type=click.Path(dir_okay=False, path_type=Path),
              envvar="BULWARK_SETTINGS", help="TOML settings file used to set the server up if needed.")
@click.option("--foreground", is_flag=True, help="Stay attached and supervise (systemd, containers).")
@click.option("--error-file", hidden=True, type=click.Path(dir_okay=False, path_type=Path))
@_json_option
def up(config_dir, interface, backend, settings_file, foreground, error_file, as_json) -> None:
    """Bring the gateway up from the store (setting it up from the linuxserver variables if needed)."""
    from bulwark_vpn import service

    ctx = _context(config_dir)
    if foreground:
        _STATE["error_file"] = error_file
        service.up_foreground(ctx, interface=interface, backend=backend, settings_file=settings_file,
                              ready=lambda state: _say(f"{state.interface} is up ({state.backend}, pid {state.pid})"))
        return
    result = service.up_background(ctx, interface=interface, backend=backend, settings_file=settings_file)
    click.echo(result.log, err=True, nl=False)
    if as_json:
        _echo_json(result.to_dict())


@cli.command()
@_config_dir_option
@click.option("--interface", help="Interface to take down [the store's].")
@_json_option
def down(config_dir, interface, as_json) -> None:
    """Take the gateway down: interface, NAT table, DNS forwarder, wireguard-go."""
    from bulwark_vpn import service

    result = service.down(_context(config_dir), interface=interface)
    if as_json:
        _echo_json(result.to_dict())
        return
    _say("the gateway is down" if result.stopped else "nothing to take down")


@cli.command()
@_config_dir_option
@click.option("--interface", help="Interface [the store's].")
@_json_option
def status(config_dir, interface, as_json) -> None:
    """Show the interface and each peer's endpoint, handshake and transfer. Exit 1 when down."""
    from bulwark_vpn import service

    report = service.status(_context(config_dir), interface=interface)
    if as_json:
        _echo_json(report.to_dict())
    else:
        from bulwark_vpn.render.status import render_status

        click.echo(render_status(report), nl=False)
    if not report.up:
        sys.exit(ExitCode.FAILURE)


@cli.command()
@_config_dir_option
@click.option("--interface", help="Interface [the store's].")
@click.option("--dry-run", is_flag=True, help="Only show what would change.")
@_json_option
def apply(config_dir, interface, dry_run, as_json) -> None:
    """Make the live device match the store now (the supervisor does this on its own)."""
    from bulwark_vpn import service

    result = service.apply_now(_context(config_dir), dry_run=dry_run, interface=interface)
    if as_json:
        _echo_json(result.to_dict())
        return
    for line in result.changes:
        click.echo(line)
    if not result.changes:
        _say("the device matches the store")


@cli.command()
def demo() -> None:
    """The notes' local trial in one command: server and client namespaces, wg-quick, ping, status."""
    from bulwark_vpn.demo import run_demo

    result = run_demo(lambda line: click.echo(line, err=True))
    click.echo(result.ping, nl=False)
    click.echo(f"client transfer (peer, received, sent): {result.transfer}")
    click.echo(result.status, nl=False)
    if not result.ok:
        _say("demo: the client could not reach the server through the tunnel")
        sys.exit(ExitCode.FAILURE)


@cli.command()
@click.argument("target", type=click.Choice(["docker", "kubernetes", "terraform", "systemd"]))
@_config_dir_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write the files into.")
@click.option("--image", help="Container image name [bulwark-vpn].")
@click.option("--tag", "image_tag", help="Image tag [this version].")
@click.option("--digest", "image_digest", help="Image digest (sha256:...), pins the image.")
@click.option("--pull-policy", "image_pull_policy", type=click.Choice(["Always", "IfNotPresent", "Never"]))
@click.option("--server-url", help="Endpoint host for clients [the store's, else auto].")
@click.option("--service-type", type=click.Choice(["LoadBalancer", "NodePort"]), help="Kubernetes Service type.")
@click.option("--node-port", type=int, help="NodePort for the UDP Service (30000-32767).")
@click.option("--storage", type=click.Choice(["pvc", "secret"]), help="Kubernetes state: a PVC or a Secret.")
@click.option("--namespace", help="Kubernetes namespace [bulwark].")
@click.option("--region", "aws_region", help="AWS region.")
@click.option("--instance-type", "aws_instance_type", help="EC2 instance type [t3.micro].")
@click.option("--vpc-id", "aws_vpc_id", help="Use this existing VPC instead of creating one.")
@click.option("--subnet-id", "aws_subnet_id", help="Use this existing public subnet.")
@click.option("--vpc-cidr", "aws_vpc_cidr", help="CIDR of the VPC peers should reach [10.0.0.0/16].")
@click.option("--ssh-cidr", "aws_ssh_cidr", help="Open SSH only from this CIDR (default: no SSH).")
@click.option("--ssh-public-key", "aws_ssh_public_key", help="SSH public key: a file path or the key text.")
@click.option("--wheel-url", help="Install Bulwark from this wheel URL instead of the package index.")
@_json_option
def deploy(target, config_dir, out_dir, as_json, **options) -> None:
    """Write deployment files (docker, kubernetes, terraform, systemd) from the store's settings."""
    from bulwark_vpn import service

    result = service.render_deployment(_context(config_dir), target, out_dir, **options)
    if as_json:
        _echo_json(result.to_dict())
        return
    for path in result.files:
        click.echo(path)


@cli.command()
@_config_dir_option
@click.option("--interface", help="Interface [the store's].")
@click.option("--peer-config", type=click.Path(dir_okay=False, path_type=Path),
              help="Check this client wg-quick config instead (run it on the client).")
@click.option("--fix", is_flag=True, help="Apply the safe fixes after showing them (asks on a terminal).")
@click.option("--yes", is_flag=True, help="Answer yes to --fix (for scripts).")
@_json_option
def doctor(config_dir, interface, peer_config, fix, yes, as_json) -> None:
    """Check the gateway (or a client config): ok / warn / fail, evidence and fix. Exit 1 when a check fails."""
    from bulwark_vpn import service
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
        _say(f"{reason}nothing changed (--yes applies them)")
        return False

    ctx = _context(config_dir) if peer_config is None else None
    report = service.run_doctor(ctx, interface=interface, peer_config=peer_config, fix=fix, confirm=confirm)
    if report.fixes:
        click.echo(view.render_outcomes(report.fixes) + "bulwark: the checks after the fixes:", err=True)
    if as_json:
        _echo_json(report.to_dict())
    elif not shown or report.fixes:
        click.echo(view.render_results(report.final), nl=False)
    if fix and not report.fixes and not report.declined and any(r.status in ("warn", "fail") for r in report.checks):
        _say("none of these can be fixed by doctor --fix: see the fix lines")
    if report.failed:
        sys.exit(ExitCode.FAILURE)


# backup, restore, import and export live in their own module (registered on `cli` when it loads).
from bulwark_vpn import cli_transfer  # noqa: E402,F401

# -- errors -----------------------------------------------------------------------------------------------

# Where the CLI knows which flag a core error is about, it says so (the core never names flags).
_FLAG_HINTS = {
    ErrorCode.NOT_INITIALIZED: "bulwark init --config-dir {config_dir}",
    ErrorCode.OTHER_GATEWAY: "--config-dir {value}",
}


def _cli_hint(exc: BulwarkError) -> str:
    template = _FLAG_HINTS.get(exc.code)
    if template is None:
        return ""
    argv = _STATE.get("argv") or []
    config_dir = next((a.split("=", 1)[1] for a in argv if a.startswith("--config-dir=")), None)
    if config_dir is None and "--config-dir" in argv[:-1]:
        config_dir = argv[argv.index("--config-dir") + 1]
    filled = template.format(config_dir=config_dir or "DIR", value=exc.value)
    return f" (try: {filled})"


def _report(exc: BulwarkError) -> None:
    click.echo(f"bulwark: {exc.line()}{_cli_hint(exc)}", err=True)
    if "--json" in (_STATE.get("argv") or []):
        _echo_json({"error": exc.to_dict()})
    error_file = _STATE.get("error_file")
    if error_file is not None:
        import json

        try:
            Path(error_file).write_text(json.dumps(exc.to_dict()))
        except OSError:
            pass


def run(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code. One place maps errors to one line (or one JSON error) and a code."""
    args = list(sys.argv[1:] if argv is None else argv)
    _STATE.update({"debug": False, "json": False, "run_dir": None, "argv": args, "error_file": None})
    # Everything Bulwark creates (store, WAL, keys, configs) is private to root by default.
    os.umask(0o077)
    try:
        cli.main(args, prog_name="bulwark", standalone_mode=False)
        return ExitCode.OK
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else ExitCode.FAILURE
    except click.exceptions.Abort:
        _say("aborted")
        return ExitCode.FAILURE
    except click.ClickException as exc:
        # Usage errors are bad input too: one line, exit 2.
        _report(InputError(exc.format_message().replace("\n", " "), None,
                           "see 'bulwark --help' for the commands and flags"))
        return ExitCode.BAD_INPUT
    except BulwarkError as exc:
        if _STATE["debug"]:
            raise
        _report(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # A file or device the system refused (read-only /run, missing permission): one line, no traceback.
        if _STATE["debug"]:
            raise
        from bulwark_vpn.fsutil import disk_error

        error = disk_error(exc, exc.filename or "?")
        _report(error)
        return error.exit_code


def main() -> None:
    """Entry point of the `bulwark` command."""
    sys.exit(run())
