"""Bulwark at 65,000 (and 10,000) peers in a /16: every row of issue 12's table, side by side with its floor.

Run as root from the repository root:

    .venv/bin/python bench/scale.py                         # 65,000 then 10,000 peers (about 20-30 minutes here)
    .venv/bin/python bench/scale.py --sizes 10000 --idle 20  # a quicker look
    .venv/bin/python bench/scale.py --provision store        # skip `bulwark init --peers N` (the slow row)

For each size: `bulwark init --subnet 10.20.0.0/16 --peers N` as a user would (every file, QR PNGs; `--provision
store` inserts the peers through the store instead, with `--files` for their layout), then in a network namespace
`bulwark up`, `bulwark status --json`, 60 idle seconds of the supervisor, `bulwark peer add`/`remove` on the live
gateway, `bulwark peer list --json` and `bulwark doctor`, each timed as the whole command (a process started
inside the namespace with `ip netns exec`, as a user would run it). The floors are measured in the same run, the
same way: `python -c pass`, `wg setconf` of the same peers into a fresh wireguard-go, `wg show dump`, `wg set` of
one peer, and for init the same number of folders and files written with plain os.open/os.write.

Everything it makes (namespaces `bw-<pid>-<n>`, wireguard-go processes, /run/bulwark/IFACE.*, the config folders)
is removed at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.netns import Netns, unique_ifname  # noqa: E402

BULWARK = str(Path(sys.executable).parent / "bulwark")
RUN_DIR = Path(os.environ.get("BULWARK_RUN_DIR", "/run/bulwark"))
WG_SOCKET_DIR = Path("/var/run/wireguard")
SUBNET = "10.20.0.0/16"
SERVER_URL = "172.31.0.1"  # an address: the doctor need not resolve a name
# A resolver for the server namespace (the doctor's DNS check asks the forwarder, which asks it).
RESOLVER = (
    "from dnslib.server import DNSServer\n"
    "from dnslib.zoneresolver import ZoneResolver\n"
    "import time\n"
    "DNSServer(ZoneResolver('example.com. 60 IN A 192.0.2.10\\n'), address='127.0.0.53', port=53).start_thread()\n"
    "time.sleep(86400)\n"
)

GOALS = {  # seconds (RSS in MB, CPU in % of a core)
    "init": 60.0, "up": 10.0, "status": 1.0, "rss": 200.0, "cpu": 5.0, "add": 0.3, "remove": 0.3, "list": 1.0,
    "doctor": 3.0,
}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # noqa: T201 - progress goes to stderr


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BULWARK_", "PEERS", "SERVERURL"))}
    env["BULWARK_RUN_DIR"] = str(RUN_DIR)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode compiled
    return env


def run(argv: Sequence[str], ns: Netns | None = None, *, input: bytes | None = None,  # noqa: A002
        check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess[bytes]:
    full = ns.exec_argv(argv) if ns is not None else list(argv)
    result = subprocess.run(full, capture_output=True, input=input, env=clean_env(), timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace')[-2000:]}")
    return result


def median_time(argv: Sequence[str], ns: Netns | None, runs: int, check: bool = True) -> float:
    return statistics.median(timed(lambda: run(argv, ns, check=check)) for _ in range(runs))


@dataclass
class Row:
    what: str
    peers: int
    value: float  # seconds, MB or % of a core
    unit: str
    floor: str
    goal_key: str
    load: str
    note: str = ""

    def cells(self) -> list[str]:
        shown = fmt(self.value) if self.unit == "s" else f"{self.value:.1f} {self.unit}"
        if not self.goal_key:
            return [self.what, f"{self.peers:,}", shown, self.floor, "(no goal)", "-", self.load]
        goal = GOALS[self.goal_key]
        goal_text = f"<= {fmt(goal)}" if self.unit == "s" else f"<= {goal:g} {self.unit}"
        verdict = "MET" if self.value <= goal else "MISS"
        return [self.what, f"{self.peers:,}", shown, self.floor, goal_text, verdict, self.load]


HEADER = ["row", "peers", "Bulwark", "floor (same run)", "goal", "MET/MISS", "load 1/5/15"]


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def proc_cpu(pid: int) -> float:
    """CPU seconds of a process and its waited-for children (utime, stime, cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def proc_rss(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


# -- helpers run in a child process (this file with a hidden first argument) -------------------------------


def _insert(config: str, count: str) -> None:
    from tests.helpers import insert_peers

    insert_peers(Path(config), int(count))


def _setconf_text(config: str, port: str, out: str) -> None:
    """What the supervisor sends to `wg setconf` for this store (written 0600: it holds keys)."""
    from bulwark_vpn.dataplane import table
    from bulwark_vpn.store import open_store

    with open_store(Path(config), read_only=True) as store:
        wanted = table.DeviceTable(store.require_server_key().to_base64(), int(port))
        sections, _ = table.load_rows(wanted, store.peer_rows(), time.time())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(table.interface_conf(wanted.private_key, int(port)) + "".join(sections))


def _fs_floor(target: str) -> None:
    """The filesystem alone: the same folders and files (count and sizes, on stdin) as a config folder, with os
    calls."""
    sizes = json.loads(sys.stdin.read())
    os.mkdir(target, 0o700)
    for folder, files in sizes.items():
        path = os.path.join(target, folder)
        os.mkdir(path, 0o700)
        for name, size in files:
            fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"x" * size)
            os.close(fd)


def _memory(config: str) -> None:
    """Where the supervisor's memory goes: tracemalloc and RSS after its imports and after loading the table."""
    import tracemalloc

    def rss() -> float:
        return proc_rss(os.getpid())[0]

    start = rss()
    tracemalloc.start()
    from bulwark_vpn.dataplane import dns, firewall, gateway, table  # noqa: F401 - what the supervisor imports
    from bulwark_vpn.store import open_store

    imports = tracemalloc.get_traced_memory()[0]
    after_imports = rss()
    with open_store(Path(config), read_only=True) as store:
        before = tracemalloc.get_traced_memory()[0]
        wanted = table.DeviceTable(store.require_server_key().to_base64(), 51820)
        sections, _ = table.load_rows(wanted, store.peer_rows(), time.time())
        peak_text = sum(len(s) for s in sections)
        del sections
        table_bytes = tracemalloc.get_traced_memory()[0] - before
    print(json.dumps({"rss_start": start, "rss_imports": after_imports, "traced_imports": imports / 2**20,  # noqa: T201
                      "table": table_bytes / 2**20, "peers": len(wanted), "setconf_text": peak_text / 2**20,
                      "rss_end": rss()}))


HIDDEN = {
    "_insert": lambda args: _insert(*args),
    "_setconf_text": lambda args: _setconf_text(*args),
    "_fs_floor": lambda args: _fs_floor(*args),
    "_memory": lambda args: _memory(*args),
}


def self_argv(mode: str, *args: object) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), mode, *(str(a) for a in args)]


