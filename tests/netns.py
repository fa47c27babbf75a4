"""Network-namespace test harness: namespaces, veth pairs, unique names, wg-quick peers, cleanup.

Everything a test creates lives in namespaces named `bw-<pid>-<n>`; the host's own network is never
touched. wireguard-go's control sockets live in the shared /var/run/wireguard, so interface names
come from `unique_ifname` (unique per test process) and `NetnsFactory.cleanup` removes the sockets of
the interfaces it handed out, kills every process in its namespaces and deletes them, even when the
test failed.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bulwark_vpn.dataplane.apply import DesiredDevice, apply_device
from bulwark_vpn.dataplane.link import create_link
from bulwark_vpn.dataplane.netcfg import ensure_addresses, set_up
from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.dataplane.wg import PeerSpec
from bulwark_vpn.keys import PresharedKey, PrivateKey, PublicKey

WG_SOCKET_DIR = Path("/var/run/wireguard")
NETNS_DIR = Path("/var/run/netns")
ETC_NETNS = Path("/etc/netns")
_COUNTER = itertools.count(1)
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, rest = divmod(number, 36)
        digits = _BASE36[rest] + digits
        if number == 0:
            return digits


def unique_ifname(prefix: str = "bw") -> str:
    """An interface name (<= 15 chars) unique to this test process: prefix + pid + counter in base 36."""
    # "-" is not a base-36 digit, so pid and counter cannot run into each other.
    name = f"{prefix}{_base36(os.getpid())}-{_base36(next(_COUNTER))}"
    if len(name) > 15:
        raise ValueError(f"interface name too long: '{name}': use a shorter prefix")
    return name


def unique_nsname() -> str:
    """A namespace name unique to this test process: bw-<pid>-<n>."""
    return f"bw-{os.getpid()}-{next(_COUNTER)}"


def _run(argv: Sequence[str], *, check: bool = True, input: bytes | None = None, timeout: float = 60):  # noqa: A002
    result = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(argv)}\n"
            f"stdout: {result.stdout.decode(errors='replace')}\nstderr: {result.stderr.decode(errors='replace')}"
        )
    return result


class Netns:
    """One network namespace (created with its loopback up)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or unique_nsname()
        _run(["ip", "netns", "add", self.name])
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    @classmethod
    def existing(cls, name: str) -> Netns:
        """A handle on a namespace that already exists (not created again)."""
        ns = cls.__new__(cls)
        ns.name = name
        return ns

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: bytes | None = None,  # noqa: A002
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside the namespace; raise AssertionError with its output when `check` fails."""
        return _run(self.exec_argv(argv), check=check, input=input, timeout=timeout)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen[bytes]:
        """Start a background process inside the namespace (cleanup kills it)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.exec_argv(argv), **kwargs)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """`ip -n NS ...`."""
        return _run(["ip", "-n", self.name, *args], check=check)

    def runner(self, log=None) -> Runner:
        """A Bulwark Runner that executes inside this namespace."""
        return Runner(netns=self.name, log=log)

    def ping(self, address: str, count: int = 1, timeout: int = 2) -> bool:
        """True if `address` answers a ping from inside the namespace."""
        argv = ["ping", "-n", "-c", str(count), "-W", str(timeout), address]
        return self.run(argv, check=False, timeout=timeout * count + 5).returncode == 0

    def python(self, code: str, *args: str, **kwargs) -> subprocess.Popen[bytes]:
        """Run a Python snippet inside the namespace in the background."""
        return self.popen([sys.executable, "-c", code, *args], **kwargs)

    def pids(self) -> list[int]:
        result = _run(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in result.stdout.split()]

    def kill_all(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL, every process in the namespace."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)

    def set_resolv_conf(self, text: str) -> Path:
        """Write /etc/netns/NS/resolv.conf: `ip netns exec` bind-mounts it over /etc/resolv.conf."""
        folder = ETC_NETNS / self.name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "resolv.conf"
        path.write_text(text)
        return path

    def delete(self) -> None:
        """Kill every process inside, delete the namespace and its /etc/netns/NS folder."""
        self.kill_all()
        _run(["ip", "netns", "del", self.name], check=False)
        shutil.rmtree(ETC_NETNS / self.name, ignore_errors=True)


def veth(ns_a: Netns, ns_b: Netns, addr_a: str | None = None, addr_b: str | None = None) -> tuple[str, str]:
    """A veth pair between two namespaces (created inside `ns_a`, never in the host); both ends up.

    Addresses are in CIDR form ("10.1.0.1/24"); IPv6 ones get `nodad`. Return (name in a, name in b).
    """
    name_a, name_b = unique_ifname("va"), unique_ifname("vb")
    ns_a.ip("link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b.name)
    for ns, name, addr in ((ns_a, name_a, addr_a), (ns_b, name_b, addr_b)):
        if addr:
            extra = ["nodad"] if ":" in addr else []
            ns.ip("address", "add", addr, "dev", name, *extra)
        ns.ip("link", "set", name, "up")
    return name_a, name_b


class NetnsFactory:
    """Creates namespaces and interface names for one test; `cleanup()` undoes everything."""

    def __init__(self) -> None:
        self.namespaces: list[Netns] = []
        self.ifnames: list[str] = []
        self.tmpdirs: list[tempfile.TemporaryDirectory[str]] = []
        self.wg_quick_confs: dict[str, tuple[Netns, Path]] = {}

    def __call__(self) -> Netns:
        ns = Netns()
        self.namespaces.append(ns)
        return ns

    def ifname(self, prefix: str = "bw") -> str:
        """A unique interface name whose wireguard-go socket cleanup() will remove."""
        name = unique_ifname(prefix)
        self.ifnames.append(name)
        return name

    def tmpdir(self) -> Path:
        """A private (0700) temporary directory removed at cleanup."""
        tmp = tempfile.TemporaryDirectory(prefix="bulwark-test-")
        self.tmpdirs.append(tmp)
        os.chmod(tmp.name, 0o700)
        return Path(tmp.name)

    def wg_quick_up(self, ns: Netns, conf_text: str, iface: str | None = None) -> str:
        """Bring up a real `wg-quick up FILE` peer inside `ns` (wireguard-go when there is no kernel module).

        Return the interface name. Configs should omit DNS= (it needs resolvconf).
        """
        iface = iface or self.ifname("wq")
        conf = self.tmpdir() / f"{iface}.conf"
        conf.write_text(conf_text)
        conf.chmod(0o600)
        env = {**os.environ, "WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go"}
        env.pop("LOG_LEVEL", None)
        result = subprocess.run(
            ns.exec_argv(["wg-quick", "up", str(conf)]), capture_output=True, env=env, timeout=60, check=False
        )
        if result.returncode != 0:
            raise AssertionError(f"wg-quick up failed in {ns.name}: {result.stderr.decode(errors='replace')}")
        self.wg_quick_confs[iface] = (ns, conf)
        return iface

    def wg_quick_down(self, iface: str) -> None:
        """`wg-quick down FILE` for a peer started with `wg_quick_up`."""
        ns, conf = self.wg_quick_confs.pop(iface)
        ns.run(["wg-quick", "down", str(conf)])

    def cleanup(self) -> None:
        """Kill every process in our namespaces, remove our wireguard-go sockets, delete the namespaces."""
        for ns in reversed(self.namespaces):
            ns.kill_all()
        for name in self.ifnames:
            (WG_SOCKET_DIR / f"{name}.sock").unlink(missing_ok=True)
        for ns in reversed(self.namespaces):
            ns.delete()
        for tmp in self.tmpdirs:
            tmp.cleanup()
        self.namespaces.clear()
        self.ifnames.clear()
        self.tmpdirs.clear()
        self.wg_quick_confs.clear()


def remove_orphans() -> None:
    """Delete `bw-<pid>-*` namespaces left by test processes that no longer exist (after a crash)."""
    if not NETNS_DIR.is_dir():
        return
    for entry in NETNS_DIR.iterdir():
        parts = entry.name.split("-")
        if len(parts) != 3 or parts[0] != "bw" or not parts[1].isdigit():
            continue
        if Path(f"/proc/{parts[1]}").exists():
            continue
        Netns.existing(entry.name).delete()


def wg_quick_conf(
    private_key: PrivateKey,
    addresses: Sequence[str],
    peer_public_key: PublicKey,
    endpoint: str,
    allowed_ips: Sequence[str],
    keepalive: int | None = None,
    preshared_key: PresharedKey | None = None,
) -> str:
    """A minimal client wg-quick config (no DNS= line: that needs resolvconf)."""
    lines = [
        "[Interface]",
        f"PrivateKey = {private_key.to_base64()}",
        f"Address = {', '.join(addresses)}",
        "",
        "[Peer]",
        f"PublicKey = {peer_public_key}",
        f"Endpoint = {endpoint}",
        f"AllowedIPs = {', '.join(allowed_ips)}",
    ]
    if preshared_key is not None:
        lines.append(f"PresharedKey = {preshared_key.to_base64()}")
    if keepalive:
        lines.append(f"PersistentKeepalive = {keepalive}")
    return "\n".join(lines) + "\n"


@dataclass
class WgServer:
    """A WireGuard server brought up with Bulwark's own data-plane primitives inside a namespace."""

    ns: Netns
    iface: str
    key: PrivateKey
    port: int
    runner: Runner
    address4: str
    address6: str

    def desired(self, peers: Sequence[PeerSpec]) -> DesiredDevice:
        return DesiredDevice(self.key, self.port, {p.public_key: p for p in peers})


@dataclass
class WgClient:
    """A wg-quick client in its own namespace, wired to the server's namespace with a veth."""

    ns: Netns
    iface: str
    key: PrivateKey
    address4: str
    address6: str
    spec: PeerSpec


def start_wg_server(
    factory: NetnsFactory,
    ns: Netns,
    *,
    address4: str = "10.77.0.1/24",
    address6: str = "fd77::1/64",
    port: int = 51820,
    log: Callable[[str], None] | None = None,
) -> WgServer:
    """create_link (wireguard-go) + apply_device + addresses + up, as a gateway bring-up would."""
    iface = factory.ifname("sv")
    runner = ns.runner(log)
    key = PrivateKey.generate()
    create_link(runner, iface, "userspace")
    server = WgServer(ns, iface, key, port, runner, address4, address6)
    apply_device(runner, iface, server.desired([]))
    ensure_addresses(runner, iface, [ipaddress.ip_interface(address4), ipaddress.ip_interface(address6)])
    set_up(runner, iface)
    return server


def add_wg_client(
    factory: NetnsFactory,
    server: WgServer,
    host: int,
    *,
    extra_client_routes: Sequence[str] = (),
    preshared_key: PresharedKey | None = None,
) -> WgClient:
    """A client namespace with a veth to the server (172.30.<host>.0/24) running `wg-quick up`.

    Its tunnel addresses are 10.77.0.<host> and fd77::<host>. The server is not told about it: apply
    `client.spec` to the server. The client routes the server's tunnel subnets plus `extra_client_routes`.
    """
    ns = factory()
    veth(server.ns, ns, f"172.30.{host}.1/24", f"172.30.{host}.2/24")
    key = PrivateKey.generate()
    address4, address6 = f"10.77.0.{host}", f"fd77::{host}"
    subnet4 = str(ipaddress.ip_interface(server.address4).network)
    subnet6 = str(ipaddress.ip_interface(server.address6).network)
    conf = wg_quick_conf(
        key,
        [f"{address4}/32", f"{address6}/128"],
        server.key.public_key(),
        f"172.30.{host}.1:{server.port}",
        [subnet4, subnet6, *extra_client_routes],
        keepalive=None,
        preshared_key=preshared_key,
    )
    iface = factory.wg_quick_up(ns, conf)
    nets = frozenset({ipaddress.ip_network(f"{address4}/32"), ipaddress.ip_network(f"{address6}/128")})
    spec = PeerSpec(key.public_key(), nets, preshared_key=preshared_key)
    return WgClient(ns, iface, key, address4, address6, spec)
