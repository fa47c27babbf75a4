"""The web pages' server side, in-process: every page path serves the one shell under the API's security headers,
the static files are a fixed list (nothing from the request reaches the file system), gzipped and revalidated,
and nothing in them needs what the Content-Security-Policy forbids (inline scripts or styles, other hosts).
What the pages do is tested in a real browser (tests/test_web_ui.py)."""

from __future__ import annotations

import gzip
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bulwark_vpn import service
from bulwark_vpn.web import pages
from bulwark_vpn.web.access import app_routes
from bulwark_vpn.web.app import create_app
from tests.helpers import TEST_RUN_DIR

STATIC = pages.STATIC_DIR


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    config = tmp_path_factory.mktemp("pages") / "c"
    ctx = service.Context(config, run_dir=TEST_RUN_DIR)
    service.init_from_sources(ctx, flags={"server_url": "vpn.example.com"}, peers="shared")
    return TestClient(create_app(lambda: service.Context(config, run_dir=TEST_RUN_DIR)))


class _Shell(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.styles = 0
        self.style_attributes: list[str] = []
        self.links: list[str] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            self.scripts.append(found)
        if tag == "style":
            self.styles += 1
        if "style" in found:
            self.style_attributes.append(tag)
        self.handlers += [name for name in found if name.startswith("on")]
        for name in ("src", "href"):
            if found.get(name):
                self.links.append(str(found[name]))


def test_every_page_path_serves_the_shell_with_the_security_headers(client: TestClient) -> None:
    shell = (STATIC / "index.html").read_bytes()
    for page in pages.PAGES:
        answer = client.get(page.replace("{name}", "some-peer"))
        assert answer.status_code == 200, page
        assert answer.content == shell
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["x-frame-options"] == "DENY"
    # Anything else is the API's one JSON error, not the shell.
    missing = client.get("/no-such-page")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_page_routes_carry_an_access_rule_and_stay_out_of_the_openapi_document(client: TestClient) -> None:
    routes = [r for r in app_routes(client.app) if getattr(r, "path", "") in (*pages.PAGES, "/static/{path:path}")]
    assert len(routes) == len(pages.PAGES) + 1
    assert all(r.openapi_extra["x-bulwark-access"] == "anonymous" for r in routes)
    document = client.get("/api/openapi.json").json()
    assert not [p for p in document["paths"] if not p.startswith("/api/") and p != "/metrics"]


def test_the_shell_needs_nothing_the_content_security_policy_forbids() -> None:
    parsed = _Shell()
    parsed.feed((STATIC / "index.html").read_text())
    assert parsed.scripts and all(s.get("src", "").startswith("/static/") for s in parsed.scripts)
    assert parsed.styles == 0 and parsed.style_attributes == [] and parsed.handlers == []
    assert all(link.startswith(("/static/", "/api/", "#")) or link == "/" for link in parsed.links), parsed.links
    served = set(pages.assets())
    assert {link for link in parsed.links if link.startswith("/static/")} <= served


def test_the_scripts_load_only_from_this_host_and_never_write_html_or_inline_styles() -> None:
    served = set(pages.assets())
    scripts = sorted((STATIC / "js").rglob("*.js"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        for target in re.findall(r'^import .* from "([^"]+)";$', text, re.M):
            resolved = "/static/" + (script.parent / target).resolve().relative_to(STATIC.resolve()).as_posix()
            assert resolved in served, f"{script.name} imports {target}, which is not served"
        # Text always goes in as text: a peer's or user's name never becomes markup.
        assert not re.search(r"innerHTML\s*=|outerHTML\s*=|insertAdjacentHTML|document\.write", text), script.name
        assert "setAttribute(\"style\"" not in text and ".style." not in text, script.name
        assert not re.search(r"\beval\(|new Function\(", text), script.name
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), f"{script.name} names another host"


def test_static_files_are_a_fixed_list_gzipped_and_revalidated(client: TestClient) -> None:
    app_js = client.get("/static/js/app.js", headers={"Accept-Encoding": "gzip"})
    assert app_js.status_code == 200 and app_js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert app_js.headers["content-encoding"] == "gzip" and app_js.headers["vary"] == "Accept-Encoding"
    assert app_js.content == (STATIC / "js" / "app.js").read_bytes()  # httpx undid the gzip
    plain = client.get("/static/app.css", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == (STATIC / "app.css").read_bytes()
    again = client.get("/static/app.css", headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    for path in ("/static/../pages.py", "/static/%2e%2e/pages.py", "/static/js/../../pages.py", "/static/nope.js",
                 "/static/index.html", "/static/", "/static/js"):
        answer = client.get(path)
        assert answer.status_code == 404, path
    assert all(path.startswith("/static/") and Path(path).suffix in pages.MEDIA_TYPES for path in pages.assets())


def test_a_first_visit_downloads_well_under_300_kb(client: TestClient) -> None:
    """Every asset of the pages, gzipped as a browser gets them (the budget of the issue: 300 KB in all)."""
    total = len((STATIC / "index.html").read_bytes())
    for path, asset in pages.assets().items():
        if path != "/static/index.html":
            total += len(asset.gzipped if asset.gzipped is not None else asset.body)
    assert total < 60_000, total
    assert all(len(gzip.decompress(a.gzipped)) == len(a.body) for a in pages.assets().values() if a.gzipped)
