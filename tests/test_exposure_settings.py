"""The exposure settings as input: flags, BULWARK_* variables and TOML give the same typed values through strict
parsers, a setting left out is never reset, `status` shows them (text and JSON) even when the gateway is down,
and bad values are one-line refusals that change nothing."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from bulwark_vpn.config import request_from_env, request_from_file, settings_update
from bulwark_vpn.dataplane.firewall import spec_from_settings
from bulwark_vpn.errors import InputError
from bulwark_vpn.model import Settings
from bulwark_vpn.values import parse_bool, parse_networks
from tests.helpers import bulwark, clean_env, snapshot

net = ipaddress.ip_network


def parse_switch(value: object, what: str) -> bool:
    return parse_bool(value, what)


def parse_dns_clients(value: object):
    return parse_networks(value, "DNS clients", allow_empty=True)


def test_closed_by_default() -> None:
    settings = Settings()
    assert (settings.peer_to_peer, settings.lan_to_peers, settings.host_access, settings.dns_clients) == (
        False, False, False, ())
    spec = spec_from_settings(settings)
    assert not (spec.peer_to_peer or spec.lan_to_peers or spec.host_access or spec.dns_clients)
    assert spec.egress is None and spec.addresses == (ipaddress.ip_address("10.13.13.1"),)


def test_environment_variables() -> None:
    request = request_from_env({"BULWARK_PEER_TO_PEER": "true", "BULWARK_LAN_TO_PEERS": "0",
                                "BULWARK_HOST_ACCESS": "Yes", "BULWARK_DNS_CLIENTS": "10.0.1.0/24, fd00:1::5"})
    update = request.update
    assert (update.peer_to_peer, update.lan_to_peers, update.host_access) == (True, False, True)
    assert update.dns_clients == (net("10.0.1.0/24"), net("fd00:1::5/128"))
    assert request_from_env({}).update.peer_to_peer is None  # not given, not False


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('peer_to_peer = true\nhost_access = "off"\ndns_clients = ["192.168.1.0/24", "10.0.0.7"]\n')
    update = request_from_file(path).update
    assert (update.peer_to_peer, update.host_access, update.lan_to_peers) == (True, False, None)
    assert update.dns_clients == (net("192.168.1.0/24"), net("10.0.0.7/32"))


@pytest.mark.parametrize("value", ["true\n", " true", "tru", "1 ", "yes\u2028", "", 1, 0.0, None, ["true"]])
def test_switches_are_strict(value) -> None:
    with pytest.raises(InputError, match="invalid peer to peer") as caught:
        parse_switch(value, "peer to peer")
    assert "\n" not in str(caught.value) and "\u2028" not in str(caught.value)


@pytest.mark.parametrize("value", [
    "10.0.0.0/8\n", "10.0.0.0/8,\n", "fe80::1%eth0/64", "fe80::1%x\n[Interface]", "10.0.0.0/33", "999.1.1.1/8",
    "example.com", "10.0.0.0/8 ; drop", 5, True, [5], ["10.0.0.0/8\n"], [""],
])
def test_dns_clients_are_strict(value) -> None:
    with pytest.raises(InputError, match="invalid DNS clients") as caught:
        parse_dns_clients(value)
    assert "\n" not in str(caught.value)


def test_dns_clients_accept_cidrs_addresses_and_nothing() -> None:
    assert parse_dns_clients("10.0.1.9/24,2001:db8::/48") == (net("10.0.1.0/24"), net("2001:db8::/48"))
    assert parse_dns_clients("") == () and parse_dns_clients([]) == ()


def test_toml_values_of_the_wrong_type_are_clean_errors(tmp_path: Path) -> None:
    for text in ("peer_to_peer = 1\n", "lan_to_peers = 1.5\n", "dns_clients = 5\n", "host_access = [true]\n"):
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(InputError):
            request_from_file(path)


def test_egress_interface_is_cleared_by_an_empty_value_and_lo_is_refused() -> None:
    update = settings_update({"egress_interface": ""})
    assert update.egress_interface is None and "egress_interface" in update.clear
    assert update.apply_to(Settings(egress_interface="eth1")).egress_interface is None
    with pytest.raises(InputError, match="'lo'"):
        settings_update({"egress_interface": "lo"})


def test_the_cli_stores_them_status_shows_them_and_leaving_them_out_resets_nothing(tmp_path: Path) -> None:
    config = str(tmp_path / "config")
    bulwark("init", "--config-dir", config, "--peers", "alice", "--peer-to-peer", "--dns-clients", "10.0.1.0/24",
            "--egress-interface", "eth1")
    down = bulwark("status", "--json", "--config-dir", config, check=False)
    assert down.returncode == 1  # not running; the settings are shown all the same
    report = json.loads(down.stdout)
    assert report["exposure"] == {"peer_to_peer": True, "lan_to_peers": False, "host_access": False,
                                  "dns_clients": ["10.0.1.0/24"]}
    assert report["egress_interface"] == "eth1"
    text = bulwark("status", "--config-dir", config, check=False).stdout
    assert "peer to peer: open   LAN to peers: closed   host access: closed (DNS and ping only)" in text
    assert "DNS answers: tunnel peers and 10.0.1.0/24   NAT: out of eth1 only" in text

    env = clean_env(BULWARK_HOST_ACCESS="true")
    bulwark("init", "--config-dir", config, env=env)  # only host access is given
    report = json.loads(bulwark("status", "--json", "--config-dir", config, check=False).stdout)
    assert report["exposure"]["peer_to_peer"] is True and report["exposure"]["host_access"] is True

    bulwark("init", "--config-dir", config, "--no-peer-to-peer", "--no-host-access", "--dns-clients", "",
            "--egress-interface", "")
    report = json.loads(bulwark("status", "--json", "--config-dir", config, check=False).stdout)
    assert report["exposure"] == {"peer_to_peer": False, "lan_to_peers": False, "host_access": False,
                                  "dns_clients": []}
    assert report["egress_interface"] is None
    assert "NAT: out of every interface but wg0" in bulwark("status", "--config-dir", config, check=False).stdout


@pytest.mark.parametrize("args", [
    ["--dns-clients", "10.0.0.0/8\nPreUp = touch /tmp/x"],
    ["--egress-interface", "eth0\n"],
    ["--egress-interface", "lo"],
])
def test_bad_values_change_nothing(tmp_path: Path, args: list[str]) -> None:
    config = tmp_path / "config"
    bulwark("init", "--config-dir", str(config), "--peers", "alice")
    before = snapshot(config)
    result = bulwark("init", "--config-dir", str(config), *args, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("bulwark: invalid")
    assert snapshot(config) == before


def test_bad_environment_value_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config"
    bulwark("init", "--config-dir", str(config), "--peers", "alice")
    before = snapshot(config)
    result = bulwark("init", "--config-dir", str(config), env=clean_env(BULWARK_PEER_TO_PEER="maybe"), check=False)
    assert result.returncode == 2 and "invalid peer to peer (BULWARK_PEER_TO_PEER): 'maybe'" in result.stderr
    assert snapshot(config) == before
