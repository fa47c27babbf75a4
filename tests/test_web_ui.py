"""The web UI as people use it, in a real headless Chromium (Debian's), against a real gateway.

One gateway for the module: a lab's server namespace runs `bulwark up --serve` (the supervisor, wireguard-go, the
API and pages on 127.0.0.1:8080 and the tunnel address), and Chromium runs inside that namespace too. Clients
connect from their own namespaces with `wg-quick` and the config the page gave. Each test uses fresh browser
contexts (no shared cookies) and its own user and peer names, so the tests do not depend on their order.

Screenshots of every page (desktop and phone, light and dark) are taken by the accessibility test; with
BULWARK_SCREENSHOTS=DIR they are also written to DIR (`make screenshots` writes docs/screenshots).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests import browser
from tests.gwlab import Lab, cleanup_lab, make_lab
from tests.helpers import bulwark
from tests.netns import NetnsFactory, remove_orphans

pytestmark = [pytest.mark.browser, pytest.mark.netns, pytest.mark.timeout(600)]

PASSWORD = "correct horse battery staple 7"
BASE = "http://127.0.0.1:8080"
WAIT = 15_000  # ms: a page's own requests on a busy two-core machine


@dataclass
class Site:
    lab: Lab
    browser: Any
    tunnel_ip: str  # the gateway's tunnel address: also local in the server namespace

    def page(self, *, viewport: dict[str, int] | None = None, scheme: str = "light",
             problems: browser.PageProblems | None = None) -> Any:
        context = self.browser.new_context(viewport=viewport or browser.DESKTOP, color_scheme=scheme,
                                           accept_downloads=True)
        context.set_default_timeout(WAIT)
        page = context.new_page()
        return problems.watch(page) if problems else page


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    missing = browser.missing_tools()
    if missing:
        pytest.fail(f"the browser tests need {', '.join(missing)}: run 'make test' (it installs them)")
    if os.geteuid() != 0:
        pytest.fail("the browser tests run a gateway in network namespaces: run them as root")
    remove_orphans()
    factory = NetnsFactory()
    lab = None
    try:
        lab = make_lab(factory)
        lab.init("--peers", "shared")
        for name in ("boss", "ops"):
            bulwark("user", "add", name, "--admin", "--password-stdin", "--config-dir", str(lab.config),
                    input=PASSWORD)
        lab.bulwark("up", "--serve")
        tunnel_ip = lab.status()["addresses"][0].split("/")[0]
        _wait_for_api(lab)
        with browser.chromium(netns=lab.server.name) as chromium:
            yield Site(lab, chromium, tunnel_ip)
    finally:
        if lab is not None:
            cleanup_lab(lab)
        factory.cleanup()


def _wait_for_api(lab: Lab, timeout: float = 30) -> None:
    probe = "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/api/v1/health', timeout=2).read()"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.server.run(["python3", "-c", probe], check=False).returncode == 0:
            return
        time.sleep(0.3)
    raise AssertionError("the API did not answer on 127.0.0.1:8080 in the server namespace")


def sign_in(page: Any, user: str, password: str = PASSWORD, *, base: str = BASE, totp: pyotp.TOTP | None = None,
            step: int | None = None) -> None:
    page.goto(f"{base}/sign-in")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    if totp is not None:
        page.get_by_label("Code").fill(totp.at(step * 30) if step is not None else totp.now())
        page.get_by_role("button", name="Verify").click()
    page.locator("#nav").get_by_role("button", name="Sign out").wait_for()


def add_peers(page: Any, names: str, *, base: str = BASE) -> None:
    page.goto(f"{base}/peers")
    page.get_by_label("Names").fill(names)
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_role("status").filter(has_text="Added").wait_for()


def _strip_dns(config: str) -> str:
    # wg-quick's DNS= needs resolvconf, which the test namespaces do not have (as in tests/gwlab.py).
    return "".join(line for line in config.splitlines(keepends=True) if not line.startswith("DNS"))


# -- the main path --------------------------------------------------------------------------------------------

def test_admin_enrols_totp_adds_a_peer_scans_its_qr_code_connects_and_sees_it_online(site: Site,
                                                                                    tmp_path: Path) -> None:
    problems = browser.PageProblems()
    page = site.page(problems=problems)
    sign_in(page, "ops")
    # Two-factor enrolment: the page shows the secret and its QR code; the first code turns it on.
    page.goto(f"{BASE}/account")
    page.get_by_role("button", name="Set up two-factor sign-in").click()
    secret = page.locator("#totp-secret").input_value()
    qr = tmp_path / "totp.png"
    page.get_by_alt_text("QR code of your two-factor secret").screenshot(path=str(qr))
    uri = browser.decode_qr(qr).strip()
    assert uri.startswith("otpauth://totp/") and f"secret={secret}" in uri
    totp = pyotp.TOTP(secret)
    page.get_by_label("The 6-digit code the app shows").fill(totp.now())
    enrolled_step = int(time.time() // 30)
    page.get_by_role("button", name="Turn on").click()
    codes = page.locator("#recovery-codes li")
    codes.first.wait_for()
    assert codes.count() == 10
    page.get_by_role("button", name="I have saved them").click()
    page.get_by_role("heading", name="Dashboard").wait_for()

    # Sign out, then in again: the password, then the next TOTP code (the one used is never accepted again).
    page.locator("#nav").get_by_role("button", name="Sign out").click()
    page.get_by_text("You are signed out.").wait_for()
    sign_in(page, "ops", totp=totp, step=max(enrolled_step + 1, int(time.time() // 30)))
    assert page.locator("#gateway-state").inner_text() == "up"

    # Add a peer, scan its QR code from a screenshot, download its config: the same text.
    add_peers(page, "laptop")
    page.get_by_role("link", name="laptop", exact=True).first.click()
    page.get_by_role("heading", name="laptop").wait_for()
    page.get_by_role("button", name="Show QR code").click()
    shot = tmp_path / "peer-qr.png"
    image = page.locator("#peer-qr-image")
    image.wait_for()
    page.wait_for_function("() => document.querySelector('#peer-qr-image').naturalWidth > 0")
    image.screenshot(path=str(shot))
    scanned = browser.decode_qr(shot)
    link = page.get_by_role("link", name=re.compile(r"^Download \S+\.conf$"))
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    # The name wg-quick accepts: its stem becomes the interface name (wg-quick's own pattern, at most 15).
    assert re.fullmatch(r"[a-zA-Z0-9_=+.-]{1,15}\.conf", download.suggested_filename)
    assert link.inner_text() == f"Download {download.suggested_filename}"
    saved = tmp_path / download.suggested_filename
    download.save_as(str(saved))
    config = saved.read_text()
    assert config.startswith("[Interface]") and "PrivateKey = " in config
    assert scanned.rstrip("\n") == config.rstrip("\n")

    # That config, brought up with wg-quick in a client namespace, pings the gateway through the tunnel.
    client = site.lab.add_client()
    site.lab.factory.wg_quick_up(client, _strip_dns(config))
    assert client.ping(site.tunnel_ip, count=3)

    # The page, never reloaded, shows the peer online with its handshake and traffic (polling).
    state = page.locator("#peer-state")
    state.get_by_text("online").wait_for(timeout=30_000)
    page.wait_for_function("() => !/received 0 B/.test(document.querySelector('#peer-traffic').textContent)",
                           timeout=30_000)
    assert re.search(r"\d+(\.\d+)? \w*B", page.locator("#peer-traffic").inner_text())
    assert re.fullmatch(r"172\.31\.\d+\.2:\d+", page.locator("#peer-endpoint").inner_text())
    # The peers table shows it online too; the dashboard counts it.
    page.get_by_role("link", name="← All peers").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="laptop", exact=True))
    row.get_by_text("online").wait_for(timeout=30_000)
    assert "↓ 0 B ↑ 0 B" not in row.inner_text()
    page.locator("#nav").get_by_role("link", name="Dashboard").click()
    page.wait_for_function("() => /^[1-9]\\d* \\/ \\d+$/.test(document.querySelector('#peers-online')?.textContent)")
    # The traffic history: the supervisor stores the counters' growth once a minute; the chart shows it.
    page.goto(f"{BASE}/peers/laptop")
    deadline = time.monotonic() + 150
    while True:
        page.get_by_role("button", name="Last hour").click()
        label = page.locator("svg.chart").get_attribute("aria-label") or ""
        if "received 0 B" not in label:
            break
        assert time.monotonic() < deadline, f"no traffic in the history chart: {label}"
        time.sleep(5)
    assert re.search(r"received \d+(\.\d+)? \w*B, sent \d+(\.\d+)? \w*B", label)
    assert problems.lines == []


# -- a user's own peers ---------------------------------------------------------------------------------------

def test_a_user_set_up_by_link_sees_only_their_own_peers_and_another_peer_is_not_found(site: Site) -> None:
    problems = browser.PageProblems()
    admin = site.page(problems=problems)
    sign_in(admin, "boss")
    admin.goto(f"{BASE}/users")
    admin.get_by_label("User name").fill("carol")
    admin.get_by_label("Peer limit").first.fill("2")
    admin.get_by_role("button", name="Add user").click()
    link = admin.get_by_role("textbox", name="Setup link for carol").input_value()
    assert re.fullmatch(rf"http://{re.escape(site.tunnel_ip)}:8080/setup#[\w-]{{43,}}", link)
    # Carol opens her link in her own browser, chooses a password, signs in.
    carol = site.page(problems=problems)
    carol.goto(link)
    carol.get_by_label("Password", exact=True).fill(PASSWORD)
    carol.get_by_label("Password again").fill(PASSWORD)
    carol.get_by_role("button", name="Set password").click()
    carol.get_by_text("Your password is set, carol.").wait_for()
    assert "#" not in carol.url  # the token left the address bar
    # Signed in from 127.0.0.1: only the throttling test signs in from the tunnel address (throttling also counts
    # per client address).
    sign_in(carol, "carol")
    add_peers(carol, "carol-phone")
    carol.get_by_role("heading", name="My peers").wait_for()
    names = carol.locator("table.peers tbody th a").all_inner_texts()
    assert names == ["carol-phone"]
    assert carol.locator("#nav").get_by_role("link", name="Users").count() == 0
    # Another peer's address pasted in: "not found", exactly as for a peer that does not exist.
    carol.goto(f"{BASE}/peers/shared")
    carol.get_by_role("alert").wait_for()
    other = carol.get_by_role("alert").inner_text()
    assert "Not found" in other and "shared" in other
    carol.goto(f"{BASE}/peers/nosuchpeer")
    carol.get_by_role("alert").filter(has_text="nosuchpeer").wait_for()
    assert carol.get_by_role("alert").inner_text().replace("nosuchpeer", "X") == other.replace("shared", "X")
    # The limit of 2 holds in the page too.
    add_peers(carol, "carol-laptop")
    carol.get_by_label("Names").fill("carol-tablet")
    carol.get_by_role("button", name="Add", exact=True).click()
    assert "peer limit" in carol.get_by_role("alert").inner_text()
    # The admin sees carol's peers among all.
    admin.goto(f"{BASE}/peers?q=carol")
    admin.get_by_text("1–2 of 2 peers matching 'carol'").wait_for()
    # Carol changes her password: every session of hers ends, the new password works, the old one not.
    carol.goto(f"{BASE}/account")
    carol.get_by_label("Current password").fill(PASSWORD)
    carol.get_by_label("New password", exact=True).fill(PASSWORD + " and more")
    carol.get_by_label("New password again").fill(PASSWORD + " and more")
    carol.get_by_role("button", name="Change password").click()
    carol.get_by_text("Password changed: sign in with the new one.").wait_for()
    carol.get_by_label("User name").fill("carol")
    carol.get_by_label("Password").fill(PASSWORD)
    carol.get_by_role("button", name="Sign in").click()
    carol.get_by_text("Wrong user name or password.").wait_for()
    sign_in(carol, "carol", PASSWORD + " and more")
    assert problems.lines == []


# -- share links ----------------------------------------------------------------------------------------------

def test_a_share_link_shows_the_config_and_qr_code_once_then_is_refused(site: Site, tmp_path: Path) -> None:
    problems = browser.PageProblems()
    admin = site.page(problems=problems)
    sign_in(admin, "boss")
    add_peers(admin, "guest-phone")
    admin.goto(f"{BASE}/peers/guest-phone")
    admin.get_by_label("Expires after").select_option("1h")
    admin.get_by_role("button", name="Create share link").click()
    link = admin.get_by_label("Share link (shown once)").input_value()
    assert re.fullmatch(rf"http://{re.escape(site.tunnel_ip)}:8080/share#[\w-]{{43,}}", link)
    expected = site.lab.bulwark("peer", "show", "guest-phone").stdout  # the CLI's view of the same config
    # A stranger, in a fresh browser: the config and its QR code, once.
    stranger = site.page(problems=problems)
    stranger.goto(link)
    assert "#" not in stranger.url
    stranger.get_by_role("button", name="Show my config").click()
    shown = stranger.locator("#share-config")
    shown.wait_for()
    assert shown.inner_text().strip() == expected.strip()
    qr = tmp_path / "share-qr.png"
    stranger.get_by_alt_text("QR code of the WireGuard config of guest-phone").screenshot(path=str(qr))
    assert browser.decode_qr(qr).rstrip("\n") == expected.rstrip("\n")
    with stranger.expect_download() as download_info:
        stranger.get_by_role("button", name=re.compile(r"^Download ")).click()
    saved = tmp_path / "download.conf"
    download_info.value.save_as(str(saved))
    assert re.fullmatch(r"[a-zA-Z0-9_=+.-]{1,15}\.conf", download_info.value.suggested_filename)
    assert saved.read_text().strip() == expected.strip()
    # The same link again, in another fresh browser: refused.
    again = site.page(problems=problems)
    again.goto(link)
    again.get_by_role("button", name="Show my config").click()
    refused = again.locator("#share-refused")
    refused.wait_for()
    assert "not valid" in refused.inner_text()
    assert again.locator("#share-config").count() == 0
    assert problems.lines == []


# -- what an admin changes ------------------------------------------------------------------------------------

def test_an_admin_changes_peers_users_tokens_and_settings_with_the_keyboard_and_the_audit_log_shows_it(
        site: Site) -> None:
    problems = browser.PageProblems()
    page = site.page(problems=problems)
    # Sign in with the keyboard alone: the user name field has the focus, Tab moves on, Enter submits.
    page.goto(f"{BASE}/sign-in")
    page.keyboard.type("boss")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Dashboard").wait_for()
    # Several peers at once, then one edited: keepalive and expiry; emptied allowed IPs go back to the default.
    add_peers(page, "ops-a, ops-b ops-c")
    page.get_by_text("Added 3 peers").wait_for()
    page.goto(f"{BASE}/peers/ops-a")
    page.get_by_label("Keepalive (seconds)").fill("25")
    page.get_by_label("Expires", exact=True).fill("30d")
    page.get_by_role("button", name="Save changes").click()
    page.get_by_text("25 s").wait_for()
    listed = json.loads(site.lab.bulwark("peer", "list", "--json").stdout)["peers"]
    changed = next(p for p in listed if p["name"] == "ops-a")
    assert changed["keepalive"] == 25 and changed["expires_at"] > time.time() + 29 * 86400
    # Disable from the table's switch; the device drops it (the gateway applies it live).
    page.goto(f"{BASE}/peers?q=ops-")
    switch = page.get_by_role("switch", name="ops-b enabled")
    assert switch.get_attribute("aria-checked") == "true"
    switch.focus()
    page.keyboard.press("Enter")
    page.get_by_role("switch", name="ops-b enabled").and_(page.locator("[aria-checked=false]")).wait_for()
    key = next(p for p in listed if p["name"] == "ops-b")["public_key"]
    assert key not in site.lab.device_peers() and changed["public_key"] in site.lab.device_peers()
    # Delete asks first: Escape keeps the peer, the dialog's Delete removes it.
    page.get_by_role("button", name="Delete ops-c").click()
    dialog = page.get_by_role("dialog", name="Delete ops-c?")
    dialog.wait_for()
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert page.get_by_role("link", name="ops-c", exact=True).count() == 1
    page.get_by_role("button", name="Delete ops-c").click()
    dialog.get_by_role("button", name="Delete").click()
    page.get_by_role("link", name="ops-c", exact=True).wait_for(state="detached")
    assert "ops-c" not in site.lab.bulwark("peer", "list").stdout
    # A user's role stays, their limit and required 2FA change.
    page.goto(f"{BASE}/users")
    page.get_by_label("User name").fill("dave")
    page.get_by_role("button", name="Add user").click()
    page.get_by_role("textbox", name="Setup link for dave").wait_for()
    page.get_by_role("button", name="Change dave").click()
    form = page.get_by_role("form", name="Change dave")
    form.get_by_label("Peer limit").fill("4")
    form.get_by_label("Require two-factor sign-in").check()
    form.get_by_role("button", name="Save").click()
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="dave", exact=True))
    row.get_by_text("required, not set up").wait_for()
    assert "4" in row.get_by_role("cell").nth(2).inner_text()
    # Dave's first sign-in: two-factor is required, so the account page is all he gets until it is set up.
    dave = site.page(problems=problems)
    dave.goto(page.get_by_role("textbox", name="Setup link for dave").input_value())
    dave.get_by_label("Password", exact=True).fill(PASSWORD)
    dave.get_by_label("Password again").fill(PASSWORD)
    dave.get_by_role("button", name="Set password").click()
    dave.get_by_role("link", name="Sign in").wait_for()
    dave.goto(f"{BASE}/sign-in")  # from 127.0.0.1, as every test but the throttling one
    dave.get_by_label("User name").fill("dave")
    dave.get_by_label("Password").fill(PASSWORD)
    dave.get_by_role("button", name="Sign in").click()
    dave.get_by_text("Two-factor sign-in is required for this account").wait_for()
    assert dave.locator("#nav").is_hidden()
    dave.goto(f"{BASE}/peers")
    dave.get_by_role("heading", name="Account").wait_for()  # sent back
    dave.get_by_role("button", name="Set up two-factor sign-in").click()
    code = pyotp.TOTP(dave.locator("#totp-secret").input_value()).now()
    dave.get_by_label("The 6-digit code the app shows").fill(code)
    dave.get_by_role("button", name="Turn on").click()
    dave.get_by_role("button", name="I have saved them").click()
    dave.get_by_role("heading", name="My peers").wait_for()
    dave.goto(f"{BASE}/users")
    dave.get_by_role("heading", name="Admins only").wait_for()
    # A token: shown once, then listed with its prefix, then revoked.
    page.goto(f"{BASE}/tokens")
    page.get_by_label("Name", exact=True).fill("deploy")
    page.get_by_label("peers:write: add, change and remove peers").check()
    page.get_by_role("button", name="Create token").click()
    token = page.get_by_label("Token deploy").input_value()
    assert token.startswith("bwk_")
    revoke = page.get_by_role("button", name=f"Revoke deploy ({token[:8]}…)")
    revoke.click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    page.get_by_role("row").filter(has_text=token[:8]).get_by_text("revoked").wait_for()
    # A safe setting.
    page.goto(f"{BASE}/settings")
    page.get_by_label("audit_retention_days").fill("45")
    page.get_by_role("button", name="Save settings").click()
    page.get_by_text("Saved: audit_retention_days").wait_for()
    assert page.get_by_label("audit_retention_days").input_value() == "45"
    # The audit log, filtered by peer, then by user.
    page.goto(f"{BASE}/audit")
    page.get_by_label("Peer").fill("ops-c")
    page.get_by_role("button", name="Filter").click()
    page.locator("#audit-summary").get_by_text(re.compile(r"of 2 entries for peer ops-c,")).wait_for()
    assert set(page.locator("table tbody td:nth-child(6)").all_inner_texts()) == {"ops-c"}
    operations = page.locator("table tbody td:nth-child(5)").all_inner_texts()
    assert set(operations) == {"peer.add", "peer.remove"}
    page.get_by_label("Peer").fill("")
    page.get_by_label("User").fill("boss")
    page.get_by_role("button", name="Filter").click()
    page.locator("#audit-summary").get_by_text(re.compile(r"entries for user boss,")).wait_for()
    assert all(who.endswith(":boss") for who in page.locator("table tbody td:nth-child(2)").all_inner_texts())
    assert "settings.update" in page.locator("table tbody td:nth-child(5)").all_inner_texts()
    assert problems.lines == []


# -- sign-in throttling ---------------------------------------------------------------------------------------

def test_a_throttled_sign_in_says_how_long_to_wait(site: Site) -> None:
    # From the tunnel address: the throttle also counts per client address, and the other tests sign in from
    # 127.0.0.1, so they are not made to wait whatever the order.
    base = f"http://{site.tunnel_ip}:8080"
    page = site.page()
    page.goto(f"{base}/sign-in")
    for _ in range(5):
        page.get_by_label("Password").fill("not the password")
        page.get_by_label("User name").fill("nobody-here")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Wrong user name or password.").wait_for()
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert").filter(has_text="Too many failed sign-ins")
    alert.wait_for()
    assert re.search(r"Wait \d+ s", alert.inner_text())
    assert page.get_by_role("button", name="Sign in").is_disabled()


# -- every page: accessibility, screenshots -------------------------------------------------------------------

def _share_link(site: Site) -> str:
    """A fresh share link for the 'shared' peer, made with the CLI, opened on this browser's address."""
    url = site.lab.bulwark("peer", "share", "shared", "--expires", "1h").stdout.strip()
    return "/share#" + url.split("#", 1)[1]


