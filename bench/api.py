"""The HTTP API under load on a running 10,000-peer gateway: list a page of peers, show one peer, create one peer
(with the live apply to the device), with 1 and 50 concurrent clients; side by side with the floor of the same
server (`GET /api/v1/health`, which does no work).

Run as root from the repository root:

    .venv/bin/python bench/api.py                 # 10,000 peers, 15 s per row
    .venv/bin/python bench/api.py --peers 1000 --seconds 5

A network namespace runs the real gateway (`bulwark up --serve`: the supervisor, wireguard-go, the API as its
thread on 127.0.0.1:8080). The load generator runs in the same namespace (threads, one keep-alive connection
each, an admin API token) and shares the 2 CPUs with the server: the numbers are what one small machine does
with both on it. Goals (issue "bulwark serve"): list page and show p95 under 50 ms, create p95 under 100 ms, no
error at 50 concurrent clients.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.netns import NetnsFactory  # noqa: E402

PY = sys.executable
PASSWORD = "correct horse battery staple"  # noqa: S105 - a throwaway account of the bench

LOAD = r"""
import http.client, json, statistics, sys, threading, time
path_kind, method, clients, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
token = sys.stdin.readline().strip()  # never in argv
latencies, errors, counter, statuses, first_errors = [], [], [0], {}, {}
lock = threading.Lock()
stop = time.monotonic() + seconds

def worker(index):
    conn = http.client.HTTPConnection("127.0.0.1", 8080, timeout=30)
    n = 0
    while time.monotonic() < stop:
        n += 1
        if path_kind == "create":
            with lock:
                counter[0] += 1
                name = f"bench{clients}x{counter[0]}"  # unique across the rows of a run
            path, body = "/api/v1/peers", json.dumps({"names": [name]})
        elif path_kind == "list":
            path, body = f"/api/v1/peers?limit=50&offset={(n * 50) % 9950}", None
        elif path_kind == "show":
            path, body = f"/api/v1/peers/peer{1 + (index * 7919 + n * 31) % 9999}", None
        else:
            path, body = "/api/v1/health", None
        headers = {"Authorization": "Bearer " + token}
        if body:
            headers["Content-Type"] = "application/json"
        start = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            body = answer.read()
            ok = answer.status < 400
            if not ok:
                with lock:
                    statuses[answer.status] = statuses.get(answer.status, 0) + 1
                    first_errors.setdefault(answer.status, body[:300].decode(errors="replace"))
        except OSError as exc:
            ok = False
            with lock:
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", 8080, timeout=30)
        elapsed = time.perf_counter() - start
        with lock:
            (latencies if ok else errors).append(elapsed)

threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
begin = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
wall = time.monotonic() - begin
lat = sorted(latencies)
def pct(p): return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(json.dumps({"requests": len(lat), "errors": len(errors), "wall": wall, "p50": pct(0.5), "p95": pct(0.95),
                  "statuses": {str(k): v for k, v in statuses.items()},
                  "first_errors": {str(k): v for k, v in first_errors.items()}}))
