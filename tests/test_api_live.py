"""The API for real, with the gateway in namespaces: a peer created over the API handshakes and pings from a wg-quick
client, the API is reachable through the tunnel and not from outside, an expired peer's tunnel stops, metrics
count the traffic, and sign-in throttling holds across two `bulwark serve` processes on one store."""

from __future__ import annotations

import json
import re
import sqlite3
import time

from tests.gwlab import SERVER_WAN, Lab
from tests.helpers import BULWARK, clean_env
from tests.netns import Netns

PASSWORD = "correct horse battery staple"

HTTP = """
import json, sys, urllib.request, urllib.error
method, url, token, body = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
data = body.encode() if body else None
request = urllib.request.Request(url, data=data, method=method)
if token:
    request.add_header("Authorization", "Bearer " + token)
if data:
    request.add_header("Content-Type", "application/json")
try:
    with urllib.request.urlopen(request, timeout=5) as answer:
        print(answer.status); sys.stdout.write(answer.read().decode())
except urllib.error.HTTPError as error:
    print(error.code); sys.stdout.write(error.read().decode())
except OSError as error:
    print(0); sys.stdout.write(str(error))
"""


def call(ns: Netns, method: str, url: str, token: str = "", body: object = None) -> tuple[int, str]:
    """One HTTP request made from inside a namespace (the token goes to the child through argv of a test helper,
    never of Bulwark)."""
    result = ns.run([*BULWARK[:1], "-c", HTTP, method, url, token, json.dumps(body) if body is not None else ""],
                    check=False, timeout=20)
    status, _, text = result.stdout.decode().partition("\n")
    return int(status or 0), text


def _admin_token(lab: Lab) -> str:
    lab.bulwark_input("user", "add", "boss", "--admin", "--password-stdin", text=PASSWORD + "\n")
    return lab.bulwark("token", "create", "--name", "t", "--scope", "admin", "--user", "boss").stdout.strip()


def _serve_lab(lab: Lab) -> str:
    lab.init("--peers", "alice", "--serve")
    token = _admin_token(lab)
    lab.up()
    lab.wait_for(lambda: call(lab.server, "GET", "http://127.0.0.1:8080/api/v1/health")[0] == 200, 10)
    return token


def test_a_peer_made_over_the_api_connects_and_the_api_is_reachable_through_the_tunnel_only(lab: Lab) -> None:
    token = _serve_lab(lab)
    status, body = call(lab.server, "POST", "http://127.0.0.1:8080/api/v1/peers", token, {"names": ["bob"]})
    assert status == 201, body
    status, config = call(lab.server, "GET", "http://127.0.0.1:8080/api/v1/peers/bob/config", token)
    assert status == 200 and config.startswith("[Interface]")
    config = "\n".join(line for line in config.splitlines() if not line.startswith("DNS")) + "\n"
    client = lab.add_client()
    lab.factory.wg_quick_up(client, re.sub(r"(?m)^AllowedIPs = .*$", "AllowedIPs = 10.13.13.0/24", config))
    assert client.ping("10.13.13.1", count=3)
    # Through the tunnel the API answers (the firewall opens its port to peers when it is served) ...
    assert call(client, "GET", "http://10.13.13.1:8080/api/v1/health")[0] == 200
    # ... from outside it does not: not listening on the public address, and the tunnel address is not routed.
    outsider = lab.add_client()
    assert call(outsider, "GET", f"http://{SERVER_WAN}:8080/api/v1/health")[0] == 0
    # The peer is online in the status and the metrics count its traffic (from the host's loopback, no token).
    status, body = call(lab.server, "GET", "http://127.0.0.1:8080/api/v1/status", token)
    bob = next(p for p in json.loads(body)["peers"] if p["name"] == "bob")
    assert bob["online"] and bob["rx_bytes"] > 0
    status, metrics = call(lab.server, "GET", "http://127.0.0.1:8080/metrics")
    assert status == 200
    received = re.search(r'bulwark_peer_received_bytes_total\{interface="[^"]+",peer="bob",public_key="[^"]+"\} '
                         r'([0-9.e+]+)', metrics)
    assert received is not None and float(received.group(1)) > 0, metrics[:2000]
    lab.bulwark("down")


def test_an_expired_peers_tunnel_stops(lab: Lab) -> None:
    token = _serve_lab(lab)
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4))
    status, body = call(lab.server, "PATCH", "http://127.0.0.1:8080/api/v1/peers/alice", token, {"expires": soon})
    assert status == 200 and json.loads(body)["expires"] == soon, body
    assert client.ping("10.13.13.1")  # not yet
    lab.wait_for(lambda: not client.ping("10.13.13.1", timeout=1), 15)
    listed = json.loads(lab.bulwark("peer", "list", "--json").stdout)["peers"]
    assert listed[0]["expired"] is True
    assert "expired" in lab.bulwark("peer", "list").stdout
    # `status` says so too, in text, in JSON and over the API.
    shown = json.loads(lab.bulwark("status", "--json").stdout)["peers"]
    assert [(p["name"], p["expired"], p["online"]) for p in shown] == [("alice", True, False)]
    assert "expired" in lab.bulwark("status").stdout
    status, body = call(lab.server, "GET", "http://127.0.0.1:8080/api/v1/status", token)
    assert status == 200 and [p["expired"] for p in json.loads(body)["peers"]] == [True], body
    lab.bulwark("down")


def test_sign_in_throttling_holds_across_two_serve_processes_on_one_store(lab: Lab) -> None:
    lab.init("--peers", "alice")
    _admin_token(lab)
    servers = [lab.server.popen([*BULWARK, "serve", "--config-dir", str(lab.config), "--listen", f"127.0.0.1:{port}"],
                                env=clean_env()) for port in (18081, 18082)]
    try:
        for port in (18081, 18082):
            lab.wait_for(lambda port=port: call(lab.server, "GET", f"http://127.0.0.1:{port}/api/v1/health")[0] == 200,
                         15)
        wrong = {"user": "boss", "password": "not the password at all"}
        for port in (18081, 18082, 18081, 18082, 18081):
            assert call(lab.server, "POST", f"http://127.0.0.1:{port}/api/v1/session", "", wrong)[0] == 401
        right = {"user": "boss", "password": PASSWORD}
        status, body = call(lab.server, "POST", "http://127.0.0.1:18082/api/v1/session", "", right)
        assert status == 429 and json.loads(body)["error"]["code"] == "throttled", body
        with sqlite3.connect(lab.config / "bulwark.db") as db:
            assert db.execute("SELECT COUNT(*) FROM auth_failures WHERE scope='user' AND key='boss'").fetchone()[0] == 5
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
