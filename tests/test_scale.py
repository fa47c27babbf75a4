"""Scale without namespaces: the device table and its text comparison, the store's log of changed peers and where
peers were last seen, JSON lines equal to the encoder's, the in-process QR encoder, the file layouts, and the
server config rendered in the background once it is large."""

from __future__ import annotations

import ipaddress
import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark_vpn.dataplane import table
from bulwark_vpn.dataplane.gateway import PeerStatus
from bulwark_vpn.errors import StoreError
from bulwark_vpn.keys import PresharedKey, PrivateKey
from bulwark_vpn.render import jsonlines, qr
from bulwark_vpn.service.files import DEFER_SERVER_BYTES
from bulwark_vpn.service.peers import PeerInfo
from bulwark_vpn.store import RENDER_SERVER, PeerRow, open_store
from tests.helpers import bulwark, insert_peers


def _key() -> str:
    return PrivateKey.generate().public_key().to_base64()


def _row(name: str, address: str, routed: tuple[str, ...] = (), keepalive: int | None = None,
         psk: bool = True) -> PeerRow:
    return PeerRow(name, _key(), PresharedKey.generate().to_base64() if psk else None, address, None, routed,
                   keepalive, True, None)


def _dump(private: str, port: int, lines: list[list[str]]) -> str:
    head = f"{private}\t{_key()}\t{port}\toff"
    return "\n".join([head, *("\t".join(fields) for fields in lines)]) + "\n"


def _line(row: PeerRow, allowed: str | None = None) -> list[str]:
    """The row as `wg show dump` prints the peer (wireguard-go may list allowed IPs in any order)."""
    return [row.public_key, row.preshared_key or "(none)", "198.51.100.7:4000",
            allowed or ",".join(row.tunnel_networks()), "0", "0", "0", str(row.keepalive or "off")]


# -- the device table ---------------------------------------------------------------------------------------


def test_a_dump_equal_to_the_table_is_no_drift_whatever_the_order_of_allowed_ips():
    private = PrivateKey.generate().to_base64()
    wanted = table.DeviceTable(private, 51820)
    rows = [_row("a", "10.0.0.2"), _row("b", "10.0.0.3", ("192.168.7.0/24", "192.168.8.0/24"), 25),
            _row("c", "10.0.0.4", psk=False)]
    for row in rows:
        assert wanted.place(row) is None
    lines = [_line(rows[0]), _line(rows[1], "192.168.8.0/24,10.0.0.3/32,192.168.7.0/24"), _line(rows[2])]
    assert not wanted.compare(_dump(private, 51820, lines))
    assert wanted.routes() == ["192.168.7.0/24", "192.168.8.0/24"]


def test_drift_names_unknown_missing_and_differing_peers_and_the_interface():
    private = PrivateKey.generate().to_base64()
    wanted = table.DeviceTable(private, 51820)
    a, b, c = _row("a", "10.0.0.2"), _row("b", "10.0.0.3", keepalive=25), _row("c", "10.0.0.4")
    for row in (a, b, c):
        wanted.place(row)
    stranger = _row("x", "10.0.0.9")
    wrong_b = _line(b)
    wrong_b[7] = "off"  # keepalive removed by hand
    drift = wanted.compare(_dump(PrivateKey.generate().to_base64(), 51821, [_line(a), wrong_b, _line(stranger)]))
    assert drift.unknown == [stranger.public_key]
    assert drift.missing == ["c"]
    assert list(drift.differing) == ["b"]
    assert drift.interface


def test_a_network_belongs_to_the_peer_that_holds_it_and_returns_when_freed():
    wanted = table.DeviceTable(PrivateKey.generate().to_base64(), 51820)
    bob = _row("bob", "10.0.0.2", ("192.168.77.0/24",))
    carol = _row("carol", "10.0.0.3", ("192.168.77.0/24",))
    assert wanted.place(bob) is None
    assert wanted.place(carol) == table.Conflict("carol", "192.168.77.0/24", "bob")
    assert "carol" not in wanted.entries and "carol" in wanted.left_off
    wanted.drop("bob")
    assert "192.168.77.0/24" not in wanted.owner
    assert wanted.place(carol) is None and wanted.owner["192.168.77.0/24"] == "carol"


