"""What the host's nftables ruleset does to one packet: a small evaluator over `nft -j list ruleset`.

This module owns the question "would another table drop (or redirect) this packet?", asked by the doctor for a
client's UDP packet to the listen port (input path) and for forwarded tunnel traffic (forward path). It is pure:
it takes the parsed JSON and a `Packet` model and returns `ChainVerdict`s, one per base chain on the hooks asked.

Why every base chain separately: in nftables each base chain on a hook sees the packet; an accept ends only its
own chain while a drop anywhere is final. So Bulwark's own table (policy accept) cannot override another table's
drop, and the answer is the list of other base chains that drop. iptables-nft rules live in the same ruleset
(tables `ip filter`, `ip nat`...), so `iptables -P FORWARD DROP` is found here too.

Matches the evaluator cannot decide for the packet (a source address, an interface it does not know, a rate
limit) make a rule *conditional*: a conditional drop is a warning, a conditional accept keeps a drop policy
from being certain.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136, "dccp": 33, "esp": 50,
              "ah": 51, "gre": 47, "ipv6-icmp": 58}
_L4_PAYLOADS = {"tcp", "udp", "sctp", "dccp", "udplite", "icmp", "icmpv6"}
_IPTABLES_TABLES = {"filter", "nat", "mangle", "raw", "security"}
_MAX_DEPTH = 16


@dataclass(frozen=True)
class Packet:
    """What we know about a packet; None means unknown (any value possible)."""

    family: int  # 4 or 6
    l4proto: str | None = None
    dport: int | None = None
    iifname: str | None = None
    oifname: str | None = None
    ct_state: str = "new"
    saddr: IPNetwork | None = None
    daddr: IPNetwork | None = None


@dataclass(frozen=True)
class Finding:
    """A rule (or a chain policy) that drops or redirects the packet."""

    family: str
    table: str
    chain: str
    handle: int | None  # None: the chain's policy
    text: str  # the rule in nft syntax (approximate), or "policy drop"
    certain: bool

    @property
    def where(self) -> str:
        return f"table {self.family} {self.table} chain {self.chain}"

    @property
    def is_iptables(self) -> bool:
        """A built-in chain of an iptables-nft table (managed with iptables/ip6tables)."""
        return self.family in ("ip", "ip6") and self.table in _IPTABLES_TABLES and self.chain.isupper()


@dataclass
class ChainVerdict:
    """The outcome of one base chain for the packet."""

    family: str
    table: str
    chain: str
    hook: str
    verdict: str  # "accept", "drop" (certain), "maybe" (dropped only under conditions), "pass"
    finding: Finding | None = None
    conditional: list[Finding] = field(default_factory=list)  # drops that apply only under conditions
    accepted_by: str | None = None


class Ruleset:
    """Chains and rules of `nft -j list ruleset`, indexed for evaluation."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.chains: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.rules: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for item in data.get("nftables", []):
            if "chain" in item:
                chain = item["chain"]
                key = (chain["family"], chain["table"], chain["name"])
                self.chains[key] = chain
                self.rules.setdefault(key, [])
            elif "rule" in item:
                rule = item["rule"]
                self.rules.setdefault((rule["family"], rule["table"], rule["chain"]), []).append(rule)

    def base_chains(self, hooks: tuple[str, ...], types: tuple[str, ...], families: tuple[str, ...],
                    skip_tables: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        return [c for c in self.chains.values()
                if c.get("hook") in hooks and c.get("type") in types and c["family"] in families
                and c["table"] not in skip_tables]

    def evaluate(self, packet: Packet, hooks: tuple[str, ...], types: tuple[str, ...] = ("filter",),
                 skip_tables: frozenset[str] = frozenset()) -> list[ChainVerdict]:
        """The verdict of every base chain on `hooks` for `packet` (chains of the packet's family and inet)."""
        families = ("ip", "inet") if packet.family == 4 else ("ip6", "inet")
        return [self._base(chain, packet) for chain in self.base_chains(hooks, types, families, skip_tables)]

    def _base(self, chain: dict[str, Any], packet: Packet) -> ChainVerdict:
        key = (chain["family"], chain["table"], chain["name"])
        walk = _Walk(self, packet)
        verdict, finding = walk.run(key, 0)
        result = ChainVerdict(*key, hook=chain["hook"], verdict="pass", conditional=walk.conditional_drops,
                              accepted_by=walk.accepted_by)
        if verdict == "accept":
            result.verdict = "accept"
        elif verdict == "drop":
            result.verdict, result.finding = "drop", finding
        elif chain.get("policy") == "drop":
            policy = Finding(*key, handle=None, text="policy drop", certain=not walk.conditional_accepts)
            if walk.conditional_accepts:
                result.verdict, result.finding = "maybe", policy
                result.accepted_by = "; ".join(walk.conditional_accepts)
            else:
                result.verdict, result.finding = "drop", policy
        elif walk.conditional_drops:
            result.verdict = "maybe"
        return result


class _Walk:
    """One traversal of a base chain and the chains it jumps to."""

    def __init__(self, ruleset: Ruleset, packet: Packet) -> None:
        self.ruleset = ruleset
        self.packet = packet
        self.conditional_drops: list[Finding] = []
        self.conditional_accepts: list[str] = []
        self.accepted_by: str | None = None

    def run(self, key: tuple[str, str, str], depth: int) -> tuple[str, Finding | None]:
        """("accept" | "drop" | "return", the finding for a drop)."""
        if depth > _MAX_DEPTH:
            return "return", None
        for rule in self.ruleset.rules.get(key, []):
            exprs = rule.get("expr", [])
            condition = _condition(exprs, self.packet)
            if condition is False:
                continue
            certain = condition is True
            action, target = _action(exprs)
            text = describe(exprs)
            if action in ("drop", "reject", "dnat", "redirect"):
                finding = Finding(*key, handle=rule.get("handle"), text=text, certain=certain)
                if certain:
                    return "drop", finding
                self.conditional_drops.append(finding)
            elif action == "accept":
                if certain:
                    self.accepted_by = text
                    return "accept", None
                self.conditional_accepts.append(text)
            elif action in ("jump", "goto") and target is not None:
                verdict, found = self.run((key[0], key[1], target), depth + 1)
                if certain and verdict in ("accept", "drop"):
                    return verdict, found
                if certain and action == "goto":
                    return "return", None
                if not certain and verdict == "drop" and finding is not None:
                    self.conditional_drops.append(finding)
                elif not certain and verdict == "accept":
                    self.conditional_accepts.append(text)
            elif action == "return" and certain:
                return "return", None
        return "return", None


def _action(exprs: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    for expr in exprs:
        for name in ("accept", "drop", "reject", "return", "dnat", "redirect"):
            if name in expr:
                return name, None
        for name in ("jump", "goto"):
            if name in expr:
                return name, expr[name].get("target")
    return None, None


def _condition(exprs: list[dict[str, Any]], packet: Packet) -> bool | None:
    """True if every match of the rule holds for the packet, False if one cannot, None if undecidable."""
    result: bool | None = True
    for expr in exprs:
        if "match" in expr:
            value = _match(expr["match"], packet)
        elif "limit" in expr or "xt" in expr:
            value = None  # a rate limit or an iptables extension: holds only sometimes, or unknown to us
        else:
            continue
        if value is False:
            return False
        if value is None:
            result = None
    return result


def _match(match: dict[str, Any], packet: Packet) -> bool | None:
    left, right, op = match.get("left"), match.get("right"), match.get("op", "==")
    value = _packet_value(left, packet)
    if value is _UNKNOWN:
        return None
    if value is _ABSENT:
        # e.g. `tcp dport 22` for a UDP packet: the implicit protocol check fails, whatever the op.
        return False
    outcome = _compare(value, right, op)
    return outcome


class _Sentinel:
    pass


_UNKNOWN, _ABSENT = _Sentinel(), _Sentinel()


def _packet_value(left: Any, packet: Packet) -> Any:
    if not isinstance(left, dict):
        return _UNKNOWN
    if "payload" in left:
        return _payload_value(left["payload"], packet)
    if "meta" in left:
        key = left["meta"].get("key")
        if key == "l4proto":
            return _proto_value(packet.l4proto)
        if key == "nfproto":
            return "ipv4" if packet.family == 4 else "ipv6"
        if key == "protocol":
            return "ip" if packet.family == 4 else "ip6"
        if key in ("iifname", "oifname"):
            name = packet.iifname if key == "iifname" else packet.oifname
            return name if name is not None else _UNKNOWN
        return _UNKNOWN
    if "ct" in left and left["ct"].get("key") == "state" and "dir" not in left["ct"]:
        return ("ct", packet.ct_state)
    return _UNKNOWN


def _proto_value(proto: str | None) -> Any:
    return _PROTOCOLS.get(proto, proto) if proto is not None else _UNKNOWN


def _payload_value(payload: dict[str, Any], packet: Packet) -> Any:
    protocol, name = payload.get("protocol"), payload.get("field")
    if protocol in ("ip", "ip6"):
        if (protocol == "ip") != (packet.family == 4):
            return _ABSENT
        if name in ("protocol", "nexthdr"):
            return _proto_value(packet.l4proto)
        if name in ("saddr", "daddr"):
            address = packet.saddr if name == "saddr" else packet.daddr
            return address if address is not None else _UNKNOWN
        return _UNKNOWN
    if protocol in _L4_PAYLOADS or protocol == "th":
        if packet.l4proto is not None and protocol != "th" and protocol != packet.l4proto:
            return _ABSENT
        if packet.l4proto is None:
            return _UNKNOWN
        if name == "dport" and packet.dport is not None:
            return packet.dport
        return _UNKNOWN
    return _UNKNOWN


def _compare(value: Any, right: Any, op: str) -> bool | None:
    if isinstance(value, tuple) and value[0] == "ct":
        states = _flatten(right)
        held = value[1] in states
        return (not held) if op == "!=" else held
    contained = _member(value, right)
    if contained is None:
        return None
    if op == "!=":
        return not contained
    if op in ("==", "in"):
        return contained
    return None  # <, > and friends: not worth modelling


def _flatten(right: Any) -> set[str]:
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    if isinstance(right, list):
        return {str(item) for item in right}
    return {str(right)}


def _member(value: Any, right: Any) -> bool | None:
    """Is `value` in `right` (a literal, a set, a range, a prefix)? None when it cannot be decided."""
    if isinstance(right, dict):
        if "set" in right:
            answers = [_member(value, item) for item in right["set"]]
            if any(a is True for a in answers):
                return True
            return None if any(a is None for a in answers) else False
        if "range" in right:
            low, high = right["range"]
            if isinstance(value, int) and isinstance(low, int) and isinstance(high, int):
                return low <= value <= high
            if _is_network(value):
                return _network_in(value, f"{low}-{high}")
            return None
        if "prefix" in right:
            prefix = right["prefix"]
            return _network_in(value, f"{prefix['addr']}/{prefix['len']}") if _is_network(value) else None
        return None  # a named set (@name), a map, a concatenation: not modelled
    if isinstance(right, list):
        answers = [_member(value, item) for item in right]
        return True if any(a is True for a in answers) else (None if any(a is None for a in answers) else False)
    if _is_network(value):
        return _network_in(value, str(right))
    if isinstance(value, str) and isinstance(right, str) and right.endswith("*"):
        return value.startswith(right[:-1])
    if isinstance(value, int) and isinstance(right, str):
        right = _PROTOCOLS.get(right, right)
    if isinstance(value, str) and isinstance(right, int):
        return _PROTOCOLS.get(value) == right
    if isinstance(right, str) and right.startswith("@"):
        return None
    return value == right


def _is_network(value: Any) -> bool:
    return isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network)


def _network_in(network: IPNetwork, text: str) -> bool | None:
    """True if all of `network` is inside `text` (a CIDR, an address or a-b range), False if disjoint."""
    try:
        targets: list[IPNetwork]
        if "-" in text:
            low, high = (ipaddress.ip_address(x) for x in text.split("-", 1))
            targets = list(ipaddress.summarize_address_range(low, high))  # type: ignore[arg-type]
        else:
            targets = [ipaddress.ip_network(text, strict=False)]
    except (ValueError, TypeError):
        return None
    same = [t for t in targets if t.version == network.version]
    if any(network.subnet_of(t) for t in same):  # type: ignore[arg-type]
        return True
    if not any(t.overlaps(network) for t in same):  # type: ignore[arg-type]
        return False
    return None


# -- describing rules ------------------------------------------------------------------------------------


def describe(exprs: list[dict[str, Any]]) -> str:
    """A rule in (approximately) nft's own syntax, for evidence lines: `udp dport 51820 drop`."""
    parts = []
    for expr in exprs:
        if "match" in expr:
            parts.append(_describe_match(expr["match"]))
        elif "counter" in expr:
            parts.append("counter")
        else:
            for name in ("accept", "drop", "return"):
                if name in expr:
                    parts.append(name)
            for name in ("reject", "dnat", "redirect", "masquerade"):
                if name in expr:
                    parts.append(name + _describe_nat(expr[name]))
            for name in ("jump", "goto"):
                if name in expr:
                    parts.append(f"{name} {expr[name].get('target')}")
    return " ".join(p for p in parts if p)


def _describe_nat(spec: Any) -> str:
    if not isinstance(spec, dict):
        return ""
    addr, port = spec.get("addr"), spec.get("port")
    if addr is None and port is None:
        return ""
    target = f"{addr}" if addr is not None else ""
    if port is not None:
        target += f":{port}"
    return f" to {target}"


def _describe_match(match: dict[str, Any]) -> str:
    left, right, op = match.get("left"), match.get("right"), match.get("op", "==")
    shown_op = "" if op in ("==", "in") else f"{op} "
    shown = _describe_value(right)
    if isinstance(left, dict) and left.get("meta", {}).get("key") in ("iifname", "oifname") and isinstance(right, str):
        shown = f'"{right}"'
    return f"{_describe_value(left)} {shown_op}{shown}"


def _describe_value(value: Any) -> str:
    if isinstance(value, dict):
        if "payload" in value:
            return f"{value['payload'].get('protocol')} {value['payload'].get('field')}"
        if "meta" in value:
            return f"meta {value['meta'].get('key')}"
        if "ct" in value:
            return f"ct {value['ct'].get('key')}"
        if "set" in value:
            return "{ " + ", ".join(_describe_value(v) for v in value["set"]) + " }"
        if "range" in value:
            return "-".join(str(v) for v in value["range"])
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        return "?"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


# -- iptables-nft extensions -------------------------------------------------------------------------------

_STATE_OPTION = re.compile(r"(!\s+)?--(?:ctstate|state)\s+(\S+)")


def resolve_conntrack_matches(data: dict[str, Any], rule_lines: Callable[[str, str, str], list[str]]) -> None:
    """Replace iptables-nft's opaque `xt` conntrack/state matches by the `ct state` match they stand for.

    `nft -j` shows `-m conntrack --ctstate ...` only as {"xt": {"name": "conntrack"}}; `rule_lines(family,
    table, chain)` returns that chain's `iptables -S` rules ("-A CHAIN ..."), in the same order as nft lists
    them, and the state list is read from there. Done in place; other xt matches stay undecidable.
    """
    position: dict[tuple[str, str, str], int] = {}
    for item in data.get("nftables", []):
        rule = item.get("rule")
        if rule is None:
            continue
        key = (rule["family"], rule["table"], rule["chain"])
        index = position.get(key, 0)
        position[key] = index + 1
        exprs = rule.get("expr", [])
        if not any(_is_state_xt(e) for e in exprs):
            continue
        lines = rule_lines(*key)
        if index >= len(lines):
            continue
        found = _STATE_OPTION.search(lines[index])
        if found is None:
            continue
        states = [s.lower() for s in found.group(2).split(",")]
        match = {"match": {"op": "!=" if found.group(1) else "in", "left": {"ct": {"key": "state"}}, "right": states}}
        rule["expr"] = [match if _is_state_xt(e) else e for e in exprs]


def _is_state_xt(expr: dict[str, Any]) -> bool:
    xt = expr.get("xt")
    return isinstance(xt, dict) and xt.get("type") == "match" and xt.get("name") in ("conntrack", "state")
