"""Issue 8's concrete payloads, each as a regression test through the real command line (in-process `bulwark`).

A refusal is exit 2, nothing on stdout, ONE line on stderr naming the value with its control characters shown
escaped, and the config folder byte for byte as before. The `PreUp` payload goes through every path the issue
names with each line break and separator (LF, CRLF, CR, NEL U+0085, LS U+2028, PS U+2029, NUL); a zone id goes
without one. Then values that are well-formed but wrong, TOML values of the wrong type, and adopted /config
folders built to mislead: a refusal, or (for a hostile comment or folder name that only names a peer) rendered
files with exactly the lines and sections their store calls for (tests/attack.py).

Not repeated here (tests/test_cli_core.py, test_safety.py): `peer add -- -dash`, `--config-dir ''`,
`BULWARK_CONFIG_DIR=''`, `--subnet6 fd00::/127`, `--server-url http://x:1`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bulwark_vpn.errors import show_value
from tests.attack import BREAKS, NO_DISCOVERY, PAYLOAD, assert_folder_rendered_clean, linuxserver_config, payload
from tests.helpers import bulwark, clean_env, snapshot

SEPARATORS = ("\n", "\r", "\x85", "\u2028", "\u2029", "\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2, stdout empty, one stderr line holding `fragments` and no raw control character or separator."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, repr(result.stderr)
    line = result.stderr[:-1]
    assert not any(sep in line for sep in SEPARATORS), repr(line)
    assert line.startswith("bulwark: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory) -> Path:
    config = tmp_path_factory.mktemp("payloads") / "c"
    bulwark("init", "--config-dir", str(config), "--server-url", "203.0.113.9", "--peers", "alice",
            env=clean_env(**NO_DISCOVERY))
    return config


@pytest.fixture
def unchanged(provisioned: Path):
    """The provisioned folder, checked byte for byte after the test."""
    before = snapshot(provisioned)
    yield provisioned
    assert snapshot(provisioned) == before


def _toml_string(value: str) -> str:
    # JSON's string escapes are TOML basic-string escapes (\uXXXX for every control character and separator).
    return json.dumps(value)


def deliver(config: Path, how: str, target: tuple[str, ...], value: str, tmp_path: Path,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Hand `value` to Bulwark through one input path: a flag (`target` is the command and flag), an environment
    variable, a TOML key (a string, or a list holding it)."""
    base_env = {**NO_DISCOVERY, **(env or {})}
    if how == "flag":
        return bulwark(*target, value, "--config-dir", str(config), env=clean_env(**base_env), check=False)
    if how == "env":
        return bulwark("init", "--config-dir", str(config), env=clean_env(**base_env, **{target[0]: value}),
                       check=False)
    settings = tmp_path / "settings.toml"
    shown = _toml_string(value) if how == "toml" else f"[{_toml_string(value)}]"
    settings.write_text(f"{target[0]} = {shown}\n")
    return bulwark("init", "--config-dir", str(config), "--settings", str(settings), env=clean_env(**base_env),
                   check=False)


# Every path of the list: (how, target, what the message calls the value).
PATHS = {
    "--server-url": ("flag", ("init", "--server-url"), "invalid server URL"),
    "SERVERURL": ("env", ("SERVERURL",), "invalid server URL"),
    "toml server_url": ("toml", ("server_url",), "invalid server URL"),
    "--peer-dns": ("flag", ("init", "--peer-dns"), "invalid PEERDNS"),
    "PEERDNS": ("env", ("PEERDNS",), "invalid PEERDNS"),
    "toml peer_dns": ("toml", ("peer_dns",), "invalid PEERDNS"),
    "toml peer_dns list": ("toml-list", ("peer_dns",), "invalid PEERDNS entry"),
    "--allowed-ips": ("flag", ("init", "--allowed-ips"), "invalid ALLOWEDIPS"),
    "ALLOWEDIPS": ("env", ("ALLOWEDIPS",), "invalid ALLOWEDIPS"),
    "toml allowed_ips": ("toml", ("allowed_ips",), "invalid ALLOWEDIPS"),
    "toml allowed_ips list": ("toml-list", ("allowed_ips",), "invalid ALLOWEDIPS entry"),
    "--subnet6": ("flag", ("init", "--subnet6"), "invalid IPv6 subnet"),
    "INTERNAL_SUBNET6": ("env", ("INTERNAL_SUBNET6",), "invalid IPv6 subnet"),
    "BULWARK_SUBNET6": ("env", ("BULWARK_SUBNET6",), "invalid IPv6 subnet"),
    "toml subnet6": ("toml", ("subnet6",), "invalid IPv6 subnet"),
    "peer add --allowed-ips": ("flag", ("peer", "add", "bob", "--allowed-ips"), "invalid allowed IPs"),
    "peer add --server-allowed-ips": ("flag", ("peer", "add", "bob", "--server-allowed-ips"),
                                      "invalid server allowed IPs"),
    "SERVER_ALLOWEDIPS_PEER_alice": ("env", ("SERVER_ALLOWEDIPS_PEER_alice",), "invalid SERVER_ALLOWEDIPS_PEER_alice"),
    "peer show --endpoint": ("flag", ("peer", "show", "alice", "--endpoint"), "invalid endpoint"),
}

