"""Unit tests of the data plane's pure parts: dump parsing, diffing, rendering, the runner's contract."""

from __future__ import annotations

import ipaddress
import logging
import os
import subprocess
import sys
import time

import pytest

from bulwark_vpn.dataplane import apply, firewall, gateway, wg
from bulwark_vpn.dataplane.apply import AddPeer, Conflict, DesiredDevice, RemovePeer, SetInterface, UpdatePeer
from bulwark_vpn.dataplane.link import validate_ifname
from bulwark_vpn.dataplane.runner import RollbackStack, Runner, Undo
from bulwark_vpn.dataplane.wg import PeerSpec
from bulwark_vpn.errors import ConflictError, InputError, SystemActionError
from bulwark_vpn.keys import PresharedKey, PrivateKey
from bulwark_vpn.model import Peer
from tests.netns import unique_ifname

SERVER = PrivateKey.generate()
PEER_A = PrivateKey.generate().public_key()
PEER_B = PrivateKey.generate().public_key()
PSK = PresharedKey.generate()


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def dump_text() -> str:
    head = f"{SERVER.to_base64()}\t{SERVER.public_key()}\t51820\toff"
    peer_a = f"{PEER_A}\t{PSK.to_base64()}\t192.0.2.7:40000\t10.0.0.2/32,fd00::2/128\t1700000000\t1234\t5678\t25"
    peer_b = f"{PEER_B}\t(none)\t(none)\t(none)\t0\t0\t0\toff"
    return "\n".join([head, peer_a, peer_b]) + "\n"


# --- wg show dump ----------------------------------------------------------------------------


def test_parse_dump_reads_interface_and_peers() -> None:
    state = wg.parse_dump(dump_text())
    assert state.private_key == SERVER
    assert state.public_key == SERVER.public_key()
    assert state.listen_port == 51820
    assert state.fwmark is None
    a, b = state.peers[PEER_A], state.peers[PEER_B]
    assert a.preshared_key == PSK
    assert a.endpoint == "192.0.2.7:40000"
    assert a.allowed_ips == {net("10.0.0.2/32"), net("fd00::2/128")}
    assert (a.latest_handshake, a.rx_bytes, a.tx_bytes, a.keepalive) == (1700000000, 1234, 5678, 25)
    assert b.preshared_key is None and b.endpoint is None and b.keepalive is None
    assert b.allowed_ips == frozenset() and b.latest_handshake == 0


def test_parse_dump_of_unconfigured_device_with_fwmark() -> None:
    state = wg.parse_dump("(none)\t(none)\t0\t0xca6c\n")
    assert state.private_key is None and state.public_key is None
    assert state.fwmark == 0xCA6C and state.peers == {}


@pytest.mark.parametrize("text", ["", "a\tb\tc\n", "(none)\t(none)\t0\toff\nshort\tline\n"])
def test_parse_dump_rejects_malformed_output(text: str) -> None:
    with pytest.raises(SystemActionError, match="cannot parse"):
        wg.parse_dump(text)


def test_repr_of_parsed_state_hides_secrets() -> None:
    text = repr(wg.parse_dump(dump_text()))
    assert SERVER.to_base64() not in text and PSK.to_base64() not in text


# --- peer commands ---------------------------------------------------------------------------


def test_peer_args_keep_secrets_out_of_argv() -> None:
    spec = PeerSpec(PEER_A, frozenset({net("10.0.0.2/32")}), preshared_key=PSK, keepalive=25)
    args, stdin = wg.peer_args(spec)
    assert PSK.to_base64() not in " ".join(args)
    assert stdin == PSK.to_base64().encode() + b"\n"
    assert args == [
        "peer", str(PEER_A), "preshared-key", "/dev/stdin", "persistent-keepalive", "25",
        "allowed-ips", "10.0.0.2/32",
    ]  # fmt: skip


def test_peer_args_clear_psk_and_keepalive_when_none() -> None:
    args, stdin = wg.peer_args(PeerSpec(PEER_A))
    assert stdin is None
    assert args[2:] == ["preshared-key", "/dev/null", "persistent-keepalive", "off", "allowed-ips", ""]


