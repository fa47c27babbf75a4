"""Driving Debian's Chromium for the web UI tests (Playwright for Python, pointed at /usr/bin/chromium: browsers
cannot be downloaded here), inside a network namespace when asked; axe-core run in the page; QR codes read back
from screenshots with zbarimg.

Chromium runs headless with no sandbox (the tests run as root) and with everything that would call Google turned
off. Inside a namespace it is started through `ip netns exec` by a small wrapper script: Playwright talks to it
over a pipe, so the namespace changes only what the page can reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
AXE_VERSION = "4.14.1"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
                 "--metrics-recording-only", "--no-default-browser-check", "--disable-features=Translate,MediaRouter"]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def missing_tools() -> list[str]:
    """What the browser tests need that is not installed (`make test` installs them)."""
    missing = [str(CHROMIUM)] if not CHROMIUM.exists() else []
    if shutil.which("zbarimg") is None:
        missing.append("zbarimg (zbar-tools)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[test]')")
    return missing


@contextmanager
def chromium(netns: str | None = None) -> Iterator[Any]:
    """A headless Chromium (Playwright Browser), inside `netns` when given; closed and its profile removed after."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bulwark-chromium-") as tmp:
        executable = CHROMIUM
        if netns is not None:
            executable = Path(tmp) / "chromium-in-netns"
            executable.write_text(f'#!/bin/sh\nexec ip netns exec {netns} {CHROMIUM} "$@"\n')
            executable.chmod(0o700)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS,
                                                 env={**os.environ, "HOME": tmp}, timeout=60_000)
            try:
                yield browser
            finally:
                browser.close()


class PageProblems:
    """Everything a page said went wrong: script errors, CSP refusals, console errors other than the API's own
    4xx answers the page expects (401 before sign-in, 404 for a missing peer)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("pageerror", lambda exc: self.lines.append(f"script error: {exc}"))
        page.on("console", self._console)
        return page

    def _console(self, message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or "Content-Security-Policy" in text:
            self.lines.append(f"CSP: {text}")
        elif message.type == "error" and "Failed to load resource" not in text:
            self.lines.append(f"console: {text}")


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict[str, Any]]:
    """axe-core's violations of the given impacts on the page as it is now. The script is evaluated through the
    DevTools protocol, which the page's Content-Security-Policy does not govern, so the policy stays on."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text())
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations.map(v => ("
        "{id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))")
    return [v for v in found if v["impact"] in impacts]


def decode_qr(png: Path) -> str:
    """The text of the one QR code in a PNG, read by zbarimg (a real decoder, not ours)."""
    result = subprocess.run(["zbarimg", "--quiet", "--raw", "-Sbinary", str(png)], capture_output=True, timeout=30,
                            check=False)
    if result.returncode != 0:
        raise AssertionError(f"zbarimg found no QR code in {png}: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode()