def test_setconf_text_holds_each_wanted_peer_with_its_known_endpoint():
    wanted = table.DeviceTable(PrivateKey.generate().to_base64(), 51820)
    rows = [_row("a", "10.0.0.2"), _row("b", "10.0.0.3", keepalive=25)]
    disabled = rows[1]._replace(name="d", public_key=_key(), address4="10.0.0.5", enabled=False)
    expired = rows[1]._replace(name="e", public_key=_key(), address4="10.0.0.6", expires_at=time.time() - 1)
    sections, conflicts = table.load_rows(wanted, [*rows, disabled, expired], time.time(),
                                          {rows[0].public_key: "198.51.100.7:4000"})
    assert conflicts == [] and len(sections) == 2 and set(wanted.entries) == {"a", "b"}
    assert "Endpoint = 198.51.100.7:4000" in sections[0] and "Endpoint" not in sections[1]
    assert f"PresharedKey = {rows[1].preshared_key}" in sections[1] and "PersistentKeepalive = 25" in sections[1]


# -- the store: the log of changed peers, endpoints, rows as text -------------------------------------------


def _store_with(tmp_path: Path, names: str) -> Path:
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com", "--peers", names,
            "--files", "none")
    return config


def test_every_write_to_a_peer_is_logged_by_name_whoever_writes(tmp_path):
    config = _store_with(tmp_path, "alice,bob")
    with open_store(config) as store:
        start = store.last_peer_change()
    bulwark("peer", "disable", "bob", "--config-dir", str(config))
    with sqlite3.connect(config / "bulwark.db", isolation_level=None) as db:  # by hand, as another tool would
        db.execute("UPDATE peers SET keepalive=25 WHERE name='alice'")
    bulwark("peer", "remove", "bob", "--config-dir", str(config))
    with open_store(config) as store:
        names, last = store.peer_changes(start)
        assert names == ["bob", "alice"] and last > start
        assert store.peer_changes(last) == ([], last)
        store.prune_peer_changes(last)
        assert store.peer_changes(0) == ([], 0) and store.last_peer_change() == last  # the position stays


def test_endpoints_are_kept_by_public_key_and_forgotten_with_their_peer(tmp_path):
    config = _store_with(tmp_path, "alice,bob")
    with open_store(config) as store:
        keys = {row.name: row.public_key for row in store.peer_rows()}
        store.save_endpoints([(keys["alice"], "198.51.100.7:4000", 100), (keys["bob"], "[2001:db8::1]:51820", 90),
                              (keys["bob"], "bad\nvalue:1", 95)])  # not an endpoint: never stored
        assert store.endpoints() == {keys["alice"]: ("198.51.100.7:4000", 100),
                                     keys["bob"]: ("[2001:db8::1]:51820", 90)}
    bulwark("peer", "remove", "bob", "--config-dir", str(config))
    with open_store(config) as store:
        store.prune_endpoints()
        assert set(store.endpoints()) == {keys["alice"]}


def test_a_damaged_row_is_named_with_what_is_wrong_and_no_secret(tmp_path):
    config = _store_with(tmp_path, "alice")
    with sqlite3.connect(config / "bulwark.db", isolation_level=None) as db:
        db.execute("UPDATE peers SET preshared_key='oops\nPrivateKey = x' WHERE name='alice'")
    with open_store(config, read_only=True) as store, pytest.raises(StoreError) as error:
        list(store.peer_rows())
    assert "damaged peer 'alice' (invalid preshared key)" in str(error.value) and "oops" not in str(error.value)


# -- JSON lines ----------------------------------------------------------------------------------------------

_TEXT = st.text(max_size=12)
_OPTIONAL = st.none() | _TEXT


@settings(max_examples=200, deadline=None)
@given(name=_TEXT, key=_TEXT, a4=_TEXT, a6=_OPTIONAL, enabled=st.booleans(), endpoint=_OPTIONAL,
       numbers=st.tuples(*[st.integers(0, 1 << 62)] * 3), online=st.booleans(), expired=st.booleans())
