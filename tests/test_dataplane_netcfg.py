"""Addresses, MTU, link state and routes on a real wireguard-go link in a namespace; every change undone."""

from __future__ import annotations

import ipaddress

import pytest

from bulwark_vpn.dataplane import link, netcfg
from bulwark_vpn.dataplane.runner import RollbackStack, Runner
from bulwark_vpn.errors import SystemActionError
from tests.netns import Netns, NetnsFactory

ADDR4 = ipaddress.ip_interface("10.88.0.1/24")
ADDR6 = ipaddress.ip_interface("fd88::1/64")
EXTRA = [ipaddress.ip_network("192.168.200.0/24"), ipaddress.ip_network("fd99::/64")]


@pytest.fixture
def wg_link(netns_factory: NetnsFactory, netns: Netns) -> tuple[Runner, str]:
    runner, iface = netns.runner(log=lambda _: None), netns_factory.ifname()
    link.create_link(runner, iface, "userspace")
    return runner, iface


def test_addresses_are_added_once_and_removed(wg_link: tuple[Runner, str], netns: Netns) -> None:
    runner, iface = wg_link
    undos = netcfg.ensure_addresses(runner, iface, [ADDR4, ADDR6])
    assert netcfg.addresses_on(runner, iface) == {ADDR4, ADDR6}
    assert netcfg.ensure_addresses(runner, iface, [ADDR4, ADDR6]) == []
    shown = netns.ip("-6", "address", "show", "dev", iface).stdout.decode()
    assert "tentative" not in shown, "IPv6 on the tunnel must skip DAD"
    for undo in reversed(undos):
        undo()
    assert netcfg.addresses_on(runner, iface) == set()


def test_up_mtu_and_routes_are_undone_when_bring_up_fails(wg_link: tuple[Runner, str]) -> None:
    runner, iface = wg_link
    mtu_before = netcfg.get_mtu(runner, iface)
    with pytest.raises(RuntimeError), RollbackStack(log=lambda _: None) as stack:
        stack.push(netcfg.set_mtu(runner, iface, 1380))
        stack.push(netcfg.set_up(runner, iface))
        stack.push(netcfg.ensure_routes(runner, iface, EXTRA))
        assert netcfg.get_mtu(runner, iface) == 1380 and netcfg.is_up(runner, iface)
        assert set(EXTRA) <= netcfg.routes_on(runner, iface)
        assert netcfg.ensure_routes(runner, iface, EXTRA) == []
        raise RuntimeError("a later step failed")
    assert netcfg.get_mtu(runner, iface) == mtu_before
    assert not netcfg.is_up(runner, iface)
    assert netcfg.routes_on(runner, iface) == set()


def test_route_undo_and_errors(wg_link: tuple[Runner, str]) -> None:
    runner, iface = wg_link
    netcfg.set_up(runner, iface)
    undo = netcfg.add_route(runner, iface, EXTRA[0])
    with pytest.raises(SystemActionError, match="File exists"):
        netcfg.add_route(runner, iface, EXTRA[0])
    undo()
    assert EXTRA[0] not in netcfg.routes_on(runner, iface)
    with pytest.raises(SystemActionError, match="command failed: 'ip link set up dev nosuch0'"):
        netcfg.set_up(runner, "nosuch0")
