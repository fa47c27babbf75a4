"""Small traffic probes for namespace tests: a TCP or UDP service that answers "ok", and a client that says
whether it got that answer (a drop and a refusal both read as False)."""

from __future__ import annotations

import subprocess
import sys

from tests.netns import Netns

SERVE = """
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[3] == "udp" else socket.SOCK_STREAM
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
srv = socket.socket(family, kind)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
if kind == socket.SOCK_STREAM:
    srv.listen()
print("ready", flush=True)
while True:
    if kind == socket.SOCK_DGRAM:
        data, peer = srv.recvfrom(512)
        srv.sendto(b"ok" + data, peer)
    else:
        conn, _ = srv.accept()
        conn.sendall(b"ok")
        conn.close()
"""

PROBE = """
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[3] == "udp" else socket.SOCK_STREAM
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
with socket.socket(family, kind) as s:
    s.settimeout(1.5)
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.send(b"?")
    sys.exit(0 if s.recv(16).startswith(b"ok") else 1)
"""


def serve(ns: Netns, address: str, port: int, proto: str = "tcp") -> subprocess.Popen[bytes]:
    """Start the service in `ns` (the namespace's cleanup stops it); return once it listens."""
    process = ns.python(SERVE, address, str(port), proto, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    if process.stdout.readline().strip() != b"ready":
        process.kill()
        raise AssertionError(f"cannot serve {proto} {address}:{port} in {ns.name}: {process.communicate()[1]!r}")
    return process


def reaches(ns: Netns, address: str, port: int, proto: str = "tcp", tries: int = 2) -> bool:
    """True if a TCP connection (or a UDP exchange) to address:port gets the server's answer from `ns`."""
    return any(ns.run([sys.executable, "-c", PROBE, address, str(port), proto], check=False,
                      timeout=10).returncode == 0 for _ in range(tries))
