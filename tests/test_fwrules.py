"""The firewall policy as data, without a kernel: what the rules decide for packets (the closed defaults and the
settings that open them, for any spec Hypothesis draws), that the iptables rendering parses back to the same
rules, and that nothing unchecked reaches a script. The same comparison against real nft and iptables-restore
runs in tests/test_dataplane_firewall.py."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark_vpn.dataplane import fwrules
from bulwark_vpn.dataplane.fwrules import FirewallSpec, Iface, Packet, Rule, policy, verdict_for
from bulwark_vpn.errors import InputError

NAMES = st.sampled_from(["wg0", "wg-a.b", "bwg_1", "x=y", "tun9"])
OTHER = "eth7"  # an interface no spec uses


@st.composite
def specs(draw) -> FirewallSpec:
    iface = draw(NAMES)
    egress = draw(st.one_of(st.none(), st.sampled_from(["eth0", "ens5", "eth1.100"])))
    prefix4 = draw(st.integers(8, 30))
    subnet4 = ipaddress.ip_network(f"10.{draw(st.integers(0, 255))}.0.0/{prefix4}", strict=False)
    six = draw(st.booleans())
    subnet6 = ipaddress.ip_network(f"fd{draw(st.integers(0, 255)):02x}::/64")
    subnets = (subnet4, subnet6) if six else (subnet4,)
    addresses = tuple(net.network_address + 1 for net in subnets)
    clients = draw(st.lists(st.sampled_from([ipaddress.ip_network(n) for n in (
        "192.168.1.0/24", "172.16.5.7/32", "2001:db8:5::/48", "0.0.0.0/0")]), unique=True, max_size=3))
    return FirewallSpec(
        iface=iface, egress=egress, subnets=subnets, listen_port=draw(st.integers(1, 65535)), addresses=addresses,
        dns=draw(st.booleans()), peer_to_peer=draw(st.booleans()), lan_to_peers=draw(st.booleans()),
        host_access=draw(st.booleans()), dns_clients=tuple(clients),
        api_port=draw(st.one_of(st.none(), st.integers(1024, 65535).filter(lambda p: p != 53))),
        block_metadata=draw(st.booleans()),
    )


def decide(spec: FirewallSpec, chain: fwrules.Chain, packet: Packet) -> str:
    """"accept", "drop" or "masquerade"; our chains' policy (accept) when no rule matches."""
    found = verdict_for(policy(spec), chain, packet)
    return found.verdict if found is not None else "accept"


def peer(spec: FirewallSpec, offset: int = 2, version: int = 4):
    net = next(n for n in spec.subnets if n.version == version)
    return net.network_address + offset


# -- what the rules decide -----------------------------------------------------------------------------------


@given(specs())
def test_peers_reach_each_other_only_with_peer_to_peer(spec: FirewallSpec) -> None:
    for ct in ("new", "established"):
        packet = Packet(4, iif=spec.iface, oif=spec.iface, saddr=peer(spec), daddr=peer(spec, 3), proto="tcp",
                        dport=22, ct=ct)
        assert decide(spec, "forward", packet) == ("accept" if spec.peer_to_peer else "drop")


@given(specs(), st.sampled_from(["eth0", "ens5", OTHER]))
def test_outside_hosts_open_connections_to_peers_only_with_lan_to_peers_but_replies_always_pass(
        spec: FirewallSpec, outside: str) -> None:
    new = Packet(4, iif=outside, oif=spec.iface, saddr=ipaddress.ip_address("10.0.1.10"), daddr=peer(spec),
                 proto="tcp", dport=8080)
    assert decide(spec, "forward", new) == ("accept" if spec.lan_to_peers else "drop")
    for ct in ("established", "related"):
        assert decide(spec, "forward", Packet(4, iif=outside, oif=spec.iface, daddr=peer(spec), ct=ct)) == "accept"


@given(specs(), st.integers(1, 65535))
def test_peers_reach_host_services_only_with_host_access(spec: FirewallSpec, port: int) -> None:
    server = spec.addresses[0]
    tcp = Packet(4, iif=spec.iface, saddr=peer(spec), daddr=server, proto="tcp", dport=port)
    allowed = spec.host_access or port == spec.api_port or (spec.dns and port == 53)
    assert decide(spec, "input", tcp) == ("accept" if allowed else "drop")
    # Also the host's other addresses, reached through the tunnel.
    lan_side = Packet(4, iif=spec.iface, saddr=peer(spec), daddr=ipaddress.ip_address("10.0.1.1"), proto="udp",
                      dport=port)
    assert decide(spec, "input", lan_side) == ("accept" if spec.host_access else "drop")
    # Ping (the documented trial), path MTU, and replies to the host's own connections always pass.
    assert decide(spec, "input", Packet(4, iif=spec.iface, saddr=peer(spec), daddr=server, proto="icmp")) == "accept"
    assert decide(spec, "input", Packet(6, iif=spec.iface, proto="icmpv6")) == "accept"
    assert decide(spec, "input", Packet(4, iif=spec.iface, proto="tcp", dport=port, ct="established")) == "accept"


