"""Bulwark's firewall policy as data: one list of typed rules, rendered to nftables and to iptables/ip6tables.

This module owns the policy and its renderings, and nothing that runs a command:

* `FirewallSpec`: what the gateway's firewall must do (interface, NAT scope, tunnel subnets, the exposures
  that the settings open);
* `Rule` and `policy(spec)`: the rules as values (chain, matches, verdict, comment), in order;
* `render_nft(spec)` and `render_iptables(spec, version)`: the same list as an `nft -f` script and as an
  `iptables-restore --noflush` script (one transaction per family);
* `rules_from_nft(json)` and `rules_from_iptables(lines, version)`: what each tool lists, parsed back into
  `Rule`s, so that tests and the doctor compare the live rules with the policy instead of matching text;
* `verdict_for(rules, chain, packet)`: which of our rules decides a packet.

The rules only ever name traffic to, from or through the tunnel interface (or to the tunnel addresses), and
our chains keep `policy accept` (see `firewall`): they add drops for tunnel traffic and never touch anything
else. Every name and number written into a script comes from a typed, checked value, and comments are
constants of this module.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from bulwark_vpn.errors import InputError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Chain = Literal["forward", "input", "postrouting"]
Verdict = Literal["accept", "drop", "masquerade"]
Proto = Literal["tcp", "udp", "icmp", "icmpv6"]

METADATA4 = ipaddress.IPv4Network("169.254.0.0/16")
METADATA6 = ipaddress.IPv6Network("fd00:ec2::254/128")
DNS_PORT = 53
LOOPBACK = "lo"
REPLIES = ("established", "related")

CHAINS: tuple[Chain, ...] = ("forward", "postrouting", "input")
_CT_STATES = {"new", "established", "related", "invalid", "untracked"}
# An interface name as the kernel takes it (wg-quick's set). A trailing "+" would be an iptables wildcard, and
# nothing else may reach a script: no quote, space, newline or other separator.
_IFNAME = re.compile(r"[A-Za-z0-9_=+.-]{1,15}")
_COMMENT = re.compile(r"[A-Za-z0-9 ,.:()/_-]{1,100}")


def checked_ifname(name: str) -> str:
    """`name` if it can be written into an nft or iptables script as an interface name, else InputError."""
    if not isinstance(name, str) or not _IFNAME.fullmatch(name) or name in (".", "..") or name.endswith("+"):
        raise InputError("invalid interface name for the firewall", name,
                         "use 1-15 letters, digits or _=+.-, not ending in '+' (iptables reads that as a wildcard)")
    return name


def _checked_port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise InputError(f"invalid {what} for the firewall: {value!r}: use a number from 1 to 65535")
    return value


def _checked_networks(values: object, what: str) -> tuple[IPNetwork, ...]:
    if not isinstance(values, tuple) or not all(isinstance(v, IPNetwork) for v in values):
        raise InputError(f"invalid {what} for the firewall: {values!r}: a tuple of IP networks")
    return values


# -- the spec -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FirewallSpec:
    """What the gateway's firewall allows.

    `egress=None` masquerades (and forwards) tunnel traffic out of every interface but the tunnel itself, so a
    private network behind any interface of a multi-homed host is reachable; a name narrows NAT to that one.
    `subnets` are the tunnel networks (IPv4 and/or IPv6), `addresses` the server's own tunnel addresses (where
    the DNS forwarder listens when `dns`, and the API when `api_port` is set: on them the API port answers peers
    and the host itself only). The four exposures are closed unless their setting opens them:
    `peer_to_peer` (peers reach each other), `lan_to_peers` (hosts outside the tunnel open connections to
    peers), `host_access` (peers reach every service of the host, not only DNS, ICMP and `api_port`) and
    `dns_clients` (networks besides the tunnel whose queries the forwarder may answer).
    """

    iface: str
    egress: str | None
    subnets: tuple[IPNetwork, ...]
    listen_port: int
    addresses: tuple[IPAddress, ...] = ()
    dns: bool = True
    peer_to_peer: bool = False
    lan_to_peers: bool = False
    host_access: bool = False
    dns_clients: tuple[IPNetwork, ...] = ()
    api_port: int | None = None
    block_metadata: bool = True

    def __post_init__(self) -> None:
        checked_ifname(self.iface)
        if self.egress is not None:
            checked_ifname(self.egress)
            if self.egress in (self.iface, LOOPBACK):
                raise InputError(f"invalid egress interface: '{self.egress}': NAT goes out of another interface "
                                 f"than the tunnel '{self.iface}' and the loopback")
        _checked_networks(self.subnets, "tunnel subnets")
        _checked_networks(self.dns_clients, "DNS clients")
        if not isinstance(self.addresses, tuple) or not all(isinstance(a, IPAddress) for a in self.addresses):
            raise InputError(f"invalid tunnel addresses for the firewall: {self.addresses!r}")
        if self.dns and not self.addresses:
            raise InputError("the firewall needs the tunnel addresses the DNS forwarder listens on (or dns=False)")
        _checked_port(self.listen_port, "listen port")
        if self.api_port is not None:
            _checked_port(self.api_port, "API port")
        for name in ("dns", "peer_to_peer", "lan_to_peers", "host_access", "block_metadata"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"invalid {name} for the firewall: {getattr(self, name)!r}: true or false")


# -- the rule model -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Iface:
    """An interface match: `name`, or any interface but `name` when `negated`."""

    name: str
    negated: bool = False

    def __post_init__(self) -> None:
        checked_ifname(self.name)

    def matches(self, name: str) -> bool:
        return (name == self.name) != self.negated


@dataclass(frozen=True)
class Rule:
    """One rule of one of our chains: every match that is set must hold; then `verdict`.

    `family` None applies to IPv4 and IPv6; an address or an ICMP protocol implies its family (normalized
    here, so that a rule parsed back from a tool equals the rule that was rendered).
    """

    chain: Chain
    verdict: Verdict
    comment: str
    family: int | None = None
    iif: Iface | None = None
    oif: Iface | None = None
    saddr: IPNetwork | None = None
    daddr: IPNetwork | None = None
    proto: Proto | None = None
    dport: int | None = None
    ct: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        implied: set[int] = {a.version for a in (self.saddr, self.daddr) if a is not None}
        # A /0 only says the family (iptables lists `-s 0.0.0.0/0` as no match at all).
        for name in ("saddr", "daddr"):
            value = getattr(self, name)
            if value is not None and value.prefixlen == 0:
                object.__setattr__(self, name, None)
        if self.proto in ("icmp", "icmpv6"):
            implied.add(4 if self.proto == "icmp" else 6)
        if self.family is not None:
            implied.add(self.family)
        if len(implied) > 1 or not implied <= {4, 6}:
            raise ValueError(f"rule mixes address families: {self}")
        object.__setattr__(self, "family", next(iter(implied), None))
        object.__setattr__(self, "ct", tuple(sorted(set(self.ct))))
        if not set(self.ct) <= _CT_STATES:
            raise ValueError(f"unknown conntrack state in {self.ct}")
        if self.dport is not None and (self.proto not in ("tcp", "udp") or not 0 < self.dport < 65536):
            raise ValueError(f"a destination port needs tcp or udp: {self}")
        if (self.verdict == "masquerade" and self.chain != "postrouting") or (
                self.chain == "postrouting" and (self.verdict == "drop" or self.iif is not None)):
            raise ValueError(f"postrouting only masquerades (or accepts: no NAT), without an input interface: {self}")
        if not _COMMENT.fullmatch(self.comment):
            raise ValueError(f"unsafe rule comment: {self.comment!r}")

    def for_family(self, version: int) -> Rule | None:
        """This rule as it applies to IPv`version` packets (None if it never does)."""
        if self.family is None:
            return replace(self, family=version)
        return self if self.family == version else None


@dataclass(frozen=True)
class Packet:
    """A packet as our rules see it (for `verdict_for`)."""

    family: int
    iif: str | None = None
    oif: str | None = None
    saddr: IPAddress | None = None
    daddr: IPAddress | None = None
    proto: Proto | None = None
    dport: int | None = None
    ct: str = "new"


def _holds(rule: Rule, packet: Packet) -> bool:
    checks = (
        rule.family is None or rule.family == packet.family,
        rule.iif is None or (packet.iif is not None and rule.iif.matches(packet.iif)),
        rule.oif is None or (packet.oif is not None and rule.oif.matches(packet.oif)),
        rule.saddr is None or (packet.saddr is not None and packet.saddr in rule.saddr),
        rule.daddr is None or (packet.daddr is not None and packet.daddr in rule.daddr),
        rule.proto is None or rule.proto == packet.proto,
        rule.dport is None or rule.dport == packet.dport,
        not rule.ct or packet.ct in rule.ct,
    )
    return all(checks)


def verdict_for(rules: Iterable[Rule], chain: Chain, packet: Packet) -> Rule | None:
    """The first of `rules` in `chain` that matches `packet` (every verdict we write ends the chain); None
    means our chain lets it pass by its accept policy."""
    return next((r for r in rules if r.chain == chain and _holds(r, packet)), None)


def by_family(rules: Iterable[Rule], version: int) -> list[Rule]:
    """The rules that apply to IPv`version` packets, each with its family set (how iptables holds them)."""
    return [r for r in (rule.for_family(version) for rule in rules) if r is not None]


def describe(rule: Rule) -> str:
    """A rule in nft syntax, without the counter: `iifname "wg0" oifname "wg0" drop comment "..."`."""
    if rule.saddr is None and rule.daddr is None and rule.proto not in ("icmp", "icmpv6"):
        rule = replace(rule, family=None)  # one text for both families
    return f"{rule.chain}: " + nft_rule(rule).replace(" counter ", " ")


def differences(expected: Sequence[Rule], live: Sequence[Rule], limit: int = 4) -> list[str]:
    """How `live` differs from `expected`, as "missing: RULE" / "not ours: RULE" / "out of order" lines
    (compared per family and chain: the order within a chain is what decides a packet)."""
    found: list[str] = []
    for version in (4, 6):
        for chain in CHAINS:
            want = [r for r in by_family(expected, version) if r.chain == chain]
            have = [r for r in by_family(live, version) if r.chain == chain]
            if want == have:
                continue
            found += [f"missing: {describe(r)}" for r in want if r not in have]
            found += [f"not in the settings: {describe(r)}" for r in have if r not in want]
            if all(r in have for r in want) and all(r in want for r in have):
                found.append(f"{chain} rules out of order (IPv{version})")
    return list(dict.fromkeys(found))[:limit]


# -- the policy -----------------------------------------------------------------------------------------------


def _beyond(spec: FirewallSpec) -> Iface:
    """The interfaces tunnel traffic may leave by: the egress, or any but the tunnel."""
    return Iface(spec.egress) if spec.egress is not None else Iface(spec.iface, negated=True)


def _forward(spec: FirewallSpec) -> list[Rule]:
    wg, not_wg = Iface(spec.iface), Iface(spec.iface, negated=True)
    rules = []
    if spec.block_metadata:
        rules += [Rule("forward", "drop", "cloud metadata", iif=wg, daddr=net) for net in (METADATA4, METADATA6)]
    # Before the replies' accept: closing peer-to-peer also ends the flows it had let through.
    if spec.peer_to_peer:
        rules.append(Rule("forward", "accept", "peer to peer (open)", iif=wg, oif=wg))
    else:
        rules.append(Rule("forward", "drop", "peer to peer (closed)", iif=wg, oif=wg))
    rules.append(Rule("forward", "accept", "replies to peers", oif=wg, ct=REPLIES))
    if spec.lan_to_peers:
        rules.append(Rule("forward", "accept", "connections to peers (open)", iif=not_wg, oif=wg))
    else:
        rules.append(Rule("forward", "drop", "connections to peers (closed)", iif=not_wg, oif=wg))
    rules.append(Rule("forward", "accept", "peers to the networks beyond", iif=wg, oif=_beyond(spec)))
    return rules


def _nat(spec: FirewallSpec) -> list[Rule]:
    # The host's own packets to its tunnel addresses (a DNS query to 10.13.13.1) leave by the loopback with a
    # tunnel source: "every interface but the tunnel" must not masquerade them.
    rules = [] if spec.egress is not None else [Rule("postrouting", "accept", "no NAT on the loopback",
                                                     oif=Iface(LOOPBACK))]
    return rules + [Rule("postrouting", "masquerade", "NAT of the tunnel", oif=_beyond(spec), saddr=net)
                    for net in spec.subnets]


def _dns_rules(spec: FirewallSpec, verdict: Verdict, comment: str, version: int | None = None,
               **match: Any) -> list[Rule]:
    """Rules for DNS to the forwarder's addresses (of IPv`version` only, when given)."""
    return [Rule("input", verdict, comment, daddr=ipaddress.ip_network(address), proto=proto, dport=DNS_PORT,
                 **match)
            for address in spec.addresses if version in (None, address.version) for proto in ("udp", "tcp")]


