"""`bulwark up` for real: wireguard-go in namespaces, real wg-quick clients, NAT into a private network."""

import ipaddress
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bulwark_vpn.dataplane.apply import apply_device
from bulwark_vpn.dataplane.gateway import DRIFT_INTERVAL, desired_device, pid_alive
from bulwark_vpn.store import open_store
from tests.gwlab import RUN_DIR, VPC_DNS, VPC_GATEWAY, VPC_HOST, Lab
from tests.helpers import BULWARK, add_peers, bulwark, clean_env


def _transfer(ns, iface) -> tuple[int, int]:
    out = ns.run(["wg", "show", iface, "transfer"]).stdout.decode().split()
    return int(out[1]), int(out[2])


def test_seed_flow_client_pings_server_and_wg_shows_transfer(lab: Lab):
    lab.init("--peers", "leo_mac")
    up = lab.up()
    assert f"[#] wireguard-go {lab.iface}" in up.stderr or f"ip link add {lab.iface}" in up.stderr
    secrets = [p.read_text().strip() for p in lab.config.rglob("p*key-*") if "public" not in p.name]
    assert secrets and not any(secret in up.stderr for secret in secrets)  # keys went through stdin
    client, iface = lab.connect("leo_mac")  # the generated config as is: AllowedIPs 0.0.0.0/0, ::/0
    assert client.ping("10.13.13.1", count=3)
    received, sent = _transfer(client, iface)
    assert received > 0 and sent > 0
    lab.factory.wg_quick_down(iface)
    assert not client.ping("10.13.13.1", count=1, timeout=1)


def test_private_network_via_nat_and_clean_down(lab: Lab):
    lab.init("--peers", "alice")
    lab.up()
    # A TCP service on the VPC host that answers with the source address it sees.
    lab.vpc.python(
        "import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('{VPC_HOST}', 8080)); s.listen()\n"
        "while True:\n"
        "    c, a = s.accept(); c.sendall(a[0].encode()); c.close()\n"
    )
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24, 10.0.1.0/24")
    assert client.ping(VPC_HOST, count=2)
    code = f"import socket; s=socket.create_connection(('{VPC_HOST}', 8080), 3); print(s.recv(64).decode())"
    fetch = ["python3", "-c", code]
    lab.wait_for(lambda: client.run(fetch, check=False).returncode == 0, 5)
    seen = client.run(fetch).stdout.decode().strip()
    assert seen == VPC_GATEWAY  # masqueraded: the VPC host needs no route back to the tunnel subnet

    pid = json.loads((RUN_DIR / f"{lab.iface}.json").read_text())["pid"]
    lab.bulwark("down")
    assert not client.ping(VPC_HOST, count=1, timeout=1)
    ruleset = lab.server.run(["nft", "list", "tables"]).stdout.decode()
    assert "bulwark" not in ruleset
    assert lab.server.run(["ip", "link", "show", lab.iface], check=False).returncode != 0
    assert not (RUN_DIR / f"{lab.iface}.json").exists()
    assert not os.path.exists(f"/var/run/wireguard/{lab.iface}.sock")
    assert subprocess.run(["pgrep", "-f", f"wireguard-go {lab.iface}$"], capture_output=True).returncode == 1
    assert not pid_alive(pid)  # (this sandbox's init does not reap zombies: pid_alive treats them as gone)
    assert lab.server.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.decode().strip() == "0"


def test_metadata_range_is_blocked_for_peers(lab: Lab):
    lab.init("--peers", "alice")
    lab.vpc.ip("address", "add", "169.254.169.254/32", "dev", "lo")
    lab.server.ip("route", "add", "169.254.169.254/32", "via", VPC_HOST)
    lab.up()
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24, 10.0.1.0/24, 169.254.169.254/32")
    assert client.ping(VPC_HOST, count=1)
    assert not client.ping("169.254.169.254", count=2, timeout=1)
    assert lab.server.ping("169.254.169.254", count=1)  # the server itself still reaches it


