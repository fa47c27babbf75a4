"""TCP throughput to a private host through Bulwark's tunnel and NAT, side by side with a hand-made one.

Run as root from the repository root:

    .venv/bin/python bench/throughput.py                 # 3 interleaved runs x 5 s per tunnel (~1 min)
    .venv/bin/python bench/throughput.py --runs 5 --seconds 10

Two identical topologies, each in its own three namespaces (same addresses, nothing shared):

    client 172.31.1.2 --veth-- 172.31.1.1 server 172.31.2.1 --veth-- 172.31.2.2 vpc (private host)
    tunnel 10.20.0.2  ====== wireguard-go ======  10.20.0.1   NAT (masquerade) out of the vpc veth

The vpc host has no route back to the tunnel subnet, so every byte goes through the server's NAT.

- Bulwark: `bulwark init` + `bulwark up` in the server namespace (supervisor, wireguard-go, forwarding, its nft
  table); the client runs the config of `bulwark peer show` with `wg-quick up`.
- By hand: `wireguard-go`, `wg setconf`, `ip addr`, `ip link set up`, `sysctl ip_forward`, one nft masquerade
  rule; the client is `wg-quick up` of an equivalent config.

Both servers and both clients are wireguard-go, so the comparison measures what Bulwark adds (its firewall
table, its supervisor) and nothing else. A small Python sender (client) and receiver (vpc) measure the rate at
the receiver; runs alternate between the tunnels (A B, B A, ...) so drift in the machine's speed hits both.
Everything is removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.netns import Netns, unique_ifname, veth  # noqa: E402

from bench.live_change import RUN_DIR, WG_SOCKET_DIR, bulwark, client_config, say, wg_quick_up  # noqa: E402

SERVER_OUTER, CLIENT_OUTER = "172.31.1.1", "172.31.1.2"
SERVER_INNER, VPC_HOST = "172.31.2.1", "172.31.2.2"
TUNNEL_SUBNET, SERVER_TUNNEL, CLIENT_TUNNEL = "10.20.0.0/24", "10.20.0.1", "10.20.0.2"
PRIVATE_NET = "172.31.2.0/24"
LISTEN_PORT = 51820
DATA_PORT = 5201
CHUNK = 256 * 1024


# -- sender and receiver (this file re-executed inside a namespace) -------------------------------------


def _receiver(port: int) -> None:
    """Accept connections one after another; for each print bytes, seconds (first byte to EOF), source."""
    buffer = memoryview(bytearray(1 << 20))
    with socket.create_server(("0.0.0.0", port)) as server:  # noqa: S104 - inside the bench's namespace
        while True:
            conn, source = server.accept()
            total, start = 0, None
            with conn:
                while True:
                    count = conn.recv_into(buffer)
                    if not count:
                        break
                    if start is None:
                        start = time.perf_counter()
                    total += count
                seconds = time.perf_counter() - start if start is not None else 0.0
            print(json.dumps({"bytes": total, "seconds": seconds, "from": source[0]}), flush=True)  # noqa: T201


def _sender(host: str, port: int, seconds: float) -> None:
    """Send as fast as TCP allows for `seconds`, then wait until the receiver has read everything."""
    chunk = bytes(CHUNK)
    with socket.create_connection((host, port), timeout=30) as sock:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)


HIDDEN = {
    "_receiver": lambda args: _receiver(int(args[0])),
    "_sender": lambda args: _sender(args[0], int(args[1]), float(args[2])),
}


def _self_argv(mode: str, *args: object) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), mode, *(str(a) for a in args)]


# -- the two tunnels --------------------------------------------------------------------------------------


@dataclass
class Topology:
    """client, server and vpc namespaces for one tunnel, and the vpc's receiver."""

    label: str
    client: Netns
    server: Netns
    vpc: Netns
    egress: str  # the server's veth toward the vpc
    server_if: str = ""
    client_if: str = ""
    receiver: subprocess.Popen[bytes] | None = None
    rates: list[float] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)

    def start_receiver(self) -> None:
        self.receiver = self.vpc.popen(_self_argv("_receiver", DATA_PORT), stdout=subprocess.PIPE)

    def transfer(self, seconds: float) -> float:
        """One timed TCP transfer client -> vpc host; return Mbit/s as the receiver saw it."""
        assert self.receiver is not None and self.receiver.stdout is not None
        self.client.run(_self_argv("_sender", VPC_HOST, DATA_PORT, seconds), timeout=seconds + 60)
        ready, _, _ = select.select([self.receiver.stdout], [], [], 30)
        if not ready:
            raise RuntimeError(f"{self.label}: the receiver reported nothing")
        result = json.loads(self.receiver.stdout.readline())
        self.sources.add(result["from"])
        return result["bytes"] * 8 / result["seconds"] / 1e6

    def mtus(self) -> str:
        def mtu(ns: Netns, iface: str) -> str:
            text = ns.ip("-o", "link", "show", "dev", iface).stdout.decode().split()
            return text[text.index("mtu") + 1]
        return f"server {mtu(self.server, self.server_if)}, client {mtu(self.client, self.client_if)}"


