"""The doctor's pure parts: the nftables evaluator, the handshake messages, the handshake classification, the
text and JSON output. (Everything that touches a system is tested for real in test_doctor_server/_client.)"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from bulwark_vpn.dataplane.gateway import RuntimeState
from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.dataplane.wg import DevicePeer
from bulwark_vpn.doctor import handshake
from bulwark_vpn.doctor.checks import check_handshakes
from bulwark_vpn.doctor.facts import HostFacts, LiveDevice, ServerContext, StoreView
from bulwark_vpn.doctor.model import CheckResult, Remedy, Status
from bulwark_vpn.doctor.nftrules import Packet, Ruleset, describe, resolve_conntrack_matches
from bulwark_vpn.keys import PresharedKey, PrivateKey
from bulwark_vpn.model import Peer, Settings
from bulwark_vpn.render.doctor import render_plan, render_results, results_json
from bulwark_vpn.store.base import row_of

# -- the nftables evaluator -------------------------------------------------------------------------------


def _chain(family, table, name, hook=None, policy="accept", kind="filter"):
    chain = {"family": family, "table": table, "name": name, "handle": 1}
    if hook:
        chain.update(type=kind, hook=hook, prio=0, policy=policy)
    return {"chain": chain}


def _rule(family, table, chain, handle, *exprs):
    return {"rule": {"family": family, "table": table, "chain": chain, "handle": handle, "expr": list(exprs)}}


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


IIF = {"meta": {"key": "iifname"}}
OIF = {"meta": {"key": "oifname"}}
UDP_DPORT = {"payload": {"protocol": "udp", "field": "dport"}}
CT_STATE = {"ct": {"key": "state"}}
SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}

# Docker's forward path, as iptables-nft shows it: policy drop, user chains, accepts for docker0 only.
DOCKER = {"nftables": [
    _chain("ip", "filter", "FORWARD", "forward", "drop"),
    _chain("ip", "filter", "DOCKER-USER"),
    _chain("ip", "filter", "DOCKER"),
    _rule("ip", "filter", "FORWARD", 10, {"counter": {}}, {"jump": {"target": "DOCKER-USER"}}),
    _rule("ip", "filter", "FORWARD", 11, _match(OIF, "docker0"), _match(CT_STATE, ["established", "related"], "in"),
          {"accept": None}),
    _rule("ip", "filter", "FORWARD", 12, _match(OIF, "docker0"), {"jump": {"target": "DOCKER"}}),
    _rule("ip", "filter", "FORWARD", 13, _match(IIF, "docker0"), {"accept": None}),
    _rule("ip", "filter", "DOCKER-USER", 20, {"return": None}),
]}


def test_docker_forward_policy_drops_tunnel_traffic():
    out = Packet(family=4, iifname="wg0", oifname="eth0", saddr=ipaddress.ip_network("10.13.13.0/24"))
    [verdict] = Ruleset(DOCKER).evaluate(out, ("forward",))
    assert verdict.verdict == "drop" and verdict.finding is not None
    assert verdict.finding.text == "policy drop" and verdict.finding.is_iptables
    assert Ruleset(DOCKER).evaluate(out, ("input",)) == []  # no chain on that hook


def test_an_accept_for_the_tunnel_makes_the_drop_policy_harmless():
    data = {"nftables": [*DOCKER["nftables"], _rule("ip", "filter", "DOCKER-USER", 19, _match(IIF, "wg*"),
                                                    {"accept": None})]}
    # DOCKER-USER's accept (before its return) ends the whole base chain's walk with accept.
    data["nftables"].sort(key=lambda item: item.get("rule", {}).get("handle", 0))
    out = Packet(family=4, iifname="wg0", oifname="eth0")
    assert Ruleset(data).evaluate(out, ("forward",))[0].verdict == "accept"
    back = Packet(family=4, iifname="eth0", oifname="wg0", ct_state="established")
    assert Ruleset(data).evaluate(back, ("forward",))[0].verdict == "drop"


def test_port_rules_certain_conditional_and_unrelated():
    data = {"nftables": [
        _chain("inet", "host", "input", "input"),
        _rule("inet", "host", "input", 2, _match(CT_STATE, "invalid", "in"), {"drop": None}),
        _rule("inet", "host", "input", 3, _match({"payload": {"protocol": "tcp", "field": "dport"}}, 51820),
              {"drop": None}),
        _rule("inet", "host", "input", 4, _match(SADDR, {"prefix": {"addr": "203.0.113.0", "len": 24}}),
              _match(UDP_DPORT, {"set": [53, {"range": [51000, 52000]}]}), {"drop": None}),
        _rule("inet", "host", "input", 5, _match(UDP_DPORT, 51820), {"counter": {}}, {"reject": None}),
    ]}
    packet = Packet(family=4, l4proto="udp", dport=51820)
    [verdict] = Ruleset(data).evaluate(packet, ("input",))
    assert verdict.verdict == "drop" and verdict.finding is not None and verdict.finding.handle == 5
    assert [f.handle for f in verdict.conditional] == [4]  # only for 203.0.113.0/24
    other_port = Packet(family=4, l4proto="udp", dport=50000)
    assert Ruleset(data).evaluate(other_port, ("input",))[0].verdict == "pass"
    six = Packet(family=6, l4proto="udp", dport=51820)
    assert Ruleset(data).evaluate(six, ("input",))[0].verdict == "drop"  # inet covers IPv6 too


def test_policy_drop_with_a_conditional_accept_is_only_maybe():
    data = {"nftables": [
        _chain("ip", "fw", "in", "input", "drop"),
        _rule("ip", "fw", "in", 2, _match(IIF, "eth0"), _match(UDP_DPORT, 51820), {"accept": None}),
    ]}
    [verdict] = Ruleset(data).evaluate(Packet(family=4, l4proto="udp", dport=51820), ("input",))
    assert verdict.verdict == "maybe" and verdict.accepted_by == 'meta iifname "eth0" udp dport 51820 accept'


def test_goto_and_skipped_tables():
    data = {"nftables": [
        _chain("inet", "a", "input", "input"),
        _chain("inet", "a", "sub"),
        _chain("inet", "bulwark_wg0", "input", "input", "drop"),
        _rule("inet", "a", "input", 1, {"goto": {"target": "sub"}}),
        _rule("inet", "a", "input", 2, {"drop": None}),  # never reached: goto does not come back
        _rule("inet", "a", "sub", 3, _match(UDP_DPORT, 1), {"drop": None}),
    ]}
    packet = Packet(family=4, l4proto="udp", dport=51820)
    verdicts = Ruleset(data).evaluate(packet, ("input",), skip_tables=frozenset({"bulwark_wg0"}))
    assert [(v.table, v.verdict) for v in verdicts] == [("a", "pass")]


def test_iptables_conntrack_matches_are_read_from_iptables_rules():
    xt = {"xt": {"type": "match", "name": "conntrack"}}
    data = {"nftables": [
        _chain("ip", "filter", "FORWARD", "forward", "drop"),
        _rule("ip", "filter", "FORWARD", 3, _match(IIF, "wg0"), {"accept": None}),
        _rule("ip", "filter", "FORWARD", 4, _match(OIF, "wg0"), xt, {"accept": None}),
    ]}
    lines = ["-A FORWARD -i wg0 -j ACCEPT", "-A FORWARD -o wg0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    back = Packet(family=4, iifname="eth0", oifname="wg0", ct_state="established")
    assert Ruleset(data).evaluate(back, ("forward",))[0].verdict == "maybe"  # opaque until resolved
    resolve_conntrack_matches(data, lambda family, table, chain: lines)
    assert Ruleset(data).evaluate(back, ("forward",))[0].verdict == "accept"
    new = Packet(family=4, iifname="eth0", oifname="wg0", ct_state="new")
    assert Ruleset(data).evaluate(new, ("forward",))[0].verdict == "drop"
    assert describe(data["nftables"][2]["rule"]["expr"]) == 'meta oifname "wg0" ct state related,established accept'


# -- the handshake messages -------------------------------------------------------------------------------


def _hash(*parts):
    return hashlib.blake2s(b"".join(parts)).digest()


def _hmac(key, data):
    return hmac.new(key, data, hashlib.blake2s).digest()


def _kdf(key, data, n):
    prk, out, prev = _hmac(key, data), [], b""
    for i in range(1, n + 1):
        prev = _hmac(prk, prev + bytes([i]))
        out.append(prev)
    return out


def _raw(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _aead(key, plain, auth, decrypt=False):
    box = ChaCha20Poly1305(key)
    return (box.decrypt if decrypt else box.encrypt)(bytes(12), plain, auth)


def _respond(message: bytes, server: PrivateKey, psk: bytes) -> tuple[bytes, bytes, bytes]:
    """A WireGuard responder written from the protocol description: (response, initiator static, timestamp)."""
    static = X25519PrivateKey.from_private_bytes(server.raw)
    spub = _raw(static)
    assert hmac.compare_digest(hashlib.blake2s(message[:116], digest_size=16,
                                               key=_hash(b"mac1----", spub)).digest(), message[116:132])
    sender = struct.unpack_from("<I", message, 4)[0]
    e_i = message[8:40]
    ck = _hash(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")
    h = _hash(_hash(ck, b"WireGuard v1 zx2c4 Jason@zx2c4.com"), spub)
    ck = _kdf(ck, e_i, 1)[0]
    h = _hash(h, e_i)
    ck, k = _kdf(ck, static.exchange(X25519PublicKey.from_public_bytes(e_i)), 2)
    s_i = _aead(k, message[40:88], h, decrypt=True)
    h = _hash(h, message[40:88])
    ck, k = _kdf(ck, static.exchange(X25519PublicKey.from_public_bytes(s_i)), 2)
    stamp = _aead(k, message[88:116], h, decrypt=True)
    h = _hash(h, message[88:116])
    eph = X25519PrivateKey.generate()
    e_r = _raw(eph)
    ck = _kdf(ck, e_r, 1)[0]
    h = _hash(h, e_r)
    ck = _kdf(ck, eph.exchange(X25519PublicKey.from_public_bytes(e_i)), 1)[0]
    ck = _kdf(ck, eph.exchange(X25519PublicKey.from_public_bytes(s_i)), 1)[0]
    ck, tau, k = _kdf(ck, psk, 3)
    h = _hash(h, tau)
    body = struct.pack("<B3xII", 2, 77, sender) + e_r + _aead(k, b"", h)
    mac1 = hashlib.blake2s(body, digest_size=16, key=_hash(b"mac1----", s_i)).digest()
    return body + mac1 + bytes(16), s_i, stamp


def test_initiation_is_what_a_responder_expects_and_the_response_verifies():
    client, server, psk = PrivateKey.generate(), PrivateKey.generate(), PresharedKey.generate()
    before = handshake.tai64n()
    message, state = handshake.initiation(client, server.public_key(), psk, sender_index=1234)
    assert len(message) == handshake.INITIATION_SIZE and message[:4] == b"\x01\x00\x00\x00"
    assert struct.unpack_from("<I", message, 4)[0] == 1234 and message[132:] == bytes(16)
    response, static, stamp = _respond(message, server, psk.raw)
    assert static == client.public_key().raw
    assert before <= stamp <= handshake.tai64n()  # TAI64N sorts like time: the server's replay check
    session = handshake.consume_response(state, response)
    assert session.receiver_index == 77
    keepalive = handshake.keepalive(session)
    assert len(keepalive) == 32 and keepalive[:4] == b"\x04\x00\x00\x00"


def test_a_response_with_another_psk_or_for_another_key_does_not_verify():
    client, server = PrivateKey.generate(), PrivateKey.generate()
    message, state = handshake.initiation(client, server.public_key(), PresharedKey.generate())
    response, _, _ = _respond(message, server, PresharedKey.generate().raw)
    with pytest.raises(handshake.ResponseError) as error:
        handshake.consume_response(state, response)
    assert error.value.reason == "decrypt"
    message, state = handshake.initiation(client, server.public_key(), None)
    response, _, _ = _respond(message, server, bytes(32))
    tampered = response[:60] + bytes(16) + response[76:]
    with pytest.raises(handshake.ResponseError) as error:
        handshake.consume_response(state, tampered)
    assert error.value.reason == "mac1"
    assert handshake.consume_response(state, response).receiver_index == 77


# -- handshake classification -----------------------------------------------------------------------------


def _dump_line(peer: DevicePeer) -> str:
    """A peer as `wg show dump` prints it."""
    allowed = ",".join(sorted(str(n) for n in peer.allowed_ips)) or "(none)"
    return "\t".join([str(peer.public_key), "(none)", peer.endpoint or "(none)", allowed,
                      str(peer.latest_handshake), str(peer.rx_bytes), str(peer.tx_bytes),
                      str(peer.keepalive or "off")])


def _context(peers: list[Peer], live: list[DevicePeer], now: float) -> ServerContext:
    host = HostFacts(Runner())
    host._values["links"] = {"wg0": {"ifname": "wg0", "flags": ["UP"], "mtu": 1420}}
    dump = "\n".join([f"{PrivateKey.generate().to_base64()}\t(none)\t51820\toff", *map(_dump_line, live)]) + "\n"
    host._values[("device", "wg0")] = LiveDevice.of(dump)
    view = StoreView(Settings(), [], PrivateKey.generate(), 1, rows=[row_of(p) for p in peers])
    state = RuntimeState("wg0", "/etc/bulwark", 1, "userspace", "eth0", {}, True, True)
    return ServerContext(Path("/etc/bulwark"), "wg0", view, state, host, now)


def test_handshake_classification_never_unfinished_stale_and_ok():
    now = time.time()
    keys = [PrivateKey.generate().public_key() for _ in range(4)]
    peers = [Peer(name, key, ipaddress.ip_address(f"10.13.13.{i + 2}"))
             for i, (name, key) in enumerate(zip(["ann", "bob", "cid", "dot"], keys, strict=True))]
    live = [
        DevicePeer(keys[0], None, None, frozenset(), None, 0, 0, 0),  # nothing ever arrived
        DevicePeer(keys[1], None, "198.51.100.7:4000", frozenset(), None, 0, 296, 184),  # initiations, no session
        DevicePeer(keys[2], None, "198.51.100.8:4000", frozenset(), None, int(now - 720), 10, 10),  # 12 min ago
        DevicePeer(keys[3], None, "198.51.100.9:4000", frozenset(), None, int(now - 30), 10, 10),
    ]
    result = check_handshakes(_context(peers, live, now))
    assert result.status == Status.WARN
    assert "received but never completed: bob (from 198.51.100.7:4000)" in result.evidence
    assert "PresharedKey does not match" in result.evidence
    assert "never completed a handshake: ann:" in result.evidence
    assert "older than 3 min: cid (12 min ago)" in result.evidence and "dot" not in result.evidence
    healthy = check_handshakes(_context(peers[3:], live[3:], now))
    assert healthy.status == Status.OK and healthy.evidence.startswith("1 enabled peer, all with a handshake")


# -- output -----------------------------------------------------------------------------------------------


def test_text_and_json_output():
    results = [
        CheckResult("forwarding", Status.FAIL, "net.ipv4.ip_forward = 0", "sysctl -w net.ipv4.ip_forward=1",
                    Remedy("forwarding", {"ipv4": True})),
        CheckResult("mtu", Status.WARN, "too big", "bulwark init --mtu 1320"),
        CheckResult("dns", Status.SKIP, "not checked"),
        CheckResult("store", Status.OK, "fine"),
    ]
    text = render_results(results)
    assert text.splitlines() == [
        "fail  forwarding       net.ipv4.ip_forward = 0",
        "                       fix: sysctl -w net.ipv4.ip_forward=1  (bulwark doctor --fix can apply this)",
        "warn  mtu              too big",
        "                       fix: bulwark init --mtu 1320",
        "skip  dns              not checked",
        "ok    store            fine",
        "summary: 1 fail, 1 warn, 1 ok, 1 skip",
    ]
    assert results_json(results)[0] == {"name": "forwarding", "status": "fail", "evidence": "net.ipv4.ip_forward = 0",
                                        "fix": "sysctl -w net.ipv4.ip_forward=1", "fixable": True}
    assert [r["fixable"] for r in results_json(results)] == [True, False, False, False]
    assert render_plan(results[:1]) == "bulwark doctor will fix 1 problem:\n  forwarding: sysctl -w " \
                                       "net.ipv4.ip_forward=1\n"