def test_peer_changes_from_another_process_apply_within_a_second(lab: Lab):
    lab.init("--peers", "alice")
    lab.up()
    # Run from the root namespace: only the supervisor (in the server namespace) can apply it.
    from tests.helpers import bulwark

    bulwark("peer", "add", "bob", "--config-dir", str(lab.config))
    bob = json.loads(lab.bulwark("peer", "list", "--json").stdout)["peers"][1]["public_key"]
    elapsed = lab.wait_for(lambda: bob in lab.device_peers(), 1.0)
    assert elapsed < 1.0
    bulwark("peer", "disable", "bob", "--config-dir", str(lab.config))
    lab.wait_for(lambda: bob not in lab.device_peers(), 1.0)
    # Inside the namespace the command applies it itself, at once.
    lab.bulwark("peer", "enable", "bob")
    assert bob in lab.device_peers()
    lab.bulwark("peer", "remove", "bob")
    assert bob not in lab.device_peers()


def test_drift_is_repaired_and_killed_wireguard_go_recovers_within_5s(lab: Lab):
    lab.init("--peers", "alice,bob")
    lab.up()
    client, iface = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
    bob = json.loads(lab.bulwark("peer", "list", "--json").stdout)["peers"][1]["public_key"]
    lab.server.run(["wg", "set", lab.iface, "peer", bob, "remove"])
    lab.wait_for(lambda: bob in lab.device_peers(), 5.0)

    pids = subprocess.run(["pgrep", "-f", f"wireguard-go {lab.iface}$"], capture_output=True, text=True).stdout.split()
    assert len(pids) == 1
    os.kill(int(pids[0]), signal.SIGKILL)
    start = time.monotonic()
    lab.wait_for(lambda: client.ping("10.13.13.1", count=1, timeout=1), 5.0, interval=0.01)
    recovered = time.monotonic() - start
    assert recovered <= 5.0
    assert bob in lab.device_peers()


def test_dns_forwarder_resolves_through_the_tunnel(lab: Lab):
    # The server's resolver (as the host's /etc/resolv.conf) is a DNS server in the VPC that knows db.vpc.internal.
    lab.vpc.python(VPC_DNS)
    lab.server.set_resolv_conf(f"nameserver {VPC_HOST}\n")
    lab.init("--peers", "alice")
    lab.up()
    client, _ = lab.connect("alice")  # full tunnel: 0.0.0.0/0, so DNS must come through the tunnel
    dig = ["dig", "+short", "+time=2", "+tries=2", "@10.13.13.1", "db.vpc.internal"]
    lab.wait_for(lambda: client.run(dig, check=False).stdout.decode().strip() == "10.0.1.20", 10)
    tcp = client.run([*dig, "+tcp"]).stdout.decode().strip()
    assert tcp == "10.0.1.20"


def test_ipv6_dual_stack(lab: Lab):
    lab.init("--peers", "alice", "--subnet6", "fd13:13:13::/64")
    lab.up()
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24, fd13:13:13::/64")
    assert client.run(["ping", "-6", "-c", "2", "-W", "2", "fd13:13:13::1"], check=False).returncode == 0
    assert client.ping("10.13.13.1")


def test_status_reports_peers_without_secrets(lab: Lab):
    lab.init("--peers", "alice,bob")
    lab.up()
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
    report = lab.status()
    assert report["up"] and report["interface"] == lab.iface and report["backend"] == "userspace"
    assert report["listen_port"] == 51820
    peers = {p["name"]: p for p in report["peers"]}
    assert peers["alice"]["online"] and peers["alice"]["rx_bytes"] > 0 and peers["alice"]["endpoint"]
    assert not peers["bob"]["online"] and peers["bob"]["latest_handshake"] == 0
    text = lab.bulwark("status").stdout
    secrets = [p.read_text().strip() for p in lab.config.rglob("privatekey-*")]
    secrets += [p.read_text().strip() for p in lab.config.rglob("presharedkey-*")]
    assert "alice (online)" in text
    assert not any(s in text or s in json.dumps(report) for s in secrets)
    lab.bulwark("down")
    down = lab.bulwark("status", check=False)
    assert down.returncode == 1 and "(down)" in down.stdout