def _api_rules(spec: FirewallSpec, verdict: Verdict, comment: str, **match: Any) -> list[Rule]:
    """Rules for the API port on the tunnel addresses (where the API listens by default)."""
    return [Rule("input", verdict, comment, daddr=ipaddress.ip_network(address), proto="tcp", dport=spec.api_port,
                 **match) for address in spec.addresses]


def _input(spec: FirewallSpec) -> list[Rule]:
    wg, not_wg = Iface(spec.iface), Iface(spec.iface, negated=True)
    rules = [
        Rule("input", "accept", "WireGuard", iif=not_wg, proto="udp", dport=spec.listen_port),
        Rule("input", "accept", "replies to the host", iif=wg, ct=REPLIES),
    ]
    if spec.host_access:
        rules.append(Rule("input", "accept", "host access (open)", iif=wg))
    else:
        # Ping of the server's tunnel address is the first thing users try, and path MTU discovery needs ICMP.
        rules += [Rule("input", "accept", "ICMP from peers", iif=wg, proto=p) for p in ("icmp", "icmpv6")]
        if spec.dns:
            rules += _dns_rules(spec, "accept", "DNS from peers", iif=wg)
        if spec.api_port is not None:
            rules.append(Rule("input", "accept", "API from peers", iif=wg, proto="tcp", dport=spec.api_port))
        rules.append(Rule("input", "drop", "host access (closed)", iif=wg))
    if spec.dns:
        rules += _dns_rules(spec, "accept", "DNS from the host itself", iif=Iface(LOOPBACK))
        for net in spec.dns_clients:
            rules += _dns_rules(spec, "accept", "DNS from dns_clients", net.version, saddr=net)
        rules += _dns_rules(spec, "drop", "DNS from outside the tunnel (closed)", iif=not_wg)
    if spec.api_port is not None:
        # The kernel accepts a packet for the tunnel address on any interface: a neighbour that routes the tunnel
        # subnet through this host (another container on its bridge, say) must not reach the API that way.
        rules += _api_rules(spec, "accept", "API from the host itself", iif=Iface(LOOPBACK))
        rules += _api_rules(spec, "drop", "API from outside the tunnel (closed)", iif=not_wg)
    return rules


