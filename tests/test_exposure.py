"""Closed by default, opened by named settings, for real: `bulwark up` in namespaces, wg-quick clients, a VPC host
and a client on the server's public side. Each default is shown closed, then opened live by its setting (`bulwark
init --...` while the gateway runs), with `status` and `doctor` saying so; and traffic that does not involve the
tunnel is the same with the gateway up as without it."""

from __future__ import annotations

import json

import pytest

from bulwark_vpn.dataplane import firewall
from tests.gwlab import RUN_DIR, SERVER_WAN, VPC_DNS, VPC_GATEWAY, VPC_HOST, Lab
from tests.netns import Netns
from tests.probes import reaches, serve
from tests.test_doctor_support import doctor, supervisor_stopped

pytestmark = pytest.mark.netns

TUNNEL = "10.13.13.0/24"
TUNNEL_AND_VPC = "10.13.13.0/24, 10.0.1.0/24"
SERVER = "10.13.13.1"


def addresses(lab: Lab) -> dict[str, str]:
    return {p["name"]: p["address4"] for p in json.loads(lab.bulwark("peer", "list", "--json").stdout)["peers"]}


def vpc_knows_the_tunnel(lab: Lab) -> None:
    """A VPC host with a route to the tunnel subnet (as a VPC route table pointing at the gateway would)."""
    lab.vpc.ip("route", "add", TUNNEL, "via", VPC_GATEWAY)


def exposure(lab: Lab) -> dict:
    return lab.status()["exposure"]


def dig(ns: Netns, server: str, *args: str) -> str:
    """The A record of db.vpc.internal as `ns` gets it from `server` ("" when nothing answers)."""
    command = ["dig", "+short", "+time=1", "+tries=2", f"@{server}", "db.vpc.internal", *args]
    out = ns.run(command, check=False, timeout=30).stdout.decode()
    return "\n".join(line for line in out.splitlines() if line and not line.startswith(";;"))  # not its errors


def test_peers_cannot_reach_each_other_unless_peer_to_peer(lab: Lab):
    lab.init("--peers", "alice,bob")
    lab.up()
    alice, _ = lab.connect("alice", allowed_ips=TUNNEL)
    bob, _ = lab.connect("bob", allowed_ips=TUNNEL)
    bob_address = addresses(lab)["bob"]
    serve(bob, bob_address, 9000)
    assert alice.ping(SERVER) and bob.ping(SERVER)
    assert not alice.ping(bob_address, count=2, timeout=1)
    assert not reaches(alice, bob_address, 9000)
    assert exposure(lab)["peer_to_peer"] is False
    assert doctor(lab).status("exposure") == "ok"

    lab.bulwark("init", "--peer-to-peer")  # applied live by the supervisor
    lab.wait_for(lambda: alice.ping(bob_address, timeout=1), 5)
    assert reaches(alice, bob_address, 9000)
    assert exposure(lab)["peer_to_peer"] is True
    assert "peer to peer: open" in lab.bulwark("status").stdout
    check = doctor(lab)["exposure"]
    assert check["status"] == "warn" and "peer-to-peer (peers reach each other)" in check["evidence"]
    assert "the live rules agree" in check["evidence"] and "--no-peer-to-peer" in check["fix"]

    lab.bulwark("init", "--no-peer-to-peer")  # closing ends the flows it had let through, too
    lab.wait_for(lambda: not alice.ping(bob_address, timeout=1), 5)
    assert not reaches(alice, bob_address, 9000)


def test_vpc_hosts_cannot_open_connections_to_peers_unless_lan_to_peers_but_replies_pass(lab: Lab):
    serve(lab.vpc, VPC_HOST, 8080)
    vpc_knows_the_tunnel(lab)
    lab.init("--peers", "alice")
    lab.up()
    alice, _ = lab.connect("alice", allowed_ips=TUNNEL_AND_VPC)
    alice_address = addresses(lab)["alice"]
    serve(alice, alice_address, 9000)
    assert reaches(alice, VPC_HOST, 8080) and alice.ping(VPC_HOST)  # the peer's own connections: replies pass
    assert not reaches(lab.vpc, alice_address, 9000)
    assert not lab.vpc.ping(alice_address, count=2, timeout=1)

    lab.bulwark("init", "--lan-to-peers")
    lab.wait_for(lambda: reaches(lab.vpc, alice_address, 9000, tries=1), 5)
    assert lab.vpc.ping(alice_address)
    assert exposure(lab)["lan_to_peers"] is True
    check = doctor(lab)["exposure"]
    assert check["status"] == "warn" and "LAN to peers" in check["evidence"]


def test_peers_reach_only_dns_and_ping_on_the_host_unless_host_access(lab: Lab):
    lab.vpc.python(VPC_DNS)
    lab.server.set_resolv_conf(f"nameserver {VPC_HOST}\n")
    serve(lab.server, "0.0.0.0", 8443)  # a service of the gateway host on every address  # noqa: S104
    lab.init("--peers", "alice")
    lab.up()
    alice, _ = lab.connect("alice")  # full tunnel, as generated
    assert alice.ping(SERVER)
    lab.wait_for(lambda: dig(alice, SERVER) == "10.0.1.20", 10)
    assert dig(alice, SERVER, "+tcp") == "10.0.1.20"
    assert not reaches(alice, SERVER, 8443)
    assert not reaches(alice, VPC_GATEWAY, 8443)  # the host's LAN address, through the tunnel: the same host
    assert reaches(lab.vpc, VPC_GATEWAY, 8443)  # from the LAN, not through the tunnel: untouched

    lab.bulwark("init", "--host-access")
    lab.wait_for(lambda: reaches(alice, SERVER, 8443, tries=1), 5)
    assert reaches(alice, VPC_GATEWAY, 8443)
    assert exposure(lab)["host_access"] is True
    assert "host access: open (every service)" in lab.bulwark("status").stdout


