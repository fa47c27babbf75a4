"""Importing wg-quick files: a hand-made server config with client configs, and PiVPN's WireGuard folder.

Every file goes through the strict wg-quick parser (`render.wgquick.parse_config`); the lines it does not use are
reported here, hooks (PreUp/PostUp/PreDown/PostDown) as commands that are never imported. Client configs are
matched to the server's peers by the public key of their private key.
"""

from __future__ import annotations

import os
import re
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bulwark_vpn.errors import InputError, UnsafePathError
from bulwark_vpn.fsutil import SafeFolder
from bulwark_vpn.importers.plan import HOOK_KEYS, Plan, SourcePeer, SourceServer, make_plan, safe_name
from bulwark_vpn.keys import PrivateKey, PublicKey
from bulwark_vpn.model import WgConfig
from bulwark_vpn.render.wgquick import parse_config
from bulwark_vpn.values import parse_endpoint, parse_interface_name

MAX_TEXT = 64 * 1024 * 1024
_USED = {"interface": {"privatekey", "address", "listenport", "mtu", "dns"},
         "peer": {"publickey", "presharedkey", "endpoint", "allowedips", "persistentkeepalive"}}
_DISABLED = "#[disabled] "  # PiVPN comments out a disabled client's lines with this prefix


def read_text(path: Path, what: str = "file") -> str:
    """A text file given on the command line: a regular file (a FIFO or device is refused), UTF-8, size-limited."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise InputError(f"cannot read the {what}: {exc.strerror}", str(path), "check the path") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise InputError(f"the {what} is not a regular file", str(path), "give the file itself")
        data = fh.read(MAX_TEXT + 1)
    return decode(data, path, what)


def decode(data: bytes, path: Path | str, what: str = "file") -> str:
    if len(data) > MAX_TEXT:
        raise InputError(f"the {what} is larger than {MAX_TEXT // 1024**2} MiB", str(path), "is it the right file?")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InputError(f"the {what} is not UTF-8 text", str(path), "give a wg-quick config") from None


def dropped_lines(text: str, source: str) -> list[str]:
    """Each `Key = value` line the parser does not use: hooks are said to be commands never imported."""
    out: list[str] = []
    section = ""
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]").strip().lower()
            continue
        key = line.partition("=")[0].strip()
        if key.lower() in _USED.get(section, set()):
            continue
        if key.lower() in HOOK_KEYS:
            out.append(f"{source}:{number}: {key} dropped: a command, never imported (Bulwark does NAT and "
                       f"forwarding itself)")
        else:
            out.append(f"{source}:{number}: {key} dropped: not a setting Bulwark keeps")
    return out


def _peer_comments(text: str) -> list[str | None]:
    """For each [Peer] in order, the comment just before or just after its header (a name, often)."""
    lines = [raw.strip() for raw in text.split("\n")]
    out: list[str | None] = []
    for index, line in enumerate(lines):
        if line.lower() != "[peer]":
            continue
        after = lines[index + 1] if index + 1 < len(lines) else ""
        before = next((lines[i] for i in range(index - 1, -1, -1) if lines[i]), "")
        chosen = after if after.startswith("#") else before if before.startswith("#") else None
        # "# office router: the site behind it" names the peer "office_router".
        out.append(re.split(r"[:;,(]", chosen.lstrip("#"), maxsplit=1)[0].strip()[:32] if chosen else None)
    return out


@dataclass(frozen=True)
class Client:
    """A client config: its key, its view of the server, and the file it came from."""

    name: str
    private_key: PrivateKey
    config: WgConfig
    source: str


def read_client(text: str, source: str, name: str, plan: Plan) -> Client:
    config = parse_config(text, source)
    plan.dropped += dropped_lines(text, source)
    return Client(name, config.interface.private_key, config, source)


def server_from(config: WgConfig, source: str, interface: str, clients: list[Client],
                plan: Plan) -> SourceServer:
    """The server's settings; Endpoint, DNS and AllowedIPs come from the clients' configs (the most common)."""
    public = config.interface.private_key.public_key()
    endpoints = []
    for client in clients:
        if not client.config.peers or client.config.peers[0].public_key != public:
            continue
        endpoint = client.config.peers[0].endpoint
        if endpoint:
            parsed = parse_endpoint(endpoint, f"Endpoint in {client.source}")
            endpoints.append((parsed.host, parsed.port))
    host, port = Counter(endpoints).most_common(1)[0][0] if endpoints else (None, None)
    if host is None:
        plan.warnings.append(f"{source}: no client config names the server's Endpoint: set it after the import "
                             f"('bulwark init --server-url HOST') before sharing new configs")
    return SourceServer(private_key=config.interface.private_key, addresses=config.interface.addresses,
                        listen_port=config.interface.listen_port, mtu=config.interface.mtu, interface=interface,
                        endpoint_host=host, endpoint_port=port)


def peers_from(config: WgConfig, text: str, clients: list[Client], plan: Plan, source: str,
               names: dict[PublicKey, str] | None = None,
               disabled: set[int] | None = None) -> list[SourcePeer]:
    """The server's [Peer]s, each with its client config when one matches its public key."""
    server_public = config.interface.private_key.public_key()
    by_key: dict[PublicKey, Client] = {}
    for client in clients:
        key = client.private_key.public_key()
        if client.config.peers and client.config.peers[0].public_key != server_public:
            plan.warnings.append(f"{client.source}: a client of another server (its [Peer] is not this server's "
                                 f"key): ignored")
            continue
        if key in by_key:
            plan.conflicts.append(f"{client.source}: the same private key as {by_key[key].source}")
            continue
        by_key[key] = client
    comments = _peer_comments(text)
    matched: set[PublicKey] = set()
    out: list[SourcePeer] = []
    for index, section in enumerate(config.peers):
        match = by_key.get(section.public_key)
        raw_name = (names or {}).get(section.public_key) or (match.name if match else None) \
            or (comments[index] if index < len(comments) else None)
        name, changed = safe_name(raw_name, f"imported{index + 1}")
        if changed and raw_name:
            plan.warnings.append(f"{source}: peer '{raw_name[:60]}' is named '{name}' (letters, digits and _=+.- "
                                 f"only)")
        view = match.config.peers[0] if match and match.config.peers else None
        if match is not None:
            matched.add(section.public_key)
            if view is not None and view.preshared_key != section.preshared_key:
                plan.conflicts.append(f"{match.source}: its PresharedKey differs from the server's for peer "
                                      f"'{name}': this client could not connect")
        out.append(SourcePeer(
            name=name, public_key=section.public_key, networks=section.allowed_ips, source=source,
            private_key=match.private_key if match else None, preshared_key=section.preshared_key,
            allowed_ips=view.allowed_ips if view is not None else None,
            keepalive=view.keepalive if view is not None and view.keepalive is not None else section.keepalive,
            enabled=index not in (disabled or set()),
            dns=match.config.interface.dns if match else None,
        ))
    for key, client in by_key.items():
        if key not in matched:
            plan.warnings.append(f"{client.source}: matches no [Peer] of the server: ignored")
    return out