# An environment variable cannot hold NUL (the kernel's environment is NUL-separated): no such input exists.
MATRIX = [(path, brk) for path in PATHS for brk in BREAKS if not (PATHS[path][0] == "env" and brk == "NUL")]


@pytest.mark.parametrize(("path", "brk"), MATRIX, ids=[f"{p}-{b}" for p, b in MATRIX])
def test_the_preup_payload_is_refused_on_every_path(unchanged, tmp_path, path, brk):
    how, target, what = PATHS[path]
    value = payload(BREAKS[brk])
    result = deliver(unchanged, how, target, value, tmp_path)
    assert_refused(result, what, f"'{show_value(value)}'")


ZONES = ["fe80::1%x", "2001:db8::7%eth0", "fd00::%eth0/64", "10.0.0.0/8%x", "fe80::1%25x"]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("path", PATHS)
def test_a_zone_id_alone_is_refused_on_every_path(unchanged, tmp_path, path, zone):
    how, target, what = PATHS[path]
    assert_refused(deliver(unchanged, how, target, zone, tmp_path), what, f"'{zone}'")


@pytest.mark.parametrize("path", [p for p in PATHS if PATHS[p][1][0] != "peer"])
def test_a_first_init_refused_creates_no_folder(tmp_path, path):
    how, target, what = PATHS[path]
    config = tmp_path / "new"
    assert_refused(deliver(config, how, target, PAYLOAD, tmp_path, env={"PEERS": "alice"}), what)
    assert not config.exists()


# --- the interface name: a file name and a command argument -------------------------------------------------

INTERFACE_PATHS = {
    "init --interface": ("flag", ("init", "--interface")),
    "BULWARK_INTERFACE": ("env", ("BULWARK_INTERFACE",)),
    "toml interface": ("toml", ("interface",)),
    "peer add --interface": ("flag", ("peer", "add", "bob", "--interface")),
    "peer remove --interface": ("flag", ("peer", "remove", "alice", "--interface")),
    "down --interface": ("flag", ("down", "--interface")),
    "status --interface": ("flag", ("status", "--interface")),
    "--egress-interface": ("flag", ("init", "--egress-interface")),
    "BULWARK_EGRESS_INTERFACE": ("env", ("BULWARK_EGRESS_INTERFACE",)),
}
INTERFACE_VALUES = [f"wg0{sep}" for sep in BREAKS.values()] + ["wg0\nPostUp = touch PWNED", "-x", "wg 0", "wg0/x",
                                                                 ".", "..", "wg0;id", "$(id)", "a" * 16, ""]


# NUL cannot be in an environment; an empty variable is "not given" (the next test).
# `--egress-interface ''` is not bad input: it clears the setting (NAT out of every interface but the tunnel).
INTERFACE_MATRIX = [(path, value) for path in INTERFACE_PATHS for value in INTERFACE_VALUES
                    if not (INTERFACE_PATHS[path][0] == "env" and ("\x00" in value or value == ""))
                    and not (path == "--egress-interface" and value == "")]


