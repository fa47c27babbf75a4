"""`bulwark doctor` on the server, for real: each test breaks a gateway in its namespaces the way it breaks in
life, checks that the doctor names that exact cause (check name and status), and, where `--fix` applies,
that `doctor --fix --yes` (or the fix command the doctor printed) makes the tunnel carry traffic again."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time

from bulwark_vpn.dataplane.apply import apply_device
from bulwark_vpn.dataplane.wg import PeerSpec
from bulwark_vpn.doctor import SERVER_CHECKS
from bulwark_vpn.keys import PrivateKey
from tests.gwlab import VPC_HOST, Lab
from tests.helpers import BULWARK, bulwark, clean_env
from tests.netns import start_wg_server, wg_quick_conf
from tests.test_doctor_support import (
    doctor,
    egress_veth,
    run_fix,
    start,
    start_vpc_dns,
    supervisor_stopped,
)

TUNNEL_AND_VPC = "10.13.13.0/24, 10.0.1.0/24"


def test_healthy_gateway_every_check_ok(lab: Lab):
    start_vpc_dns(lab)
    lab.init("--peers", "alice")
    lab.up()
    client, _ = lab.connect("alice", allowed_ips=TUNNEL_AND_VPC)
    assert client.ping(VPC_HOST)

    report = doctor(lab)
    assert report.rc == 0, report.not_ok()
    assert list(report.checks) == [name for name, _ in SERVER_CHECKS]
    assert report.not_ok() == {}
    assert all(set(c) == {"name", "status", "evidence", "fix", "fixable"} for c in report.checks.values())
    assert "answers on 10.13.13.1:53" in report["dns"]["evidence"]

    text = lab.bulwark("doctor")
    assert text.stdout.splitlines()[-1] == f"summary: {len(SERVER_CHECKS)} ok"
    assert all(line.startswith("ok ") for line in text.stdout.splitlines()[:-1])
    secrets = [p.read_text().strip() for p in lab.config.rglob("p*key-*") if "public" not in p.name]
    assert not any(s in text.stdout + str(report.checks) for s in secrets)


def test_forwarding_off_is_fixed_and_the_vpc_is_reachable_again(lab: Lab):
    start(lab)
    client, _ = lab.connect("alice", allowed_ips=TUNNEL_AND_VPC)
    assert client.ping(VPC_HOST)
    lab.server.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    assert client.ping("10.13.13.1") and not client.ping(VPC_HOST, timeout=1)

    report = doctor(lab)
    assert report.rc == 1
    assert report.not_ok() == {"forwarding": "fail"}
    assert report["forwarding"]["fixable"] and report["forwarding"]["fix"] == "sysctl -w net.ipv4.ip_forward=1"

    # Never without being asked: no terminal and no --yes changes nothing.
    declined = lab.bulwark("doctor", "--fix", check=False)
    assert declined.returncode == 1 and "nothing changed" in declined.stderr
    assert lab.server.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == b"0"

    fixed = lab.bulwark("doctor", "--fix", "--yes", check=False)
    assert fixed.returncode == 0, fixed.stdout
    assert "fix forwarding: done" in fixed.stderr and "sysctl -q -w net.ipv4.ip_forward=1" in fixed.stderr
    assert client.ping(VPC_HOST)


def test_deleted_firewall_table_is_reinstalled_and_nat_works(lab: Lab):
    start(lab)
    client, _ = lab.connect("alice", allowed_ips=TUNNEL_AND_VPC)
    assert client.ping(VPC_HOST)
    table = f"bulwark_{lab.iface.replace('-', '_x2d')}"
    with supervisor_stopped(lab) as pid:  # it would reinstall the table within 2 s
        lab.server.run(["nft", "delete", "table", "inet", table])
        assert not client.ping(VPC_HOST, timeout=1)  # no masquerade: the VPC host has no route back

        report = doctor(lab)
        assert report.rc == 1
        assert report.status("firewall") == "fail" and f"table inet {table} is missing" in report["firewall"][
            "evidence"]
        assert report.status("supervisor") == "fail" and report["supervisor"]["fix"] == f"kill -CONT {pid}"

        fixed = doctor(lab, "--fix", "--yes")
        assert fixed.status("firewall") == "ok"
        assert client.ping(VPC_HOST)
    assert doctor(lab).rc == 0


def test_udp_port_dropped_by_another_table_is_named_with_its_rule(lab: Lab):
    start(lab)
    lab.server.run(["nft", "add", "table", "inet", "blocker"])
    lab.server.run(["nft", "add", "chain", "inet", "blocker", "input",
                    "{ type filter hook input priority 0; policy accept; }"])
    lab.server.run(["nft", "add", "rule", "inet", "blocker", "input", "udp", "dport", "51820", "counter", "drop"])

    report = doctor(lab)
    assert report.rc == 1
    check = report["port_filter"]
    assert check["status"] == "fail"
    assert "table inet blocker chain input: udp dport 51820 counter drop (handle" in check["evidence"]
    assert check["fix"].startswith("nft delete rule inet blocker input handle ")

    run_fix(lab.server, check["fix"])
    assert doctor(lab).status("port_filter") == "ok"
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")


def test_killed_wireguard_go_with_stopped_supervisor_is_interface_down(lab: Lab):
    start(lab)
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
    time.sleep(2.2)  # one drift pass of the supervisor: it then knows where alice is, to reconnect her at once
    with supervisor_stopped(lab) as pid:
        lab.server.run(["pkill", "-KILL", "-f", f"wireguard-go {lab.iface}$"])
        lab.wait_for(lambda: lab.server.run(["ip", "link", "show", lab.iface], check=False).returncode != 0, 5)

        report = doctor(lab)
        assert report.rc == 1
        assert report.status("interface") == "fail"
        assert f"interface '{lab.iface}' does not exist" in report["interface"]["evidence"]
        assert report["interface"]["fix"].startswith(f"kill -CONT {pid}")
        assert report.status("supervisor") == "fail" and "stopped" in report["supervisor"]["evidence"]
        assert report.status("drift") == "skip" and report.status("handshakes") == "skip"
    # The fix the doctor gave: the supervisor, running again, restarts wireguard-go.
    lab.wait_for(lambda: client.ping("10.13.13.1", timeout=1), 20)
    assert doctor(lab).status("interface") == "ok"


def test_peer_removed_by_hand_is_drift_and_fix_puts_it_back(lab: Lab):
    start(lab, "bob")
    client, iface = lab.connect("bob", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
    bob = lab.bulwark("peer", "list", "--json").stdout.split('"public_key": "')[1].split('"')[0]
    with supervisor_stopped(lab):
        lab.server.run(["wg", "set", lab.iface, "peer", bob, "remove"])
        assert not client.ping("10.13.13.1", timeout=1)

        report = doctor(lab)
        assert report.rc == 1 and report.status("drift") == "fail"
        assert "bob missing from the device" in report["drift"]["evidence"]
        assert report["drift"]["fixable"]

        fixed = doctor(lab, "--fix", "--yes")
        assert fixed.status("drift") == "ok"
        assert bob in lab.device_peers()
        # The old session died with the removed peer (that client re-handshakes by itself after 15 s): a client
        # connecting now gets through.
        lab.factory.wg_quick_down(iface)
        client, _ = lab.connect("bob", allowed_ips="10.13.13.0/24")
        assert client.ping("10.13.13.1")


def test_forward_policy_drop_in_another_table(lab: Lab):
    start(lab)
    client, _ = lab.connect("alice", allowed_ips=TUNNEL_AND_VPC)
    assert client.ping(VPC_HOST)
    lab.server.run(["iptables", "-P", "FORWARD", "DROP"])  # what Docker does on a host
    assert not client.ping(VPC_HOST, timeout=1)

    report = doctor(lab)
    check = report["forward_policy"]
    assert report.rc == 1 and check["status"] == "fail"
    assert "table ip filter chain FORWARD: policy drop" in check["evidence"]
    assert check["fix"].startswith(f"iptables -I FORWARD -i {lab.iface} -j ACCEPT")

    run_fix(lab.server, check["fix"])
    assert client.ping(VPC_HOST)
    assert doctor(lab).status("forward_policy") == "ok"


def test_route_over_the_tunnel_subnet_is_a_collision(lab: Lab):
    start(lab)
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
    lab.server.ip("route", "add", "10.13.13.0/25", "via", VPC_HOST)
    assert not client.ping("10.13.13.1", timeout=1)  # the replies go to the VPC

    report = doctor(lab)
    check = report["subnet_conflict"]
    assert report.rc == 1 and check["status"] == "fail"
    egress = egress_veth(lab)
    assert f"route 10.13.13.0/25 via {VPC_HOST} dev {egress}" in check["evidence"]
    assert check["fix"].startswith(f"ip route del 10.13.13.0/25 via {VPC_HOST} dev {egress}")

    run_fix(lab.server, check["fix"].split(" (or ")[0])
    assert client.ping("10.13.13.1")

    lab.server.ip("address", "add", "10.13.13.200/24", "dev", egress)
    check = doctor(lab)["subnet_conflict"]
    assert check["status"] == "fail" and f"address 10.13.13.200/24 on '{egress}'" in check["evidence"]
    assert "route 10.13.13.0/24" not in check["evidence"]


def test_mtu_larger_than_the_egress_path(lab: Lab):
    start(lab)
    client, iface = lab.connect("alice", allowed_ips=TUNNEL_AND_VPC)
    egress = egress_veth(lab)
    lab.server.ip("link", "set", "dev", egress, "mtu", "1400")
    full_size = ["ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", str(1420 - 28), VPC_HOST]
    assert client.run(full_size, check=False).returncode != 0  # a full tunnel packet does not fit the egress

    report = doctor(lab)
    check = report["mtu"]
    assert report.rc == 0 and check["status"] == "warn"
    assert f"MTU 1420 + 60 bytes of WireGuard/IPv4 overhead = 1480 > 1400 on '{egress}'" in check["evidence"]
    assert check["fix"].startswith("bulwark init --config-dir") and "--mtu 1320," in check["fix"]

    lab.bulwark("init", "--mtu", "1320")
    lab.wait_for(lambda: b"mtu 1320" in lab.server.run(["ip", "link", "show", lab.iface]).stdout, 5)
    assert doctor(lab).status("mtu") == "ok"
    lab.factory.wg_quick_down(iface)
    client, _ = lab.connect("alice", allowed_ips=TUNNEL_AND_VPC)  # its new config carries MTU = 1320
    full_size[-2] = str(1320 - 28)
    assert client.run(full_size, check=False).returncode == 0


def test_listen_port_taken_by_another_process(lab: Lab):
    start(lab)
    with supervisor_stopped(lab):
        lab.server.run(["wg", "set", lab.iface, "listen-port", "51999"])
        holder = lab.server.python("import socket, time\n"
                                   "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 51820))\n"
                                   "time.sleep(3600)\n")
        lab.wait_for(lambda: b":51820" in lab.server.run(["ss", "-uanH"]).stdout, 5)

        report = doctor(lab)
        check = report["listen_port"]
        assert report.rc == 1 and check["status"] == "fail"
        assert f"'{lab.iface}' listens on UDP 51999, not the store's 51820" in check["evidence"]
        assert f"UDP 51820 is bound by 'python3' (pid {holder.pid})" in check["evidence"] or \
            "UDP 51820 is bound by 'python" in check["evidence"]
        assert check["fix"].startswith("stop it (kill ")

        blocked = doctor(lab, "--fix", "--yes")  # the device cannot take the port while it is held
        assert blocked.status("listen_port") == "fail" and "fix listen_port: FAILED" in blocked.stderr
        holder.kill()
        holder.wait()
        fixed = doctor(lab, "--fix", "--yes")
        assert fixed.status("listen_port") == "ok" and fixed.status("drift") == "ok"
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")


def test_dns_forwarder_of_a_stopped_supervisor_does_not_answer(lab: Lab):
    start_vpc_dns(lab)
    lab.init("--peers", "alice")
    lab.up()
    assert doctor(lab).status("dns") == "ok"
    with supervisor_stopped(lab) as pid:
        started = time.monotonic()
        report = doctor(lab)
        assert time.monotonic() - started < 10
        check = report["dns"]
        assert report.rc == 1 and check["status"] == "fail"
        assert "no DNS answer can come from 10.13.13.1:53" in check["evidence"]
        assert f"the supervisor (pid {pid}), is stopped" in check["evidence"]
        assert check["fix"] == f"kill -CONT {pid}"
    assert doctor(lab).status("dns") == "ok"


def test_file_permissions_are_fixed_and_a_corrupt_store_is_reported(lab: Lab):
    lab.server.set_resolv_conf("nameserver 127.0.0.1\n")
    lab.init("--peers", "alice")
    key = lab.config / "peer_alice" / "privatekey-peer_alice"
    key.chmod(0o644)
    (lab.config / "peer_alice").chmod(0o755)
    (lab.config / "bulwark.db").chmod(0o644)

    report = doctor(lab)
    check = report["permissions"]
    assert check["status"] == "fail" and check["fixable"]
    assert "peer_alice/privatekey-peer_alice 0644 (want 0600)" in check["evidence"]
    assert "peer_alice 0755 (want 0700)" in check["evidence"] and "bulwark.db 0644 (want 0600)" in check["evidence"]
    assert report.status("store") == "ok"  # read-only: the doctor itself did not chmod the store

    # On a terminal the doctor asks first: "n" changes nothing, "y" applies the fix.
    refused = _doctor_fix_on_a_terminal(lab, "n\n")
    assert "apply these fixes? [y/N]" in refused and "bulwark: nothing changed" in refused
    assert key.stat().st_mode & 0o777 == 0o644
    accepted = _doctor_fix_on_a_terminal(lab, "y\n")
    assert "fix permissions: done" in accepted
    assert key.stat().st_mode & 0o777 == 0o600
    assert (lab.config / "peer_alice").stat().st_mode & 0o777 == 0o700
    assert (lab.config / "bulwark.db").stat().st_mode & 0o777 == 0o600
    assert (lab.config / "peer_alice" / "publickey-peer_alice").stat().st_mode & 0o777 == 0o644
    assert doctor(lab).status("permissions") == "ok"

    broken = lab.factory.tmpdir()
    (broken / "bulwark.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 4096)
    result = bulwark("doctor", "--json", "--config-dir", str(broken), netns=lab.server.name, check=False)
    store = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "store")
    assert result.returncode == 1 and store["status"] == "fail"
    assert "restore" in store["fix"]


def _doctor_fix_on_a_terminal(lab: Lab, answer: str) -> str:
    """`bulwark doctor --fix` with a pseudo-terminal as stdin, answering `answer`; its stderr."""
    main, child = os.openpty()
    try:
        proc = subprocess.Popen(["ip", "netns", "exec", lab.server.name, *BULWARK, "doctor", "--fix", "--config-dir",
                                 str(lab.config)], stdin=child, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=clean_env(), text=True)
        os.close(child)
        os.write(main, answer.encode())
        return proc.communicate(timeout=60)[1]
    finally:
        os.close(main)


def test_no_backend_and_no_tun_device(lab: Lab):
    lab.server.set_resolv_conf("nameserver 127.0.0.1\n")
    lab.init("--peers", "alice")
    tools = lab.factory.tmpdir() / "bin"
    tools.mkdir()
    for tool in ("ip", "wg", "nft", "ss", "sysctl", "iptables", "unshare", "mount", "sh"):
        path = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        (tools / tool).symlink_to(path)
    # A mount namespace hides /dev/net/tun; PATH without wireguard-go (this kernel has no WireGuard module).
    script = f"mount -t tmpfs none /dev/net && exec {' '.join(BULWARK)} doctor --json --config-dir {lab.config}"
    result = subprocess.run(["ip", "netns", "exec", lab.server.name, "unshare", "-m", "sh", "-c", script],
                            capture_output=True, text=True, env=clean_env(PATH=str(tools)), timeout=60)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.returncode == 1
    assert checks["backend"]["status"] == "fail" and "no wireguard-go" in checks["backend"]["evidence"]
    assert checks["backend"]["fix"].startswith("apt-get install -y wireguard-go")
    assert checks["tun_device"]["status"] == "fail" and "/dev/net/tun is missing" in checks["tun_device"]["evidence"]


def test_src_valid_mark_off_with_a_full_tunnel_client_on_the_gateway_host(lab: Lab):
    start(lab)
    # An upstream WireGuard server in the VPC, reached through the gateway's default route, and on the gateway
    # host a wg-quick client tunnelling everything (0.0.0.0/0) to it: the notes' container sets src_valid_mark=1
    # for exactly this.
    upstream = start_wg_server(lab.factory, lab.vpc, address4="10.88.0.1/24", address6="fd88::1/64",
                               log=lambda _: None)
    lab.vpc.ip("address", "add", "198.51.100.1/32", "dev", "lo")
    key = PrivateKey.generate()
    spec = PeerSpec(key.public_key(), frozenset({ipaddress.ip_network("10.88.0.2/32")}))
    apply_device(upstream.runner, upstream.iface, upstream.desired([spec]))
    conf = wg_quick_conf(key, ["10.88.0.2/32"], upstream.key.public_key(), "198.51.100.1:51820", ["0.0.0.0/0"])
    lab.server.run(["sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=1"])
    tunnel = lab.factory.wg_quick_up(lab.server, conf)
    assert lab.server.ping("10.88.0.1")
    lab.server.run(["sysctl", "-q", "-w", "net.ipv4.conf.all.src_valid_mark=0"])
    # A fresh session, so that the next handshake happens with the mark ignored by the reverse-path check.
    server_key = str(upstream.key.public_key())
    lab.server.run(["wg", "set", tunnel, "peer", server_key, "remove"])
    lab.server.run(["wg", "set", tunnel, "peer", server_key, "endpoint", "198.51.100.1:51820",
                    "allowed-ips", "0.0.0.0/0"])
    assert not lab.server.ping("10.88.0.1", count=2, timeout=1)  # its handshake replies are dropped

    report = doctor(lab)
    check = report["src_valid_mark"]
    assert report.rc == 0 and check["status"] == "warn" and check["fixable"]
    assert f"full-tunnel client {tunnel} (fwmark 0xca6c, table 51820) on this host" in check["evidence"]
    assert "net.ipv4.conf.all.src_valid_mark = 0" in check["evidence"]
    assert check["fix"].startswith("sysctl -w net.ipv4.conf.all.src_valid_mark=1")

    assert doctor(lab, "--fix", "--yes").status("src_valid_mark") == "ok"
    lab.wait_for(lambda: lab.server.ping("10.88.0.1", timeout=1), 15)
