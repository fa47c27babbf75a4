"""Several `bulwark` processes at once: 8 processes add 100 peers each into one store."""

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from bulwark_vpn.render.wgquick import parse_config
from tests.helpers import add_peers, bulwark

pytestmark = pytest.mark.slow


def _add_many(config_dir: str, worker: int) -> None:
    for i in range(100):
        add_peers(Path(config_dir), [f"w{worker}p{i}"])


def test_eight_processes_adding_100_peers_each(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--subnet", "10.40.0.0/16", "--server-url", "vpn.example.com")
    ctx = multiprocessing.get_context("spawn")  # separate interpreters, like separate `bulwark` processes
    workers = [ctx.Process(target=_add_many, args=(str(config), w)) for w in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=600)
    assert [w.exitcode for w in workers] == [0] * 8

    peers = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout)["peers"]
    assert len(peers) == 800
    assert len({p["address4"] for p in peers}) == 800
    assert len({p["public_key"] for p in peers}) == 800
    conn = sqlite3.connect(config / "bulwark.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    # The rendered server config is the last writer's view of the whole store: all 800 peers.
    server = parse_config((config / "wg_confs/wg0.conf").read_text())
    assert {str(p.public_key) for p in server.peers} == {p["public_key"] for p in peers}
    assert len(list(config.glob("peer_w*/peer_w*.conf"))) == 800
