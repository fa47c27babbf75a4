"""Every input path of Bulwark (but `deploy`), fed generated text: valid values mixed with line breaks, separators,
zone ids, `[Interface]`, `PreUp =` and friends (issue 8, "Proof").

Each example ends one of two ways, and nothing else counts as a pass:
- a clean refusal: an InputError (or subclass) and the folder byte for byte as before (a refused first `init`
  creates no folder);
- rendered files: every `*.conf` Bulwark wrote, and `peer show` of every peer, has exactly the shape the store's
  typed values call for (tests/attack.py: the sections, keys, comments and blank lines of the same config with
  clean values; no PreUp/PostUp/PreDown/PostDown/Table/SaveConfig; no control character or separator), and every
  stored value is clean text.
A RenderError (a value that got past the parsers and was caught by a renderer's line guard) fails the test.

The paths: each `init` flag, each `peer add` flag and the peer name, `peer show --endpoint`, each linuxserver and
BULWARK_* variable (SERVER_ALLOWEDIPS_PEER_<name>: its name and its value), each TOML key (as a string and as any
TOML type), each field of an adopted /config (server conf, client conf, `.donoteditthisfile`, peer folder names,
the server conf's file name), and each discovery source (IMDS body, "what is my IP" body, STUN mapped address).
The library runs in-process; a sample of paths also runs through the CLI.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bulwark_vpn import publicip, service
from bulwark_vpn.errors import InputError
from bulwark_vpn.keys import PresharedKey, PrivateKey
from bulwark_vpn.service import Context
from bulwark_vpn.values import has_unsafe_char
from tests.attack import (
    NO_DISCOVERY,
    assert_folder_rendered_clean,
    client_shape,
    linuxserver_config,
    shape,
)
from tests.fakes import FakeImds, FakeIpService, FakeStun, serve_imds, serve_ip_service, serve_stun, stun_message
from tests.helpers import TEST_RUN_DIR, bulwark, clean_env, snapshot

pytestmark = pytest.mark.slow

# --- generated text ------------------------------------------------------------------------------------------

FRAGMENTS = (
    "\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\x00", "\t", "\x0b", "\x1b[2J", "\u200b", "\ufeff", " ", ",",
    ";", "#", "=", "%", "%x", "%eth0", "%25", "/", "/24", "/0", ":", ":51820", "[", "]", "[Interface]", "[Peer]",
    "PreUp = touch /tmp/bulwark-hypothesis", "PostUp = id", "Table = off", "SaveConfig = true", "$(id)", "`id`",
    "'", '"', "\\", "\\n", "-", ".", "..", "0", "::", "fe80::1", "255", "é",
)


def hostile(valid: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Valid values as they are, valid values with hostile tails, and mixtures of both."""
    pieces = st.one_of(st.sampled_from(valid), st.sampled_from(FRAGMENTS), st.text(max_size=3))
    return st.one_of(
        st.sampled_from(valid),
        st.builds(lambda v, tail: v + "".join(tail), st.sampled_from(valid),
                  st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=4)),
        st.builds(lambda head, v: "".join(head) + v, st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=2),
                  st.sampled_from(valid)),
        st.lists(pieces, min_size=1, max_size=6).map("".join),
    )


