"""Crash safety: a process doing peer changes and settings changes is SIGKILLed at random moments, 1,000 changes
in all and at least 20 kills. After each kill, the next command finishes what the store's render journal says is
pending: the folder then equals a fresh render of the store, byte for byte, with no temp file (they may hold private
keys) and no folder of a removed peer left behind."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bulwark_vpn.render import layout
from bulwark_vpn.render.qr import qr_pngs
from bulwark_vpn.store import RENDER_SERVER, open_store
from tests.helpers import bulwark, clean_env

pytestmark = pytest.mark.slow

WORKER = """
import random, sys
from bulwark_vpn import service
from bulwark_vpn.errors import BulwarkError
from tests.helpers import context

ctx = context(sys.argv[1])
rnd = random.Random(int(sys.argv[2]))
names = [f"p{i}" for i in range(10)]
print("ready", flush=True)
while True:
    op = rnd.choice(["add", "add", "remove", "disable", "enable", "port", "dns"])
    try:
        if op == "add":
            service.add_peers(ctx, service.AddPeersRequest.parse([rnd.choice(names)]))
        elif op == "port":
            service.init_from_sources(ctx, flags={"server_port": str(rnd.randint(50000, 52000))})
        elif op == "dns":
            service.init_from_sources(ctx, flags={"peer_dns": rnd.choice(["auto", "1.1.1.1", "9.9.9.9,1.0.0.1"])})
        else:
            request = service.PeerNamesRequest.parse([rnd.choice(names)])
            if op == "remove":
                service.remove_peers(ctx, request)
            else:
                service.set_peers_enabled(ctx, request, op == "enable")
    except BulwarkError:
        pass  # a peer that is already there, or not there: a refusal is a change too, of nothing
    print("done", flush=True)
"""

SKIP = ("bulwark.db", "bulwark.db-wal", "bulwark.db-shm", ".bulwark.lock")


def fresh_render(config: Path) -> dict[str, bytes]:
    """Every file the store says the folder should hold (per the `files` layout)."""
    with open_store(config, read_only=True) as store:
        settings, key, peers = store.settings(), store.require_server_key(), store.peers()
        files = {rel: f.content for rel, f in layout.server_files(settings, key, store.server_peer_rows()).items()}
    if settings.files == "none":
        return files
    with_config = []
    for peer in peers:
        rendered = layout.peer_files(settings, key.public_key(), peer)
        files.update({rel: f.content for rel, f in rendered.items()})
        if layout.conf_path(peer) in rendered:
            with_config.append(peer)
    if settings.files == "configs":
        return files
    pngs = qr_pngs([files[layout.conf_path(p)].decode() for p in with_config])
    for peer, png in zip(with_config, pngs, strict=True):
        if png is not None:
            files[layout.qr_path(peer)] = png
    return files


def folder_files(config: Path) -> dict[str, bytes]:
    return {str(p.relative_to(config)): p.read_bytes() for p in config.rglob("*")
            if p.is_file() and p.name not in SKIP}


def run_and_kill(worker_code: str, config: Path, rnd: random.Random, longest: float) -> int:
    """Start a worker making changes, SIGKILL it after a random moment (up to `longest` s); how many it made."""
    worker = subprocess.Popen([sys.executable, "-c", worker_code, str(config), str(rnd.randrange(1 << 30))],
                              stdout=subprocess.PIPE, text=True, env=clean_env(), cwd=Path(__file__).parent.parent)
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "ready"
    time.sleep(rnd.uniform(0.05, longest))
    worker.send_signal(signal.SIGKILL)
    return worker.communicate()[0].split().count("done")


def assert_level_with_the_store(config: Path, when: str) -> None:
    """No temp file left, and the folder byte for byte a fresh render of the store."""
    assert not list(config.rglob(".bulwark-tmp-*")), f"temp files left after {when}"
    actual, expected = folder_files(config), fresh_render(config)
    assert sorted(actual) == sorted(expected), f"after {when}: files differ in name"
    differing = [rel for rel in expected if actual[rel] != expected[rel]]
    assert not differing, f"after {when}: stale {differing[:5]}"


def test_sigkill_at_random_moments_during_1000_changes_heals_at_the_next_command(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com", "--peers", "p0,p1,p2")
    rnd = random.Random(8)
    changes = kills = 0
    interrupted_journal = 0
    # Both counts are goals: on a fast machine 1,000 changes take fewer kills, so keep killing until both are met.
    while changes < 1000 or kills < 20:
        changes += run_and_kill(WORKER, config, rnd, 1.5)
        kills += 1
        with open_store(config, read_only=True) as store:
            interrupted_journal += bool(store.pending_renders())
        # The next command, whatever it is, brings the folder level with the store.
        bulwark(*rnd.choice([["peer", "list"], ["peer", "add", f"x{kills}"], ["init"]]), "--config-dir", str(config))
        with open_store(config, read_only=True) as store:
            assert store.pending_renders() == []
        assert_level_with_the_store(config, f"kill {kills}")
    print(f"{changes} changes, {kills} kills, {interrupted_journal} left a pending journal")
    assert kills >= 20


# -- the server config of a large gateway, rendered in the background ------------------------------------------

BIG_WORKER = """
import random, sys
from bulwark_vpn import service
from bulwark_vpn.errors import BulwarkError
from tests.helpers import context