@pytest.mark.parametrize(("path", "value"), INTERFACE_MATRIX, ids=[f"{p}-{v!r}" for p, v in INTERFACE_MATRIX])
def test_an_interface_name_with_a_line_break_or_out_of_the_rule_is_refused(unchanged, tmp_path, path, value):
    how, target = INTERFACE_PATHS[path]
    result = deliver(unchanged, how, target, value, tmp_path)
    assert_refused(result, "interface", f"'{show_value(value)}'")
    assert not list(unchanged.glob("wg_confs/wg0?*.conf"))


def test_an_empty_interface_variable_is_not_given(tmp_path):
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--peers", "alice", env=clean_env(**NO_DISCOVERY))
    before = snapshot(config)
    bulwark("init", "--config-dir", str(config), env=clean_env(BULWARK_INTERFACE="", **NO_DISCOVERY))
    assert snapshot(config) == before and (config / "wg_confs/wg0.conf").is_file()


# --- well-formed but wrong -----------------------------------------------------------------------------------

LOW_ORDER_KEYS = [
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # all zero
    "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",  # 1
    "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=",  # order 8
    "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=",  # order 8
    "7P///////////////////////////////////////38=",  # p - 1
    "7f///////////////////////////////////////38=",  # p
    "7v///////////////////////////////////////38=",  # p + 1
    "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuIA=",  # order 8, top bit set
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIA=",  # zero, top bit set
]

WRONG = [
    # Tunnel subnets that are not private unicast ranges.
    (["init", "--subnet", "224.1.0.0/24"], {}, "a multicast range cannot be a tunnel subnet"),
    (["init", "--subnet", "127.0.0.0/24"], {}, "a loopback range cannot be a tunnel subnet"),
    (["init", "--subnet", "169.254.10.0/24"], {}, "a link-local range cannot be a tunnel subnet"),
    (["init", "--subnet", "0.0.0.0/24"], {}, "an unspecified range cannot be a tunnel subnet"),
    (["init", "--subnet", "0.1.2.0/24"], {}, "an unspecified range cannot be a tunnel subnet"),
    (["init", "--subnet", "240.0.0.0/24"], {}, "a reserved range cannot be a tunnel subnet"),
    (["init"], {"INTERNAL_SUBNET": "224.1.0.0"}, "a multicast range cannot be a tunnel subnet"),
    (["init"], {"INTERNAL_SUBNET": "127.0.0.0"}, "a loopback range cannot be a tunnel subnet"),
    (["init", "--subnet6", "ff05::/64"], {}, "a multicast range cannot be a tunnel subnet"),
    (["init", "--subnet6", "fe80::/64"], {}, "a link-local range cannot be a tunnel subnet"),
    (["init", "--subnet6", "::/64"], {}, "an unspecified range cannot be a tunnel subnet"),
    (["init", "--subnet6", "::ffff:0:0/96"], {}, "an IPv4-mapped range cannot be a tunnel subnet"),
    (["init", "--subnet6", "::1/128"], {}, "the prefix must be between /32 and /126"),
    (["init", "--subnet6", "::/0"], {}, "the prefix must be between /32 and /126"),
    (["init", "--subnet6", "10.0.0.0/24"], {}, "invalid IPv6 subnet: '10.0.0.0/24'"),
    (["init", "--subnet", "fd00::/64"], {}, "invalid IPv4 subnet: 'fd00::/64'"),
    (["init"], {"BULWARK_SUBNET6": "::/0"}, "the prefix must be between /32 and /126"),
    # Server URLs that are neither an IP address nor a DNS name.
    (["init", "--server-url", "999.1.1.1"], {}, "invalid server URL: '999.1.1.1'"),
    (["init", "--server-url", "1.2.3"], {}, "invalid server URL: '1.2.3'"),
    (["init", "--server-url", "1.2.3.4.5"], {}, "invalid server URL: '1.2.3.4.5'"),
    (["init", "--server-url", "[vpn.example.com]"], {}, "invalid server URL"),
    (["init", "--server-url", "vpn.example.com:51820"], {}, "invalid server URL"),
    (["init", "--server-url", "-vpn.example.com"], {}, "invalid server URL"),
    (["init"], {"SERVERURL": "999.1.1.1"}, "invalid server URL: '999.1.1.1'"),
    (["init"], {"SERVERURL": "1.2.3"}, "invalid server URL: '1.2.3'"),
    # Peer names starting with '-' (an option to every tool downstream) or '.'.
    (["init", "--peers", "-x"], {}, "invalid peer name: '-x'"),
    (["init", "--peers", "ok,-rf"], {}, "invalid peer name: '-rf'"),
    (["init", "--peers", ".hidden"], {}, "invalid peer name: '.hidden'"),
    (["init"], {"PEERS": "-x"}, "invalid peer name: '-x'"),
    (["init"], {"PEERS": "2,-x"}, "invalid peer name: '-x'"),
    (["init"], {"PERSISTENTKEEPALIVE_PEERS": "-x"}, "invalid peer name: '-x'"),
    (["init"], {"SERVER_ALLOWEDIPS_PEER_-x": "192.168.9.0/24"}, "invalid peer name: '-x'"),
    (["peer", "show", "-x"], {}, "No such option"),
    (["peer", "show", "--", "-x"], {}, "invalid peer name: '-x'"),
    (["peer", "remove", "--", "-x"], {}, "invalid peer name: '-x'"),
    # Numbers out of range or not numbers.
    (["init", "--listen-port", "0"], {}, "invalid listen port: '0'"),
    (["init", "--listen-port", "1e3"], {}, "invalid listen port: '1e3'"),
    (["init", "--mtu", "inf"], {}, "invalid MTU: 'inf'"),
    (["init", "--mtu", "١٤٢٠"], {}, "invalid MTU"),
    (["peer", "add", "bob", "--keepalive", "25.0"], {}, "invalid keepalive: '25.0'"),
    (["init"], {"BULWARK_MTU": "nan"}, "invalid MTU: 'nan'"),
    (["init"], {"SERVERPORT": "-1"}, "invalid server port (SERVERPORT): '-1'"),
    # An empty runtime folder is the current folder, as --config-dir '' once was.
    (["--run-dir", "", "peer", "list"], {}, "invalid --run-dir: ''"),
]