@given(specs(), st.sampled_from(["eth0", "ens5", OTHER]),
       st.sampled_from(["192.168.1.9", "172.16.5.7", "172.16.5.8", "203.0.113.5", "2001:db8:5::9", "2001:db8:6::1"]))
def test_the_dns_forwarder_answers_outside_the_tunnel_only_dns_clients(spec: FirewallSpec, outside: str,
                                                                       source: str) -> None:
    address = ipaddress.ip_address(source)
    server = next((a for a in spec.addresses if a.version == address.version), None)
    if server is None or not spec.dns:
        return
    listed = any(address in net for net in spec.dns_clients if net.version == address.version)
    for proto in ("udp", "tcp"):
        query = Packet(address.version, iif=outside, saddr=address, daddr=server, proto=proto, dport=53)
        assert decide(spec, "input", query) == ("accept" if listed else "drop")
    from_tunnel = Packet(4, iif=spec.iface, saddr=peer(spec), daddr=spec.addresses[0], proto="udp", dport=53)
    assert decide(spec, "input", from_tunnel) == "accept"
    from_host = Packet(address.version, iif="lo", saddr=server, daddr=server, proto="udp", dport=53)
    assert decide(spec, "input", from_host) == "accept"


@given(specs(), st.sampled_from(["eth0", "ens5", OTHER, "docker0"]))
def test_the_api_on_the_tunnel_addresses_answers_peers_and_the_host_itself_only(spec: FirewallSpec,
                                                                                outside: str) -> None:
    if spec.api_port is None:
        return
    for server in spec.addresses:
        neighbour = ipaddress.ip_address("192.0.2.7" if server.version == 4 else "2001:db8::7")
        for iif, saddr, verdict in ((spec.iface, peer(spec, version=server.version), "accept"),
                                    ("lo", server, "accept"),
                                    # A neighbour routing the tunnel subnet through the gateway: the kernel
                                    # takes a packet for a local address on any interface.
                                    (outside, neighbour, "drop")):
            request = Packet(server.version, iif=iif, saddr=saddr, daddr=server, proto="tcp", dport=spec.api_port)
            assert decide(spec, "input", request) == verdict, (iif, saddr)
    # The host's other addresses (an API deliberately listening on the LAN side) are not Bulwark's to close.
    lan = Packet(4, iif=outside, saddr=ipaddress.ip_address("192.0.2.7"), daddr=ipaddress.ip_address("192.0.2.1"),
                 proto="tcp", dport=spec.api_port)
    assert decide(spec, "input", lan) == "accept"


@given(specs(), st.sampled_from(["eth0", "ens5", OTHER]))
def test_nat_out_of_every_interface_but_the_tunnel_unless_one_egress(spec: FirewallSpec, out: str) -> None:
    packet = Packet(4, oif=out, saddr=peer(spec), daddr=ipaddress.ip_address("192.168.50.10"))
    nat = spec.egress is None or out == spec.egress
    assert decide(spec, "postrouting", packet) == ("masquerade" if nat else "accept")
    forward = Packet(4, iif=spec.iface, oif=out, saddr=peer(spec), daddr=ipaddress.ip_address("192.168.50.10"))
    assert decide(spec, "forward", forward) == "accept"
    # Never back into the tunnel, never the host's own packets on the loopback.
    assert decide(spec, "postrouting", Packet(4, oif=spec.iface, saddr=peer(spec))) == "accept"
    assert decide(spec, "postrouting", Packet(4, oif="lo", saddr=spec.addresses[0])) == "accept"


@given(specs())
def test_cloud_metadata_is_dropped_for_peers(spec: FirewallSpec) -> None:
    for target in ("169.254.169.254", "fd00:ec2::254"):
        address = ipaddress.ip_address(target)
        packet = Packet(address.version, iif=spec.iface, oif="eth0", daddr=address, proto="tcp", dport=80)
        assert decide(spec, "forward", packet) == ("drop" if spec.block_metadata else "accept")