def policy(spec: FirewallSpec) -> list[Rule]:
    """Every rule of our chains for `spec`, in evaluation order (forward, postrouting, input)."""
    return _forward(spec) + _nat(spec) + _input(spec)


# -- nftables -------------------------------------------------------------------------------------------------


def table_name(iface: str) -> str:
    """`bulwark_<iface>`, with characters nft identifiers cannot hold written as `_xHH`."""
    safe = re.sub(r"[^A-Za-z0-9_]", lambda m: f"_x{ord(m.group()):02x}", checked_ifname(iface))
    return f"bulwark_{safe}"


_NFT_HOOKS: dict[Chain, tuple[str, str]] = {
    "forward": ("filter", "filter"),
    "postrouting": ("nat", "srcnat"),
    "input": ("filter", "filter"),
}
_NFT_PROTO = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "ipv6-icmp"}


def _nft_iface(key: str, match: Iface) -> str:
    return f'{key} {"!= " if match.negated else ""}"{match.name}"'


def nft_rule(rule: Rule) -> str:
    """One rule in nft syntax (with a counter, so `nft list` shows what it matched)."""
    parts = []
    selector = "ip" if rule.family == 4 else "ip6"
    if rule.family is not None and rule.saddr is None and rule.daddr is None and rule.proto not in ("icmp", "icmpv6"):
        parts.append(f"meta nfproto ipv{rule.family}")
    if rule.iif is not None:
        parts.append(_nft_iface("iifname", rule.iif))
    if rule.oif is not None:
        parts.append(_nft_iface("oifname", rule.oif))
    if rule.saddr is not None:
        parts.append(f"{selector} saddr {rule.saddr}")
    if rule.daddr is not None:
        parts.append(f"{selector} daddr {rule.daddr}")
    if rule.dport is not None:
        parts.append(f"{rule.proto} dport {rule.dport}")
    elif rule.proto is not None:
        parts.append(f"meta l4proto {_NFT_PROTO[rule.proto]}")
    if rule.ct:
        parts.append(f"ct state {','.join(rule.ct)}")
    parts += ["counter", rule.verdict, f'comment "{rule.comment}"']
    return " ".join(parts)