@pytest.mark.parametrize(("args", "env", "message"), WRONG, ids=[" ".join(a) + str(e) for a, e, _ in WRONG])
def test_a_well_formed_but_wrong_value_is_refused(unchanged, args, env, message):
    at = args.index("--") if "--" in args else len(args)  # options before a "--", names after it
    argv = [*args[:at], "--config-dir", str(unchanged), *args[at:]]
    result = bulwark(*argv, env=clean_env(**NO_DISCOVERY, **env), check=False)
    assert_refused(result, message)


@pytest.mark.parametrize("key", LOW_ORDER_KEYS)
def test_an_all_zero_or_low_order_public_key_is_refused(unchanged, key):
    result = bulwark("peer", "add", "bob", "--public-key", key, "--config-dir", str(unchanged), check=False)
    assert_refused(result, "invalid public key", "low-order")


# --- TOML values of the wrong type: the same clean error, never a traceback ----------------------------------

TOML_WRONG = [
    ("server_url = 5", "invalid server URL: '5'"),
    ("server_url = true", "invalid server URL: 'True'"),
    ("server_url = 1979-05-27", "invalid server URL"),
    ("server_url = [\"vpn.example.com\"]", "invalid server URL"),
    ("mtu = inf", "invalid MTU: 'inf'"),
    ("mtu = nan", "invalid MTU: 'nan'"),
    ("mtu = 1420.0", "invalid MTU: '1420.0'"),
    ("mtu = \"1420\\n\"", "invalid MTU: '1420\\n'"),
    ("listen_port = true", "invalid listen port: 'True'"),
    ("listen_port = 51820.5", "invalid listen port: '51820.5'"),
    ("listen_port = -1", "invalid listen port: '-1'"),
    ("listen_port = 0x10000", "invalid listen port: '65536'"),
    ("server_port = false", "invalid server port (SERVERPORT): 'False'"),
    ("subnet = 10", "invalid IPv4 subnet: '10'"),
    ("subnet = {a = 1}", "invalid IPv4 subnet"),
    ("subnet6 = 1.5", "invalid IPv6 subnet: '1.5'"),
    ("peer_dns = 1", "invalid PEERDNS: '1'"),
    ("peer_dns = [1]", "invalid PEERDNS entry: '1'"),
    ("allowed_ips = 5", "invalid ALLOWEDIPS: '5'"),
    ("allowed_ips = [5]", "invalid ALLOWEDIPS entry: '5'"),
    ("allowed_ips = []", "invalid ALLOWEDIPS: '[]'"),
    ("allowed_ips = [[\"10.0.0.0/8\"]]", "invalid ALLOWEDIPS entry"),
    ("interface = [\"wg0\"]", "invalid interface name"),
    ("interface = 0", "invalid interface name: '0'"),
    ("log_confs = \"maybe\"", "invalid LOG_CONFS: 'maybe'"),
    ("log_confs = 2", "invalid LOG_CONFS: '2'"),
    ("backend = 1", "invalid backend: '1'"),
    ("backend = \"kernel\\n\"", "invalid backend: 'kernel\\n'"),
    ("egress_interface = false", "invalid egress interface: 'False'"),
    ("peers = true", "invalid peers: 'True'"),
    ("peers = 2.5", "invalid peers: '2.5'"),
    ("peers = [true]", "invalid peer name: 'True'"),
    ("peers = [\"a\", \"a\"]", "invalid peers: 'a'"),
    ("peers = 70000", "invalid peers: '70000'"),
    ("keepalive_peers = 5", "invalid PERSISTENTKEEPALIVE_PEERS: '5'"),
    ("keepalive_peers = [true]", "invalid peer name: 'True'"),
    ("preup = \"touch PWNED\"", "unknown setting: 'preup'"),
    ("discovered_url = \"203.0.113.66\"", "unknown setting: 'discovered_url'"),
    ("clear = [\"subnet6\"]", "unknown setting: 'clear'"),
    ("[Interface]\nPreUp = \"touch PWNED\"", "unknown setting: 'Interface'"),
    ("server_url = \"a\"\nserver_url = \"b\"", "invalid settings file"),
    ("server_url = \"vpn\u2028.example.com\"", "invalid server URL: 'vpn\\u2028.example.com'"),
]