class Bench:
    """Both topologies; `cleanup()` removes all of it."""

    def __init__(self) -> None:
        self.namespaces: list[Netns] = []
        self.ifaces: list[str] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="bulwark-bench-"))
        os.chmod(self.workdir, 0o700)
        self.config_dir = self.workdir / "config"
        self.bulwark_server: Netns | None = None

    def ifname(self, prefix: str) -> str:
        name = unique_ifname(prefix)
        self.ifaces.append(name)
        return name

    def topology(self, label: str) -> Topology:
        client, server, vpc = Netns(), Netns(), Netns()
        self.namespaces += [client, server, vpc]
        veth(server, client, f"{SERVER_OUTER}/24", f"{CLIENT_OUTER}/24")
        egress, _ = veth(server, vpc, f"{SERVER_INNER}/24", f"{VPC_HOST}/24")
        return Topology(label, client, server, vpc, egress)

    def bulwark_tunnel(self) -> Topology:
        top = self.topology("Bulwark (bulwark up)")
        top.server_if, top.client_if = self.ifname("tpbw"), self.ifname("tpbc")
        bulwark(None, "init", "--config-dir", str(self.config_dir), "--server-url", SERVER_OUTER, "--interface",
                top.server_if, "--subnet", TUNNEL_SUBNET, "--peers", "client", "--allowed-ips",
                f"{TUNNEL_SUBNET},{PRIVATE_NET}", "--egress-interface", top.egress)
        self.bulwark_server = top.server
        bulwark(top.server, "up", "--config-dir", str(self.config_dir))
        wg_quick_up(top.client, self.workdir / f"{top.client_if}.conf", client_config(self.config_dir, "client"))
        return top

    def hand_tunnel(self) -> Topology:
        top = self.topology("by hand (wireguard-go + wg setconf + nft)")
        top.server_if, top.client_if = self.ifname("tphw"), self.ifname("tphc")
        server_key, client_key, psk = genkey(), genkey(), wg_output(["wg", "genpsk"])
        server_conf = self.workdir / "hand-server.conf"
        write_private(server_conf, f"[Interface]\nPrivateKey = {server_key}\nListenPort = {LISTEN_PORT}\n\n"
                                   f"[Peer]\nPublicKey = {pubkey(client_key)}\nPresharedKey = {psk}\n"
                                   f"AllowedIPs = {CLIENT_TUNNEL}/32\n")
        env = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "WG_PROCESS_FOREGROUND")}
        # A session of its own, as Bulwark's supervisor (and any service manager) gives its wireguard-go: with
        # the scheduler's autogroups, a session is what shares the CPU, so this keeps the two tunnels equal.
        subprocess.run(top.server.exec_argv(["wireguard-go", top.server_if]), env=env, capture_output=True,
                       check=True, timeout=30, start_new_session=True)
        top.server.run(["wg", "setconf", top.server_if, str(server_conf)])
        top.server.ip("address", "add", f"{SERVER_TUNNEL}/24", "dev", top.server_if)
        top.server.ip("link", "set", top.server_if, "up")
        top.server.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        nat = (f"table ip handnat {{\n chain postrouting {{\n  type nat hook postrouting priority srcnat;\n"
               f"  ip saddr {TUNNEL_SUBNET} oifname \"{top.egress}\" masquerade\n }}\n}}\n")
        top.server.run(["nft", "-f", "-"], input=nat.encode())
        client_conf = (f"[Interface]\nPrivateKey = {client_key}\nAddress = {CLIENT_TUNNEL}/32\n\n"
                       f"[Peer]\nPublicKey = {pubkey(server_key)}\nPresharedKey = {psk}\n"
                       f"Endpoint = {SERVER_OUTER}:{LISTEN_PORT}\nAllowedIPs = {TUNNEL_SUBNET}, {PRIVATE_NET}\n")
        wg_quick_up(top.client, self.workdir / f"{top.client_if}.conf", client_conf)
        return top

    def cleanup(self) -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if self.bulwark_server is not None and self.config_dir.exists():
                try:
                    bulwark(self.bulwark_server, "down", "--config-dir", str(self.config_dir), timeout=60)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    say(f"bulwark down failed ({exc}); killing what is left")
            for ns in reversed(self.namespaces):
                ns.delete()
            for name in self.ifaces:
                (WG_SOCKET_DIR / f"{name}.sock").unlink(missing_ok=True)
                for suffix in (".json", ".log"):
                    (RUN_DIR / f"{name}{suffix}").unlink(missing_ok=True)
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)


