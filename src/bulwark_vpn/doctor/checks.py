"""The server checks of `bulwark doctor`: is this gateway able to carry its peers' traffic, and if not, why?

Each check is a function of a `ServerContext` returning one `CheckResult` with its evidence and the exact fix.
`run_server_checks` runs them all, concurrently (they mostly wait on `ip`, `wg`, `nft`, `ss`; `HostFacts`
runs each query once), and returns them in the order of `SERVER_CHECKS`. The checks only read: the fixes
they carry are applied by `doctor.fixes.apply_fixes`, and only when asked.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dnslib import RCODE

from bulwark_vpn.dataplane import dns, firewall, fwrules, link
from bulwark_vpn.dataplane.apply import AddPeer, RemovePeer, SetInterface, UpdatePeer
from bulwark_vpn.dataplane.gateway import DEFAULT_RUN_DIR, ONLINE_WINDOW, device_changes
from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.doctor.common import address_kind, listing, plural, resolve
from bulwark_vpn.doctor.facts import ServerContext
from bulwark_vpn.doctor.model import CheckResult, Remedy, Status, fail, ok, skip, warn
from bulwark_vpn.doctor.nftrules import ChainVerdict, Finding, Packet, Ruleset
from bulwark_vpn.errors import BulwarkError, one_line
from bulwark_vpn.fsutil import PRIVATE_DIR, PRIVATE_FILE, SafeFolder
from bulwark_vpn.model import IPNetwork
from bulwark_vpn.store import STORE_NAME
from bulwark_vpn.values import format_endpoint, parse_endpoint

LOGGER = logging.getLogger("bulwark_vpn")

DEFAULT_MTU = 1420  # what wg-quick and wireguard-go use when no MTU is set
OVERHEAD4, OVERHEAD6 = 60, 80  # outer IP + UDP + WireGuard header and tag
TUN_DEVICE = Path("/dev/net/tun")
TUN_MAJOR, TUN_MINOR = 10, 200
DNS_PROBE_CAP = 5.0
_ENDPOINT_LINE = re.compile(r"(?mi)^\s*Endpoint\s*=\s*(\S+)")

Check = Callable[[ServerContext], CheckResult]
Ctx = TypeVar("Ctx")


def _needs_store(name: str, ctx: ServerContext) -> CheckResult | None:
    if not ctx.store.usable:
        return skip(name, "not checked: the store cannot be read (see the store check)")
    return None


def _needs_device(name: str, ctx: ServerContext) -> CheckResult | None:
    if (missing := _needs_store(name, ctx)) is not None:
        return missing
    if ctx.device() is None:
        return skip(name, f"not checked: interface '{ctx.iface}' is not up (see the interface check)")
    return None


def _needs_gateway(name: str, ctx: ServerContext) -> CheckResult | None:
    if (missing := _needs_store(name, ctx)) is not None:
        return missing
    if not ctx.running:
        return skip(name, f"not checked: the gateway is not running on '{ctx.iface}'")
    return None


# -- the store and its files ------------------------------------------------------------------------------


def check_store(ctx: ServerContext) -> CheckResult:
    path = ctx.config_dir / STORE_NAME
    view = ctx.store
    init = ctx.cli("init")
    if view.problem == "missing":
        return fail("store", f"no Bulwark store at {path}", f"create it: {init} --server-url PUBLIC_HOST")
    if view.problem is not None:
        return fail("store", f"{path}: {view.problem}",
                    f"restore {path} from a backup, or move it away and run '{init}' to adopt the rendered files")
    if view.server_key is None or view.settings is None:
        return fail("store", f"{path} has no server key: the server was never set up", f"run '{init}'")
    enabled = sum(row.enabled for row in view.rows)
    return ok("store", f"{path}: quick_check ok, schema {view.schema}, {plural(len(view.rows), 'peer')} "
                       f"({enabled} enabled)")


def _secret_file(name: str) -> bool:
    return not name.startswith("publickey-")


# find(1) walks 65,000 peer folders (390,000 entries) in C, several times faster than os.scandir and a stat per
# entry from Python; it prints only what is wrong: links, folders and secret files open to others.
_FIND_LOOSE = ["(", "-type", "l", "-printf", "l 0 %P\\0", ")", "-o",
               "(", "-type", "d", "-perm", "/077", "-printf", "d %m %P\\0", ")", "-o",
               "(", "-type", "f", "!", "-name", "publickey-*", "-perm", "/077", "-printf", "f %m %P\\0", ")"]


def _find_loose(root: Path) -> tuple[list[tuple[str, int, int]], list[str]] | None:
    """(loose folders and secret files, symbolic links) below `root` by find(1); None without it."""
    tool = shutil.which("find")
    if tool is None:
        return None
    result = subprocess.run([tool, str(root), "-mindepth", "1", *_FIND_LOOSE], capture_output=True, check=False)
    if result.returncode not in (0, 1):  # 1: an entry vanished meanwhile (a WAL checkpoint)
        return None
    loose: list[tuple[str, int, int]] = []
    links: list[str] = []
    for record in result.stdout.split(b"\0"):
        if not record:
            continue
        kind, mode, relative = record.decode(errors="surrogateescape").split(" ", 2)
        if kind == "l":
            links.append(relative)
        else:
            loose.append((os.path.join(root, relative), int(mode, 8), PRIVATE_DIR if kind == "d" else PRIVATE_FILE))
    return loose, links


def _walk_loose(root: Path) -> tuple[list[tuple[str, int, int]], list[str]]:
    """The same as _find_loose, in Python: one scandir per folder and one lstat per entry."""
    loose: list[tuple[str, int, int]] = []
    links: list[str] = []
    todo = [str(root)]
    while todo:
        folder = todo.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # removed meanwhile
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # removed meanwhile (a WAL checkpoint)
            if stat.S_ISLNK(info.st_mode):
                links.append(os.path.relpath(entry.path, root))
            elif stat.S_ISDIR(info.st_mode):
                if stat.S_IMODE(info.st_mode) & 0o077:
                    loose.append((entry.path, stat.S_IMODE(info.st_mode), PRIVATE_DIR))
                todo.append(entry.path)
            elif _secret_file(entry.name) and stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
                loose.append((entry.path, stat.S_IMODE(info.st_mode), PRIVATE_FILE))
    return loose, links


def check_permissions(ctx: ServerContext) -> CheckResult:
    root = ctx.config_dir
    if not root.is_dir():
        return skip("permissions", f"not checked: {root} does not exist")
    loose: list[tuple[str, int, int]] = []  # (path, mode, wanted)
    mode = stat.S_IMODE(os.lstat(root).st_mode)
    if mode & 0o077:
        loose.append((str(root), mode, PRIVATE_DIR))
    found = _find_loose(root)
    more, links = found if found is not None else _walk_loose(root)
    loose += sorted(more)
    if links:
        return fail("permissions", f"symbolic links in the config folder: {listing(sorted(links), 5)}: Bulwark never "
                                   f"follows them and refuses to write where one stands",
                    "remove them: " + "; ".join(f"rm {shlex.quote(os.path.join(root, link))}" for link in links[:3]))
    if not loose:
        return ok("permissions", f"{root}: folders 0700, store and secrets 0600")
    shown = [f"{os.path.relpath(p, root) if p != str(root) else p} {m:04o} (want {w:04o})" for p, m, w in loose]
    if len(loose) <= 3:
        fix = "; ".join(f"chmod {w:o} {shlex.quote(p)}" for p, _, w in loose)
    else:
        fix = f"find {shlex.quote(str(root))} ! -name 'publickey-*' -exec chmod go-rwx {{}} +"
    remedy = Remedy("chmod", {"paths": tuple((p, w) for p, _, w in loose)})
    return fail("permissions", f"readable by others: {listing(shown, 8)}", fix, remedy)


# -- the WireGuard implementation -------------------------------------------------------------------------


def check_backend(ctx: ServerContext) -> CheckResult:
    wanted = ctx.settings.backend if ctx.store.usable else "auto"
    kernel = ctx.host.kernel_module()
    userspace = shutil.which(link.USERSPACE)
    running = f"; '{ctx.iface}' runs on the {ctx.state.backend} backend" if ctx.state and ctx.link_exists else ""
    if wanted == "kernel" and not kernel:
        return fail("backend", "the store asks for the kernel backend but the kernel has no WireGuard module "
                               "('ip link add type wireguard' fails)",
                    f"load it (modprobe wireguard) or use wireguard-go: {ctx.cli('init')} --backend userspace")
    if kernel:
        return ok("backend", f"kernel WireGuard module available{running}")
    if userspace is None:
        return fail("backend", "no WireGuard kernel module ('ip link add type wireguard' fails) and no wireguard-go",
                    "apt-get install -y wireguard-go (or load the module: modprobe wireguard)")
    return ok("backend", f"no kernel module; userspace wireguard-go at {userspace}{running}")


def check_tun(ctx: ServerContext) -> CheckResult:
    needed = not ctx.host.kernel_module() or (ctx.store.usable and ctx.settings.backend == "userspace")
    try:
        info = os.stat(TUN_DEVICE)
        present = stat.S_ISCHR(info.st_mode) and (os.major(info.st_rdev), os.minor(info.st_rdev)) == (
            TUN_MAJOR, TUN_MINOR)
    except OSError:
        present = False
    if present:
        return ok("tun_device", f"{TUN_DEVICE} present (character device {TUN_MAJOR}:{TUN_MINOR})")
    if not needed:
        return skip("tun_device", f"{TUN_DEVICE} missing, not needed: the kernel module serves WireGuard")
    return fail("tun_device", f"{TUN_DEVICE} is missing (or not the TUN device): wireguard-go cannot create "
                              "its interface",
                f"modprobe tun; mkdir -p /dev/net; mknod {TUN_DEVICE} c {TUN_MAJOR} {TUN_MINOR} "
                "(in a container: --device /dev/net/tun --cap-add NET_ADMIN)")


# -- the running gateway ----------------------------------------------------------------------------------


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def check_supervisor(ctx: ServerContext) -> CheckResult:
    state = ctx.state
    restart = f"{ctx.cli('down')} && {ctx.cli('up')}"
    if state is None:
        if ctx.link_exists:
            return warn("supervisor", f"'{ctx.iface}' exists but no Bulwark supervisor runs it (no state file): "
                                      "drift, store changes and crashes are not handled",
                        f"take it down (wg-quick down {ctx.iface}, or ip link del {ctx.iface}), then {ctx.cli('up')}")
        return skip("supervisor", f"no gateway runs on '{ctx.iface}' (see the interface check)")
    if not state.supervisor_alive():
        return fail("supervisor", f"the supervisor of '{ctx.iface}' (pid {state.pid}) is gone: nothing repairs "
                                  "drift or restarts wireguard-go", restart)
    if _process_state(state.pid) in ("T", "t"):
        return fail("supervisor", f"the supervisor of '{ctx.iface}' (pid {state.pid}) is stopped (SIGSTOP): it "
                                  "repairs nothing and its DNS forwarder does not answer", f"kill -CONT {state.pid}")
    if Path(state.config_dir).resolve() != ctx.config_dir.resolve():
        return warn("supervisor", f"'{ctx.iface}' is run from another config dir: {state.config_dir}",
                    f"check with --config-dir {shlex.quote(state.config_dir)}, or pass the right --interface")
    return ok("supervisor", f"pid {state.pid} supervises '{ctx.iface}' ({state.backend} backend)")


def check_interface(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_store("interface", ctx)) is not None:
        return missing
    iface = ctx.iface
    if not ctx.link_exists:
        evidence = f"interface '{iface}' does not exist"
        state = ctx.state
        if state is not None and state.supervisor_alive() and _process_state(state.pid) in ("T", "t"):
            return fail("interface", f"{evidence} and its supervisor (pid {state.pid}) is stopped, so it cannot "
                                     "restart wireguard-go",
                        f"kill -CONT {state.pid} (the supervisor then recreates it)")
        if state is not None and state.supervisor_alive():
            return fail("interface", f"{evidence} while its supervisor (pid {state.pid}) runs",
                        f"{ctx.cli('down')} && {ctx.cli('up')}")
        return fail("interface", f"{evidence}: the gateway is not running", ctx.cli("up"))
    device = ctx.device()
    if device is None:
        return fail("interface", f"'{iface}' exists but does not answer as a WireGuard device "
                                 f"(wireguard-go's socket {link.socket_path(iface)} is gone?)",
                    f"{ctx.cli('down')} && {ctx.cli('up')}")
    info = ctx.host.links()[iface]
    if "UP" not in info.get("flags", []):
        return fail("interface", f"'{iface}' is administratively down", f"ip link set up dev {iface}")
    present = {f"{a['local']}/{a['prefixlen']}" for entry in ctx.host.addresses() if entry.get("ifname") == iface
               for a in entry.get("addr_info", []) if a.get("scope") != "link"}
    missing_addresses = [str(a) for a in ctx.settings.server_addresses if str(a) not in present]
    if missing_addresses:
        adds = "; ".join(f"ip address add {a} dev {iface}" for a in missing_addresses)
        return fail("interface", f"'{iface}' lacks its tunnel address {', '.join(missing_addresses)}", adds)
    pid = ctx.host.userspace_pid(iface)
    impl = f"wireguard-go pid {pid}" if pid else "kernel"
    return ok("interface", f"'{iface}' is up ({impl}, port {device.listen_port}, "
                           f"{plural(len(device.peers), 'peer')}, {', '.join(sorted(present))})")


def _describe_drift(change, names: dict[str, str]) -> str:
    if isinstance(change, SetInterface):
        parts = []
        if change.private_key is not None:
            parts.append("the private key differs from the store's")
        if change.listen_port is not None:
            parts.append(f"the listen port is not {change.listen_port}")
        return "device: " + " and ".join(parts)
    if isinstance(change, AddPeer):
        return f"{names.get(str(change.peer.public_key), change.peer.public_key)} missing from the device"
    if isinstance(change, RemovePeer):
        return f"unknown peer {change.public_key} on the device"
    if isinstance(change, UpdatePeer):
        fields = ", ".join(sorted(f.replace("_", " ") for f in change.fields))
        return f"{names.get(str(change.peer.public_key), change.peer.public_key)} differs ({fields})"
    return change.describe()


def check_drift(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_device("drift", ctx)) is not None:
        return missing
    device = ctx.device()
    assert device is not None  # noqa: S101 - _needs_device
    wanted = ctx.wanted()
    by_name = {row.name: row for row in ctx.store.rows} if wanted.compare(device.dump) else {}
    changes = device_changes(wanted, lambda names: [by_name[n] for n in names if n in by_name], device.dump)
    left_off = [f"'{c.name}' ({c.network} belongs to '{c.owner}')" for c in wanted.left_off.values()]
    if not changes and not left_off:
        return ok("drift", f"the device matches the store ({plural(len(wanted), 'enabled peer')})")
    if not changes:
        return warn("drift", f"the device matches the store, but peers claiming a network another peer has are left "
                             f"off it: {listing(left_off, 6)}",
                    "give each network to one peer: bulwark peer disable NAME (or remove it)")
    names = ctx.peer_names()
    shown = [_describe_drift(c, names) for c in changes]
    return fail("drift", f"the device differs from the store: {listing(shown, 6)}",
                f"{ctx.cli('apply')} (the supervisor does this within 2 s when it runs)",
                Remedy("apply", {"config_dir": str(ctx.config_dir), "interface": ctx.iface}))


def check_listen_port(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_device("listen_port", ctx)) is not None:
        return missing
    device = ctx.device()
    assert device is not None  # noqa: S101 - _needs_device
    wanted = ctx.settings.listen_port
    forwarded = ctx.settings.advertised_port
    note = f"; clients use port {forwarded} (forwarded to it)" if forwarded != wanted else ""
    sockets = [s for s in ctx.host.udp_sockets() if s.port == wanted]
    ours = ctx.host.userspace_pid(ctx.iface)
    strangers = sorted({(name, pid) for s in sockets for name, pid in s.owners if pid != ours})
    problems, fixes = [], []
    if device.listen_port != wanted:
        problems.append(f"'{ctx.iface}' listens on UDP {device.listen_port}, not the store's {wanted}")
    if strangers:
        who = ", ".join(f"'{name}' (pid {pid})" for name, pid in strangers)
        problems.append(f"UDP {wanted} is bound by {who}: it takes the packets meant for WireGuard")
        fixes.append(f"stop it (kill {' '.join(str(pid) for _, pid in strangers)}) or move WireGuard to a free "
                     f"port ({ctx.cli('init')} --listen-port PORT)")
    if device.listen_port != wanted:
        fixes.append(ctx.cli("apply"))
        return fail("listen_port", "; ".join(problems), "; then ".join(fixes),
                    Remedy("apply", {"config_dir": str(ctx.config_dir), "interface": ctx.iface}))
    if strangers:
        return fail("listen_port", "; ".join(problems), fixes[0])
    if not sockets:
        return fail("listen_port", f"no socket is bound to UDP port {wanted} although '{ctx.iface}' reports it",
                    f"{ctx.cli('down')} && {ctx.cli('up')}")
    where = ", ".join(sorted({f"[{s.address}]" if ":" in s.address else s.address for s in sockets}))
    owner = f"wireguard-go (pid {ours})" if ours else "the kernel"
    return ok("listen_port", f"UDP {wanted} bound on {where} by {owner}{note}")


def _our_table(ctx: ServerContext) -> frozenset[str]:
    try:
        return frozenset({firewall.table_name(ctx.iface)})
    except BulwarkError:
        return frozenset()


def _endpoint_family(ctx: ServerContext) -> int:
    host = ctx.settings.endpoint_host or ""
    return 6 if ":" in host.strip("[]") else 4


def _endpoint_address(ctx: ServerContext) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address clients send to, when SERVERURL is an IP literal (a name is not resolved here)."""
    try:
        return ipaddress.ip_address((ctx.settings.endpoint_host or "").strip("[]"))
    except ValueError:
        return None