@pytest.mark.parametrize(("toml", "message"), TOML_WRONG, ids=[t for t, _ in TOML_WRONG])
def test_a_toml_value_of_the_wrong_type_is_a_clean_error(unchanged, tmp_path, toml, message):
    settings = tmp_path / "bulwark.toml"
    settings.write_text(toml + "\n")
    result = bulwark("init", "--config-dir", str(unchanged), "--settings", str(settings),
                     env=clean_env(**NO_DISCOVERY), check=False)
    assert_refused(result, message)


def test_a_settings_file_that_is_not_utf8_or_not_a_file_is_a_clean_error(unchanged, tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'server_url = "vpn\xe9.example.com"\n')
    assert_refused(bulwark("init", "--config-dir", str(unchanged), "--settings", str(latin), check=False),
                   "invalid settings file", "not UTF-8")
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    assert_refused(bulwark("init", "--config-dir", str(unchanged), "--settings", str(folder), check=False),
                   "folder.toml")


# --- adopting a /config built to mislead ---------------------------------------------------------------------


def _conf(root: Path) -> Path:
    return root / "wg_confs/wg0.conf"


def _edit(root: Path, old: str, new: str, count: int = 1) -> None:
    conf = _conf(root)
    text = conf.read_text()
    assert old in text
    conf.write_text(text.replace(old, new, count))


def _peer_at_server_address(root: Path) -> None:
    _edit(root, "AllowedIPs = 10.13.13.2/32", "AllowedIPs = 10.13.13.1/32")


def _peer_with_the_server_key(root: Path) -> None:
    server_public = (root / "server/publickey-server").read_text().strip()
    text = _conf(root).read_text()
    peer_key = next(line.split(" = ")[1] for line in text.splitlines() if line.startswith("PublicKey"))
    _edit(root, f"PublicKey = {peer_key}", f"PublicKey = {server_public}")


def _rename_server_conf(name: str) -> Callable[[Path], None]:
    def rename(root: Path) -> None:
        _conf(root).rename(root / "wg_confs" / name)
    return rename


