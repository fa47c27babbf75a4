"""Restarts that no client notices: `bulwark down` + `bulwark up`, and a fresh `up` after the supervisor was killed.

The new device knows where the client was (the store keeps each active peer's endpoint) and sends it a packet at
once, which starts the handshake from the server's side: the client's pings get answers again within a second or
so of `up` returning, without the client doing anything (on its own it would wait about 15 s before it
re-handshakes)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

from bulwark_vpn.dataplane.gateway import pid_alive
from bulwark_vpn.store import open_store
from tests.gwlab import RUN_DIR, Lab

SERVER = "10.13.13.1"


def _alice_key(lab: Lab) -> str:
    return json.loads(lab.bulwark("peer", "list", "--json").stdout)["peers"][0]["public_key"]


def _endpoint_saved(lab: Lab, key: str) -> bool:
    with open_store(lab.config, read_only=True) as store:
        return key in store.endpoints()


def _pinger(client) -> subprocess.Popen[bytes]:
    """Pings every 20 ms with the time of each reply (-D), until killed."""
    return client.popen(["ping", "-n", "-D", "-i", "0.02", "-W", "1", SERVER], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL)


def _replies(pinger: subprocess.Popen[bytes]) -> list[float]:
    pinger.send_signal(signal.SIGINT)
    out = pinger.communicate(timeout=10)[0].decode()
    return [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", out, re.M)]


def _connected(lab: Lab):
    lab.init("--peers", "alice,bob")
    lab.up()
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping(SERVER)
    key = _alice_key(lab)
    # The supervisor notes where active peers are at each read of the device (every 2 s on a small gateway).
    lab.wait_for(lambda: _endpoint_saved(lab, key), 10)
    return client


def _first_reply_after(replies: list[float], moment: float) -> float:
    later = [r for r in replies if r > moment]
    assert later, "no reply at all after up returned"
    return later[0] - moment


def _assert_resumed_within_2_s(pinger, returned: float) -> None:
    """The client's pings are answered again at most 2 s after `up` returned (3 s of pings are looked at)."""
    time.sleep(3)
    resumed = _first_reply_after(_replies(pinger), returned)
    print(f"first reply {resumed:.2f} s after up returned")
    assert resumed <= 2.0


def test_down_and_up_resume_an_active_client_within_2_s(lab: Lab):
    client = _connected(lab)
    pinger = _pinger(client)
    time.sleep(0.5)
    lab.bulwark("down")
    time.sleep(1)  # down for a while: every ping of that time is lost
    lab.bulwark("up")
    returned = time.time()
    _assert_resumed_within_2_s(pinger, returned)
    assert "active before the restart" in (RUN_DIR / f"{lab.iface}.log").read_text()


def test_up_after_the_supervisor_was_killed_resumes_an_active_client_within_2_s(lab: Lab):
    client = _connected(lab)
    pid = json.loads((RUN_DIR / f"{lab.iface}.json").read_text())["pid"]
    pinger = _pinger(client)
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    lab.wait_for(lambda: not pid_alive(pid), 5)
    up = lab.bulwark("up")  # no `down` first: up replaces what the dead supervisor left
    returned = time.time()
    assert "is gone; replacing the gateway it left" in up.stderr
    _assert_resumed_within_2_s(pinger, returned)
    state = json.loads((RUN_DIR / f"{lab.iface}.json").read_text())
    assert state["pid"] != pid and pid_alive(state["pid"])


def test_up_after_a_reboot_resumes_an_active_client_within_2_s(lab: Lab):
    """A host reboot (or a new container on the same /config volume): the supervisor, the device, the firewall
    and /run are all gone at once; only the store remains, with where the client was last seen."""
    client = _connected(lab)
    pid = json.loads((RUN_DIR / f"{lab.iface}.json").read_text())["pid"]
    pinger = _pinger(client)
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    lab.wait_for(lambda: not pid_alive(pid), 5)
    lab.server.run(["ip", "link", "del", lab.iface], check=False)
    lab.server.run(["nft", "delete", "table", "inet", f"bulwark_{lab.iface}"], check=False)
    for suffix in (".json", ".log"):
        (RUN_DIR / f"{lab.iface}{suffix}").unlink(missing_ok=True)
    lab.bulwark("up")
    returned = time.time()
    _assert_resumed_within_2_s(pinger, returned)
