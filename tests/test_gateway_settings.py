"""Settings changed under a running gateway: what is applied live, and what is refused."""

import json

from bulwark_vpn.dataplane.firewall import table_name
from tests.gwlab import RUN_DIR, Lab


def test_renaming_the_interface_of_a_running_gateway_is_refused(lab: Lab):
    lab.init("--peers", "alice")
    lab.up()
    result = lab.bulwark("init", "--interface", "other0", check=False)
    assert result.returncode == 2 and f"the gateway runs on '{lab.iface}'" in result.stderr
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
    assert "udp dport 51999 accept" in rules
    client, _ = lab.connect("alice", allowed_ips="10.13.13.0/24")
    assert client.ping("10.13.13.1")