def _original(key: str, value: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        path = root / ".donoteditthisfile"
        lines = [line for line in path.read_text().splitlines() if not line.startswith(f"ORIG_{key}=")]
        path.write_text("\n".join([*lines, f'ORIG_{key}="{value}"']) + "\n")
    return write


def _line(old: str, new: str) -> Callable[[Path], None]:
    return lambda root: _edit(root, old, new)


ADOPT_REFUSED = {
    "a peer at the server's address": (_peer_at_server_address, "a peer has the server's own address"),
    "a peer holding the server's key": (_peer_with_the_server_key, "a peer holds the server's own key"),
    "wg_confs/x\\ny.conf": (_rename_server_conf("x\ny.conf"), "invalid interface name"),
    "wg_confs/-x.conf": (_rename_server_conf("-x.conf"), "invalid interface name"),
    "wg_confs/x\\ry.conf": (_rename_server_conf("x\ry.conf"), "invalid interface name"),
    "wg_confs/x\\u2028y.conf": (_rename_server_conf("x\u2028y.conf"), "invalid interface name"),
    "wg_confs/x\\x85y.conf": (_rename_server_conf("x\x85y.conf"), "invalid interface name"),
    "wg_confs/wg0+.conf": (_rename_server_conf("wg0+.conf"), "invalid interface name"),
    "wg_confs/0123456789abcdef.conf": (_rename_server_conf("0123456789abcdef.conf"), "invalid interface name"),
    "a # peer comment holding LS": (_line("# peer1", "# peer_x\u2028PreUp = touch PWNED"), "a control character"),
    "a # peer comment holding CR": (_line("# peer1", "# peer_x\rPreUp = touch PWNED"), "a control character"),
    "a # peer comment holding NEL": (_line("# peer1", "# peer_x\x85PreUp = touch PWNED"), "a control character"),
    "a PreUp line with a zone id address": (_line("Address = 10.13.13.1", "Address = fe80::1%x"),
                                            "invalid Address"),
    "an AllowedIPs zone id": (_line("AllowedIPs = 10.13.13.2/32", "AllowedIPs = 10.13.13.2/32, fd00::2%x/128"),
                              "invalid AllowedIPs entry"),
    "a third section type": (_line("[Interface]", "[Interface]\n[Hook]"), "unknown section"),
    "two [Interface] sections": (_line("[Peer]", "[Interface]\nPrivateKey = x\n[Peer]"),
                                 "expected exactly one [Interface] section"),
    "ORIG_SERVERURL zone id": (_original("SERVERURL", "fe80::1%x"), "invalid server URL: 'fe80::1%x'"),
    "ORIG_SERVERURL CR": (_original("SERVERURL", "vpn.example.com\rPreUp = x"), "invalid server URL"),
    "ORIG_SERVERURL shell": (_original("SERVERURL", "$(touch PWNED)"), "invalid server URL"),
    "ORIG_PEERDNS LS": (_original("PEERDNS", "10.13.13.1\u2028PreUp = x"), "invalid PEERDNS"),
    "ORIG_ALLOWEDIPS zone id": (_original("ALLOWEDIPS", "fd00::%x/64"), "invalid ALLOWEDIPS entry"),
    "ORIG_SERVERPORT NEL": (_original("SERVERPORT", "51820\x85"), "invalid server port"),
    "ORIG_INTERFACE CR": (_original("INTERFACE", "10.13.13\rx"), "invalid IPv4 subnet"),
    "ORIG_INTERFACE multicast": (_original("INTERFACE", "224.0.0"), "a multicast range"),
}


@pytest.mark.parametrize("case", ADOPT_REFUSED)
def test_adopting_a_misleading_config_is_refused_and_changes_nothing(tmp_path, case):
    mutate, message = ADOPT_REFUSED[case]
    root = linuxserver_config(tmp_path / "config")
    mutate(root)
    before = snapshot(root)
    result = bulwark("init", "--config-dir", str(root), env=clean_env(**NO_DISCOVERY), check=False)
    assert_refused(result, message)
    assert snapshot(root) == before


def _comment(text: str) -> Callable[[Path], None]:
    def write(root: Path) -> None:
        _edit(root, "# peer1", text)
        shutil.rmtree(root / "peer1")  # adopted without its private key: the comment is its only name
    return write


def _folder(name: str) -> Callable[[Path], None]:
    def rename(root: Path) -> None:
        (root / "peer1/peer1.conf").rename(root / "peer1" / f"{name}.conf")
        (root / "peer1").rename(root / name)
    return rename


HOSTILE_NAMES = {
    "comment $(...)": _comment("# peer_$(touch /tmp/PWNED)"),
    "comment ../": _comment("# peer_../../etc/cron.d/x"),
    "comment -x": _comment("# peer_-rf"),
    "comment [Interface]": _comment("# [Interface] PreUp = touch PWNED"),
    "comment long": _comment("# peer_" + "a" * 300),
    "folder with LF": _folder("peer_x\ny"),
    "folder with LS": _folder("peer_x\u2028PreUp = touch PWNED"),
    "folder -x": _folder("peer_-rf"),
    "folder $(...)": _folder("peer_$(id)"),
    "folder [Interface]": _folder("peer_[Interface]"),
}


@pytest.mark.parametrize("case", HOSTILE_NAMES)
def test_a_hostile_comment_or_folder_name_only_names_a_peer_and_never_reaches_a_file(tmp_path, case):
    """A name Bulwark cannot use is replaced (peer_adoptedN); the files it renders have their clean shape, no
    path it writes carries the hostile text, and the attacker's own files are left as they were."""
    root = linuxserver_config(tmp_path / "config")
    HOSTILE_NAMES[case](root)
    before = snapshot(root)
    result = bulwark("init", "--config-dir", str(root), env=clean_env(**NO_DISCOVERY), check=False)
    assert result.returncode == 0, result.stderr
    after = snapshot(root)
    untouched = [path for path in before if path in after and after[path] == before[path]]
    written = sorted(set(after) - set(untouched))
    assert all(p.startswith(("bulwark.db", "server/", "wg_confs/", "peer2/", "peer_peer_adopted1/"))
               or p in ("peer_peer_adopted1/", ".bulwark.lock") for p in written), written
    assert_folder_rendered_clean(root, inputs=[p for p in untouched if p.endswith(".conf")])
    listed = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(root)).stdout)["peers"]
    names = [p["name"] for p in listed]
    assert names == ["peer_adopted1", "peer2"]
    shown = bulwark("peer", "show", "peer_adopted1", "--config-dir", str(root), check=False)
    if case.startswith("comment"):
        assert_refused(shown, "private key is not known here")  # adopted without its key
    else:
        assert "PreUp" not in shown.stdout and shown.stdout.count("[Interface]") == 1


