"""Shared by the attack tests (issue 8): the payloads, a linuxserver /config to adopt, and the oracle that says a
rendered wg-quick file has exactly the lines and sections of the same config with clean values.

The oracle reads a file as wg-quick does (lines split on "\\n" only; a `Key = value` line, a `[Section]`, a comment
or a blank line) and compares its shape (the sequence of section headers, keys, comments and blanks) with the shape
the store's typed values call for: the server config has `[Interface]` with Address, ListenPort, PrivateKey (and
MTU when set), then per enabled peer a blank, `[Peer]`, `# peer_NAME`, PublicKey (PresharedKey), AllowedIPs
(PersistentKeepalive); a client config likewise. An injected line, section, key or comment changes the shape;
a control character or separator anywhere (one that another reader could take for a line break) fails too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bulwark_vpn.keys import PrivateKey
from bulwark_vpn.model import Peer, Settings
from bulwark_vpn.render import layout
from bulwark_vpn.values import has_unsafe_char

# The payload, and the line breaks and separators it comes with.
PAYLOAD = "fe80::1%x\n[Interface]\nPreUp = touch PWNED #"
BREAKS = {"LF": "\n", "CRLF": "\r\n", "CR": "\r", "NEL": "\x85", "LS": "\u2028", "PS": "\u2029", "NUL": "\x00"}

# Keys wg-quick runs as commands or acts on; none may ever appear in a file Bulwark writes.
FORBIDDEN_KEYS = frozenset({"preup", "postup", "predown", "postdown", "table", "saveconfig"})
INTERFACE_KEYS = ("Address", "ListenPort", "PrivateKey", "MTU", "DNS")
PEER_KEYS = ("PublicKey", "PresharedKey", "Endpoint", "AllowedIPs", "PersistentKeepalive")

# Discovery off (no packet leaves the machine) unless a test points a source at its fake.
NO_DISCOVERY = {"BULWARK_IMDS_URL": "", "BULWARK_STUN_SERVERS": "", "BULWARK_IP_SERVICES": ""}


def payload(brk: str, base: str = PAYLOAD) -> str:
    return base.replace("\n", brk)


def wg_quick_key(line: str) -> str:
    """The key wg-quick sees on a line: everything before '#' is kept, the key is what precedes '='."""
    return line.split("#", 1)[0].split("=", 1)[0].strip().lower()


def shape(text: str, where: str = "file") -> tuple[str, ...]:
    """The shape of a wg-quick file: per line "[Interface]", "[Peer]", "#", "" or its key. AssertionError for a
    line that is none of these, a forbidden key, or a control character or separator in any line."""
    assert text.endswith("\n"), f"{where}: no final newline"
    kinds: list[str] = []
    for number, line in enumerate(text[:-1].split("\n"), start=1):
        assert not has_unsafe_char(line), f"{where}:{number}: a control character or separator: {line!r}"
        assert wg_quick_key(line) not in FORBIDDEN_KEYS, f"{where}:{number}: {line!r}"
        if line in ("[Interface]", "[Peer]", ""):
            kinds.append(line)
        elif line.startswith("# "):
            kinds.append("#")
        else:
            key, sep, _ = line.partition(" = ")
            assert sep and key in INTERFACE_KEYS + PEER_KEYS, f"{where}:{number}: not a Bulwark line: {line!r}"
            kinds.append(key)
    return tuple(kinds)


def server_shape(settings: Settings, peers: Iterable[Peer]) -> tuple[str, ...]:
    kinds = ["[Interface]", "Address", "ListenPort", "PrivateKey"] + (["MTU"] if settings.mtu else [])
    for peer in peers:
        if not peer.enabled:
            continue
        kinds += ["", "[Peer]", "#", "PublicKey"] + (["PresharedKey"] if peer.preshared_key else []) + ["AllowedIPs"]
        kinds += ["PersistentKeepalive"] if peer.keepalive is not None else []
    return tuple(kinds)


def client_shape(settings: Settings, peer: Peer, *, endpoint: bool | None = None) -> tuple[str, ...]:
    has_endpoint = settings.endpoint_host is not None if endpoint is None else endpoint
    kinds = ([] if has_endpoint else ["#"]) + ["[Interface]", "Address", "PrivateKey"]
    kinds += (["MTU"] if settings.mtu else []) + (["DNS"] if layout.peer_dns(settings) else [])
    kinds += ["", "[Peer]", "PublicKey"] + (["PresharedKey"] if peer.preshared_key else [])
    kinds += (["Endpoint"] if has_endpoint else []) + ["AllowedIPs"]
    kinds += ["PersistentKeepalive"] if peer.keepalive is not None else []
    return tuple(kinds)


def assert_clean_text(value: object, where: str) -> None:
    """A stored value (as text) holds no control character or separator."""
    assert not has_unsafe_char(str(value)), f"{where}: {value!r}"


def assert_folder_rendered_clean(config: Path, *, inputs: Iterable[str] = (), check_qr: bool = True) -> list[str]:
    """Every wg-quick file under `config` has the shape its store calls for, and nothing else is there.

    `inputs`: relative paths of files that were there before (an adopted /config) and that Bulwark did not rewrite;
    they are the attacker's own input, left as they were. Returns the relative paths checked. With `check_qr`, each
    PNG is the QR code of exactly its checked config text (qrencode is deterministic)."""
    from bulwark_vpn.render.qr import qr_pngs
    from tests.helpers import context

    ctx = context(config)
    with ctx.open_store(read_only=True) as store:
        settings, peers = store.settings(), store.peers()
    for name, value in vars(settings).items():
        assert_clean_text(value, f"stored setting {name}")
    expected = {f"wg_confs/{settings.interface}.conf": server_shape(settings, peers)}
    for peer in peers:
        assert_clean_text(peer.name, "stored peer name")
        if peer.private_key is not None:
            expected[layout.conf_path(peer)] = client_shape(settings, peer)
    skipped = set(inputs)
    found = sorted(str(p.relative_to(config)) for p in config.rglob("*.conf") if p.is_file())
    for relative in found:
        if relative in skipped:
            continue
        assert relative in expected, f"a .conf Bulwark did not render: {relative!r}"
        text = (config / relative).read_text()
        assert shape(text, relative) == expected[relative], f"{relative}:\n{text}"
        png = config / relative.replace(".conf", ".png")
        if check_qr and png.exists() and relative.startswith("peer"):
            assert qr_pngs([text]) == [png.read_bytes()], f"{png} is not the QR code of {relative}"
    missing = set(expected) - set(found)
    assert not missing, f"rendered files missing: {sorted(missing)}"
    return found


def linuxserver_config(root: Path, *, server_address: str = "10.13.13.1",
                       peers: tuple[str, ...] = ("10.13.13.2", "10.13.13.3"),
                       original_interface: str | None = "10.13.13") -> Path:
    """A /config as linuxserver/wireguard writes it (its templates, PostUp/PostDown included), keys made here:
    wg_confs/wg0.conf, peerN/peerN.conf and the key files, server/, .donoteditthisfile."""
    server = PrivateKey.generate()
    (root / "wg_confs").mkdir(parents=True)
    (root / "server").mkdir()
    (root / "server/privatekey-server").write_text(server.to_base64() + "\n")
    (root / "server/publickey-server").write_text(f"{server.public_key()}\n")
    lines = ["[Interface]", f"Address = {server_address}", "ListenPort = 51820", f"PrivateKey = {server.to_base64()}",
             "PostUp = iptables -A FORWARD -i %i -j ACCEPT; iptables -t nat -A POSTROUTING -o eth+ -j MASQUERADE",
             "PostDown = iptables -D FORWARD -i %i -j ACCEPT; iptables -t nat -D POSTROUTING -o eth+ -j MASQUERADE",
             ""]
    for number, address in enumerate(peers, start=1):
        client, psk = PrivateKey.generate(), PrivateKey.generate().to_base64()
        folder = root / f"peer{number}"
        folder.mkdir()
        (folder / f"privatekey-peer{number}").write_text(client.to_base64() + "\n")
        (folder / f"publickey-peer{number}").write_text(f"{client.public_key()}\n")
        (folder / f"presharedkey-peer{number}").write_text(psk + "\n")
        (folder / f"peer{number}.conf").write_text(
            f"[Interface]\nAddress = {address}\nPrivateKey = {client.to_base64()}\nListenPort = 51820\n"
            f"DNS = {server_address}\n\n[Peer]\nPublicKey = {server.public_key()}\nPresharedKey = {psk}\n"
            f"Endpoint = 203.0.113.9:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n")
        lines += ["[Peer]", f"# peer{number}", f"PublicKey = {client.public_key()}", f"PresharedKey = {psk}",
                  f"AllowedIPs = {address}/32", ""]
    (root / "wg_confs/wg0.conf").write_text("\n".join(lines))
    if original_interface is not None:
        (root / ".donoteditthisfile").write_text(
            f'ORIG_SERVERURL="203.0.113.9"\nORIG_SERVERPORT="51820"\nORIG_PEERDNS="{server_address}"\n'
            f'ORIG_PEERS="{len(peers)}"\nORIG_INTERFACE="{original_interface}"\nORIG_ALLOWEDIPS="0.0.0.0/0, ::/0"\n')
    return root
