"""NAT and forwarding rules for one WireGuard interface, in a table that Bulwark alone owns.

This module owns installing, replacing, reading and removing the firewall of the gateway; the rules
themselves are data in `fwrules` (one list rendered for each tool). With nftables, one table per interface
(`table inet bulwark_wg0`), loaded atomically with `nft -f -` and removed with one `nft delete table`, so
nothing else on the host is touched. When `nft` is missing it falls back to iptables with dedicated chains
(`BULWARK-wg0`, `BULWARK-wg0-in`) jumped to from the built-in chains, replaced with one `iptables-restore`
transaction per family, so removal is exact there too and a reload leaves no moment without NAT.

Why `policy accept` in our nftables chains: every base chain on a hook sees the packet, and a drop
anywhere is final while an accept only ends *our* chain. A drop policy in our table would therefore
block traffic that other tables (the host's own firewall, Docker, Kubernetes) mean to allow. With
policy accept our table can only add the drops it names, all of them for traffic to, from or through
the tunnel interface (the cloud metadata service, and the exposures the settings keep closed), and
never makes anyone else's traffic worse; its accepts document the intended flows and end our chain early.
"""

from __future__ import annotations

import json
import shutil
from typing import Literal

from bulwark_vpn.dataplane import fwrules
from bulwark_vpn.dataplane.fwrules import (
    DNS_PORT,
    METADATA4,
    METADATA6,
    FirewallSpec,
    Rule,
    chain_names,
    table_name,
)
from bulwark_vpn.dataplane.runner import Runner, Undo, missing_command_hint
from bulwark_vpn.errors import SystemActionError
from bulwark_vpn.model import Settings

__all__ = [
    "DNS_PORT",
    "METADATA4",
    "METADATA6",
    "FirewallBackend",
    "FirewallSpec",
    "chain_names",
    "firewall_backend",
    "firewall_present",
    "install_firewall",
    "live_rules",
    "remove_firewall",
    "render_iptables",
    "render_ruleset",
    "spec_from_settings",
    "table_name",
]

FirewallBackend = Literal["auto", "nft", "iptables"]


def spec_from_settings(settings: Settings, iface: str | None = None) -> FirewallSpec:
    """The firewall the stored settings ask for (the gateway installs it; the doctor compares with it)."""
    subnets = (settings.subnet4,) + ((settings.subnet6,) if settings.subnet6 is not None else ())
    return FirewallSpec(
        iface=iface or settings.interface,
        egress=settings.egress_interface,
        subnets=subnets,
        listen_port=settings.listen_port,
        addresses=tuple(a.ip for a in settings.server_addresses),
        dns=settings.peer_dns == "auto",
        peer_to_peer=settings.peer_to_peer,
        lan_to_peers=settings.lan_to_peers,
        host_access=settings.host_access,
        dns_clients=settings.dns_clients,
        # The API port is open to peers (on the tunnel addresses only) when the API is served to them.
        api_port=settings.api_port if settings.serve else None,
    )


def render_ruleset(spec: FirewallSpec) -> str:
    """The `nft -f -` script that (re)creates our table atomically (see `fwrules.render_nft`)."""
    return fwrules.render_nft(spec)


def render_iptables(spec: FirewallSpec, version: int) -> str:
    """The `iptables-restore --noflush` script for one IP family, for a host without our chains yet."""
    return fwrules.render_iptables(spec, version)


# --- iptables fallback ------------------------------------------------------------------------


def _ipt(version: int) -> str:
    return "iptables" if version == 4 else "ip6tables"


def _ipt_lines(runner: Runner, version: int, table: str, chain: str) -> list[str] | None:
    """`iptables -S CHAIN` of one table, or None when the chain does not exist."""
    result = runner.run([_ipt(version), "-w", "-t", table, "-S", chain], check=False, quiet=True)
    return result.stdout.decode(errors="replace").splitlines() if result.returncode == 0 else None


def _ipt_present(runner: Runner, iface: str, version: int) -> bool:
    return _ipt_lines(runner, version, "filter", chain_names(iface)[0]) is not None


def _ipt_jumps(runner: Runner, iface: str, version: int) -> dict[tuple[str, str], int]:
    """How many jumps to our chains each built-in chain holds."""
    names = chain_names(iface)
    counts = {}
    for table, builtin, ours in (("filter", "FORWARD", names[0]), ("filter", "INPUT", names[1]),
                                 ("nat", "POSTROUTING", names[0])):
        lines = _ipt_lines(runner, version, table, builtin) or []
        counts[(table, builtin)] = sum(line.split() == ["-A", builtin, "-j", ours] for line in lines)
    return counts


def _ipt_remove(runner: Runner, iface: str, version: int) -> bool:
    names = chain_names(iface)
    chains = [(table, name) for table, name in (("filter", names[0]), ("filter", names[1]), ("nat", names[0]))
              if _ipt_lines(runner, version, table, name) is not None]
    jumps = _ipt_jumps(runner, iface, version)
    if not chains and not any(jumps.values()):
        return False
    script = fwrules.render_iptables_removal(iface, jumps, chains)
    runner.run([f"{_ipt(version)}-restore", "-w", "--noflush"], input=script.encode())
    return True


def _ipt_versions() -> list[int]:
    return [v for v in (4, 6) if shutil.which(_ipt(v) + "-restore")]


def _ipt_install(runner: Runner, spec: FirewallSpec) -> None:
    for version in _ipt_versions():
        script = fwrules.render_iptables(spec, version, _ipt_jumps(runner, spec.iface, version))
        runner.run([f"{_ipt(version)}-restore", "-w", "--noflush"], input=script.encode())


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
        runner.run(["nft", "-f", "-"], input=fwrules.render_nft(spec).encode())
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


def live_rules(runner: Runner, iface: str, backend: FirewallBackend = "auto") -> list[Rule] | None:
    """Our rules as the kernel holds them now (parsed back from `nft -j` or `iptables -S`), None when our
    table (or chains) are missing. ValueError when they hold a rule Bulwark does not write."""
    if firewall_backend(backend) == "nft":
        result = runner.run(["nft", "-j", "list", "table", "inet", table_name(iface)], check=False, quiet=True)
        if result.returncode != 0:
            return None
        return fwrules.rules_from_nft(json.loads(result.stdout.decode() or "{}"), table_name(iface))
    versions = [v for v in _ipt_versions() if _ipt_present(runner, iface, v)]
    if not versions:
        return None
    rules: list[Rule] = []
    for version in versions:
        listed = {}
        for chain in fwrules.CHAINS:
            table, _, name = fwrules.iptables_chain(iface, chain)
            listed[chain] = _ipt_lines(runner, version, table, name) or []
        rules += fwrules.rules_from_iptables(iface, listed, version)
    return rules