def test_peer_args_only_given_fields() -> None:
    args, _ = wg.peer_args(PeerSpec(PEER_A, frozenset({net("10.0.0.2/32")}), keepalive=5), only={"keepalive"})
    assert args == ["peer", str(PEER_A), "persistent-keepalive", "5"]


def test_peer_spec_normalizes_networks() -> None:
    spec = PeerSpec(PEER_A, frozenset({ipaddress.ip_network("10.0.0.1/24", strict=False)}), keepalive=0)
    assert spec.allowed_ips == {net("10.0.0.0/24")} and spec.keepalive is None


def test_render_conf_for_addconf() -> None:
    text = wg.render_conf([PeerSpec(PEER_A, frozenset({net("10.0.0.2/32")}), PSK, 25, "192.0.2.1:51820")])
    assert f"PublicKey = {PEER_A}" in text and f"PresharedKey = {PSK.to_base64()}" in text
    assert "AllowedIPs = 10.0.0.2/32" in text and "PersistentKeepalive = 25" in text
    assert "Endpoint = 192.0.2.1:51820" in text and "PrivateKey" not in text


# --- diff ------------------------------------------------------------------------------------


def desired(*peers: PeerSpec, port: int = 51820) -> DesiredDevice:
    return DesiredDevice(SERVER, port, {p.public_key: p for p in peers})


def live_state() -> wg.DeviceState:
    return wg.parse_dump(dump_text())


SPEC_A = PeerSpec(PEER_A, frozenset({net("10.0.0.2/32"), net("fd00::2/128")}), PSK, 25)
SPEC_B = PeerSpec(PEER_B)


def test_diff_is_empty_when_live_matches() -> None:
    assert apply.diff_device(desired(SPEC_A, SPEC_B), live_state()) == []


def test_diff_of_empty_device_sets_everything() -> None:
    changes = apply.diff_device(desired(SPEC_A), None)
    assert changes == [SetInterface(SERVER, 51820), AddPeer(SPEC_A)]


def test_diff_adds_removes_and_updates_only_what_differs() -> None:
    new = PeerSpec(PrivateKey.generate().public_key(), frozenset({net("10.0.0.9/32")}))
    changed_a = PeerSpec(PEER_A, frozenset({net("10.0.0.2/32")}), PSK, 25)
    changes = apply.diff_device(desired(changed_a, new, port=51821), live_state())
    assert changes[0] == SetInterface(None, 51821)
    assert changes[1] == RemovePeer(PEER_B)
    assert isinstance(changes[2], UpdatePeer) and changes[2].fields == {"allowed_ips"}
    assert changes[3] == AddPeer(new)
    assert len(changes) == 4


def test_diff_ignores_unmanaged_endpoint_and_learned_one() -> None:
    roaming = PeerSpec(PEER_A, SPEC_A.allowed_ips, PSK, 25, endpoint=None)
    same = PeerSpec(PEER_A, SPEC_A.allowed_ips, PSK, 25, endpoint="192.0.2.7:40000")
    moved = PeerSpec(PEER_A, SPEC_A.allowed_ips, PSK, 25, endpoint="192.0.2.8:40000")
    for spec, expected in ((roaming, []), (same, [])):
        assert apply.diff_device(desired(spec, SPEC_B), live_state()) == expected
    (change,) = apply.diff_device(desired(moved, SPEC_B), live_state())
    assert isinstance(change, UpdatePeer) and change.fields == {"endpoint"}


def test_diff_detects_psk_and_keepalive_changes() -> None:
    spec = PeerSpec(PEER_A, SPEC_A.allowed_ips, None, None)
    (change,) = apply.diff_device(desired(spec, SPEC_B), live_state())
    assert isinstance(change, UpdatePeer) and change.fields == {"preshared_key", "keepalive"}


def test_diff_rejects_an_allowed_ip_given_to_two_peers() -> None:
    clash = PeerSpec(PEER_B, frozenset({net("10.0.0.2/32")}))
    with pytest.raises(ConflictError, match="10.0.0.2/32"):
        apply.diff_device(desired(SPEC_A, clash), live_state())


