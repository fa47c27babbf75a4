"""Backup and restore: a round trip keeps every key and file, an encrypted backup opens with Debian's `age`, and every
bad file (truncated, corrupted, tampered, wrong passphrase, wrong format, future version) or a full disk is one line,
the right exit code, and the folder byte for byte as before."""

from __future__ import annotations

import gzip
import io
import json
import os
import pty
import select
import shutil
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pytest

from bulwark_vpn import backupfile
from bulwark_vpn.store import SCHEMA_VERSION
from tests.helpers import add_peers, bulwark, snapshot

PASSPHRASE = "correct horse battery staple"


def _init(config: Path) -> None:
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com", "--peers", "alice,bob,3",
            "--subnet6", "fd13:13:13::/64")
    add_peers(config, ["own_key"], public_key=subprocess.run(
        ["wg", "pubkey"], input=subprocess.run(["wg", "genkey"], capture_output=True, text=True).stdout,
        capture_output=True, text=True).stdout.strip(), server_allowed_ips="192.168.77.0/24")
    bulwark("peer", "disable", "bob", "--config-dir", str(config))


def tables(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table, except what a restore deliberately renews (the gateway id, the revision), the
    render journal, and the audit entry each backup writes after its snapshot."""
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        out = {}
        for name in names:
            if name == "pending_renders":
                continue
            where = " WHERE operation != 'backup'" if name == "audit" else ""
            rows = conn.execute(f"SELECT * FROM {name}{where}").fetchall()  # noqa: S608 - names from sqlite_master
            if name == "meta":
                rows = [r for r in rows if r[0] not in ("gateway_id", "revision")]
            out[name] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()


def _backup(config: Path, out: Path, *extra: str, input: str | None = None) -> None:
    bulwark("backup", "--config-dir", str(config), "--out", str(out), *extra, input=input)


def test_a_restored_folder_holds_the_same_store_and_the_same_files(tmp_path):
    config, restored = tmp_path / "c", tmp_path / "r"
    _init(config)
    out = tmp_path / "b.tar.gz"
    result = json.loads(bulwark("backup", "--config-dir", str(config), "--out", str(out), "--json").stdout)
    assert out.stat().st_mode & 0o777 == 0o600
    assert result["manifest"]["peer_count"] == 4 and result["manifest"]["schema_version"] == SCHEMA_VERSION
    with tarfile.open(out) as tar:
        assert tar.getnames() == ["manifest.json", "bulwark.db"]  # inspectable with plain tar
    bulwark("restore", str(out), "--config-dir", str(restored))
    assert tables(restored / "bulwark.db") == tables(config / "bulwark.db")
    before = {k: v for k, v in snapshot(config).items() if not k.startswith("bulwark.db")}
    after = {k: v for k, v in snapshot(restored).items() if not k.startswith("bulwark.db")}
    assert after == before  # keys, PSKs, configs, QR codes: byte for byte
    listed = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(restored)).stdout)["peers"]
    assert {p["name"]: p["enabled"] for p in listed} == {"alice": True, "bob": False, "peer3": True, "own_key": True}
    with sqlite3.connect(config / "bulwark.db") as a, sqlite3.connect(restored / "bulwark.db") as b:
        ids = [c.execute("SELECT value FROM meta WHERE key='gateway_id'").fetchone()[0] for c in (a, b)]
    assert ids[0] != ids[1]  # a new gateway: commands never take the original (maybe still running) for it


def test_restore_refuses_a_store_in_use_and_with_force_keeps_a_copy(tmp_path):
    config, other = tmp_path / "c", tmp_path / "o"
    _init(config)
    bulwark("init", "--config-dir", str(other), "--peers", "zed")
    out = tmp_path / "b.tar.gz"
    _backup(config, out)
    before = snapshot(other)
    refused = bulwark("restore", str(out), "--config-dir", str(other), check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "in use" in refused.stderr and "--force" in refused.stderr
    assert snapshot(other) == before
    done = json.loads(bulwark("restore", str(out), "--config-dir", str(other), "--force", "--json").stdout)
    copy = Path(done["replaced_copy"])
    assert copy.parent == other / "backups" and copy.stat().st_mode & 0o777 == 0o600
    assert not (other / "peer_zed").exists() and (other / "peer_alice/peer_alice.conf").is_file()
    # The copy is a backup itself: restoring it brings zed back.
    bulwark("restore", str(copy), "--config-dir", str(tmp_path / "back"))
    assert (tmp_path / "back/peer_zed/peer_zed.conf").is_file()


def _age_decrypt(path: Path, passphrase: str, out: Path) -> None:
    """Debian's `age -d`, typing the passphrase at its prompt on a terminal (age reads it from /dev/tty only)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execvp("age", ["age", "-d", "-o", str(out), str(path)])  # noqa: S606 - a fixed argv
    seen = b""
    try:
        while b"passphrase" not in seen.lower():
            ready, _, _ = select.select([fd], [], [], 20)
            assert ready, f"age asked for nothing: {seen!r}"
            seen += os.read(fd, 1024)
        os.write(fd, passphrase.encode() + b"\n")
        while True:
            ready, _, _ = select.select([fd], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("age") is None, reason="Debian's age is not installed (make test installs it)")
def test_an_encrypted_backup_opens_with_debians_age_and_restores_with_the_passphrase(tmp_path):
    config = tmp_path / "c"
    _init(config)
    secret = tmp_path / "pass"
    secret.write_text(PASSPHRASE + "\n")
    out = tmp_path / "b.tar.gz.age"
    _backup(config, out, "--encrypt", "--passphrase-file", str(secret))
    data = out.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n") and b"PrivateKey" not in data
    plain = tmp_path / "plain.tar.gz"
    _age_decrypt(out, PASSPHRASE, plain)
    with tarfile.open(plain) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest["format"] == "bulwark-backup" and manifest["peer_count"] == 4
    restored = tmp_path / "r"
    bulwark("restore", str(out), "--config-dir", str(restored), "--passphrase-stdin", input=PASSPHRASE + "\n")
    assert tables(restored / "bulwark.db") == tables(config / "bulwark.db")
    # Never from the command line: there is no flag that takes the passphrase itself.
    usage = bulwark("backup", "--config-dir", str(config), "--encrypt", "--passphrase", PASSPHRASE, check=False)
    assert usage.returncode == 2 and PASSPHRASE not in usage.stderr


# -- bad input -------------------------------------------------------------------------------------------------


def _archive(db: Path, manifest: dict, *, extra: list[tarfile.TarInfo] | None = None) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb") as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        body = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        for member in extra or []:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
        data = db.read_bytes()
        info = tarfile.TarInfo("bulwark.db")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _parts(backup: Path, tmp: Path) -> tuple[Path, dict]:
    with tarfile.open(backup) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        db = tmp / "extracted.db"
        db.write_bytes(tar.extractfile("bulwark.db").read())  # type: ignore[union-attr]
    return db, manifest


def _resealed(db: Path, manifest: dict) -> dict:
    sha, size = backupfile.file_digest(db)
    return {**manifest, "sha256": sha, "size": size}


def _bad_files(tmp: Path, good: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (file content, what the one line must say)."""
    data = good.read_bytes()
    db, manifest = _parts(good, tmp)
    tampered = tmp / "tampered.db"
    shutil.copy(db, tampered)
    with sqlite3.connect(tampered) as conn:
        conn.execute("UPDATE peers SET address4='10.13.13.99' WHERE name='alice'")
    newer = tmp / "newer.db"
    shutil.copy(db, newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    unsafe = tmp / "unsafe.db"
    shutil.copy(db, unsafe)
    with sqlite3.connect(unsafe) as conn:
        conn.execute("UPDATE peers SET address6='fd13:13:13::2%x\nPostUp = touch /tmp/pwned' WHERE name='alice'")
    link = tarfile.TarInfo("bulwark.db.link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    traversal = tarfile.TarInfo("../../etc/cron.d/evil")
    traversal.size = 5
    encrypted = backupfile.encrypt(data, backupfile.Passphrase("another passphrase"))
    return {
        "truncated": (data[: len(data) // 2], "truncated"),
        "corrupted": (data[:40] + bytes(b ^ 0xFF for b in data[40:200]) + data[200:], "damaged"),
        "tampered": (_archive(tampered, manifest), "checksum does not match"),
        "resealed-unsafe": (_archive(unsafe, _resealed(unsafe, manifest)), "damaged or unsafe value"),
        "wrong-format-text": (b"[Interface]\nPrivateKey = x\n", "not a Bulwark backup"),
        "wrong-format-tar": (_archive(db, {"hello": "world"}), "not a Bulwark backup"),
        "future-format": (_archive(db, {**manifest, "format_version": 9}), "newer Bulwark"),
        "future-schema": (_archive(newer, {**_resealed(newer, manifest), "schema_version": SCHEMA_VERSION + 1}),
                          "newer than this Bulwark"),
        "symlink-member": (_archive(db, manifest, extra=[link]), "unexpected member"),
        "traversal-member": (_archive(db, manifest, extra=[traversal]), "unexpected member"),
        "wrong-passphrase": (encrypted, "wrong passphrase"),
        "empty": (b"", "not a Bulwark backup"),
    }


@pytest.mark.slow
def test_every_bad_backup_is_one_line_exit_2_and_changes_nothing(tmp_path):
    source, target = tmp_path / "src", tmp_path / "target"
    _init(source)
    bulwark("init", "--config-dir", str(target), "--peers", "keep_me")
    good = tmp_path / "good.tar.gz"
    _backup(source, good)
    secret = tmp_path / "pass"
    secret.write_text(PASSPHRASE + "\n")
    before = snapshot(target)
    for name, (content, said) in _bad_files(tmp_path, good).items():
        bad = tmp_path / f"{name}.bak"
        bad.write_bytes(content)
        result = bulwark("restore", str(bad), "--config-dir", str(target), "--force", "--passphrase-file",
                         str(secret), check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr)
        assert len(lines) == 1 and str(bad) in lines[0] and said in lines[0], (name, result.stderr)
        assert "PostUp" not in lines[0] or name == "resealed-unsafe"
        assert snapshot(target) == before, name
    assert not any(p.name.startswith(".bulwark-tmp") for p in target.iterdir())


def test_an_older_schema_is_migrated_and_a_fresh_folder_left_as_it_was_on_failure(tmp_path):
    config = tmp_path / "c"
    _init(config)
    good = tmp_path / "good.tar.gz"
    _backup(config, good)
    db, manifest = _parts(good, tmp_path)
    with sqlite3.connect(db) as conn:
        # Back to schema 1 for real: without what schemas 2, 3 and 4 added.
        for trigger in ("peers_inserted", "peers_updated", "peers_deleted"):
            conn.execute(f"DROP TRIGGER {trigger}")
        for table in ("pending_renders", "users", "recovery_codes", "setup_links", "sessions", "tokens",
                      "auth_failures", "share_links", "audit", "traffic", "peer_endpoints", "peer_changes"):
            conn.execute(f"DROP TABLE {table}")
        for index in ("peers_owner", "peers_expires", "peers_address4_num"):
            conn.execute(f"DROP INDEX {index}")
        for column in ("owner", "expires_at", "address4_num"):
            conn.execute(f"ALTER TABLE peers DROP COLUMN {column}")
        conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    old = tmp_path / "old.tar.gz"
    old.write_bytes(_archive(db, {**_resealed(db, manifest), "schema_version": 1}))
    result = json.loads(bulwark("restore", str(old), "--config-dir", str(tmp_path / "r"), "--json").stdout)
    assert result["migrated_from"] == 1 and result["peer_count"] == 4
    # A failed restore into a folder that did not exist leaves no folder behind.
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(good.read_bytes()[:100])
    assert bulwark("restore", str(bad), "--config-dir", str(tmp_path / "new"), check=False).returncode == 2
    assert not (tmp_path / "new").exists()


def test_a_backup_is_never_written_through_a_link(tmp_path):
    config = tmp_path / "c"
    _init(config)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "out.tar.gz"
    link.symlink_to(victim)
    result = bulwark("backup", "--config-dir", str(config), "--out", str(link), check=False)
    assert result.returncode == 2 and "symbolic link" in result.stderr and str(link) in result.stderr
    assert victim.read_text() == "precious\n" and link.is_symlink()


def test_a_full_disk_during_restore_changes_nothing(tmp_path):
    from tests.test_safety import _tmpfs

    source = tmp_path / "src"
    _init(source)
    add_peers(source, [f"p{i}" for i in range(60)])
    good = tmp_path / "good.tar.gz"
    _backup(source, good)
    with _tmpfs(tmp_path / "mnt", "3m") as mnt:
        target = mnt / "c"
        bulwark("init", "--config-dir", str(target), "--peers", "keep_me")
        filler = mnt / "filler"
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        os.truncate(filler, filler.stat().st_size - 200_000)  # room for a little, not for the restored store
        before = snapshot(target)
        result = bulwark("restore", str(good), "--config-dir", str(target), "--force", check=False)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "the disk is full" in lines[0], result.stderr
        after = snapshot(target)
        assert after.pop("bulwark.db-wal", (b"",))[0] == b""
        after.pop("bulwark.db-shm", None)
        before.pop("bulwark.db-wal", None)
        before.pop("bulwark.db-shm", None)
        assert after == before
        filler.unlink()
        bulwark("restore", str(good), "--config-dir", str(target), "--force")
        assert (target / "peer_p59/peer_p59.conf").is_file()


def test_a_damaged_store_is_replaced_with_force_and_its_bytes_kept(tmp_path):
    config, broken = tmp_path / "c", tmp_path / "broken"
    _init(config)
    good = tmp_path / "good.tar.gz"
    _backup(config, good)
    bulwark("init", "--config-dir", str(broken), "--peers", "x")
    for suffix in ("-wal", "-shm"):
        (broken / f"bulwark.db{suffix}").unlink(missing_ok=True)
    damaged = b"SQLite format 3\x00" + os.urandom(4000)
    (broken / "bulwark.db").write_bytes(damaged)
    refused = bulwark("restore", str(good), "--config-dir", str(broken), check=False)
    assert refused.returncode == 2 and "cannot be opened" in refused.stderr
    bulwark("restore", str(good), "--config-dir", str(broken), "--force")
    kept = list((broken / "backups").glob("replaced-*-bulwark.db"))
    assert len(kept) == 1 and kept[0].read_bytes() == damaged
    assert tables(broken / "bulwark.db") == tables(config / "bulwark.db")


def test_a_crash_before_the_rename_leaves_nothing_the_next_command_keeps(tmp_path):
    config = tmp_path / "c"
    _init(config)
    leftover = config / ".bulwark-tmp-replace-deadbeef"
    leftover.mkdir(mode=0o700)
    (leftover / "bulwark.db").write_bytes(b"keys")
    (config / ".bulwark.lock").write_text("pid 999999: bulwark restore\n")  # its holder died
    bulwark("peer", "add", "after", "--config-dir", str(config))
    assert not leftover.exists()


@pytest.mark.slow
def test_a_restore_renders_more_peer_folders_than_the_process_may_hold_descriptors(tmp_path):
    """65,000 peer folders are more than a process may open at once: folders are opened one at a time."""
    import resource
    import sys

    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--subnet", "10.40.0.0/22")
    add_peers(config, [f"p{i}" for i in range(300)])
    good = tmp_path / "good.tar.gz"
    _backup(config, good)
    from tests.helpers import clean_env

    result = subprocess.run(
        [sys.executable, "-m", "bulwark_vpn", "restore", str(good), "--config-dir", str(tmp_path / "r")],
        capture_output=True, text=True, env=clean_env(), timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200)),  # noqa: PLW1509
    )
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "r").glob("peer_p*/peer_p*.conf"))) == 300
