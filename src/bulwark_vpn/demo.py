"""`bulwark demo`: the local trial of the team's notes in one command, on any Linux host with root.

A server namespace and a client namespace joined by a veth pair play "the container" and "the laptop".
The server is provisioned and brought up by Bulwark; UDP 51821 is forwarded to 51820 as `docker run -p
51821:51820/udp` did; the client runs the real `wg-quick up` with the generated config, its Endpoint
overridden to the forwarded port (what the notes did by hand), pings the server's tunnel address, and
everything is removed again, even on failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bulwark_vpn import service
from bulwark_vpn.config import InitRequest, settings_update
from bulwark_vpn.dataplane.runner import Runner
from bulwark_vpn.errors import SystemActionError
from bulwark_vpn.fsutil import atomic_write

SERVER_IP = "172.31.251.1"
CLIENT_IP = "172.31.251.2"
FORWARDED_PORT = 51821
LISTEN_PORT = 51820


@dataclass(frozen=True)
class DemoResult:
    ping: str
    status: str
    transfer: str
    ok: bool


def _tag() -> str:
    return f"{os.getpid():x}"[-6:]


def _require_tools() -> None:
    if os.geteuid() != 0:
        raise SystemActionError("bulwark demo needs root (network namespaces): run it with sudo")
    missing = [tool for tool in ("ip", "wg", "wg-quick", "nft", "ping") if shutil.which(tool) is None]
    if missing:
        raise SystemActionError(
            f"bulwark demo needs {', '.join(missing)}: apt-get install wireguard-tools nftables iputils-ping"
        )


class _Lab:
    def __init__(self, log: Callable[[str], None]) -> None:
        tag = _tag()
        self.log = log
        self.server_ns, self.client_ns = f"bwdemo-srv-{tag}", f"bwdemo-cli-{tag}"
        self.iface, self.client_iface = f"bwdemo{tag}", f"leo{tag}"
        self.host = Runner(log=log)
        self.server = Runner(netns=self.server_ns, log=log)
        self.client = Runner(netns=self.client_ns, log=log)
        self.tmp = Path(tempfile.mkdtemp(prefix="bulwark-demo-"))
        self.config_dir = self.tmp / "config"
        self.client_conf = self.tmp / f"{self.client_iface}.conf"
        self.created: list[str] = []

    def build_network(self) -> None:
        for ns in (self.server_ns, self.client_ns):
            self.host.run(["ip", "netns", "add", ns])
            self.created.append(ns)
            Runner(netns=ns, log=self.log).run(["ip", "link", "set", "lo", "up"])
        veth_s, veth_c = f"vs{_tag()}", f"vc{_tag()}"
        self.server.run(["ip", "link", "add", veth_s, "type", "veth", "peer", "name", veth_c, "netns", self.client_ns])
        self.server.run(["ip", "address", "add", f"{SERVER_IP}/24", "dev", veth_s])
        self.server.run(["ip", "link", "set", veth_s, "up"])
        self.client.run(["ip", "address", "add", f"{CLIENT_IP}/24", "dev", veth_c])
        self.client.run(["ip", "link", "set", veth_c, "up"])
        # docker run -p 51821:51820/udp: the published port is forwarded to the one the server listens on.
        rules = "\n".join([
            "table ip bwdemo_portmap {",
            "  chain prerouting {",
            "    type nat hook prerouting priority dstnat;",
            f"    udp dport {FORWARDED_PORT} redirect to :{LISTEN_PORT}",
            "  }",
            "}",
            "",
        ])
        self.server.run(["nft", "-f", "-"], input=rules.encode())

    def bulwark(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        argv = [sys.executable, "-m", "bulwark_vpn", *args, "--config-dir", str(self.config_dir)]
        return self.server.run(argv, timeout=90)

    def tear_down(self) -> None:
        if self.client_conf.exists():
            self.client.run(["wg-quick", "down", str(self.client_conf)], check=False)
        if self.config_dir.exists():
            self.server.run([sys.executable, "-m", "bulwark_vpn", "down", "--config-dir", str(self.config_dir)],
                            check=False)
        for ns in reversed(self.created):
            pids = self.host.run(["ip", "netns", "pids", ns], check=False, quiet=True).stdout.split()
            for pid in pids:
                self.host.run(["kill", pid.decode()], check=False, quiet=True)
            self.host.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _client_config(ctx: service.Context) -> str:
    request = service.PeerConfigRequest.parse("leo_mac", endpoint=f"{SERVER_IP}:{FORWARDED_PORT}")
    text = service.peer_config(ctx, request).text
    # wg-quick's DNS= line needs resolvconf and would rewrite this host's resolver: the demo leaves it out.
    return "\n".join(line for line in text.splitlines() if not line.startswith("DNS")) + "\n"


def run_demo(log: Callable[[str], None]) -> DemoResult:
    """Build the lab, connect a wg-quick client, ping the server, report; always remove everything."""
    _require_tools()
    lab = _Lab(log)
    try:
        lab.build_network()
        log("bulwark demo: provisioning the server (PEERS=leo_mac, SERVERURL, INTERNAL_SUBNET=10.13.13.0)")
        request = InitRequest(update=settings_update({
            "server_url": SERVER_IP, "subnet4": "10.13.13.0", "interface": lab.iface, "listen_port": LISTEN_PORT,
        }))
        ctx = service.Context(lab.config_dir, environ=dict(os.environ))
        service.init_server(ctx, request)
        service.add_peers(ctx, service.AddPeersRequest.parse(["leo_mac"]))
        log("bulwark demo: bringing the server up in its namespace")
        lab.bulwark("up")
        atomic_write(lab.client_conf, _client_config(ctx))
        log(f"bulwark demo: client: wg-quick up with Endpoint = {SERVER_IP}:{FORWARDED_PORT} (the forwarded port)")
        lab.client.run(["wg-quick", "up", str(lab.client_conf)], env={"WG_QUICK_USERSPACE_IMPLEMENTATION": None})
        ping = lab.client.run(["ping", "-c", "3", "-i", "0.3", "-W", "2", "10.13.13.1"], check=False)
        transfer = lab.client.run(["wg", "show", lab.client_iface, "transfer"], quiet=True).stdout.decode()
        status = lab.bulwark("status").stdout.decode()
        return DemoResult(ping=ping.stdout.decode(), status=status, transfer=transfer.strip(),
                          ok=ping.returncode == 0)
    finally:
        log("bulwark demo: removing everything it made")
        lab.tear_down()
