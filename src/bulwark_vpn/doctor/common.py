"""Small helpers shared by the server and client checks: address kinds, name resolution, short lists."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Addresses that only work inside one network: RFC 1918, CGNAT, link-local, IPv6 ULA and link-local.
# (Python's is_private also counts the documentation ranges, which tests and examples use as "public".)
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10",
))
RESOLVE_TIMEOUT = 3.0


def address_kind(address: IPAddress) -> str:
    """"unspecified", "loopback", "private" or "public"."""
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if any(address.version == net.version and address in net for net in PRIVATE_NETWORKS):
        return "private"
    return "public"


def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[IPAddress]:
    """The addresses `host` resolves to (an IP literal resolves to itself); OSError with the reason otherwise."""
    bare = host.strip("[]")
    try:
        return [ipaddress.ip_address(bare)]
    except ValueError:
        pass
    # getaddrinfo has no timeout of its own: a dead resolver must not hang the doctor (nor its exit: a daemon
    # thread, not an executor, whose threads are joined at exit).
    answer: list = []

    def lookup() -> None:
        try:
            answer.append(socket.getaddrinfo(bare, port, 0, socket.SOCK_DGRAM))
        except OSError as exc:
            answer.append(exc)

    worker = threading.Thread(target=lookup, name="doctor-resolve", daemon=True)
    worker.start()
    worker.join(timeout)
    if not answer:
        raise OSError(f"no answer from the resolver in {timeout:g} s")
    if isinstance(answer[0], OSError):
        exc = answer[0]
        raise OSError(getattr(exc, "strerror", None) or str(exc))
    infos = answer[0]
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in found:
            found.append(address)
    return found


def listing(items: Sequence[str], limit: int = 5) -> str:
    """`a, b, c and 7 more`."""
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