@given(specs(), st.sampled_from(["eth0", "ens5", OTHER, "lo", "docker0"]),
       st.sampled_from(["eth0", "ens5", OTHER, "docker0"]), st.sampled_from(["new", "established"]),
       st.sampled_from(["tcp", "udp", "icmp"]), st.integers(1, 65535))
def test_traffic_that_does_not_involve_the_tunnel_is_never_dropped(spec, iif, oif, ct, proto, port) -> None:
    """Not from, to nor through the tunnel interface, and not to a tunnel address: our rules never drop it."""
    dport = port if proto != "icmp" else None
    lan, other = ipaddress.ip_address("198.18.1.10"), ipaddress.ip_address("198.18.2.1")  # outside every subnet
    forwarded = Packet(4, iif=iif, oif=oif, saddr=lan, daddr=other, proto=proto, dport=dport, ct=ct)
    to_host = Packet(4, iif=iif, saddr=lan, daddr=other, proto=proto, dport=dport, ct=ct)
    assert decide(spec, "forward", forwarded) == "accept"
    assert decide(spec, "input", to_host) == "accept"
    assert decide(spec, "postrouting", Packet(4, oif=oif, saddr=lan, daddr=other)) == "accept"


@given(specs())
def test_every_rule_involves_the_tunnel(spec: FirewallSpec) -> None:
    tunnel_addresses = [ipaddress.ip_network(a) for a in spec.addresses]
    for rule in policy(spec):
        involved = (
            (rule.iif is not None and rule.iif.name == spec.iface and not rule.iif.negated)
            or (rule.oif is not None and rule.oif.name == spec.iface and not rule.oif.negated)
            or rule.daddr in tunnel_addresses or rule.saddr in spec.subnets
            or (rule.chain == "input" and rule.dport == spec.listen_port)  # WireGuard itself
            or (rule.chain == "postrouting" and rule.verdict == "accept")  # an exception to NAT, not a drop
        )
        assert involved, rule
        if rule.verdict == "drop":
            assert rule.iif is not None or rule.oif is not None, rule


# -- one list, several renderings ----------------------------------------------------------------------------


def iptables_listing(spec: FirewallSpec, version: int) -> dict[fwrules.Chain, list[str]]:
    """Our chains' `-A` lines of the rendered restore script, as `iptables -S` would list them per chain."""
    listed: dict[fwrules.Chain, list[str]] = {"forward": [], "input": [], "postrouting": []}
    table = ""
    for line in fwrules.render_iptables(spec, version).splitlines():
        if line.startswith("*"):
            table = line[1:]
        for chain in fwrules.CHAINS:
            chain_table, _, name = fwrules.iptables_chain(spec.iface, chain)
            if chain_table == table and line.startswith(f"-A {name} "):
                listed[chain].append(line)
    return listed


@given(specs())
@settings(max_examples=200)
def test_the_iptables_rendering_parses_back_to_the_same_rules(spec: FirewallSpec) -> None:
    for version in (4, 6):
        parsed = fwrules.rules_from_iptables(spec.iface, iptables_listing(spec, version), version)
        assert parsed == fwrules.by_family(policy(spec), version)


@given(specs())
def test_the_nft_rendering_names_every_rule_once_in_its_chain(spec: FirewallSpec) -> None:
    script = fwrules.render_nft(spec)
    for rule in policy(spec):
        assert script.count(f"\t\t{fwrules.nft_rule(rule)}\n") >= 1
    assert script.count("policy accept;") == 3 and "policy drop" not in script


def test_iptables_replacement_removes_the_old_jumps_in_the_same_commit() -> None:
    spec = FirewallSpec("wg0", None, (ipaddress.ip_network("10.13.13.0/24"),), 51820,
                        addresses=(ipaddress.ip_address("10.13.13.1"),))
    script = fwrules.render_iptables(spec, 4, {("filter", "FORWARD"): 2, ("nat", "POSTROUTING"): 1})
    filter_part, nat_part = script.split("*nat\n")
    assert filter_part.count("-D FORWARD -j BULWARK-wg0\n") == 2 and "-D INPUT" not in filter_part
    assert filter_part.index("-D FORWARD") < filter_part.index("-I FORWARD 1 -j BULWARK-wg0")
    assert filter_part.rstrip().endswith("COMMIT") and nat_part.rstrip().endswith("COMMIT")
    assert nat_part.count("-D POSTROUTING -j BULWARK-wg0\n") == 1 and "-I POSTROUTING 1 -j BULWARK-wg0" in nat_part
    assert "-X" not in script  # a replacement never deletes a chain: nothing is ever without rules


