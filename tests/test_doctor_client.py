"""`bulwark doctor --peer-config FILE` on a client, for real: a real handshake to a real gateway (wireguard-go),
sent from a client namespace, and the server-side doctor's view of the same failure."""

from __future__ import annotations

import time

from tests.gwlab import SERVER_WAN, Lab
from tests.helpers import bulwark
from tests.test_doctor_support import (
    bare_client,
    conf_file,
    doctor,
    peer_conf,
    run_fix,
    start,
    start_vpc_dns,
    supervisor_stopped,
    with_allowed_ips,
    with_wrong_key,
    with_wrong_psk,
    without_dns,
)


def test_client_with_a_wrong_private_key_gets_no_handshake_answer(lab: Lab):
    start(lab)
    client = bare_client(lab)
    wrong = with_wrong_key(peer_conf(lab, "alice"))
    lab.factory.wg_quick_up(client, without_dns(with_allowed_ips(wrong, "10.13.13.0/24")))
    assert not client.ping("10.13.13.1", timeout=1)

    server = doctor(lab)
    check = server["handshakes"]
    assert server.rc == 0 and check["status"] == "warn"
    assert check["evidence"].startswith("never completed a handshake: alice: no valid initiation arrived")
    assert "wrong PrivateKey" in check["evidence"]

    started = time.monotonic()
    report = doctor(lab, "--peer-config", str(conf_file(lab, wrong)), ns=client)
    check = report["handshake"]
    assert report.rc == 1 and check["status"] == "fail"
    assert check["evidence"].startswith(f"no answer from {SERVER_WAN}:51820 to 3 initiations in 3 s")
    assert "the server does not accept this config's keys" in check["evidence"]
    assert time.monotonic() - started < 8


def test_wrong_preshared_key_is_named_on_both_sides(lab: Lab):
    start(lab)
    client = bare_client(lab)
    wrong = with_wrong_psk(peer_conf(lab, "alice"))
    lab.factory.wg_quick_up(client, without_dns(with_allowed_ips(wrong, "10.13.13.0/24")))
    assert not client.ping("10.13.13.1", timeout=1)  # its initiations reach the server

    server = doctor(lab)["handshakes"]
    assert server["status"] == "warn"
    assert server["evidence"].startswith("handshake initiations received but never completed: alice (from 172.31.")
    assert "PresharedKey does not match" in server["evidence"]

    report = doctor(lab, "--peer-config", str(conf_file(lab, wrong)), ns=client)
    check = report["handshake"]
    assert report.rc == 1 and check["status"] == "fail"
    assert "so it knows this peer's public key, but its response does not decrypt: the PresharedKey" in check[
        "evidence"]

    right = conf_file(lab, peer_conf(lab, "alice"), "right.conf")
    assert doctor(lab, "--peer-config", str(right), ns=client).status("handshake") == "ok"


def test_port_blocked_on_the_server_is_no_answer_for_the_client(lab: Lab):
    start(lab)
    lab.server.run(["nft", "add", "table", "ip", "blocker"])
    lab.server.run(["nft", "add", "chain", "ip", "blocker", "input",
                    "{ type filter hook input priority -10; policy accept; }"])
    lab.server.run(["nft", "add", "rule", "ip", "blocker", "input", "udp", "dport", "51820", "reject"])
    client = bare_client(lab)
    conf = conf_file(lab, peer_conf(lab, "alice"))

    report = doctor(lab, "--peer-config", str(conf), ns=client)
    assert report.rc == 1 and report.status("handshake") == "fail"
    assert "refused it (ICMP port unreachable)" in report["handshake"]["evidence"]
    fix = doctor(lab)["port_filter"]["fix"]
    assert fix.startswith("nft delete rule ip blocker input handle ")

    run_fix(lab.server, fix)
    assert doctor(lab, "--peer-config", str(conf), ns=client).status("handshake") == "ok"


def test_endpoint_0000_and_loopback_seen_from_another_namespace(lab: Lab):
    start(lab, "alice", "--server-url", "0.0.0.0")
    server = doctor(lab)
    assert server["endpoint"]["status"] == "warn"
    assert "Endpoint 0.0.0.0:51820 is the unspecified address" in server["endpoint"]["evidence"]
    assert "bulwark init --config-dir" in server["endpoint"]["fix"] and "--server-url PUBLIC_HOST" in server[
        "endpoint"]["fix"]

    client = bare_client(lab)
    report = doctor(lab, "--peer-config", str(conf_file(lab, peer_conf(lab, "alice"))), ns=client)
    assert report.status("endpoint") == "warn" and "is this machine itself" in report["endpoint"]["evidence"]
    assert report.status("handshake") == "fail" and "nothing listens on that UDP port" in report["handshake"][
        "evidence"]
    loopback = conf_file(lab, peer_conf(lab, "alice", endpoint="127.0.0.1:51820"), "lo.conf")
    assert doctor(lab, "--peer-config", str(loopback), ns=client).status("endpoint") == "warn"
    lab.bulwark("init", "--server-url", "127.0.0.1")
    assert "is a loopback address" in doctor(lab)["endpoint"]["evidence"]

    lab.bulwark("init", "--server-url", SERVER_WAN)  # the fix the doctor printed
    assert doctor(lab).status("endpoint") == "ok"
    fixed = peer_conf(lab, "alice")
    assert doctor(lab, "--peer-config", str(conf_file(lab, fixed, "fixed.conf")), ns=client).rc == 0
    lab.factory.wg_quick_up(client, without_dns(with_allowed_ips(fixed, "10.13.13.0/24")))
    assert client.ping("10.13.13.1")


