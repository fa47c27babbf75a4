"""The HTTP API in-process (the ASGI app over httpx): who may call what, sessions, CSRF, 2FA, tokens, throttling,
share and setup links, the error shape, and that no secret reaches a log line."""

from __future__ import annotations

import logging
import re
import shutil
import time
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient

from bulwark_vpn import service
from bulwark_vpn.service import accounts
from bulwark_vpn.store import open_store
from bulwark_vpn.web.access import RULES, app_routes
from bulwark_vpn.web.app import create_app
from tests.helpers import TEST_RUN_DIR

PASSWORD = "correct horse battery staple 7"
OTHER = "another long passphrase 42"


class Gateway:
    """A provisioned folder, its app, and helpers to sign in as its users."""

    def __init__(self, root: Path, template: Path | None = None) -> None:
        self.config = root / "c"
        self.ctx = service.Context(self.config, run_dir=TEST_RUN_DIR)
        if template is not None:  # a copy of a folder made as below (three password hashes cost seconds)
            shutil.copytree(template, self.config, symlinks=True)
        else:
            service.init_from_sources(self.ctx, flags={"server_url": "vpn.example.com"}, peers="shared")
            accounts.add_user(self.ctx, accounts.AddUserRequest.parse("boss", role="admin", password=PASSWORD))
            accounts.add_user(self.ctx, accounts.AddUserRequest.parse("alice", password=PASSWORD, peer_limit=3))
            accounts.add_user(self.ctx, accounts.AddUserRequest.parse("bob", password=OTHER))
        self.app = create_app(lambda: service.Context(self.config, run_dir=TEST_RUN_DIR))

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="http://testserver")

    def signed_in(self, user: str, password: str = PASSWORD) -> tuple[TestClient, dict[str, str]]:
        client = self.client()
        answer = client.post("/api/v1/session", json={"user": user, "password": password})
        assert answer.status_code == 200, answer.text
        return client, {"X-CSRF-Token": answer.json()["csrf"]}

    def token(self, scopes: str, user: str = "boss") -> dict[str, str]:
        from bulwark_vpn.service import auth

        request = auth.CreateTokenRequest.parse("t", scopes=scopes, now=time.time(), owner=user)
        made = auth.create_token(self.ctx, request)
        return {"Authorization": f"Bearer {made.token.reveal()}"}


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Gateway(tmp_path_factory.mktemp("template")).config


@pytest.fixture
def gw(tmp_path: Path, _template: Path) -> Gateway:
    return Gateway(tmp_path, _template)


def _is_error(answer, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "value", "hint"}
    assert body["error"]["code"] == code


def _concrete(path: str) -> str:
    return path.replace("{name}", "shared").replace("{share_id}", "1").replace("{token_id}", "1")


