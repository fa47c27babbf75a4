"""The WireGuard device, driven through the `wg` tool only.

`wg` speaks netlink to the kernel module and the UAPI socket to wireguard-go, so one code path serves
both backends. This module owns reading a device (`wg show IFACE dump`) and changing it (`wg set`,
`wg setconf`, `wg addconf`). Keys always travel through stdin (`/dev/stdin`), never through argv.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.errors import SystemActionError
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Fields of a peer that `set_peer(only=...)` can restrict itself to.
PEER_FIELDS = frozenset({"preshared_key", "allowed_ips", "keepalive", "endpoint"})


@functools.lru_cache(maxsize=1 << 17)
def _network(text: str | IPNetwork) -> IPNetwork:
    # Parsing dominates reading a large dump (~10 us per network); a supervisor re-reads the same
    # networks over and over, so remember them.
    return ipaddress.ip_network(text, strict=False)


def to_networks(values: Iterable[str | IPNetwork]) -> frozenset[IPNetwork]:
    """Networks as the device stores them (host bits masked: 10.0.0.1/24 -> 10.0.0.0/24)."""
    return frozenset(_network(v) for v in values)


@dataclass(frozen=True)
class PeerSpec:
    """A peer as we want it on the device.

    `endpoint=None` means "not managed" (roaming clients): it is never compared nor cleared.
    `keepalive=None` means off; `preshared_key=None` means none.
    """

    public_key: PublicKey
    allowed_ips: frozenset[IPNetwork] = field(default_factory=frozenset)
    preshared_key: PresharedKey | None = None
    keepalive: int | None = None
    endpoint: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_ips", to_networks(self.allowed_ips))
        if self.keepalive == 0:
            object.__setattr__(self, "keepalive", None)


@dataclass(frozen=True)
class DevicePeer:
    """A peer as `wg show dump` reports it."""

    public_key: PublicKey
    preshared_key: PresharedKey | None
    endpoint: str | None
    allowed_ips: frozenset[IPNetwork]
    keepalive: int | None
    latest_handshake: int  # unix seconds, 0 = never
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class DeviceState:
    """A live WireGuard device as `wg show dump` reports it."""

    private_key: PrivateKey | None
    public_key: PublicKey | None
    listen_port: int
    fwmark: int | None
    peers: dict[PublicKey, DevicePeer]


def _maybe(text: str) -> str | None:
    return None if text == "(none)" else text


def _keepalive(text: str) -> int | None:
    return None if text in ("off", "0") else int(text)


def parse_peer_line(fields: list[str]) -> DevicePeer:
    """One peer line of `wg show IFACE dump` (8 tab-separated fields)."""
    pub, psk, endpoint, allowed, handshake, rx, tx, keepalive = fields
    allowed_text = _maybe(allowed)
    return DevicePeer(
        public_key=PublicKey.from_base64(pub),
        preshared_key=PresharedKey.from_base64(psk) if _maybe(psk) else None,
        endpoint=_maybe(endpoint),
        allowed_ips=to_networks(allowed_text.split(",")) if allowed_text else frozenset(),
        keepalive=_keepalive(keepalive),
        latest_handshake=int(handshake),
        rx_bytes=int(rx),
        tx_bytes=int(tx),
    )


def parse_dump(text: str) -> DeviceState:
    """Parse `wg show IFACE dump`: an interface line, then one line per peer."""
    lines = [line for line in text.splitlines() if line]
    if not lines:
        raise SystemActionError("cannot parse 'wg show dump': empty output")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise SystemActionError(f"cannot parse 'wg show dump': interface line has {len(head)} fields, not 4")
    priv, pub, port, fwmark = head
    peers: dict[PublicKey, DevicePeer] = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 8:
            raise SystemActionError(f"cannot parse 'wg show dump': line {number} has {len(fields)} fields, not 8")
        peer = parse_peer_line(fields)
        peers[peer.public_key] = peer
    return DeviceState(
        private_key=PrivateKey.from_base64(priv) if _maybe(priv) else None,
        public_key=PublicKey.from_base64(pub) if _maybe(pub) else None,
        listen_port=int(port),
        fwmark=None if fwmark == "off" else int(fwmark, 0),
        peers=peers,
    )


def read_device(runner: Runner, iface: str) -> DeviceState | None:
    """The live state of `iface`, or None if there is no such WireGuard interface."""
    result = runner.run(["wg", "show", iface, "dump"], check=False, quiet=True)
    if result.returncode == 0:
        return parse_dump(result.stdout.decode())
    # The error text depends on the backend ("No such device", "Protocol not supported" when the
    # kernel has no module): ask `ip` whether the link exists instead of guessing from the text.
    exists = runner.run(["ip", "link", "show", "dev", iface], check=False, quiet=True).returncode == 0
    if not exists:
        return None
    raise runner.failure(["wg", "show", iface, "dump"], result)


def set_interface(
    runner: Runner, iface: str, private_key: PrivateKey | None = None, listen_port: int | None = None
) -> None:
    """Set the device's private key and/or listen port (the key goes through stdin)."""
    argv = ["wg", "set", iface]
    if listen_port is not None:
        argv += ["listen-port", str(listen_port)]
    key_input = None
    if private_key is not None:
        argv += ["private-key", "/dev/stdin"]
        key_input = private_key.to_base64().encode() + b"\n"
    if len(argv) == 3:
        return
    runner.run(argv, input=key_input)