# --- what the payloads leave behind when accepted: a clean folder ---------------------------------------------


def test_a_config_made_from_hostile_looking_but_valid_values_has_exactly_its_clean_shape(tmp_path):
    """Values at the edge of each rule: every file rendered, and each `peer show`, has the clean lines."""
    config = tmp_path / "c"
    env = clean_env(**NO_DISCOVERY, PEERDNS=" 1.1.1.1 ,2606:4700:4700::1111, ", ALLOWEDIPS="0.0.0.0/0,::/0,,",
                    PERSISTENTKEEPALIVE_PEERS="all", SERVER_ALLOWEDIPS_PEER_site="192.168.9.7/24, fd99::1/64")
    bulwark("init", "--config-dir", str(config), "--server-url", "vpn-1.example.com.", "--subnet6", "fd13::/64",
            "--interface", "wg_=+.-x", "--mtu", " 1380 ", "--peers", "a=b+c,_.-,site,3", env=env)
    bulwark("peer", "add", "+x", "--allowed-ips", "10.0.0.1, 10.0.0.0/8", "--keepalive", "0",
            "--config-dir", str(config), env=env)
    assert_folder_rendered_clean(config)
    from tests.attack import client_shape, shape
    from tests.helpers import context

    with context(config).open_store(read_only=True) as store:
        settings, peers = store.settings(), store.peers()
    for peer in peers:
        text = bulwark("peer", "show", peer.name, "--config-dir", str(config)).stdout
        assert shape(text) == client_shape(settings, peer)
        assert "vpn-1.example.com.:51820" in text
