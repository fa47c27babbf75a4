"""`bulwark status` as text: a pure function of the status report (like `wg show`, public keys only)."""

from __future__ import annotations

import time


def _ago(timestamp: int, now: float) -> str:
    if not timestamp:
        return "never"
    seconds = int(now - timestamp)
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{count} B"


def _state(is_open: bool) -> str:
    return "open" if is_open else "closed"


def render_exposure(report) -> list[str]:
    """What peers and other hosts may reach, as the settings say (closed is the default)."""
    exposure = report.exposure
    host = "every service" if exposure.host_access else "DNS and ping only"
    dns = "tunnel peers and " + ", ".join(exposure.dns_clients) if exposure.dns_clients else "tunnel peers only"
    nat = f"out of {report.egress_interface} only" if report.egress_interface else \
        f"out of every interface but {report.interface}"
    return [
        f"  peer to peer: {_state(exposure.peer_to_peer)}   LAN to peers: {_state(exposure.lan_to_peers)}   "
        f"host access: {_state(exposure.host_access)} ({host})",
        f"  DNS answers: {dns}   NAT: {nat}",
    ]


def render_status(report, now: float | None = None) -> str:
    moment = time.time() if now is None else now
    lines = [f"interface: {report.interface} ({'up' if report.up else 'down'})"]
    if report.up:
        lines.append(f"  backend: {report.backend or 'unknown'}   pid: {report.pid or '-'}   "
                     f"listening port: {report.listen_port}")
    lines.append(f"  public key: {report.public_key}")
    lines.append(f"  addresses: {', '.join(report.addresses)}")
    lines += render_exposure(report)
    for peer in report.peers:
        state = "online" if peer.online else ("disabled" if not peer.enabled else
                                              "expired" if peer.expired else "offline")
        lines.append("")
        lines.append(f"peer: {peer.name} ({state})")
        lines.append(f"  public key: {peer.public_key}")
        lines.append(f"  address: {peer.address4}{', ' + peer.address6 if peer.address6 else ''}")
        lines.append(f"  endpoint: {peer.endpoint or '(none)'}")
        lines.append(f"  latest handshake: {_ago(peer.latest_handshake, moment)}")
        lines.append(f"  transfer: {_bytes(peer.rx_bytes)} received, {_bytes(peer.tx_bytes)} sent")
    return "\n".join(lines) + "\n"
