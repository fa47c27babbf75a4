"""Desired-state apply for a WireGuard device: diff against the live device, change only what differs.

This module owns `DesiredDevice`, the `Change` types (with a human `describe()` for `--dry-run`,
public keys only, never secrets), `diff_device` (pure), `apply_changes` and `apply_device`, and the
rule that one network belongs to one peer (`check_allowed_ips_unique`, `drop_conflicting_peers`).
Applying a desired state equal to the live one runs no command; adding one peer runs one `wg set`.
Many new peers at once (first bring-up) go in one `wg addconf` through stdin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from bulwark_vpn.dataplane import wg
from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.dataplane.wg import DevicePeer, DeviceState, PeerSpec
from bulwark_vpn.errors import ConflictError, NotFoundError
from bulwark_vpn.keys import PrivateKey, PublicKey

# Above this many new peers, one `wg addconf` beats a `wg set` per peer (3-4 ms each on 10k peers).
BULK_ADD_THRESHOLD = 16


@dataclass(frozen=True)
class DesiredDevice:
    """What the device should look like. `listen_port=None` leaves the port as it is."""

    private_key: PrivateKey
    listen_port: int | None
    peers: dict[PublicKey, PeerSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class SetInterface:
    """Change the device's private key and/or listen port (None = unchanged)."""

    private_key: PrivateKey | None = None
    listen_port: int | None = None

    def describe(self) -> str:
        parts = []
        if self.private_key is not None:
            parts.append("private key (changed)")
        if self.listen_port is not None:
            parts.append(f"listen port {self.listen_port}")
        return "set interface: " + ", ".join(parts)


def _describe_peer(peer: PeerSpec) -> str:
    nets = ", ".join(sorted(str(n) for n in peer.allowed_ips)) or "(none)"
    parts = [f"allowed-ips {nets}"]
    if peer.preshared_key is not None:
        parts.append("preshared key")
    if peer.keepalive:
        parts.append(f"keepalive {peer.keepalive}")
    if peer.endpoint is not None:
        parts.append(f"endpoint {peer.endpoint}")
    return ", ".join(parts)


@dataclass(frozen=True)
class AddPeer:
    peer: PeerSpec

    def describe(self) -> str:
        return f"add peer {self.peer.public_key}: {_describe_peer(self.peer)}"


@dataclass(frozen=True)
class UpdatePeer:
    """Update the fields named in `fields` (a subset of `wg.PEER_FIELDS`) to the values in `peer`."""

    peer: PeerSpec
    fields: frozenset[str]
    # The live peer before the change: only for describe(), not part of what the change is.
    before: DevicePeer | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        return f"update peer {self.peer.public_key}: " + "; ".join(
            _describe_field(name, self.peer, self.before) for name in sorted(self.fields)
        )


def _describe_field(name: str, peer: PeerSpec, before: DevicePeer | None) -> str:
    if name == "preshared_key":
        return "preshared key " + ("removed" if peer.preshared_key is None else "(changed)")
    if name == "allowed_ips":
        old = ", ".join(sorted(str(n) for n in before.allowed_ips)) if before else "?"
        new = ", ".join(sorted(str(n) for n in peer.allowed_ips))
        return f"allowed-ips {old or '(none)'} -> {new or '(none)'}"
    if name == "keepalive":
        old_k = (before.keepalive or "off") if before else "?"
        return f"keepalive {old_k} -> {peer.keepalive or 'off'}"
    old_e = (before.endpoint or "(none)") if before else "?"
    return f"endpoint {old_e} -> {peer.endpoint}"


@dataclass(frozen=True)
class RemovePeer:
    public_key: PublicKey

    def describe(self) -> str:
        return f"remove peer {self.public_key}"


Change = SetInterface | AddPeer | UpdatePeer | RemovePeer


def _normalize_endpoint(endpoint: str) -> str | None:
    """`host:port` as wg prints it for an IP literal; None for a hostname (not comparable)."""
    host, sep, port = endpoint.rpartition(":")
    if not sep:
        return None
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{shown}:{port}"


def _endpoint_differs(desired: str | None, live: str | None) -> bool:
    if desired is None:
        return False  # not managed: a roaming client's endpoint is learned, not configured
    wanted = _normalize_endpoint(desired)
    if wanted is None:
        # A hostname: the live endpoint is its resolution; only a missing endpoint is a difference.
        return live is None
    return wanted != live


def peer_differences(desired: PeerSpec, live: DevicePeer) -> frozenset[str]:
    """The names of the fields in which the live peer differs from the desired one."""
    fields = set()
    if desired.allowed_ips != live.allowed_ips:
        fields.add("allowed_ips")
    if desired.preshared_key != live.preshared_key:
        fields.add("preshared_key")
    if (desired.keepalive or None) != (live.keepalive or None):
        fields.add("keepalive")
    if _endpoint_differs(desired.endpoint, live.endpoint):
        fields.add("endpoint")
    return frozenset(fields)


