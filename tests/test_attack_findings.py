"""What attacking Bulwark's inputs found beyond the issue's payloads (issue 8, "attack the code yourself"): each test
failed before its fix. Every refusal is one line, exit 2, and the folder (and anything outside it) byte for byte
as before.

- A discovery source answering garbage at the HTTP level (a bad status line, an overlong or 101st header, a torn
  chunked body, an IMDS token holding CR/LF or non-Latin-1 text) crashed `init`/`up` with a traceback, and cut
  the fall-back to the next source; discovery took the broadcast address (and other reserved space) as the
  gateway's public address.
- Error messages interpolate paths and stored names: a control character there broke the one-line error.
- The server config renderer for store rows had no line guard: a store row holding a line break (a damaged or
  planted `bulwark.db`) wrote a `PostUp` into `wg_confs/wg0.conf`; the store read addresses and networks with
  `ipaddress`, which takes a zone id.
- The store's -wal, -shm and -journal planted as links: refused by SQLite, but only as "cannot open the store".
  The store itself swapped for a link while a command waited for its lock: the chmod 0600 followed the link.
- A PrivateKey line with a stray control character put the private key into the error message (and the log).
- Adopting a /config whose server is not at the subnet's first host put a peer on the renumbered server's address;
  an ORIG_INTERFACE disagreeing with the server's Address left peers outside the tunnel subnet; an IPv6 subnet
  change could put the server on a peer's address.
- A trailing '+' in an interface name is a wildcard to the iptables fallback (`-o +` is every interface); `all` and
  `default` are no interface's name but the kernel's for every interface's settings: `--egress-interface default`
  made `up` change net.ipv6.conf.default.accept_ra for the whole host.
- `doctor` followed a planted link in the config folder, hung on a FIFO, and printed a planted file's terminal
  escape sequences raw.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bulwark_vpn import publicip
from bulwark_vpn.errors import InputError
from tests.attack import NO_DISCOVERY, linuxserver_config
from tests.fakes import FakeImds, FakeIpService, serve_imds, serve_ip_service
from tests.helpers import BULWARK, bulwark, clean_env, snapshot


def _init(config: Path, *extra: str) -> None:
    bulwark("init", "--config-dir", str(config), "--server-url", "203.0.113.9", "--peers", "alice", *extra)


def _refused(result, *fragments: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bulwark: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _tamper(config: Path, column: str, value: str, where: str = "alice") -> None:
    conn = sqlite3.connect(config / "bulwark.db")
    with conn:
        conn.execute(f"UPDATE peers SET {column}=? WHERE name=?", (value, where))  # noqa: S608 - test columns
    conn.close()


# --- discovery: garbage at the HTTP level voids one source, never the command ------------------------------


@contextmanager
def _raw_http(reply: bytes) -> Iterator[str]:
    """A TCP server answering every request with `reply` as is (a broken or hostile HTTP server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                    conn.sendall(reply)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    finally:
        stop.set()
        thread.join(2)
        server.close()


GARBAGE = {
    "not http": b"HELLO\r\n\r\n",
    "overlong header": b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n198.51.100.66",
    "101 headers": b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 101 + b"\r\n198.51.100.66",
    "torn chunked body": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n198.51.100.66\r\n",
}


@pytest.mark.parametrize("reply", GARBAGE.values(), ids=GARBAGE.keys())
def test_an_http_source_answering_garbage_is_skipped_and_the_next_one_used(reply):
    with _raw_http(reply) as bad, serve_ip_service(FakeIpService("198.51.100.7\n")) as good:
        found = publicip.discover_public_address(imds_url=bad, stun_servers=[], http_services=[bad, good.url],
                                                 timeout=1.0)
    assert found == publicip.DiscoveryResult("198.51.100.7", "http", good.url)


@pytest.mark.parametrize("token", ["abc\r\nX-Injected: 1", "tök\u00e9n\u2603", "a\nb"])
def test_an_imds_token_that_cannot_be_sent_back_voids_imds_only(tmp_path, token):
    """IMDSv2 hands a token to send back as a header: one with CR/LF (header injection) or text a header cannot
    carry made urllib raise ValueError, a traceback out of `bulwark init`."""
    with serve_imds(FakeImds(public_ipv4="198.51.100.8", forced_token=token)) as imds, \
            serve_ip_service(FakeIpService("198.51.100.7\n")) as good:
        env = clean_env(SERVERURL="auto", BULWARK_IMDS_URL=imds.url, BULWARK_STUN_SERVERS="",
                        BULWARK_IP_SERVICES=good.url)
        result = bulwark("init", "--config-dir", str(tmp_path / "c"), "--peers", "alice", env=env, check=False)
        assert result.returncode == 0, result.stderr
        assert [r[0] for r in imds.requests] == ["PUT"]  # the token was never sent back
    shown = bulwark("peer", "show", "alice", "--config-dir", str(tmp_path / "c")).stdout
    assert "Endpoint = 198.51.100.7:51820" in shown


def test_init_with_a_garbage_imds_and_no_other_source_says_the_address_is_unknown(tmp_path):
    config = tmp_path / "c"
    with _raw_http(GARBAGE["not http"]) as bad:
        env = clean_env(SERVERURL="auto", BULWARK_IMDS_URL=bad, BULWARK_STUN_SERVERS="", BULWARK_IP_SERVICES="")
        result = bulwark("init", "--config-dir", str(config), "--peers", "alice", env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "could not discover the public address" in result.stderr
    _refused(bulwark("peer", "show", "alice", "--config-dir", str(config), check=False),
             "the server's public address is unknown")


@pytest.mark.parametrize("answer", ["255.255.255.255", "240.1.2.3", "::ffff:203.0.113.7", "100::1"])
def test_discovery_refuses_reserved_space_as_the_public_address(answer):
    assert publicip.parse_public_address(answer + "\n") is None


# --- errors: one line whatever a message interpolates -----------------------------------------------------


def test_a_stored_name_with_a_line_break_is_named_in_one_escaped_line(tmp_path):
    config = tmp_path / "c"
    _init(config)
    _tamper(config, "name", "x\r\nPostUp = touch /tmp/bulwark-attack-marker\u2028")
    line = _refused(bulwark("peer", "list", "--config-dir", str(config), check=False))
    assert "x\\r\\nPostUp" in line and "\\u2028" in line


# --- the store: a row is text, and text never adds a line --------------------------------------------------

ROW_INJECTIONS = {
    "name": "x\nPostUp = touch /tmp/bulwark-attack-marker",
    "public_key": "x\nPostUp = touch /tmp/bulwark-attack-marker",
    "preshared_key": "x\nPostUp = touch /tmp/bulwark-attack-marker",
    "address6": "fd13::2%x\nPostUp = touch /tmp/bulwark-attack-marker",
    "server_allowed_ips": json.dumps(["10.9.0.0/24\nPostUp = touch /tmp/bulwark-attack-marker"]),
    "keepalive": "25\nPostUp = touch /tmp/bulwark-attack-marker",
}




@pytest.mark.parametrize("column", ROW_INJECTIONS)
def test_a_store_row_holding_a_line_break_never_reaches_the_server_config(tmp_path, column):
    config = tmp_path / "c"
    _init(config, "--subnet6", "fd13::/64")
    _tamper(config, column, ROW_INJECTIONS[column])
    before = snapshot(config)
    # Adding a peer re-renders wg_confs/wg0.conf from the store rows (the fast path, without model objects).
    result = bulwark("peer", "add", "bob", "--config-dir", str(config), check=False)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(config) == before
    assert not any("PostUp" in p.read_text() for p in config.rglob("*.conf"))


def test_a_stored_address_with_a_zone_id_is_a_damaged_row_not_a_value(tmp_path):
    config = tmp_path / "c"
    _init(config, "--subnet6", "fd13::/64")
    _tamper(config, "address6", "fd13::2%eth0")
    result = bulwark("peer", "list", "--config-dir", str(config), check=False)
    _refused(result, "damaged peer 'alice'")


# --- SQLite's own files beside the store ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
@pytest.mark.parametrize("command", [["peer", "list"], ["peer", "add", "bob"]])
def test_the_stores_side_files_planted_as_links_are_refused_naming_them(tmp_path, suffix, command):
    config = tmp_path / "c"
    _init(config)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for side in ("-wal", "-shm"):
        (config / f"bulwark.db{side}").unlink(missing_ok=True)
    (config / f"bulwark.db{suffix}").symlink_to(victim)
    before = snapshot(config)
    _refused(bulwark(*command, "--config-dir", str(config), check=False),
             f"'{config}/bulwark.db{suffix}'", "symbolic link")
    assert victim.read_text() == "precious\n" and snapshot(config) == before


# --- the store swapped for a link while a command waits for it ---------------------------------------------


def _has_open(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


@pytest.mark.parametrize("swap", ["link", "other file"])
def test_a_store_swapped_while_a_command_waits_for_its_lock_is_never_followed(tmp_path, swap):
    """Anyone who can write the folder can hold the database locked: the command waits (busy timeout) after the
    checks on the store's name; a link put there meanwhile made its chmod 0600 (as root) land on the link's
    target."""
    config = tmp_path / "c"
    _init(config)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    store = config / "bulwark.db"
    holder = sqlite3.connect(store, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("COMMIT")  # in exclusive locking mode the lock stays: every other connection waits
    command = subprocess.Popen([*BULWARK, "peer", "add", "bob", "--config-dir", str(config)], env=clean_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not _has_open(command.pid, store) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _has_open(command.pid, store), "the command never opened the store"
        time.sleep(0.3)  # it is in SQLite's busy wait now
        store.rename(tmp_path / "moved.db")
        if swap == "link":
            store.symlink_to(victim)
        else:
            shutil.copy2(tmp_path / "moved.db", store)
    finally:
        holder.close()
    _, stderr = command.communicate(timeout=60)
    assert command.returncode == 2 and stderr.count("\n") == 1, stderr
    assert ("the store is a symbolic link" if swap == "link" else "the store was replaced") in stderr
    assert victim.stat().st_mode & 0o777 == 0o644 and victim.read_text() == "precious\n"


def test_opening_the_store_again_keeps_the_locks_of_a_connection_already_open(tmp_path):
    """The check above must not open and close an ordinary descriptor of the database: that drops every POSIX
    lock of the process, SQLite's too; the next writer then deletes the WAL under a reader that stays open (the
    supervisor), which stops seeing changes."""
    from bulwark_vpn.store import open_store

    config = tmp_path / "c"
    _init(config)
    with open_store(config) as reader:
        assert [p.name for p in reader.peers()] == ["alice"]
        open_store(config).close()  # a second open in the same process, as a command inside the supervisor does
        bulwark("peer", "add", "bob", "--config-dir", str(config), process=True)
        assert (config / "bulwark.db-wal").exists() and (config / "bulwark.db-shm").exists()
        assert [p.name for p in reader.peers()] == ["alice", "bob"]


# --- secrets never in an error ------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["PrivateKey = {key}\x0b", "PrivateKey = {key}\u2028", "  PrivateKey   =   {key}\x00",
                                  "PresharedKey = {key}\x85"])
def test_a_damaged_key_line_in_an_adopted_config_never_shows_the_key(tmp_path, line):
    root = linuxserver_config(tmp_path / "config")
    conf = root / "wg_confs/wg0.conf"
    text = conf.read_text()
    key = next(x.split(" = ")[1] for x in text.splitlines() if x.startswith("PrivateKey"))
    conf.write_text(text.replace(f"PrivateKey = {key}", line.format(key=key), 1))
    before = snapshot(root)
    result = bulwark("init", "--config-dir", str(root), env=clean_env(**NO_DISCOVERY), check=False)
    _refused(result, "a control character or line separator")
    assert key not in result.stderr and key[:20] not in result.stderr
    assert snapshot(root) == before


# --- adoption: the server's address as Bulwark will give it, the tunnel subnet -----------------------------




def test_adopting_a_peer_on_the_address_bulwark_gives_the_server_is_refused(tmp_path):
    """Bulwark puts the server on the subnet's first host: a file whose server sits at .5 with a peer at .1 left
    that peer on the server's own address."""
    root = linuxserver_config(tmp_path / "config", server_address="10.13.13.5", peers=("10.13.13.1", "10.13.13.2"),
                        original_interface=None)
    before = snapshot(root)
    _refused(bulwark("init", "--config-dir", str(root), env=clean_env(**NO_DISCOVERY), check=False),
             "a peer has the server's own address", "'10.13.13.1/32'")
    assert snapshot(root) == before


def test_adopting_peers_outside_the_tunnel_subnet_is_refused(tmp_path):
    root = linuxserver_config(tmp_path / "config", original_interface="10.13.12")
    before = snapshot(root)
    _refused(bulwark("init", "--config-dir", str(root), env=clean_env(**NO_DISCOVERY), check=False),
             "a peer's address is outside the tunnel subnet", "'10.13.13.2'", "10.13.12.0/24")
    assert snapshot(root) == before


def test_an_ipv6_subnet_whose_first_host_is_a_peer_is_refused_naming_the_address(tmp_path):
    """fd00::4/126 holds fd00::5 and makes it the server's address: the peer there would share it."""
    config = tmp_path / "c"
    bulwark("init", "--config-dir", str(config), "--subnet6", "fd00::/64", "--peers", "a,b,c,d")
    bulwark("peer", "remove", "a", "b", "c", "--config-dir", str(config))
    peers = json.loads(bulwark("peer", "list", "--json", "--config-dir", str(config)).stdout)["peers"]
    assert [p["address6"] for p in peers] == ["fd00::5"]
    bulwark("init", "--config-dir", str(config))  # a writer closes last: SQLite's -wal and -shm are gone again
    before = snapshot(config)
    _refused(bulwark("init", "--config-dir", str(config), "--subnet6", "fd00::4/126", check=False),
             "a peer would hold the server's own tunnel address", "'fd00::5'")
    assert snapshot(config) == before


# --- interface names: a wildcard to iptables ---------------------------------------------------------------


@pytest.mark.parametrize(("args", "env"), [
    (["--interface", "wg+"], {}),
    (["--egress-interface", "eth+"], {}),
    (["--egress-interface", "+"], {}),
    ([], {"BULWARK_EGRESS_INTERFACE": "+"}),
    ([], {"BULWARK_INTERFACE": "bw+"}),
])
def test_an_interface_name_ending_in_plus_is_refused(tmp_path, args, env):
    config = tmp_path / "c"
    _init(config)
    before = snapshot(config)
    _refused(bulwark("init", "--config-dir", str(config), *args, env=clean_env(**env), check=False),
             "a trailing '+' is a wildcard to iptables")
    assert snapshot(config) == before


@pytest.mark.parametrize(("args", "env"), [
    (["--egress-interface", "default"], {}),
    (["--egress-interface", "all"], {}),
    (["--interface", "all"], {}),
    ([], {"BULWARK_EGRESS_INTERFACE": "default"}),
])
def test_the_kernels_all_and_default_are_not_interface_names(tmp_path, args, env):
    """`up` wrote `sysctl net.ipv6.conf.default.accept_ra=2` for `--egress-interface default`: a host-wide default
    every later interface inherits, left after `down` (tests/test_attack_netns.py shows it in a namespace)."""
    config = tmp_path / "c"
    _init(config)
    before = snapshot(config)
    _refused(bulwark("init", "--config-dir", str(config), *args, env=clean_env(**env), check=False),
             "is not an interface name the kernel allows")
    assert snapshot(config) == before


def test_the_iptables_fallback_never_gets_a_wildcard_interface():
    from bulwark_vpn.dataplane.firewall import FirewallSpec

    for iface, egress in (("wg+", "eth0"), ("wg0", "+"), ("wg0", "eth+")):
        with pytest.raises(InputError, match="wildcard"):
            FirewallSpec(iface=iface, egress=egress, subnets=(), listen_port=51820)


# --- doctor reads the folder as Bulwark does -------------------------------------------------------------


def _doctor_endpoint_line(config: Path) -> str:
    result = bulwark("doctor", "--config-dir", str(config), process=True, timeout=60, check=False)
    return next(line for line in result.stdout.splitlines() if line.split()[1:2] == ["endpoint"])


def test_doctor_never_reads_through_a_link_planted_in_the_config_folder(tmp_path):
    config = tmp_path / "c"
    _init(config)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "peer_evil.conf").write_text("[Peer]\nEndpoint = 198.51.100.250:4\n")
    (config / "peer_evil").symlink_to(outside)
    assert "198.51.100.250" not in _doctor_endpoint_line(config)


def test_doctor_shows_a_planted_files_escape_sequences_escaped(tmp_path):
    config = tmp_path / "c"
    _init(config)
    (config / "peer_esc").mkdir()
    (config / "peer_esc/peer_esc.conf").write_text("[Peer]\nEndpoint = \x1b]0;PWNED\x07\x1b[2J:1\n")
    line = _doctor_endpoint_line(config)
    assert "\x1b" not in line and "\x07" not in line and "\\x1b]0;PWNED\\x07" in line


def test_doctor_does_not_hang_on_a_fifo_planted_as_a_peer_config(tmp_path):
    config = tmp_path / "c"
    _init(config)
    (config / "peer_fifo").mkdir()
    os.mkfifo(config / "peer_fifo/peer_fifo.conf")
    assert "endpoint" in _doctor_endpoint_line(config)  # a plain read would block here until the timeout
