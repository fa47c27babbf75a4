"""The web pages: one HTML shell and the static files of a small single-page app that is a client of the HTTP
API like any other (session cookie and `X-CSRF-Token`); nothing here reads the store or calls the service.

Every page path serves the same shell; the page's script asks the API for what the page shows, so what a person
may see is decided by the API's access rules alone (another user's peer page says "not found" because the API
answers 404). Static files come from a fixed list read from the package (no path from the request reaches the
file system), gzipped once for browsers that accept it, and revalidated with an ETag.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from bulwark_vpn.errors import NotFoundError
from bulwark_vpn.web.access import Routes

STATIC_DIR = Path(__file__).parent / "static"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".svg": "image/svg+xml", ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
# The pages the app knows (see static/js/app.js); any other path is the API's 404.
PAGES = ("/", "/sign-in", "/account", "/peers", "/peers/{name}", "/users", "/tokens", "/audit", "/settings",
         "/setup", "/share")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None  # None when compressing does not pay
    media_type: str
    etag: str


@cache
def assets() -> dict[str, Asset]:
    """Every file under static/ by its URL path, read once."""
    found: dict[str, Asset] = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        media_type = MEDIA_TYPES.get(path.suffix)
        if not path.is_file() or media_type is None:
            continue
        body = path.read_bytes()
        packed = gzip.compress(body, 9, mtime=0)
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        found["/static/" + path.relative_to(STATIC_DIR).as_posix()] = Asset(
            body, packed if len(packed) < len(body) * 0.9 else None, media_type, etag)
    return found


def _shell() -> HTMLResponse:
    return HTMLResponse(assets()["/static/index.html"].body)


def _static(path: str, request: Request) -> Response:
    asset = assets().get("/static/" + path)
    if asset is None or path == "index.html":
        raise NotFoundError("no such file", path, "the pages' files are listed in the shell")
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        return Response(asset.gzipped, media_type=asset.media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def routes() -> Routes:
    pages = Routes(tags=["pages"])
    for page in PAGES:
        pages.add("GET", page, "anonymous", include_in_schema=False, response_class=HTMLResponse,
                  name=f"page {page}")(_shell)
    pages.add("GET", "/static/{path:path}", "anonymous", include_in_schema=False, name="static")(_static)
    return pages