@dataclass(frozen=True)
class Conflict:
    """A peer left out of a device because `network` already belongs to an earlier peer, `owner`."""

    public_key: PublicKey
    network: wg.IPNetwork
    owner: PublicKey


def drop_conflicting_peers(peers: dict[PublicKey, PeerSpec]) -> tuple[dict[PublicKey, PeerSpec], list[Conflict]]:
    """The peers without each later one that claims a network an earlier (kept) peer has, and why.

    On a device the last peer given a network silently takes it from the other; keeping the first
    owner and leaving the newcomer out keeps working peers working.
    """
    owner: dict[wg.IPNetwork, PublicKey] = {}
    kept: dict[PublicKey, PeerSpec] = {}
    conflicts: list[Conflict] = []
    for key, peer in peers.items():
        clash = next((net for net in sorted(peer.allowed_ips, key=str) if net in owner), None)
        if clash is not None:
            conflicts.append(Conflict(key, clash, owner[clash]))
            continue
        kept[key] = peer
        owner.update(dict.fromkeys(peer.allowed_ips, key))
    return kept, conflicts


def check_allowed_ips_unique(peers: dict[PublicKey, PeerSpec]) -> None:
    """Raise ConflictError if two peers claim the same network (the device would silently move it)."""
    wrong = next((peer for key, peer in peers.items() if key != peer.public_key), None)
    if wrong is not None:
        raise ConflictError(f"peer stored under the wrong key: '{wrong.public_key}'")
    _, conflicts = drop_conflicting_peers(peers)
    if conflicts:
        first = conflicts[0]
        raise ConflictError(
            f"allowed IP '{first.network}' is given to two peers: '{first.owner}' and '{first.public_key}'"
        )


def _interface_change(desired: DesiredDevice, live: DeviceState | None) -> SetInterface | None:
    key_differs = live is None or live.private_key is None or live.private_key != desired.private_key
    port_differs = desired.listen_port is not None and (live is None or live.listen_port != desired.listen_port)
    if not (key_differs or port_differs):
        return None
    return SetInterface(
        private_key=desired.private_key if key_differs else None,
        listen_port=desired.listen_port if port_differs else None,
    )


def diff_device(desired: DesiredDevice, live: DeviceState | None) -> list[Change]:
    """The changes that turn `live` (None = an empty device) into `desired`.

    Order: interface, removals, updates, additions. Pure: no command is run.
    """
    check_allowed_ips_unique(desired.peers)
    changes: list[Change] = []
    interface = _interface_change(desired, live)
    if interface is not None:
        changes.append(interface)
    live_peers = live.peers if live is not None else {}
    changes += [RemovePeer(key) for key in live_peers if key not in desired.peers]
    additions: list[Change] = []
    for key, peer in desired.peers.items():
        current = live_peers.get(key)
        if current is None:
            additions.append(AddPeer(peer))
            continue
        fields = peer_differences(peer, current)
        if fields:
            changes.append(UpdatePeer(peer, fields, current))
    return changes + additions


def apply_changes(runner: Runner, iface: str, changes: Sequence[Change]) -> None:
    """Run the commands for `changes`, in order; nothing at all when `changes` is empty."""
    removals = [c.public_key for c in changes if isinstance(c, RemovePeer)]
    additions = [c.peer for c in changes if isinstance(c, AddPeer)]
    for change in changes:
        if isinstance(change, SetInterface):
            wg.set_interface(runner, iface, change.private_key, change.listen_port)
    if len(removals) == 1:
        wg.remove_peer(runner, iface, removals[0])
    elif removals:
        wg.remove_peers(runner, iface, removals)
    for change in changes:
        if isinstance(change, UpdatePeer):
            wg.set_peer(runner, iface, change.peer, only=change.fields)
    if len(additions) > BULK_ADD_THRESHOLD:
        wg.addconf(runner, iface, wg.render_conf(additions))
    else:
        for peer in additions:
            wg.set_peer(runner, iface, peer)


def apply_device(
    runner: Runner, iface: str, desired: DesiredDevice, dry_run: bool = False, live: DeviceState | None = None
) -> list[Change]:
    """Read the device (unless `live` is given), diff, and apply; return the changes made (or to make).

    With `dry_run=True` nothing is changed. Raises NotFoundError if the interface does not exist.
    """
    if live is None:
        live = wg.read_device(runner, iface)
    if live is None and not dry_run:
        raise NotFoundError(f"interface '{iface}' does not exist: create it first (bulwark up)")
    changes = diff_device(desired, live)
    if not dry_run and changes:
        apply_changes(runner, iface, changes)
    return changes