def render_nft(spec: FirewallSpec) -> str:
    """The `nft -f -` script that (re)creates our table atomically.

    The leading `table ...` + `delete table ...` pair makes the load idempotent: the old table (if any) is
    replaced within the same transaction, so there is no moment without rules.
    """
    name = table_name(spec.iface)
    rules = policy(spec)
    lines = [f"table inet {name}", f"delete table inet {name}", f"table inet {name} {{"]
    for chain in CHAINS:
        kind, priority = _NFT_HOOKS[chain]
        lines += [f"\tchain {chain} {{", f"\t\ttype {kind} hook {chain} priority {priority}; policy accept;"]
        lines += [f"\t\t{nft_rule(r)}" for r in rules if r.chain == chain]
        lines.append("\t}")
    lines.append("}")
    script = "\n".join(lines) + "\n"
    if "\r" in script:  # every value is checked; this guards the guard
        raise ValueError("a carriage return in the nft script")
    return script


def rules_from_nft(data: Mapping[str, Any], table: str) -> list[Rule]:
    """The rules of our `table` in `nft -j list ...` output, in order; ValueError for a rule we do not write."""
    rules = []
    for item in data.get("nftables", []):
        rule = item.get("rule") if isinstance(item, dict) else None
        if rule is None or rule.get("family") != "inet" or rule.get("table") != table:
            continue
        rules.append(_nft_to_rule(rule))
    return rules


