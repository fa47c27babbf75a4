"""NAT and forwarding rules for one WireGuard interface, in a table that Bulwark alone owns.

This module owns the firewall of the gateway: with nftables, one table per interface
(`table inet bulwark_wg0`), loaded atomically with `nft -f -` and removed with one
`nft delete table`, so nothing else on the host is touched. When `nft` is missing it falls back to
iptables with dedicated chains (`BULWARK-wg0`, `BULWARK-wg0-in`) jumped to from the built-in
chains, so removal is exact there too. `render_ruleset` is a pure function.

Why `policy accept` in our nftables chains: every base chain on a hook sees the packet, and a drop
anywhere is final while an accept only ends *our* chain. A drop policy in our table would therefore
block traffic that other tables (the host's own firewall, Docker, Kubernetes) mean to allow. With
policy accept our table can only add the drops it names (the cloud metadata service) and never makes
anyone else's traffic worse; its accepts document the intended flows and end our chain early.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from dataclasses import dataclass
from typing import Literal

from bulwark_vpn.dataplane.link import validate_ifname
from bulwark_vpn.dataplane.runner import Runner, Undo, missing_command_hint
from bulwark_vpn.errors import SystemActionError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
FirewallBackend = Literal["auto", "nft", "iptables"]

METADATA4 = ipaddress.IPv4Network("169.254.0.0/16")
METADATA6 = ipaddress.IPv6Network("fd00:ec2::254/128")
DNS_PORT = 53


@dataclass(frozen=True)
class FirewallSpec:
    """What the gateway's firewall allows.

    `egress=None` means no NAT and no forwarding to another interface (tunnel-only).
    `subnets` are the tunnel networks (IPv4 and/or IPv6) to masquerade out of `egress`.
    """

    iface: str
    egress: str | None
    subnets: tuple[IPNetwork, ...]
    listen_port: int
    block_metadata: bool = True
    dns: bool = True

    def __post_init__(self) -> None:
        validate_ifname(self.iface)
        if self.egress is not None:
            validate_ifname(self.egress)


def table_name(iface: str) -> str:
    """`bulwark_<iface>`, with characters nft identifiers cannot hold written as `_xHH`."""
    safe = re.sub(r"[^A-Za-z0-9_]", lambda m: f"_x{ord(m.group()):02x}", validate_ifname(iface))
    return f"bulwark_{safe}"


def chain_names(iface: str) -> tuple[str, str]:
    """The iptables fallback's (forward/nat, input) chain names."""
    return f"BULWARK-{iface}", f"BULWARK-{iface}-in"


def _nets(spec: FirewallSpec, version: int) -> list[IPNetwork]:
    return [n for n in spec.subnets if n.version == version]


def _forward_rules(spec: FirewallSpec) -> list[str]:
    wg = f'iifname "{spec.iface}"'
    rules = []
    if spec.block_metadata:
        rules.append(f'{wg} ip daddr {METADATA4} counter drop comment "cloud metadata"')
        rules.append(f'{wg} ip6 daddr {METADATA6.network_address} counter drop comment "cloud metadata"')
    rules.append(f'{wg} oifname "{spec.iface}" accept')
    if spec.egress is not None:
        rules.append(f'{wg} oifname "{spec.egress}" accept')
        rules.append(f'iifname "{spec.egress}" oifname "{spec.iface}" ct state established,related accept')
    return rules


def _nat_rules(spec: FirewallSpec) -> list[str]:
    if spec.egress is None:
        return []
    rules = []
    for version, selector in ((4, "ip"), (6, "ip6")):
        nets = _nets(spec, version)
        if nets:
            joined = ", ".join(str(n) for n in nets)
            rules.append(f'oifname "{spec.egress}" {selector} saddr {{ {joined} }} masquerade')
    return rules


def _input_rules(spec: FirewallSpec) -> list[str]:
    rules = [f"udp dport {spec.listen_port} accept"]
    if spec.dns:
        rules.append(f'iifname "{spec.iface}" meta l4proto {{ udp, tcp }} th dport {DNS_PORT} accept')
    return rules


def _chain(kind: str, hook: str, priority: str, rules: list[str]) -> list[str]:
    header = f"\t\ttype {kind} hook {hook} priority {priority}; policy accept;"
    return [f"\tchain {hook} {{", header, *(f"\t\t{rule}" for rule in rules), "\t}"]


def render_ruleset(spec: FirewallSpec) -> str:
    """The `nft -f -` script that (re)creates our table atomically.

    The leading `table ...` + `delete table ...` pair makes the load idempotent: the old table (if
    any) is replaced within the same transaction, so there is no moment without rules.
    """
    name = table_name(spec.iface)
    lines = [f"table inet {name}", f"delete table inet {name}", f"table inet {name} {{"]
    lines += _chain("filter", "forward", "filter", _forward_rules(spec))
    lines += _chain("nat", "postrouting", "srcnat", _nat_rules(spec))
    lines += _chain("filter", "input", "filter", _input_rules(spec))
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- iptables fallback ------------------------------------------------------------------------


