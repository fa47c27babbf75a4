"""Settings input: command-line values, a TOML settings file and the linuxserver/wireguard variables.

Everything here turns text into validated model values (`SettingsUpdate`, peer requests) or raises an
InputError naming the bad value and the fix. Precedence: flags > environment > settings file > store.
"Not given" stays None and never resets a stored value.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulwark_vpn.addressing import parse_networks, parse_subnet4, parse_subnet6
from bulwark_vpn.errors import InputError
from bulwark_vpn.model import DEFAULT_KEEPALIVE, SettingsUpdate

DEFAULT_CONFIG_DIR = Path("/etc/bulwark")
CONTAINER_CONFIG_DIR = Path("/config")
# wg-quick derives the interface name from the file name: it must match this and be <= 15 characters.
_IFNAME = re.compile(r"^[a-zA-Z0-9_=+.-]{1,15}$")
_PEER_NAME = re.compile(r"^[a-zA-Z0-9_=+.-]+$")
IFNAMSIZ = 15
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def default_config_dir(environ: Mapping[str, str]) -> Path:
    """BULWARK_CONFIG_DIR, else /config inside a container that mounts it, else /etc/bulwark."""
    if environ.get("BULWARK_CONFIG_DIR"):
        return Path(environ["BULWARK_CONFIG_DIR"])
    if CONTAINER_CONFIG_DIR.is_dir() and Path("/.dockerenv").exists():
        return CONTAINER_CONFIG_DIR
    return DEFAULT_CONFIG_DIR


def validate_interface_name(name: str) -> str:
    if not _IFNAME.match(name) or name in (".", ".."):
        raise InputError(
            f"invalid interface name: '{name}': use 1-15 letters, digits or _=+.- (e.g. wg0)"
        )
    return name


def normalize_peer_name(raw: str) -> str:
    """Validate a peer name; a bare number N means linuxserver's numbered peer `peerN`."""
    name = raw.strip()
    if name.isdigit():
        name = f"peer{int(name)}"
    numbered = name.startswith("peer") and name[4:].isdigit()
    folder = name if numbered else f"peer_{name}"
    if not name or not _PEER_NAME.match(name) or name.startswith(".") or len(folder) > IFNAMSIZ:
        limit = IFNAMSIZ - len("peer_")
        raise InputError(
            f"invalid peer name: '{raw}': use 1-{limit} letters, digits or _=+.- "
            f"(wg-quick needs 'peer_NAME' to be an interface name of at most {IFNAMSIZ} characters)"
        )
    return name