def test_failed_bring_up_rolls_back_everything(lab: Lab):
    lab.init("--peers", "alice")
    # Something else holds the UDP port: `wg set listen-port` fails after the link was created.
    holder = lab.server.python(
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); s.bind(('::', 51820))\n"
        "time.sleep(3600)\n"
    )
    time.sleep(0.3)
    result = lab.bulwark("up", check=False)
    holder.kill()
    assert result.returncode == 1
    # The supervisor's own error, in one line: what failed and why.
    assert "Address already in use: the port is taken" in result.stderr and "\n" not in result.stderr.strip()
    assert lab.server.run(["ip", "link", "show", lab.iface], check=False).returncode != 0
    assert "bulwark" not in lab.server.run(["nft", "list", "tables"]).stdout.decode()
    assert not os.path.exists(f"/var/run/wireguard/{lab.iface}.sock")
    assert not (RUN_DIR / f"{lab.iface}.json").exists()


def test_apply_dry_run_shows_the_diff_and_changes_nothing(lab: Lab):
    lab.init("--peers", "alice,bob")
    lab.up()
    bob = json.loads(lab.bulwark("peer", "list", "--json").stdout)["peers"][1]["public_key"]
    assert lab.bulwark("apply", "--dry-run").stdout == ""  # nothing differs: a no-op
    lab.server.run(["kill", "-STOP", str(json.loads((RUN_DIR / f"{lab.iface}.json").read_text())["pid"])])
    try:
        lab.server.run(["wg", "set", lab.iface, "peer", bob, "remove"])
        shown = lab.bulwark("apply", "--dry-run").stdout
        assert f"add peer {bob}" in shown and "PrivateKey" not in shown
        assert bob not in lab.device_peers()
        lab.bulwark("apply")
        assert bob in lab.device_peers()
    finally:
        lab.server.run(["kill", "-CONT", str(json.loads((RUN_DIR / f"{lab.iface}.json").read_text())["pid"])])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_foreground_supervisor_cleans_up_on_signal(lab: Lab, signum):
    lab.init("--peers", "alice")
    proc = lab.server.popen([*BULWARK, "up", "--foreground",
                             "--config-dir", str(lab.config)], env=clean_env())
    lab.wait_for(lambda: lab.server.run(["ip", "link", "show", lab.iface], check=False).returncode == 0
                 and (RUN_DIR / f"{lab.iface}.json").exists(), 10)
    proc.send_signal(signum)
    assert proc.wait(10) == 0
    assert lab.server.run(["ip", "link", "show", lab.iface], check=False).returncode != 0
    assert "bulwark" not in lab.server.run(["nft", "list", "tables"]).stdout.decode()
    assert not (RUN_DIR / f"{lab.iface}.json").exists()


CHURN = """
import sys, time
from bulwark_vpn import service
from tests.helpers import context
ctx = context(sys.argv[1])
start = time.monotonic()
ops = 0
cycle = 0
while ops < 500:
    names = service.PeerNamesRequest.parse([f"c{cycle % 7}"])
    service.add_peers(ctx, service.AddPeersRequest.parse(names.names)); ops += 1
    service.set_peers_enabled(ctx, names, False); ops += 1
    service.set_peers_enabled(ctx, names, True); ops += 1
    service.remove_peers(ctx, names); ops += 1
    cycle += 1
print(ops, time.monotonic() - start)
"""


def test_live_churn_loses_no_packet_and_keeps_the_session(lab: Lab):
    lab.init("--peers", "alice,bob,carol")
    lab.up()
    client, iface = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
    handshake_before = client.run(["wg", "show", iface, "latest-handshakes"]).stdout.decode().split()[1]
    ping = client.popen(["ping", "-n", "-q", "-i", "0.01", "-c", "2000", "10.13.13.1"], stdout=subprocess.PIPE)
    time.sleep(0.5)
    churn = lab.server.run([sys.executable, "-c", CHURN, str(lab.config)], timeout=240)
    ops, seconds = churn.stdout.decode().split()
    assert ping.poll() is None, "the churn must happen while the client pings"
    out = ping.communicate(timeout=120)[0].decode()
    summary = next(line for line in out.splitlines() if "packets transmitted" in line)
    sent, received = int(summary.split()[0]), int(summary.split()[3])
    assert int(ops) == 500
    assert sent == 2000 and received == sent, summary
    handshake_after = client.run(["wg", "show", iface, "latest-handshakes"]).stdout.decode().split()[1]
    assert handshake_after == handshake_before  # never re-handshaken because of the changes
    print(f"churn: {ops} ops in {float(seconds):.1f} s; ping: {summary}")