def test_describe_shows_public_keys_never_secrets() -> None:
    changes = apply.diff_device(desired(SPEC_A, port=1), None) + [
        RemovePeer(PEER_B),
        UpdatePeer(PeerSpec(PEER_A, keepalive=5), frozenset({"keepalive", "allowed_ips", "preshared_key"})),
    ]
    text = "\n".join(c.describe() for c in changes)
    assert str(PEER_A) in text and str(PEER_B) in text
    assert SERVER.to_base64() not in text and PSK.to_base64() not in text
    assert "private key (changed)" in text and "keepalive ? -> 5" in text


def test_apply_of_no_changes_runs_nothing() -> None:
    lines: list[str] = []
    apply.apply_changes(Runner(log=lines.append, dry_run=True), "wg0", [])
    assert lines == []


def test_apply_batches_many_additions_in_one_addconf() -> None:
    lines: list[str] = []
    peers = [PeerSpec(PrivateKey.generate().public_key()) for _ in range(apply.BULK_ADD_THRESHOLD + 1)]
    apply.apply_changes(Runner(log=lines.append, dry_run=True), "wg0", [AddPeer(p) for p in peers])
    assert lines == ["[dry-run] [#] wg addconf wg0 /dev/stdin"]


# --- firewall rendering ----------------------------------------------------------------------


def spec(**kw) -> firewall.FirewallSpec:
    values = {
        "iface": "wg0",
        "egress": "eth0",
        "subnets": (net("10.13.13.0/24"), net("fd13::/64")),
        "listen_port": 51820,
        "addresses": (ipaddress.ip_address("10.13.13.1"), ipaddress.ip_address("fd13::1")),
    }
    values.update(kw)
    return firewall.FirewallSpec(**values)


def test_ruleset_is_one_owned_table_replaced_atomically() -> None:
    text = firewall.render_ruleset(spec())
    assert text.startswith("table inet bulwark_wg0\ndelete table inet bulwark_wg0\ntable inet bulwark_wg0 {")
    assert text.count("policy accept;") == 3 and "policy drop" not in text
    assert 'oifname "eth0" ip saddr 10.13.13.0/24 counter masquerade' in text
    assert 'oifname "eth0" ip6 saddr fd13::/64 counter masquerade' in text
    assert 'oifname "wg0" ct state established,related counter accept' in text
    assert 'iifname "wg0" oifname "wg0" counter drop comment "peer to peer (closed)"' in text
    assert 'iifname != "wg0" udp dport 51820 counter accept' in text


def test_ruleset_blocks_metadata_unless_disabled() -> None:
    assert 'iifname "wg0" ip daddr 169.254.0.0/16 counter drop' in firewall.render_ruleset(spec())
    assert 'iifname "wg0" ip6 daddr fd00:ec2::254/128 counter drop' in firewall.render_ruleset(spec())
    assert "169.254" not in firewall.render_ruleset(spec(block_metadata=False))


def test_ruleset_without_egress_nats_out_of_every_other_interface() -> None:
    text = firewall.render_ruleset(spec(egress=None, subnets=(net("10.13.13.0/24"),), dns=False))
    assert 'oifname != "wg0" ip saddr 10.13.13.0/24 counter masquerade' in text
    assert 'iifname "wg0" oifname != "wg0" counter accept' in text
    assert "eth0" not in text and "dport 53" not in text


def test_table_name_escapes_characters_nft_rejects() -> None:
    assert firewall.table_name("wg0") == "bulwark_wg0"
    assert firewall.table_name("wg-a.b") == "bulwark_wg_x2da_x2eb"


def test_iptables_script_uses_dedicated_chains() -> None:
    text = firewall.render_iptables(spec(), 4)
    assert ":BULWARK-wg0 - [0:0]" in text and ":BULWARK-wg0-in - [0:0]" in text
    assert "-I FORWARD 1 -j BULWARK-wg0" in text and "-I POSTROUTING 1 -j BULWARK-wg0" in text
    assert "-A BULWARK-wg0 -o eth0 -s 10.13.13.0/24 -m comment" in text and "fd13" not in text
    assert "-A BULWARK-wg0 -i wg0 -d 169.254.0.0/16 -m comment" in text
    assert "-o eth0 -s fd13::/64 -m comment --comment \"NAT of the tunnel\" -j MASQUERADE" in \
        firewall.render_iptables(spec(), 6)


