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
from bulwark_vpn.errors import BulwarkError, ErrorCode, ExitCode, InputError, one_line

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
    from bulwark_vpn.service.actors import cli_actor

    run_dir = Path(_STATE["run_dir"]) if _STATE["run_dir"] else DEFAULT_RUN_DIR
    environ = dict(os.environ)
    ctx = Context(config_dir=_config_dir(config_dir), run_dir=run_dir, environ=environ, actor=cli_actor(environ))
    if environ.get("BULWARK_LOCK_TIMEOUT"):
        # How long to wait for another command holding the folder or the store (seconds) [10].
        from dataclasses import replace

        from bulwark_vpn.values import parse_int

        ctx = replace(ctx, lock_timeout=float(parse_int(environ["BULWARK_LOCK_TIMEOUT"], 0, 3600,
                                                           "BULWARK_LOCK_TIMEOUT", "seconds")))
    return ctx


def _echo_json(value: object) -> None:
    import json

    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _stream_json(value: dict[str, Any], key: str, items: Any = None, line: Any = None) -> None:
    """A large JSON object written one list item per line, in chunks (valid JSON; the same value as _echo_json).
    `items` and `line` give the list's objects and their one-line JSON (see render.jsonlines) instead of
    `value[key]` and json.dumps."""
    import json

    if items is None:
        items = value[key]
        line = lambda item: json.dumps(item, sort_keys=True)  # noqa: E731
    rest = {k: v for k, v in value.items() if k != key}
    out = sys.stdout
    out.write("{\n  " + json.dumps(key) + ": [")
    chunk: list[str] = []
    for index, item in enumerate(items):
        chunk.append(("," if index else "") + "\n    " + line(item))
        if len(chunk) == 1000:
            out.write("".join(chunk))
            chunk.clear()
    out.write("".join(chunk))
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
@click.option("--egress-interface", help="The one interface to masquerade tunnel traffic out of ('' for every "
                                        "interface but the tunnel) [every interface but the tunnel].")
@click.option("--peer-to-peer/--no-peer-to-peer", default=None,
              help="Let peers reach each other through the gateway [closed] (BULWARK_PEER_TO_PEER).")
@click.option("--lan-to-peers/--no-lan-to-peers", default=None,
              help="Let hosts outside the tunnel open connections to peers; replies always pass [closed] "
                   "(BULWARK_LAN_TO_PEERS).")
@click.option("--host-access/--no-host-access", default=None,
              help="Let peers reach every service of the gateway host, not only DNS and ping [closed] "
                   "(BULWARK_HOST_ACCESS).")
@click.option("--dns-clients", help="Networks besides the tunnel whose DNS queries the forwarder answers, e.g. "
                                    "192.168.1.0/24 ('' for none) [none] (BULWARK_DNS_CLIENTS).")
@click.option("--log-confs/--no-log-confs", default=None, help="Print new peers' QR codes to the log (LOG_CONFS).")
@click.option("--serve/--no-serve", default=None,
              help="Serve the HTTP API and web pages with the gateway, to peers and this host [off] (BULWARK_SERVE).")
@click.option("--api-port", help="TCP port of the API on the tunnel and loopback addresses [8080].")
@click.option("--api-url", help="The address people open, e.g. https://vpn.example.com (links use it).")
@click.option("--require-2fa/--no-require-2fa", default=None, help="Every user must set up TOTP [off].")
@click.option("--audit-retention-days", help="How long the audit log keeps entries [90].")
@click.option("--files", help="Each peer's files in the folder: full (config, keys, QR code PNG: the linuxserver "
                              "layout), configs (no PNG) or none (configs from 'peer show') [full] (BULWARK_FILES).")
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
    for name in result.added[:20]:
        _say(f"added peer {name}")
    if len(result.added) > 20:
        _say(f"added {len(result.added) - 20} more peers, up to {result.added[-1]} ('bulwark peer list' shows them)")


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
@click.option("--owner", help="The user who owns these peers (sees and manages them in the web pages).")
@click.option("--expires", help="When they stop working: a duration (30d, 12h) or a date (2026-12-31).")
@_interface_option
@_json_option
def peer_add(names, config_dir, allowed_ips, server_allowed_ips, keepalive, public_key, owner, expires, interface,
             as_json) -> None:
    """Add peers: keys, addresses, configs and QR codes."""
    from bulwark_vpn import service

    request = service.AddPeersRequest.parse(names, allowed_ips=allowed_ips, server_allowed_ips=server_allowed_ips,
                                            keepalive=keepalive, public_key=public_key, interface=interface,
                                            owner=owner, expires=expires)
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