def test_differences_name_missing_foreign_and_reordered_rules() -> None:
    spec = FirewallSpec("wg0", None, (ipaddress.ip_network("10.13.13.0/24"),), 51820,
                        addresses=(ipaddress.ip_address("10.13.13.1"),))
    rules = policy(spec)
    opened = policy(FirewallSpec(**{**spec.__dict__, "peer_to_peer": True}))
    found = fwrules.differences(rules, opened)
    assert 'missing: forward: iifname "wg0" oifname "wg0" drop comment "peer to peer (closed)"' in found
    assert 'not in the settings: forward: iifname "wg0" oifname "wg0" accept comment "peer to peer (open)"' in found
    swapped = rules[:2] + [rules[3], rules[2]] + rules[4:]  # peer-to-peer after the replies' accept
    assert fwrules.differences(rules, swapped) == ["forward rules out of order (IPv4)",
                                                   "forward rules out of order (IPv6)"]
    assert fwrules.differences(rules, rules) == []


# -- nothing unchecked reaches a script ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wg0\n", "wg0\nflush ruleset", 'wg0"', "wg 0", "wg+", "", "x" * 16, "..", 5])
def test_interface_names_that_could_change_a_script_are_refused(name) -> None:
    with pytest.raises(InputError, match="interface name"):
        FirewallSpec(name, None, (ipaddress.ip_network("10.13.13.0/24"),), 51820, dns=False)
    with pytest.raises(InputError, match="interface name"):
        FirewallSpec("wg0", name, (ipaddress.ip_network("10.13.13.0/24"),), 51820, dns=False)


@pytest.mark.parametrize("changes", [
    {"listen_port": 0}, {"listen_port": True}, {"listen_port": "51820"}, {"api_port": 70000},
    {"subnets": ("10.13.13.0/24",)}, {"dns_clients": ["10.0.0.0/8"]}, {"peer_to_peer": "yes"},
    {"addresses": ("10.13.13.1",)}, {"egress": "wg0"}, {"egress": "lo"}, {"addresses": ()},
])
def test_spec_values_must_be_typed(changes) -> None:
    values = {"iface": "wg0", "egress": None, "subnets": (ipaddress.ip_network("10.13.13.0/24"),),
              "listen_port": 51820, "addresses": (ipaddress.ip_address("10.13.13.1"),), **changes}
    with pytest.raises(InputError):
        FirewallSpec(**values)


def test_rules_normalize_their_family_and_refuse_what_no_tool_can_say() -> None:
    assert Rule("input", "accept", "x", proto="icmp").family == 4
    assert Rule("input", "accept", "x", daddr=ipaddress.ip_network("fd13::1")).family == 6
    assert Rule("input", "accept", "x", ct=("related", "established")).ct == ("established", "related")
    for bad in (
        {"daddr": ipaddress.ip_network("fd13::1"), "saddr": ipaddress.ip_network("10.0.0.0/8")},
        {"proto": "icmp", "family": 6},
        {"dport": 53},
        {"comment": 'x" ; flush ruleset'},
        {"comment": "x\ny"},
        {"ct": ("bogus",)},
    ):
        with pytest.raises(ValueError):
            Rule("input", "accept", **{"comment": "x", **bad})
    with pytest.raises(ValueError):
        Rule("forward", "masquerade", "x")
    with pytest.raises(ValueError):
        Rule("postrouting", "masquerade", "x", iif=Iface("wg0"))


def test_a_rule_bulwark_does_not_write_is_reported_not_guessed() -> None:
    foreign = {"nftables": [{"rule": {"family": "inet", "table": "bulwark_wg0", "chain": "input", "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 0}}, {"accept": None}]}}]}
    with pytest.raises(ValueError, match="does not write"):
        fwrules.rules_from_nft(foreign, "bulwark_wg0")
    with pytest.raises(ValueError, match="does not write"):
        fwrules.rules_from_iptables("wg0", {"input": ["-A BULWARK-wg0-in -m owner --uid-owner 0 -j ACCEPT"]}, 4)
    other_table = {"nftables": [{"rule": {"family": "inet", "table": "someone_else", "chain": "input", "expr": []}}]}
    assert fwrules.rules_from_nft(other_table, "bulwark_wg0") == []


def test_a_whole_family_match_renders_as_the_family() -> None:
    rule = Rule("input", "accept", "x", saddr=ipaddress.ip_network("0.0.0.0/0"), proto="udp", dport=53)
    assert rule.saddr is None and rule.family == 4
    assert fwrules.nft_rule(rule).startswith("meta nfproto ipv4 udp dport 53")
    assert fwrules.iptables_rule(rule, "C", 4) == '-A C -p udp -m udp --dport 53 -m comment --comment "x" -j ACCEPT'