def test_connected_peer_removed_by_hand_comes_back_with_its_session(lab: Lab):
    lab.init("--peers", "alice")
    lab.up()
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
    time.sleep(2.5)  # one drift pass has seen where alice is
    alice = json.loads(lab.bulwark("peer", "list", "--json").stdout)["peers"][0]["public_key"]
    lab.server.run(["wg", "set", lab.iface, "peer", alice, "remove"])
    start = time.monotonic()
    lab.wait_for(lambda: client.ping("10.13.13.1", count=1, timeout=1), 5.0, interval=0.01)
    assert time.monotonic() - start <= 5.0  # not the ~15 s a client needs to re-handshake on its own


def test_down_after_a_supervisor_crash_cleans_up_and_relative_paths_apply_live(lab: Lab, tmp_path):
    lab.init("--peers", "alice")
    lab.up()
    # The same config dir spelled relatively still reaches the running gateway at once.
    relative = os.path.relpath(lab.config, tmp_path)
    pid = json.loads((RUN_DIR / f"{lab.iface}.json").read_text())["pid"]
    lab.server.run(["kill", "-STOP", str(pid)])  # the supervisor cannot do it: the command must
    try:
        added = subprocess.run(["ip", "netns", "exec", lab.server.name, *BULWARK,
                                "peer", "add", "bob", "--config-dir", relative], cwd=tmp_path, capture_output=True,
                               text=True, check=True, env=clean_env())
        assert "[#] wg set" in added.stderr
        assert len(lab.device_peers()) == 2
    finally:
        lab.server.run(["kill", "-KILL", str(pid)])  # the supervisor dies without tearing down
    lab.wait_for(lambda: not pid_alive(pid), 5)
    lab.bulwark("down")
    assert lab.server.run(["ip", "link", "show", lab.iface], check=False).returncode != 0
    assert "bulwark" not in lab.server.run(["nft", "list", "tables"]).stdout.decode()
    assert not (RUN_DIR / f"{lab.iface}.json").exists() and not (RUN_DIR / f"{lab.iface}.log").exists()
    assert lab.server.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.decode().strip() == "0"


def _supervisor_pid(lab: Lab) -> int:
    return json.loads((RUN_DIR / f"{lab.iface}.json").read_text())["pid"]


def _public_keys(lab: Lab) -> dict[str, str]:
    return {p["name"]: p["public_key"] for p in json.loads(lab.bulwark("peer", "list", "--json").stdout)["peers"]}


def _routes(lab: Lab) -> set[str]:
    out = lab.server.run(["ip", "-j", "route", "show", "dev", lab.iface], check=False).stdout.decode() or "[]"
    return {route["dst"] for route in json.loads(out)}


def _gateway_gone(lab: Lab) -> None:
    assert lab.server.run(["ip", "link", "show", lab.iface], check=False).returncode != 0
    assert "bulwark" not in lab.server.run(["nft", "list", "tables"]).stdout.decode()
    assert not (RUN_DIR / f"{lab.iface}.json").exists() and not (RUN_DIR / f"{lab.iface}.log").exists()
    assert lab.server.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.decode().strip() == "0"


