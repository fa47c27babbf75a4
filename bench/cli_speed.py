"""How fast the command line answers: `bulwark --help` and `bulwark peer list` on 10,000 peers, side by side with
a bare `python -c "import click"` (the floor any click program pays), in one run.

    .venv/bin/python bench/cli_speed.py [--peers 10000] [--runs 15]

Goals (issue "One core for every client"): `--help` at most 1.5 times the click baseline; `peer list` (text and
--json) on 10,000 peers under 400 ms. Each command is a whole process, timed from start to exit, best and median
of the runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _make_store(config: Path, count: int) -> None:
    """A store with `count` peers in one transaction, and the server files (peer files are not what is timed)."""
    from bulwark_vpn import service
    from bulwark_vpn.config import InitRequest, parse_peers, settings_update
    from bulwark_vpn.service.peers import create_peer
    from bulwark_vpn.store import open_store

    ctx = service.Context(config)
    service.init_server(ctx, InitRequest(update=settings_update({"server_url": "vpn.example.com",
                                                                  "subnet4": "10.20.0.0/16"})))
    with open_store(config) as store:
        settings = store.settings()
        with store.transaction():
            for name in parse_peers(str(count)):
                create_peer(store, settings, name)


def _time(argv: list[str], runs: int) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        samples.append(time.perf_counter() - start)
    return min(samples), statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    py = sys.executable
    bulwark = [py, "-m", "bulwark_vpn"]
    print(f"load average: {os.getloadavg()[0]:.2f}; {args.runs} runs each; times: best / median")
    # As an installed package has it: its bytecode compiled (pip compiles on install; a source checkout run with
    # PYTHONDONTWRITEBYTECODE would compile every module of Bulwark at each start, about 10 ms of --help).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src")], check=True,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    print("bytecode of src/ compiled first, as an installed package has it")
    with tempfile.TemporaryDirectory(prefix="bulwark-bench-") as tmp:
        config = Path(tmp) / "c"
        started = time.perf_counter()
        _make_store(config, args.peers)
        print(f"store with {args.peers:,} peers made in {time.perf_counter() - started:.1f} s\n")
        baseline = _time([py, "-c", "import click"], args.runs)
        rows = [
            ('python -c "import click" (baseline)', baseline, None),
            ("bulwark --help", _time([*bulwark, "--help"], args.runs), 1.5 * baseline[1]),
            (f"bulwark peer list ({args.peers:,} peers)",
             _time([*bulwark, "peer", "list", "--config-dir", str(config)], args.runs), 0.400),
            (f"bulwark peer list --json ({args.peers:,} peers)",
             _time([*bulwark, "peer", "list", "--json", "--config-dir", str(config)], args.runs), 0.400),
        ]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'command':<{width}}  {'best':>8}  {'median':>8}  {'goal':>9}  verdict")
    met = True
    for name, (best, median), goal in rows:
        verdict = "" if goal is None else ("MET" if median <= goal else "MISS")
        met &= verdict != "MISS"
        goal_text = "" if goal is None else f"{goal * 1000:.0f} ms"
        print(f"{name:<{width}}  {best * 1000:6.0f} ms  {median * 1000:6.0f} ms  {goal_text:>9}  {verdict}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