def _nft_to_rule(rule: Mapping[str, Any]) -> Rule:
    chain = rule.get("chain")
    values: dict[str, Any] = {}
    verdict = None
    for expr in rule.get("expr", []):
        if "counter" in expr:
            continue
        found = next((v for v in ("accept", "drop", "masquerade") if v in expr), None)
        if found is not None:
            verdict = found
            continue
        if "match" not in expr:
            raise ValueError(f"a rule Bulwark does not write: {expr}")
        _nft_match(expr["match"], values)
    if chain not in CHAINS or verdict is None:
        raise ValueError(f"a rule Bulwark does not write in chain {chain}: {rule.get('expr')}")
    return Rule(chain, verdict, str(rule.get("comment", "")), **values)  # type: ignore[arg-type]


def _nft_match(match: Mapping[str, Any], values: dict[str, Any]) -> None:
    left, right, op = match.get("left", {}), match.get("right"), match.get("op", "==")
    if "meta" in left:
        key = left["meta"].get("key")
        if key in ("iifname", "oifname") and op in ("==", "!="):
            values[key[:3]] = Iface(str(right), negated=op == "!=")
        elif key == "nfproto" and op == "==":
            values["family"] = {"ipv4": 4, "ipv6": 6}[str(right)]
        elif key == "l4proto" and op == "==":
            values["proto"] = {v: k for k, v in _NFT_PROTO.items()}[str(right)]
        else:
            raise ValueError(f"a match Bulwark does not write: {match}")
    elif "payload" in left and op == "==":
        protocol, name = left["payload"].get("protocol"), left["payload"].get("field")
        if protocol in ("ip", "ip6") and name in ("saddr", "daddr"):
            if isinstance(right, dict) and "prefix" in right:
                right = f"{right['prefix']['addr']}/{right['prefix']['len']}"
            values[name] = ipaddress.ip_network(str(right))
        elif protocol in ("tcp", "udp") and name == "dport":
            values["proto"], values["dport"] = protocol, int(right)  # type: ignore[arg-type]
        else:
            raise ValueError(f"a match Bulwark does not write: {match}")
    elif "ct" in left and left["ct"].get("key") == "state" and op in ("==", "in"):
        values["ct"] = tuple(right) if isinstance(right, list) else (str(right),)
    else:
        raise ValueError(f"a match Bulwark does not write: {match}")