def test_every_route_states_who_may_call_it_and_refuses_strangers(gw: Gateway) -> None:
    routes = [r for r in app_routes(gw.app) if hasattr(r, "methods") and r.path not in ("/api/openapi.json",)]
    assert len(routes) > 30
    client = gw.client()
    for route in routes:
        rule = (route.openapi_extra or {}).get("x-bulwark-access")
        assert rule in RULES, f"{route.path} has no access rule"
        if rule == "anonymous" or (rule == "metrics"):
            continue
        for method in route.methods:
            answer = client.request(method, _concrete(route.path), json={})
            _is_error(answer, 401, "unauthenticated")
    # The metrics: anonymous only from this host's loopback (the test client is not loopback).
    _is_error(client.get("/metrics"), 401, "unauthenticated")
    document = client.get("/api/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert all("x-bulwark-access" in op for path in document["paths"].values() for op in path.values())


def test_a_token_does_what_its_scopes_allow_and_never_more_than_its_owner(gw: Gateway) -> None:
    client = gw.client()
    read = gw.token("read")
    assert client.get("/api/v1/peers", headers=read).json()["total"] == 1  # an admin's token reads everything
    _is_error(client.post("/api/v1/peers", json={"names": ["x"]}, headers=read), 403, "forbidden")
    _is_error(client.get("/api/v1/users", headers=read), 403, "forbidden")
    writer = gw.token("peers:write")
    assert client.post("/api/v1/peers", json={"names": ["x"]}, headers=writer).status_code == 201
    _is_error(client.get("/api/v1/audit", headers=writer), 403, "forbidden")
    admin = gw.token("admin")
    assert client.get("/api/v1/audit", headers=admin).status_code == 200
    # A user's token: their own peers only, and never admin (the scope is refused at creation).
    from bulwark_vpn.errors import InputError
    from bulwark_vpn.service import auth

    with pytest.raises(InputError, match="only an admin's token"):
        auth.create_token(gw.ctx, auth.CreateTokenRequest.parse("t", scopes="admin", now=time.time(), owner="alice"))
    users = gw.token("read,peers:write", user="alice")
    assert client.get("/api/v1/peers", headers=users).json()["total"] == 0
    _is_error(client.get("/api/v1/peers/shared", headers=users), 404, "not_found")
    # Tokens never need a CSRF token, and revoked or unknown ones are refused.
    from bulwark_vpn.service.auth import list_tokens, revoke_token

    revoke_token(gw.ctx, list_tokens(gw.ctx).tokens[0].id)
    _is_error(client.get("/api/v1/peers", headers=read), 401, "unauthenticated")
    _is_error(client.get("/api/v1/peers", headers={"Authorization": "Bearer bwk_nope"}), 401, "unauthenticated")
    _is_error(client.get("/api/v1/peers", headers={"Authorization": "Basic eDp5"}), 401, "unauthenticated")


def test_a_user_sees_and_changes_only_their_own_peers(gw: Gateway) -> None:
    alice, csrf = gw.signed_in("alice")
    assert alice.post("/api/v1/peers", json={"names": ["alice-phone"]}, headers=csrf).status_code == 201
    assert [p["name"] for p in alice.get("/api/v1/peers").json()["peers"]] == ["alice-phone"]
    assert alice.get("/api/v1/peers/alice-phone/config").text.startswith("[Interface]")
    bob, bob_csrf = gw.signed_in("bob", OTHER)
    missing = bob.get("/api/v1/peers/nosuchpeer").json()
    for path in ("/api/v1/peers/alice-phone", "/api/v1/peers/alice-phone/config", "/api/v1/peers/alice-phone/qr.svg",
                 "/api/v1/peers/shared"):
        answer = bob.get(path)
        _is_error(answer, 404, "not_found")
        assert answer.json()["error"]["message"].replace("alice-phone", "X").replace("shared", "X") == \
            missing["error"]["message"].replace("nosuchpeer", "X")
    _is_error(bob.delete("/api/v1/peers/alice-phone", headers=bob_csrf), 404, "not_found")
    _is_error(bob.post("/api/v1/peers/alice-phone/disable", headers=bob_csrf), 404, "not_found")
    _is_error(bob.get("/api/v1/users"), 403, "forbidden")
    # Alice's limit is 3 peers.
    answer = alice.post("/api/v1/peers", json={"names": ["a2", "a3", "a4"]}, headers=csrf)
    _is_error(answer, 409, "conflict")
    assert "peer limit" in answer.json()["error"]["message"]
    _is_error(alice.post("/api/v1/peers", json={"names": ["z"], "owner": "bob"}, headers=csrf), 422,
              "invalid_value")


def test_csrf_is_required_for_changes_made_with_a_session(gw: Gateway) -> None:
    boss, csrf = gw.signed_in("boss")
    _is_error(boss.post("/api/v1/peers", json={"names": ["x"]}), 403, "forbidden")
    _is_error(boss.post("/api/v1/peers", json={"names": ["x"]}, headers={"X-CSRF-Token": "wrong"}), 403,
              "forbidden")
    assert boss.post("/api/v1/peers", json={"names": ["x"]}, headers=csrf).status_code == 201
    assert boss.get("/api/v1/peers").status_code == 200  # reading needs none


def test_sessions_cookie_flags_rotation_sign_out_and_password_change(gw: Gateway) -> None:
    client = gw.client()
    first = client.post("/api/v1/session", json={"user": "boss", "password": PASSWORD})
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie  # plain HTTP here
    old = client.cookies.get("bulwark_session")
    client.post("/api/v1/session", json={"user": "boss", "password": PASSWORD})
    assert client.cookies.get("bulwark_session") != old  # a new id at each sign-in
    csrf = {"X-CSRF-Token": client.get("/api/v1/session").json()["csrf"]}
    assert client.delete("/api/v1/session", headers=csrf).status_code == 204
    stolen = gw.client()
    stolen.cookies.set("bulwark_session", old or "")
    _is_error(stolen.get("/api/v1/session"), 401, "unauthenticated")
    alice, csrf = gw.signed_in("alice")
    other, _ = gw.signed_in("alice")
    answer = alice.post("/api/v1/session/password", json={"old_password": PASSWORD, "new_password": OTHER + "x"},
                        headers=csrf)
    assert answer.status_code == 204
    _is_error(other.get("/api/v1/session"), 401, "unauthenticated")  # every session ended
    gw.signed_in("alice", OTHER + "x")
    https = TestClient(gw.app, base_url="https://testserver")
    assert "Secure" in https.post("/api/v1/session", json={"user": "boss", "password": PASSWORD}).headers[
        "set-cookie"]


def test_totp_enrolment_second_factor_recovery_codes_and_replay(gw: Gateway) -> None:
    client, csrf = gw.signed_in("alice")
    enrolment = client.post("/api/v1/session/totp/enrol", headers=csrf).json()
    assert enrolment["uri"].startswith("otpauth://totp/") and "<svg" in enrolment["qr_svg"]
    totp = pyotp.TOTP(enrolment["secret"])
    _is_error(client.post("/api/v1/session/totp/confirm", json={"code": "000000"}, headers=csrf), 422,
              "invalid_value")
    codes = client.post("/api/v1/session/totp/confirm", json={"code": totp.now()}, headers=csrf).json()
    assert len(codes["recovery_codes"]) == 10
    # Next sign-in: password, then the code; nothing else is allowed in between.
    fresh = gw.client()
    step1 = fresh.post("/api/v1/session", json={"user": "alice", "password": PASSWORD}).json()
    assert step1["mfa_required"] is True
    _is_error(fresh.get("/api/v1/peers"), 401, "unauthenticated")
    half_csrf = {"X-CSRF-Token": step1["csrf"]}
    code = totp.at(time.time() + 30)  # the next step: the one used at enrolment is never accepted again
    answer = fresh.post("/api/v1/session/totp", json={"code": code}, headers=half_csrf)
    assert answer.status_code == 200 and answer.json()["mfa_required"] is False
    assert fresh.get("/api/v1/peers").status_code == 200
    # The same code again is refused (replay); a recovery code works once.
    again = gw.client()
    step1 = again.post("/api/v1/session", json={"user": "alice", "password": PASSWORD}).json()
    _is_error(again.post("/api/v1/session/totp", json={"code": code}, headers={"X-CSRF-Token": step1["csrf"]}),
              401, "unauthenticated")
    ok = again.post("/api/v1/session/totp", json={"code": codes["recovery_codes"][0]},
                    headers={"X-CSRF-Token": step1["csrf"]})
    assert ok.status_code == 200
    third = gw.client()
    step1 = third.post("/api/v1/session", json={"user": "alice", "password": PASSWORD}).json()
    _is_error(third.post("/api/v1/session/totp", json={"code": codes["recovery_codes"][0]},
                         headers={"X-CSRF-Token": step1["csrf"]}), 401, "unauthenticated")
    # Tokens keep working whatever the owner's 2FA.
    token = gw.token("read", user="alice")
    assert gw.client().get("/api/v1/peers", headers=token).status_code == 200


def test_required_2fa_allows_only_enrolment_until_done(gw: Gateway) -> None:
    boss, csrf = gw.signed_in("boss")
    assert boss.patch("/api/v1/settings", json={"require_2fa": True}, headers=csrf).status_code == 200
    alice, alice_csrf = gw.signed_in("alice")
    assert alice.get("/api/v1/session").json()["enrol_required"] is True
    _is_error(alice.get("/api/v1/peers"), 403, "forbidden")
    secret = alice.post("/api/v1/session/totp/enrol", headers=alice_csrf).json()["secret"]
    alice.post("/api/v1/session/totp/confirm", json={"code": pyotp.TOTP(secret).now()}, headers=alice_csrf)
    assert alice.get("/api/v1/peers").status_code == 200


def test_login_throttling_holds_across_apps_on_one_store_and_logs_one_line(gw: Gateway, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="bulwark_vpn.auth")
    first, second = gw.client(), TestClient(create_app(lambda: service.Context(gw.config, run_dir=TEST_RUN_DIR)))
    for client in (first, second, first, second, first):
        _is_error(client.post("/api/v1/session", json={"user": "alice", "password": "wrong one!!!"}), 401,
                  "unauthenticated")
    answer = second.post("/api/v1/session", json={"user": "alice", "password": PASSWORD})
    _is_error(answer, 429, "throttled")
    assert int(answer.headers["Retry-After"]) >= 1
    lines = [r.getMessage() for r in caplog.records if "authentication failure" in r.getMessage()]
    assert len(lines) == 5
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ bulwark: authentication failure for user 'alice' "
                            r"from testclient", line) for line in lines), lines
    hostile = first.post("/api/v1/session", json={"user": "x\nFAKE LINE", "password": "y"})
    assert hostile.status_code in (401, 429)
    assert all("\n" not in r.getMessage() for r in caplog.records)