def _finding_text(finding: Finding) -> str:
    handle = f" (handle {finding.handle})" if finding.handle is not None else ""
    return f"{finding.where}: {finding.text}{handle}"


def check_port_filter(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_store("port_filter", ctx)) is not None:
        return missing
    data = ctx.host.ruleset()
    if data is None:
        return skip("port_filter", "not checked: 'nft list ruleset' is not available")
    ruleset = Ruleset(data)
    port = ctx.settings.listen_port
    primary = _endpoint_family(ctx)
    certain: list[tuple[Finding, int]] = []
    maybe: list[Finding] = []
    target = _endpoint_address(ctx)
    for family in (4, 6):
        daddr = ipaddress.ip_network(target) if target is not None and target.version == family else None
        packet = Packet(family=family, l4proto="udp", dport=port, ct_state="new", daddr=daddr)
        verdicts = ruleset.evaluate(packet, ("prerouting", "input"), ("filter",), _our_table(ctx))
        verdicts += ruleset.evaluate(packet, ("prerouting",), ("nat",), _our_table(ctx))
        for verdict in verdicts:
            if verdict.verdict == "drop" and verdict.finding is not None:
                certain.append((verdict.finding, family))
            maybe += [f for f in verdict.conditional if f not in maybe]
            if verdict.verdict == "maybe" and verdict.finding is not None and verdict.finding not in maybe:
                maybe.append(verdict.finding)
    blocking = [f for f, family in certain if family == primary]
    other = [f for f, family in certain if family != primary]
    if blocking or other:
        findings = blocking or other
        fixes = "; ".join(dict.fromkeys(_port_fix(f, port) for f in findings))
        evidence = (f"UDP port {port} is dropped or redirected before WireGuard sees it"
                    f"{'' if blocking else ' (IPv' + str(6 if primary == 4 else 4) + ' clients only)'}: "
                    + "; ".join(_finding_text(f) for f in findings))
        return (fail if blocking else warn)("port_filter", evidence, fixes)
    if maybe:
        return warn("port_filter", f"UDP port {port} may be dropped for some clients: "
                                   + "; ".join(_finding_text(f) for f in maybe[:3]),
                    "check that these rules let your clients' addresses through to UDP " + str(port))
    return ok("port_filter", f"no other table drops or redirects UDP {port} on its way in")


