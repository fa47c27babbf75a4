"""IP configuration around the WireGuard link: addresses, MTU, up/down, routes, forwarding, egress.

Everything goes through a `Runner` (so it works inside a network namespace), each change is logged,
and each change returns an `Undo` that reverses it (push it on a `RollbackStack`). Routes Bulwark adds
are tagged (`ROUTE_PROTOCOL`) so that `sync_routes` removes only its own.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bulwark_vpn.dataplane.runner import Runner, Undo
from bulwark_vpn.errors import SystemActionError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

FORWARD_SYSCTLS = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}


def _json(runner: Runner, argv: list[str]) -> list[dict[str, Any]]:
    result = runner.run(argv, quiet=True)
    text = result.stdout.decode().strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SystemActionError(f"cannot parse the output of '{' '.join(argv)}': {exc}") from exc
    return data if isinstance(data, list) else []


def _family(value: IPInterface | IPNetwork) -> str:
    return "-6" if value.version == 6 else "-4"


# --- addresses --------------------------------------------------------------------------------


def addresses_on(runner: Runner, iface: str) -> set[IPInterface]:
    """The global addresses on `iface` (link-local ones excluded)."""
    found: set[IPInterface] = set()
    for link in _json(runner, ["ip", "-j", "address", "show", "dev", iface]):
        for info in link.get("addr_info", []):
            if info.get("scope") == "link":
                continue
            found.add(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}"))
    return found


def add_address(runner: Runner, iface: str, address: IPInterface) -> Undo:
    """Add `address` to `iface` (IPv6 without duplicate address detection, as on a point-to-point link)."""
    argv = ["ip", _family(address), "address", "add", str(address), "dev", iface]
    if address.version == 6:
        argv.append("nodad")
    runner.run(argv)
    return Undo(f"remove address {address} from {iface}", lambda: remove_address(runner, iface, address))


def remove_address(runner: Runner, iface: str, address: IPInterface) -> None:
    """Remove `address` from `iface`."""
    runner.run(["ip", _family(address), "address", "del", str(address), "dev", iface])


def ensure_addresses(runner: Runner, iface: str, addresses: Iterable[IPInterface]) -> list[Undo]:
    """Add the addresses `iface` lacks (others are left alone); return the undos of those added."""
    present = addresses_on(runner, iface)
    return [add_address(runner, iface, a) for a in addresses if a not in present]


# --- link: MTU, up/down -----------------------------------------------------------------------


def link_info(runner: Runner, iface: str) -> dict[str, Any]:
    """`ip -j link show dev IFACE` for one link."""
    links = _json(runner, ["ip", "-j", "link", "show", "dev", iface])
    if not links:
        raise SystemActionError(f"interface '{iface}' not found: bring it up first")
    return links[0]


def get_mtu(runner: Runner, iface: str) -> int:
    """The MTU of `iface`."""
    return int(link_info(runner, iface)["mtu"])


def set_mtu(runner: Runner, iface: str, mtu: int) -> Undo:
    """Set the MTU of `iface`; the undo restores the previous one."""
    before = get_mtu(runner, iface)
    runner.run(["ip", "link", "set", "mtu", str(mtu), "dev", iface])
    return Undo(f"restore MTU {before} on {iface}", lambda: set_mtu(runner, iface, before))


def is_up(runner: Runner, iface: str) -> bool:
    """True if `iface` is administratively up."""
    return "UP" in link_info(runner, iface).get("flags", [])


def set_up(runner: Runner, iface: str) -> Undo:
    """Bring `iface` up; the undo brings it down."""
    runner.run(["ip", "link", "set", "up", "dev", iface])
    return Undo(f"set {iface} down", lambda: set_down(runner, iface))


def set_down(runner: Runner, iface: str) -> None:
    """Bring `iface` down."""
    runner.run(["ip", "link", "set", "down", "dev", iface])


# --- routes -----------------------------------------------------------------------------------


# Routes Bulwark adds carry this protocol number (unassigned in iproute2's rt_protos), so a sync deletes
# only routes it added: connected subnets (proto kernel), link-local ones, and routes an admin or a
# routing daemon put on the interface are never touched.
ROUTE_PROTOCOL = "98"


def routes_on(runner: Runner, iface: str, *, ours: bool = False) -> set[IPNetwork]:
    """The destinations routed to `iface` in the main table (IPv4 and IPv6, link-local excluded).

    With `ours=True`, only the routes Bulwark added (tagged with ROUTE_PROTOCOL).
    """
    found: set[IPNetwork] = set()
    only = ["proto", ROUTE_PROTOCOL] if ours else []
    for family in ("-4", "-6"):
        for route in _json(runner, ["ip", family, "-j", "route", "show", "dev", iface, *only]):
            dst = route.get("dst", "")
            if dst == "default":
                dst = "0.0.0.0/0" if family == "-4" else "::/0"
            net = ipaddress.ip_network(dst, strict=False)
            if not (net.version == 6 and net.is_link_local):
                found.add(net)
    return found


def _route_argv(verb: str, iface: str, network: IPNetwork) -> list[str]:
    tag = ["proto", ROUTE_PROTOCOL] if verb == "add" else []
    return ["ip", _family(network), "route", verb, str(network), "dev", iface, *tag]


def _route_undo(runner: Runner, iface: str, network: IPNetwork) -> Undo:
    return Undo(f"remove route {network} dev {iface}", lambda: remove_route(runner, iface, network))


def add_route(runner: Runner, iface: str, network: IPNetwork) -> Undo:
    """Route `network` to `iface` (tagged as Bulwark's); the undo removes the route."""
    runner.run(_route_argv("add", iface, network))
    return _route_undo(runner, iface, network)


def remove_route(runner: Runner, iface: str, network: IPNetwork) -> None:
    """Remove the route of `network` to `iface`."""
    runner.run(_route_argv("del", iface, network))


# A peer command and the supervisor may change the same route at the same moment: the loser's
# "already there" / "already gone" is the outcome both wanted, not a failure.
_RACE_LOST = {"add": "File exists", "del": "No such process"}


def _change_route(runner: Runner, verb: str, iface: str, network: IPNetwork) -> bool:
    """Add or delete one route; False if another process did it first."""
    argv = _route_argv(verb, iface, network)
    result = runner.run(argv, check=False)
    if result.returncode == 0:
        return True
    if _RACE_LOST[verb] in result.stderr.decode(errors="replace"):
        return False
    raise runner.failure(argv, result)


def ensure_routes(runner: Runner, iface: str, networks: Iterable[IPNetwork]) -> list[Undo]:
    """Add the routes to `iface` that are missing; return the undos of those added."""
    present = routes_on(runner, iface)
    added = [n for n in dict.fromkeys(networks) if n not in present and _change_route(runner, "add", iface, n)]
    return [_route_undo(runner, iface, n) for n in added]


def remove_routes(runner: Runner, iface: str, networks: Iterable[IPNetwork]) -> list[IPNetwork]:
    """Remove those of `networks` that Bulwark routed to `iface`; return the ones removed."""
    ours = routes_on(runner, iface, ours=True)
    return [n for n in dict.fromkeys(networks) if n in ours and _change_route(runner, "del", iface, n)]


def sync_routes(runner: Runner, iface: str, wanted: Iterable[IPNetwork]) -> tuple[list[IPNetwork], list[IPNetwork]]:
    """Route exactly `wanted` to `iface`: add the missing routes, remove Bulwark's routes nobody wants
    (other routes on the interface are left alone). Return (added, removed); no command when in sync."""
    wanted = list(dict.fromkeys(wanted))
    present = routes_on(runner, iface)
    ours = routes_on(runner, iface, ours=True)
    removed = [n for n in sorted(ours, key=str) if n not in wanted and _change_route(runner, "del", iface, n)]
    added = [n for n in wanted if n not in present and _change_route(runner, "add", iface, n)]
    return added, removed


# --- forwarding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forwarding:
    """IP forwarding switches (None in an argument means "leave as is")."""

    ipv4: bool
    ipv6: bool


def _read_sysctl(runner: Runner, name: str) -> str:
    # A missing key (IPv6 disabled in the kernel) reads as "" rather than failing.
    return runner.run(["sysctl", "-n", name], quiet=True, check=False).stdout.decode().strip()


def _write_sysctl(runner: Runner, name: str, value: str) -> None:
    runner.run(["sysctl", "-q", "-w", f"{name}={value}"])


def read_forwarding(runner: Runner) -> Forwarding:
    """The current net.ipv4.ip_forward and net.ipv6.conf.all.forwarding."""
    return Forwarding(
        ipv4=_read_sysctl(runner, FORWARD_SYSCTLS[4]) == "1",
        ipv6=_read_sysctl(runner, FORWARD_SYSCTLS[6]) == "1",
    )


def set_forwarding(runner: Runner, ipv4: bool | None = None, ipv6: bool | None = None) -> Undo:
    """Set the forwarding switches that are given and differ; the undo restores the previous values."""
    before = read_forwarding(runner)
    changed: dict[int, bool] = {}
    for version, wanted, current in ((4, ipv4, before.ipv4), (6, ipv6, before.ipv6)):
        if wanted is not None and wanted != current:
            _write_sysctl(runner, FORWARD_SYSCTLS[version], "1" if wanted else "0")
            changed[version] = current

    def restore() -> None:
        for version, value in changed.items():
            _write_sysctl(runner, FORWARD_SYSCTLS[version], "1" if value else "0")

    return Undo("restore IP forwarding", restore)


# --- egress -----------------------------------------------------------------------------------


def egress_interface(runner: Runner, family: int = 4) -> str | None:
    """The interface of the default route (`ip -j route show default`), or None without one."""
    flag = "-6" if family == 6 else "-4"
    for route in _json(runner, ["ip", flag, "-j", "route", "show", "default"]):
        if route.get("dev"):
            return str(route["dev"])
    return None