def test_share_links_work_once_expire_and_never_travel_in_a_path(gw: Gateway, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    boss, csrf = gw.signed_in("boss")
    made = boss.post("/api/v1/peers/shared/shares", json={"expires": "1h"}, headers=csrf).json()
    base, _, token = made["url"].partition("#")
    assert base.endswith("/share") and len(token) >= 43
    stranger = gw.client()
    first = stranger.post("/api/v1/share/redeem", json={"token": token})
    assert first.status_code == 200 and first.json()["text"].startswith("[Interface]") and "<svg" in first.json()[
        "qr_svg"]
    _is_error(stranger.post("/api/v1/share/redeem", json={"token": token}), 404, "not_found")
    revoked = boss.post("/api/v1/peers/shared/shares", json={}, headers=csrf).json()
    boss.delete(f"/api/v1/shares/{revoked['id']}", headers=csrf)
    _is_error(stranger.post("/api/v1/share/redeem", json={"token": revoked["url"].split("#")[1]}), 404,
              "not_found")
    assert all(token not in r.getMessage() for r in caplog.records)
    with open_store(gw.config) as store:
        assert token not in repr(store.shares())


def test_setup_links_let_a_new_user_choose_a_password_once(gw: Gateway) -> None:
    boss, csrf = gw.signed_in("boss")
    added = boss.post("/api/v1/users", json={"name": "carol"}, headers=csrf).json()
    token = added["setup"]["url"].split("#", 1)[1]
    client = gw.client()
    _is_error(client.post("/api/v1/setup", json={"token": token, "password": "password123"}), 422, "invalid_value")
    assert client.post("/api/v1/setup", json={"token": token, "password": PASSWORD}).status_code == 200
    _is_error(client.post("/api/v1/setup", json={"token": token, "password": PASSWORD}), 404, "not_found")
    gw.signed_in("carol")


def test_bad_bodies_are_one_json_error_and_change_nothing(gw: Gateway) -> None:
    from tests.helpers import snapshot

    boss, csrf = gw.signed_in("boss")
    before = snapshot(gw.config)
    cases = [
        ({"names": ["ok"], "allowed_ips": "10.0.0.0/8\n[Interface]"}, 422),
        ({"names": ["fe80::1%x"]}, 422),
        ({"names": ["ok"], "keepalive": True}, 422),
        ({"names": ["ok"], "expires": "yesterday"}, 422),
        ({"names": ["ok"], "public_key": "A" * 43 + "="}, 422),
        ({"names": []}, 422),
        ({"names": ["ok"], "unexpected": 1}, 422),
        ({"names": ["shared"]}, 409),
    ]
    for body, status in cases:
        answer = boss.post("/api/v1/peers", json=body, headers=csrf)
        assert answer.status_code == status, (body, answer.text)
        assert set(answer.json()["error"]) == {"code", "message", "value", "hint"}
    _is_error(boss.post("/api/v1/peers", content=b"{" * 70000, headers={**csrf, "content-type": "application/json"}),
              413, "too_large")
    _is_error(boss.patch("/api/v1/settings", json={"listen_port": 1}, headers=csrf), 422, "invalid_value")
    _is_error(boss.post("/api/v1/peers", content=b"not json", headers={**csrf, "content-type": "application/json"}),
              422, "invalid_value")
    after = snapshot(gw.config)
    assert after == before


def test_audit_records_who_did_what_from_where(gw: Gateway) -> None:
    alice, csrf = gw.signed_in("alice")
    alice.post("/api/v1/peers", json={"names": ["alice-laptop"]}, headers=csrf)
    alice.get("/api/v1/peers/alice-laptop/config")
    boss, _ = gw.signed_in("boss")
    entries = boss.get("/api/v1/audit", params={"user": "alice"}).json()["entries"]
    ops = [(e["operation"], e["target"], e["via"], e["address"]) for e in entries]
    assert ("peer.add", "alice-laptop", "api", "testclient") in ops
    assert ("peer.config", "alice-laptop", "api", "testclient") in ops
    assert boss.get("/api/v1/audit", params={"peer": "alice-laptop"}).json()["total"] == 2


def test_no_secret_reaches_a_log_line(gw: Gateway, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    boss, csrf = gw.signed_in("boss")
    token = boss.post("/api/v1/tokens", json={"name": "CI", "scopes": ["read"]}, headers=csrf).json()["token"]
    config = boss.get("/api/v1/peers/shared/config").text
    private = re.search(r"PrivateKey = (\S+)", config).group(1)  # type: ignore[union-attr]
    gw.client().post("/api/v1/session", json={"user": "boss", "password": "wrong " + PASSWORD})
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (PASSWORD, token, private, boss.cookies.get("bulwark_session") or "x" * 40, csrf["X-CSRF-Token"]):
        assert secret not in text


def test_status_lists_only_the_named_peers_and_counts_what_the_caller_may_see(gw: Gateway) -> None:
    boss, csrf = gw.signed_in("boss")
    assert boss.post("/api/v1/peers", json={"names": ["p1", "p2", "p3"]}, headers=csrf).status_code == 201
    alice, alice_csrf = gw.signed_in("alice")
    assert alice.post("/api/v1/peers", json={"names": ["alice-phone"]}, headers=alice_csrf).status_code == 201
    everything = boss.get("/api/v1/status").json()
    assert len(everything["peers"]) == everything["peers_total"] == 5 and everything["peers_online"] == 0
    page = boss.get("/api/v1/status", params={"name": ["p3", "shared", "nosuchpeer"]}).json()
    assert [p["name"] for p in page["peers"]] == ["p3", "shared"] and page["peers_total"] == 5
    summary = boss.get("/api/v1/status", params={"summary": "true"}).json()
    assert summary["peers"] == [] and summary["peers_total"] == 5
    assert summary["interface"] == everything["interface"] and summary["up"] is False
    # A user: their own peers only, in the list and in the counts; another user's name is simply absent.
    own = alice.get("/api/v1/status").json()
    assert [p["name"] for p in own["peers"]] == ["alice-phone"] and own["peers_total"] == 1
    assert alice.get("/api/v1/status", params={"name": ["shared", "p1"]}).json()["peers"] == []
    assert [p["name"] for p in alice.get("/api/v1/status", params={"name": "alice-phone"}).json()["peers"]] == [
        "alice-phone"]
    _is_error(boss.get("/api/v1/status", params={"name": "bad name\n"}), 422, "invalid_value")


def test_the_listening_sockets_turn_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto says TCP; without it a kept-alive connection (a
    browser's) waited 40 ms for the delayed ACK on every response (bench/web.py showed 44 ms per static file)."""
    import socket

    from bulwark_vpn.web.server import Listen, _socket

    sock = _socket(Listen("127.0.0.1", 0))
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        sock.settimeout(5)
        client = socket.create_connection(sock.getsockname()[:2], timeout=5)
        accepted, _ = sock.accept()
        with client, accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()


def test_metrics_answer_loopback_and_metrics_tokens_only(gw: Gateway) -> None:
    def peers_in(answer) -> set[str]:
        assert answer.status_code == 200, answer.text
        return set(re.findall(r'bulwark_peer_enabled\{[^}]*peer="([^"]+)"', answer.text))

    # From this host's loopback, no token: every peer.
    loopback = TestClient(gw.app, base_url="http://testserver", client=("127.0.0.1", 40000))
    assert peers_in(loopback.get("/metrics")) == {"shared"}
    # An admin's token with the metrics scope alone, or an admin token: every peer.
    assert peers_in(gw.client().get("/metrics", headers=gw.token("metrics"))) == {"shared"}
    assert peers_in(gw.client().get("/metrics", headers=gw.token("admin"))) == {"shared"}
    # A read token is not a metrics token; from anywhere else, no token is refused.
    _is_error(gw.client().get("/metrics", headers=gw.token("read")), 403, "forbidden")
    _is_error(gw.client().get("/metrics"), 401, "unauthenticated")
    # The loopback actor reads metrics and nothing else.
    _is_error(loopback.get("/api/v1/status"), 401, "unauthenticated")


@pytest.mark.slow  # two scrypt passes (age): about 3 s
def test_an_admin_downloads_a_backup_that_restores_and_the_audit_log_names_it(gw: Gateway, tmp_path: Path,
                                                                              caplog) -> None:
    from bulwark_vpn.backupfile import Passphrase

    caplog.set_level(logging.DEBUG)
    client, admin = gw.client(), gw.token("admin")
    plain = client.post("/api/v1/backup", json={}, headers=admin)
    assert plain.status_code == 200, plain.text
    assert plain.headers["content-type"] == "application/octet-stream"
    assert plain.headers["cache-control"] == "no-store"
    assert re.fullmatch(r'attachment; filename="bulwark-backup-\d{8}T\d{6}Z\.tar\.gz"',
                        plain.headers["content-disposition"])
    secret = "the passphrase of this backup"  # noqa: S105 - a test value
    sealed = client.post("/api/v1/backup", json={"passphrase": secret}, headers=admin)
    assert sealed.status_code == 200 and sealed.content.startswith(b"age-encryption.org/v1")
    assert sealed.headers["content-disposition"].endswith('.tar.gz.age"')
    # Each file restores the same server and peers into a fresh folder (the CLI's restore).
    with gw.ctx.open_store(read_only=True) as store:
        key, names = store.require_server_key().public_key(), sorted(p.name for p in store.peers())
    for body, passphrase in ((plain.content, None), (sealed.content, Passphrase(secret))):
        path = tmp_path / f"backup-{passphrase is not None}"
        path.write_bytes(body)
        target = service.Context(tmp_path / f"restored-{passphrase is not None}", run_dir=TEST_RUN_DIR)
        service.restore_store(target, service.RestoreRequest(path, passphrase))
        with target.open_store(read_only=True) as store:
            assert store.require_server_key().public_key() == key
            assert sorted(p.name for p in store.peers()) == names
    # Every key of the team: admins only, whatever else a token or a session may do.
    for headers in (gw.token("read"), gw.token("peers:write"), gw.token("metrics")):
        _is_error(client.post("/api/v1/backup", json={}, headers=headers), 403, "forbidden")
    alice, csrf = gw.signed_in("alice")
    _is_error(alice.post("/api/v1/backup", json={}, headers=csrf), 403, "forbidden")
    boss, csrf = gw.signed_in("boss")
    _is_error(boss.post("/api/v1/backup", json={}), 403, "forbidden")  # a session needs its CSRF token
    _is_error(boss.post("/api/v1/backup", json={"passphrase": ""}, headers=csrf), 422, "invalid_value")
    _is_error(boss.post("/api/v1/backup", json={"passphrase": 7}, headers=csrf), 422, "invalid_value")
    entries = boss.get("/api/v1/audit").json()["entries"]
    backups = [e for e in entries if e["operation"] == "backup"]
    assert len(backups) == 2 and {e["via"] for e in backups} == {"api"}
    assert {e["detail"] for e in backups} == {"1 peer(s), not encrypted", "1 peer(s), encrypted"}
    assert secret not in caplog.text