def test_dns_through_the_tunnel_and_a_stopped_forwarder(lab: Lab):
    start_vpc_dns(lab)
    lab.init("--peers", "alice")
    lab.up()
    conf = conf_file(lab, peer_conf(lab, "alice"))
    client = bare_client(lab)
    down = doctor(lab, "--peer-config", str(conf), ns=client)
    assert down.status("dns") == "skip" and "not checked: the tunnel is down" in down["dns"]["evidence"]

    lab.factory.wg_quick_up(client, without_dns(with_allowed_ips(peer_conf(lab, "alice"), "10.13.13.0/24")))
    up = doctor(lab, "--peer-config", str(conf), ns=client)
    assert up.rc == 0 and up.status("dns") == "ok" and up.status("handshake") == "ok"
    assert "DNS answered through the tunnel: 10.13.13.1 via " in up["dns"]["evidence"]
    assert client.ping("10.13.13.1")  # the probe did not disturb the running tunnel

    with supervisor_stopped(lab):
        report = doctor(lab, "--peer-config", str(conf), ns=client)
        assert report.status("dns") == "fail"
        assert "no DNS answer through the tunnel from 10.13.13.1" in report["dns"]["evidence"]
    assert doctor(lab, "--peer-config", str(conf), ns=client).status("dns") == "ok"


def test_a_forwarder_whose_upstream_fails_every_name_is_a_warning_on_both_sides(lab: Lab):
    """Issue 9: the forwarder answers, but SERVFAIL for every name (its upstream is unreachable): that is not "ok",
    on the server nor through the tunnel, and the server's doctor names the upstream."""
    lab.server.set_resolv_conf("nameserver 127.0.0.1\n")  # nothing listens there: every name is SERVFAIL
    lab.init("--peers", "alice")
    lab.up()
    server = doctor(lab)
    check = server["dns"]
    assert check["status"] == "warn", check
    assert "SERVFAIL for every name" in check["evidence"] and "127.0.0.1" in check["evidence"]
    assert server.rc == 0  # a warning is not a failure

    conf = conf_file(lab, peer_conf(lab, "alice"))
    client = bare_client(lab)
    lab.factory.wg_quick_up(client, without_dns(with_allowed_ips(peer_conf(lab, "alice"), "10.13.13.0/24")))
    report = doctor(lab, "--peer-config", str(conf), ns=client)
    assert report.status("dns") == "warn", report["dns"]
    assert "10.13.13.1 via " in report["dns"]["evidence"] and "SERVFAIL for every name" in report["dns"]["evidence"]


def test_allowed_ips_colliding_with_local_routes(lab: Lab):
    start(lab)
    client = bare_client(lab)
    gateway = client.run(["ip", "-4", "-o", "route", "show", SERVER_WAN]).stdout.decode().split()[2]
    client.ip("route", "add", "10.0.1.0/24", "via", gateway)  # this client's own way into the VPC
    text = peer_conf(lab, "alice")
    overlap = conf_file(lab, with_allowed_ips(text, "10.13.13.0/24, 10.0.1.0/24"))
    report = doctor(lab, "--peer-config", str(overlap), ns=client)
    check = report["allowed_ips"]
    assert report.rc == 1 and check["status"] == "fail"
    assert "AllowedIPs 10.0.1.0/24 is also the local route 10.0.1.0/24 dev " in check["evidence"]

    # Only a default route leads to the Endpoint: AllowedIPs 192.0.2.0/24 would pull the Endpoint into the tunnel.
    client.ip("route", "del", f"{SERVER_WAN}/32")
    client.ip("route", "add", "default", "via", gateway)
    loop = conf_file(lab, with_allowed_ips(text, "10.13.13.0/24, 192.0.2.0/24"), "loop.conf")
    check = doctor(lab, "--peer-config", str(loop), ns=client)["allowed_ips"]
    assert check["status"] == "fail"
    assert f"AllowedIPs 192.0.2.0/24 contains the Endpoint {SERVER_WAN}" in check["evidence"]

    full = conf_file(lab, text, "full.conf")  # 0.0.0.0/0: wg-quick keeps the Endpoint out of the tunnel itself
    assert doctor(lab, "--peer-config", str(full), ns=client).status("allowed_ips") == "ok"


def test_bad_peer_config_is_a_one_line_error_exit_2(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[Interface]\nAddress = 10.13.13.2/32\n")
    result = bulwark("doctor", "--peer-config", str(bad), check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"bulwark: {bad}: [Interface] has no PrivateKey: add 'PrivateKey = <key from " \
                                    "wg genkey>'"
    missing = bulwark("doctor", "--peer-config", str(tmp_path / "nope.conf"), check=False)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "cannot read the peer config" in missing.stderr
