"""The web pages (see the web UI): served by the same app, clients of the API like any other."""

from __future__ import annotations

from bulwark_vpn.web.access import Routes


def routes() -> Routes:
    return Routes()