def _parse_int(value: str | int, low: int, high: int, what: str, hint: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = low - 1
    if not low <= number <= high:
        raise InputError(f"invalid {what}: '{value}': use a number from {low} to {high} ({hint})")
    return number


def parse_port(value: str | int, what: str = "port") -> int:
    return _parse_int(value, 1, 65535, what, "WireGuard's default is 51820")


def parse_mtu(value: str | int) -> int:
    return _parse_int(value, 1280, 9000, "MTU", "1420 suits most paths")


def parse_keepalive(value: str | int) -> int:
    return _parse_int(value, 0, 65535, "keepalive", "seconds; 25 keeps NAT mappings open")


def parse_bool(value: str | bool, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(f"invalid {what}: '{value}': use true or false")


def parse_server_url(value: str) -> str:
    """SERVERURL: `auto`, an IP address (IPv6 without brackets) or a DNS name."""
    text = value.strip()
    if text == "auto":
        return text
    bare = text.strip("[]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    label = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
    if text and len(text) <= 253 and all(label.fullmatch(x) for x in labels):
        return text
    raise InputError(f"invalid server URL: '{value}': use auto, an IP address or a DNS name (no scheme, no port)")


def parse_peer_dns(value: str) -> str:
    text = value.strip()
    if text in ("auto", ""):
        return text
    for item in text.split(","):
        try:
            ipaddress.ip_address(item.strip())
        except ValueError:
            raise InputError(
                f"invalid PEERDNS entry: '{item.strip()}': use auto or IP addresses separated by commas"
            ) from None
    return ",".join(item.strip() for item in text.split(","))


def parse_backend(value: str) -> str:
    if value not in ("auto", "kernel", "userspace"):
        raise InputError(f"invalid backend: '{value}': use auto, kernel or userspace")
    return value


# The exposure settings (issue 8): strict on type and text, since TOML, env and flags all reach them. These
# move to the `values` parsers with the others.
_SWITCH = re.compile(r"(?i)1|0|true|false|yes|no|on|off")
_CIDR = re.compile(r"[0-9A-Fa-f.:]{2,45}(/[0-9]{1,3})?")


def parse_egress_interface(value: object) -> str:
    """--egress-interface: an interface name (the whole value: no trailing newline) other than the loopback."""
    if not isinstance(value, str) or not _IFNAME.fullmatch(value) or value in (".", ".."):
        raise InputError(f"invalid egress interface: '{_shown(value)}': use 1-15 letters, digits or _=+.- "
                         "(e.g. eth1), or '' for every interface but the tunnel")
    if value == "lo":
        raise InputError("invalid egress interface: 'lo': NAT goes out of a network interface; leave it unset "
                         "('') for every interface but the tunnel")
    return value


def _shown(value: object) -> str:
    """A value for an error message, control characters escaped so the message stays one line."""
    return str(value).encode("unicode_escape").decode("ascii") if isinstance(value, str) else repr(value)


def parse_switch(value: object, what: str) -> bool:
    """An exposure switch: a TOML boolean, or exactly one of true/false, yes/no, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str) or not _SWITCH.fullmatch(value):
        raise InputError(f"invalid {what}: '{_shown(value)}': use true or false")
    return parse_bool(value, what)


def parse_dns_clients(value: object) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """DNS_CLIENTS: networks (CIDR, or a bare address for one host) separated by commas; "" for none."""
    items = value if isinstance(value, list) else value.split(",") if isinstance(value, str) else None
    if items is None:
        raise InputError(f"invalid DNS clients: '{_shown(value)}': use CIDRs separated by commas")
    nets = []
    for item in items:
        text = item.strip(" ") if isinstance(item, str) else item
        if text == "" and isinstance(value, str):
            continue
        if not isinstance(text, str) or not _CIDR.fullmatch(text):
            raise InputError(f"invalid DNS clients entry: '{_shown(item)}': use CIDRs such as 192.168.1.0/24 "
                             "separated by commas")
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise InputError(f"invalid DNS clients entry: '{_shown(item)}': use CIDRs such as 192.168.1.0/24 "
                             "separated by commas") from None
    return tuple(dict.fromkeys(nets))


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
_SETTING_PARSERS = {
    "interface": validate_interface_name,
    "listen_port": lambda v: parse_port(v, "listen port"),
    "server_url": parse_server_url,
    "server_port": lambda v: parse_port(v, "server port (SERVERPORT)"),
    "subnet4": lambda v: parse_subnet4(str(v)),
    "subnet6": lambda v: parse_subnet6(str(v)),
    "peer_dns": parse_peer_dns,
    "allowed_ips": lambda v: parse_networks(v if isinstance(v, str) else ",".join(v), "ALLOWEDIPS"),
    "mtu": parse_mtu,
    "log_confs": lambda v: parse_bool(v, "LOG_CONFS"),
    "backend": parse_backend,
    "egress_interface": parse_egress_interface,
    "peer_to_peer": lambda v: parse_switch(v, "peer to peer (BULWARK_PEER_TO_PEER)"),
    "lan_to_peers": lambda v: parse_switch(v, "LAN to peers (BULWARK_LAN_TO_PEERS)"),
    "host_access": lambda v: parse_switch(v, "host access (BULWARK_HOST_ACCESS)"),
    "dns_clients": parse_dns_clients,
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
}


def settings_update(raw: Mapping[str, object]) -> SettingsUpdate:
    """Validate raw setting values (None or absent = not given; "" clears the settings of `_CLEARABLE`)."""
    values: dict[str, Any] = {}
    clear = set()
    for key, value in raw.items():
        if value is None:
            continue
        if key not in _SETTING_PARSERS:
            raise InputError(f"unknown setting: '{key}': known settings are {', '.join(sorted(_SETTING_PARSERS))}")
        if key in _CLEARABLE and value == "":
            clear.add(key)
            continue
        values[key] = _SETTING_PARSERS[key](value)  # type: ignore[arg-type]
    return SettingsUpdate(**values, clear=frozenset(clear))


def parse_peers(value: str) -> tuple[str, ...]:
    """PEERS: a count N gives peer1..peerN; a comma list gives names (digits mean peerN)."""
    text = value.strip()
    if not text:
        return ()
    if text.isdigit() and "," not in text:
        count = int(text)
        if count > 65534:
            raise InputError(f"invalid PEERS: '{value}': at most 65534 numbered peers")
        return tuple(f"peer{i}" for i in range(1, count + 1))
    names = [normalize_peer_name(item) for item in text.split(",") if item.strip()]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise InputError(f"invalid PEERS: '{value}': '{sorted(duplicates)[0]}' is listed twice")
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


def _keepalive_names(value: str) -> tuple[str, ...]:
    return tuple("all" if x.strip() == "all" else normalize_peer_name(x) for x in value.split(",") if x.strip())


def _server_allowed_from_env(environ: Mapping[str, str]) -> dict[str, tuple]:
    prefix = "SERVER_ALLOWEDIPS_PEER_"
    out = {}
    for key, value in environ.items():
        if key.startswith(prefix) and value.strip():
            out[normalize_peer_name(key[len(prefix):])] = parse_networks(value, key)
    return out


def request_from_env(environ: Mapping[str, str]) -> InitRequest:
    """The linuxserver/wireguard variables (and BULWARK_* extras) as an InitRequest."""
    raw = {setting: environ[name] for name, setting in _ENV_NAMES.items() if environ.get(name, "") != ""}
    update = settings_update(raw)
    keepalive = _keepalive_names(environ.get("PERSISTENTKEEPALIVE_PEERS", ""))
    server_allowed = _server_allowed_from_env(environ)
    names = parse_peers(environ.get("PEERS", ""))
    return InitRequest(update=update, peers=peer_requests(names, keepalive, server_allowed), keepalive_peers=keepalive,
                       peer_routes=tuple(sorted(server_allowed.items())))


def request_from_file(path: Path) -> InitRequest:
    """A TOML settings file: the setting names above, plus `peers` (list or count) and `keepalive_peers`."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read settings file: '{path}': {exc.strerror}: check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"invalid settings file: '{path}': {exc}: fix the TOML syntax") from None
    peers_value = data.pop("peers", "")
    keepalive_value = data.pop("keepalive_peers", [])
    if "subnet" in data:
        data["subnet4"] = data.pop("subnet")
    update = settings_update(data)
    peers = parse_peers(",".join(map(str, peers_value)) if isinstance(peers_value, list) else str(peers_value))
    keepalive = _keepalive_names(",".join(keepalive_value) if isinstance(keepalive_value, list) else keepalive_value)
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