def test_two_peers_claiming_one_network_leave_the_later_out_and_the_supervisor_serving(lab: Lab):
    lab.init("--peers", "alice")
    lab.up()
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
    pid = _supervisor_pid(lab)
    site = (ipaddress.ip_network("192.168.77.0/24"),)
    # From the root namespace, as a library: only the supervisor applies these.
    add_peers(lab.config, ["bob"], server_allowed_ips=site)
    add_peers(lab.config, ["carol"])
    keys = _public_keys(lab)
    lab.wait_for(lambda: {keys["bob"], keys["carol"]} <= lab.device_peers(), 2)
    # The service refuses this now; a store written before that (or by hand) can still hold it.
    with open_store(lab.config) as store:
        store.update_peer(replace(store.peer("carol"), server_allowed_ips=site))
    lab.wait_for(lambda: keys["carol"] not in lab.device_peers(), 2)
    time.sleep(DRIFT_INTERVAL + 0.5)  # a full drift pass with the conflict in the store
    assert pid_alive(pid) and keys["bob"] in lab.device_peers()
    assert client.ping("10.13.13.1")
    allowed = dict(line.split("\t", 1) for line in
                   lab.server.run(["wg", "show", lab.iface, "allowed-ips"]).stdout.decode().splitlines())
    assert "192.168.77.0/24" in allowed[keys["bob"]]
    assert "192.168.77.0/24" in _routes(lab)
    log = (RUN_DIR / f"{lab.iface}.log").read_text()
    assert log.count("peer 'carol' is left off the device: '192.168.77.0/24' already belongs to peer 'bob'") == 1
    # Still serving the store: a new peer lands, and carol comes back once the conflict is gone.
    add_peers(lab.config, ["dave"])
    lab.wait_for(lambda: _public_keys(lab)["dave"] in lab.device_peers(), 2)
    with open_store(lab.config) as store:
        store.update_peer(replace(store.peer("carol"), server_allowed_ips=()))
    lab.wait_for(lambda: keys["carol"] in lab.device_peers(), 2)
    assert pid_alive(pid)


def test_a_store_row_the_supervisor_cannot_read_leaves_the_tunnels_up(lab: Lab):
    lab.init("--peers", "alice")
    lab.up()
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
    pid = _supervisor_pid(lab)
    alice = _public_keys(lab)["alice"]

    def set_key(key: str) -> None:  # by hand, as a damaged or hand-edited store would hold it
        with sqlite3.connect(lab.config / "bulwark.db", isolation_level=None) as db:
            db.execute("UPDATE peers SET public_key=? WHERE name='alice'", (key,))
            db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='revision'")

    set_key("damaged")
    time.sleep(DRIFT_INTERVAL + 0.5)  # many polls and a drift pass see the unreadable row
    assert pid_alive(pid) and alice in lab.device_peers()
    assert client.ping("10.13.13.1")  # the last good state is still served
    log = (RUN_DIR / f"{lab.iface}.log").read_text()
    assert log.count("holds a damaged peer 'alice' (invalid public key: 'damaged'") == 1  # said once, not each poll
    set_key(alice)
    add_peers(lab.config, ["bob"])
    lab.wait_for(lambda: _public_keys(lab)["bob"] in lab.device_peers(), 2)  # serving the store again


@pytest.mark.parametrize("recorded_start", [True, False], ids=["pid-start-recorded", "older-state-file"])
def test_down_never_signals_a_process_that_reused_the_supervisor_pid(lab: Lab, recorded_start: bool):
    lab.init("--peers", "alice")
    lab.up()
    pid = _supervisor_pid(lab)
    lab.server.run(["kill", "-KILL", str(pid)])  # a crash: the gateway is left behind...
    lab.wait_for(lambda: not pid_alive(pid), 5)
    sleeper = lab.server.popen(["sleep", "600"])  # ...and its pid now belongs to another process
    lab.wait_for(lambda: Path(f"/proc/{sleeper.pid}/cmdline").read_bytes().startswith(b"sleep\0"), 5)
    state_file = RUN_DIR / f"{lab.iface}.json"
    state = json.loads(state_file.read_text())
    state["pid"] = sleeper.pid
    if not recorded_start:
        state.pop("pid_start", None)  # as written before the start time was recorded: the command line decides
    state_file.write_text(json.dumps(state))
    down = bulwark("down", "--interface", lab.iface, netns=lab.server.name)
    assert "the gateway is down" in down.stderr
    time.sleep(0.2)
    assert sleeper.poll() is None and pid_alive(sleeper.pid)
    _gateway_gone(lab)
    assert not recorded_start or state.get("pid_start")  # the recorded start time is what told them apart


