"""Firewall and NAT for real: client -> tunnel -> server -> egress -> "vpc" namespace.

The vpc host has no route back to the tunnel subnet, so replies only arrive through the server's
masquerade; the vpc host reports the source address it sees. The metadata address lives in the vpc
too, so "blocked" is a real drop by our rules, not a missing route.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from bulwark_vpn.dataplane import firewall, netcfg
from bulwark_vpn.dataplane.apply import apply_device
from bulwark_vpn.dataplane.firewall import FirewallSpec
from tests.netns import Netns, NetnsFactory, WgClient, WgServer, add_wg_client, start_wg_server, veth
from tests.probes import reaches, serve

VPC4, VPC6 = "192.168.77.2", "2001:db8:77::2"
EGRESS4, EGRESS6 = "192.168.77.1", "2001:db8:77::1"
META4, META6 = "169.254.169.254", "fd00:ec2::254"
TCP_PORT = 8080

ECHO_SOURCE = f"""
import socket
srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
srv.bind(("::", {TCP_PORT}))
srv.listen()
while True:
    conn, peer = srv.accept()
    conn.sendall(peer[0].removeprefix("::ffff:").encode())
    conn.close()
"""

ASK_SOURCE = """
import socket, sys, time
deadline = time.monotonic() + 5
while True:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as conn:
            print(conn.recv(100).decode())
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
"""


@dataclass
class Site:
    server: WgServer
    client: WgClient
    vpc: Netns
    egress: str

    def spec(self, **overrides) -> FirewallSpec:
        values = {
            "iface": self.server.iface,
            "egress": self.egress,
            "subnets": (ipaddress.ip_network("10.77.0.0/24"), ipaddress.ip_network("fd77::/64")),
            "listen_port": self.server.port,
            "addresses": (ipaddress.ip_address("10.77.0.1"), ipaddress.ip_address("fd77::1")),
        }
        values.update(overrides)
        return FirewallSpec(**values)

    def source_seen_by_vpc(self, host: str) -> str:
        result = self.client.ns.run([sys.executable, "-c", ASK_SOURCE, host, str(TCP_PORT)], timeout=20)
        return result.stdout.decode().strip()


@pytest.fixture
def site(netns_factory: NetnsFactory) -> Iterator[Site]:
    server = start_wg_server(netns_factory, netns_factory(), log=lambda _: None)
    vpc = netns_factory()
    egress, vpc_if = veth(server.ns, vpc, f"{EGRESS4}/24", f"{VPC4}/24")
    server.ns.ip("-6", "address", "add", f"{EGRESS6}/64", "dev", egress, "nodad")
    vpc.ip("-6", "address", "add", f"{VPC6}/64", "dev", vpc_if, "nodad")
    vpc.ip("address", "add", f"{META4}/32", "dev", vpc_if)
    vpc.ip("-6", "address", "add", f"{META6}/128", "dev", vpc_if, "nodad")
    server.ns.ip("route", "add", "default", "via", VPC4, "dev", egress)
    server.ns.ip("-6", "route", "add", "default", "via", VPC6, "dev", egress)
    routes = ["192.168.77.0/24", f"{META4}/32", "2001:db8:77::/64", f"{META6}/128"]
    client = add_wg_client(netns_factory, server, 2, extra_client_routes=routes)
    apply_device(server.runner, server.iface, server.desired([client.spec]))
    netcfg.set_forwarding(server.runner, ipv4=True, ipv6=True)
    echo = vpc.python(ECHO_SOURCE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield Site(server, client, vpc, egress)
    finally:
        echo.kill()
        echo.wait()


def nft_tables(ns: Netns) -> list[str]:
    return ns.run(["nft", "list", "tables"]).stdout.decode().split("\n")


def test_egress_is_detected_from_the_default_route(site: Site) -> None:
    assert netcfg.egress_interface(site.server.runner) == site.egress
    assert netcfg.egress_interface(site.server.runner, 6) == site.egress
    assert netcfg.egress_interface(site.client.ns.runner()) is None


def test_nat_lets_clients_reach_the_vpc_as_the_server(site: Site) -> None:
    assert not site.client.ns.ping(VPC4, timeout=1), "without NAT the vpc has no route back"
    undo = firewall.install_firewall(site.server.runner, site.spec(), backend="nft")
    assert firewall.firewall_present(site.server.runner, site.server.iface, "nft")

    assert site.client.ns.ping(VPC4)
    assert site.client.ns.ping(VPC6)
    assert site.source_seen_by_vpc(VPC4) == EGRESS4
    assert site.source_seen_by_vpc(VPC6) == EGRESS6

    undo()
    assert not firewall.firewall_present(site.server.runner, site.server.iface, "nft")
    assert not site.client.ns.ping(VPC4, timeout=1)


def test_metadata_is_blocked_unless_disabled(site: Site) -> None:
    firewall.install_firewall(site.server.runner, site.spec(), backend="nft")
    assert site.client.ns.ping(VPC4)
    assert not site.client.ns.ping(META4, timeout=1)
    assert not site.client.ns.ping(META6, timeout=1)

    firewall.install_firewall(site.server.runner, site.spec(block_metadata=False), backend="nft")
    assert site.client.ns.ping(META4)
    assert site.client.ns.ping(META6)


def test_reinstall_replaces_and_remove_deletes_only_our_table(site: Site) -> None:
    ns, runner, iface = site.server.ns, site.server.runner, site.server.iface
    ns.run(["nft", "add", "table", "inet", "someone_else"])
    firewall.install_firewall(runner, site.spec(), backend="nft")
    firewall.install_firewall(runner, site.spec(dns=False), backend="nft")
    ours = f"table inet {firewall.table_name(iface)}"
    assert nft_tables(ns).count(ours) == 1
    assert "dport 53" not in ns.run(["nft", "list", "table", "inet", firewall.table_name(iface)]).stdout.decode()

    assert firewall.remove_firewall(runner, iface, "nft") is True
    assert ours not in nft_tables(ns) and "table inet someone_else" in nft_tables(ns)
    assert firewall.remove_firewall(runner, iface, "nft") is False


def test_forwarding_switches_are_restored(site: Site) -> None:
    runner = site.client.ns.runner(log=lambda _: None)
    before = netcfg.read_forwarding(runner)
    undo = netcfg.set_forwarding(runner, ipv4=not before.ipv4, ipv6=not before.ipv6)
    assert netcfg.read_forwarding(runner) == netcfg.Forwarding(not before.ipv4, not before.ipv6)
    undo()
    assert netcfg.read_forwarding(runner) == before


def iptables_save(ns: Netns) -> str:
    return ns.run(["iptables-save"]).stdout.decode() + ns.run(["ip6tables-save"]).stdout.decode()


def test_iptables_fallback_nat_metadata_and_exact_removal(site: Site) -> None:
    if not firewall.shutil.which("iptables-restore"):
        pytest.fail("iptables is not installed: apt-get install -y iptables")
    ns, runner, iface = site.server.ns, site.server.runner, site.server.iface
    ns.run(["iptables", "-N", "SOMEONE-ELSE"])
    ns.run(["iptables", "-A", "FORWARD", "-j", "SOMEONE-ELSE"])
    firewall.install_firewall(runner, site.spec(), backend="iptables")
    firewall.install_firewall(runner, site.spec(), backend="iptables")  # idempotent
    assert iptables_save(ns).count(f"-A FORWARD -j BULWARK-{iface}\n") == 2  # once per family
    assert firewall.firewall_present(runner, iface, "iptables")

    assert site.client.ns.ping(VPC4) and site.client.ns.ping(VPC6)
    assert site.source_seen_by_vpc(VPC4) == EGRESS4
    assert site.source_seen_by_vpc(VPC6) == EGRESS6
    assert not site.client.ns.ping(META4, timeout=1)
    assert not site.client.ns.ping(META6, timeout=1)

    assert firewall.remove_firewall(runner, iface, "iptables") is True
    saved = iptables_save(ns)
    assert "BULWARK" not in saved and "-A FORWARD -j SOMEONE-ELSE" in saved
    assert not firewall.firewall_present(runner, iface, "iptables")
    assert firewall.remove_firewall(runner, iface, "iptables") is False


# --- one rule list, the same in nft and iptables, and what it lets through -----------------------------------

BACKENDS = ["nft", "iptables"]


@pytest.mark.netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_host_services_are_closed_to_peers_unless_host_access(site: Site, backend: str) -> None:
    server, client = site.server, site.client.ns
    serve(server.ns, "0.0.0.0", 8443)  # a service of the gateway host, on every address  # noqa: S104
    serve(server.ns, "10.77.0.1", 53, "udp")  # stands for the DNS forwarder
    firewall.install_firewall(server.runner, site.spec(), backend=backend)
    assert not reaches(client, "10.77.0.1", 8443)  # on its tunnel address
    assert not reaches(client, EGRESS4, 8443)  # nor on another of its addresses, through the tunnel
    assert client.ping("10.77.0.1")  # ping and path MTU pass
    assert reaches(client, "10.77.0.1", 53, "udp")  # and DNS
    assert reaches(site.vpc, EGRESS4, 8443)  # traffic that does not involve the tunnel is not touched
    assert site.vpc.ping(EGRESS4) and server.ns.ping(VPC4)

    firewall.install_firewall(server.runner, site.spec(host_access=True), backend=backend)
    assert reaches(client, "10.77.0.1", 8443) and reaches(client, EGRESS4, 8443)


@pytest.mark.netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_dns_from_outside_the_tunnel_is_dropped_unless_dns_clients(site: Site, backend: str) -> None:
    server = site.server
    serve(server.ns, "10.77.0.1", 53, "udp")
    serve(server.ns, "10.77.0.1", 53, "tcp")
    site.vpc.ip("route", "add", "10.77.0.0/24", "via", EGRESS4)  # a LAN host that knows the way to the tunnel
    firewall.install_firewall(server.runner, site.spec(), backend=backend)
    assert reaches(site.client.ns, "10.77.0.1", 53, "udp") and reaches(site.client.ns, "10.77.0.1", 53)
    assert not reaches(site.vpc, "10.77.0.1", 53, "udp") and not reaches(site.vpc, "10.77.0.1", 53)
    assert reaches(server.ns, "10.77.0.1", 53, "udp")  # the host itself

    clients = (ipaddress.ip_network("192.168.77.0/24"),)
    firewall.install_firewall(server.runner, site.spec(dns_clients=clients), backend=backend)
    assert reaches(site.vpc, "10.77.0.1", 53, "udp") and reaches(site.vpc, "10.77.0.1", 53)


@pytest.mark.netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_outside_hosts_cannot_open_connections_to_peers_unless_lan_to_peers(site: Site, backend: str) -> None:
    serve(site.client.ns, site.client.address4, 9000)  # a service on the peer's tunnel address
    site.vpc.ip("route", "add", "10.77.0.0/24", "via", EGRESS4)
    firewall.install_firewall(site.server.runner, site.spec(), backend=backend)
    assert not reaches(site.vpc, site.client.address4, 9000)
    assert site.source_seen_by_vpc(VPC4) == EGRESS4  # the peer's own connection: its replies pass

    firewall.install_firewall(site.server.runner, site.spec(lan_to_peers=True), backend=backend)
    assert reaches(site.vpc, site.client.address4, 9000)


@pytest.mark.netns
@pytest.mark.slow
def test_nft_and_iptables_hold_exactly_the_rules_of_the_policy(netns: Netns) -> None:
    """For any spec: rendered, loaded by the real tool, listed back and parsed, each rendering is the policy."""
    from hypothesis import HealthCheck, given, settings

    from bulwark_vpn.dataplane import fwrules
    from tests.test_fwrules import specs

    runner = netns.runner(log=lambda _: None)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(specs())
    def check(spec: FirewallSpec) -> None:
        try:
            firewall.install_firewall(runner, spec, "nft")
            assert firewall.live_rules(runner, spec.iface, "nft") == fwrules.policy(spec)
            firewall.install_firewall(runner, spec, "iptables")
            firewall.install_firewall(runner, spec, "iptables")  # a replacement, as at a settings change
            expected = fwrules.by_family(fwrules.policy(spec), 4) + fwrules.by_family(fwrules.policy(spec), 6)
            assert firewall.live_rules(runner, spec.iface, "iptables") == expected
        finally:
            firewall.remove_firewall(runner, spec.iface, "nft")
            firewall.remove_firewall(runner, spec.iface, "iptables")
        assert iptables_save(netns).count("BULWARK") == 0

    check()


@pytest.mark.netns
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reload_never_leaves_a_moment_without_nat_or_the_metadata_drop(netns: Netns, backend: str) -> None:
    """A reader lists the rules while the firewall is replaced 30 times: every listing holds NAT and the drop."""
    import threading

    runner = netns.runner(log=lambda _: None)
    spec = FirewallSpec(iface="wg0", egress=None, subnets=(ipaddress.ip_network("10.77.0.0/24"),), listen_port=51820,
                        addresses=(ipaddress.ip_address("10.77.0.1"),))
    listing = (["iptables-save"] if backend == "iptables"
               else ["nft", "list", "table", "inet", firewall.table_name("wg0")])
    firewall.install_firewall(runner, spec, backend)
    stop, seen = threading.Event(), []

    def read() -> None:
        while not stop.is_set():
            seen.append(netns.run(listing).stdout.decode())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for index in range(30):
            firewall.install_firewall(runner, replace(spec, peer_to_peer=index % 2 == 0), backend)
    finally:
        stop.set()
        reader.join()
    nat, drop = ("MASQUERADE", "169.254.0.0/16") if backend == "iptables" else ("masquerade", "169.254.0.0/16")
    assert len(seen) >= 10
    assert all(nat in text and drop in text for text in seen)
    firewall.remove_firewall(runner, "wg0", backend)
