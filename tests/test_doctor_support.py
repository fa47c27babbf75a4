"""Helpers for the doctor tests (no tests in here): run the real `bulwark doctor`, stop the supervisor, wire a
client namespace without starting wg-quick, serve DNS in the VPC."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bulwark_vpn.keys import PresharedKey, PrivateKey
from tests.gwlab import RUN_DIR, VPC_DNS, VPC_HOST, Lab
from tests.netns import Netns

# An upstream that refuses at once (nothing listens on the server namespace's 127.0.0.1:53): the forwarder then
# answers SERVFAIL immediately, so the dns check does not wait for the host's unreachable resolver.
FAST_RESOLV_CONF = "nameserver 127.0.0.1\n"
# The server's upstream resolver in these tests: answers every question on 127.0.0.1:53 in the server namespace,
# so the forwarder resolves (a forwarder whose upstream is silent answers SERVFAIL, which doctor warns about).
LOCAL_RESOLVER = (
    "from dnslib.server import DNSServer\n"
    "from dnslib.fixedresolver import FixedResolver\n"
    "import time\n"
    "DNSServer(FixedResolver('. 60 IN NS ns.test.'), address='127.0.0.1', port=53).start_thread()\n"
    "time.sleep(3600)\n"
)



@dataclass
class Doctor:
    """One run of `bulwark doctor --json`."""

    rc: int
    checks: dict[str, dict]
    stderr: str

    def status(self, name: str) -> str:
        return self.checks[name]["status"]

    def __getitem__(self, name: str) -> dict:
        return self.checks[name]

    def not_ok(self) -> dict[str, str]:
        return {n: c["status"] for n, c in self.checks.items() if c["status"] != "ok"}


def doctor(lab: Lab, *args: str, ns: Netns | None = None) -> Doctor:
    result = lab.bulwark("doctor", "--json", *args, check=False, ns=ns)
    assert result.stdout.strip(), f"doctor printed nothing (rc {result.returncode}): {result.stderr}"
    checks = {item["name"]: item for item in json.loads(result.stdout)["checks"]}
    return Doctor(result.returncode, checks, result.stderr)


def start(lab: Lab, peers: str = "alice", *init_args: str, resolv: str = FAST_RESOLV_CONF) -> None:
    lab.server.set_resolv_conf(resolv)
    if resolv == FAST_RESOLV_CONF:
        lab.server.python(LOCAL_RESOLVER, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab.init("--peers", peers, *init_args)
    lab.up()


def start_vpc_dns(lab: Lab) -> None:
    lab.vpc.python(VPC_DNS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab.server.set_resolv_conf(f"nameserver {VPC_HOST}\n")


def supervisor_pid(lab: Lab) -> int:
    return int(json.loads((RUN_DIR / f"{lab.iface}.json").read_text())["pid"])


@contextlib.contextmanager
def supervisor_stopped(lab: Lab) -> Iterator[int]:
    """SIGSTOP the supervisor (it cannot repair anything) and always SIGCONT it afterwards."""
    pid = supervisor_pid(lab)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def bare_client(lab: Lab) -> Netns:
    """A client namespace wired to the server like `lab.connect`, without starting wg-quick."""
    return lab.add_client()


def peer_conf(lab: Lab, name: str, *, endpoint: str | None = None) -> str:
    """The config `bulwark peer show NAME` prints (DNS line included)."""
    args = ["--endpoint", endpoint] if endpoint else []
    return lab.bulwark("peer", "show", name, *args).stdout


def without_dns(text: str) -> str:
    """wg-quick's DNS= needs resolvconf, which these namespaces lack."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("DNS")) + "\n"


def with_allowed_ips(text: str, allowed: str) -> str:
    return re.sub(r"(?m)^AllowedIPs = .*$", f"AllowedIPs = {allowed}", text)


def with_wrong_key(text: str) -> str:
    return re.sub(r"(?m)^PrivateKey = .*$", f"PrivateKey = {PrivateKey.generate().to_base64()}", text)


def with_wrong_psk(text: str) -> str:
    return re.sub(r"(?m)^PresharedKey = .*$", f"PresharedKey = {PresharedKey.generate().to_base64()}", text)


def conf_file(lab: Lab, text: str, name: str = "client.conf") -> Path:
    path = lab.factory.tmpdir() / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def egress_veth(lab: Lab) -> str:
    out = lab.server.run(["ip", "-j", "route", "show", "default"]).stdout.decode()
    return json.loads(out)[0]["dev"]


def run_fix(ns: Netns, fix: str) -> None:
    """Run a doctor fix line (commands separated by ';', optional trailing '(...)' note) in `ns`."""
    command = re.sub(r"\s*\([^()]*\)\s*$", "", fix)
    ns.run(["sh", "-c", command])
