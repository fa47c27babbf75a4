"""Scale: a wireguard-go device with 10,000 peers. Adding one peer must run exactly one `wg set`.

Timings are printed (run with `-s` to see them) and recorded as test properties.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable

import pytest

from bulwark_vpn.dataplane import wg
from bulwark_vpn.dataplane.apply import AddPeer, DesiredDevice, apply_changes, apply_device, diff_device
from bulwark_vpn.dataplane.link import create_link
from bulwark_vpn.dataplane.wg import PeerSpec
from bulwark_vpn.keys import PrivateKey, PublicKey
from tests.netns import Netns, NetnsFactory

PEERS = 10_000


def many_peers(count: int, offset: int = 0) -> list[PeerSpec]:
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    return [
        PeerSpec(
            PublicKey(os.urandom(32)),
            frozenset({ipaddress.ip_network(f"{ipaddress.IPv4Address(base + offset + i + 2)}/32")}),
            keepalive=25 if i % 2 else None,
        )
        for i in range(count)
    ]


def timed(label: str, results: dict[str, float], action: Callable[[], object]) -> object:
    start = time.perf_counter()
    value = action()
    results[label] = time.perf_counter() - start
    return value


@pytest.mark.timeout(600)
def test_one_peer_on_a_10k_peer_wireguard_go_device(
    netns_factory: NetnsFactory, netns: Netns, record_property: Callable[[str, object], None]
) -> None:
    lines: list[str] = []
    runner, iface = netns.runner(log=lines.append), netns_factory.ifname("sc")
    create_link(runner, iface, "userspace")
    key = PrivateKey.generate()
    peers = many_peers(PEERS)
    desired = DesiredDevice(key, 51820, {p.public_key: p for p in peers})
    results: dict[str, float] = {}

    timed("setconf 10k peers", results, lambda: wg.setconf(runner, iface, wg.render_conf(peers, key, 51820)))
    live = timed("read_device (wg show dump)", results, lambda: wg.read_device(runner, iface))
    assert live is not None and len(live.peers) == PEERS
    assert timed("diff_device, no change", results, lambda: diff_device(desired, live)) == []

    lines.clear()
    timed("apply_device, no change", results, lambda: apply_device(runner, iface, desired))
    assert lines == []

    (extra,) = many_peers(1, offset=PEERS + 10)
    desired.peers[extra.public_key] = extra
    changes = timed("apply_device, add 1 peer", results, lambda: apply_device(runner, iface, desired))
    assert changes == [AddPeer(extra)]
    assert len(lines) == 1 and lines[0].endswith(f"allowed-ips {next(iter(extra.allowed_ips))}")

    # A caller that knows the live state (the supervisor) skips the read.
    (other,) = many_peers(1, offset=PEERS + 20)
    desired.peers[other.public_key] = other
    known = wg.read_device(runner, iface)
    changes = timed(
        "diff+apply with known live, add 1", results, lambda: apply_changes(runner, iface, diff_device(desired, known))
    )
    state = wg.read_device(runner, iface)
    assert state is not None and len(state.peers) == PEERS + 2

    for label, seconds in results.items():
        print(f"{label:40s} {seconds * 1000:9.1f} ms")  # noqa: T201 - the measurement is the output
        record_property(label, round(seconds, 4))
    assert results["apply_device, add 1 peer"] < 5.0
