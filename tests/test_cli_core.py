"""The provisioning CLI end to end: linuxserver variables, layout, consistency, bad input changes nothing."""

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bulwark_vpn.render.wgquick import parse_config
from tests.helpers import bulwark, clean_env, snapshot


def _init_linuxserver_style(config_dir: Path, **env: str) -> subprocess.CompletedProcess:
    variables = {"PEERS": "leo_mac,2", "SERVERURL": "vpn.example.com", "SERVERPORT": "51821",
                 "INTERNAL_SUBNET": "10.13.13.0", "PEERDNS": "auto"}
    variables.update(env)
    return bulwark("init", "--config-dir", str(config_dir), env=clean_env(**variables))


def test_linuxserver_invocation_yields_the_layout_with_consistent_keys(tmp_path):
    config = tmp_path / "config"
    _init_linuxserver_style(config)
    expected = {
        "wg_confs/wg0.conf", "server/privatekey-server", "server/publickey-server",
        "peer_leo_mac/peer_leo_mac.conf", "peer_leo_mac/peer_leo_mac.png", "peer_leo_mac/privatekey-peer_leo_mac",
        "peer_leo_mac/publickey-peer_leo_mac", "peer_leo_mac/presharedkey-peer_leo_mac",
        "peer2/peer2.conf", "peer2/peer2.png", "peer2/privatekey-peer2", "peer2/publickey-peer2",
        "peer2/presharedkey-peer2",
    }
    files = {str(p.relative_to(config)) for p in config.rglob("*") if p.is_file()}
    assert expected <= files
    for rel in expected:
        mode = (config / rel).stat().st_mode & 0o777
        assert mode == (0o644 if "publickey" in rel else 0o600), rel
    for folder in ("wg_confs", "server", "peer_leo_mac", "peer2"):
        assert (config / folder).stat().st_mode & 0o777 == 0o700
    assert config.stat().st_mode & 0o777 == 0o700

    server = parse_config((config / "wg_confs/wg0.conf").read_text())
    assert (config / "server/publickey-server").read_text().strip() == str(server.interface.private_key.public_key())
    assert server.interface.listen_port == 51820  # SERVERPORT is only the advertised port
    assert [str(a) for a in server.interface.addresses] == ["10.13.13.1/24"]
    by_key = {p.public_key: p for p in server.peers}
    for folder, address in (("peer_leo_mac", "10.13.13.2"), ("peer2", "10.13.13.3")):
        client = parse_config((config / folder / f"{folder}.conf").read_text())
        public = client.interface.private_key.public_key()
        assert (config / folder / f"publickey-{folder}").read_text().strip() == str(public)
        private_file = (config / folder / f"privatekey-{folder}").read_text().strip()
        assert private_file == client.interface.private_key.to_base64()
        server_peer = by_key[public]
        assert [str(n) for n in server_peer.allowed_ips] == [f"{address}/32"]
        psk = (config / folder / f"presharedkey-{folder}").read_text().strip()
        assert server_peer.preshared_key.to_base64() == psk == client.peers[0].preshared_key.to_base64()
        assert client.peers[0].endpoint == "vpn.example.com:51821"
        assert client.interface.dns == ("10.13.13.1",)
        assert [str(a) for a in client.interface.addresses] == [f"{address}/32"]
        assert client.peers[0].public_key == server.interface.private_key.public_key()
        assert (config / folder / f"{folder}.png").read_bytes().startswith(b"\x89PNG")


def test_init_is_idempotent_and_keeps_edits_of_unrelated_settings(tmp_path):
    config = tmp_path / "c"
    _init_linuxserver_style(config)
    before = snapshot(config)
    _init_linuxserver_style(config)
    assert snapshot(config) == before
    # A changed setting updates what depends on it, nothing else: keys and addresses stay.
    _init_linuxserver_style(config, SERVERPORT="51999")
    after = snapshot(config)
    assert after["peer2/privatekey-peer2"] == before["peer2/privatekey-peer2"]
    assert after["wg_confs/wg0.conf"] == before["wg_confs/wg0.conf"]
    assert b"Endpoint = vpn.example.com:51999" in after["peer2/peer2.conf"][0]
    # "Not given" never resets: running init without variables keeps SERVERPORT 51999.
    bulwark("init", "--config-dir", str(config))
    assert b":51999" in (config / "peer2/peer2.conf").read_bytes()


