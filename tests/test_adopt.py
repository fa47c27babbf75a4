"""Switching from linuxserver/wireguard: an existing /config keeps its keys, PSKs and addresses."""

import json
import subprocess
from pathlib import Path

from bulwark_vpn.render.wgquick import parse_config
from tests.helpers import bulwark, clean_env


def _wg(*args: str, input: str | None = None) -> str:
    return subprocess.run(["wg", *args], input=input, capture_output=True, text=True, check=True).stdout.strip()


def _linuxserver_config(root: Path) -> dict[str, dict[str, str]]:
    """A /config as linuxserver/wireguard writes it for PEERS=leo_mac,2 (its templates, its file names)."""
    keys = {}
    server_priv = _wg("genkey")
    (root / "server").mkdir(parents=True)
    (root / "server/privatekey-server").write_text(server_priv + "\n")
    (root / "server/publickey-server").write_text(_wg("pubkey", input=server_priv) + "\n")
    (root / ".donoteditthisfile").write_text(
        'ORIG_SERVERURL="203.0.113.9"\nORIG_SERVERPORT="51820"\nORIG_PEERDNS="10.13.13.1"\nORIG_PEERS="leo_mac,2"\n'
        'ORIG_INTERFACE="10.13.13"\nORIG_ALLOWEDIPS="0.0.0.0/0, ::/0"\n'
    )
    server = [
        "[Interface]", "Address = 10.13.13.1", "ListenPort = 51820", f"PrivateKey = {server_priv}",
        "PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth+ -j MASQUERADE",
        "PostDown = iptables -D FORWARD -i %i -j ACCEPT; iptables -t nat -D POSTROUTING -o eth+ -j MASQUERADE", "",
    ]
    for folder, octet in (("peer_leo_mac", 2), ("peer2", 3)):
        priv, psk = _wg("genkey"), _wg("genpsk")
        pub = _wg("pubkey", input=priv)
        keys[folder] = {"private": priv, "public": pub, "psk": psk, "address": f"10.13.13.{octet}"}
        path = root / folder
        path.mkdir()
        (path / f"privatekey-{folder}").write_text(priv + "\n")
        (path / f"publickey-{folder}").write_text(pub + "\n")
        (path / f"presharedkey-{folder}").write_text(psk + "\n")
        (path / f"{folder}.conf").write_text(
            f"[Interface]\nAddress = 10.13.13.{octet}\nPrivateKey = {priv}\nListenPort = 51820\nDNS = 10.13.13.1\n\n"
            f"[Peer]\nPublicKey = {_wg('pubkey', input=server_priv)}\nPresharedKey = {psk}\n"
            f"Endpoint = 203.0.113.9:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n"
        )
        server += ["[Peer]", f"# {folder}", f"PublicKey = {pub}", f"PresharedKey = {psk}",
                   f"AllowedIPs = 10.13.13.{octet}/32", ""]
    (root / "wg_confs").mkdir()
    (root / "wg_confs/wg0.conf").write_text("\n".join(server))
    keys["server"] = {"private": server_priv}
    return keys


def test_adopting_a_linuxserver_config_keeps_clients_working(tmp_path):
    root = tmp_path / "config"
    keys = _linuxserver_config(root)
    env = clean_env(PEERS="leo_mac,2", SERVERURL="203.0.113.9", INTERNAL_SUBNET="10.13.13.0", PEERDNS="auto")
    result = bulwark("init", "--config-dir", str(root), env=env)
    assert "adopted the linuxserver/wireguard config" in result.stderr
    assert "added peer" not in result.stderr  # both peers existed already

    server = parse_config((root / "wg_confs/wg0.conf").read_text())
    assert server.interface.private_key.to_base64() == keys["server"]["private"]
    by_key = {str(p.public_key): p for p in server.peers}
    listed = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(root)).stdout)["peers"]
    peers = {p["name"]: p for p in listed}
    assert set(peers) == {"leo_mac", "peer2"}
    for folder, name in (("peer_leo_mac", "leo_mac"), ("peer2", "peer2")):
        expected = keys[folder]
        assert peers[name]["address4"] == expected["address"]
        assert peers[name]["public_key"] == expected["public"]
        assert by_key[expected["public"]].preshared_key.to_base64() == expected["psk"]
        client = parse_config((root / folder / f"{folder}.conf").read_text())
        assert client.interface.private_key.to_base64() == expected["private"]
        assert client.peers[0].preshared_key.to_base64() == expected["psk"]
        assert client.peers[0].endpoint == "203.0.113.9:51820"
    # A new peer takes the next free address, not one of the adopted ones.
    bulwark("peer", "add", "new", "--config-dir", str(root))
    listed = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(root)).stdout)["peers"]
    peers = {p["name"]: p for p in listed}
    assert peers["new"]["address4"] == "10.13.13.4"