def test_a_status_line_is_what_the_json_encoder_writes(name, key, a4, a6, enabled, endpoint, numbers, online,
                                                        expired):
    peer = PeerStatus(name, key, a4, a6, enabled, endpoint, *numbers, online, expired)
    assert jsonlines.status_peer(peer) == json.dumps(peer.to_dict(), sort_keys=True)


@settings(max_examples=200, deadline=None)
@given(name=_TEXT, key=_TEXT, a6=_OPTIONAL, allowed=st.lists(_TEXT, max_size=3), routed=st.lists(_TEXT, max_size=2),
       keepalive=st.none() | st.integers(0, 65535), flags=st.tuples(*[st.booleans()] * 4), owner=_OPTIONAL,
       expires=st.none() | st.floats(0, 4e9, allow_nan=False))
def test_a_peer_list_line_is_what_the_json_encoder_writes(name, key, a6, allowed, routed, keepalive, flags, owner,
                                                           expires):
    peer = PeerInfo(name, key, "10.0.0.2", a6, allowed, routed, keepalive, flags[0], flags[1], f"{name}.conf",
                    owner, expires, flags[2])
    lines = jsonlines.PeerInfoLines()
    assert lines(peer) == json.dumps(peer.to_dict(), sort_keys=True)
    assert lines(peer) == json.dumps(peer.to_dict(), sort_keys=True)  # again, from the cache of lists


# -- QR codes in process -------------------------------------------------------------------------------------


@pytest.mark.skipif(qr._library() is None or shutil.which("zbarimg") is None, reason="needs libqrencode and zbarimg")
def test_the_in_process_qr_png_scans_back_to_the_config(tmp_path):
    config = bulwark("peer", "show", "alice", "--config-dir", str(_store_with(tmp_path, "alice"))).stdout
    (png,) = qr.qr_pngs([config])
    assert png is not None and png.startswith(b"\x89PNG")
    (tmp_path / "q.png").write_bytes(png)
    scanned = subprocess.run(["zbarimg", "-q", "--raw", str(tmp_path / "q.png")], capture_output=True, text=True)
    assert scanned.stdout == config + "\n"
    assert qr.qr_pngs(["x" * 3000]) == [None]  # too large for a QR code: none, never a failure


# -- file layouts ----------------------------------------------------------------------------------------------


def _files(config: Path) -> set[str]:
    return {str(p.relative_to(config)) for p in config.rglob("*") if p.is_file() and not p.name.startswith(".")
            and not p.name.startswith("bulwark.db")}


SERVER_FILES = {"wg_confs/wg0.conf", "server/privatekey-server", "server/publickey-server"}
ALICE_CONFIGS = {"peer_alice/peer_alice.conf", "peer_alice/privatekey-peer_alice",
                 "peer_alice/publickey-peer_alice", "peer_alice/presharedkey-peer_alice"}


def test_the_file_layout_setting_writes_full_configs_or_nothing_per_peer(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com", "--peers", "alice")
    assert _files(config) == SERVER_FILES | ALICE_CONFIGS | {"peer_alice/peer_alice.png"}  # the default: full
    bulwark("init", "--config-dir", str(config), "--files", "configs")
    assert _files(config) == SERVER_FILES | ALICE_CONFIGS
    bulwark("peer", "add", "bob", "--config-dir", str(config))
    assert "peer_bob/peer_bob.png" not in _files(config) and "peer_bob/peer_bob.conf" in _files(config)
    bulwark("init", "--config-dir", str(config), "--files", "none")
    assert _files(config) == SERVER_FILES and not (config / "peer_alice").exists()
    shown = bulwark("peer", "show", "alice", "--config-dir", str(config)).stdout
    assert shown.startswith("[Interface]")  # configs come from the store
    bulwark("init", "--config-dir", str(config), env=None)  # nothing given: the layout stays
    assert _files(config) == SERVER_FILES
    from tests.helpers import clean_env

    bulwark("init", "--config-dir", str(config), env=clean_env(BULWARK_FILES="full"))
    assert "peer_bob/peer_bob.png" in _files(config) and "peer_alice/peer_alice.png" in _files(config)
    refused = bulwark("init", "--config-dir", str(config), "--files", "some", check=False)
    assert refused.returncode == 2 and "invalid file layout" in refused.stderr


def test_the_file_layout_comes_from_the_settings_file_too(tmp_path):
    settings_file = tmp_path / "bulwark.toml"
    settings_file.write_text('files = "configs"\npeers = ["alice"]\nserver_url = "vpn.example.com"\n')
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--settings", str(settings_file))
    assert _files(config) == SERVER_FILES | ALICE_CONFIGS


# -- the server config of a large gateway, in the background -------------------------------------------------


def _large(tmp_path: Path) -> Path:
    config = tmp_path / "big"
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com", "--subnet", "10.40.0.0/16",
            "--files", "none")
    insert_peers(config, 1700)
    bulwark("render", "--config-dir", str(config))
    assert (config / "wg_confs/wg0.conf").stat().st_size > DEFER_SERVER_BYTES
    return config


