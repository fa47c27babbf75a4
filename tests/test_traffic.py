"""Traffic history: the supervisor's samples become per-minute points, folded into hourly ones after 48 hours and
dropped after 90 days; counters that went down (a restart) count as new traffic; the API serves a peer's series
to its owner and the total to admins."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulwark_vpn import service
from bulwark_vpn.errors import AuthError, NotFoundError
from bulwark_vpn.service import traffic
from bulwark_vpn.service.actors import Actor
from bulwark_vpn.store import open_store
from tests.helpers import TEST_RUN_DIR

T0 = 1_800_000_000.0  # a fixed moment (2027), minute-aligned


@pytest.fixture
def ctx(tmp_path: Path) -> service.Context:
    ctx = service.Context(tmp_path / "c", run_dir=TEST_RUN_DIR, clock=lambda: T0 + 3600)
    service.init_from_sources(ctx, flags={"server_url": "vpn.example.com"}, peers="alice,bob")
    return ctx


def test_samples_add_the_growth_per_minute_and_a_restart_counts_from_zero(ctx: service.Context) -> None:
    with open_store(ctx.config_dir) as store:
        traffic.record_sample(store, T0 + 5, {"alice": (1000, 500), "bob": (0, 0)}, {"alice": (400, 100)})
        traffic.record_sample(store, T0 + 65, {"alice": (1500, 700)}, {"alice": (1000, 500)})
        traffic.record_sample(store, T0 + 125, {"alice": (300, 50)}, {"alice": (1500, 700)})  # counters reset
        points = store.traffic("alice", traffic.MINUTE, 0)
        total = store.traffic(traffic.TOTAL, traffic.MINUTE, 0)
    assert points == [(int(T0), 600, 400), (int(T0) + 60, 500, 200), (int(T0) + 120, 300, 50)]
    assert total == points  # bob moved nothing: no row for him, the total is alice's


def test_old_minutes_fold_into_hours_and_old_hours_go(ctx: service.Context) -> None:
    with open_store(ctx.config_dir) as store:
        for minute in range(120):
            store.add_traffic(traffic.MINUTE, int(T0) + minute * 60, [("alice", 10, 1)])
        store.add_traffic(traffic.HOUR, int(T0) - 100 * 86400, [("alice", 5, 5)])
        now = T0 + 2 * 86400 + 7200  # every minute point is now older than 48 hours
        traffic.compact(store, now)
        assert store.traffic("alice", traffic.MINUTE, 0) == []
        hours = store.traffic("alice", traffic.HOUR, 0)
    assert hours == [(int(T0) - int(T0) % 3600, 600, 60), (int(T0) - int(T0) % 3600 + 3600, 600, 60)]


def test_the_api_series_belongs_to_the_peers_owner_and_the_total_to_admins(ctx: service.Context) -> None:
    with open_store(ctx.config_dir) as store:
        store.add_traffic(traffic.MINUTE, int(T0) + 3000, [("alice", 7, 3), (traffic.TOTAL, 7, 3)])
        store.update_peer(store.peer("alice").__class__(**{**store.peer("alice").__dict__, "owner": "al"}))
    day = traffic.traffic(ctx, "alice", "day").to_dict()
    assert day["resolution"] == 60 and day["points"] == [{"at": int(T0) + 3000, "rx": 7, "tx": 3}]
    month = traffic.traffic(ctx, None, "month").to_dict()  # hourly, with the recent minutes folded in
    assert month["points"] == [{"at": int(T0) + 3000 - (int(T0) + 3000) % 3600, "rx": 7, "tx": 3}]
    user = ctx.as_actor(Actor("user", "bo", role="user", via="api"))
    with pytest.raises(NotFoundError):
        traffic.traffic(user, "alice", "day")
    with pytest.raises(AuthError):
        traffic.traffic(user, None, "day")
    owner = ctx.as_actor(Actor("user", "al", role="user", via="api"))
    assert traffic.traffic(owner, "alice", "hour").to_dict()["points"][0]["rx"] == 7
