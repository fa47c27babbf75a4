"""The real tools accept Bulwark's files: `wg-quick strip` + `wg setconf` into wireguard-go, peer configs."""

import subprocess

from bulwark_vpn.render.wgquick import parse_config
from tests.helpers import bulwark


def test_server_config_loads_into_wireguard_go_and_peer_configs_parse(netns_factory, tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "2001:db8::5", "--subnet6", "fd00:13::/64",
            "--peers", "leo_mac,3", "--mtu", "1380")
    bulwark("peer", "add", "site", "--server-allowed-ips", "192.168.50.0/24", "--keepalive", "25",
            "--config-dir", str(config))
    server_conf = config / "wg_confs/wg0.conf"
    stripped = subprocess.run(["wg-quick", "strip", str(server_conf)], capture_output=True, text=True, check=True)
    ns = netns_factory()
    iface = netns_factory.ifname("st")
    ns.run(["wireguard-go", iface])
    ns.run(["wg", "setconf", iface, "/dev/stdin"], input=stripped.stdout.encode())
    dump = ns.run(["wg", "show", iface, "dump"]).stdout.decode().splitlines()
    model = parse_config(server_conf.read_text())
    assert dump[0].split("\t")[1] == str(model.interface.private_key.public_key())
    assert dump[0].split("\t")[1] == (config / "server/publickey-server").read_text().strip()
    assert int(dump[0].split("\t")[2]) == 51820
    live = {line.split("\t")[0]: line.split("\t") for line in dump[1:]}
    assert len(live) == 3  # leo_mac, peer3 (a number in a list is a numbered peer) and site
    for peer in model.peers:
        fields = live[str(peer.public_key)]
        assert fields[1] == peer.preshared_key.to_base64()
        assert set(fields[3].split(",")) == {str(n) for n in peer.allowed_ips}
    assert any("192.168.50.0/24" in fields[3] for fields in live.values())
    for conf in config.glob("peer*/peer*.conf"):
        result = subprocess.run(["wg-quick", "strip", str(conf)], capture_output=True, text=True)
        assert result.returncode == 0, (conf, result.stderr)
        assert "Endpoint = [2001:db8::5]:51820" in result.stdout