def test_firewall_spec_validates_interface_names() -> None:
    with pytest.raises(InputError):
        spec(egress="eth0; rm -rf /")


# --- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wg0", "a", "wg_x=+.-9", "x" * 15])
def test_valid_interface_names(name: str) -> None:
    assert validate_ifname(name) == name


@pytest.mark.parametrize("name", ["", "x" * 16, "wg 0", "wg/0", "wg0;", "..", "wgé"])
def test_invalid_interface_names(name: str) -> None:
    with pytest.raises(InputError, match="invalid interface name"):
        validate_ifname(name)


def test_unique_ifnames_are_short_and_distinct() -> None:
    names = {unique_ifname("wq") for _ in range(1000)}
    assert len(names) == 1000 and all(len(n) <= 15 for n in names)


# --- runner ----------------------------------------------------------------------------------


def test_runner_logs_changes_like_wg_quick_but_never_stdin() -> None:
    lines: list[str] = []
    result = Runner(log=lines.append).run(["cat"], input=b"secret-key\n")
    assert result.stdout == b"secret-key\n"
    assert lines == ["[#] cat"]


def test_runner_quiet_commands_go_to_debug(caplog: pytest.LogCaptureFixture) -> None:
    lines: list[str] = []
    with caplog.at_level(logging.DEBUG, logger="bulwark_vpn"):
        Runner(log=lines.append).run(["true"], quiet=True)
    assert lines == [] and "[#] true" in caplog.text


