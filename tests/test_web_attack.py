"""What attacking the HTTP API and the web pages found: each test failed before its fix.

- Behind a trusted proxy that adds its own X-Forwarded-For line after the client's (HAProxy's `option
  forwardfor`), the client's forged first line was taken as its address: throttling and the audit log believed it.
- A sign-in attempt's user name, as typed by anyone, went raw into the audit log: `bulwark audit` printed its line
  breaks (a forged entry) and terminal escape sequences.
- A person for whom 2FA is required, signed in with the password alone (only enrolment allowed), could create an
  API token (POST /tokens is a "session" route), and tokens work whatever the owner's 2FA.
- Sign-in throttling counted only the failures of the last minute: a guesser who waited out each delay got about
  five guesses a minute for ever (the delay never passed 40 s, never reached the documented 15 min); and the
  throttle was checked before the slow password check but counted after it, so a burst of parallel attempts all
  passed it (16 of 16 here; 42 of 60 against a live `bulwark serve`).
- A JSON field name the client made up (extra fields are refused) was echoed raw and whole in the error message:
  line breaks, escapes, 5000 characters.
- A chunked body over 64 KiB (no Content-Length) was cut off but answered 422 "not valid JSON", not 413; and a 413
  had none of the security headers (no Cache-Control: no-store, no CSP).
- /metrics answers this host's loopback without a token; a reverse proxy on the same host (named with
  `--trusted-proxy 127.0.0.1` as the docs say, or not) connects from the loopback for every client: anyone on the
  internet read every peer's name, public key, traffic and online state through it.
- A token with only the read scope could revoke its owner's other tokens (DELETE /tokens/{id} asked for "read").
- Connections that sent half a request (or a request slowly) were kept for as long as they stayed open: 256 of
  them made the server answer 503 to everyone.
- An unexpected error (500) was answered outside the middleware stack: without the security headers and without
  `Cache-Control: no-store`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bulwark_vpn import service
from bulwark_vpn.web.app import WebConfig, create_app
from tests.helpers import TEST_RUN_DIR
from tests.test_api import PASSWORD, Gateway


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Gateway(tmp_path_factory.mktemp("template")).config


@pytest.fixture
def gw(tmp_path: Path, _template: Path) -> Gateway:
    return Gateway(tmp_path, _template)


def _behind_proxy(gw: Gateway, proxy: str = "10.9.9.9") -> TestClient:
    app = create_app(lambda: service.Context(gw.config, run_dir=TEST_RUN_DIR),
                     WebConfig(trusted_proxies=(ipaddress.ip_network("10.9.9.0/24"),)))
    return TestClient(app, base_url="http://testserver", client=(proxy, 40000))


def _last_login_address(gw: Gateway) -> str:
    boss, _ = gw.signed_in("boss")
    entries = boss.get("/api/v1/audit", params={"user": "boss"}).json()["entries"]
    logins = [e for e in entries if e["operation"] == "auth.login" and e["address"] != "testclient"]
    return str(logins[0]["address"])


def test_a_forged_forwarded_for_line_before_the_proxys_own_is_not_the_client(gw: Gateway) -> None:
    client = _behind_proxy(gw)
    headers = [("x-forwarded-for", "203.0.113.66"), ("x-forwarded-for", "198.51.100.7"),
               ("x-forwarded-proto", "https"), ("x-forwarded-proto", "http")]
    answer = client.post("/api/v1/session", json={"user": "boss", "password": PASSWORD}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert _last_login_address(gw) == "198.51.100.7"
    assert "Secure" not in answer.headers["set-cookie"]  # the proxy said http, after the client's claim
    # One line, as most proxies write it, still works; without a trusted proxy the headers are ignored.
    client.post("/api/v1/session", json={"user": "boss", "password": PASSWORD},
                headers={"x-forwarded-for": "203.0.113.66, 198.51.100.8"})
    assert _last_login_address(gw) == "198.51.100.8"
    direct = TestClient(gw.app, client=("192.0.2.10", 40000))
    answer = direct.post("/api/v1/session", json={"user": "boss", "password": PASSWORD},
                         headers={"x-forwarded-for": "198.51.100.9", "x-forwarded-proto": "https"})
    assert "Secure" not in answer.headers["set-cookie"]
    assert _last_login_address(gw) == "192.0.2.10"


def test_a_read_only_token_cannot_revoke_tokens(gw: Gateway) -> None:
    import time

    from bulwark_vpn.service import auth

    deploy = auth.create_token(gw.ctx, auth.CreateTokenRequest.parse("deploy", scopes="peers:write",
                                                                     now=time.time(), owner="alice"))
    monitor = gw.token("read", user="alice")
    client = gw.client()
    answer = client.delete(f"/api/v1/tokens/{deploy.info.id}", headers=monitor)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "forbidden"
    assert not [t for t in auth.list_tokens(gw.ctx).tokens if t.id == deploy.info.id][0].revoked
    # A signed-in person and a token that may change things still revoke.
    writer = gw.token("peers:write", user="alice")
    assert client.delete(f"/api/v1/tokens/{deploy.info.id}", headers=writer).status_code == 200
    alice, csrf = gw.signed_in("alice")
    assert alice.delete(f"/api/v1/tokens/{deploy.info.id}", headers=csrf).status_code == 200


def test_an_anonymous_sign_in_cannot_write_lines_or_escapes_into_the_audit_log(gw: Gateway) -> None:
    from click.testing import CliRunner

    from bulwark_vpn.cli import cli

    forged = "x: ok\n2026-01-01T00:00:00Z cli:root user.remove boss\x1b]0;owned\x07"
    gw.client().post("/api/v1/session", json={"user": forged, "password": "wrong password!!"})
    boss, _ = gw.signed_in("boss")
    targets = [e["target"] for e in boss.get("/api/v1/audit").json()["entries"] if e["operation"] == "auth.login"]
    assert not any("\n" in (t or "") or "\x1b" in (t or "") for t in targets), targets
    # A row an older version wrote with the name as typed is printed on one line too.
    from bulwark_vpn.store import open_store
    from bulwark_vpn.store.records import AuditRecord

    with open_store(gw.config) as store:
        store.add_audit(AuditRecord(0, 1.0, "user:-", "api", None, "auth.login", forged, "unauthenticated", None), 90)
    shown = CliRunner().invoke(cli, ["audit", "--config-dir", str(gw.config)])
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\x07" not in shown.output
    assert not any(line.startswith("2026-01-01T00:00:00Z") for line in shown.output.splitlines())


def test_an_account_that_must_set_up_2fa_cannot_mint_a_token_to_skip_it(gw: Gateway) -> None:
    boss, csrf = gw.signed_in("boss")
    assert boss.patch("/api/v1/users/alice", json={"require_2fa": True}, headers=csrf).status_code == 200
    alice, alice_csrf = gw.signed_in("alice")
    assert alice.get("/api/v1/session").json()["enrol_required"] is True
    answer = alice.post("/api/v1/tokens", json={"name": "skip", "scopes": ["peers:write"]}, headers=alice_csrf)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "forbidden"
    assert boss.get("/api/v1/tokens").json()["total"] == 0
    # The admin's own tokens, and tokens an admin makes for a bot, are not concerned.
    assert boss.post("/api/v1/tokens", json={"name": "ci", "scopes": ["read"]}, headers=csrf).status_code == 201


def _guesses(ctx, user: str, address: str, seconds: float, clock: list[float]) -> int:
    """A patient attacker: guess, and when throttled, wait exactly as long as told; the guesses that reached the
    password check within `seconds` of simulated time."""
    from bulwark_vpn.errors import AuthError, ErrorCode
    from bulwark_vpn.service import auth

    start, checked = clock[0], 0
    while clock[0] - start < seconds:
        try:
            auth.sign_in(ctx, user, f"wrong guess {checked:05d}", address)
        except AuthError as exc:
            if exc.code == ErrorCode.THROTTLED:
                clock[0] += float("".join(c for c in exc.hint or "" if c.isdigit()))
                continue
            checked += 1
        clock[0] += 0.5
    return checked


@pytest.mark.slow  # dozens of argon2id checks: about 3 s
def test_a_patient_password_guesser_is_slowed_down_to_the_maximum_delay(gw: Gateway) -> None:
    from dataclasses import replace

    clock = [1_800_000_000.0]
    ctx = replace(gw.ctx, clock=lambda: clock[0])
    first_hour = _guesses(ctx, "alice", "203.0.113.5", 3600, clock)
    # 5 free, then 5 s, 10 s, ... 640 s, then one per 15 minutes: never a steady 5 a minute (300 an hour).
    assert first_hour <= 16, first_hour
    next_hours = _guesses(ctx, "alice", "203.0.113.6", 3 * 3600, clock)  # another address changes nothing
    assert next_hours <= 3 * 4 + 1, next_hours
    # The owner's own success (once the wait is over) clears the account's count.
    clock[0] += 900
    from bulwark_vpn.errors import AuthError, ErrorCode
    from bulwark_vpn.service import auth

    auth.sign_in(ctx, "alice", PASSWORD, "198.51.100.1")
    with pytest.raises(AuthError) as refused:
        auth.sign_in(ctx, "alice", "a typo in it!", "198.51.100.1")
    assert refused.value.code == ErrorCode.UNAUTHENTICATED


def test_concurrent_guesses_cannot_all_pass_the_throttle_at_once(gw: Gateway) -> None:
    import threading

    from bulwark_vpn.errors import AuthError, ErrorCode
    from bulwark_vpn.service import auth

    barrier = threading.Barrier(16)
    results: list[str] = []

    def guess(i: int) -> None:
        barrier.wait()
        try:
            auth.sign_in(gw.ctx, "alice", f"parallel guess {i:03d}", "203.0.113.7")
        except AuthError as exc:
            results.append("throttled" if exc.code == ErrorCode.THROTTLED else "checked")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("checked") <= 5, results


def test_an_unknown_field_name_is_shown_escaped_in_the_one_line_error(gw: Gateway) -> None:
    boss, csrf = gw.signed_in("boss")
    answer = boss.post("/api/v1/peers", json={"names": ["ok"], "x\nFAKE\u2028\x1b[2J" + "y" * 5000: 1},
                       headers=csrf)
    assert answer.status_code == 422, answer.text
    message = answer.json()["error"]["message"]
    assert not any(c in message for c in "\n\u2028\x1b"), message
    assert len(message) < 200


def test_a_chunked_body_over_the_limit_is_too_large_with_the_security_headers(gw: Gateway) -> None:
    boss, csrf = gw.signed_in("boss")

    def chunks():
        yield b'{"names": ["' + b"a" * 8192
        for _ in range(10):
            yield b"a" * 8192
        yield b'"]}'

    for answer in (boss.post("/api/v1/peers", content=chunks(), headers={**csrf, "content-type": "application/json"}),
                   boss.post("/api/v1/peers", content=b"{" * 70000,
                             headers={**csrf, "content-type": "application/json"})):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "too_large"
        assert answer.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_metrics_through_a_reverse_proxy_on_the_loopback_are_not_the_loopbacks(gw: Gateway) -> None:
    app = create_app(lambda: service.Context(gw.config, run_dir=TEST_RUN_DIR),
                     WebConfig(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)))
    proxy = TestClient(app, base_url="http://testserver", client=("127.0.0.1", 40000))
    answer = proxy.get("/metrics", headers={"x-forwarded-for": "203.0.113.50"})
    assert answer.status_code == 401, answer.text[:200]
    # A proxy on the loopback that was not named as trusted still says with its headers that it relays.
    unnamed = TestClient(gw.app, base_url="http://testserver", client=("127.0.0.1", 40000))
    assert unnamed.get("/metrics", headers={"x-real-ip": "203.0.113.50"}).status_code == 401
    # The host itself still reads them.
    assert proxy.get("/metrics").status_code == 200
    assert unnamed.get("/metrics").status_code == 200


@pytest.mark.slow
def test_connections_that_never_finish_a_request_are_closed_and_the_server_answers_again(gw: Gateway) -> None:
    import socket
    import time

    from bulwark_vpn.web.server import BackgroundServer, Listen, ServeOptions

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = BackgroundServer(gw.ctx, ServeOptions(listen=(Listen("127.0.0.1", port),)), request_timeout=3.0).start()
    slow: list[socket.socket] = []
    try:
        def health() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return conn.recv(100)

        deadline = time.monotonic() + 10
        while not health().startswith(b"HTTP/1.1 200"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # 300 connections: half a request head each, or a head and then a body that never ends.
        for index in range(300):
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            if index % 2:
                conn.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
            else:
                conn.sendall(b"POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 1000\r\n\r\n{")
            slow.append(conn)
        time.sleep(0.3)
        assert health().startswith(b"HTTP/1.1 503")  # every slot held
        # Dripping a byte now and then does not keep a connection: each is closed by the server.
        started = time.monotonic()
        for conn in slow:
            try:
                conn.sendall(b"X")
            except OSError:
                pass
        for conn in slow:
            try:
                while True:  # read to the end: the server closes it (after an error response, or none)
                    conn.settimeout(max(0.1, started + 8 - time.monotonic()))
                    if not conn.recv(1000):
                        break
            except TimeoutError:
                raise AssertionError("a connection that never finished its request is still open") from None
            except ConnectionResetError:
                pass  # closed with our unread byte still queued: a reset, closed all the same
        assert health().startswith(b"HTTP/1.1 200")
    finally:
        for conn in slow:
            conn.close()
        server.stop()


def test_an_unexpected_error_is_the_one_json_shape_with_the_security_headers(gw: Gateway, caplog) -> None:
    """A 500 is answered outside the app's middleware: it carried no security header and no Cache-Control."""
    from fastapi.testclient import TestClient

    from bulwark_vpn.web.app import SECURITY_HEADERS

    @gw.app.get("/api/v1/test-only-failure")
    def failure() -> None:
        raise RuntimeError("the details stay in the log: /secret/path")

    answer = TestClient(gw.app, raise_server_exceptions=False).get("/api/v1/test-only-failure")
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal" and "/secret/path" not in answer.text
    assert {k: answer.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS
    assert answer.headers["cache-control"] == "no-store"
    assert "/secret/path" in caplog.text