# -- iptables -------------------------------------------------------------------------------------------------


def chain_names(iface: str) -> tuple[str, str]:
    """The iptables chains: (forward and nat, input)."""
    checked_ifname(iface)
    return f"BULWARK-{iface}", f"BULWARK-{iface}-in"


def iptables_chain(iface: str, chain: Chain) -> tuple[str, str, str]:
    """(table, built-in chain, our chain) holding `chain`'s rules in the iptables rendering."""
    fwd, inp = chain_names(iface)
    return {"forward": ("filter", "FORWARD", fwd), "input": ("filter", "INPUT", inp),
            "postrouting": ("nat", "POSTROUTING", fwd)}[chain]


_IPT_PROTO = {4: {"tcp": "tcp", "udp": "udp", "icmp": "icmp"}, 6: {"tcp": "tcp", "udp": "udp", "icmpv6": "ipv6-icmp"}}
_IPT_TARGET = {"accept": "ACCEPT", "drop": "DROP", "masquerade": "MASQUERADE"}


def iptables_rule(rule: Rule, chain: str, version: int) -> str:
    """One rule as an `iptables-restore` line (`-A CHAIN ...`) for IPv`version`."""
    parts = [f"-A {chain}"]
    for flag, match in (("-i", rule.iif), ("-o", rule.oif)):
        if match is not None:
            parts.append(f"{'! ' if match.negated else ''}{flag} {match.name}")
    if rule.saddr is not None:
        parts.append(f"-s {rule.saddr}")
    if rule.daddr is not None:
        parts.append(f"-d {rule.daddr}")
    if rule.proto is not None:
        parts.append(f"-p {_IPT_PROTO[version][rule.proto]}")
    if rule.ct:
        parts.append(f"-m conntrack --ctstate {','.join(s.upper() for s in rule.ct)}")
    if rule.dport is not None:
        parts.append(f"-m {rule.proto} --dport {rule.dport}")
    parts.append(f'-m comment --comment "{rule.comment}" -j {_IPT_TARGET[rule.verdict]}')
    return " ".join(parts)


# Jumps from the built-in chains to ours, inserted first so that the metadata drop cannot be bypassed by an
# earlier accept.
_JUMPS: tuple[tuple[str, str, int], ...] = (("filter", "FORWARD", 0), ("filter", "INPUT", 1),
                                             ("nat", "POSTROUTING", 0))