def import_wg_quick(server_path: Path, client_paths: tuple[Path, ...]) -> Plan:
    """`bulwark import wg-quick SERVER.conf [CLIENT.conf...]`."""
    source = str(server_path)
    plan = Plan(source)
    text = read_text(server_path, "server config")
    config = parse_config(text, source)
    plan.dropped += dropped_lines(text, source)
    interface = _interface_name(server_path)
    clients = [read_client(read_text(p, "client config"), str(p), p.stem, plan) for p in client_paths]
    server = server_from(config, source, interface, clients, plan)
    return make_plan(plan, server, peers_from(config, text, clients, plan, source))


def _interface_name(path: Path) -> str:
    try:
        return parse_interface_name(path.stem, f"interface name of {path}")
    except InputError:
        return "wg0"


# -- PiVPN ---------------------------------------------------------------------------------------------------

_CLIENTS_LINE = re.compile(r"(\S+) ([A-Za-z0-9+/]{43}=) \d+ \d+")


def _undisable(text: str) -> tuple[str, set[int]]:
    """PiVPN disables a client by prefixing its lines with '#[disabled] ': the text with them restored, and the
    indexes (in [Peer] order) of the disabled peers."""
    lines = []
    disabled: set[int] = set()
    index = -1
    for raw in text.split("\n"):
        was = raw.startswith(_DISABLED)
        line = raw[len(_DISABLED):] if was else raw
        if line.strip().lower() == "[peer]":
            index += 1
            if was:
                disabled.add(index)
        lines.append(line)
    return "\n".join(lines), disabled


def _read_in(folder: SafeFolder, relative: str, what: str) -> str:
    try:
        return decode(folder.read_bytes(relative), folder.path / relative, what)
    except FileNotFoundError:
        raise InputError(f"no {what} in the PiVPN folder", str(folder.path / relative),
                         "give PiVPN's WireGuard folder (/etc/wireguard)") from None


def import_pivpn(path: Path) -> Plan:
    """`bulwark import pivpn DIR`: DIR/wg0.conf, DIR/configs/*.conf (private keys), DIR/configs/clients.txt
    (names). Links inside DIR are refused, never followed."""
    try:
        folder = SafeFolder.open(path)
    except FileNotFoundError:
        raise InputError("no such folder", str(path), "give PiVPN's WireGuard folder (/etc/wireguard)") from None
    except UnsafePathError as exc:
        raise InputError(exc.message.replace("config folder", "PiVPN folder"), str(path), exc.hint) from None
    with folder:
        source = str(path / "wg0.conf")
        plan = Plan(source)
        text, disabled = _undisable(_read_in(folder, "wg0.conf", "wg0.conf"))
        config = parse_config(text, source)
        plan.dropped += dropped_lines(text, source)
        names: dict[PublicKey, str] = {}
        listed = folder.listdir("configs")
        if "clients.txt" in listed:
            for number, line in enumerate(_read_in(folder, "configs/clients.txt", "clients.txt").split("\n"), 1):
                if not line.strip():
                    continue
                match = _CLIENTS_LINE.fullmatch(line.strip())
                if match is None:
                    plan.warnings.append(f"{path / 'configs/clients.txt'}:{number}: not 'NAME KEY TIME IP': ignored")
                    continue
                names[PublicKey.from_base64(match.group(2))] = match.group(1)
        clients = []
        for name in sorted(n for n in listed if n.endswith(".conf") and not n.startswith(".")):
            relative = f"configs/{name}"
            clients.append(read_client(_read_in(folder, relative, "client config"), str(path / relative),
                                       name[: -len(".conf")], plan))
        server = server_from(config, source, "wg0", clients, plan)
        return make_plan(plan, server, peers_from(config, text, clients, plan, source, names, disabled))
