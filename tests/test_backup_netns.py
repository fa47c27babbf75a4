"""Backup, restore and import with real gateways in namespaces: disaster recovery on a new gateway with the same
address, a backup of a running 1,000-peer gateway while another process adds peers, and each import format taking
over from a server that ran from that format's files, with the same client configs reconnecting."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.gwlab import SERVER_WAN, Lab, cleanup_lab, make_lab
from tests.helpers import bulwark, clean_env
from tests.netns import veth
from tests.test_backup import tables

FIXTURES = Path(__file__).parent / "fixtures" / "import"


def _wait_ping(client, address: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.ping(address, count=1, timeout=1):
            return True
    return False


@pytest.mark.slow
def test_a_backup_restored_on_a_new_gateway_serves_the_same_client_unchanged(lab: Lab, tmp_path):
    lab.init("--peers", "alice,bob")
    lab.up()
    client, _ = lab.connect("alice")
    assert client.ping("10.13.13.1", count=2)
    backup = tmp_path / "a.tar.gz"
    bulwark("backup", "--config-dir", str(lab.config), "--out", str(backup))
    # A restore never replaces the store of the gateway that runs from it.
    before = sorted(p.name for p in lab.config.rglob("*"))
    refused = bulwark("restore", str(backup), "--config-dir", str(lab.config), "--force", check=False)
    assert refused.returncode == 2 and "running gateway" in refused.stderr
    assert sorted(p.name for p in lab.config.rglob("*")) == before
    # Gateway A is lost: its namespace (and the client's link to it) disappears.
    lab.bulwark("down")
    lab.server.delete()
    lab.factory.namespaces.remove(lab.server)
    # Gateway B: a new namespace with the same public address; the backup restored into a new folder.
    other = make_lab(lab.factory)
    try:
        bulwark("restore", str(backup), "--config-dir", str(other.config))
        other.bulwark("up")
        veth(other.server, client, "172.31.2.1/24", "172.31.2.2/24")
        client.ip("route", "replace", f"{SERVER_WAN}/32", "via", "172.31.2.1")
        assert _wait_ping(client, "10.13.13.1"), "the client did not reconnect to the restored gateway"
    finally:
        other.bulwark("down", check=False)
        cleanup_lab(other)


_WRITER = """
import sys, time
from pathlib import Path
from bulwark_vpn import service
from tests.helpers import context
ctx = context(Path(sys.argv[1]))
acks = open(sys.argv[2], "a", buffering=1)
stop = Path(sys.argv[3])
n = 0
while not stop.exists() and n < 400:
    n += 1
    service.add_peers(ctx, service.AddPeersRequest.parse([f"late{n}"]))
    acks.write(f"late{n}\\n")
"""


@pytest.mark.slow
def test_a_backup_of_a_running_1000_peer_gateway_while_peers_are_added(lab: Lab, tmp_path):
    lab.init("--peers", "1000", "--subnet", "10.14.0.0/20")
    lab.up()
    acks, stop = tmp_path / "acks", tmp_path / "stop"
    acks.touch()
    writer = lab.server.popen([sys.executable, "-c", _WRITER, str(lab.config), str(acks), str(stop)],
                              cwd=str(Path(__file__).parent.parent), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        lab.wait_for(lambda: len(acks.read_text().split()) >= 5, 60)
        acknowledged = set(acks.read_text().split())  # acknowledged before the snapshot began
        backup = tmp_path / "b.tar.gz"
        bulwark("backup", "--config-dir", str(lab.config), "--out", str(backup))
        time.sleep(0.5)
        assert len(acks.read_text().split()) > len(acknowledged), "no peer was added while the backup ran"
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert writer.returncode == 0, writer.stderr.read().decode() if writer.stderr else ""
    restored = tmp_path / "restored"
    bulwark("restore", str(backup), "--config-dir", str(restored))
    snapshot_db = tmp_path / "snapshot.db"
    with tarfile.open(backup) as tar:
        snapshot_db.write_bytes(tar.extractfile("bulwark.db").read())  # type: ignore[union-attr]
    assert tables(restored / "bulwark.db") == tables(snapshot_db)
    with sqlite3.connect(restored / "bulwark.db") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM peers")}
    assert acknowledged <= names and {f"peer{i}" for i in range(1, 1001)} <= names
    assert len(list(restored.glob("peer*/peer*.conf"))) == len(names)


# -- imports: a server running from the tool's files, then Bulwark in its place --------------------------------


def _client_text(path: Path) -> str:
    # wg-quick's DNS= needs resolvconf, which these namespaces lack (as in the gateway lab).
    return "\n".join(line for line in path.read_text().splitlines() if not line.startswith("DNS")) + "\n"


CASES = {
    "wg-quick": ("wg-quick/wg0.conf", "wg-quick/phone.conf", "10.20.0.1"),
    "pivpn": ("pivpn/wg0.conf", "pivpn/configs/alice.conf", "10.6.0.1"),
    "wg-easy-v14": ("wg-easy-v14/wg0.conf", "wg-easy-v14/client-AlicesPhone.conf", "10.8.0.1"),
    "wg-easy-v15": ("wg-easy-v15/wg0.conf", "wg-easy-v15/client-AlicesPhone.conf", "10.8.0.1"),
}


def _import_args(kind: str, root: Path) -> list[str]:
    if kind == "wg-quick":
        return ["wg-quick", str(root / "wg-quick/wg0.conf"), str(root / "wg-quick/laptop.conf"),
                str(root / "wg-quick/phone.conf")]
    if kind == "pivpn":
        return ["pivpn", str(root / "pivpn")]
    if kind == "wg-easy-v14":
        return ["wg-easy", str(root / "wg-easy-v14/wg0.json")]
    return ["wg-easy", str(root / "wg-easy-v15/wg-easy.db")]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CASES))
def test_bulwark_takes_over_from_a_server_running_from_imported_files(lab: Lab, tmp_path, kind):
    root = tmp_path / "fixtures"
    shutil.copytree(FIXTURES, root)
    server_conf, client_conf, server_address = CASES[kind]
    # The old server: wg-quick from the tool's own server config (its hooks run inside the namespace only).
    old_iface = lab.factory.ifname("old")
    old_conf = lab.factory.tmpdir() / f"{old_iface}.conf"
    old_conf.write_text(re.sub(r"\bwg0\b", old_iface, (root / server_conf).read_text()))
    old_conf.chmod(0o600)
    env = {"WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    up = lab.server.run(["env", *(f"{k}={v}" for k, v in env.items()), "wg-quick", "up", str(old_conf)],
                        check=False)
    assert up.returncode == 0, up.stderr.decode()
    client = lab.add_client()
    lab.factory.wg_quick_up(client, _client_text(root / client_conf))
    assert _wait_ping(client, server_address), f"the client did not reach the {kind} server"
    lab.server.run(["env", *(f"{k}={v}" for k, v in env.items()), "wg-quick", "down", str(old_conf)])
    # Bulwark in its place, from the same files; the client config is not touched.
    extra = clean_env(WG_HOST=SERVER_WAN)
    bulwark("import", *_import_args(kind, root), "--config-dir", str(lab.config), env=extra)
    lab.bulwark("init", "--interface", lab.iface)  # a unique interface name for the test (the files say wg0)
    lab.up()
    assert _wait_ping(client, server_address), f"the client did not reconnect after the {kind} import"
    status = json.loads(lab.bulwark("status", "--json").stdout)
    assert any(p.get("latest_handshake") for p in status["peers"]), status