"""


def provision(config: Path, count: int) -> None:
    """`count` peers in the store in one transaction, and the server files."""
    from bulwark_vpn import service
    from bulwark_vpn.config import InitRequest, parse_peers, settings_update
    from bulwark_vpn.fsutil import SafeFolder
    from bulwark_vpn.service.files import _server_file_set
    from bulwark_vpn.service.peers import create_peer
    from bulwark_vpn.store import open_store

    ctx = service.Context(config)
    service.init_server(ctx, InitRequest(update=settings_update({
        "server_url": "vpn.example.com", "subnet4": "10.20.0.0/16", "interface": "bwapi0", "serve": True})))
    with open_store(config) as store, SafeFolder.open(config) as folder:
        settings = store.settings()
        with store.transaction():
            for name in parse_peers(str(count)):
                create_peer(store, settings, name)
        folder.write_many(_server_file_set(store))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    factory = NetnsFactory()
    tmp = Path(tempfile.mkdtemp(prefix="bulwark-bench-api-"))
    config, run_dir = tmp / "c", tmp / "run"
    for key in [k for k in os.environ if k.startswith("BULWARK_")]:
        del os.environ[key]
    os.environ["BULWARK_RUN_DIR"] = str(run_dir)  # inherited by every command below, in the namespace too
    env = dict(os.environ)
    try:
        ns = factory()
        started = time.perf_counter()
        provision(config, args.peers)
        print(f"{args.peers:,} peers provisioned in {time.perf_counter() - started:.1f} s")
        # Their files (configs, keys, QR codes) as `bulwark init --peers N` leaves them, so `up` below starts from
        # a folder level with its store, as a running installation's is.
        started = time.perf_counter()
        subprocess.run([PY, "-m", "bulwark_vpn", "render", "--all", "--config-dir", str(config)], env=env, check=True,
                       capture_output=True)
        print(f"their files rendered in {time.perf_counter() - started:.1f} s")
        bulwark = [PY, "-m", "bulwark_vpn"]
        subprocess.run([*bulwark, "user", "add", "boss", "--admin", "--password-stdin", "--config-dir", str(config)],
                       input=PASSWORD + "\n", text=True, env=env, check=True, capture_output=True)
        token = subprocess.run([*bulwark, "token", "create", "--name", "bench", "--scope", "admin", "--user", "boss",
                                "--config-dir", str(config)], env=env, check=True, capture_output=True,
                               text=True).stdout.strip()
        started = time.perf_counter()
        ns.run([*bulwark, "up", "--config-dir", str(config)], timeout=300)
        print(f"gateway up with the API in {time.perf_counter() - started:.1f} s; load average "
              f"{os.getloadavg()[0]:.2f}\n")
        rows = [("floor: GET /api/v1/health", "health", "GET", None),
                ("list a page of 50 peers", "list", "GET", 0.050),
                ("show one peer", "show", "GET", 0.050),
                ("create one peer (live apply)", "create", "POST", 0.100)]
        header = f"{'operation':<30} {'clients':>7} {'requests':>8} {'req/s':>7} {'p50':>8} {'p95':>8} " \
                 f"{'errors':>6}  {'goal':>10}  verdict"
        print(header)
        print("-" * len(header))
        met, notes = True, []
        for label, kind, method, goal in rows:
            for clients in (1, 50):
                out = ns.run([PY, "-c", LOAD, kind, method, str(clients), str(args.seconds)],
                             input=(token + "\n").encode(), timeout=args.seconds * 4 + 120).stdout.decode()
                result = json.loads(out.strip().splitlines()[-1])
                rps = result["requests"] / result["wall"] if result["wall"] else 0
                # The latency goals are read for one client; at 50 concurrent clients the goal is no error (the
                # p95 there is mostly queueing behind 49 others on 2 shared cores: printed, not judged).
                verdict, goal_text = "", ""
                if goal is not None and clients == 1:
                    ok = result["p95"] <= goal and result["errors"] == 0
                    verdict, goal_text = ("MET" if ok else "MISS"), f"p95 {goal * 1000:.0f} ms"
                    met &= ok
                elif goal is not None:
                    ok = result["errors"] == 0
                    verdict, goal_text = ("MET" if ok else "MISS"), "no error"
                    met &= ok
                if result["statuses"]:
                    verdict += f" {result['statuses']}"
                    notes.extend(f"{label}, {clients} clients, first {code}: {text}"
                                 for code, text in result["first_errors"].items())
                print(f"{label:<30} {clients:>7} {result['requests']:>8} {rps:>7.1f} "
                      f"{result['p50'] * 1000:>6.1f}ms {result['p95'] * 1000:>6.1f}ms {result['errors']:>6}  "
                      f"{goal_text:>10}  {verdict}")
        for note in notes:
            print(note)
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
        ns.run([*bulwark, "down", "--config-dir", str(config)], check=False, timeout=60)
        return 0 if met else 1
    finally:
        factory.cleanup()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    raise SystemExit(main())