def test_runner_default_log_is_the_package_logger(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bulwark_vpn"):
        Runner().run(["true", "a b"])
    assert "[#] true 'a b'" in caplog.text


def test_runner_failure_is_one_line_with_stderr_and_hint() -> None:
    with pytest.raises(SystemActionError) as info:
        Runner(log=lambda _: None).run(["sh", "-c", "echo 'RTNETLINK answers: File exists' >&2; exit 2"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("command failed: 'sh -c")
    assert "RTNETLINK answers: File exists" in message and "remove it first" in message


def test_runner_missing_program_hints_the_package() -> None:
    hint = "'wireguard-go' not found: install it: apt-get install -y wireguard-go"
    with pytest.raises(SystemActionError, match=hint):
        Runner(log=lambda _: None).run(["/nonexistent/wireguard-go"])


def test_runner_check_false_returns_the_failure() -> None:
    assert Runner(log=lambda _: None).run(["false"], check=False).returncode == 1


def test_runner_dry_run_logs_but_does_not_run(tmp_path) -> None:
    lines: list[str] = []
    target = tmp_path / "x"
    Runner(log=lines.append, dry_run=True).run(["touch", str(target)])
    assert not target.exists() and lines == [f"[dry-run] [#] touch {target}"]


def test_runner_env_none_unsets() -> None:
    runner = Runner(log=lambda _: None)
    out = runner.run(["sh", "-c", "echo ${HOME:-unset}"], env={"HOME": None}).stdout
    assert out == b"unset\n"


def test_runner_in_netns_prefixes_ip_netns_exec() -> None:
    assert Runner(netns="ns1").wrap(["wg", "show"]) == ["ip", "netns", "exec", "ns1", "wg", "show"]


def test_rollback_stack_undoes_in_reverse_and_continues_after_failures() -> None:
    done: list[str] = []

    def fail() -> None:
        done.append("fail")
        raise RuntimeError("boom")

    with pytest.raises(ValueError), RollbackStack(log=lambda _: None) as stack:
        stack.push(Undo("first", lambda: done.append("first")))
        stack.push([Undo("second", fail), Undo("third", lambda: done.append("third"))])
        raise ValueError("bring-up failed")
    assert done == ["third", "fail", "first"]


def test_rollback_stack_keeps_changes_on_success() -> None:
    done: list[str] = []
    with RollbackStack(log=lambda _: None) as stack:
        stack.push(Undo("x", lambda: done.append("x")))
    assert done == [] and len(stack) == 0


def test_runner_in_missing_netns_says_so() -> None:
    with pytest.raises(SystemActionError, match="network namespace 'bw-missing-0' does not exist"):
        Runner(netns="bw-missing-0", log=lambda _: None).run(["true"])


# --- no-op apply, conflicts ------------------------------------------------------------------


def device_equal_to(wanted: DesiredDevice) -> wg.DeviceState:
    """The live state a device shows once `wanted` is applied (counters and a learned endpoint added)."""
    peers = {
        key: wg.DevicePeer(key, spec.preshared_key, "198.51.100.4:40001", spec.allowed_ips, spec.keepalive,
                           1700000000, 10, 20)
        for key, spec in wanted.peers.items()
    }
    return wg.DeviceState(wanted.private_key, wanted.private_key.public_key(), wanted.listen_port or 0, None, peers)


def test_apply_is_a_no_op_when_nothing_differs() -> None:
    wanted = desired(SPEC_A, SPEC_B, PeerSpec(PrivateKey.generate().public_key(), frozenset({net("10.0.0.3/32")})))
    live = device_equal_to(wanted)
    assert apply.diff_device(wanted, live) == []
    lines: list[str] = []
    assert apply.apply_device(Runner(log=lines.append, dry_run=True), "wg0", wanted, live=live) == []
    assert lines == []  # not one command, not even a dry-run one


def test_drop_conflicting_peers_keeps_the_first_owner_of_each_network() -> None:
    site = net("192.168.77.0/24")
    first = PeerSpec(PEER_A, frozenset({net("10.0.0.2/32"), site}))
    later = PeerSpec(PEER_B, frozenset({net("10.0.0.3/32"), site}))
    other = PeerSpec(PrivateKey.generate().public_key(), frozenset({net("10.0.0.4/32")}))
    kept, conflicts = apply.drop_conflicting_peers({p.public_key: p for p in (first, later, other)})
    assert list(kept) == [PEER_A, other.public_key]
    assert conflicts == [Conflict(PEER_B, site, PEER_A)]
    assert apply.drop_conflicting_peers(kept) == (kept, [])


def test_a_conflict_is_described_in_one_line_with_names_and_the_fix() -> None:
    peers = [Peer(name=name, public_key=key, preshared_key=None, address4=ipaddress.IPv4Address(address))
             for name, key, address in (("bob", PEER_A, "10.0.0.2"), ("carol", PEER_B, "10.0.0.3"))]
    line = gateway.describe_conflict(Conflict(PEER_B, net("192.168.77.0/24"), PEER_A), peers)
    assert "\n" not in line
    assert "'carol'" in line and "'bob'" in line and "192.168.77.0/24" in line
    assert "bulwark peer disable carol" in line


# --- which process is the supervisor ---------------------------------------------------------


def runtime_state(pid: int, pid_start: int | None) -> gateway.RuntimeState:
    return gateway.RuntimeState(interface="wg0", config_dir="/x", pid=pid, backend="userspace", egress=None,
                                forwarding_before={}, firewall=True, dns=False, pid_start=pid_start)


def test_supervisor_is_the_recorded_process_not_whatever_has_its_pid_now() -> None:
    me = os.getpid()
    assert runtime_state(me, gateway.process_start_time(me)).supervisor_alive()
    assert not runtime_state(me, (gateway.process_start_time(me) or 0) + 1).supervisor_alive()  # a reused pid


def test_supervisor_without_a_recorded_start_is_recognized_by_its_command_line() -> None:
    sleeper = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    unrelated = subprocess.Popen(sleeper, stdout=subprocess.PIPE)
    lookalike = subprocess.Popen([*sleeper, "bulwark_vpn", "up", "--foreground"], stdout=subprocess.PIPE)
    try:
        for proc in (unrelated, lookalike):
            assert proc.stdout is not None and proc.stdout.readline()  # past exec: /proc shows its own argv
        assert not runtime_state(unrelated.pid, None).supervisor_alive()
        assert runtime_state(lookalike.pid, None).supervisor_alive()
    finally:
        for proc in (unrelated, lookalike):
            proc.kill()
            proc.wait()


def test_a_zombie_supervisor_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass", "bulwark_vpn", "up"])
    try:
        deadline = time.monotonic() + 10
        while gateway.pid_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.path.exists(f"/proc/{child.pid}")  # exited but not reaped: a zombie
        assert not runtime_state(child.pid, None).supervisor_alive()
    finally:
        child.wait()
