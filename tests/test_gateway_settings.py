"""Settings changed under a running gateway: what is applied live, and what is refused."""

import json
from pathlib import Path

from bulwark_vpn.dataplane.firewall import table_name
from tests.gwlab import RUN_DIR, Lab


def test_renaming_the_interface_of_a_running_gateway_is_refused(lab: Lab):
    lab.init("--peers", "alice")
    lab.up()
    result = lab.bulwark("init", "--interface", "other0", check=False)
    assert result.returncode == 2 and f"it runs on '{lab.iface}'" in result.stderr
    assert json.loads(lab.bulwark("status", "--json").stdout)["interface"] == lab.iface
    lab.bulwark("down")
    renamed = lab.factory.ifname("bwr")
    lab.bulwark("init", "--interface", renamed)
    assert (lab.config / f"wg_confs/{renamed}.conf").exists()
    assert not (lab.config / f"wg_confs/{lab.iface}.conf").exists()  # no stale copy of the server key
    (RUN_DIR / f"{renamed}.json").unlink(missing_ok=True)


def test_listen_port_change_is_applied_live(lab: Lab):
    lab.init("--peers", "alice")
    lab.up()
    lab.bulwark("init", "--listen-port", "51999")
    lab.wait_for(lambda: json.loads(lab.bulwark("status", "--json").stdout)["listen_port"] == 51999, 3)
    rules = lab.server.run(["nft", "list", "table", "inet", table_name(lab.iface)]).stdout.decode()
    assert "udp dport 51999 counter" in rules
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")


def _secrets(lab: Lab) -> list[str]:
    names = ("privatekey-", "presharedkey-")
    return [p.read_text().strip() for p in lab.config.rglob("*") if p.is_file() and p.name.startswith(names)]


def test_no_secret_reaches_any_log_or_command_line(lab: Lab):
    lab.init("--peers", "alice,bob")
    up = lab.up()
    lab.bulwark("peer", "add", "carol")
    secrets = _secrets(lab)
    assert len(secrets) == 1 + 3 + 3  # server key, three peer keys, three PSKs
    supervisor_log = (RUN_DIR / f"{lab.iface}.log").read_text()
    cmdlines = [p.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists()]
    for secret in secrets:
        assert secret not in up.stderr and secret not in supervisor_log
        assert not any(secret in line for line in cmdlines)


def test_down_leaves_other_tables_routes_and_interfaces_alone(lab: Lab):
    ruleset = (b"table inet someone_else {\n chain forward {\n  type filter hook forward priority 10; policy accept;\n"
               b"  ip saddr 10.99.0.0/16 counter accept\n }\n}\n")
    lab.server.run(["nft", "-f", "-"], input=ruleset)
    lab.server.ip("route", "add", "198.18.0.0/15", "via", "10.0.1.10")
    lab.init("--peers", "alice")
    lab.bulwark("peer", "add", "site", "--server-allowed-ips", "192.168.60.0/24")
    lab.up()
    assert "192.168.60.0/24" in lab.server.run(["ip", "route"]).stdout.decode()
    lab.bulwark("down")
    tables = lab.server.run(["nft", "list", "tables"]).stdout.decode()
    assert "someone_else" in tables and "bulwark" not in tables
    routes = lab.server.run(["ip", "route"]).stdout.decode()
    assert "198.18.0.0/15 via 10.0.1.10" in routes and "192.168.60.0" not in routes and "10.13.13" not in routes


def test_ipv6_forwarding_keeps_router_advertisements_on_the_egress(lab: Lab):
    lab.init("--peers", "alice", "--subnet6", "fd13:13:13::/64")
    egress = json.loads(lab.server.run(["ip", "-j", "route", "show", "default"]).stdout)[0]["dev"]
    sysctl = f"net.ipv6.conf.{egress}.accept_ra"
    assert lab.server.run(["sysctl", "-n", sysctl]).stdout.decode().strip() == "1"
    lab.up()
    assert lab.server.run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.decode().strip() == "1"
    assert lab.server.run(["sysctl", "-n", sysctl]).stdout.decode().strip() == "2"
