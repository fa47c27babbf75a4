"""Traffic history: bytes received and sent per peer (and in total), kept in the store by the supervisor.

The supervisor adds the counters' growth every minute (`record_sample`); points older than 48 hours are folded
into hourly ones, and hourly ones older than 90 days dropped (`compact`), so the history stays bounded: at most
2,880 minute points and 2,160 hourly points per peer, and only for peers that moved traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bulwark_vpn.errors import InputError
from bulwark_vpn.service.context import Context
from bulwark_vpn.store import Store
from bulwark_vpn.values import parse_peer_name

MINUTE = 60
HOUR = 3600
FINE_KEEP = 48 * HOUR
COARSE_KEEP = 90 * 86400
TOTAL = "*"
RANGES = {"hour": (MINUTE, HOUR), "day": (MINUTE, 86400), "month": (HOUR, 31 * 86400)}


@dataclass(frozen=True)
class TrafficSeries:
    peer: str | None
    range: str
    resolution: int
    points: list[tuple[int, int, int]]

    def to_dict(self) -> dict[str, Any]:
        return {"peer": self.peer, "range": self.range, "resolution": self.resolution,
                "points": [{"at": at, "rx": rx, "tx": tx} for at, rx, tx in self.points]}


def traffic(ctx: Context, peer: object = None, span: object = "day") -> TrafficSeries:
    """A peer's history (a user: their own peers only), or the whole gateway's (admins)."""
    if span not in RANGES:
        raise InputError("invalid range", span, f"use one of {', '.join(RANGES)}")
    resolution, length = RANGES[str(span)]
    ctx.actor.require("read")
    with ctx.open_store(read_only=True) as store:
        if peer is None:
            ctx.actor.require_admin()
            key = TOTAL
            name = None
        else:
            name = parse_peer_name(peer)
            ctx.actor.check_owns(name, store.peer(name).owner)
            key = name
        since = int(ctx.clock()) - length
        points = store.traffic(key, resolution, since) if store.schema_version() >= 3 else []
        if resolution == HOUR:
            # The last two days are still kept by the minute: fold them in.
            fine = store.traffic(key, MINUTE, since) if store.schema_version() >= 3 else []
            merged: dict[int, list[int]] = {at: [rx, tx] for at, rx, tx in points}
            for at, rx, tx in fine:
                slot = merged.setdefault(at - at % HOUR, [0, 0])
                slot[0] += rx
                slot[1] += tx
            points = sorted((at, rx, tx) for at, (rx, tx) in merged.items())
    return TrafficSeries(name, str(span), resolution, points)


def record_sample(store: Store, now: float, counters: Mapping[str, tuple[int, int]],
                  previous: Mapping[str, tuple[int, int]]) -> None:
    """Add each peer's growth since the previous sample to this minute (a counter that went down was reset by a
    restart: its whole value is new traffic)."""
    bucket = int(now) - int(now) % MINUTE
    deltas = []
    total_rx = total_tx = 0
    for name, (rx, tx) in counters.items():
        old_rx, old_tx = previous.get(name, (0, 0))
        d_rx = rx - old_rx if rx >= old_rx else rx
        d_tx = tx - old_tx if tx >= old_tx else tx
        if d_rx or d_tx:
            deltas.append((name, d_rx, d_tx))
            total_rx += d_rx
            total_tx += d_tx
    if deltas:
        deltas.append((TOTAL, total_rx, total_tx))
        store.add_traffic(MINUTE, bucket, deltas)


def compact(store: Store, now: float) -> None:
    store.compact_traffic(MINUTE, HOUR, int(now) - FINE_KEEP, int(now) - COARSE_KEEP)