def render_iptables(spec: FirewallSpec, version: int, jumps: Mapping[tuple[str, str], int] | None = None) -> str:
    """The `iptables-restore --noflush` script for IPv`version` that installs or replaces our chains.

    One transaction per table: declaring our chains flushes them if they exist, and the jumps already there
    (`jumps[(table, builtin)]` of them) are removed and one put back first, in the same commit. So a reader,
    and a packet, sees either the old rules or the new ones: never a moment without NAT or the metadata drop.
    """
    names = chain_names(spec.iface)
    rules = [r for r in (rule.for_family(version) for rule in policy(spec)) if r is not None]
    existing = jumps or {}
    lines = []
    for table in ("filter", "nat"):
        ours = sorted({names[i] for t, _, i in _JUMPS if t == table})
        lines.append(f"*{table}")
        lines += [f":{name} - [0:0]" for name in ours]
        lines += [f"-F {name}" for name in ours]
        for rule in rules:
            rule_table, _, chain = iptables_chain(spec.iface, rule.chain)
            if rule_table == table:
                lines.append(iptables_rule(rule, chain, version))
        for jump_table, builtin, index in _JUMPS:
            if jump_table == table:
                lines += [f"-D {builtin} -j {names[index]}"] * existing.get((table, builtin), 0)
                lines.append(f"-I {builtin} 1 -j {names[index]}")
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def render_iptables_removal(iface: str, jumps: Mapping[tuple[str, str], int], chains: Iterable[tuple[str, str]]
                            ) -> str:
    """The `iptables-restore --noflush` script that removes our jumps and our `chains` ((table, name) pairs
    that exist), in one transaction per table."""
    names = chain_names(iface)
    present = set(chains)
    lines = []
    for table in ("filter", "nat"):
        body = []
        for jump_table, builtin, index in _JUMPS:
            if jump_table == table:
                body += [f"-D {builtin} -j {names[index]}"] * jumps.get((table, builtin), 0)
        for t, name in sorted(present):
            if t == table:
                body += [f"-F {name}", f"-X {name}"]
        if body:
            lines += [f"*{table}", *body, "COMMIT"]
    return "\n".join(lines) + "\n" if lines else ""


def rules_from_iptables(iface: str, listed: Mapping[Chain, Sequence[str]], version: int) -> list[Rule]:
    """Our rules from `iptables -S CHAIN` output (`listed[chain]`, the lines of the chain holding it), in the
    order of `CHAINS`; ValueError for a rule we do not write."""
    rules = []
    for chain in CHAINS:
        _, _, name = iptables_chain(iface, chain)
        for line in listed.get(chain, ()):
            words = shlex.split(line)
            if words[:2] == ["-A", name]:
                rules.append(_iptables_to_rule(chain, words[2:], version))
    return rules


def _iptables_to_rule(chain: Chain, words: list[str], version: int) -> Rule:
    values: dict[str, Any] = {"family": version}
    verdict, comment, negate = None, "", False
    protocols = {v: k for k, v in _IPT_PROTO[version].items()}
    i = 0
    while i < len(words):
        word = words[i]
        arg = words[i + 1] if i + 1 < len(words) else ""
        i += 2
        if word == "!":
            negate, i = True, i - 1
            continue
        if word in ("-i", "-o"):
            values["iif" if word == "-i" else "oif"] = Iface(arg, negated=negate)
        elif word in ("-s", "-d") and not negate:
            values["saddr" if word == "-s" else "daddr"] = ipaddress.ip_network(arg)
        elif word == "-p" and not negate and arg in protocols:
            values["proto"] = protocols[arg]
        elif word == "-m" and arg in ("conntrack", "comment", "tcp", "udp"):
            pass  # the options that follow say what it matches
        elif word == "--ctstate" and not negate:
            values["ct"] = tuple(s.lower() for s in arg.split(","))
        elif word == "--dport" and not negate:
            values["dport"] = int(arg)
        elif word == "--comment":
            comment = arg
        elif word == "-j" and arg in ("ACCEPT", "DROP", "MASQUERADE"):
            verdict = arg.lower()
        else:
            raise ValueError(f"an iptables rule Bulwark does not write: {' '.join(words)}")
        negate = False
    if verdict is None:
        raise ValueError(f"an iptables rule Bulwark does not write: {' '.join(words)}")
    return Rule(chain, verdict, comment, **values)  # type: ignore[arg-type]
