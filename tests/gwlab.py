"""A gateway lab for tests: server, client and "VPC host" namespaces wired with veths, a provisioned
config dir, and helpers to run the real `bulwark` command in the server namespace and connect clients
with the real `wg-quick` from the generated configs. Everything is removed at cleanup."""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import TEST_RUN_DIR, bulwark
from tests.netns import Netns, NetnsFactory, veth

RUN_DIR = TEST_RUN_DIR
SERVER_WAN = "192.0.2.1"
VPC_HOST = "10.0.1.10"
VPC_GATEWAY = "10.0.1.1"
# A DNS server in the VPC namespace that knows db.vpc.internal (run with `lab.vpc.python(VPC_DNS)`).
VPC_DNS = (
    "from dnslib.server import DNSServer\n"
    "from dnslib.zoneresolver import ZoneResolver\n"
    "import time\n"
    "r = ZoneResolver('db.vpc.internal. 60 IN A 10.0.1.20\\n')\n"
    f"DNSServer(r, address='{VPC_HOST}', port=53).start_thread()\n"
    "time.sleep(3600)\n"
)


@dataclass
class Lab:
    factory: NetnsFactory
    server: Netns
    vpc: Netns
    config: Path
    iface: str
    clients: list[Netns] = field(default_factory=list)
    _next_host: int = 2

    def bulwark(self, *args: str, check: bool = True, ns: Netns | None = None) -> subprocess.CompletedProcess:
        """The real command, run inside the server namespace (or `ns`)."""
        target = ns or self.server
        return bulwark(*args, "--config-dir", str(self.config), netns=target.name, check=check)

    def bulwark_input(self, *args: str, text: str) -> subprocess.CompletedProcess:
        """The real command with `text` on its stdin (a password), in the server namespace."""
        return bulwark(*args, "--config-dir", str(self.config), netns=self.server.name, input=text)

    def init(self, *args: str) -> None:
        self.bulwark("init", "--server-url", SERVER_WAN, "--interface", self.iface, *args)

    def up(self) -> subprocess.CompletedProcess:
        return self.bulwark("up")

    def client_config(self, name: str, *, allowed_ips: str | None = None) -> str:
        text = self.bulwark("peer", "show", name).stdout
        # wg-quick's DNS= needs resolvconf, which these namespaces do not have; DNS is tested with dig.
        text = "\n".join(line for line in text.splitlines() if not line.startswith("DNS")) + "\n"
        if allowed_ips is not None:
            text = re.sub(r"(?m)^AllowedIPs = .*$", f"AllowedIPs = {allowed_ips}", text)
        return text

    def add_client(self) -> Netns:
        """A new client namespace on its own veth to the server ("the internet"), no tunnel yet."""
        client = self.factory()
        host = self._next_host
        self._next_host += 1
        veth(self.server, client, f"172.31.{host}.1/24", f"172.31.{host}.2/24")
        # Only the server's public address is routed: without the tunnel nothing else is reachable.
        client.ip("route", "add", f"{SERVER_WAN}/32", "via", f"172.31.{host}.1")
        self.clients.append(client)
        return client

    def connect(self, name: str, *, allowed_ips: str | None = None) -> tuple[Netns, str]:
        """A new client namespace running `wg-quick up` with NAME's generated config."""
        client = self.add_client()
        iface = self.factory.wg_quick_up(client, self.client_config(name, allowed_ips=allowed_ips))
        return client, iface

    def device_peers(self) -> set[str]:
        out = self.server.run(["wg", "show", self.iface, "peers"], check=False).stdout.decode()
        return set(out.split())

    def status(self) -> dict:
        return json.loads(self.bulwark("status", "--json").stdout)

    def wait_for(self, predicate, timeout: float, interval: float = 0.05) -> float:
        """Seconds until `predicate()` is true; AssertionError after `timeout`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate():
                return time.monotonic() - start
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout} s")


def make_lab(factory: NetnsFactory) -> Lab:
    server, vpc = factory(), factory()
    # A new namespace copies forwarding from the host's (podman, Docker or a router turn it on there): start from
    # off, as on a fresh server, so tests see what Bulwark turns on and restores.
    server.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"])
    # The server's "LAN" veth toward the VPC; its default route points there, like an EC2 instance's eth0.
    veth(server, vpc, f"{VPC_GATEWAY}/24", f"{VPC_HOST}/24")
    server.ip("route", "add", "default", "via", VPC_HOST)
    # The server's public address; each client reaches it over its own veth ("the internet").
    server.ip("address", "add", f"{SERVER_WAN}/32", "dev", "lo")
    config = factory.tmpdir() / "config"
    lab = Lab(factory, server, vpc, config, factory.ifname("bwg"))
    return lab


def cleanup_lab(lab: Lab) -> None:
    """Take the gateway down if a test left it up (the factory then kills what remains)."""
    if (RUN_DIR / f"{lab.iface}.json").exists():
        bulwark("down", "--config-dir", str(lab.config), netns=lab.server.name, check=False)
    for suffix in (".json", ".log"):
        (RUN_DIR / f"{lab.iface}{suffix}").unlink(missing_ok=True)
