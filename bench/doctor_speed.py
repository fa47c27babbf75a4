"""How long `bulwark doctor` takes on a healthy gateway with 1,000 peers (target: under 3 s).

Run as root from the repository root:

    .venv/bin/python bench/doctor_speed.py                 # 1,000 peers, 5 runs
    .venv/bin/python bench/doctor_speed.py --peers 200 --runs 3

A server namespace runs the real gateway (`bulwark up`: supervisor + wireguard-go) with N peers; a client
namespace completes a real WireGuard handshake for every one of them (doctor.handshake, confirmed with a
keepalive, as a client's first packet would), so the gateway is healthy: every peer has a fresh handshake and
every check should be ok. Then `bulwark doctor --json` runs in the server namespace (the whole command: Python
start-up included) and `run_server_checks` in-process, side by side with the raw queries the checks read
(`wg show dump`, `ip -j`, `nft -j list ruleset`, `ss`, `sysctl`) run one after the other. Everything is removed
at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.netns import Netns, unique_ifname, veth  # noqa: E402

RUN_DIR = Path(os.environ.get("BULWARK_RUN_DIR", "/run/bulwark"))
WG_SOCKET_DIR = Path("/var/run/wireguard")
SERVER_WAN = "192.0.2.1"
BULWARK = [sys.executable, "-m", "bulwark_vpn"]

HANDSHAKES = """
import sys, time
from pathlib import Path
from bulwark_vpn.doctor import handshake
from bulwark_vpn.doctor.facts import read_store
view = read_store(Path(sys.argv[1]))
server = view.server_key.public_key()
start, failed = time.monotonic(), []
for peer in view.peers:
    outcome = handshake.probe((sys.argv[2], 51820), peer.private_key, server, peer.preshared_key, confirm=True)
    if outcome.verdict != "ok":
        failed.append(f"{peer.name}: {outcome.verdict}")
print(len(view.peers), time.monotonic() - start, ";".join(failed))
"""

IN_PROCESS = """
import sys, time
from pathlib import Path
from bulwark_vpn.doctor import run_server_checks
times = []
for _ in range(int(sys.argv[2])):
    start = time.monotonic()
    results = run_server_checks(Path(sys.argv[1]))
    times.append(time.monotonic() - start)
print(" ".join(f"{t:.3f}" for t in times), " ".join(f"{r.name}={r.status}" for r in results if r.status != "ok"))
"""

RAW_QUERIES = [
    ["wg", "show", "{iface}", "dump"],
    ["ip", "-d", "-j", "link", "show"],
    ["ip", "-j", "address", "show"],
    ["ip", "-4", "-j", "route", "show", "table", "main"],
    ["ip", "-6", "-j", "route", "show", "table", "main"],
    ["ip", "-4", "-j", "rule", "show"],
    ["nft", "-j", "list", "ruleset"],
    ["ss", "-H", "-u", "-a", "-n", "-p"],
    ["sysctl", "-n", "net.ipv4.ip_forward"],
    ["sysctl", "-n", "net.ipv4.conf.all.src_valid_mark"],
]


def _bulwark(ns: Netns, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEERS", "SERVERURL", "PEERDNS", "BULWARK_"))}
    result = subprocess.run(ns.exec_argv([*BULWARK, *args]), capture_output=True, text=True, env=env,
                            timeout=timeout, check=False)
    return result


def _must(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        raise SystemExit(f"bench: {what} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return result.stdout


def run(peers: int, runs: int) -> int:
    server, client = Netns(), Netns()
    iface = unique_ifname("bd")
    workdir = Path(tempfile.mkdtemp(prefix="bulwark-bench-"))
    config = workdir / "config"
    try:
        veth(server, client, "172.31.0.1/24", "172.31.0.2/24")
        server.ip("address", "add", f"{SERVER_WAN}/32", "dev", "lo")
        server.ip("route", "add", "default", "via", "172.31.0.2")  # an egress, for NAT
        client.ip("route", "add", f"{SERVER_WAN}/32", "via", "172.31.0.1")
        server.set_resolv_conf("nameserver 127.0.0.1\n")  # the forwarder's upstream refuses at once

        started = time.monotonic()
        _must(_bulwark(server, "init", "--config-dir", str(config), "--server-url", SERVER_WAN,
                       "--interface", iface, "--subnet", "10.13.0.0/20", "--peers", str(peers)), "bulwark init")
        print(f"init with {peers} peers: {time.monotonic() - started:.1f} s")
        _must(_bulwark(server, "up", "--config-dir", str(config)), "bulwark up")

        shaken = subprocess.run(client.exec_argv([sys.executable, "-c", HANDSHAKES, str(config), SERVER_WAN]),
                                capture_output=True, text=True, timeout=600, check=True).stdout.split(" ", 2)
        print(f"handshakes: {shaken[0]} peers in {float(shaken[1]):.1f} s from the client namespace"
              + (f"; FAILED: {shaken[2].strip()}" if shaken[2].strip() else ""))

        wall, statuses = [], Counter()
        for _ in range(runs):
            started = time.monotonic()
            result = _bulwark(server, "doctor", "--json", "--config-dir", str(config))
            wall.append(time.monotonic() - started)
            checks = json.loads(result.stdout)
            statuses = Counter(c["status"] for c in checks)
            not_ok = {c["name"]: c["status"] + ": " + c["evidence"] for c in checks if c["status"] != "ok"}
        inproc = subprocess.run(server.exec_argv([sys.executable, "-c", IN_PROCESS, str(config), str(runs)]),
                                capture_output=True, text=True, timeout=600, check=True).stdout.split(" ")
        raw = []
        for _ in range(runs):
            started = time.monotonic()
            for argv in RAW_QUERIES:
                subprocess.run(server.exec_argv([a.format(iface=iface) for a in argv]), capture_output=True,
                               check=False)
            raw.append(time.monotonic() - started)

        print(f"\n{'':<44}{'median':>8}{'min':>8}{'max':>8}")
        _row("bulwark doctor --json (whole command)", wall)
        _row("run_server_checks() in-process", [float(t) for t in inproc[:runs]])
        _row(f"the {len(RAW_QUERIES)} raw queries, one after the other", raw)
        print(f"\nstatuses: {dict(statuses)}")
        if not_ok:
            for name, text in not_ok.items():
                print(f"  not ok: {name}: {text}")
        verdict = "under" if statistics.median(wall) < 3.0 else "OVER"
        print(f"doctor with {peers} peers: {statistics.median(wall):.2f} s (median of {runs}), {verdict} the 3 s "
              "target")
        return 0 if verdict == "under" and not not_ok else 1
    finally:
        _bulwark(server, "down", "--config-dir", str(config), timeout=60)
        client.delete()
        server.delete()
        (WG_SOCKET_DIR / f"{iface}.sock").unlink(missing_ok=True)
        for suffix in (".json", ".log"):
            (RUN_DIR / f"{iface}{suffix}").unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _row(label: str, times: list[float]) -> None:
    print(f"{label:<44}{statistics.median(times):>7.2f}s{min(times):>7.2f}s{max(times):>7.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (network namespaces)")
    sys.exit(run(args.peers, args.runs))


if __name__ == "__main__":
    main()
