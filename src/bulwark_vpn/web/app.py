"""The ASGI application: the versioned API, the metrics, one JSON error shape, and the safety belts every response
gets (body size limit, no caching, security headers).

`create_app(context_factory, config)` builds it; `bulwark serve` and the supervisor (`up --serve`) run it with
uvicorn (see `web.server`). The app holds no logic of its own: routes call the service layer.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bulwark_vpn import __version__
from bulwark_vpn.errors import ERROR_TABLE, BulwarkError, ErrorCode, show_value
from bulwark_vpn.service import Context

log = logging.getLogger("bulwark_vpn.web")

MAX_BODY = 64 * 1024


@dataclass(frozen=True)
class WebConfig:
    """How the app is served: which proxies may tell the client's address and scheme."""

    trusted_proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=tuple)


def error_response(code: ErrorCode, message: str, value: object = None, hint: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": str(code), "message": message,
                      "value": None if value is None else show_value(value), "hint": hint}}
    return JSONResponse(body, status_code=ERROR_TABLE[code][1], headers=headers)


def _bulwark_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BulwarkError)  # noqa: S101 - registered for BulwarkError only
    headers = {}
    if exc.code == ErrorCode.THROTTLED and exc.hint:
        digits = "".join(c for c in exc.hint if c.isdigit())
        headers["Retry-After"] = digits or "60"
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers or None)


def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    first = exc.errors()[0] if exc.errors() else {}
    # The location may hold a field name the client made up: escaped and capped like any value shown.
    where = show_value(".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request")
    return error_response(ErrorCode.INVALID_VALUE, f"invalid {where}", None,
                          str(first.get("msg", "check the request against /api/openapi.json")))


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it only
    if exc.status_code == 404:
        return error_response(ErrorCode.NOT_FOUND, "no such page or API route", None, "see /api/openapi.json")
    if exc.status_code == 405:
        from bulwark_vpn.web.access import app_routes

        methods = sorted({m for route in app_routes(request.app) if hasattr(route, "path_regex")
                          and route.path_regex.match(request.url.path) for m in getattr(route, "methods", ())})
        return error_response(ErrorCode.METHOD_NOT_ALLOWED, "this method is not allowed here", request.method,
                              "see /api/openapi.json", headers={"Allow": ", ".join(methods)})
    if exc.status_code == 400:
        # Starlette's own refusal of a body it cannot read (malformed JSON): bad input like any other.
        return error_response(ErrorCode.INVALID_VALUE, "the request body is not valid JSON", None,
                              "send a JSON object as documented in /api/openapi.json")
    code = ErrorCode.INVALID_VALUE if exc.status_code < 500 else ErrorCode.INTERNAL
    return JSONResponse({"error": {"code": str(code), "message": str(exc.detail), "value": None, "hint": None}},
                        status_code=exc.status_code)


def _unexpected(request: Request, exc: Exception) -> Response:
    # The details go to the log, never to the client. Starlette answers this outside the middleware stack, so the
    # security headers are added here.
    log.error("bulwark: unexpected error on %s %s: %r", request.method, request.url.path, exc)
    response = error_response(ErrorCode.INTERNAL, "an unexpected error", None, "see the server's log")
    response.headers.update({**SECURITY_HEADERS, "Cache-Control": "no-store"})
    return response


class BodyLimit:
    """Refuse request bodies over MAX_BODY (declared or streamed) with 413, before any route reads them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            await _send_too_large(scope, send)
            return
        seen = 0
        too_large = False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    too_large = True
                    raise _TooLarge
            return message

        async def guarded(message: Message) -> None:
            # A body cut short reads as broken JSON to the route: its answer is replaced by the 413.
            if not too_large:
                await send(message)

        try:
            await self.app(scope, limited, guarded)
        except _TooLarge:
            pass
        if too_large:
            await _send_too_large(scope, send)


class _TooLarge(Exception):
    pass


async def _send_too_large(scope: Scope, send: Send) -> None:
    response = error_response(ErrorCode.TOO_LARGE, "the request body is too large", None,
                              f"at most {MAX_BODY // 1024} KiB")
    await response(scope, _noop_receive, send)


async def _noop_receive() -> Message:
    return {"type": "http.disconnect"}


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"),
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def create_app(context_factory: Callable[[], Context], config: WebConfig | None = None) -> FastAPI:
    """The app for one gateway: `context_factory()` gives the service context (folder, run folder) per request."""
    from bulwark_vpn.web import pages
    from bulwark_vpn.web.metrics import metrics_routes
    from bulwark_vpn.web.routes import api

    app = FastAPI(title="Bulwark", version=__version__, openapi_url="/api/openapi.json", docs_url=None,
                  redoc_url=None, description="The HTTP API of a Bulwark WireGuard gateway. Errors always have "
                                              "the shape {\"error\": {code, message, value, hint}}.")
    app.state.context_factory = context_factory
    app.state.config = config or WebConfig()
    app.state.last_doctor = None
    app.include_router(api.router)
    app.include_router(metrics_routes().router)
    app.include_router(pages.routes().router)
    app.add_exception_handler(BulwarkError, _bulwark_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)

    app.add_middleware(BodyLimit)  # inside the headers below: a 413 gets them too

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static/"):
            # Configs, QR codes and tokens hold secrets: never kept by a browser or a proxy cache.
            response.headers["Cache-Control"] = "no-store"
        return response

    return app
