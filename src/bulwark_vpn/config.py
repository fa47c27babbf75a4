"""Settings input: command-line values, a TOML settings file and the linuxserver/wireguard variables.

Everything here turns text into validated model values (`SettingsUpdate`, peer requests) or raises an
InputError naming the bad value and the fix. Precedence: flags > environment > settings file > store.
"Not given" stays None and never resets a stored value.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulwark_vpn.errors import InputError
from bulwark_vpn.model import DEFAULT_KEEPALIVE, SettingsUpdate
from bulwark_vpn.values import (
    parse_base_url,
    parse_bool,
    parse_dns_servers,
    parse_egress_interface,
    parse_int,
    parse_interface_name,
    parse_mtu,
    parse_networks,
    parse_peer_name,
    parse_port,
    parse_server_url,
    parse_subnet4,
    parse_subnet6,
    require_text,
)
from bulwark_vpn.values.names import MAX_NUMBERED_PEERS

DEFAULT_CONFIG_DIR = Path("/etc/bulwark")
CONTAINER_CONFIG_DIR = Path("/config")


def default_config_dir(environ: Mapping[str, str]) -> Path:
    """BULWARK_CONFIG_DIR, else /config inside a container that mounts it, else /etc/bulwark."""
    if "BULWARK_CONFIG_DIR" in environ:
        return parse_config_dir(environ["BULWARK_CONFIG_DIR"], "BULWARK_CONFIG_DIR")
    if CONTAINER_CONFIG_DIR.is_dir() and Path("/.dockerenv").exists():
        return CONTAINER_CONFIG_DIR
    return DEFAULT_CONFIG_DIR


def parse_config_dir(value: object, what: str = "config folder") -> Path:
    """A config folder path: not empty (an empty value once meant the current folder), no control characters."""
    text = require_text(value, what, "give a folder path, e.g. /etc/bulwark")
    if not text.strip():
        raise InputError(f"invalid {what}", text, "give a folder path, e.g. /etc/bulwark (an empty path is refused)")
    return Path(text)


def parse_peer_dns(value: object) -> str:
    """PEERDNS: `auto` (Bulwark's forwarder on the tunnel), empty (no DNS line) or IP addresses."""
    if isinstance(value, list | tuple):
        return ",".join(str(a) for a in parse_dns_servers(value, "PEERDNS"))
    text = require_text(value, "PEERDNS", "use auto or IP addresses separated by commas").strip(" \t")
    if text.lower() == "auto":
        return "auto"
    if text == "":
        return ""
    return ",".join(str(a) for a in parse_dns_servers(text, "PEERDNS"))


def parse_files_layout(value: object) -> str:
    """The peer file layout (BULWARK_FILES): full, configs or none."""
    from bulwark_vpn.model import FILE_LAYOUTS

    hint = "use full (configs, keys and QR codes), configs (no QR code PNGs) or none (configs from 'peer show')"
    text = require_text(value, "file layout (BULWARK_FILES)", hint).strip(" \t")
    if text not in FILE_LAYOUTS:
        raise InputError("invalid file layout (BULWARK_FILES)", value, hint)
    return text


def parse_backend(value: object) -> str:
    text = require_text(value, "backend", "use auto, kernel or userspace")
    if text not in ("auto", "kernel", "userspace"):
        raise InputError("invalid backend", value, "use auto, kernel or userspace")
    return text


@dataclass(frozen=True)
class PeerRequest:
    """A peer the settings ask for: created if missing, never reset if present."""

    name: str
    keepalive: int | None = None
    server_allowed_ips: tuple | None = None


@dataclass(frozen=True)
class InitRequest:
    """Everything `bulwark init` was given, already validated."""

    update: SettingsUpdate = field(default_factory=SettingsUpdate)
    peers: tuple[PeerRequest, ...] = ()
    # Names that get PersistentKeepalive (PERSISTENTKEEPALIVE_PEERS); "all" applies to every peer.
    keepalive_peers: tuple[str, ...] = ()
    # SERVER_ALLOWEDIPS_PEER_<name>: networks routed to that peer, whether it is new or already exists.
    peer_routes: tuple[tuple[str, tuple], ...] = ()


# Raw values as text keyed by setting name; shared by flags, env and file.
_SETTING_PARSERS: dict[str, Callable[[Any], Any]] = {
    "interface": parse_interface_name,
    "listen_port": lambda v: parse_port(v, "listen port"),
    "server_url": parse_server_url,
    "server_port": lambda v: parse_port(v, "server port (SERVERPORT)"),
    "subnet4": parse_subnet4,
    "subnet6": parse_subnet6,
    "peer_dns": parse_peer_dns,
    "allowed_ips": lambda v: parse_networks(v, "ALLOWEDIPS"),
    "mtu": parse_mtu,
    "log_confs": lambda v: parse_bool(v, "LOG_CONFS"),
    "backend": parse_backend,
    "egress_interface": parse_egress_interface,
    "peer_to_peer": lambda v: parse_bool(v, "peer to peer (BULWARK_PEER_TO_PEER)"),
    "lan_to_peers": lambda v: parse_bool(v, "LAN to peers (BULWARK_LAN_TO_PEERS)"),
    "host_access": lambda v: parse_bool(v, "host access (BULWARK_HOST_ACCESS)"),
    "dns_clients": lambda v: parse_networks(v, "DNS clients", allow_empty=True),
    "serve": lambda v: parse_bool(v, "serve (BULWARK_SERVE)"),
    "api_port": lambda v: parse_port(v, "API port (BULWARK_API_PORT)"),
    "api_url": lambda v: parse_base_url(v, "API URL (BULWARK_API_URL)"),
    "require_2fa": lambda v: parse_bool(v, "require 2FA (BULWARK_REQUIRE_2FA)"),
    "audit_retention_days": lambda v: parse_int(v, 1, 3650, "audit retention (BULWARK_AUDIT_RETENTION_DAYS)",
                                                "days"),
    "files": parse_files_layout,
}

# Optional settings that "" resets to their default (None): `--egress-interface ''` NATs out of every interface again.
_CLEARABLE = {"egress_interface"}

_ENV_NAMES = {
    "SERVERURL": "server_url",
    "SERVERPORT": "server_port",
    "INTERNAL_SUBNET": "subnet4",
    "PEERDNS": "peer_dns",
    "ALLOWEDIPS": "allowed_ips",
    "LOG_CONFS": "log_confs",
    "BULWARK_LISTEN_PORT": "listen_port",
    "INTERNAL_SUBNET6": "subnet6",
    "BULWARK_SUBNET6": "subnet6",
    "BULWARK_MTU": "mtu",
    "BULWARK_INTERFACE": "interface",
    "BULWARK_BACKEND": "backend",
    "BULWARK_EGRESS_INTERFACE": "egress_interface",
    "BULWARK_PEER_TO_PEER": "peer_to_peer",
    "BULWARK_LAN_TO_PEERS": "lan_to_peers",
    "BULWARK_HOST_ACCESS": "host_access",
    "BULWARK_DNS_CLIENTS": "dns_clients",
    "BULWARK_SERVE": "serve",
    "BULWARK_API_PORT": "api_port",
    "BULWARK_API_URL": "api_url",
    "BULWARK_REQUIRE_2FA": "require_2fa",
    "BULWARK_AUDIT_RETENTION_DAYS": "audit_retention_days",
    "BULWARK_FILES": "files",
}


def settings_update(raw: Mapping[str, object]) -> SettingsUpdate:
    """Validate raw setting values (None or absent = not given; "" clears the settings of `_CLEARABLE`)."""
    values: dict[str, Any] = {}
    clear = set()
    for key, value in raw.items():
        if value is None:
            continue
        if key not in _SETTING_PARSERS:
            raise InputError("unknown setting", key, f"known settings are {', '.join(sorted(_SETTING_PARSERS))}")
        if key in _CLEARABLE and value == "":
            clear.add(key)
            continue
        values[key] = _SETTING_PARSERS[key](value)
    return SettingsUpdate(**values, clear=frozenset(clear))


def parse_peers(value: object, what: str = "PEERS") -> tuple[str, ...]:
    """PEERS: a count N gives peer1..peerN; a comma list (or a TOML list) gives names (a number N means peerN)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, list | tuple):
        items = list(value)
    else:
        text = require_text(value, what, "a count N or names separated by commas").strip(" \t")
        if not text:
            return ()
        if text.isascii() and text.isdigit():
            count = int(text)
            if count > MAX_NUMBERED_PEERS:
                raise InputError(f"invalid {what}", value, f"at most {MAX_NUMBERED_PEERS} numbered peers")
            return tuple(f"peer{i}" for i in range(1, count + 1))
        items = [item for item in text.split(",") if item.strip(" \t")]
    names = [parse_peer_name(item) for item in items]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"invalid {what}", name, "each peer may be listed once")
        seen.add(name)
    return tuple(names)


def peer_requests(
    names: tuple[str, ...], keepalive_names: tuple[str, ...], server_allowed: Mapping[str, tuple]
) -> tuple[PeerRequest, ...]:
    everyone = "all" in keepalive_names
    return tuple(
        PeerRequest(
            name=name,
            keepalive=DEFAULT_KEEPALIVE if everyone or name in keepalive_names else None,
            server_allowed_ips=server_allowed.get(name),
        )
        for name in names
    )


def parse_keepalive_peers(value: object) -> tuple[str, ...]:
    """PERSISTENTKEEPALIVE_PEERS: peer names (comma list or TOML list), or `all`."""
    items = value if isinstance(value, list | tuple) else require_text(
        value, "PERSISTENTKEEPALIVE_PEERS", "peer names separated by commas, or all").split(",")
    out = []
    for item in items:
        if isinstance(item, str) and not item.strip(" \t"):
            continue
        out.append("all" if item == "all" or (isinstance(item, str) and item.strip(" \t") == "all")
                   else parse_peer_name(item))
    return tuple(out)


def _server_allowed_from_env(environ: Mapping[str, str]) -> dict[str, tuple]:
    prefix = "SERVER_ALLOWEDIPS_PEER_"
    out = {}
    for key, value in environ.items():
        if key.startswith(prefix) and value.strip():
            out[parse_peer_name(key[len(prefix):])] = parse_networks(value, key)
    return out


def request_from_env(environ: Mapping[str, str]) -> InitRequest:
    """The linuxserver/wireguard variables (and BULWARK_* extras) as an InitRequest."""
    raw = {setting: environ[name] for name, setting in _ENV_NAMES.items() if environ.get(name, "") != ""}
    update = settings_update(raw)
    keepalive = parse_keepalive_peers(environ.get("PERSISTENTKEEPALIVE_PEERS", ""))
    server_allowed = _server_allowed_from_env(environ)
    names = parse_peers(environ.get("PEERS", ""))
    return InitRequest(update=update, peers=peer_requests(names, keepalive, server_allowed), keepalive_peers=keepalive,
                       peer_routes=tuple(sorted(server_allowed.items())))


def request_from_file(path: Path) -> InitRequest:
    """A TOML settings file: the setting names above, plus `peers` (list or count) and `keepalive_peers`."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InputError("cannot read settings file", str(path), f"{exc.strerror}: check the path") from None
    except UnicodeDecodeError:
        raise InputError("invalid settings file", str(path), "it is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError("invalid settings file", str(path), f"{exc}: fix the TOML syntax") from None
    peers_value = data.pop("peers", "")
    keepalive_value = data.pop("keepalive_peers", [])
    if "subnet" in data:
        data["subnet4"] = data.pop("subnet")
    update = settings_update(data)
    peers = parse_peers(peers_value, "peers")
    keepalive = parse_keepalive_peers(keepalive_value)
    return InitRequest(update=update, peers=peer_requests(peers, keepalive, {}), keepalive_peers=keepalive)


def combine(*requests: InitRequest) -> InitRequest:
    """Merge requests, earlier ones taking precedence (flags, env, file)."""
    update = SettingsUpdate()
    peers: dict[str, PeerRequest] = {}
    keepalive: list[str] = []
    routes: dict[str, tuple] = {}
    for request in requests:
        update = update.merged_over(request.update)
        for peer in request.peers:
            peers.setdefault(peer.name, peer)
        keepalive.extend(n for n in request.keepalive_peers if n not in keepalive)
        for name, nets in request.peer_routes:
            routes.setdefault(name, nets)
    return InitRequest(update=update, peers=tuple(peers.values()), keepalive_peers=tuple(keepalive),
                       peer_routes=tuple(sorted(routes.items())))