def _port_fix(finding: Finding, port: int) -> str:
    if finding.handle is not None:
        return f"nft delete rule {finding.family} {finding.table} {shlex.quote(finding.chain)} handle {finding.handle}"
    if finding.is_iptables:
        tool = "iptables" if finding.family == "ip" else "ip6tables"
        return f"{tool} -I {finding.chain} -p udp --dport {port} -j ACCEPT"
    return f"nft insert rule {finding.family} {finding.table} {shlex.quote(finding.chain)} udp dport {port} accept"


def check_forwarding(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_gateway("forwarding", ctx)) is not None:
        return missing
    six = ctx.settings.subnet6 is not None
    names = ["net.ipv4.ip_forward"] + (["net.ipv6.conf.all.forwarding"] if six else [])
    values = {name: ctx.host.sysctl(name) for name in names}
    off = [name for name, value in values.items() if value != "1"]
    shown = ", ".join(f"{name} = {value or '?'}" for name, value in values.items())
    if off:
        fix = "; ".join(f"sysctl -w {name}=1" for name in off)
        return fail("forwarding", f"{shown}: peers reach the server but nothing behind it", fix,
                    Remedy("forwarding", {"ipv6": six and "net.ipv6.conf.all.forwarding" in off,
                                          "ipv4": "net.ipv4.ip_forward" in off}))
    return ok("forwarding", shown)


