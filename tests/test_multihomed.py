"""A multi-homed gateway for real: the private network sits on a SECOND interface of the server, while the
default route (and the lab's VPC) is on another. The host on that network has no route back to the tunnel, as
on a home LAN whose router is not the gateway: only NAT out of that interface lets it answer."""

from __future__ import annotations

import pytest

from tests.gwlab import Lab
from tests.netns import Netns, veth
from tests.test_doctor_support import doctor, egress_veth, run_fix

pytestmark = pytest.mark.netns

LAN2_SERVER, LAN2_HOST = "192.168.50.1", "192.168.50.10"
ADVERTISED = "10.13.13.0/24, 192.168.50.0/24"
# Answers each TCP connection with the source address it sees.
ECHO = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('{LAN2_HOST}', 8080)); s.listen()\n"
    "while True:\n"
    "    c, a = s.accept(); c.sendall(a[0].encode()); c.close()\n"
)
FETCH = ["python3", "-c", f"import socket; s=socket.create_connection(('{LAN2_HOST}', 8080), 3); "
                          "print(s.recv(64).decode())"]


def second_lan(lab: Lab) -> tuple[Netns, str]:
    """A host on a second interface of the server (eth1-like); return it and the server's end of the veth."""
    host = lab.factory()
    server_end, _ = veth(lab.server, host, f"{LAN2_SERVER}/24", f"{LAN2_HOST}/24")
    host.python(ECHO)
    return host, server_end


def source_seen(lab: Lab, client: Netns) -> str:
    lab.wait_for(lambda: client.run(FETCH, check=False).returncode == 0, 5)
    return client.run(FETCH).stdout.decode().strip()


def test_a_network_on_a_second_interface_is_reached_through_nat(lab: Lab):
    second_lan(lab)
    lab.init("--peers", "alice", "--allowed-ips", ADVERTISED)
    lab.up()
    client, _ = lab.connect("alice")  # its config as generated: AllowedIPs = the advertised networks
    assert client.ping(LAN2_HOST, count=2)
    assert source_seen(lab, client) == LAN2_SERVER  # masqueraded out of the second interface


def test_doctor_names_the_advertised_network_that_has_no_nat_and_the_one_that_has_no_route(lab: Lab):
    lan, second = second_lan(lab)
    lab.init("--peers", "alice", "--allowed-ips", ADVERTISED)
    lab.up()
    client, _ = lab.connect("alice")
    assert client.ping(LAN2_HOST)
    check = doctor(lab)["advertised_networks"]
    assert check["status"] == "ok" and f"192.168.50.0/24 via '{second}' (NAT)" in check["evidence"]

    # NAT narrowed to the default route's interface: what every gateway did before. The LAN host cannot answer.
    first = egress_veth(lab)
    lab.bulwark("init", "--egress-interface", first)
    lab.wait_for(lambda: not client.ping(LAN2_HOST, timeout=1), 5)
    check = doctor(lab)["advertised_networks"]
    assert check["status"] == "warn"
    assert f"not masqueraded (NAT out of '{first}' only): 192.168.50.0/24 via '{second}'" in check["evidence"]
    assert "ip route add 10.13.13.0/24 via 192.168.50.1" in check["fix"]
    # The first way out the doctor names: a return route on that network (here the host is its own router).
    run_fix(lan, check["fix"].split("on the router of 192.168.50.0/24: ")[1].split(";")[0])
    assert client.ping(LAN2_HOST)
    assert source_seen(lab, client) == "10.13.13.2"  # not masqueraded: the host sees the peer itself
    lan.ip("route", "del", "10.13.13.0/24")
    # The other: NAT out of every interface again.
    lab.bulwark("init", "--egress-interface", "")
    lab.wait_for(lambda: client.ping(LAN2_HOST, timeout=1), 5)
    assert source_seen(lab, client) == LAN2_SERVER
    assert doctor(lab).status("advertised_networks") == "ok"


def test_doctor_fails_an_advertised_network_without_a_route_and_one_behind_a_closed_peer(lab: Lab):
    lab.server.ip("route", "add", "unreachable", "172.20.0.0/16")
    lab.init("--peers", "alice", "--allowed-ips", "10.13.13.0/24, 172.20.0.0/16, 192.168.60.0/24")
    lab.bulwark("peer", "add", "site", "--server-allowed-ips", "192.168.60.0/24")
    lab.up()
    report = doctor(lab)
    check = report["advertised_networks"]
    assert report.rc == 1 and check["status"] == "fail"
    assert "clients send 172.20.0.0/16 into the tunnel, but this host has no route to it" in check["evidence"]
    assert "192.168.60.0/24" not in check["evidence"]  # routed to its peer: not a missing route

    lab.server.ip("route", "del", "unreachable", "172.20.0.0/16")
    check = doctor(lab)["advertised_networks"]  # now the default route carries it (and NAT)
    assert check["status"] == "warn"
    assert "behind a peer, reached through the tunnel, while peer-to-peer is closed: 192.168.60.0/24 (behind " \
           "peer 'site')" in check["evidence"] and "--peer-to-peer" in check["fix"]
    lab.bulwark("init", "--peer-to-peer")
    check = doctor(lab)["advertised_networks"]
    assert check["status"] == "ok" and "192.168.60.0/24 behind peer 'site'" in check["evidence"]
    assert "172.20.0.0/16 via" in check["evidence"]