# -- the bench ---------------------------------------------------------------------------------------------


@dataclass
class Bench:
    options: argparse.Namespace
    namespaces: list[Netns] = field(default_factory=list)
    ifaces: list[str] = field(default_factory=list)
    workdirs: list[Path] = field(default_factory=list)
    up: list[tuple[Netns, Path]] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def workdir(self) -> Path:
        base = Path(self.options.tmpdir) if self.options.tmpdir else None
        path = Path(tempfile.mkdtemp(prefix="bulwark-scale-", dir=base))
        os.chmod(path, 0o700)
        self.workdirs.append(path)
        return path

    def netns(self) -> Netns:
        ns = Netns()
        self.namespaces.append(ns)
        return ns

    def ifname(self, prefix: str) -> str:
        name = unique_ifname(prefix)
        self.ifaces.append(name)
        return name

    def add(self, *args: object, **kwargs: object) -> None:
        row = Row(*args, **kwargs)  # type: ignore[arg-type]
        self.rows.append(row)
        say("   " + " | ".join(row.cells()))

    def python_floor(self, ns: Netns | None) -> float:
        return median_time([sys.executable, "-c", "pass"], ns, 5)

    # -- one size --

    def provision(self, peers: int, config: Path, iface: str) -> None:
        common = ["init", "--config-dir", str(config), "--subnet", SUBNET, "--server-url", SERVER_URL,
                  "--interface", iface]
        if self.options.provision == "cli":
            say(f"-- bulwark init --subnet {SUBNET} --peers {peers} (every file, QR PNGs) [load {load()}]")
            seconds = timed(lambda: run([BULWARK, *common, "--peers", str(peers)]))
            shape = folder_shape(config)
            files = sum(len(v) for v in shape.values())
            floor_dir = config.parent / "fs-floor"
            fs = timed(lambda: run(self_argv("_fs_floor", floor_dir), input=json.dumps(shape).encode()))
            shutil.rmtree(floor_dir, ignore_errors=True)
            python = self.python_floor(None)
            self.add("init (all files, QR PNGs)", peers, seconds, "s",
                     f"{fmt(fs)}: {len(shape):,} folders, {files:,} files by os.write; python -c pass {fmt(python)}",
                     "init", load())
            for layout in self.options.layouts:
                other = config.parent / f"init-{layout}"
                say(f"-- bulwark init --peers {peers} --files {layout} [load {load()}]")
                took = timed(lambda o=other, lay=layout: run(  # type: ignore[misc]
                    [BULWARK, "init", "--config-dir", str(o), "--subnet", SUBNET, "--server-url", SERVER_URL,
                     "--interface", iface, "--peers", str(peers), "--files", lay]))
                count = sum(len(v) for v in folder_shape(other).values())
                shutil.rmtree(other, ignore_errors=True)
                self.add(f"init --files {layout}", peers, took, "s", f"{count:,} files", "", load())
        else:
            say(f"-- store-level provisioning of {peers} peers (files = {self.options.files}) [load {load()}]")
            seconds = timed(lambda: (run([BULWARK, *common, "--files", self.options.files]),
                                     run(self_argv("_insert", config, peers)),
                                     run([BULWARK, "render", "--config-dir", str(config)])))
            self.notes.append(f"{peers:,} peers: store-level provisioning (one transaction through the store, then "
                              f"`bulwark render`, files = {self.options.files}) took {fmt(seconds)}; no init row")

    def size(self, peers: int) -> None:
        work = self.workdir()
        config = work / "config"
        iface = self.ifname("bsc")
        self.provision(peers, config, iface)
        server = self.netns()
        resolver = server.python(RESOLVER, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        del resolver
        server.set_resolv_conf("nameserver 127.0.0.53\n")

        # Floor of `up`: the same peers into a fresh wireguard-go with one `wg setconf`, before the gateway runs.
        conf = work / "floor.conf"
        run(self_argv("_setconf_text", config, 51999, conf))
        floor_if = self.ifname("bfl")
        wggo = server.popen(["wireguard-go", floor_if], env={**clean_env(), "WG_PROCESS_FOREGROUND": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while run(["wg", "show", floor_if], server, check=False).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        say(f"-- floor: wg setconf of {peers} peers into wireguard-go [load {load()}]")
        setconf = timed(lambda: run(["wg", "setconf", floor_if, str(conf)], server))
        run(["ip", "link", "del", floor_if], server, check=False)
        wggo.wait(10)
        conf.unlink()

        say(f"-- bulwark up [load {load()}]")
        up_seconds = timed(lambda: run([BULWARK, "up", "--config-dir", str(config)], server))
        self.up.append((server, config))
        device = len(run(["wg", "show", iface, "peers"], server).stdout.split())
        python = self.python_floor(server)
        self.add("up", peers, up_seconds, "s", f"wg setconf {fmt(setconf)}; python -c pass {fmt(python)}", "up",
                 load(), note=f"{device} peers on the device")
        if device != peers:
            raise RuntimeError(f"the device has {device} peers, the store {peers}")

        time.sleep(3)
        dump = median_time(["wg", "show", iface, "dump"], server, 3)
        status = median_time([BULWARK, "status", "--json", "--config-dir", str(config)], server, 3)
        self.add("status --json", peers, status, "s", f"wg show dump {fmt(dump)}", "status", load())

        state = json.loads((RUN_DIR / f"{iface}.json").read_text())
        pid = state["pid"]
        say(f"-- the supervisor idle for {self.options.idle} s [load {load()}]")
        time.sleep(5)  # past bring-up's own work
        cpu0, wall0 = proc_cpu(pid), time.monotonic()
        time.sleep(self.options.idle)
        cpu = (proc_cpu(pid) - cpu0) / (time.monotonic() - wall0) * 100
        rss, peak = proc_rss(pid)
        wg_pid = int(run(["pgrep", "-f", f"wireguard-go {iface}$"], check=False).stdout.split()[0] or 0)
        wg_rss = proc_rss(wg_pid)[0] if wg_pid else 0.0
        self.add("supervisor idle: RSS", peers, rss, "MB",
                 f"peak {peak:.0f} MB; wireguard-go {wg_rss:.0f} MB (not ours)", "rss", load())
        self.add("supervisor idle: CPU", peers, cpu, "% core", f"over {self.options.idle} s, with its wg/ip children",
                 "cpu", load())

        add, remove = [], []
        say(f"-- {self.options.ops} peer add + remove on the live gateway [load {load()}]")
        for number in range(self.options.ops):
            name = f"bench{number}"
            add.append(timed(lambda n=name: run([BULWARK, "peer", "add", n, "--config-dir", str(config)], server)))
            time.sleep(0.05)
            remove.append(timed(lambda n=name: run([BULWARK, "peer", "remove", n, "--config-dir", str(config)],
                                                    server)))
            time.sleep(0.05)
        key = run(["wg", "genkey"]).stdout
        public = run(["wg", "pubkey"], input=key).stdout.decode().strip()
        wg_set = median_time(["wg", "set", iface, "peer", public, "allowed-ips", "10.20.255.250/32"], server, 3)
        run(["wg", "set", iface, "peer", public, "remove"], server)
        python = self.python_floor(server)
        floor = f"python -c pass {fmt(python)} + wg set {fmt(wg_set)}"
        self.add("peer add (median)", peers, statistics.median(add), "s", floor, "add", load(),
                 note=f"p95 {fmt(sorted(add)[-(-len(add) * 95 // 100) - 1])}")
        self.add("peer remove (median)", peers, statistics.median(remove), "s", floor, "remove", load())

        listing = median_time([BULWARK, "peer", "list", "--json", "--config-dir", str(config)], server, 3)
        self.add("peer list --json", peers, listing, "s", f"python -c pass {fmt(python)}", "list", load())
        doctors = [timed(lambda: run([BULWARK, "doctor", "--config-dir", str(config)], server, check=False))
                   for _ in range(3)]
        self.add("doctor (median of 3)", peers, statistics.median(doctors), "s",
                 f"python -c pass {fmt(python)} + wg show dump {fmt(dump)}", "doctor", load(),
                 note="runs " + ", ".join(fmt(d) for d in doctors) + " (the first reads the folder's metadata "
                      "from disk: the permission and endpoint checks walk every peer folder)")

        memory = json.loads(run(self_argv("_memory", config)).stdout.decode().strip().splitlines()[-1])
        self.notes.append(
            f"{peers:,} peers, where the supervisor's memory goes: Python and its imports "
            f"{memory['rss_imports']:.0f} MB RSS ({memory['traced_imports']:.1f} MB traced); the wanted device "
            f"(DeviceTable: key, digest, networks per peer) {memory['table']:.1f} MB traced for "
            f"{memory['peers']:,} peers "
            f"({memory['table'] * 2**20 / max(memory['peers'], 1):.0f} bytes a peer); the `wg setconf` text at "
            f"bring-up {memory['setconf_text']:.1f} MB, freed once loaded; live RSS {rss:.0f} MB, peak {peak:.0f} MB")
        run([BULWARK, "down", "--config-dir", str(config)], server)
        self.up.remove((server, config))

    def cleanup(self) -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for server, config in self.up:
                run([BULWARK, "down", "--config-dir", str(config)], server, check=False, timeout=120)
            for ns in reversed(self.namespaces):
                ns.delete()
            for name in self.ifaces:
                (WG_SOCKET_DIR / f"{name}.sock").unlink(missing_ok=True)
                for suffix in (".json", ".log"):
                    (RUN_DIR / f"{name}{suffix}").unlink(missing_ok=True)
            for work in self.workdirs:
                shutil.rmtree(work, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)


def folder_shape(config: Path) -> dict[str, list[tuple[str, int]]]:
    """Every folder of a config folder with its files' names and sizes (the store and lock left out)."""
    shape: dict[str, list[tuple[str, int]]] = {}
    for entry in os.scandir(config):
        if entry.is_dir(follow_symlinks=False):
            shape[entry.name] = [(f.name, f.stat(follow_symlinks=False).st_size) for f in os.scandir(entry.path)]
    return shape


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in HIDDEN:
        HIDDEN[args[0]](args[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="65000,10000", help="peer counts (default 65000,10000)")
    parser.add_argument("--provision", choices=["cli", "store"], default="cli",
                        help="cli: `bulwark init --peers N` (the init row); store: insert through the store")
    parser.add_argument("--files", choices=["full", "configs", "none"], default="full",
                        help="the file layout with --provision store (default full)")
    parser.add_argument("--layouts", default="configs,none",
                        help="with --provision cli, also time init with these file layouts (default configs,none; "
                             "'' for none)")
    parser.add_argument("--ops", type=int, default=10, help="peer adds and removes on the live gateway (each)")
    parser.add_argument("--idle", type=int, default=60, help="seconds of the idle supervisor measured")
    parser.add_argument("--tmpdir", help="where the config folders go (default: the system's temp folder)")
    options = parser.parse_args(args)
    if os.geteuid() != 0:
        parser.error("run as root (namespaces, wireguard-go)")
    sizes = [int(s) for s in options.sizes.split(",")]
    options.layouts = [x for x in options.layouts.split(",") if x]
    if not set(options.layouts) <= {"configs", "none"}:
        parser.error("--layouts: configs and/or none")
    if not all(2 <= s <= 65000 for s in sizes):
        parser.error("--sizes: between 2 and 65000 peers (a /16 holds 65,533)")

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupted)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src")], check=False,
                   stdout=subprocess.DEVNULL, env=clean_env())
    bench = Bench(options)
    try:
        for peers in sizes:
            bench.size(peers)
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        bench.cleanup()
    print(f"Bulwark at scale on {os.cpu_count()} CPUs (wireguard-go, no kernel module); every command is a whole "  # noqa: T201
          f"process run inside the server namespace; load average 1/5/15 min when each row was measured\n")
    print(table([row.cells() for row in bench.rows]))  # noqa: T201
    for row in bench.rows:
        if row.note:
            print(f"- {row.what}, {row.peers:,} peers: {row.note}")  # noqa: T201
    for note in bench.notes:
        print(f"- {note}")  # noqa: T201
    return 0 if all(row.cells()[5] in ("MET", "-") for row in bench.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