def test_the_dns_forwarder_answers_tunnel_peers_only_unless_dns_clients(lab: Lab):
    lab.vpc.python(VPC_DNS)
    lab.server.set_resolv_conf(f"nameserver {VPC_HOST}\n")
    vpc_knows_the_tunnel(lab)
    lab.init("--peers", "alice")
    lab.up()
    alice, _ = lab.connect("alice")
    outsider = lab.add_client()  # on the server's public side, no tunnel
    outsider.ip("route", "add", TUNNEL, "via", f"172.31.{lab._next_host - 1}.1")
    lab.wait_for(lambda: dig(alice, SERVER) == "10.0.1.20", 10)
    assert dig(lab.vpc, SERVER) == "" and dig(lab.vpc, SERVER, "+tcp") == ""  # a LAN host
    assert dig(outsider, SERVER) == "" and dig(outsider, SERVER_WAN) == ""  # the public side: no open resolver
    assert exposure(lab)["dns_clients"] == []

    lab.bulwark("init", "--dns-clients", f"{VPC_HOST}/32")
    lab.wait_for(lambda: dig(lab.vpc, SERVER) == "10.0.1.20", 5)
    assert dig(lab.vpc, SERVER, "+tcp") == "10.0.1.20"
    assert dig(outsider, SERVER) == ""  # still no one else
    assert exposure(lab)["dns_clients"] == [f"{VPC_HOST}/32"]
    check = doctor(lab)["exposure"]
    assert check["status"] == "warn" and f"DNS for {VPC_HOST}/32" in check["evidence"]
    assert "the live rules agree" in check["evidence"]

    lab.bulwark("init", "--dns-clients", "")
    lab.wait_for(lambda: dig(lab.vpc, SERVER) == "", 5)
    assert doctor(lab).status("exposure") == "ok"


def untunnelled_traffic(lab: Lab, outsider: Netns, outsider_address: str) -> dict[str, bool]:
    """Traffic that involves neither the tunnel interface nor a tunnel address, in each direction."""
    return {
        "vpc -> server tcp": reaches(lab.vpc, VPC_GATEWAY, 8443),
        "vpc -> server ping": lab.vpc.ping(VPC_GATEWAY),
        "server -> vpc tcp": reaches(lab.server, VPC_HOST, 8080),
        "outsider -> server public tcp": reaches(outsider, SERVER_WAN, 8443),
        "outsider -> server public udp": reaches(outsider, SERVER_WAN, 5353, "udp"),
        "outsider -> vpc, forwarded": reaches(outsider, VPC_HOST, 8080),
        "vpc -> outsider, forwarded": reaches(lab.vpc, outsider_address, 7000),
        "server -> vpc dns": lab.server.run(["dig", "+short", "+time=1", f"@{VPC_HOST}", "db.vpc.internal"],
                                            check=False).stdout.decode().strip() == "10.0.1.20",
    }


def test_traffic_that_does_not_involve_the_tunnel_is_the_same_with_the_gateway_up(lab: Lab):
    lab.vpc.python(VPC_DNS)
    serve(lab.server, "0.0.0.0", 8443)  # noqa: S104
    serve(lab.server, SERVER_WAN, 5353, "udp")  # bound to the address: a UDP reply comes from there
    serve(lab.vpc, VPC_HOST, 8080)
    outsider = lab.add_client()
    subnet = lab._next_host - 1  # its veth is 172.31.<subnet>.0/24
    address = f"172.31.{subnet}.2"
    serve(outsider, address, 7000)
    # The server also routes between its public side and the VPC (no tunnel involved).
    outsider.ip("route", "add", "10.0.1.0/24", "via", f"172.31.{subnet}.1")
    lab.vpc.ip("route", "add", "172.31.0.0/16", "via", VPC_GATEWAY)
    lab.server.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    before = untunnelled_traffic(lab, outsider, address)
    assert all(before.values()), before

    lab.init("--peers", "alice")
    lab.up()
    alice, _ = lab.connect("alice", allowed_ips=TUNNEL)
    assert alice.ping(SERVER)
    assert untunnelled_traffic(lab, outsider, address) == before


def test_a_closing_rule_deleted_by_hand_is_put_back_by_the_supervisor(lab: Lab):
    lab.init("--peers", "alice,bob")
    lab.up()
    alice, _ = lab.connect("alice", allowed_ips=TUNNEL)
    bob, _ = lab.connect("bob", allowed_ips=TUNNEL)
    bob_address = addresses(lab)["bob"]
    assert alice.ping(SERVER) and bob.ping(SERVER)
    table = firewall.table_name(lab.iface)
    listing = json.loads(lab.server.run(["nft", "-j", "-a", "list", "chain", "inet", table, "forward"]).stdout)
    handle = next(item["rule"]["handle"] for item in listing["nftables"]
                  if "rule" in item and item["rule"].get("comment") == "peer to peer (closed)")
    with supervisor_stopped(lab):
        lab.server.run(["nft", "delete", "rule", "inet", table, "forward", "handle", str(handle)])
        assert alice.ping(bob_address)  # the deleted rule was what kept the peers apart
        check = doctor(lab)["exposure"]
        assert check["status"] == "fail" and check["fixable"]
        assert "peer-to-peer is open in the live rules but closed in the settings" in check["evidence"]
    lab.wait_for(lambda: not alice.ping(bob_address, timeout=1), 5)  # closed again by the supervisor
    assert "the firewall of" in (RUN_DIR / f"{lab.iface}.log").read_text()
    assert doctor(lab).status("firewall") == "ok"
