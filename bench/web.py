"""The web UI's peers page on 10,000 peers: server time and bytes transferred, side by side with the plain JSON API
calls, and with the unfiltered /api/v1/status the page would need without `?name=`.

    .venv/bin/python bench/web.py [--peers 10000] [--runs 15] [--no-browser]

A real `bulwark serve` process on 127.0.0.1 serves a store of N peers (the gateway is not up, so /status reads no
device: see bench/README.md). Times are measured by a keep-alive HTTP client on the loopback, request by request,
so they are the server's time plus a fraction of a millisecond; each row sums the requests a page makes, median
(and p95) over the runs. Bytes are what goes over the wire: status line, headers and body, gzipped where the
browser asks for it (the static files). With Chromium installed, the first visit is also loaded in a real browser
and its bytes read from the Resource Timing API.

Goals (issue "Web UI"): the peers page's first page under 300 ms server time, a search under 100 ms, under 300 KB
transferred for a first visit, all assets included.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PASSWORD = "correct horse battery staple 7"  # noqa: S105 - the bench's own throwaway admin
PAGE = 50


def _make_store(config: Path, count: int) -> None:
    from bench.cli_speed import _make_store as make
    from bulwark_vpn import service
    from bulwark_vpn.service import accounts

    make(config, count)
    ctx = service.Context(config)
    accounts.add_user(ctx, accounts.AddUserRequest.parse("boss", role="admin", password=PASSWORD))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Client:
    """A signed-in keep-alive client that times each request and counts its bytes."""

    def __init__(self, base: str) -> None:
        # No automatic decompression: the bytes counted are the bytes sent.
        self.http = httpx.Client(base_url=base, headers={"Accept-Encoding": "gzip"}, timeout=30)
        answer = self.http.post("/api/v1/session", json={"user": "boss", "password": PASSWORD})
        answer.raise_for_status()

    def get(self, path: str, params: object = None) -> tuple[float, int, bytes]:
        """Seconds to the last byte, bytes on the wire (status line, headers, body as sent), the body as sent."""
        start = time.perf_counter()
        with self.http.stream("GET", path, params=params) as response:  # type: ignore[arg-type]
            raw = b"".join(response.iter_raw())
            elapsed = time.perf_counter() - start
        response.raise_for_status()
        head = len(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n")
        head += sum(len(k) + len(v) + 4 for k, v in response.headers.raw) + 2
        return elapsed, head + len(raw), raw


def _runs(action: Callable[[], tuple[float, int]], runs: int) -> tuple[float, float, int]:
    action()  # warm: the first request of a kind loads its modules
    samples = []
    size = 0
    for _ in range(runs):
        seconds, size = action()
        samples.append(seconds)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples), p95, size


def _assets() -> list[str]:
    from bulwark_vpn.web import pages

    return [p for p in pages.assets() if p != "/static/index.html"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-browser", action="store_true", help="skip the first visit in Chromium")
    args = parser.parse_args()
    print(f"load average: {os.getloadavg()[0]:.2f}; {args.runs} runs each; server time: median (p95)")
    with tempfile.TemporaryDirectory(prefix="bulwark-bench-") as tmp:
        config = Path(tmp) / "c"
        started = time.perf_counter()
        _make_store(config, args.peers)
        print(f"store with {args.peers:,} peers made in {time.perf_counter() - started:.1f} s")
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
        env["BULWARK_RUN_DIR"] = str(Path(tmp) / "run")
        server = subprocess.Popen([sys.executable, "-m", "bulwark_vpn", "serve", "--config-dir", str(config),
                                   "--listen", f"127.0.0.1:{port}"], env=env, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(base)
            rows = _measure(Client(base), args.runs)
            browser_bytes = None if args.no_browser else _browser_first_visit(base)
        finally:
            server.terminate()
            server.wait(10)
    return _report(rows, browser_bytes, args.peers)


def _wait(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("bulwark serve did not answer")


def _measure(client: Client, runs: int) -> list[tuple[str, float, float, int, float | None, int | None]]:
    """Rows: (name, median s, p95 s, bytes, goal s, goal bytes)."""

    def page_data(search: str | None) -> tuple[float, int]:
        seconds, size, body = client.get("/api/v1/peers", {"limit": PAGE, "search": search} if search else
                                         {"limit": PAGE})
        names = [p["name"] for p in json.loads(body)["peers"]]
        more, more_size, _ = client.get("/api/v1/status", {"name": names})
        return seconds + more, size + more_size

    def first_visit() -> tuple[float, int]:
        total, size, _ = client.get("/peers")
        for path in [*_assets(), "/api/v1/session"]:
            seconds, n, _ = client.get(path)
            total += seconds
            size += n
        seconds, n = page_data(None)
        return total + seconds, size + n

    def one(path: str, params: object = None) -> Callable[[], tuple[float, int]]:
        def run() -> tuple[float, int]:
            seconds, size, _ = client.get(path, params)
            return seconds, size
        return run

    rows = []
    search = {"search": "peer99", "limit": PAGE}
    last = {"sort": "name", "descending": "true", "offset": 9950, "limit": PAGE}
    for name, action, goal_s, goal_b in [
        ("peers page: first visit (shell, CSS, JS, session, page 1, its live state)", first_visit, 0.300,
         300_000),
        ("peers page: page 1 (list of 50 + status of those 50)", lambda: page_data(None), 0.300, None),
        ("peers page: search 'peer99' (list + status of the matches)", lambda: page_data("peer99"), 0.100, None),
        ("baseline: GET /api/v1/peers?limit=50 (the JSON API alone)", one("/api/v1/peers", {"limit": PAGE}), None,
         None),
        ("baseline: GET /api/v1/peers?search=peer99&limit=50", one("/api/v1/peers", search), None, None),
        ("baseline: last page by name, descending", one("/api/v1/peers", last), None, None),
        ("alternative: GET /api/v1/status unfiltered (every peer's live state)", one("/api/v1/status"), None, None),
    ]:
        median, p95, size = _runs(action, runs if "unfiltered" not in name else max(3, runs // 3))
        rows.append((name, median, p95, size, goal_s, goal_b))
    return rows


def _browser_first_visit(base: str) -> int | None:
    """Bytes a real Chromium transfers for a first visit of the peers page (Resource Timing's transferSize)."""
    if not Path("/usr/bin/chromium").exists():
        return None
    try:
        from tests.browser import chromium
    except ImportError:
        return None
    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{base}/sign-in")
        page.get_by_label("User name").fill("boss")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.locator("#nav").wait_for(state="visible")
        fresh = browser.new_context(storage_state=context.storage_state())  # same cookie, empty cache
        page = fresh.new_page()
        page.goto(f"{base}/peers")
        page.locator("table.peers tbody tr").nth(PAGE - 1).wait_for()
        page.wait_for_load_state("networkidle")
        total = page.evaluate("() => performance.getEntriesByType('navigation')[0].transferSize + performance"
                              ".getEntriesByType('resource').reduce((sum, e) => sum + e.transferSize, 0)")
        return int(total)


def _report(rows, browser_bytes: int | None, peers: int) -> int:
    width = max(len(r[0]) for r in rows)
    print(f"\n{peers:,} peers; gateway down (no device read)\n")
    print(f"{'what':<{width}}  {'server time':>18}  {'bytes':>10}  {'goal':>16}  verdict")
    met = True
    for name, median, p95, size, goal_s, goal_b in rows:
        verdicts = []
        goals = []
        if goal_s is not None:
            goals.append(f"{goal_s * 1000:.0f} ms")
            verdicts.append(median <= goal_s)
        if goal_b is not None:
            goals.append(f"{goal_b // 1000} KB")
            verdicts.append(size <= goal_b)
        verdict = "" if not verdicts else ("MET" if all(verdicts) else "MISS")
        met &= verdict != "MISS"
        timing = f"{median * 1000:6.1f} ({p95 * 1000:6.1f}) ms"
        print(f"{name:<{width}}  {timing:>18}  {size / 1000:7.1f} KB  {' + '.join(goals):>16}  {verdict}")
    if browser_bytes is not None:
        verdict = "MET" if browser_bytes <= 300_000 else "MISS"
        met &= verdict == "MET"
        label = "Chromium: first visit of /peers, bytes transferred (Resource Timing)"
        print(f"{label:<{width}}  {'':>18}  {browser_bytes / 1000:7.1f} KB  {'300 KB':>16}  {verdict}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
