"""A multi-homed gateway for real: the private network sits on a SECOND interface of the server, while the
default route (and the lab's VPC) is on another. The host on that network has no route back to the tunnel, as
on a home LAN whose router is not the gateway: only NAT out of that interface lets it answer."""

from __future__ import annotations

import pytest

from tests.gwlab import Lab
from tests.netns import Netns, veth

pytestmark = pytest.mark.netns

LAN2_SERVER, LAN2_HOST = "192.168.50.1", "192.168.50.10"
ADVERTISED = "10.13.13.0/24, 192.168.50.0/24"
# Answers each TCP connection with the source address it sees.
ECHO = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('{LAN2_HOST}', 8080)); s.listen()\n"
    "while True:\n"
    "    c, a = s.accept(); c.sendall(a[0].encode()); c.close()\n"
)
FETCH = ["python3", "-c", f"import socket; s=socket.create_connection(('{LAN2_HOST}', 8080), 3); "
                          "print(s.recv(64).decode())"]


def second_lan(lab: Lab) -> tuple[Netns, str]:
    """A host on a second interface of the server (eth1-like); return it and the server's end of the veth."""
    host = lab.factory()
    server_end, _ = veth(lab.server, host, f"{LAN2_SERVER}/24", f"{LAN2_HOST}/24")
    host.python(ECHO)
    return host, server_end


def source_seen(lab: Lab, client: Netns) -> str:
    lab.wait_for(lambda: client.run(FETCH, check=False).returncode == 0, 5)
    return client.run(FETCH).stdout.decode().strip()


def test_a_network_on_a_second_interface_is_reached_through_nat(lab: Lab):
    second_lan(lab)
    lab.init("--peers", "alice", "--allowed-ips", ADVERTISED)
    lab.up()
    client, _ = lab.connect("alice")  # its config as generated: AllowedIPs = the advertised networks
    assert client.ping(LAN2_HOST, count=2)
    assert source_seen(lab, client) == LAN2_SERVER  # masqueraded out of the second interface
