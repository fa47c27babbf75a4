"""`bulwark demo` runs the notes' local trial for real and leaves nothing behind."""

import subprocess
from pathlib import Path

import pytest

from tests.helpers import TEST_RUN_DIR, bulwark


def _leftovers() -> tuple[list[str], list[str], list[str]]:
    namespaces = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                  if n.startswith("bwdemo-")]
    sockets = [p.name for p in Path("/var/run/wireguard").glob("bwdemo*")]
    state = [p.name for p in TEST_RUN_DIR.glob("bwdemo*")]
    return namespaces, sockets, state


@pytest.mark.netns
def test_demo_pings_the_server_through_the_tunnel_and_cleans_up():
    result = bulwark("demo", timeout=180, process=True)
    assert "3 packets transmitted, 3 received" in result.stdout
    assert "leo_mac (online)" in result.stdout
    assert "Endpoint = 172.31.251.1:51821" in result.stderr or ":51821 (the forwarded port)" in result.stderr
    assert "wg-quick up" in result.stderr and "wg-quick down" in result.stderr
    assert _leftovers() == ([], [], [])