def _pending(config: Path) -> list[str]:
    with open_store(config, read_only=True) as store:
        return store.pending_renders()


def test_a_peer_change_on_a_large_gateway_leaves_the_server_config_to_the_background_renderer(tmp_path):
    config = _large(tmp_path)
    conf = config / "wg_confs/wg0.conf"
    bulwark("peer", "add", "newbie", "--config-dir", str(config))
    # The change is committed with the server config in the journal; the file follows a moment later.
    assert _pending(config) == [RENDER_SERVER] and "peer_newbie" not in conf.read_text()
    deadline = time.monotonic() + 10
    while _pending(config) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pending(config) == [] and "# peer_newbie\n" in conf.read_text()
    bulwark("peer", "remove", "newbie", "--config-dir", str(config))
    assert _pending(config) == [RENDER_SERVER] and "peer_newbie" in conf.read_text()
    bulwark("render", "--config-dir", str(config))  # in the foreground, at once
    assert _pending(config) == [] and "peer_newbie" not in conf.read_text()


def test_the_server_config_renders_equal_to_the_model_renderer_at_1700_peers(tmp_path):
    from bulwark_vpn.render.layout import server_files

    config = _large(tmp_path)
    with open_store(config, read_only=True) as store:
        expected = server_files(store.settings(), store.require_server_key(), store.server_peer_rows())
    for relative, rendered in expected.items():
        assert (config / relative).read_bytes() == rendered.content


def test_rows_carry_exactly_the_stored_networks(tmp_path):
    config = _store_with(tmp_path, "alice")
    bulwark("peer", "add", "site", "--server-allowed-ips", "192.168.77.0/24,fd77::/64", "--config-dir", str(config))
    with open_store(config, read_only=True) as store:
        (site,) = list(store.peer_rows(["site"]))
    assert site.routed == ("192.168.77.0/24", "fd77::/64")
    assert all(ipaddress.ip_network(n) for n in site.tunnel_networks())


@pytest.mark.parametrize("scale", [3, 4, 6])
@pytest.mark.parametrize("width", [5, 21])
def test_png_pixels_are_the_matrix_scaled_inside_its_light_border(scale, width):
    import random
    import struct
    import zlib

    rnd = random.Random(width * scale)
    modules = bytes(rnd.choice([0xC0, 0xC1, 0x02, 0x03]) for _ in range(width * width))  # bit 0: dark
    png = qr.matrix_png(modules, width, scale, border=2)
    side = (width + 4) * scale
    assert struct.unpack(">II", png[16:24]) == (side, side)
    stride = (side + 7) // 8 + 1
    raw = zlib.decompress(png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8])
    assert len(raw) == stride * side
    for y in range(side):
        line = raw[y * stride:(y + 1) * stride]
        assert line[0] == 0  # no filter
        bits = "".join(f"{byte:08b}" for byte in line[1:])[:side]
        expected = ""
        for x in range(side):
            my, mx = y // scale - 2, x // scale - 2
            dark = 0 <= my < width and 0 <= mx < width and modules[my * width + mx] & 1
            expected += "0" if dark else "1"
        assert bits == expected, f"row {y}"
