"""A running gateway is bound to its store: commands for another folder refuse instead of reporting on, fixing or
taking down the wrong gateway. And every command's `--json` is exactly its result's `to_dict()`."""

from __future__ import annotations

import json
import shutil

from bulwark_vpn import service
from bulwark_vpn.errors import ERROR_TABLE, ErrorCode, ExitCode
from tests.gwlab import SERVER_WAN, Lab
from tests.helpers import context


def test_commands_for_another_folder_refuse_to_touch_the_running_gateway(lab: Lab):
    lab.init("--peers", "alice")
    lab.up()
    other = lab.factory.tmpdir() / "other"
    lab.bulwark("init", "--interface", lab.iface, "--server-url", SERVER_WAN, "--peers", "mallory")
    # Same interface name, another store (another server key): it must not pass for the running gateway.
    from tests.helpers import bulwark

    bulwark("init", "--config-dir", str(other), "--interface", lab.iface, "--server-url", SERVER_WAN,
            netns=lab.server.name)
    for args in (["status"], ["status", "--json"], ["down"], ["apply"], ["doctor"]):
        result = bulwark(*args, "--config-dir", str(other), netns=lab.server.name, check=False)
        assert result.returncode == 2, (args, result.stderr)
        line = result.stderr.strip().splitlines()[-1]
        assert "runs from another folder" in line and str(lab.config) in line, line
        if "--json" in args:
            assert json.loads(result.stdout)["error"]["code"] == "other_gateway"
    # Still up, still serving its own peers.
    status = lab.status()
    assert status["up"] and {p["name"] for p in status["peers"]} == {"alice", "mallory"}
    # A peer added to the other folder changes that store only, never the running device.
    before = lab.device_peers()
    bulwark("peer", "add", "eve", "--config-dir", str(other), netns=lab.server.name)
    assert lab.device_peers() == before
    lab.bulwark("down")
    shutil.rmtree(other)


def test_json_output_is_the_results_to_dict(tmp_path):
    from tests.helpers import bulwark

    config = tmp_path / "c"
    ctx = context(config)
    out = json.loads(bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com", "--peers",
                             "alice", "--json").stdout)
    assert out["added_peers"] == ["alice"] and out["created"] is True
    again = json.loads(bulwark("init", "--config-dir", str(config), "--json").stdout)
    assert again == service.init_from_sources(ctx).to_dict()

    added = json.loads(bulwark("peer", "add", "bob", "--config-dir", str(config), "--json").stdout)
    assert added == {"action": "added", "peers": [service.show_peer(ctx, "bob").to_dict()]}
    disabled = json.loads(bulwark("peer", "disable", "bob", "--config-dir", str(config), "--json").stdout)
    assert disabled == {"action": "disabled", "peers": [service.show_peer(ctx, "bob").to_dict()]}
    listed = json.loads(bulwark("peer", "list", "--config-dir", str(config), "--json").stdout)
    assert listed == service.list_peers(ctx).to_dict()
    shown = json.loads(bulwark("peer", "show", "alice", "--config-dir", str(config), "--json").stdout)
    assert shown == service.peer_config(ctx, service.PeerConfigRequest.parse("alice")).to_dict()
    assert shown["filename"] == "peer_alice.conf"
    status = json.loads(bulwark("status", "--config-dir", str(config), "--json", check=False).stdout)
    assert status == service.status(ctx).to_dict()
    down = json.loads(bulwark("down", "--config-dir", str(config), "--json").stdout)
    assert down == {"interface": "wg0", "stopped": False}
    deployed = json.loads(bulwark("deploy", "systemd", "--out", str(tmp_path / "d"), "--config-dir", str(config),
                                  "--json").stdout)
    library = service.render_deployment(ctx, "systemd", tmp_path / "e").to_dict()
    assert deployed == {**library, "files": [f.replace(str(tmp_path / "e"), str(tmp_path / "d"))
                                             for f in library["files"]]}
    removed = json.loads(bulwark("peer", "remove", "bob", "--config-dir", str(config), "--json").stdout)
    assert removed["action"] == "removed" and [p["name"] for p in removed["peers"]] == ["bob"]
    error = bulwark("peer", "remove", "ghost", "--config-dir", str(config), "--json", check=False)
    assert error.returncode == 2 and json.loads(error.stdout) == {"error": {
        "code": "not_found", "message": "no peer named 'ghost': see 'bulwark peer list'", "value": None, "hint": None}}


def test_every_error_code_maps_to_an_exit_code_and_a_matching_http_status():
    assert set(ERROR_TABLE) == set(ErrorCode)
    for code, (exit_code, status) in ERROR_TABLE.items():
        assert 400 <= status < 600, code
        if exit_code == ExitCode.BAD_INPUT:
            assert status < 500 or code in (ErrorCode.STORE_DAMAGED, ErrorCode.STORE_NEWER), code