def render_iptables(spec: FirewallSpec, version: int) -> str:
    """The `iptables-restore --noflush` script for one IP family (4 or 6)."""
    fwd, inp = chain_names(spec.iface)
    wg = f"-i {spec.iface}"
    filter_rules = []
    if spec.block_metadata:
        target = METADATA4 if version == 4 else METADATA6
        filter_rules.append(f"-A {fwd} {wg} -d {target} -j DROP")
    filter_rules.append(f"-A {fwd} {wg} -o {spec.iface} -j ACCEPT")
    if spec.egress is not None:
        filter_rules.append(f"-A {fwd} {wg} -o {spec.egress} -j ACCEPT")
        filter_rules.append(
            f"-A {fwd} -i {spec.egress} -o {spec.iface} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        )
    filter_rules.append(f"-A {inp} -p udp --dport {spec.listen_port} -j ACCEPT")
    if spec.dns:
        filter_rules += [f"-A {inp} {wg} -p {proto} --dport {DNS_PORT} -j ACCEPT" for proto in ("udp", "tcp")]
    # Our jumps go first so the metadata drop cannot be bypassed by an earlier accept.
    lines = [
        "*filter",
        f":{fwd} - [0:0]",
        f":{inp} - [0:0]",
        *filter_rules,
        f"-I FORWARD 1 -j {fwd}",
        f"-I INPUT 1 -j {inp}",
        "COMMIT",
    ]
    lines += ["*nat", f":{fwd} - [0:0]"]
    if spec.egress is not None:
        lines += [f"-A {fwd} -s {net} -o {spec.egress} -j MASQUERADE" for net in _nets(spec, version)]
    lines += [f"-A POSTROUTING -j {fwd}", "COMMIT"]
    return "\n".join(lines) + "\n"


# (table, built-in chain, index into chain_names) of every jump the fallback adds.
_IPT_JUMPS = (("filter", "FORWARD", 0), ("filter", "INPUT", 1), ("nat", "POSTROUTING", 0))


def _ipt(version: int) -> str:
    return "iptables" if version == 4 else "ip6tables"


def _ipt_present(runner: Runner, iface: str, version: int) -> bool:
    fwd, _ = chain_names(iface)
    argv = [_ipt(version), "-w", "-t", "filter", "-S", fwd]
    return runner.run(argv, check=False, quiet=True).returncode == 0


def _ipt_remove(runner: Runner, iface: str, version: int) -> bool:
    names = chain_names(iface)
    cmd = _ipt(version)
    if not _ipt_present(runner, iface, version):
        return False
    for table, builtin, index in _IPT_JUMPS:
        rule = [builtin, "-j", names[index]]
        while runner.run([cmd, "-w", "-t", table, "-C", *rule], check=False, quiet=True).returncode == 0:
            runner.run([cmd, "-w", "-t", table, "-D", *rule])
    for table, chain in (("filter", names[0]), ("filter", names[1]), ("nat", names[0])):
        if runner.run([cmd, "-w", "-t", table, "-S", chain], check=False, quiet=True).returncode == 0:
            runner.run([cmd, "-w", "-t", table, "-F", chain])
            runner.run([cmd, "-w", "-t", table, "-X", chain])
    return True


def _ipt_versions() -> list[int]:
    return [v for v in (4, 6) if shutil.which(_ipt(v) + "-restore")]


def _ipt_install(runner: Runner, spec: FirewallSpec) -> None:
    for version in _ipt_versions():
        _ipt_remove(runner, spec.iface, version)
        runner.run([f"{_ipt(version)}-restore", "-w", "--noflush"], input=render_iptables(spec, version).encode())


# --- public API -------------------------------------------------------------------------------


def firewall_backend(backend: FirewallBackend = "auto") -> Literal["nft", "iptables"]:
    """The backend to use: nftables when `nft` is installed, else iptables."""
    if backend != "auto":
        return backend
    if shutil.which("nft"):
        return "nft"
    if shutil.which("iptables"):
        return "iptables"
    raise SystemActionError(f"no firewall tool found: 'nft' is missing: {missing_command_hint('nft')}")


def install_firewall(runner: Runner, spec: FirewallSpec, backend: FirewallBackend = "auto") -> Undo:
    """Install (or atomically replace) our rules for `spec.iface`; the undo removes them."""
    chosen = firewall_backend(backend)
    if chosen == "nft":
        runner.run(["nft", "-f", "-"], input=render_ruleset(spec).encode())
    else:
        _ipt_install(runner, spec)
    return Undo(f"remove firewall of {spec.iface}", lambda: remove_firewall(runner, spec.iface, chosen))


def remove_firewall(runner: Runner, iface: str, backend: FirewallBackend = "auto") -> bool:
    """Remove exactly our table (or chains) for `iface`; return False if there was none."""
    chosen = firewall_backend(backend)
    if chosen == "nft":
        if not firewall_present(runner, iface, "nft"):
            return False
        runner.run(["nft", "delete", "table", "inet", table_name(iface)])
        return True
    removed = [_ipt_remove(runner, iface, version) for version in _ipt_versions()]
    return any(removed)


def firewall_present(runner: Runner, iface: str, backend: FirewallBackend = "auto") -> bool:
    """True if our table (or chains) for `iface` exist."""
    if firewall_backend(backend) == "nft":
        argv = ["nft", "list", "table", "inet", table_name(iface)]
        return runner.run(argv, check=False, quiet=True).returncode == 0
    return any(_ipt_present(runner, iface, version) for version in _ipt_versions())
