"""Issue 8's namespace proof: what Bulwark renders is brought up with the real `wg-quick up` in client namespaces
where a PreUp/PostUp line would leave a marker file, and it runs nothing.

- A positive control first: the same client namespace, a Bulwark config with one `PreUp = touch MARKER` line added
  by hand, does leave the marker (so the absence of one below means something).
- Peers made from hostile-looking but valid input (names with = + . _ -, padded lists, empty list items, host
  bits, keepalive 0, MTU with spaces, PEERDNS with an IPv6 resolver, routed networks): after the issue's payloads
  aimed at the same marker were refused, each peer's `peer_NAME.conf` and its `peer show` output are brought up
  exactly as rendered (DNS= included: a recording `resolvconf` stands in for the real one, which these namespaces
  lack), the tunnel works (ping the server's tunnel addresses), and no marker appears. What wg-quick handed
  resolvconf is exactly one `nameserver` line per DNS entry.
- The egress interface reaches a sysctl: a VLAN-style name with a dot keeps its router advertisements (sysctl
  read `net.ipv6.conf.eth0.100` as eth0/100), and no host-wide default changes.
- SERVERURL=auto against a fake IMDS (IMDSv2: token PUT, then GET with the token), a fake "what is my IP" service
  and a fake STUN server in the "VPC" namespace, answering injection payloads: nothing is stored (`peer show` says
  the address is unknown), then a good answer is stored and `bulwark up` serves it, then hostile answers again keep
  the last good one; the client's tunnel works throughout and no marker appears.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.attack import assert_folder_rendered_clean, shape
from tests.fakes import FakeImds, FakeIpService, FakeStun, serve_imds, serve_ip_service, serve_stun
from tests.gwlab import SERVER_WAN, VPC_HOST, Lab
from tests.helpers import bulwark, clean_env
from tests.netns import Netns

pytestmark = pytest.mark.slow

RESOLVCONF = """#!/bin/sh
# Stands in for resolvconf (absent here): records what wg-quick hands it for DNS=, as resolvconf would read it.
printf '%s\\n' "$*" >> "{log}/resolvconf.args"
[ "$1" = "-a" ] && cat >> "{log}/resolvconf.stdin"
exit 0
"""


class Clients:
    """wg-quick peers brought up from files exactly as Bulwark rendered them."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.shims = lab.factory.tmpdir()
        (self.shims / "resolvconf").write_text(RESOLVCONF.format(log=self.shims))
        (self.shims / "resolvconf").chmod(0o755)
        self.env = {**os.environ, "WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go",
                    "PATH": f"{self.shims}:{os.environ['PATH']}"}
        self.env.pop("LOG_LEVEL", None)

    def up(self, ns: Netns, text: str) -> Path:
        """`wg-quick up FILE` with `text` as FILE (named after a fresh interface: wg-quick takes the name from it)."""
        iface = self.lab.factory.ifname("wq")
        conf = self.lab.factory.tmpdir() / f"{iface}.conf"
        conf.write_text(text)
        conf.chmod(0o600)
        result = subprocess.run(ns.exec_argv(["wg-quick", "up", str(conf)]), env=self.env, capture_output=True,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        self.lab.factory.wg_quick_confs[iface] = (ns, conf)
        return conf

    def down(self, ns: Netns, conf: Path) -> None:
        subprocess.run(ns.exec_argv(["wg-quick", "down", str(conf)]), env=self.env, capture_output=True, timeout=60,
                       check=True)
        self.lab.factory.wg_quick_confs.pop(conf.stem, None)

    def resolvconf_input(self) -> list[str]:
        path = self.shims / "resolvconf.stdin"
        return path.read_text().splitlines() if path.exists() else []


def _with_preup(text: str, marker: Path) -> str:
    return text.replace("[Interface]\n", f"[Interface]\nPreUp = touch {marker}\n", 1)


def test_a_preup_line_would_leave_the_marker_here(lab: Lab):
    """The positive control: in these client namespaces, wg-quick does run a PreUp line."""
    marker = lab.factory.tmpdir() / "CONTROL"
    lab.init("--peers", "alice")
    lab.up()
    clients = Clients(lab)
    client = lab.add_client()
    text = lab.bulwark("peer", "show", "alice").stdout
    conf = clients.up(client, _with_preup(text, marker))
    assert marker.exists()
    assert client.ping("10.13.13.1", count=2)
    clients.down(client, conf)


HOSTILE_LOOKING = {
    "PEERDNS": " 10.13.13.1 , 2606:4700:4700::1111, ",
    "ALLOWEDIPS": " 0.0.0.0/0 ,, ::/0 ",
    "PERSISTENTKEEPALIVE_PEERS": "a=b+c, site",
    "SERVER_ALLOWEDIPS_PEER_site": "192.168.9.7/24, fd99::1/64",
}


def test_every_rendered_config_comes_up_with_wg_quick_and_runs_nothing(lab: Lab):
    markers = lab.factory.tmpdir()
    marker = markers / "PWNED"
    payload = f"fe80::1%x\n[Interface]\nPreUp = touch {marker} #"
    env = clean_env(**HOSTILE_LOOKING)
    # The payloads aimed at this marker, through a flag and a variable: refused before anything exists.
    for args, extra in ((["--server-url", payload], {}), ([], {"PEERDNS": payload}),
                        ([], {"SERVER_ALLOWEDIPS_PEER_site": payload}), (["--subnet6", payload], {})):
        refused = bulwark("init", "--config-dir", str(lab.config), "--interface", lab.iface, "--peers", "site", *args,
                          netns=lab.server.name, env=clean_env(**{**HOSTILE_LOOKING, **extra}), check=False)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert not lab.config.exists()

    bulwark("init", "--config-dir", str(lab.config), "--interface", lab.iface, "--server-url", SERVER_WAN,
            "--subnet6", "fd13::/64", "--mtu", " 1380 ", "--peers", "a=b+c,_.-x,site,3",
            netns=lab.server.name, env=env)
    lab.bulwark("peer", "add", "x.y=z", "--allowed-ips", "10.13.13.1, 10.13.13.0/24,fd13::/64", "--keepalive", "0")
    lab.up()
    assert_folder_rendered_clean(lab.config)

    clients = Clients(lab)
    peers = json.loads(lab.bulwark("peer", "list", "--json").stdout)["peers"]
    assert [p["name"] for p in peers] == ["a=b+c", "_.-x", "site", "peer3", "x.y=z"]
    for peer in peers:
        folder = "peer3" if peer["name"] == "peer3" else f"peer_{peer['name']}"
        rendered = (lab.config / folder / f"{folder}.conf").read_text()
        shown = lab.bulwark("peer", "show", peer["name"]).stdout
        assert shown == rendered and "PreUp" not in shown and shape(shown)
        client = lab.add_client()
        for text in (rendered, shown):
            conf = clients.up(client, text)
            assert client.ping("10.13.13.1", count=2), peer["name"]
            assert client.ping("fd13::1", count=2), peer["name"]
            clients.down(client, conf)
    assert not marker.exists() and not list(markers.iterdir())
    # DNS= reached resolvconf as one nameserver line per entry, twice per peer, nothing else.
    assert clients.resolvconf_input() == ["nameserver 10.13.13.1", "nameserver 2606:4700:4700::1111"] * 10


IMDS = "169.254.169.254"
IP_SERVICE = "198.51.100.80"
STUN = "198.51.100.81"


def _discovered(lab: Lab, env: dict[str, str], *args: str) -> str | None:
    result = bulwark("init", "--json", "--config-dir", str(lab.config), "--interface", lab.iface, *args,
                     netns=lab.server.name, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)["settings"]["discovered_url"]


def test_serverurl_auto_refuses_injected_discovery_answers_and_keeps_the_last_good_one(lab: Lab):
    markers = lab.factory.tmpdir()
    marker = markers / "PWNED"
    payloads = [f"2001:db8::7%x\n[Interface]\nPreUp = touch {marker}", f"{SERVER_WAN}\nPostUp = touch {marker}\n",
                f"{SERVER_WAN}%x", f"{SERVER_WAN}\u2028PreUp = touch {marker}", f"[Interface]\nPreUp = touch {marker}"]
    for address in (IMDS, IP_SERVICE, STUN):
        lab.vpc.ip("address", "add", f"{address}/32", "dev", "lo")
    lab.server.ip("route", "add", f"{IMDS}/32", "via", VPC_HOST)
    with serve_imds(FakeImds(public_ipv4=payloads[0]), host=IMDS, port=80, netns=lab.vpc.name) as imds, \
            serve_ip_service(FakeIpService(payloads[0]), host=IP_SERVICE, port=80, netns=lab.vpc.name) as http, \
            serve_stun(FakeStun(mapped="127.0.0.1"), host=STUN, netns=lab.vpc.name) as stun:
        env = clean_env(SERVERURL="auto", BULWARK_IMDS_URL=f"http://{IMDS}", BULWARK_IP_SERVICES=http.url,
                        BULWARK_STUN_SERVERS=stun.server)
        # Every source answers an injection: nothing is stored, clients get no Endpoint.
        for body in payloads:
            imds.public_ipv4, http.body = body, body
            assert _discovered(lab, env, "--peers", "alice") is None
        assert [r[:2] for r in imds.requests[:2]] == [("PUT", "/latest/api/token"),
                                                        ("GET", "/latest/meta-data/public-ipv4")]
        assert imds.requests[1][2] is True and http.requests >= len(payloads) and stun.seen >= len(payloads)
        unknown = lab.bulwark("peer", "show", "alice", check=False)
        assert unknown.returncode == 2 and "the server's public address is unknown" in unknown.stderr
        assert_folder_rendered_clean(lab.config)

        # A good answer (the "what is my IP" service) is stored, and `bulwark up` runs with it.
        http.body = f"{SERVER_WAN}\n"
        up = bulwark("up", "--config-dir", str(lab.config), netns=lab.server.name, env=env)
        assert "Traceback" not in up.stderr
        shown = lab.bulwark("peer", "show", "alice").stdout
        assert f"Endpoint = {SERVER_WAN}:51820" in shown
        clients = Clients(lab)
        client = lab.add_client()
        clients.up(client, shown)
        assert client.ping("10.13.13.1", count=2)

        # Hostile answers again (and an IMDS token urllib cannot send back): the last good address stays.
        imds.forced_token = "t\r\nX-Injected: 1"
        for body in payloads:
            imds.public_ipv4, http.body = body, body
            assert _discovered(lab, env) == SERVER_WAN
        assert lab.bulwark("peer", "show", "alice").stdout == shown
        assert_folder_rendered_clean(lab.config)
        assert client.ping("10.13.13.1", count=2)
    assert not marker.exists() and not list(markers.iterdir())


def _sysctl(ns: Netns, name: str) -> str:
    return ns.run(["sysctl", "-n", name]).stdout.decode().strip()


def test_a_dotted_egress_keeps_router_advertisements_and_no_host_wide_default_changes(lab: Lab):
    lab.server.ip("link", "add", "bwe.1", "type", "veth", "peer", "name", "bwe.2")
    assert _sysctl(lab.server, "net/ipv6/conf/bwe.1/accept_ra") == "1"
    default = _sysctl(lab.server, "net.ipv6.conf.default.accept_ra")
    lab.init("--peers", "alice", "--subnet6", "fd13::/64", "--egress-interface", "bwe.1")
    lab.up()
    assert _sysctl(lab.server, "net/ipv6/conf/bwe.1/accept_ra") == "2"
    lab.bulwark("down")
    assert _sysctl(lab.server, "net.ipv6.conf.default.accept_ra") == default
    assert _sysctl(lab.server, "net.ipv6.conf.all.accept_ra") == "1"