ctx = context(sys.argv[1])
rnd = random.Random(int(sys.argv[2]))
names = [f"w{i}" for i in range(8)] + [f"peer{i}" for i in range(1, 9)]
print("ready", flush=True)
while True:
    op = rnd.choice(["add", "add", "remove", "disable", "enable"])
    try:
        if op == "add":
            service.add_peers(ctx, service.AddPeersRequest.parse([rnd.choice(names)]))
        else:
            request = service.PeerNamesRequest.parse([rnd.choice(names)])
            if op == "remove":
                service.remove_peers(ctx, request)
            else:
                service.set_peers_enabled(ctx, request, op == "enable")
    except BulwarkError:
        pass
    print("done", flush=True)
"""


def background_renderers(config: Path) -> list[int]:
    """The `bulwark render --background` processes working on this folder (started by the test's commands)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--background" in argv and str(config).encode() in argv and b"render" in argv:
            found.append(int(entry.name))
    return found


def wait_dead(pid: int, timeout: float = 60) -> None:
    """Until the process has exited (gone, or a zombie: its descriptors, and so its locks, are released)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} did not die within {timeout:g} s of SIGKILL")


def settled(config: Path, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open_store(config, read_only=True) as store:
            if not store.pending_renders():
                return True
        time.sleep(0.05)
    return False


def test_sigkill_between_a_peer_change_and_the_deferred_server_config_heals(tmp_path):
    """A gateway large enough that changes leave the server config to the background renderer: the changing
    process and the renderers are killed at random moments (before the renderer ran, while it waited for changes
    to settle, while it wrote); the next command makes sure a renderer runs, and store and files meet again."""
    from bulwark_vpn.service.files import DEFER_SERVER_BYTES
    from tests.helpers import insert_peers

    config = tmp_path / "big"
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com", "--subnet", "10.40.0.0/16",
            "--files", "configs")
    insert_peers(config, 1700)
    bulwark("render", "--config-dir", str(config))
    assert (config / "wg_confs/wg0.conf").stat().st_size > DEFER_SERVER_BYTES
    rnd = random.Random(12)
    changes = kills = renderer_kills = deferred_left = 0
    for round_number in range(25):
        changes += run_and_kill(BIG_WORKER, config, rnd, 1.2)
        kills += 1
        time.sleep(rnd.choice([0, 0.1, 0.35, 0.6]))  # before, while or after a renderer works
        for pid in background_renderers(config):
            os.kill(pid, signal.SIGKILL)
            renderer_kills += 1
            # A process killed inside sync(2) dies when the call returns, seconds later on a busy disk: until then it
            # still holds the render lock and counts as a running renderer. The crash is when it is gone.
            wait_dead(pid)
        with open_store(config, read_only=True) as store:
            deferred_left += RENDER_SERVER in store.pending_renders()
        bulwark(*rnd.choice([["peer", "list"], ["peer", "add", f"x{round_number}"], ["init"]]),
                "--config-dir", str(config))
        assert settled(config), f"the journal is still pending after round {round_number}"
        assert_level_with_the_store(config, f"round {round_number}")
    print(f"{changes} changes, {kills} kills of the changing process, {renderer_kills} of a renderer, "
          f"{deferred_left} times the server config was left pending")
    assert deferred_left >= 5 and renderer_kills >= 3