def peer_args(peer: PeerSpec, only: Collection[str] | None = None) -> tuple[list[str], bytes | None]:
    """The `wg set` arguments for one peer and the stdin they need (its preshared key, if any)."""
    wanted = PEER_FIELDS if only is None else frozenset(only)
    args = ["peer", str(peer.public_key)]
    stdin = None
    if "preshared_key" in wanted:
        if peer.preshared_key is None:
            args += ["preshared-key", "/dev/null"]
        else:
            args += ["preshared-key", "/dev/stdin"]
            stdin = peer.preshared_key.to_base64().encode() + b"\n"
    if "keepalive" in wanted:
        args += ["persistent-keepalive", str(peer.keepalive) if peer.keepalive else "off"]
    if "endpoint" in wanted and peer.endpoint is not None:
        args += ["endpoint", peer.endpoint]
    if "allowed_ips" in wanted:
        args += ["allowed-ips", ",".join(sorted(str(n) for n in peer.allowed_ips))]
    return args, stdin


def set_peer(runner: Runner, iface: str, peer: PeerSpec, only: Collection[str] | None = None) -> None:
    """Add or update one peer: allowed-ips replaced exactly, PSK cleared when None, keepalive off when None.

    `only` restricts the command to those fields (see `PEER_FIELDS`); the others are left untouched.
    """
    args, stdin = peer_args(peer, only)
    runner.run(["wg", "set", iface, *args], input=stdin)


def remove_peer(runner: Runner, iface: str, public_key: PublicKey) -> None:
    """Remove one peer."""
    runner.run(["wg", "set", iface, "peer", str(public_key), "remove"])


def remove_peers(runner: Runner, iface: str, public_keys: Iterable[PublicKey], chunk: int = 500) -> None:
    """Remove many peers, `chunk` per `wg set` command."""
    keys = list(public_keys)
    for start in range(0, len(keys), chunk):
        argv = ["wg", "set", iface]
        for key in keys[start : start + chunk]:
            argv += ["peer", str(key), "remove"]
        runner.run(argv)


def render_conf(
    peers: Iterable[PeerSpec], private_key: PrivateKey | None = None, listen_port: int | None = None
) -> str:
    """A `wg setconf`/`wg addconf` file (not wg-quick's: no Address/DNS lines). Contains secrets."""
    lines = ["[Interface]"]
    if private_key is not None:
        lines.append(f"PrivateKey = {private_key.to_base64()}")
    if listen_port is not None:
        lines.append(f"ListenPort = {listen_port}")
    for peer in peers:
        lines += ["", "[Peer]", f"PublicKey = {peer.public_key}"]
        if peer.preshared_key is not None:
            lines.append(f"PresharedKey = {peer.preshared_key.to_base64()}")
        if peer.allowed_ips:
            lines.append("AllowedIPs = " + ", ".join(sorted(str(n) for n in peer.allowed_ips)))
        if peer.endpoint is not None:
            lines.append(f"Endpoint = {peer.endpoint}")
        if peer.keepalive:
            lines.append(f"PersistentKeepalive = {peer.keepalive}")
    return "\n".join(lines) + "\n"


def setconf(runner: Runner, iface: str, text: str) -> None:
    """Replace the whole device configuration (peers not in `text` are removed), via stdin."""
    runner.run(["wg", "setconf", iface, "/dev/stdin"], input=text.encode())


def addconf(runner: Runner, iface: str, text: str) -> None:
    """Add or update the peers in `text` without touching the others, via stdin."""
    runner.run(["wg", "addconf", iface, "/dev/stdin"], input=text.encode())
