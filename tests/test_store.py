"""The SQLite store: allocation (exact, O(log n), reuse only after removal), migrations, corruption."""

import ipaddress
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulwark_vpn.addressing import Pool
from bulwark_vpn.errors import ConflictError, InputError, StoreError
from bulwark_vpn.keys import PresharedKey, PrivateKey
from bulwark_vpn.model import Peer
from bulwark_vpn.store import SCHEMA_VERSION
from bulwark_vpn.store import SQLiteStore as Store
from bulwark_vpn.values import parse_subnet4, parse_subnet6


def _peer(store: Store, pool: Pool, name: str) -> Peer:
    with store.transaction():
        peer = Peer(name=name, public_key=PrivateKey.generate().public_key(), address4=store.allocate(pool))
        store.insert_peer(peer)
    return peer


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.one_of(st.just("add"), st.integers(0, 40)), min_size=1, max_size=80))
def test_allocation_never_repeats_a_live_address(tmp_path_factory, ops):
    folder = tmp_path_factory.mktemp("store")
    pool = Pool(ipaddress.IPv4Network("10.9.0.0/26"))  # 61 peer addresses: small enough to fill up
    with Store.open(folder) as store:
        live: dict[str, Peer] = {}
        counter = 0
        for op in ops:
            if op == "add":
                counter += 1
                try:
                    peer = _peer(store, pool, f"p{counter}")
                except ConflictError:
                    assert len(live) == pool.capacity
                    continue
                assert peer.address4 not in {p.address4 for p in live.values()}
                assert pool.contains_peer_address(peer.address4)
                live[peer.name] = peer
            elif live:
                name = sorted(live)[op % len(live)]
                store.delete_peer(name, (pool, None))
                del live[name]
        stored = store.peers()
        assert len({p.address4 for p in stored}) == len(stored) == len(live)


def test_fresh_addresses_first_then_freed_ones(tmp_path):
    pool = Pool(ipaddress.IPv4Network("10.9.0.0/29"))  # .2 .. .6
    with Store.open(tmp_path) as store:
        peers = [_peer(store, pool, f"p{i}") for i in range(3)]
        assert [str(p.address4) for p in peers] == ["10.9.0.2", "10.9.0.3", "10.9.0.4"]
        store.delete_peer("p0", (pool, None))
        assert str(_peer(store, pool, "p3").address4) == "10.9.0.5"  # not the just-freed .2
        assert str(_peer(store, pool, "p4").address4) == "10.9.0.6"
        assert str(_peer(store, pool, "p5").address4) == "10.9.0.2"  # reused only after removal
        with pytest.raises(ConflictError, match="10.9.0.0/29' is full"):
            _peer(store, pool, "p6")


def test_ipv6_pool(tmp_path):
    pool = Pool(parse_subnet6("fd13:13:13::/64"))
    with Store.open(tmp_path) as store, store.transaction():
        assert str(store.allocate(pool)) == "fd13:13:13::2"
        assert str(store.allocate(pool)) == "fd13:13:13::3"


def test_subnet_parsing():
    assert str(parse_subnet4("10.13.13.0")) == "10.13.13.0/24"
    assert str(parse_subnet4("10.20.0.0/16")) == "10.20.0.0/16"
    assert Pool(parse_subnet4("10.20.0.0/16")).capacity == 65534 - 1
    for bad in ("10.13.13.0/31", "10.13.13.0/32", "300.1.1.0", "abc", "10.0.0.0/4"):
        with pytest.raises(InputError, match="invalid IPv4 subnet"):
            parse_subnet4(bad)


def test_schema_version_and_newer_store_refused(tmp_path):
    with Store.open(tmp_path) as store:
        store.save_settings(store.settings())
    conn = sqlite3.connect(tmp_path / "bulwark.db")
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this Bulwark"):
        Store.open(tmp_path)


def test_corrupted_store_is_refused(tmp_path):
    with Store.open(tmp_path) as store:
        store.save_settings(store.settings())
    path = tmp_path / "bulwark.db"
    data = bytearray(path.read_bytes())
    data[100:4000] = b"\xff" * 3900
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="the store is damaged"):
        Store.open(tmp_path)


def test_server_config_from_rows_is_byte_identical_to_the_model_renderer(tmp_path):
    """The fast path `peer add` uses must render exactly what the one model renderer renders."""
    from bulwark_vpn.model import Settings
    from bulwark_vpn.render.layout import render_server_config_rows, server_wg_config
    from bulwark_vpn.render.wgquick import render_config

    settings = Settings(subnet4=ipaddress.IPv4Network("10.9.0.0/24"), subnet6=parse_subnet6("fd09::/64"), mtu=1380)
    key = PrivateKey.generate()
    pool4, pool6 = Pool(settings.subnet4), Pool(settings.subnet6)
    with Store.open(tmp_path) as store:
        with store.transaction():
            for i, (keepalive, routes, enabled) in enumerate(
                [(None, (), True), (25, (ipaddress.ip_network("192.168.7.0/24"),), True), (None, (), False),
                 (5, (ipaddress.ip_network("fd77::/64"), ipaddress.ip_network("10.50.0.0/16")), True)]
            ):
                private = PrivateKey.generate()
                store.insert_peer(Peer(
                    name=f"peer{i + 1}" if i % 2 else f"named{i}", public_key=private.public_key(),
                    private_key=private, preshared_key=PresharedKey.generate() if i != 3 else None,
                    address4=store.allocate(pool4), address6=store.allocate(pool6), keepalive=keepalive,
                    server_allowed_ips=routes, enabled=enabled,
                ))
        fast = render_server_config_rows(settings, key, store.server_peer_rows())
        model = render_config(server_wg_config(settings, key, store.peers()))
    assert fast == model
    assert "192.168.7.0/24" in fast and "PersistentKeepalive = 5" in fast and fast.count("[Peer]") == 3