def _firewall_remedy(ctx: ServerContext) -> Remedy:
    return Remedy("firewall", {"config_dir": str(ctx.config_dir), "interface": ctx.iface})


def _expected_egress(ctx: ServerContext) -> str | None:
    """An interface tunnel traffic leaves by, for the checks that need one: the egress interface when one
    is set, else the default route's (NAT then covers every interface but the tunnel)."""
    return ctx.settings.egress_interface or ctx.host.default_interface()


def _nat_scope(ctx: ServerContext) -> str:
    egress = ctx.settings.egress_interface
    return f"NAT out of '{egress}' only" if egress else f"NAT out of every interface but '{ctx.iface}'"


def _reinstall_fix(ctx: ServerContext) -> str:
    return (f"bulwark doctor --fix --yes --config-dir {shlex.quote(str(ctx.config_dir))} (reinstalls it) or "
            f"{ctx.cli('down')} && {ctx.cli('up')}")


def check_firewall(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_gateway("firewall", ctx)) is not None:
        return missing
    remedy, fix = _firewall_remedy(ctx), _reinstall_fix(ctx)
    try:
        backend = firewall.firewall_backend()
    except BulwarkError as exc:
        return fail("firewall", str(exc), "apt-get install -y nftables")
    where = (f"table inet {firewall.table_name(ctx.iface)}" if backend == "nft"
             else f"iptables chains {', '.join(firewall.chain_names(ctx.iface))}")
    live, problem = ctx.host.bulwark_rules(ctx.iface)
    if problem is not None:
        return fail("firewall", f"{where} cannot be checked: {problem}", fix, remedy)
    if live is None:
        what = "is missing" if backend == "nft" else "are missing"
        return fail("firewall", f"{where} {what}: peers' traffic is not forwarded nor masqueraded, and nothing "
                                "closes what the settings keep closed", fix, remedy)
    expected = fwrules.policy(firewall.spec_from_settings(ctx.settings, ctx.iface))
    differences = fwrules.differences(expected, live)
    if differences:
        return fail("firewall", f"{where} differs from the settings: {'; '.join(differences)}", fix, remedy)
    return ok("firewall", f"{where} matches the settings ({plural(len(live), 'rule')}): {_nat_scope(ctx)}, "
                          "cloud metadata blocked")


def check_egress(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_store("egress", ctx)) is not None:
        return missing
    configured = ctx.settings.egress_interface
    default = ctx.host.default_interface()
    if configured is not None:
        info = ctx.host.links().get(configured)
        if info is None:
            return fail("egress", f"the egress interface '{configured}' does not exist: nothing is masqueraded",
                        f"{ctx.cli('init')} --egress-interface IFACE (an existing one), or NAT out of every "
                        f"interface: {ctx.cli('init')} --egress-interface ''")
        if "UP" not in info.get("flags", []) or info.get("operstate") == "DOWN":
            return fail("egress", f"the egress interface '{configured}' is down", f"ip link set up dev {configured}")
        return ok("egress", f"'{configured}' is up: NAT goes out of it only (--egress-interface)")
    full = [n for n in _client_networks(ctx) if n.prefixlen == 0 and (n.version == 4 or ctx.settings.subnet6)]
    if default is None and full:
        return warn("egress", f"no default route on this host, while clients send {listing([str(n) for n in full])} "
                              "into the tunnel: peers reach only the networks this host has routes to",
                    "add a default route (ip route add default via ROUTER dev IFACE)")
    via = f" (default route via '{default}')" if default else " (no default route)"
    return ok("egress", f"NAT goes out of every interface but '{ctx.iface}'{via}")


def _client_networks(ctx: ServerContext) -> list[IPNetwork]:
    """Every network some client sends into the tunnel: the ALLOWEDIPS setting, and peers' own AllowedIPs."""
    nets = list(ctx.settings.allowed_ips)
    for peer in ctx.store.peers:
        if peer.enabled and peer.allowed_ips is not None:
            nets += peer.allowed_ips
    return list(dict.fromkeys(nets))


def _tunnel_subnets(ctx: ServerContext) -> list[IPNetwork]:
    return [ctx.settings.subnet4] + ([ctx.settings.subnet6] if ctx.settings.subnet6 else [])


def advertised_networks(ctx: ServerContext) -> list[IPNetwork]:
    """The private networks the server advertises: what clients route into the tunnel (ALLOWEDIPS and peers'
    own AllowedIPs), minus the tunnel subnets (the server itself and the peers) and minus default routes
    (0.0.0.0/0 and ::/0 mean "everything": the egress check covers those). The server must carry each one
    further: out of one of its interfaces (with NAT, or with a return route on that network), or back into
    the tunnel when it lies behind a peer (--server-allowed-ips)."""
    tunnel = _tunnel_subnets(ctx)
    return [n for n in _client_networks(ctx) if n.prefixlen > 0
            and not any(n.version == t.version and n.subnet_of(t) for t in tunnel)]  # type: ignore[arg-type]


def _behind_peer(ctx: ServerContext, network: IPNetwork) -> str | None:
    for peer in ctx.store.peers:
        if peer.enabled and any(n.version == network.version and n.overlaps(network)  # type: ignore[arg-type]
                                for n in peer.server_allowed_ips):
            return peer.name
    return None


def _route_of(ctx: ServerContext, network: IPNetwork) -> dict | None:
    """The main-table route that carries `network`: the longest prefix holding all of it, the default route
    included (a VPC router often knows networks this host has no route of its own for); None when there is
    none, or when it is unreachable, blackhole or prohibit."""
    best: tuple[int, dict] | None = None
    for route in ctx.host.routes(network.version):
        dst = route.get("dst")
        net = ipaddress.ip_network("0.0.0.0/0" if network.version == 4 else "::/0") if dst == "default" else \
            ipaddress.ip_network(str(dst), strict=False)
        if network.subnet_of(net) and (best is None or net.prefixlen > best[0]):  # type: ignore[arg-type]
            best = (net.prefixlen, route)
    if best is None or best[1].get("type", "unicast") != "unicast":
        return None
    return best[1]


def _masqueraded(ctx: ServerContext, dev: str, network: IPNetwork) -> bool:
    """Whether tunnel traffic to `network` out of `dev` is masqueraded: by the live rules when the gateway
    runs, else by the rules the settings will install."""
    if ctx.running:
        rules = ctx.host.bulwark_rules(ctx.iface)[0] or []
    else:
        rules = fwrules.policy(firewall.spec_from_settings(ctx.settings, ctx.iface))
    source = next((t for t in _tunnel_subnets(ctx) if t.version == network.version), None)
    if source is None:
        return False
    packet = fwrules.Packet(network.version, oif=dev, saddr=source.network_address + 2,
                            daddr=network.network_address)
    found = fwrules.verdict_for(rules, "postrouting", packet)
    return found is not None and found.verdict == "masquerade"