@peer.command("update")
@click.argument("name")
@_config_dir_option
@click.option("--allowed-ips", help="Client AllowedIPs for this peer.")
@click.option("--keepalive", help="PersistentKeepalive seconds (0 turns it off).")
@click.option("--expires", help="When it stops working: a duration (30d) or a date (2026-12-31).")
@click.option("--owner", help="Give the peer to this user.")
@click.option("--clear", multiple=True, help="Reset a field: allowed_ips, keepalive, expires or owner (repeatable).")
@_interface_option
@_json_option
def peer_update(name, config_dir, allowed_ips, keepalive, expires, owner, clear, interface, as_json) -> None:
    """Change a peer's AllowedIPs, keepalive, expiry or owner; applied live."""
    from bulwark_vpn.service.peers import UpdatePeerRequest, update_peer

    request = UpdatePeerRequest.parse(name, allowed_ips=allowed_ips, keepalive=keepalive, expires=expires,
                                      owner=owner, clear=clear, interface=interface)
    info = update_peer(_context(config_dir), request)
    if as_json:
        _echo_json(info.to_dict())
    else:
        _say(f"updated peer {info.name}")


@peer.command("share")
@click.argument("name")
@_config_dir_option
@click.option("--expires", help="How long the link works, e.g. 24h (at most 30d) [24h].")
@_json_option
def peer_share(name, config_dir, expires, as_json) -> None:
    """A single-use link that lets one person download this peer's config or scan its QR code (URL on stdout)."""
    from bulwark_vpn.service.share import create_share

    share = create_share(_context(config_dir), name, expires)
    if as_json:
        _echo_json(share.to_dict())
        return
    click.echo(share.url)
    _say(f"the link works once, until {share.info.to_dict()['expires']}")


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
        from bulwark_vpn.render.jsonlines import PeerInfoLines

        _stream_json({"peers": None, "total": len(result.peers) if result.total < 0 else result.total,
                      "offset": result.offset}, "peers", result.peers, PeerInfoLines())
        return
    width = max([12, *(len(p.name) for p in result.peers)])
    for p in result.peers:
        notes = [n for n in ("disabled" if not p.enabled else "", "expired" if p.expired else "",
                             f"owner {p.owner}" if p.owner else "",
                             f"expires {p.to_dict()['expires']}" if p.expires_at and not p.expired else "") if n]
        six = f"  {p.address6}" if p.address6 else ""
        shown = f"  ({', '.join(notes)})" if notes else ""
        click.echo(f"{p.name:<{width}} {p.address4:<15}{six}  {p.public_key}{shown}")


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
@click.option("--serve/--no-serve", default=None, help="Also serve the HTTP API and web pages (kept as a setting).")
@click.option("--error-file", hidden=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--prepared", is_flag=True, hidden=True, help="Started by 'bulwark up', which provisioned already.")
@_json_option
def up(config_dir, interface, backend, settings_file, foreground, serve, error_file, prepared, as_json) -> None:
    """Bring the gateway up from the store (setting it up from the linuxserver variables if needed)."""
    from bulwark_vpn import service

    ctx = _context(config_dir)
    if foreground:
        _STATE["error_file"] = error_file
        service.up_foreground(ctx, interface=interface, backend=backend, settings_file=settings_file, serve=serve,
                              prepared=prepared,
                              ready=lambda state: _say(f"{state.interface} is up ({state.backend}, pid {state.pid})"))
        return
    result = service.up_background(ctx, interface=interface, backend=backend, settings_file=settings_file,
                                   serve=serve)
    click.echo(result.log, err=True, nl=False)
    if as_json:
        _echo_json(result.to_dict())


@cli.command()
@_config_dir_option
@click.option("--all", "everything", is_flag=True, help="Render every file again from the store.")
@click.option("--background", is_flag=True, hidden=True,
              help="Run as the background renderer a command starts (leaves at once if one runs).")
@_json_option
def render(config_dir, everything, background, as_json) -> None:
    """Bring the folder's files level with the store now (a large server config is otherwise updated in the
    background, a moment after each change)."""
    from bulwark_vpn import service

    ctx = _context(config_dir)
    result = service.background_render(ctx) if background else service.render_pending(ctx, everything=everything)
    if as_json:
        _echo_json(result.to_dict())
    elif not background:
        _say(f"files are level with the store ({result.finished} pending update(s) finished)")


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
@click.argument("names", nargs=-1, metavar="[NAME]...")
def status(config_dir, interface, as_json, names) -> None:
    """Show the interface and each peer's endpoint, handshake and transfer (only the NAMEd peers if given).
    Exit 1 when down."""
    from bulwark_vpn import service

    report = service.status(_context(config_dir), interface=interface, names=names or None, require_names=True)
    if as_json:
        from bulwark_vpn.render.jsonlines import status_peer

        _stream_json({**report.to_dict(peers=False), "peers": None}, "peers", report.peers, status_peer)
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


# Every deploy value is plain text here: DeployOptions parses each with the parser of its kind, so a bad one is
# one line naming it (exit 2), never a usage dump or a traceback.
@cli.command()
@click.argument("target", metavar="{docker|kubernetes|terraform|systemd}")
@_config_dir_option
@click.option("--out", "out_dir", required=True, metavar="DIRECTORY", help="Folder to write the files into.")
@click.option("--image", help="Container image: [registry[:port]/]name[:tag][@digest] [bulwark-vpn].")
@click.option("--tag", "image_tag", help="Image tag, when --image has none [this version].")
@click.option("--digest", "image_digest", help="Image digest (sha256:...), pins the image; when --image has none.")
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


# -- the control plane: API, users, tokens, audit --------------------------------------------------------


@cli.command()
@_config_dir_option
@click.option("--listen", multiple=True, metavar="ADDR:PORT",
              help="Where to listen (repeatable) [127.0.0.1 and the tunnel addresses, on the API port].")
@click.option("--tls-cert", help="TLS certificate file (PEM); with --tls-key, serve HTTPS.")
@click.option("--tls-key", help="TLS private key file (PEM).")
@click.option("--trusted-proxy", multiple=True, metavar="CIDR",
              help="A reverse proxy whose X-Forwarded-For/Proto are believed (repeatable) [none].")
def serve(config_dir, listen, tls_cert, tls_key, trusted_proxy) -> None:
    """Serve the HTTP API and web pages (beside `bulwark up`, on the same store)."""
    try:
        from bulwark_vpn.web.server import ServeOptions, serve_forever
    except ImportError:
        from bulwark_vpn.errors import SystemActionError

        raise SystemActionError("the API is not installed", "bulwark-vpn[web]",
                                "pip install 'bulwark-vpn[web]' (the container image has it)") from None
    options = ServeOptions.parse(listen=listen, tls_cert=tls_cert, tls_key=tls_key, trusted_proxies=trusted_proxy)
    ctx = _context(config_dir)
    ctx.open_store(read_only=True).close()  # a missing store is said now, not at the first request
    serve_forever(ctx, options)


@cli.group()
def user() -> None:
    """Accounts of the web pages and the API: add, list, update, remove, reset 2FA."""


def _read_password(password_stdin: bool) -> str | None:
    if not password_stdin:
        return None
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


@user.command("add")
@click.argument("name")
@_config_dir_option
@click.option("--admin", is_flag=True, help="Make the user an admin.")
@click.option("--peer-limit", help="How many peers the user may own.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin instead of making a setup link.")
@_json_option
def user_add(name, config_dir, admin, peer_limit, password_stdin, as_json) -> None:
    """Add a user; without --password-stdin, print a single-use setup link for them (there is no default password)."""
    from bulwark_vpn.service import accounts

    request = accounts.AddUserRequest.parse(name, role="admin" if admin else "user", peer_limit=peer_limit,
                                            password=_read_password(password_stdin))
    result = accounts.add_user(_context(config_dir), request)
    if as_json:
        _echo_json(result.to_dict())
        return
    _say(f"added {'admin' if admin else 'user'} {result.user.name}")
    if result.setup is not None:
        click.echo(result.setup.url)
        _say(f"send this link to {result.user.name}: it works once, until {result.setup.to_dict()['expires']}")


@user.command("list")
@_config_dir_option
@_json_option
def user_list(config_dir, as_json) -> None:
    """List the users (no secrets)."""
    from bulwark_vpn.service import accounts

    result = accounts.list_users(_context(config_dir))
    if as_json:
        _echo_json(result.to_dict())
        return
    for u in result.users:
        flags = ", ".join(f for f in ("2FA" if u.totp_enabled else "", "2FA required" if u.require_2fa else "",
                                      "" if u.has_password else "setup pending") if f)
        limit = f"limit {u.peer_limit}" if u.peer_limit is not None else "no limit"
        click.echo(f"{u.name:<20} {u.role:<6} {u.peers} peers ({limit}){'  ' + flags if flags else ''}")


@user.command("update")
@click.argument("name")
@_config_dir_option
@click.option("--role", help="admin or user.")
@click.option("--peer-limit", help="How many peers the user may own.")
@click.option("--no-peer-limit", is_flag=True, help="Remove the peer limit.")
@click.option("--require-2fa/--no-require-2fa", default=None, help="Require TOTP for this user.")
@_json_option
def user_update(name, config_dir, role, peer_limit, no_peer_limit, require_2fa, as_json) -> None:
    """Change a user's role, peer limit or 2FA requirement."""
    from bulwark_vpn.service import accounts

    request = accounts.UpdateUserRequest.parse(name, role=role, peer_limit=peer_limit, require_2fa=require_2fa,
                                               clear_peer_limit=no_peer_limit)
    info = accounts.update_user(_context(config_dir), request)
    if as_json:
        _echo_json(info.to_dict())
    else:
        _say(f"updated user {info.name}")


@user.command("remove")
@click.argument("name")
@_config_dir_option
@_json_option
def user_remove(name, config_dir, as_json) -> None:
    """Remove a user (their tokens are revoked; their peers stay, for admins to manage)."""
    from bulwark_vpn.service import accounts

    info = accounts.remove_user(_context(config_dir), name)
    if as_json:
        _echo_json(info.to_dict())
    else:
        _say(f"removed user {info.name}")


@user.command("reset-2fa")
@click.argument("name")
@_config_dir_option
@_json_option
def user_reset_2fa(name, config_dir, as_json) -> None:
    """Turn a user's TOTP off (a lost phone); they set it up again at the next sign-in when 2FA is required."""
    from bulwark_vpn.service import accounts

    info = accounts.reset_2fa(_context(config_dir), name)
    if as_json:
        _echo_json(info.to_dict())
    else:
        _say(f"2FA reset for {info.name}")


@user.command("setup-link")
@click.argument("name")
@_config_dir_option
@click.option("--expires", help="How long the link works [72h].")
@_json_option
def user_setup_link(name, config_dir, expires, as_json) -> None:
    """A new single-use link for a user to set their password (older unused links stop working)."""
    from bulwark_vpn.service import accounts

    link = accounts.new_setup_link(_context(config_dir), name, expires)
    if as_json:
        _echo_json(link.to_dict())
        return
    click.echo(link.url)


@cli.group()
def token() -> None:
    """API tokens for scripts: create (printed once), list, revoke."""


@token.command("create")
@_config_dir_option
@click.option("--name", required=True, help="What the token is for, e.g. CI.")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="read, peers:write, admin or metrics (repeatable, or comma-separated).")
@click.option("--expires", help="When it stops working: 30d, or a date [never].")
@click.option("--user", "owner", help="The user it acts as [the user running this command].")
@_json_option
def token_create(config_dir, name, scopes, expires, owner, as_json) -> None:
    """Create a token; it is printed once, alone on stdout (send it as 'Authorization: Bearer TOKEN')."""
    import time

    from bulwark_vpn.service import auth

    flat = [part for scope in scopes for part in scope.split(",") if part]
    request = auth.CreateTokenRequest.parse(name, scopes=flat, expires=expires, now=time.time(), owner=owner)
    result = auth.create_token(_context(config_dir), request)
    if as_json:
        _echo_json(result.to_dict())
        return
    click.echo(result.token.reveal())
    _say(f"token {result.info.id} '{result.info.name}' for {result.info.owner} ({', '.join(result.info.scopes)}): "
         f"shown this once")