def test_ipv6_server_url_is_bracketed_and_dual_stack(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "2001:db8::7", "--subnet6", "fd13:13:13::/64",
            "--peers", "alice")
    client = parse_config(bulwark("peer", "show", "alice", "--config-dir", str(config)).stdout)
    assert client.peers[0].endpoint == "[2001:db8::7]:51820"
    assert [str(a) for a in client.interface.addresses] == ["10.13.13.2/32", "fd13:13:13::2/128"]
    assert client.interface.dns == ("10.13.13.1", "fd13:13:13::1")
    server = parse_config((config / "wg_confs/wg0.conf").read_text())
    assert [str(a) for a in server.interface.addresses] == ["10.13.13.1/24", "fd13:13:13::1/64"]


@pytest.mark.slow
def test_300_peers_in_a_slash_16_get_distinct_addresses(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com",
            env=clean_env(INTERNAL_SUBNET="10.20.0.0/16", PEERS="300"))
    peers = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout)["peers"]
    addresses = [ipaddress.IPv4Address(p["address4"]) for p in peers]
    assert len(peers) == 300 == len(set(addresses))
    assert all(a in ipaddress.IPv4Network("10.20.0.0/16") for a in addresses)
    assert max(addresses) > ipaddress.IPv4Address("10.20.0.255")  # past the first /24, unlike linuxserver
    assert len({p["public_key"] for p in peers}) == 300


def test_peer_show_endpoint_override_and_qr(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "0.0.0.0", "--peers", "leo_mac")
    shown = bulwark("peer", "show", "leo_mac", "--endpoint", "0.0.0.0:51821", "--config-dir", str(config)).stdout
    assert parse_config(shown).peers[0].endpoint == "0.0.0.0:51821"
    qr = bulwark("peer", "show", "leo_mac", "--qr", "--config-dir", str(config)).stdout
    assert "█" in qr and "PrivateKey" not in qr


def test_peer_list_json_is_stable_and_has_no_secrets(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--peers", "bob", "--server-url", "vpn.example.com")
    bulwark("peer", "add", "carol", "--allowed-ips", "10.0.0.0/16", "--keepalive", "25", "--config-dir", str(config))
    peers = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout)["peers"]
    assert set(peers[0]) == {"name", "public_key", "address4", "address6", "allowed_ips", "keepalive", "enabled",
                             "server_allowed_ips", "has_private_key", "config_filename", "owner", "expires_at",
                             "expires", "expired"}
    carol = peers[1]
    assert carol["allowed_ips"] == ["10.0.0.0/16"] and carol["keepalive"] == 25
    secrets = [(config / "peer_bob/privatekey-peer_bob").read_text().strip(),
               (config / "peer_bob/presharedkey-peer_bob").read_text().strip()]
    listing = json.dumps(peers)
    assert not any(s in listing for s in secrets)