def check_advertised(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_store("advertised_networks", ctx)) is not None:
        return missing
    networks = advertised_networks(ctx)
    if not networks:
        return ok("advertised_networks", "clients route only the tunnel subnets and default routes through the "
                                         "tunnel: no private network to check")
    unrouted, unmasqueraded, closed, fine = [], [], [], []
    for network in networks:
        peer = _behind_peer(ctx, network)
        if peer is not None:
            if ctx.settings.peer_to_peer:
                fine.append(f"{network} behind peer '{peer}'")
            else:
                closed.append(f"{network} (behind peer '{peer}')")
            continue
        route = _route_of(ctx, network)
        dev = str(route.get("dev", "")) if route is not None else ""
        if route is None or not dev or dev == ctx.iface:
            unrouted.append(str(network))
        elif _masqueraded(ctx, dev, network):
            fine.append(f"{network} via '{dev}' (NAT)")
        else:
            own = next((a["local"] for e in ctx.host.addresses() if e.get("ifname") == dev
                        for a in e.get("addr_info", []) if ipaddress.ip_address(a["local"]).version == network.version
                        and a.get("scope") != "link"), "THIS_HOST")
            unmasqueraded.append((str(network), dev, own))
    tunnel = ", ".join(str(t) for t in _tunnel_subnets(ctx))
    if unrouted:
        return fail("advertised_networks", f"clients send {listing(unrouted)} into the tunnel, but this host has no "
                                           "route to it out of another interface (no peer has it either): "
                                           "peers cannot reach it, with or without NAT",
                    "route it (ip route add NETWORK via ROUTER dev IFACE), or stop advertising it "
                    f"({ctx.cli('init')} --allowed-ips ...), or put it behind its peer (bulwark peer add SITE "
                    "--server-allowed-ips NETWORK)")
    problems, fixes = [], []
    if unmasqueraded:
        shown = [f"{n} via '{dev}'" for n, dev, _ in unmasqueraded]
        problems.append(f"not masqueraded ({_nat_scope(ctx)}): {listing(shown)}: its hosts answer peers only "
                        f"with a route back to {tunnel} (this host cannot see theirs)")
        net, dev, own = unmasqueraded[0]
        fixes.append(f"on the router of {net}: ip route add {tunnel.split(', ')[0]} via {own}; or NAT out of every "
                     f"interface: {ctx.cli('init')} --egress-interface ''")
    if closed:
        problems.append(f"behind a peer, reached through the tunnel, while peer-to-peer is closed: {listing(closed)}"
                        ": other peers cannot reach it")
        fixes.append(f"{ctx.cli('init')} --peer-to-peer (or stop advertising it)")
    if problems:
        return warn("advertised_networks", "; ".join(problems), "; ".join(fixes))
    return ok("advertised_networks", f"each advertised network has a route and a way back: {listing(fine)}")


# Probe packets for the exposure check: one per exposure, evaluated against our live rules.
_PEER_A, _PEER_B = 2, 3
_HOST_SERVICE_PORT = 22


def _outside_interface(ctx: ServerContext) -> str:
    """A real interface that is not the tunnel nor the loopback, for probe packets from outside."""
    default = ctx.host.default_interface()
    if default and default != ctx.iface:
        return default
    return next((name for name in ctx.host.links() if name not in (ctx.iface, "lo")), "eth0")


def _exposure_probes(ctx: ServerContext) -> list[tuple[str, bool, str, fwrules.Packet]]:
    """(name, open in the settings, chain, packet) for each exposure."""
    settings, wg, outside = ctx.settings, ctx.iface, _outside_interface(ctx)
    subnet, server = settings.subnet4, settings.server_address4.ip
    probes = [
        ("peer-to-peer", settings.peer_to_peer, "forward",
         fwrules.Packet(4, iif=wg, oif=wg, saddr=subnet.network_address + _PEER_A,
                        daddr=subnet.network_address + _PEER_B, proto="tcp", dport=_HOST_SERVICE_PORT)),
        ("LAN to peers", settings.lan_to_peers, "forward",
         fwrules.Packet(4, iif=outside, oif=wg, daddr=subnet.network_address + _PEER_A, proto="tcp",
                        dport=_HOST_SERVICE_PORT)),
        ("host access", settings.host_access, "input",
         fwrules.Packet(4, iif=wg, oif=None, saddr=subnet.network_address + _PEER_A, daddr=server, proto="tcp",
                        dport=_HOST_SERVICE_PORT)),
    ]
    if settings.peer_dns == "auto":
        stranger = ipaddress.ip_address("192.0.2.99")  # TEST-NET-1: in no DNS_CLIENTS network unless /0-ish
        answered = any(stranger in n for n in settings.dns_clients if n.version == 4)
        probes.append(("DNS from outside the tunnel", answered, "input",
                       fwrules.Packet(4, iif=outside, saddr=stranger, daddr=server, proto="udp", dport=53)))
        for net in settings.dns_clients:
            address = settings.server_addresses[0 if net.version == 4 else -1].ip
            if address.version == net.version:
                probes.append((f"DNS from {net}", True, "input",
                               fwrules.Packet(net.version, iif=outside, saddr=net.network_address, daddr=address,
                                              proto="udp", dport=53)))
    if settings.serve:
        probes.append(("the API from outside the tunnel", False, "input",
                       fwrules.Packet(4, iif=outside, saddr=ipaddress.ip_address("192.0.2.99"), daddr=server,
                                      proto="tcp", dport=settings.api_port)))
    return probes


def _open_exposures(ctx: ServerContext) -> list[str]:
    settings = ctx.settings
    found = []
    if settings.peer_to_peer:
        found.append("peer-to-peer (peers reach each other)")
    if settings.lan_to_peers:
        found.append("LAN to peers (hosts outside the tunnel open connections to peers)")
    if settings.host_access:
        found.append("host access (peers reach every service of this host)")
    if settings.dns_clients:
        world = [str(n) for n in settings.dns_clients if n.prefixlen == 0]
        note = f": {', '.join(world)} makes it an open resolver" if world else ""
        found.append(f"DNS for {', '.join(str(n) for n in settings.dns_clients)}{note}")
    return found