@token.command("list")
@_config_dir_option
@_json_option
def token_list(config_dir, as_json) -> None:
    """List tokens (never the tokens themselves): scopes, expiry, last use."""
    from bulwark_vpn.service import auth

    result = auth.list_tokens(_context(config_dir))
    if as_json:
        _echo_json(result.to_dict())
        return
    for t in result.tokens:
        d = t.to_dict()
        state = "revoked" if t.revoked else f"expires {d['expires']}" if t.expires_at else "no expiry"
        used = f"last used {d['last_used']} from {t.last_used_from}" if t.last_used_at else "never used"
        click.echo(f"{t.id:>4} {t.name:<20} {t.owner:<12} {','.join(t.scopes):<20} {state}, {used}")


@token.command("revoke")
@click.argument("token_id")
@_config_dir_option
@_json_option
def token_revoke(token_id, config_dir, as_json) -> None:
    """Revoke a token by its id (see 'bulwark token list')."""
    from bulwark_vpn.service import auth

    info = auth.revoke_token(_context(config_dir), token_id)
    if as_json:
        _echo_json(info.to_dict())
    else:
        _say(f"revoked token {info.id} '{info.name}'")


@cli.command()
@_config_dir_option
@click.option("--user", help="Only what this user did (their sessions and tokens).")
@click.option("--peer", help="Only what concerns this peer.")
@click.option("--limit", default="100", help="How many entries, newest first [100].")
@_json_option
def audit(config_dir, user, peer, limit, as_json) -> None:
    """The audit log: who did what, when, from where, and the result."""
    from bulwark_vpn.service.audit import AuditRequest, list_audit
    from bulwark_vpn.values import format_moment

    page = list_audit(_context(config_dir), AuditRequest.parse(user=user, peer=peer, limit=limit))
    if as_json:
        _echo_json(page.to_dict())
        return
    for e in page.entries:
        target = f" {e.target}" if e.target else ""
        where = f" from {e.address}" if e.address else ""
        # One line per entry whatever a store row holds (entries of older versions kept names as typed).
        click.echo(one_line(f"{format_moment(e.at)} {e.actor}{where} {e.operation}{target}: {e.result}"))


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