def test_remove_frees_files_and_address_for_later(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--subnet", "10.5.5.0/29", "--peers", "a,b,c,d,e")
    bulwark("peer", "remove", "b", "--config-dir", str(config))
    assert not (config / "peer_b").exists()
    assert "peer_b" not in (config / "wg_confs/wg0.conf").read_text()
    bulwark("peer", "add", "f", "--config-dir", str(config))
    peers = {p["name"]: p["address4"] for p in json.loads(bulwark("peer", "list", "--json", "--config-dir",
                                                                    str(config)).stdout)["peers"]}
    assert peers["f"] == "10.5.5.3"  # the subnet was otherwise full: b's address, after b was removed
    full = bulwark("peer", "add", "g", "--config-dir", str(config), check=False)
    assert full.returncode == 2 and "10.5.5.0/29' is full" in full.stderr


BAD_INPUTS = [
    (["peer", "add", "a/b"], "invalid peer name: 'a/b'"),
    (["peer", "add", ".."], "invalid peer name: '..'"),
    (["peer", "add", "has space"], "invalid peer name: 'has space'"),
    (["peer", "add", "n" * 64], f"invalid peer name: '{'n' * 64}'"),
    (["peer", "add", "--", "-dash"], "invalid peer name: '-dash'"),
    (["peer", "add", "existing"], "a peer with this name already exists: 'existing'"),
    (["peer", "add", "x", "x"], "peer name given twice: 'x'"),
    (["peer", "add", "ok", "--allowed-ips", "10.0.0.0/33"], "invalid allowed IPs entry: '10.0.0.0/33'"),
    (["peer", "add", "ok", "--keepalive", "-3"], "invalid keepalive: '-3'"),
    (["peer", "remove", "ghost"], "no peer named 'ghost'"),
    (["peer", "remove", "existing", "ghost"], "no peer named 'ghost'"),
    (["peer", "show", "existing", "--endpoint", "nohostport"], "invalid endpoint: 'nohostport'"),
    (["init", "--subnet", "10.13.13.0/31"], "invalid IPv4 subnet: '10.13.13.0/31'"),
    (["init", "--subnet", "banana"], "invalid IPv4 subnet: 'banana'"),
    (["init", "--subnet", "10.99.0.0/24"], "cannot change the subnet: '10.99.0.0/24'"),
    (["init", "--listen-port", "70000"], "invalid listen port: '70000'"),
    (["init", "--server-port", "0"], "invalid server port (SERVERPORT): '0'"),
    (["init", "--server-url", "http://x:1"], "invalid server URL: 'http://x:1'"),
    (["init", "--interface", "wg0/../x"], "invalid interface name: 'wg0/../x'"),
    (["init", "--mtu", "20"], "invalid MTU: '20'"),
    (["init", "--peer-dns", "not-an-ip"], "invalid PEERDNS entry: 'not-an-ip'"),
    (["init", "--subnet6", "fd00::/127"], "invalid IPv6 subnet: 'fd00::/127'"),
    (["init", "--settings", "/nonexistent/s.toml"], "cannot read settings file: '/nonexistent/s.toml'"),
]


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    config = tmp_path_factory.mktemp("bad") / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com", "--peers", "existing,other")
    return config


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(provisioned, args, message):
    before = snapshot(provisioned)
    result = bulwark(*args, "--config-dir", str(provisioned), check=False)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert lines[0].startswith("bulwark: ")
    assert result.stdout == ""
    assert snapshot(provisioned) == before


def test_bad_env_variable_changes_nothing(provisioned):
    before = snapshot(provisioned)
    result = bulwark("init", "--config-dir", str(provisioned), env=clean_env(INTERNAL_SUBNET="10.1.1.0/40"),
                     check=False)
    assert result.returncode == 2 and "invalid IPv4 subnet: '10.1.1.0/40'" in result.stderr
    assert snapshot(provisioned) == before


def test_corrupted_store_exit_2_and_untouched(provisioned, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(provisioned, copy)
    db = copy / "bulwark.db"
    db.write_bytes(b"garbage" * 500)
    before = snapshot(copy)
    result = bulwark("peer", "add", "new", "--config-dir", str(copy), check=False)
    assert result.returncode == 2 and "the store is damaged" in result.stderr
    assert snapshot(copy) == before


def test_commands_on_a_missing_config_dir_create_nothing(tmp_path):
    missing = tmp_path / "nothing"
    result = bulwark("peer", "add", "bob", "--config-dir", str(missing), check=False)
    assert result.returncode == 2 and "bulwark init --config-dir" in result.stderr
    assert not missing.exists()


def test_config_dir_from_environment(tmp_path):
    config = tmp_path / "envdir"
    bulwark("init", "--peers", "bob", env=clean_env(BULWARK_CONFIG_DIR=str(config)))
    assert (config / "peer_bob/peer_bob.conf").exists()


def test_settings_file(tmp_path):
    config = tmp_path / "c"
    settings_file = tmp_path / "bulwark.toml"
    settings_file.write_text('server_url = "vpn.example.org"\nsubnet = "10.77.0.0/20"\npeers = ["ann", 3]\n'
                             'listen_port = 51900\nkeepalive_peers = ["ann"]\n')
    bulwark("init", "--config-dir", str(config), "--settings", str(settings_file), "--listen-port", "51901")
    server = parse_config((config / "wg_confs/wg0.conf").read_text())
    assert server.interface.listen_port == 51901  # flags beat the file
    assert str(server.interface.addresses[0]) == "10.77.0.1/20"
    listed = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout)["peers"]
    peers = {p["name"]: p for p in listed}
    assert set(peers) == {"ann", "peer3"} and peers["ann"]["keepalive"] == 25


def test_private_keys_never_reach_the_log(tmp_path):
    config = tmp_path / "c"
    result = bulwark("init", "--config-dir", str(config), "--peers", "3", "--server-url", "vpn.example.com")
    secrets = [p.read_text().strip() for p in config.rglob("privatekey-*")]
    assert secrets and not any(s in result.stderr + result.stdout for s in secrets)


def test_peer_with_its_own_public_key(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn.example.com")
    own = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout
    public = subprocess.run(["wg", "pubkey"], input=own, capture_output=True, text=True, check=True).stdout.strip()
    bulwark("peer", "add", "byok", "--public-key", public, "--config-dir", str(config))
    server = parse_config((config / "wg_confs/wg0.conf").read_text())
    assert str(server.peers[0].public_key) == public
    assert (config / "peer_byok/publickey-peer_byok").read_text().strip() == public
    assert not (config / "peer_byok/privatekey-peer_byok").exists()
    shown = bulwark("peer", "show", "byok", "--config-dir", str(config), check=False)
    assert shown.returncode == 2 and "private key" in shown.stderr
    before = snapshot(config)
    bad = bulwark("peer", "add", "x", "--public-key", "not-a-key", "--config-dir", str(config), check=False)
    assert bad.returncode == 2 and "invalid public key: 'not-a-key'" in bad.stderr
    assert snapshot(config) == before


def test_server_allowedips_variable_updates_an_existing_peer(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--peers", "site")
    bulwark("init", "--config-dir", str(config), env=clean_env(SERVER_ALLOWEDIPS_PEER_site="192.168.9.0/24"))
    server = parse_config((config / "wg_confs/wg0.conf").read_text())
    assert [str(n) for n in server.peers[0].allowed_ips] == ["10.13.13.2/32", "192.168.9.0/24"]


def test_deploy_writes_each_target(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--peers", "leo_mac", "--server-url", "vpn.example.com")
    expected = {"docker": "compose.yaml", "kubernetes": "bulwark.yaml", "terraform": "main.tf",
                "systemd": "bulwark.service"}
    for target, name in expected.items():
        out = tmp_path / target
        written = bulwark("deploy", target, "--config-dir", str(config), "--out", str(out)).stdout.split()
        assert str(out / name) in written
        assert "leo_mac" in (out / name).read_text() or target in ("terraform", "systemd")
    bad = bulwark("deploy", "kubernetes", "--config-dir", str(config), "--out", str(tmp_path / "k"),
                  "--node-port", "99", "--service-type", "NodePort", check=False)
    assert bad.returncode == 2 and "99" in bad.stderr and not (tmp_path / "k").exists()


def test_failed_first_init_leaves_nothing_behind(tmp_path):
    config = tmp_path / "new"
    result = bulwark("init", "--config-dir", str(config), "--subnet", "10.5.5.0/30", "--peers", "3", check=False)
    assert result.returncode == 2 and "10.5.5.0/30' is full" in result.stderr
    assert not config.exists()


def test_failed_init_on_a_linuxserver_layout_changes_nothing_and_a_retry_adopts_it(tmp_path):
    from tests.test_adopt import _linuxserver_config

    root = tmp_path / "config"
    keys = _linuxserver_config(root)
    before = snapshot(root)
    bad = bulwark("init", "--config-dir", str(root), "--subnet", "10.99.0.0/24", check=False)
    assert bad.returncode == 2 and "cannot change the subnet: '10.99.0.0/24'" in bad.stderr
    assert snapshot(root) == before and not (root / ".bulwark.lock").exists()
    good = bulwark("init", "--config-dir", str(root))
    assert "adopted the linuxserver/wireguard config" in good.stderr
    server = parse_config((root / "wg_confs/wg0.conf").read_text())
    assert server.interface.private_key.to_base64() == keys["server"]["private"]


def test_a_network_is_routed_to_one_peer_only(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--peers", "site1")
    bulwark("peer", "add", "site2", "--server-allowed-ips", "192.168.5.0/24", "--config-dir", str(config))
    before = snapshot(config)
    cases = [
        (["peer", "add", "site3", "--server-allowed-ips", "192.168.5.128/25"], "peer 'site2' already has"),
        (["peer", "add", "a", "b", "--server-allowed-ips", "192.168.9.0/24"], "a network can be behind one peer"),
        (["peer", "add", "x", "--server-allowed-ips", "10.13.13.0/28"], "overlaps the tunnel subnet"),
    ]
    for args, message in cases:
        result = bulwark(*args, "--config-dir", str(config), check=False)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    clash_env = clean_env(SERVER_ALLOWEDIPS_PEER_site1="192.168.5.0/24")
    env_clash = bulwark("init", "--config-dir", str(config), env=clash_env, check=False)
    assert env_clash.returncode == 2 and "peer 'site2' already has" in env_clash.stderr
    assert snapshot(config) == before


def test_the_servers_own_key_is_not_a_peer_key(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config))
    own = (config / "server/publickey-server").read_text().strip()
    result = bulwark("peer", "add", "me", "--public-key", own, "--config-dir", str(config), check=False)
    assert result.returncode == 2 and "the server's own" in result.stderr


def test_turning_on_ipv6_later_gives_existing_peers_an_address(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--peers", "a,b", "--server-url", "vpn.example.com")
    bulwark("init", "--config-dir", str(config), "--subnet6", "fd42::/64")
    peers = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout)["peers"]
    assert [p["address6"] for p in peers] == ["fd42::2", "fd42::3"]
    client = parse_config((config / "peer_a/peer_a.conf").read_text())
    assert [str(a) for a in client.interface.addresses] == ["10.13.13.2/32", "fd42::2/128"]


def test_log_confs_prints_new_peers_qr_codes_to_the_log_only(tmp_path):
    config = tmp_path / "c"
    result = bulwark("init", "--config-dir", str(config), "--peers", "a", "--server-url", "vpn.example.com",
                     env=clean_env(LOG_CONFS="true"))
    assert "peer a:" in result.stderr and "█" in result.stderr and result.stdout == ""
    quiet = bulwark("peer", "add", "b", "--config-dir", str(config))
    assert "█" not in quiet.stderr


@pytest.mark.slow
def test_sigkill_in_the_middle_of_adds_leaves_a_store_holding_every_returned_add(tmp_path):
    import signal
    import sqlite3
    import sys
    import time

    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--subnet", "10.60.0.0/16", "--server-url", "vpn.example.com")
    code = (
        "import sys\nfrom tests.helpers import add_peers\n"
        "for i in range(100000):\n"
        "    add_peers(sys.argv[1], [f'k{i}'])\n"
        "    print(f'k{i}', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(config)], stdout=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGKILL)
    returned = proc.communicate()[0].split()
    assert len(returned) > 10
    conn = sqlite3.connect(config / "bulwark.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    listed = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout)["peers"]
    peers = {p["name"] for p in listed}
    assert set(returned) <= peers  # every add that returned is there (at most one more was in flight)
    assert len(peers - set(returned)) <= 1
    bulwark("peer", "add", "after", "--config-dir", str(config))  # and the store still works


def test_kubernetes_secret_holds_a_consistent_store_snapshot(tmp_path):
    import base64
    import sqlite3

    import yaml

    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--peers", "a", "--server-url", "vpn.example.com")
    # A reader keeps the WAL alive, as a running supervisor does: the last add lives only in the WAL.
    holder = sqlite3.connect(config / "bulwark.db", isolation_level=None)
    holder.execute("BEGIN")
    holder.execute("SELECT COUNT(*) FROM peers").fetchone()  # an open read: the WAL cannot be checkpointed
    bulwark("peer", "add", "b", "--config-dir", str(config))
    (tmp_path / "copy.db").write_bytes((config / "bulwark.db").read_bytes())
    copied = sqlite3.connect(tmp_path / "copy.db")
    assert {r[0] for r in copied.execute("SELECT name FROM peers")} == {"a"}  # what a byte copy would ship
    copied.close()
    out = tmp_path / "k8s"
    bulwark("deploy", "kubernetes", "--storage", "secret", "--config-dir", str(config), "--out", str(out))
    holder.close()
    secret = next(d for d in yaml.safe_load_all((out / "bulwark.yaml").read_text()) if d and d["kind"] == "Secret")
    data = secret.get("data") or {}
    names = set(data)
    assert not any(n.endswith(("-wal", "-shm")) or "lock" in n for n in names)
    db_key = next(n for n in names if n.endswith("bulwark.db"))
    snapshot = tmp_path / "snap.db"
    snapshot.write_bytes(base64.b64decode(data[db_key]))
    conn = sqlite3.connect(snapshot)
    assert {r[0] for r in conn.execute("SELECT name FROM peers")} == {"a", "b"}
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_status_of_named_peers_lists_those_and_refuses_an_unknown_name(tmp_path):
    config = tmp_path / "config"
    _init_linuxserver_style(config, PEERS="3")
    # The gateway is down: exit 1, but the named peers are still listed from the store.
    shown = bulwark("status", "--config-dir", str(config), "--json", "peer3", "peer1", check=False)
    assert shown.returncode == 1
    report = json.loads(shown.stdout)
    assert sorted(p["name"] for p in report["peers"]) == ["peer1", "peer3"]
    assert report["peers_total"] == 3
    unknown = bulwark("status", "--config-dir", str(config), "peer1", "nobody", check=False)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "bulwark: no such peer: 'nobody': see 'bulwark peer list'"
    bad = bulwark("status", "--config-dir", str(config), "a\nb", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


HELP_PROBE = r"""
import sys
from click.testing import CliRunner
from bulwark_vpn.cli import cli
for args in (["--help"], ["peer", "--help"], ["up", "--help"]):
    assert CliRunner().invoke(cli, args).exit_code == 0, args
print("\n".join(sorted(sys.modules)))
"""


def test_help_loads_no_heavy_module():
    """`bulwark --help` answers without the QR encoders, cryptography, the data plane, the store or the web stack
    (issue 9): what it loads is click and the command table only."""
    loaded = set(subprocess.run([sys.executable, "-c", HELP_PROBE], capture_output=True, text=True, check=True,
                                env=clean_env(), cwd=Path(__file__).parent.parent).stdout.split())
    assert "click" in loaded and "bulwark_vpn.cli" in loaded  # the probe did run the command line
    heavy = ("cryptography", "segno", "qrcode", "fastapi", "starlette", "uvicorn", "pydantic", "sqlite3", "dnslib",
             "argon2", "pyotp", "prometheus_client", "bulwark_vpn.dataplane", "bulwark_vpn.render.qr",
             "bulwark_vpn.store", "bulwark_vpn.web", "bulwark_vpn.doctor")
    assert sorted(m for m in loaded if m.split(".")[0] in heavy or m.startswith(heavy)) == []