def check_exposure(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_store("exposure", ctx)) is not None:
        return missing
    opened = _open_exposures(ctx)
    checked = ""
    if ctx.running:
        live, problem = ctx.host.bulwark_rules(ctx.iface)
        if live is None:
            return skip("exposure", "not checked against the live rules: Bulwark's firewall rules cannot be read "
                                    f"({problem or 'missing'}; see the firewall check): until they are back, only "
                                    "the DNS forwarder keeps its own clients list")
        wrong = []
        for name, wanted_open, chain, packet in _exposure_probes(ctx):
            decided = fwrules.verdict_for(live, chain, packet)  # type: ignore[arg-type]
            is_open = decided is None or decided.verdict == "accept"
            if is_open != wanted_open:
                wrong.append(f"{name} is {'open' if is_open else 'closed'} in the live rules but "
                             f"{'open' if wanted_open else 'closed'} in the settings")
        if wrong:
            return fail("exposure", "; ".join(wrong), _reinstall_fix(ctx), _firewall_remedy(ctx))
        checked = " (the live rules agree)"
    if opened:
        closes = []
        for flag, is_open in (("--no-peer-to-peer", ctx.settings.peer_to_peer),
                              ("--no-lan-to-peers", ctx.settings.lan_to_peers),
                              ("--no-host-access", ctx.settings.host_access),
                              ("--dns-clients ''", bool(ctx.settings.dns_clients))):
            if is_open:
                closes.append(flag)
        return warn("exposure", f"open by the settings: {'; '.join(opened)}{checked}",
                    f"if that is not what you want: {ctx.cli('init')} {' '.join(closes)}")
    dns = "DNS answers tunnel peers only" if ctx.settings.peer_dns == "auto" else "no DNS forwarder"
    return ok("exposure", f"closed: peer-to-peer, LAN to peers, host services (peers reach DNS and ping only), "
                          f"{dns}{checked}")


def check_forward_policy(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_gateway("forward_policy", ctx)) is not None:
        return missing
    data = ctx.host.ruleset()
    if data is None:
        return skip("forward_policy", "not checked: 'nft list ruleset' is not available")
    ruleset = Ruleset(data)
    egress = _expected_egress(ctx)
    blocked: list[tuple[Finding, str]] = []
    maybe: list[Finding] = []
    subnets: list[IPNetwork] = [ctx.settings.subnet4] + ([ctx.settings.subnet6] if ctx.settings.subnet6 else [])
    for subnet in subnets:
        out = Packet(family=subnet.version, iifname=ctx.iface, oifname=egress, ct_state="new", saddr=subnet)
        back = Packet(family=subnet.version, iifname=egress, oifname=ctx.iface, ct_state="established", daddr=subnet)
        for direction, packet in (("out", out), ("back", back)):
            for verdict in ruleset.evaluate(packet, ("forward",), ("filter",), _our_table(ctx)):
                _collect(verdict, direction, blocked, maybe)
    target = f"'{egress}'" if egress else "the egress"
    if blocked:
        chains = list(dict.fromkeys(f for f, _ in blocked))
        evidence = "; ".join(f"{_finding_text(f)} blocks {'peers -> ' + target if d == 'out' else 'replies to peers'}"
                             for f, d in dict.fromkeys(blocked))
        fix = "; ".join(_forward_fix(f, ctx.iface) for f in chains)
        return fail("forward_policy", f"another table drops forwarded tunnel traffic (Bulwark's accepts cannot "
                                      f"override it): {evidence}", fix)
    if maybe:
        return warn("forward_policy", "forwarded tunnel traffic may be dropped: "
                                      + "; ".join(_finding_text(f) for f in maybe[:3]),
                    f"make sure these rules accept iifname {ctx.iface} and replies to it")
    return ok("forward_policy", f"no other table's forward chain blocks '{ctx.iface}' <-> {target}")


def _collect(verdict: ChainVerdict, direction: str, blocked: list, maybe: list) -> None:
    if verdict.verdict == "drop" and verdict.finding is not None:
        blocked.append((verdict.finding, direction))
    elif verdict.verdict == "maybe":
        for finding in ([verdict.finding] if verdict.finding else []) + verdict.conditional:
            if finding not in maybe:
                maybe.append(finding)


