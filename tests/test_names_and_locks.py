"""Longer peer names with a config file name wg-quick accepts; a store or folder held by another process is one
line naming the holder after a bounded wait, never a traceback."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.gwlab import Lab
from tests.helpers import bulwark, clean_env, snapshot


def test_long_peer_names_keep_the_layout_and_get_a_file_name_wg_quick_accepts(lab: Lab) -> None:
    lab.init("--peers", "leo_macbook_pro")
    name = "a_very_long_peer_name_for_the_design_team_laptop_number_seven_x"  # 63 characters
    assert len(name) == 63
    lab.bulwark("peer", "add", name)
    assert (lab.config / "peer_leo_macbook_pro" / "peer_leo_macbook_pro.conf").is_file()
    lab.up()
    shown = json.loads(lab.bulwark("peer", "show", name, "--json").stdout)
    filename = shown["filename"]
    assert filename.endswith(".conf") and len(filename.removesuffix(".conf")) <= 15
    assert filename != json.loads(lab.bulwark("peer", "show", "leo_macbook_pro", "--json").stdout)["filename"]
    client = lab.add_client()
    text = "\n".join(line for line in shown["text"].splitlines() if not line.startswith("DNS")) + "\n"
    text = text.replace("AllowedIPs = 0.0.0.0/0, ::/0", "AllowedIPs = 10.13.13.0/24")
    path = lab.factory.tmpdir() / filename
    path.write_text(text)
    path.chmod(0o600)
    client.run(["wg-quick", "up", str(path)])  # its stem is the client's interface name
    try:
        assert client.ping("10.13.13.1", count=2)
    finally:
        client.run(["wg-quick", "down", str(path)], check=False)
    lab.bulwark("down")


@pytest.mark.slow
def test_a_store_held_by_another_writer_is_one_line_naming_it_after_a_bounded_wait(tmp_path: Path) -> None:
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--peers", "alice")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sqlite3, sys, time\n"
                               "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                               "db.execute('BEGIN IMMEDIATE'); print('held', flush=True); time.sleep(60)\n",
                               str(config / "bulwark.db")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = snapshot(config)
        started = time.monotonic()
        result = bulwark("peer", "add", "bob", "--config-dir", str(config), env=clean_env(BULWARK_LOCK_TIMEOUT="1"),
                         check=False)
        waited = time.monotonic() - started
        assert result.returncode == 1 and 0.9 < waited < 10
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "the store is locked by another writer" in lines[0], result.stderr
        assert f"pid {holder.pid}" in lines[0] and "Traceback" not in result.stderr
        assert snapshot(config) == before
    finally:
        holder.kill()
        holder.wait()
    bulwark("peer", "add", "bob", "--config-dir", str(config))


@pytest.mark.slow
def test_a_folder_held_by_another_command_is_one_line_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--peers", "alice")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, sys, time\n"
                               "fd = os.open(sys.argv[1], os.O_RDWR)\n"
                               "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                               "os.pwrite(fd, f'pid {os.getpid()}: bulwark peer add x\\n'.encode(), 0)\n"
                               "print('held', flush=True); time.sleep(60)\n",
                               str(config / ".bulwark.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = bulwark("peer", "remove", "alice", "--config-dir", str(config),
                         env=clean_env(BULWARK_LOCK_TIMEOUT="1"), check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert "the config folder is busy" in lines[0] and f"pid {holder.pid}: bulwark peer add x" in lines[0]
    finally:
        holder.kill()
        holder.wait()
    with sqlite3.connect(config / "bulwark.db") as db:
        assert db.execute("SELECT COUNT(*) FROM peers").fetchone()[0] == 1


@pytest.mark.slow  # waits out lock timeouts: about 2 s
def test_threads_of_one_process_queue_for_the_folder_without_a_false_timeout(tmp_path: Path) -> None:
    """The API's threads hold the folder lock one after the other as the same process and command: a thread whose
    wait is longer than the timeout in all, while the lock keeps changing hands, waits on (50 concurrent creations
    once got 503 'busy' here); a lock held by one holder longer than the timeout is still refused."""
    import threading

    from bulwark_vpn.errors import StoreError
    from bulwark_vpn.fsutil import SafeFolder
    from bulwark_vpn.service.context import folder_lock

    errors: list[Exception] = []
    done: list[int] = []

    def hold(index: int) -> None:
        try:
            with SafeFolder.open(tmp_path) as folder, folder_lock(folder, timeout=0.5):
                time.sleep(0.15)
                done.append(index)
        except StoreError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(8)]  # 8 x 0.15 s = 1.2 s > 0.5 s
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sorted(done) == list(range(8))

    with SafeFolder.open(tmp_path) as folder, folder_lock(folder, timeout=0.5):
        refused: list[Exception] = []
        waiter = threading.Thread(target=lambda: refused.extend(_try_lock(tmp_path)))
        started = time.monotonic()
        waiter.start()
        waiter.join()
        assert len(refused) == 1 and "the config folder is busy" in str(refused[0])
        assert 0.45 < time.monotonic() - started < 3


def _try_lock(folder_path: Path) -> list[Exception]:
    from bulwark_vpn.errors import StoreError
    from bulwark_vpn.fsutil import SafeFolder
    from bulwark_vpn.service.context import folder_lock

    try:
        with SafeFolder.open(folder_path) as folder, folder_lock(folder, timeout=0.5):
            return []
    except StoreError as exc:
        return [exc]
