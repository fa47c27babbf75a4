"""`/metrics` in the Prometheus text format: per peer the bytes received and sent (counters), the age of the latest
handshake, whether it is enabled and online; the interface and the supervisor. Read from the live device at each
scrape. Anyone on this host's loopback may read it; from elsewhere it takes an admin or a token with the
`metrics` scope."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends
from fastapi.responses import Response

from bulwark_vpn.web.access import Caller, Routes, caller_of


class _GatewayCollector:
    def __init__(self, report: Any, now: float, supervisor_alive: bool) -> None:
        self.report = report
        self.now = now
        self.supervisor_alive = supervisor_alive

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        report = self.report
        iface = report.interface
        up = GaugeMetricFamily("bulwark_interface_up", "1 when the WireGuard interface is up", labels=["interface"])
        up.add_metric([iface], 1.0 if report.up else 0.0)
        yield up
        sup = GaugeMetricFamily("bulwark_supervisor_up", "1 when the gateway's supervisor runs", labels=["interface"])
        sup.add_metric([iface], 1.0 if self.supervisor_alive else 0.0)
        yield sup
        count = GaugeMetricFamily("bulwark_peers", "peers in the store, by state", labels=["interface", "state"])
        count.add_metric([iface, "total"], float(len(report.peers)))
        count.add_metric([iface, "enabled"], float(sum(p.enabled for p in report.peers)))
        count.add_metric([iface, "online"], float(sum(p.online for p in report.peers)))
        yield count
        labels = ["interface", "peer", "public_key"]
        rx = CounterMetricFamily("bulwark_peer_received_bytes", "bytes received from the peer", labels=labels)
        tx = CounterMetricFamily("bulwark_peer_sent_bytes", "bytes sent to the peer", labels=labels)
        age = GaugeMetricFamily("bulwark_peer_latest_handshake_age_seconds",
                                "seconds since the latest handshake (absent: never)", labels=labels)
        enabled = GaugeMetricFamily("bulwark_peer_enabled", "1 when the peer is enabled", labels=labels)
        online = GaugeMetricFamily("bulwark_peer_online", "1 after a handshake in the last 3 minutes", labels=labels)
        for peer in report.peers:
            key = [iface, peer.name, peer.public_key]
            rx.add_metric(key, float(peer.rx_bytes))
            tx.add_metric(key, float(peer.tx_bytes))
            if peer.latest_handshake:
                age.add_metric(key, max(0.0, self.now - peer.latest_handshake))
            enabled.add_metric(key, 1.0 if peer.enabled else 0.0)
            online.add_metric(key, 1.0 if peer.online else 0.0)
        yield from (rx, tx, age, enabled, online)


def metrics_routes() -> Routes:
    routes = Routes(tags=["metrics"])

    from bulwark_vpn.web.routes import ERRORS

    @routes.add("GET", "/metrics", "metrics", response_class=Response,
                responses={**ERRORS, 200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    def metrics(caller: Annotated[Caller, Depends(caller_of)]) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        from bulwark_vpn import service
        from bulwark_vpn.service.gateway import running_state

        report = service.status(caller.ctx)
        registry = CollectorRegistry()
        registry.register(_GatewayCollector(report, time.time(),
                                            running_state(caller.ctx, report.interface) is not None))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return routes