def _forward_fix(finding: Finding, iface: str) -> str:
    if finding.is_iptables:
        tool = "iptables" if finding.family == "ip" else "ip6tables"
        return (f"{tool} -I {finding.chain} -i {iface} -j ACCEPT; "
                f"{tool} -I {finding.chain} -o {iface} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    where = f"{finding.family} {finding.table} {shlex.quote(finding.chain)}"
    return (f"nft insert rule {where} iifname \"{iface}\" accept; "
            f"nft insert rule {where} oifname \"{iface}\" ct state established,related accept")


def check_src_valid_mark(ctx: ServerContext) -> CheckResult:
    marks = ctx.host.full_tunnel_marks()
    if not marks:
        return ok("src_valid_mark", "no full-tunnel WireGuard client (wg-quick fwmark rule) on this host")
    value = ctx.host.sysctl("net.ipv4.conf.all.src_valid_mark")
    tunnels = []
    for mark, table in marks:
        devices = {str(r["dev"]) for r in ctx.host.routes(4, table) + ctx.host.routes(6, table) if r.get("dev")}
        tunnels.append(f"{'/'.join(sorted(devices)) or '?'} (fwmark {mark:#x}, table {table})")
    evidence = f"full-tunnel client {', '.join(tunnels)} on this host; net.ipv4.conf.all.src_valid_mark = {value}"
    if value == "1":
        return ok("src_valid_mark", evidence)
    return warn("src_valid_mark", f"{evidence}: with reverse-path filtering its encrypted replies are dropped",
                "sysctl -w net.ipv4.conf.all.src_valid_mark=1 (docker: --sysctl net.ipv4.conf.all.src_valid_mark=1)",
                Remedy("sysctl", {"values": (("net.ipv4.conf.all.src_valid_mark", "1"),)}))


def check_dns(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_store("dns", ctx)) is not None:
        return missing
    peer_dns = ctx.settings.peer_dns
    if peer_dns != "auto":
        what = f"clients use {peer_dns}" if peer_dns else "clients get no DNS server"
        return skip("dns", f"PEERDNS is not auto ({what}): Bulwark runs no forwarder")
    if (missing := _needs_device("dns", ctx)) is not None:
        return missing
    listen = [str(a.ip) for a in ctx.settings.server_addresses]
    where = ", ".join(_host_port(a, 53) for a in listen)
    state = ctx.state
    if state is not None and state.supervisor_alive() and _process_state(state.pid) in ("T", "t"):
        # The forwarder is a thread of the supervisor: no need to wait for a query to time out.
        return fail("dns", f"no DNS answer can come from {where}: the forwarder's process, the supervisor (pid "
                           f"{state.pid}), is stopped", f"kill -CONT {state.pid}")
    # The forwarder answers SERVFAIL only after trying each upstream (2 s each): wait for that, not less.
    upstreams = dns.read_system_resolvers(exclude=listen)
    timeout = min(DNS_PROBE_CAP, 2.0 * max(1, len(upstreams)) + 0.5)
    rcodes = {address: dns.probe_rcode(address, timeout=timeout) for address in listen}
    silent = [address for address, rcode in rcodes.items() if rcode is None]
    if not silent:
        failing = [address for address, rcode in rcodes.items() if rcode == RCODE.SERVFAIL]
        if failing:
            return warn("dns", f"the forwarder on {', '.join(_host_port(a, 53) for a in failing)} answers, but "
                               f"SERVFAIL for every name: its upstream resolver(s) "
                               f"{', '.join(upstreams) or '(none in /etc/resolv.conf)'} did not answer",
                        "make those resolvers reachable from this host (see /etc/resolv.conf), or give clients "
                        f"another resolver: {ctx.cli('init')} --peer-dns 1.1.1.1")
        return ok("dns", f"the forwarder answers on {where} and resolves through "
                         f"{', '.join(upstreams) or 'the local resolver'}")
    evidence = f"no DNS answer from {', '.join(_host_port(a, 53) for a in silent)} in {timeout:g} s"
    owners = {f"'{name}' (pid {pid})" for s in ctx.host.udp_sockets() if s.port == 53 and s.address in silent
              for name, pid in s.owners if state is None or pid != state.pid}
    if owners:
        return fail("dns", f"{evidence}; port 53 there is held by {', '.join(sorted(owners))}",
                    "stop that resolver or bind it to its own addresses only (dnsmasq: bind-interfaces), then "
                    f"{ctx.cli('down')} && {ctx.cli('up')}")
    return fail("dns", evidence, f"{ctx.cli('down')} && {ctx.cli('up')} (or set PEERDNS to a resolver: "
                                 f"{ctx.cli('init')} --peer-dns 1.1.1.1)")


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _ago(seconds: float) -> str:
    return f"{int(seconds)} s ago" if seconds < 120 else f"{int(seconds // 60)} min ago"


def check_handshakes(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_device("handshakes", ctx)) is not None:
        return missing
    device = ctx.device()
    assert device is not None  # noqa: S101 - _needs_device
    enabled = [row for row in ctx.store.rows if row.enabled]
    never, unfinished, stale = [], [], []
    for row in enabled:
        fields = device.peers.get(row.public_key)
        if fields is None:
            continue  # not on the device: the drift check reports it
        handshake, endpoint = int(fields[4]), fields[2] if fields[2] != "(none)" else None
        if handshake == 0:
            if endpoint and int(fields[5]) > 0:
                unfinished.append(f"{row.name} (from {endpoint})")
            else:
                never.append(row.name)
        elif ctx.now - handshake > ONLINE_WINDOW:
            stale.append(f"{row.name} ({_ago(ctx.now - handshake)})")
    if not (never or unfinished or stale):
        return ok("handshakes", f"{plural(len(enabled), 'enabled peer')}, all with a handshake in the last "
                                f"{ONLINE_WINDOW // 60} min")
    parts, fixes = [], []
    if unfinished:
        parts.append(f"handshake initiations received but never completed: {listing(unfinished)}: the client's "
                     "PresharedKey does not match (or the server's responses do not reach it)")
        fixes.append("give the client its current config (PresharedKey): " + ctx.cli("peer show NAME"))
    if never:
        parts.append(f"never completed a handshake: {listing(never)}: no valid initiation arrived (client not "
                     "started, wrong PrivateKey or server PublicKey, Endpoint wrong, UDP port blocked or not "
                     "forwarded)")
        fixes.append("on the client: bulwark doctor --peer-config FILE (sends a real handshake)")
    if stale:
        parts.append(f"last handshake older than {ONLINE_WINDOW // 60} min: {listing(stale)}: the client stopped "
                     "or UDP stopped passing")
        fixes.append("check the client runs; PersistentKeepalive = 25 keeps NAT mappings open")
    return warn("handshakes", "; ".join(parts), "; ".join(fixes))


def _config_endpoints(config_dir: Path) -> dict[str, list[str]]:
    """Endpoint value -> the peer config files that carry it (rendered peer_*/peer*.conf).

    Read the way Bulwark reads its folder: no link followed (a planted `peer_x -> /elsewhere` is not read), regular
    files only (a FIFO would block a plain read for ever), and values and names escaped into one line (a planted
    file may hold terminal escape sequences, and this evidence is printed). grep(1) reads 65,000 of them in C
    (`-r` follows no link below the folder, `-D skip` reads no device or FIFO); without it, Python does."""
    found: dict[str, list[str]] = {}
    try:
        folder = SafeFolder.open(config_dir)  # the folder itself must not be a link either
    except (OSError, BulwarkError):
        return found
    with folder:
        tool = shutil.which("grep")
        if tool is not None:
            result = subprocess.run([tool, "-r", "-D", "skip", "-H", "-i", "-E", "--include=peer*.conf",
                                     r"^\s*Endpoint\s*=", str(config_dir)], capture_output=True, check=False)
            if result.returncode in (0, 1):
                prefix = f"{config_dir}/"
                for line in result.stdout.decode(errors="replace").splitlines():
                    if not line.startswith(prefix):
                        continue
                    path, _, text = line[len(prefix):].partition(":")  # peer names hold no ":"
                    name, _, conf = path.partition("/")
                    if conf == f"{name}.conf" and name.startswith("peer"):
                        for value in _ENDPOINT_LINE.findall(text):
                            found.setdefault(one_line(value), []).append(one_line(name))
                return found
        for name in sorted(folder.listdir()):
            info = folder.lstat(name)
            if not name.startswith("peer") or info is None or not stat.S_ISDIR(info.st_mode):
                continue
            try:
                text = folder.read_bytes(f"{name}/{name}.conf").decode(errors="replace")
            except (OSError, BulwarkError):
                continue
            for value in _ENDPOINT_LINE.findall(text):
                found.setdefault(one_line(value), []).append(one_line(name))
    return found


def check_endpoint(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_store("endpoint", ctx)) is not None:
        return missing
    settings = ctx.settings
    fix = (f"{ctx.cli('init')} --server-url PUBLIC_HOST (clients on this very host only: "
           f"bulwark peer show NAME --endpoint 127.0.0.1:{settings.listen_port})")
    host = settings.endpoint_host
    if host is None:
        return warn("endpoint", "the server's public address is unknown: client configs have no Endpoint", fix)
    expected = format_endpoint(host, settings.advertised_port)
    endpoints = _config_endpoints(ctx.config_dir) if ctx.config_dir.is_dir() else {}
    values = [expected] + [v for v in endpoints if v != expected]
    device = ctx.device() if ctx.link_exists else None
    remote = sorted({e for e in (device.endpoints() if device else set())
                     if address_kind(ipaddress.ip_address(e.rpartition(":")[0].strip("[]"))) == "public"})
    problems = []
    for value in values:
        where = "SERVERURL" if value == expected else f"{listing(endpoints[value], 3)}.conf"
        problem = _endpoint_problem(value, remote)
        if problem:
            problems.append(f"{where}: Endpoint {value} {problem}")
    stray = [v for v in endpoints if v != expected]
    if problems:
        return warn("endpoint", "; ".join(problems), fix)
    if stray:
        return warn("endpoint", f"peer configs carry another Endpoint than the server's {expected}: "
                                + "; ".join(f"{v} in {listing(endpoints[v], 3)}" for v in stray),
                    f"re-render them: {ctx.cli('init')} --server-url {host}")
    return ok("endpoint", f"clients use Endpoint {expected}")


def _endpoint_problem(value: str, remote: list[str]) -> str | None:
    try:
        host, port = parse_endpoint(value)
        addresses = resolve(host, port)
    except (BulwarkError, OSError) as exc:
        return f"does not resolve ({exc})"
    kinds = {address_kind(a) for a in addresses}
    if "unspecified" in kinds:
        return "is the unspecified address: a client on another host sends to itself (the SERVERURL=0.0.0.0 trap)"
    if "loopback" in kinds:
        return "is a loopback address: only a client on this very host can use it"
    if kinds == {"private"} and remote:
        return (f"is a private address, but clients connect from public addresses ({listing(remote, 2)}): "
                "clients outside this network cannot reach it")
    return None


def check_subnet_conflict(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_store("subnet_conflict", ctx)) is not None:
        return missing
    subnets: list[IPNetwork] = [ctx.settings.subnet4] + ([ctx.settings.subnet6] if ctx.settings.subnet6 else [])
    hard: list[tuple[str, str]] = []  # (evidence, fix)
    soft: list[str] = []
    flagged_devs: set[str] = set()
    for entry in ctx.host.addresses():
        dev = entry.get("ifname")
        if dev == ctx.iface:
            continue
        for info in entry.get("addr_info", []):
            net = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
            if any(net.version == s.version and net.overlaps(s) for s in subnets):
                hard.append((f"address {info['local']}/{info['prefixlen']} on '{dev}'",
                             f"ip address del {info['local']}/{info['prefixlen']} dev {dev}"))
                flagged_devs.add(str(dev))
    for family in {s.version for s in subnets}:
        for route in ctx.host.routes(family):
            if route.get("dev") == ctx.iface or route.get("dst") in (None, "default"):
                continue
            net = ipaddress.ip_network(route["dst"], strict=False)
            for subnet in subnets:
                if net.version != subnet.version or not net.overlaps(subnet):
                    continue
                text = _route_text(route)
                if route.get("protocol") == "kernel" and route.get("dev") in flagged_devs:
                    continue  # the prefix route of an address already reported
                if net.prefixlen >= subnet.prefixlen:
                    hard.append((f"route {text}", f"ip route del {text}"))
                else:
                    soft.append(f"route {text} contains {subnet}")
    shown = ", ".join(str(s) for s in subnets)
    if hard:
        evidence = "; ".join(dict.fromkeys(e for e, _ in hard))
        fixes = "; ".join(dict.fromkeys(f for _, f in hard))
        return fail("subnet_conflict", f"the tunnel subnet {shown} collides with {evidence}: traffic to peers goes "
                                       "there instead of the tunnel",
                    f"{fixes} (or move the tunnel: {ctx.cli('init')} --subnet ANOTHER/24 before adding peers)")
    if soft:
        return warn("subnet_conflict", f"{'; '.join(soft)}: hosts of that network inside {shown} are unreachable "
                                       "from the server", "pick a tunnel subnet outside your networks")
    return ok("subnet_conflict", f"no other address or route overlaps {shown}")


def _route_text(route: dict) -> str:
    parts = [str(route["dst"])]
    if route.get("gateway"):
        parts.append(f"via {route['gateway']}")
    if route.get("dev"):
        parts.append(f"dev {route['dev']}")
    return " ".join(parts)


def check_mtu(ctx: ServerContext) -> CheckResult:
    if (missing := _needs_store("mtu", ctx)) is not None:
        return missing
    wg_mtu = ctx.host.mtu(ctx.iface) if ctx.link_exists else None
    wg_mtu = wg_mtu or ctx.settings.mtu or DEFAULT_MTU
    device = ctx.device() if ctx.link_exists else None
    endpoints = device.endpoints() if device else set()
    six = _endpoint_family(ctx) == 6 or any(e.startswith("[") for e in endpoints)
    overhead = OVERHEAD6 if six else OVERHEAD4
    paths: dict[str, str] = {}
    egress = _expected_egress(ctx)
    if egress:
        paths[egress] = "egress"
    for endpoint in sorted(endpoints)[:5]:
        route = ctx.host.route_get(endpoint.rpartition(":")[0].strip("[]"))
        if route and route.get("dev") and route["dev"] not in paths:
            paths[route["dev"]] = f"toward {endpoint}"
    if not paths:
        return skip("mtu", "not checked: no egress interface and no peer endpoint to compare with")
    small = [(dev, mtu, why) for dev, why in paths.items() if (mtu := ctx.host.mtu(dev)) and wg_mtu + overhead > mtu]
    if not small:
        shown = ", ".join(f"'{d}' {ctx.host.mtu(d)}" for d in paths)
        return ok("mtu", f"'{ctx.iface}' MTU {wg_mtu} + {overhead} fits {shown}")
    dev, mtu, why = min(small, key=lambda item: item[1])
    fitting = mtu - OVERHEAD6
    evidence = (f"'{ctx.iface}' MTU {wg_mtu} + {overhead} bytes of WireGuard/IPv{6 if six else 4} overhead = "
                f"{wg_mtu + overhead} > {mtu} on '{dev}' ({why}): full-size packets are fragmented or dropped")
    if fitting >= 1280:
        fix = f"{ctx.cli('init')} --mtu {fitting}, then give clients their new config (bulwark peer show NAME)"
    else:
        fix = f"ip link set dev {dev} mtu {wg_mtu + OVERHEAD6} (the tunnel MTU cannot go below 1280)"
    return warn("mtu", evidence, fix)


SERVER_CHECKS: tuple[tuple[str, Check], ...] = (
    ("store", check_store),
    ("permissions", check_permissions),
    ("backend", check_backend),
    ("tun_device", check_tun),
    ("supervisor", check_supervisor),
    ("interface", check_interface),
    ("drift", check_drift),
    ("listen_port", check_listen_port),
    ("port_filter", check_port_filter),
    ("forwarding", check_forwarding),
    ("firewall", check_firewall),
    ("exposure", check_exposure),
    ("egress", check_egress),
    ("advertised_networks", check_advertised),
    ("forward_policy", check_forward_policy),
    ("src_valid_mark", check_src_valid_mark),
    ("dns", check_dns),
    ("handshakes", check_handshakes),
    ("endpoint", check_endpoint),
    ("subnet_conflict", check_subnet_conflict),
    ("mtu", check_mtu),
)


def _guarded(name: str, check: Callable[[Any], CheckResult], ctx: Any) -> CheckResult:
    try:
        return check(ctx)
    except Exception as exc:  # one check that cannot run must not take the others down
        LOGGER.debug("doctor: check %s failed", name, exc_info=True)
        return CheckResult(name, Status.WARN, f"could not run this check: {exc}", "run it again with --debug")


def run_checks(ctx: Ctx, checks: Sequence[tuple[str, Callable[[Ctx], CheckResult]]],
               workers: int = 8) -> list[CheckResult]:
    """Run `checks` against `ctx` concurrently; results in the order of `checks`."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="doctor") as pool:
        futures = [pool.submit(_guarded, name, check, ctx) for name, check in checks]
        return [future.result() for future in futures]


def run_server_checks(config_dir: Path, *, interface: str | None = None, runner: Runner | None = None,
                      now: float | None = None, run_dir: Path | None = None) -> list[CheckResult]:
    """Every server check for the gateway of `config_dir` (interface: the store's unless given)."""
    ctx = ServerContext.load(config_dir, interface, runner, now, run_dir or DEFAULT_RUN_DIR)
    return run_checks(ctx, SERVER_CHECKS)
