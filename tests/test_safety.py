"""The config folder under attack and under stress: symbolic links planted where Bulwark writes, a read-only or
full disk, an empty store, a config too large for a QR code, an empty --config-dir. Each refusal is one line,
the right exit code, and the folder (and anything a link points to) byte for byte as before."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import bulwark, snapshot


def _init(config: Path, *extra: str) -> None:
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com", "--peers", "alice", *extra)


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    (victim / "precious").write_text("do not touch\n")
    os.chmod(victim / "precious", 0o644)
    return victim


def _refused(result: subprocess.CompletedProcess, link: Path) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(link) in lines[0] and ("symbolic link" in lines[0]), lines[0]


@pytest.mark.parametrize("folder", ["peer_bob", "server", "wg_confs"])
def test_a_link_planted_where_a_folder_goes_is_refused_and_never_followed(tmp_path, folder):
    config = tmp_path / "c"
    _init(config)
    victim = _victim(tmp_path)
    if (config / folder).exists():
        import shutil

        shutil.rmtree(config / folder)
    (config / folder).symlink_to(victim)
    before, victim_before = snapshot(config), snapshot(victim)
    victim_mode = victim.stat().st_mode
    result = bulwark("peer", "add", "bob", "--config-dir", str(config), check=False)
    _refused(result, config / folder)
    assert snapshot(victim) == victim_before and victim.stat().st_mode == victim_mode
    # The store did not take bob: nothing changed, and after the link is gone the same command works.
    assert snapshot(config) == before
    (config / folder).unlink()
    bulwark("peer", "add", "bob", "--config-dir", str(config))
    assert snapshot(victim) == victim_before and (config / folder).is_dir() and not (config / folder).is_symlink()


@pytest.mark.parametrize("name", ["peer_alice/privatekey-peer_alice", "peer_alice/peer_alice.conf",
                                  "server/privatekey-server", "wg_confs/wg0.conf"])
def test_a_link_planted_where_a_file_goes_is_refused_and_its_target_untouched(tmp_path, name):
    config = tmp_path / "c"
    _init(config)
    victim = _victim(tmp_path) / "precious"
    (config / name).unlink()
    (config / name).symlink_to(victim)
    before = snapshot(config)
    # A changed client-facing setting re-renders every file.
    result = bulwark("init", "--config-dir", str(config), "--server-port", "51999", check=False)
    _refused(result, config / name)
    assert victim.read_text() == "do not touch\n" and victim.stat().st_mode & 0o777 == 0o644
    assert snapshot(config) == before


def test_the_config_folder_store_and_lock_as_links_are_refused(tmp_path):
    real = tmp_path / "real"
    _init(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    _refused(bulwark("peer", "add", "bob", "--config-dir", str(link), check=False), link)
    _refused(bulwark("init", "--config-dir", str(link), check=False), link)

    victim = _victim(tmp_path) / "precious"
    other = tmp_path / "other"
    _init(other)
    (other / "bulwark.db").rename(tmp_path / "moved.db")
    (other / "bulwark.db").symlink_to(tmp_path / "moved.db")
    _refused(bulwark("peer", "list", "--config-dir", str(other), check=False), other / "bulwark.db")

    third = tmp_path / "third"
    _init(third)
    (third / ".bulwark.lock").unlink()
    (third / ".bulwark.lock").symlink_to(victim)
    _refused(bulwark("peer", "add", "bob", "--config-dir", str(third), check=False), third / ".bulwark.lock")
    assert victim.read_text() == "do not touch\n"


def test_removing_a_peer_whose_folder_became_a_link_is_refused(tmp_path):
    config = tmp_path / "c"
    _init(config, "--peers", "alice,bob")
    victim = _victim(tmp_path)
    import shutil

    shutil.rmtree(config / "peer_bob")
    (config / "peer_bob").symlink_to(victim)
    before = snapshot(config)
    result = bulwark("peer", "remove", "bob", "--config-dir", str(config), check=False)
    _refused(result, config / "peer_bob")
    assert (victim / "precious").read_text() == "do not touch\n"
    assert snapshot(config) == before


def test_doctor_names_links_in_the_config_folder(tmp_path):
    config = tmp_path / "c"
    _init(config)
    (config / "planted").symlink_to("/etc/shadow")
    result = bulwark("doctor", "--json", "--config-dir", str(config), check=False)
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["permissions"]["status"] == "fail" and "planted" in checks["permissions"]["evidence"]


def test_an_empty_config_dir_value_is_refused(tmp_path):
    out = bulwark("init", "--config-dir", "", check=False)
    assert out.returncode == 2 and "invalid --config-dir: ''" in out.stderr
    from tests.helpers import clean_env

    out = bulwark("peer", "list", env=clean_env(BULWARK_CONFIG_DIR=""), check=False)
    assert out.returncode == 2 and "invalid BULWARK_CONFIG_DIR: ''" in out.stderr


def test_an_empty_store_is_an_error_never_a_silent_new_server(tmp_path):
    config = tmp_path / "c"
    _init(config)
    for suffix in ("-wal", "-shm"):
        (config / f"bulwark.db{suffix}").unlink(missing_ok=True)
    (config / "bulwark.db").write_bytes(b"")
    before = snapshot(config)
    for args in (["peer", "list"], ["init"], ["peer", "add", "bob"], ["up"]):
        result = bulwark(*args, "--config-dir", str(config), check=False)
        assert result.returncode == 2 and "the store is empty (0 bytes)" in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(config) == before


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_folder_serves_read_commands_and_refuses_changes_in_one_line(tmp_path):
    with _tmpfs(tmp_path / "mnt", "16m") as mnt:
        config = mnt / "c"
        _init(config, "--peers", "alice,bob")
        expected_list = bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        assert bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout == expected_list
        assert "[Interface]" in bulwark("peer", "show", "bob", "--config-dir", str(config)).stdout
        status = bulwark("status", "--json", "--config-dir", str(config), check=False)
        assert status.returncode == 1 and json.loads(status.stdout)["up"] is False
        out = tmp_path / "deploy"
        bulwark("deploy", "docker", "--out", str(out), "--config-dir", str(config))
        assert (out / "compose.yaml").is_file()
        result = bulwark("peer", "add", "carol", "--config-dir", str(config), check=False)
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
        assert "read-only" in result.stderr and "carol" not in bulwark(
            "peer", "list", "--config-dir", str(config)).stdout


def test_a_full_disk_changes_nothing_and_a_retry_works_once_there_is_room(tmp_path):
    with _tmpfs(tmp_path / "mnt", "2m") as mnt:
        config = mnt / "c"
        _init(config, "--peers", "alice,bob")
        filler = mnt / "filler"
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        before = snapshot(config)
        result = bulwark("peer", "add", "carol", "--config-dir", str(config), check=False)
        assert result.returncode == 1, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "the disk is full" in result.stderr
        after = snapshot(config)
        # SQLite may leave its (empty) write-ahead log and shared-memory index behind: nothing in them.
        assert after.pop("bulwark.db-wal", (b"",))[0] == b""
        after.pop("bulwark.db-shm", None)
        assert after == before
        filler.unlink()
        bulwark("peer", "add", "carol", "--config-dir", str(config))  # not "already exists"
        assert (config / "peer_carol/peer_carol.conf").is_file()
        assert not [p for p in config.rglob(".bulwark-tmp-*")]


def test_a_config_too_large_for_a_qr_code_gets_no_png_and_a_warning_never_a_failure(tmp_path):
    config = tmp_path / "c"
    _init(config)
    many = ",".join(f"10.{i // 250}.{i % 250}.0/24" for i in range(300))
    result = bulwark("peer", "add", "big", "--allowed-ips", many, "--config-dir", str(config))
    assert "too large for a QR code" in result.stderr
    assert (config / "peer_big/peer_big.conf").is_file() and not (config / "peer_big/peer_big.png").exists()
    # init and the other peers keep working; a QR code for it is a clean refusal.
    bulwark("init", "--config-dir", str(config), "--server-port", "51999")
    assert (config / "peer_alice/peer_alice.png").is_file()
    qr = bulwark("peer", "show", "big", "--qr", "--config-dir", str(config), check=False)
    assert qr.returncode == 2 and "too large for a QR code" in qr.stderr


def test_up_without_a_store_and_without_input_refuses_with_the_init_hint(tmp_path):
    config = tmp_path / "typo"
    result = bulwark("up", "--config-dir", str(config), check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "nothing to set one up from" in result.stderr and f"bulwark init --config-dir {config}" in result.stderr
    assert not config.exists()
    down = bulwark("down", "--config-dir", str(config), check=False)
    assert down.returncode == 2 and str(config) in down.stderr and "no interface given" not in down.stderr