def wg_output(argv: list[str], stdin: str | None = None) -> str:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout.strip()


def genkey() -> str:
    return wg_output(["wg", "genkey"])


def pubkey(private: str) -> str:
    return wg_output(["wg", "pubkey"], private + "\n")


def write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.write_text(text)


def run(options: argparse.Namespace, bench: Bench) -> int:
    say("setting up the Bulwark tunnel and the hand-made one ...")
    tunnels = [bench.bulwark_tunnel(), bench.hand_tunnel()]
    for top in tunnels:
        deadline = time.monotonic() + 30
        while not top.client.ping(VPC_HOST, count=1, timeout=1):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{top.label}: the client cannot reach the vpc host {VPC_HOST}")
        top.start_receiver()
        time.sleep(0.2)
        top.transfer(1.0)  # warm-up: handshake done, TCP and caches warm
    for number in range(options.runs):
        order = tunnels if number % 2 == 0 else tunnels[::-1]
        for top in order:
            rate = top.transfer(options.seconds)
            top.rates.append(rate)
            say(f"run {number + 1}: {top.label}: {rate:.0f} Mbit/s")
    print_report(options, tunnels)
    return 0


def print_report(options: argparse.Namespace, tunnels: list[Topology]) -> None:
    header = ["tunnel", *(f"run {i + 1}" for i in range(options.runs)), "median", "MTU", "vpc sees"]
    rows = [[top.label, *(f"{r:.0f}" for r in top.rates), f"{statistics.median(top.rates):.0f} Mbit/s",
             top.mtus(), ", ".join(sorted(top.sources))] for top in tunnels]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"TCP throughput client -> private host {VPC_HOST} through the tunnel and the server's NAT; "
             f"{options.runs} interleaved runs x {options.seconds:g} s each, Mbit/s at the receiver; load average "
             f"at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs", "",
             "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    ratio = statistics.median(tunnels[0].rates) / statistics.median(tunnels[1].rates)
    verdict = "met" if ratio >= 0.95 else "NOT met"
    # Each round runs both tunnels back to back, so a round's ratio is less exposed to the machine's drift.
    paired = [a / b for a, b in zip(tunnels[0].rates, tunnels[1].rates, strict=True)]
    lines += ["", f"Bulwark / by hand (medians): {ratio * 100:.1f}% (goal >= 95%: {verdict}); "
              f"per round: {', '.join(f'{r * 100:.0f}%' for r in paired)} "
              f"(median {statistics.median(paired) * 100:.1f}%)"]
    print("\n".join(lines))  # noqa: T201 - the report is the output


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in HIDDEN:
        HIDDEN[args[0]](args[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per tunnel (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per run (default 5)")
    options = parser.parse_args(args)
    if os.geteuid() != 0:
        parser.error("run as root (namespaces, wireguard-go)")
    if options.runs < 1 or options.seconds <= 0:
        parser.error("--runs must be at least 1 and --seconds positive")

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Also SIGINT: a shell starts background jobs with it ignored, and Ctrl-C/kill -INT must still clean up.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupted)
    bench = Bench()
    try:
        return run(options, bench)
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