def test_down_finishes_a_teardown_the_supervisor_left_incomplete(lab: Lab, tmp_path):
    lab.init("--peers", "alice")
    # The supervisor's nft cannot delete tables: its teardown stops at the firewall, leaving the table,
    # the state file and forwarding behind. (A failing system command, the only fake: at the edge.)
    tools = tmp_path / "bin"
    tools.mkdir()
    nft = tools / "nft"
    nft.write_text(f"""#!/bin/sh
if [ "$1" = delete ]; then echo "Error: simulated failure" >&2; exit 1; fi
exec {shutil.which("nft")} "$@"
""")
    nft.chmod(0o755)
    env = clean_env(PATH=f"{tools}:{os.environ['PATH']}")
    supervisor = lab.server.popen([*BULWARK, "up", "--foreground", "--config-dir", str(lab.config)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lab.wait_for(lambda: (RUN_DIR / f"{lab.iface}.json").exists() and json.loads(
        (RUN_DIR / f"{lab.iface}.json").read_text()).get("ready"), 10)
    down = lab.bulwark("down")
    assert supervisor.wait(10) != 0
    assert "simulated failure" in supervisor.stderr.read().decode()  # the supervisor did fail partway
    _gateway_gone(lab)
    assert "the gateway is down" in down.stderr and "left parts of the gateway behind" in down.stderr


def test_routes_of_disabled_and_removed_peers_are_deleted(lab: Lab):
    lab.init("--peers", "alice")
    lab.up()
    lab.bulwark("peer", "add", "site", "--server-allowed-ips", "192.168.77.0/24")
    assert "192.168.77.0/24" in _routes(lab)
    # In the server namespace the command applies the change itself, at once.
    lab.bulwark("peer", "disable", "site")
    assert "192.168.77.0/24" not in _routes(lab)
    lab.bulwark("peer", "enable", "site")
    assert "192.168.77.0/24" in _routes(lab)
    lab.bulwark("peer", "remove", "site")
    assert "192.168.77.0/24" not in _routes(lab)
    # From another namespace only the supervisor can: its sync deletes the routes nobody wants.
    bulwark("peer", "add", "branch", "--server-allowed-ips", "192.168.78.0/24", "--config-dir", str(lab.config))
    lab.wait_for(lambda: "192.168.78.0/24" in _routes(lab), 2)
    bulwark("peer", "disable", "branch", "--config-dir", str(lab.config))
    lab.wait_for(lambda: "192.168.78.0/24" not in _routes(lab), 2)
    bulwark("peer", "enable", "branch", "--config-dir", str(lab.config))
    lab.wait_for(lambda: "192.168.78.0/24" in _routes(lab), 2)
    bulwark("peer", "remove", "branch", "--config-dir", str(lab.config))
    lab.wait_for(lambda: "192.168.78.0/24" not in _routes(lab), 2)
    # A route Bulwark did not add is left alone, and the tunnel subnet keeps its route.
    lab.server.run(["ip", "route", "add", "192.168.99.0/24", "dev", lab.iface])
    time.sleep(DRIFT_INTERVAL + 0.5)
    assert {"192.168.99.0/24", "10.13.13.0/24"} <= _routes(lab)


def test_apply_to_a_device_equal_to_the_store_runs_nothing(lab: Lab):
    lab.init("--peers", "alice,bob")
    lab.up()
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")  # a learned endpoint, counters: still equal
    assert client.ping("10.13.13.1")
    with open_store(lab.config) as store:
        desired = desired_device(store.settings(), store.require_server_key(), store.peers())
    lines: list[str] = []
    assert apply_device(lab.server.runner(log=lines.append), lab.iface, desired) == []
    assert lines == []  # no `wg set`, nothing at all
    # Nor does the supervisor's own drift pass change anything (device, routes): its log does not grow.
    log = RUN_DIR / f"{lab.iface}.log"
    before = log.read_text()
    time.sleep(DRIFT_INTERVAL + 0.5)
    assert log.read_text() == before