def _show_qr(page: Any) -> None:
    page.get_by_role("button", name="Show QR code").click()
    page.wait_for_function("() => document.querySelector('#peer-qr-image')?.naturalWidth > 0")


def _redeem(page: Any) -> None:
    page.get_by_role("button", name="Show my config").click()
    page.locator("#share-config").wait_for()


# (file name, path (or a function of the site making one), who signs in, the page's heading, what to do there)
PAGES: list[tuple[str, Any, str | None, str, Any]] = [
    ("sign-in", "/sign-in", None, "Sign in to Bulwark", None),
    ("dashboard", "/", "boss", "Dashboard", None),
    ("peers", "/peers", "boss", "Peers", None),
    ("peer", "/peers/shared", "boss", "shared", _show_qr),
    ("users", "/users", "boss", "Users", None),
    ("tokens", "/tokens", "boss", "API tokens", None),
    ("audit", "/audit", "boss", "Audit log", None),
    ("settings", "/settings", "boss", "Settings", None),
    ("account", "/account", "boss", "Account", None),
    ("share", _share_link, None, "Shared WireGuard config", _redeem),
    ("setup", "/setup#not-a-real-token-but-long-enough-to-try", None, "Choose a password", None),
]


def test_every_page_in_light_and_dark_on_desktop_and_phone_has_no_serious_accessibility_violation(
        site: Site, tmp_path: Path) -> None:
    out = Path(os.environ.get("BULWARK_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    # Something to show: a few peers, a token, the doctor's results.
    seed = site.page()
    sign_in(seed, "boss")
    add_peers(seed, "alice-laptop bob-phone ci-runner")
    seed.goto(f"{BASE}/")
    seed.get_by_role("button", name="Run checks").click()
    seed.locator("#doctor-verdict").wait_for(timeout=60_000)
    seed.goto(f"{BASE}/tokens")
    seed.get_by_label("Name", exact=True).fill("CI")
    seed.get_by_role("button", name="Create token").click()
    seed.get_by_label("Token CI").wait_for()
    seed.context.close()
    problems = browser.PageProblems()
    found: dict[str, list[dict[str, Any]]] = {}
    for scheme in ("light", "dark"):
        for size, viewport in (("desktop", browser.DESKTOP), ("phone", browser.PHONE)):
            page = site.page(viewport=viewport, scheme=scheme, problems=problems)
            signed_in = False
            for name, path, user, title, then in PAGES:
                if user and not signed_in:
                    sign_in(page, user)
                    signed_in = True
                page.goto(BASE + (path(site) if callable(path) else path))
                page.get_by_role("heading", name=title, exact=True).first.wait_for()
                page.wait_for_load_state("networkidle")
                if then is not None:
                    then(page)
                violations = browser.axe_violations(page)
                if violations:
                    found[f"{name} {scheme} {size}"] = violations
                page.screenshot(path=str(out / f"{name}-{size}-{scheme}.png"), full_page=size == "desktop")
            page.context.close()
    assert found == {}, found
    assert problems.lines == []
