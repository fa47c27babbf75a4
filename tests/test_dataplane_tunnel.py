"""A real tunnel: a wireguard-go server brought up by Bulwark's data plane, real wg-quick clients,
in network namespaces. Peers are added, updated and removed one at a time without disturbing others.
"""

from __future__ import annotations

import ipaddress

import pytest

from bulwark_vpn.dataplane import wg
from bulwark_vpn.dataplane.apply import AddPeer, RemovePeer, UpdatePeer, apply_device, diff_device
from bulwark_vpn.dataplane.wg import PeerSpec
from bulwark_vpn.errors import NotFoundError
from bulwark_vpn.keys import PresharedKey, PrivateKey
from tests.netns import NetnsFactory, WgClient, WgServer, add_wg_client, start_wg_server


class Recorder:
    """Collects the `[#] ...` lines a Runner logs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(netns_factory: NetnsFactory, recorder: Recorder) -> WgServer:
    return start_wg_server(netns_factory, netns_factory(), log=recorder)


def handshake(server: WgServer, client: WgClient) -> int:
    state = wg.read_device(server.runner, server.iface)
    assert state is not None
    return state.peers[client.key.public_key()].latest_handshake


def test_bring_up_and_ping_through_the_tunnel(netns_factory: NetnsFactory, server: WgServer) -> None:
    client = add_wg_client(netns_factory, server, 2, preshared_key=PresharedKey.generate())
    apply_device(server.runner, server.iface, server.desired([client.spec]))

    assert client.ns.ping("10.77.0.1", count=2)
    assert client.ns.ping("fd77::1")
    assert server.ns.ping(client.address4)
    assert handshake(server, client) > 0

    live = wg.read_device(server.runner, server.iface)
    assert live is not None and live.public_key == server.key.public_key()
    assert diff_device(server.desired([client.spec]), live) == []


def test_reapply_of_same_state_runs_no_command(
    netns_factory: NetnsFactory, server: WgServer, recorder: Recorder
) -> None:
    client = add_wg_client(netns_factory, server, 2)
    apply_device(server.runner, server.iface, server.desired([client.spec]))
    recorder.take()
    assert apply_device(server.runner, server.iface, server.desired([client.spec])) == []
    assert recorder.take() == []


def test_add_update_remove_touch_only_that_peer(
    netns_factory: NetnsFactory, server: WgServer, recorder: Recorder
) -> None:
    a = add_wg_client(netns_factory, server, 2)
    b = add_wg_client(netns_factory, server, 3)
    apply_device(server.runner, server.iface, server.desired([a.spec]))
    assert a.ns.ping("10.77.0.1")
    first_handshake = handshake(server, a)
    recorder.take()

    # Add b: one `wg set` naming b only.
    changes = apply_device(server.runner, server.iface, server.desired([a.spec, b.spec]))
    assert changes == [AddPeer(b.spec)]
    (line,) = recorder.take()
    assert line.endswith(
        f"wg set {server.iface} peer {b.key.public_key()} preshared-key /dev/null "
        f"persistent-keepalive off allowed-ips 10.77.0.3/32,fd77::3/128"
    )
    assert b.ns.ping("10.77.0.1") and a.ns.ping("10.77.0.1")

    # Update b (one more network, a keepalive): one `wg set` with just those fields.
    b_updated = PeerSpec(
        b.spec.public_key, b.spec.allowed_ips | {ipaddress.ip_network("192.168.50.0/24")}, keepalive=15
    )
    (change,) = apply_device(server.runner, server.iface, server.desired([a.spec, b_updated]))
    assert isinstance(change, UpdatePeer) and change.fields == {"allowed_ips", "keepalive"}
    (line,) = recorder.take()
    assert f"peer {b.key.public_key()} persistent-keepalive 15 allowed-ips " in line
    assert str(a.key.public_key()) not in line
    live = wg.read_device(server.runner, server.iface)
    assert live is not None
    assert live.peers[b.key.public_key()].allowed_ips == b_updated.allowed_ips
    assert live.peers[b.key.public_key()].keepalive == 15

    # Remove b: one `wg set ... remove`; b loses the tunnel, a keeps its session.
    assert apply_device(server.runner, server.iface, server.desired([a.spec])) == [RemovePeer(b.spec.public_key)]
    (line,) = recorder.take()
    assert line.endswith(f"peer {b.key.public_key()} remove")
    assert not b.ns.ping("10.77.0.1", timeout=1)

    assert a.ns.ping("10.77.0.1")
    assert handshake(server, a) == first_handshake, "a's session was renegotiated"


def test_psk_set_and_cleared_on_a_live_peer(netns_factory: NetnsFactory, server: WgServer) -> None:
    client = add_wg_client(netns_factory, server, 2)
    apply_device(server.runner, server.iface, server.desired([client.spec]))
    with_psk = PeerSpec(client.spec.public_key, client.spec.allowed_ips, PresharedKey.generate())
    (change,) = apply_device(server.runner, server.iface, server.desired([with_psk]))
    assert isinstance(change, UpdatePeer) and change.fields == {"preshared_key"}
    live = wg.read_device(server.runner, server.iface)
    assert live is not None and live.peers[client.spec.public_key].preshared_key == with_psk.preshared_key
    apply_device(server.runner, server.iface, server.desired([client.spec]))
    live = wg.read_device(server.runner, server.iface)
    assert live is not None and live.peers[client.spec.public_key].preshared_key is None


def test_dry_run_reports_changes_and_changes_nothing(
    netns_factory: NetnsFactory, server: WgServer, recorder: Recorder
) -> None:
    client = add_wg_client(netns_factory, server, 2)
    recorder.take()
    changes = apply_device(server.runner, server.iface, server.desired([client.spec]), dry_run=True)
    assert [c.describe() for c in changes] == [
        f"add peer {client.spec.public_key}: allowed-ips 10.77.0.2/32, fd77::2/128"
    ]
    assert recorder.take() == []
    live = wg.read_device(server.runner, server.iface)
    assert live is not None and live.peers == {}


def test_read_and_apply_on_a_missing_interface(netns_factory: NetnsFactory, server: WgServer) -> None:
    assert wg.read_device(server.runner, "bwnosuch0") is None
    with pytest.raises(NotFoundError, match="'bwnosuch0' does not exist"):
        apply_device(server.runner, "bwnosuch0", server.desired([]))


def test_setconf_loads_many_peers_and_replaces_the_rest(server: WgServer) -> None:
    peers = [
        PeerSpec(PrivateKey.generate().public_key(), frozenset({ipaddress.ip_network(f"10.78.{i // 250}.{i}/32")}))
        for i in range(1, 250)
    ]
    wg.setconf(server.runner, server.iface, wg.render_conf(peers, server.key, server.port))
    live = wg.read_device(server.runner, server.iface)
    assert live is not None and len(live.peers) == 249
    assert diff_device(server.desired(peers), live) == []
    wg.setconf(server.runner, server.iface, wg.render_conf(peers[:10], server.key, server.port))
    live = wg.read_device(server.runner, server.iface)
    assert live is not None and set(live.peers) == {p.public_key for p in peers[:10]}


def test_bulk_add_uses_one_addconf_and_bulk_remove_one_wg_set(server: WgServer, recorder: Recorder) -> None:
    peers = [
        PeerSpec(PrivateKey.generate().public_key(), frozenset({ipaddress.ip_network(f"10.79.0.{i}/32")}))
        for i in range(1, 51)
    ]
    recorder.take()
    assert len(apply_device(server.runner, server.iface, server.desired(peers))) == 50
    assert [line.split(" wg ", 1)[1] for line in recorder.take()] == [f"addconf {server.iface} /dev/stdin"]
    live = wg.read_device(server.runner, server.iface)
    assert live is not None and diff_device(server.desired(peers), live) == []

    assert len(apply_device(server.runner, server.iface, server.desired(peers[:10]))) == 40
    (line,) = recorder.take()
    assert line.count(" remove") == 40
    live = wg.read_device(server.runner, server.iface)
    assert live is not None and set(live.peers) == {p.public_key for p in peers[:10]}


@pytest.mark.parametrize("endpoint", ["192.0.2.1:51820", "[2001:db8::1]:51821"])
def test_configured_endpoints_round_trip(server: WgServer, endpoint: str) -> None:
    site = PeerSpec(
        PrivateKey.generate().public_key(),
        frozenset({ipaddress.ip_network("10.80.0.0/24")}),
        keepalive=25,
        endpoint=endpoint,
    )
    apply_device(server.runner, server.iface, server.desired([site]))
    live = wg.read_device(server.runner, server.iface)
    assert live is not None and live.peers[site.public_key].endpoint == endpoint
    assert diff_device(server.desired([site]), live) == []