def toml_literal() -> st.SearchStrategy[str]:
    """A TOML value of any type, as text for `key = <this>`."""
    scalars = st.one_of(
        st.integers(-(2**63), 2**63 - 1).map(str), st.sampled_from(["inf", "-inf", "nan", "1420.0", "0x10000",
                                                                   "1e3", "true", "false", "1979-05-27",
                                                                   "07:32:00", "1979-05-27T07:32:00Z"]),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
    )
    strings = st.text(max_size=8).map(lambda s: json.dumps(s, ensure_ascii=True))
    items = st.one_of(scalars, strings)
    return st.one_of(scalars, strings, st.lists(items, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
                     st.builds(lambda v: f"{{ a = {v} }}", items))


VALID = {
    "server_url": ("vpn.example.com", "203.0.113.9", "2001:db8::7", "auto", "[2001:db8::7]", "vpn.example.com."),
    "port": ("51820", "1", "65535", " 51821 "),
    "subnet4": ("10.13.13.0", "10.20.0.0/16", "10.13.13.0/24", "192.168.77.0/24"),
    "subnet6": ("fd13::/64", "fd13:13:13::/64", "fd00::/120", "2001:db8:1::/48"),
    "peer_dns": ("auto", "1.1.1.1", "1.1.1.1, 2606:4700:4700::1111", "10.13.13.1"),
    "allowed_ips": ("0.0.0.0/0, ::/0", "10.0.0.0/8", "192.168.1.0/24,fd00::/8", "10.0.0.1"),
    "mtu": ("1420", "1280", "9000"),
    "interface": ("wg0", "bw_=+.-x", "wg1"),
    "backend": ("auto", "kernel", "userspace"),
    "bool": ("true", "false", "yes", "0"),
    "peers": ("alice", "2", "alice,bob", "a.b_c=d+e"),
    "keepalive_peers": ("all", "alice", "alice,bob"),
    "routes": ("192.168.9.0/24", "10.99.0.0/16, fd99::/64"),
    "name": ("bob", "peer9", "a.b", "x=y+z"),
    "keepalive": ("25", "0", "65535"),
    "endpoint": ("vpn.example.com:51820", "[2001:db8::1]:51820", "203.0.113.5:1"),
    "address": ("198.51.100.20", "2001:db8::42", "203.0.113.7\n"),
}

# --- where the examples run ---------------------------------------------------------------------------------

_ROOTS: list[Path] = []
_COUNTER = iter(range(10**9))


@pytest.fixture(scope="module", autouse=True)
def _examples_on_tmpfs() -> Iterator[None]:
    """The examples' folders on a tmpfs of their own: the same code paths (fsync, rename, os.sync) at memory
    speed, which keeps some 1,000 provisioned folders within the time budget. On disk when it cannot be mounted
    (not root): slower, the same checks."""
    root = Path(tempfile.mkdtemp(prefix="bulwark-hypothesis-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m,mode=0700", "tmpfs", str(root)],
                             capture_output=True, check=False).returncode == 0
    _ROOTS.append(root)
    try:
        yield
    finally:
        _ROOTS.remove(root)
        if mounted:
            subprocess.run(["umount", "-l", str(root)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _context(config: Path, environ: dict[str, str] | None = None) -> Context:
    return Context(config, run_dir=TEST_RUN_DIR, environ={**NO_DISCOVERY, **(environ or {})})


def _template() -> Path:
    """A provisioned folder (two peers, dual stack) copied for each example that changes an existing server."""
    template = _ROOTS[-1] / "template"
    if not template.exists():
        service.init_from_sources(_context(template), flags={"server_url": "203.0.113.9", "subnet6": "fd13::/64"},
                                  peers="alice,site")
    return template


@contextmanager
def _folder(kind: str) -> Iterator[Path]:
    """A config folder for one example: missing (a first init), a copy of the template, or a linuxserver one."""
    path = _ROOTS[-1] / f"ex{next(_COUNTER)}"
    if kind == "provisioned":
        shutil.copytree(_template(), path, symlinks=True)
    elif kind == "linuxserver":
        linuxserver_config(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _outcome(config: Path, run: Callable[[], object], *, inputs_kept: bool = False) -> str:
    """Run one example and check it ended cleanly (see the module docstring); returns "refused" or "rendered"."""
    before = snapshot(config) if config.exists() else None
    try:
        run()
    except InputError as exc:
        assert not has_unsafe_char(exc.line()), f"the refusal is not one clean line: {exc.line()!r}"
        if before is None:
            assert not config.exists(), "a refused first init left a folder behind"
        else:
            assert snapshot(config) == before, "a refused command changed the folder"
        return "refused"
    after = snapshot(config)
    inputs = [p for p in (before or {}) if inputs_kept and p.endswith(".conf") and after.get(p) == before[p]]
    assert_folder_rendered_clean(config, inputs=inputs, check_qr=False)
    _check_peer_show(config)
    return "rendered"


def _check_peer_show(config: Path) -> None:
    ctx = _context(config)
    with ctx.open_store(read_only=True) as store:
        settings, peers = store.settings(), store.peers()
    for peer in peers:
        if peer.private_key is None:
            continue
        request = service.PeerConfigRequest.parse(peer.name)
        if settings.endpoint_host is None:
            with pytest.raises(InputError, match="public address is unknown"):
                service.peer_config(ctx, request)
            continue
        text = service.peer_config(ctx, request).text
        assert shape(text, f"peer show {peer.name}") == client_shape(settings, peer)


# --- the paths -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputPath:
    """One way text reaches Bulwark: where the example runs, its valid values, and how the value is handed over."""

    folder: str  # "fresh", "provisioned", "either" or "linuxserver"
    valid: tuple[str, ...]
    run: Callable[[Path, str], object]
    typed: bool = False  # a TOML key: also fed TOML values of every type
    # Values the medium can carry at all (a file name holds no '/' and no NUL).
    possible: Callable[[str], bool] = lambda value: True


def _init_flag(key: str) -> Callable[[Path, str], object]:
    return lambda config, value: service.init_from_sources(_context(config), flags={key: value}, peers="alice")


def _init_env(name: str) -> Callable[[Path, str], object]:
    def run(config: Path, value: str) -> object:
        environ = {name: value} if name == "PEERS" else {name: value, "PEERS": "alice"}
        return service.init_from_sources(_context(config, environ))
    return run


def _init_toml(key: str, *, literal: bool = False) -> Callable[[Path, str], object]:
    def run(config: Path, value: str) -> object:
        settings_file = config.parent / f"{config.name}.toml"
        settings_file.write_text(f"{key} = {value if literal else json.dumps(value)}\n")
        try:
            return service.init_from_sources(_context(config, {"PEERS": "alice"}), settings_file=settings_file)
        finally:
            settings_file.unlink()
    return run


def _peer_add(option: str | None) -> Callable[[Path, str], object]:
    def run(config: Path, value: str) -> object:
        if option is None:
            request = service.AddPeersRequest.parse([value])
        else:
            request = service.AddPeersRequest.parse(["bob"], **{option: value})
        return service.add_peers(_context(config), request)
    return run


def _peer_show_endpoint(config: Path, value: str) -> object:
    ctx = _context(config)
    request = service.PeerConfigRequest.parse("alice", endpoint=value)
    text = service.peer_config(ctx, request).text
    with ctx.open_store(read_only=True) as store:
        assert shape(text, "peer show --endpoint") == client_shape(store.settings(), store.peer("alice"),
                                                                   endpoint=True)
    return text


def _server_routes_name(config: Path, value: str) -> object:
    environ = {f"SERVER_ALLOWEDIPS_PEER_{value}": "192.168.9.0/24", "PEERS": "alice"}
    return service.init_from_sources(_context(config, environ))


def _discovery_env(name: str) -> Callable[[Path, str], object]:
    def run(config: Path, value: str) -> object:
        environ = {"SERVERURL": "auto", "PEERS": "alice", name: value}
        return service.init_from_sources(_context(config, environ))
    return run


def _no_dns_name(value: str) -> bool:
    # A name would be looked up in DNS (a packet leaving the machine): only addresses here.
    return not re.search(r"[A-Za-z]", value.replace("http://", "").replace("https://", ""))


INIT_FLAGS = {"interface": "interface", "listen_port": "port", "server_url": "server_url", "server_port": "port",
              "subnet4": "subnet4", "subnet6": "subnet6", "peer_dns": "peer_dns", "allowed_ips": "allowed_ips",
              "mtu": "mtu", "backend": "backend", "egress_interface": "interface"}
ENV_VARS = {"SERVERURL": "server_url", "SERVERPORT": "port", "INTERNAL_SUBNET": "subnet4", "PEERDNS": "peer_dns",
            "ALLOWEDIPS": "allowed_ips", "LOG_CONFS": "bool", "BULWARK_LISTEN_PORT": "port",
            "INTERNAL_SUBNET6": "subnet6", "BULWARK_SUBNET6": "subnet6", "BULWARK_MTU": "mtu",
            "BULWARK_INTERFACE": "interface", "BULWARK_BACKEND": "backend", "BULWARK_EGRESS_INTERFACE": "interface",
            "PEERS": "peers", "PERSISTENTKEEPALIVE_PEERS": "keepalive_peers",
            "SERVER_ALLOWEDIPS_PEER_alice": "routes"}
TOML_KEYS = {"server_url": "server_url", "server_port": "port", "listen_port": "port", "subnet": "subnet4",
             "subnet4": "subnet4", "subnet6": "subnet6", "peer_dns": "peer_dns", "allowed_ips": "allowed_ips",
             "mtu": "mtu", "interface": "interface", "backend": "backend", "egress_interface": "interface",
             "log_confs": "bool", "peers": "peers", "keepalive_peers": "keepalive_peers"}

PATHS: dict[str, InputPath] = {}
PATHS.update({f"init --{k}": InputPath("either", VALID[v], _init_flag(k)) for k, v in INIT_FLAGS.items()})
PATHS["init --peers"] = InputPath(
    "either", VALID["peers"], lambda c, v: service.init_from_sources(_context(c), flags={}, peers=v))
PATHS.update({f"env {k}": InputPath("either", VALID[v], _init_env(k)) for k, v in ENV_VARS.items()})
PATHS["env SERVER_ALLOWEDIPS_PEER_<name>"] = InputPath("either", VALID["name"], _server_routes_name)
# The discovery sources themselves (closed local ports: each fails at once, and init goes on without an Endpoint).
PATHS.update({
    "env BULWARK_IMDS_URL": InputPath("fresh", ("http://127.0.0.1:9", "http://[::1]:9/"),
                                      _discovery_env("BULWARK_IMDS_URL"), possible=_no_dns_name),
    "env BULWARK_IP_SERVICES": InputPath("fresh", ("http://127.0.0.1:9/", "http://127.0.0.1:9/,http://[::1]:9/"),
                                         _discovery_env("BULWARK_IP_SERVICES"), possible=_no_dns_name),
    "env BULWARK_STUN_SERVERS": InputPath("fresh", ("127.0.0.1:9", "[::1]:9"),
                                          _discovery_env("BULWARK_STUN_SERVERS"), possible=_no_dns_name),
})
PATHS.update({f"toml {k}": InputPath("either", VALID[v], _init_toml(k), typed=True) for k, v in TOML_KEYS.items()})
PATHS.update({
    "peer add NAME": InputPath("provisioned", VALID["name"], _peer_add(None)),
    "peer add --allowed-ips": InputPath("provisioned", VALID["allowed_ips"], _peer_add("allowed_ips")),
    "peer add --server-allowed-ips": InputPath("provisioned", VALID["routes"], _peer_add("server_allowed_ips")),
    "peer add --keepalive": InputPath("provisioned", VALID["keepalive"], _peer_add("keepalive")),
    "peer add --interface": InputPath("provisioned", VALID["interface"], _peer_add("interface")),
    "peer add --public-key": InputPath(
        "provisioned", tuple(str(PrivateKey.generate().public_key()) for _ in range(2)), _peer_add("public_key")),
    "peer show --endpoint": InputPath("provisioned", VALID["endpoint"], _peer_show_endpoint),
})


# Adopted files: each field of a linuxserver /config, replaced by the generated text (tests/attack.py makes it).
def _replace_line(relative: str, prefix: str, count: int = 1) -> Callable[[Path, str], None]:
    """Replace the value of the first `count` lines starting with `prefix` in `relative`."""
    def inject(root: Path, value: str) -> None:
        path = root / relative
        lines = path.read_text().split("\n")
        done = 0
        for i, line in enumerate(lines):
            if line.startswith(prefix) and done < count:
                lines[i] = prefix + value
                done += 1
        assert done, (relative, prefix)
        path.write_text("\n".join(lines))
    return inject


def _original(key: str) -> Callable[[Path, str], None]:
    def inject(root: Path, value: str) -> None:
        path = root / ".donoteditthisfile"
        lines = [line for line in path.read_text().splitlines() if not line.startswith(f"ORIG_{key}=")]
        path.write_text("\n".join([*lines, f'ORIG_{key}="{value}"']) + "\n")
    return inject


def _peer_folder_name(root: Path, value: str) -> None:
    name = "peer_" + value
    (root / "peer1/peer1.conf").rename(root / "peer1" / f"{name}.conf")
    (root / "peer1").rename(root / name)


def _server_conf_name(root: Path, value: str) -> None:
    (root / "wg_confs/wg0.conf").rename(root / "wg_confs" / f"{value}.conf")


ADOPTED: dict[str, tuple[tuple[str, ...], Callable[[Path, str], None]]] = {
    "server Address": (("10.13.13.1", "10.13.13.1/24", "10.13.13.1, fd13::1/64"),
                       _replace_line("wg_confs/wg0.conf", "Address = ")),
    "server ListenPort": (VALID["port"], _replace_line("wg_confs/wg0.conf", "ListenPort = ")),
    "server PrivateKey": ((PrivateKey.generate().to_base64(),), _replace_line("wg_confs/wg0.conf", "PrivateKey = ")),
    "server peer comment": (("peer1", "peer_alice", "peer_x.y"), _replace_line("wg_confs/wg0.conf", "# ")),
    "server peer PublicKey": ((str(PrivateKey.generate().public_key()),),
                              _replace_line("wg_confs/wg0.conf", "PublicKey = ")),
    "server peer PresharedKey": ((PresharedKey.generate().to_base64(),),
                                 _replace_line("wg_confs/wg0.conf", "PresharedKey = ")),
    "server peer AllowedIPs": (("10.13.13.2/32", "10.13.13.2/32, 192.168.9.0/24", "10.13.13.2/32,fd13::2/128"),
                               _replace_line("wg_confs/wg0.conf", "AllowedIPs = ")),
    "client Address": (("10.13.13.2", "10.13.13.2/32"), _replace_line("peer1/peer1.conf", "Address = ")),
    "client DNS": (("10.13.13.1", "1.1.1.1, example.com"), _replace_line("peer1/peer1.conf", "DNS = ")),
    "client Endpoint": (VALID["endpoint"], _replace_line("peer1/peer1.conf", "Endpoint = ")),
    "client AllowedIPs": (VALID["allowed_ips"], _replace_line("peer1/peer1.conf", "AllowedIPs = ")),
    "client PrivateKey": ((PrivateKey.generate().to_base64(),), _replace_line("peer1/peer1.conf", "PrivateKey = ")),
    "ORIG_SERVERURL": (VALID["server_url"], _original("SERVERURL")),
    "ORIG_SERVERPORT": (VALID["port"], _original("SERVERPORT")),
    "ORIG_PEERDNS": (VALID["peer_dns"], _original("PEERDNS")),
    "ORIG_ALLOWEDIPS": (VALID["allowed_ips"], _original("ALLOWEDIPS")),
    "ORIG_INTERFACE": (("10.13.13", "10.13.13.1"), _original("INTERFACE")),
    "peer folder name": (("alice", "x.y", "peer3"), _peer_folder_name),
    "server conf file name": (("wg0", "wg1", "bw_=x"), _server_conf_name),
}


def _adopt(inject: Callable[[Path, str], None]) -> Callable[[Path, str], object]:
    def run(config: Path, value: str) -> object:
        return service.init_from_sources(_context(config))
    run.inject = inject  # type: ignore[attr-defined]
    return run


def _file_name(value: str) -> bool:
    return "/" not in value and "\x00" not in value and value not in ("", ".", "..") and len(value.encode()) < 200


PATHS.update({f"adopt {k}": InputPath("linuxserver", v, _adopt(inject),
                                      possible=_file_name if "name" in k else lambda value: True)
              for k, (v, inject) in ADOPTED.items()})

# Examples per path: the whole module stays near 20 s on two shared cores.
EXAMPLES = int(os.environ.get("BULWARK_ATTACK_EXAMPLES", "10"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _run_example(path: InputPath, value: str, fresh: bool) -> str:
    kind = path.folder if path.folder != "either" else ("fresh" if fresh else "provisioned")
    with _folder(kind) as config:
        inject = getattr(path.run, "inject", None)
        if inject is not None:
            inject(config, value)
        return _outcome(config, lambda: path.run(config, value), inputs_kept=inject is not None)


def _peers_count_is_small(value: object) -> bool:
    # PEERS=33333 makes 33,333 peers: a valid request, far too slow for an example.
    if isinstance(value, int) and not isinstance(value, bool):
        return value <= 20
    text = value.strip(" \t") if isinstance(value, str) else ""
    return not (text.isascii() and text.isdigit() and int(text) > 20)


def _toml_peers_small(literal: str) -> bool:
    try:
        return _peers_count_is_small(tomllib.loads(f"v = {literal}")["v"])
    except tomllib.TOMLDecodeError:
        return True


@pytest.mark.parametrize("name", PATHS)
def test_every_input_path_refuses_cleanly_or_renders_clean_files(name):
    path = PATHS[name]

    @SETTINGS
    @given(value=hostile(path.valid), fresh=st.booleans())
    def check(value: str, fresh: bool) -> None:
        assume(_peers_count_is_small(value) and path.possible(value))
        outcomes.append(_run_example(path, value, fresh))
        hostile_values.append(value not in path.valid)

    outcomes: list[str] = []
    hostile_values: list[bool] = []
    check()
    # The valid values really render: a path that refuses everything would prove nothing.
    outcomes.append(_run_example(path, path.valid[0], fresh=False))
    assert "rendered" in outcomes, f"{name}: no example rendered"
    assert sum(hostile_values) >= min(3, EXAMPLES // 3), f"{name}: too few hostile examples"


@pytest.mark.parametrize("name", [n for n, p in PATHS.items() if p.typed])
def test_every_toml_key_takes_any_toml_type_cleanly(name):
    key = name.removeprefix("toml ")

    @SETTINGS
    @given(literal=toml_literal())
    def check(literal: str) -> None:
        assume(key != "peers" or _toml_peers_small(literal))
        with _folder("provisioned") as config:
            _outcome(config, lambda: _init_toml(key, literal=True)(config, literal))

    check()


# --- discovery sources: a hostile answer is never stored --------------------------------------------------


@pytest.fixture(scope="module")
def discovery() -> Iterator[tuple[FakeImds, FakeIpService, FakeStun]]:
    with serve_imds(FakeImds()) as imds, serve_ip_service(FakeIpService()) as http, serve_stun(FakeStun()) as stun:
        yield imds, http, stun


def _discover_into_fresh_init(environ: dict[str, str], expected: str | None) -> None:
    with _folder("fresh") as config:
        outcome = _outcome(config, lambda: service.init_from_sources(_context(config, {
            "SERVERURL": "auto", "PEERS": "alice", **environ})))
        assert outcome == "rendered"  # a failed discovery is not an error: no Endpoint until it is known
        with _context(config).open_store(read_only=True) as store:
            assert store.settings().discovered_url == expected


@pytest.mark.parametrize("source", ["imds", "http"])
def test_a_discovery_answer_is_stored_only_when_it_is_a_clean_address(discovery, source):
    imds, http, _ = discovery
    environ = ({"BULWARK_IMDS_URL": imds.url} if source == "imds" else {"BULWARK_IP_SERVICES": http.url})

    @SETTINGS
    @given(body=hostile(VALID["address"]))
    def check(body: str) -> None:
        imds.public_ipv4, http.body = body, body
        _discover_into_fresh_init(environ, publicip.parse_public_address(body))

    check()


@SETTINGS
@given(family=st.sampled_from([1, 2, 0, 3]), port=st.integers(0, 65535),
       raw=st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16), st.binary(max_size=20)))
def test_a_stun_mapped_address_of_any_bytes_is_parsed_to_a_clean_address_or_refused(family, port, raw):
    txid = os.urandom(12)
    mapped = publicip.parse_stun_response(stun_message(txid, struct.pack("!BBH", 0, family, port) + raw), txid)
    address = publicip.parse_public_address(mapped) if mapped is not None else None
    if address is not None:
        assert address == str(ipaddress.ip_address(address))  # canonical address text, nothing else


def test_stun_answers_reach_a_fresh_init_only_as_clean_addresses(discovery):
    """The STUN path end to end for a few mapped addresses (an unusable answer costs the full timeout)."""
    _, _, stun = discovery
    for mapped, expected in (("198.51.100.30", "198.51.100.30"), ("2001:db8::30", "2001:db8::30")):
        stun.mapped, stun.raw_mapped = mapped, None
        _discover_into_fresh_init({"BULWARK_STUN_SERVERS": stun.server}, expected)


# --- the command line, for a sample of paths --------------------------------------------------------------

CLI_PATHS = {
    "init --server-url": ("flag", ["init", "--server-url"], VALID["server_url"]),
    "init --allowed-ips": ("flag", ["init", "--allowed-ips"], VALID["allowed_ips"]),
    "init --interface": ("flag", ["init", "--interface"], VALID["interface"]),
    "PEERDNS": ("env", ["PEERDNS"], VALID["peer_dns"]),
    "INTERNAL_SUBNET": ("env", ["INTERNAL_SUBNET"], VALID["subnet4"]),
    "peer add --server-allowed-ips": ("flag", ["peer", "add", "bob", "--server-allowed-ips"], VALID["routes"]),
    "peer add NAME": ("flag", ["peer", "add"], VALID["name"]),
}


@pytest.mark.parametrize("name", CLI_PATHS)
def test_the_command_line_refuses_in_one_line_or_renders_clean_files(name):
    how, target, valid = CLI_PATHS[name]

    @settings(max_examples=max(EXAMPLES // 2, 3), deadline=None, database=None)
    @given(value=hostile(valid))
    def check(value: str) -> None:
        assume("\x00" not in value)  # neither argv nor the environment can carry NUL
        assume(not value.startswith("-"))  # an option to the CLI parser, not a value
        with _folder("provisioned") as config:
            before = snapshot(config)
            if how == "flag":
                args = [*target, value, "--config-dir", str(config)] if target[-1] != "add" else \
                    [*target, "--config-dir", str(config), "--", value]
                result = bulwark(*args, env=clean_env(**NO_DISCOVERY), check=False)
            else:
                env = clean_env(**NO_DISCOVERY, **{target[0]: value})
                result = bulwark("init", "--config-dir", str(config), env=env, check=False)
            if result.returncode == 0:
                assert_folder_rendered_clean(config, check_qr=False)
                return
            assert result.returncode == 2, result.stderr
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("bulwark: "), repr(result.stderr)
            assert snapshot(config) == before

    check()
