"""The namespace harness itself: it cleans up after failures and never leaves anything behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulwark_vpn.dataplane import link
from bulwark_vpn.keys import PrivateKey
from tests.netns import NETNS_DIR, WG_SOCKET_DIR, Netns, NetnsFactory, veth, wg_quick_conf


@pytest.mark.usefixtures("_netns_session")
def test_cleanup_kills_processes_and_removes_sockets_and_namespaces() -> None:
    factory = NetnsFactory()
    try:
        a, b = factory(), factory()
        veth(a, b, "10.9.0.1/30", "10.9.0.2/30")
        assert a.ping("10.9.0.2")
        iface = factory.ifname()
        link.create_link(a.runner(log=lambda _: None), iface, "userspace")
        sleeper = b.popen(["sleep", "300"])
        a.set_resolv_conf("nameserver 10.9.0.2\n")
        assert b.run(["cat", "/etc/resolv.conf"]).stdout != b"nameserver 10.9.0.2\n"
        assert a.run(["cat", "/etc/resolv.conf"]).stdout == b"nameserver 10.9.0.2\n"
        raise RuntimeError("the test failed")
    except RuntimeError:
        pass
    finally:
        factory.cleanup()
    assert sleeper.wait(5) is not None
    assert not (WG_SOCKET_DIR / f"{iface}.sock").exists()
    assert not (NETNS_DIR / a.name).exists() and not (NETNS_DIR / b.name).exists()
    assert not Path(f"/etc/netns/{a.name}").exists()


def test_wg_quick_peers_come_up_and_go_down(netns_factory: NetnsFactory) -> None:
    a, b = netns_factory(), netns_factory()
    veth(a, b, "10.9.0.1/30", "10.9.0.2/30")
    key_a, key_b = PrivateKey.generate(), PrivateKey.generate()
    conf_a = wg_quick_conf(key_a, ["10.10.0.1/32"], key_b.public_key(), "10.9.0.2:51820", ["10.10.0.2/32"])
    conf_b = wg_quick_conf(key_b, ["10.10.0.2/32"], key_a.public_key(), "10.9.0.1:51820", ["10.10.0.1/32"])
    # wg-quick gives each a random port; pin them so the endpoints above are right.
    conf_a = conf_a.replace("[Peer]", "ListenPort = 51820\n\n[Peer]")
    conf_b = conf_b.replace("[Peer]", "ListenPort = 51820\n\n[Peer]")
    iface_a = netns_factory.wg_quick_up(a, conf_a)
    netns_factory.wg_quick_up(b, conf_b)
    assert a.ping("10.10.0.2", count=2)
    netns_factory.wg_quick_down(iface_a)
    assert not a.run(["ip", "link", "show", iface_a], check=False).returncode == 0
    assert not (WG_SOCKET_DIR / f"{iface_a}.sock").exists()


def test_netns_commands_fail_loudly(netns: Netns) -> None:
    with pytest.raises(AssertionError, match="command failed"):
        netns.run(["false"])
