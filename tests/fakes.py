"""Fakes for the edge of the unreachable world, each stateful like the real thing.

- `FakeImds`: EC2's instance metadata service with IMDSv2 session tokens, served on a real socket
  (`serve_imds`), on loopback or inside a test's network namespace.
- `FakeIpService`: a plain-text "what is my IP" service (checkip.amazonaws.com, api.ipify.org) answering GET /
  with a body (`serve_ip_service`); `FakeStun`: a STUN server answering Binding requests with a mapped address
  (`serve_stun`). Both on a real socket, on loopback or inside a namespace; both answer whatever a test sets,
  hostile answers included.
- Command shims for what a simulated host cannot do offline, run from a PATH folder (`write_shims`):
  `apt-get` "installs" only packages that dpkg says are really installed, and fails like apt
  otherwise; `systemctl` starts a unit the way systemd would: its clean environment (Environment=,
  EnvironmentFile=), its directories (RuntimeDirectory=...), its sandbox (ProtectSystem=,
  ReadWritePaths=, ProtectHome=, PrivateTmp=, the capability sets, NoNewPrivileges=, UMask=), a
  "cgroup" (every process in the service's mount namespace) that `systemctl stop` kills.
- `read_only_except`: remount every file system read-only but a few paths, in a private mount
  namespace: ProtectSystem=strict, and the guard that keeps a simulated host off the real one's files.
- `cloud-init`: a first boot's handling of #cloud-config user-data, done by cloud-init's own code (the
  Debian package's `cloudinit` modules): `write_files` writes the files, `runcmd` becomes the script it
  runs. With BULWARK_SHIM_LOG set, every shim call is recorded there (one JSON argv per line).

The shims run as `/usr/bin/python3 -I tests/fakes.py TOOL ARGS...` under the system Python of a
simulated host, so this module imports the standard library only.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import secrets
import shlex
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal, TypeVar

# --- fake IMDS -----------------------------------------------------------------------------------------

ImdsMode = Literal["required", "optional", "no-tokens"]
IMDS_ADDRESS = "169.254.169.254"


@dataclass
class FakeImds:
    """Behaves like EC2's metadata service: PUT issues TTL-bound tokens; GETs check them.

    `requests` records (method, path, carried a valid token) for every request, in order.
    """

    mode: ImdsMode = "required"
    public_ipv4: str | None = "203.0.113.7"
    tokens: dict[str, float] = field(default_factory=dict)
    requests: list[tuple[str, str, bool]] = field(default_factory=list)
    url: str = ""
    # A token text to issue instead of a random one (a hostile or broken metadata service).
    forced_token: str | None = None


def _imds_handler(imds: FakeImds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: str = "") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            imds.requests.append(("PUT", self.path, False))
            if imds.mode == "no-tokens" or self.path != "/latest/api/token":
                self._reply(405 if imds.mode == "no-tokens" else 404)
                return
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600 or self.headers.get("X-Forwarded-For"):
                self._reply(400)
                return
            token = imds.forced_token if imds.forced_token is not None else secrets.token_urlsafe(24)
            imds.tokens[token] = time.monotonic() + int(ttl)
            self._reply(200, token)

        def do_GET(self) -> None:  # noqa: N802
            token = self.headers.get("X-aws-ec2-metadata-token")
            valid = token is not None and imds.tokens.get(token, 0) > time.monotonic()
            imds.requests.append(("GET", self.path, valid))
            if token is not None and not valid or (imds.mode == "required" and not valid):
                self._reply(401)
                return
            if self.path == "/latest/meta-data/public-ipv4" and imds.public_ipv4:
                self._reply(200, imds.public_ipv4)
                return
            self._reply(404, "Not Found")

    return Handler


class _HttpServer(ThreadingHTTPServer):
    """An HTTP server that does not look its own address up in DNS when it binds.

    (HTTPServer.server_bind calls getfqdn: inside a test namespace that would send a query to this
    machine's resolver.)
    """

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _in_netns(netns: str, build: Callable[[], T]) -> T:
    """Call `build()` in a thread that has joined network namespace `netns`; return its result.

    Sockets keep the namespace they were created in, so a server built there listens there while
    this process stays where it is (only that short-lived thread ever switches).
    """
    result: dict[str, object] = {}

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with open(f"/var/run/netns/{netns}") as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            result["value"] = build()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


@contextmanager
def serve_imds(imds: FakeImds, host: str = "127.0.0.1", port: int = 0, netns: str | None = None) -> Iterator[FakeImds]:
    """Serve `imds` over HTTP on host:port (inside network namespace `netns` when given); sets `imds.url`."""

    def build() -> ThreadingHTTPServer:
        return _HttpServer((host, port), _imds_handler(imds))

    server = _in_netns(netns, build) if netns else build()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    imds.url = f"http://{host}:{server.server_address[1]}"
    try:
        yield imds
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- fake "what is my IP" service -------------------------------------------------------------------------


@dataclass
class FakeIpService:
    """A plain-text "what is my IP" service: GET / answers `status` with `body` (the address and a newline, as
    checkip.amazonaws.com does). `requests` counts the GETs served."""

    body: str = "203.0.113.7\n"
    status: int = 200
    requests: int = 0
    url: str = ""


def _ip_service_handler(service: FakeIpService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            service.requests += 1
            data = service.body.encode("utf-8", "surrogatepass")
            self.send_response(service.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def serve_ip_service(service: FakeIpService, host: str = "127.0.0.1", port: int = 0,
                     netns: str | None = None) -> Iterator[FakeIpService]:
    """Serve `service` over HTTP on host:port (inside network namespace `netns` when given); sets `service.url`."""

    def build() -> ThreadingHTTPServer:
        return _HttpServer((host, port), _ip_service_handler(service))

    server = _in_netns(netns, build) if netns else build()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    shown = f"[{host}]" if ":" in host else host
    service.url = f"http://{shown}:{server.server_address[1]}/"
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- fake STUN server ------------------------------------------------------------------------------------

STUN_MAGIC_COOKIE = 0x2112A442


@dataclass
class FakeStun:
    """A STUN server (RFC 5389): a Binding request gets a success response with XOR-MAPPED-ADDRESS, or with
    `raw_mapped` as the attribute's value bytes when a test sets it (family, port and address bytes of its choice).
    `seen` counts the requests."""

    mapped: str = "203.0.113.7"
    port: int = 40000
    raw_mapped: bytes | None = None
    seen: int = 0
    server: str = ""


def stun_success(txid: bytes, address: str, port: int) -> bytes:
    """A Binding success response carrying XOR-MAPPED-ADDRESS, as a STUN server sends it."""
    ip = ipaddress.ip_address(address)
    mask = struct.pack("!I", STUN_MAGIC_COOKIE) + (txid if ip.version == 6 else b"")
    raw = bytes(a ^ b for a, b in zip(ip.packed, mask, strict=True))
    value = struct.pack("!BBH", 0, 1 if ip.version == 4 else 2, port ^ (STUN_MAGIC_COOKIE >> 16)) + raw
    return stun_message(txid, value)


def stun_message(txid: bytes, xor_mapped_value: bytes) -> bytes:
    attr = struct.pack("!HH", 0x0020, len(xor_mapped_value)) + xor_mapped_value + b"\0" * (-len(xor_mapped_value) % 4)
    return struct.pack("!HHI12s", 0x0101, len(attr), STUN_MAGIC_COOKIE, txid) + attr


@contextmanager
def serve_stun(stun: FakeStun, host: str = "127.0.0.1", netns: str | None = None) -> Iterator[FakeStun]:
    """Answer STUN Binding requests on host:random-port (inside `netns` when given); sets `stun.server`."""

    def build() -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        sock.settimeout(0.05)
        return sock

    sock = _in_netns(netns, build) if netns else build()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 20:
                continue
            kind, _, cookie, txid = struct.unpack("!HHI12s", data[:20])
            if kind != 0x0001 or cookie != STUN_MAGIC_COOKIE:
                continue
            stun.seen += 1
            reply = (stun_message(txid, stun.raw_mapped) if stun.raw_mapped is not None
                     else stun_success(txid, stun.mapped, stun.port))
            sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    stun.server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        yield stun
    finally:
        stop.set()
        thread.join(2)
        sock.close()


# --- read-only file systems ----------------------------------------------------------------------------

API_FILE_SYSTEMS = ("/proc", "/sys", "/dev")


def _unescape_mountinfo(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mount_points() -> list[str]:
    """This mount namespace's mount points, parents first."""
    with open("/proc/self/mountinfo") as handle:
        return [_unescape_mountinfo(line.split()[4]) for line in handle]


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {result.stderr.strip()}")


def read_only_except(writable: Sequence[str]) -> None:
    """Make every file system read-only except the API ones (/proc, /sys, /dev) and `writable`.

    Only ever call this in a private mount namespace (`unshare --mount --propagation private`):
    it changes the flags of this namespace's copies of the mounts.
    """
    points = mount_points()
    for point in points:
        # A writable path that is a mount point of its own simply keeps its flags.
        if _under(point, API_FILE_SYSTEMS) or point in writable or not os.path.exists(point):
            continue
        try:
            _mount("-o", "remount,bind,ro", point)
        except OSError:
            # Namespace handles (nsfs under /run/netns) cannot be remounted; they hold no files.
            if os.path.isdir(point) or os.path.isfile(point) and os.path.getsize(point):
                raise
    for path in writable:
        if path not in points:
            # Its own mount (the mounts below it come along, read-only), then made writable.
            _mount("--rbind", path, path)
            _mount("-o", "remount,bind,rw", path)


def assert_private_mount_namespace(host_namespace: str) -> None:
    """Refuse to go on in the host's own mount namespace (`host_namespace`: its /proc/self/ns/mnt link)."""
    if os.readlink("/proc/self/ns/mnt") == host_namespace:
        raise SystemExit("refusing to remount: this is the host's mount namespace")


# --- cloud-init -----------------------------------------------------------------------------------------

# The modules our user-data may use; anything else would be a key the renderer did not mean to write.
CLOUD_CONFIG_KEYS = frozenset({"write_files", "runcmd"})


def cloud_init(user_data: str, scripts_dir: str) -> int:
    """First boot: parse the user-data, write its files and run its runcmd, all with cloud-init's own code.

    Runs under the system Python (the Debian cloud-init package); the runcmd script replaces this process.
    """
    from cloudinit import util  # the Debian package's, not a reimplementation
    from cloudinit.config import cc_write_files

    text = Path(user_data).read_text()
    if not text.startswith("#cloud-config\n"):
        print("cloud-init: user-data is not #cloud-config", file=sys.stderr)
        return 1
    config = util.load_yaml(text)
    unknown = sorted(set(config) - CLOUD_CONFIG_KEYS)
    if unknown:
        print(f"cloud-init (simulated): modules this boot does not run: {', '.join(unknown)}", file=sys.stderr)
        return 1
    files = [f for f in config.get("write_files", []) if not util.get_cfg_option_bool(f, "defer", False)]
    cc_write_files.write_files("write_files", files, "root:root")
    script = Path(scripts_dir) / "runcmd"
    util.write_file(str(script), util.shellify(config.get("runcmd", [])), 0o700)
    sys.stdout.flush()
    os.execv(str(script), [str(script)])  # noqa: S606 - cloud-init's scripts-user runs it the same way
    return 1  # not reached


# --- PATH shims ----------------------------------------------------------------------------------------

SHIMS = ("apt-get", "systemctl")
SYSTEM_PYTHON = "/usr/bin/python3"


def write_shims(bin_dir: Path, script: str | None = None, tools: Sequence[str] = SHIMS) -> Path:
    """Write executable `tools` into `bin_dir` (to put first on PATH); return `bin_dir`.

    `script` is where the simulated host sees this file (default: where it is).
    """
    script = script or str(Path(__file__).resolve())
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        path = bin_dir / tool
        path.write_text(f'#!/bin/sh\nexec {SYSTEM_PYTHON} -I {script} {tool} "$@"\n')
        path.chmod(0o755)
    return bin_dir


# --- apt-get ------------------------------------------------------------------------------------------


def _dpkg_version(package: str) -> str | None:
    """The installed version of `package`, or None when dpkg does not have it fully installed."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Version}", package],
        capture_output=True, text=True, check=False,
    )
    status, _, version = result.stdout.partition("\t")
    return version if result.returncode == 0 and status.startswith("ii") else None


def apt_get(args: Sequence[str]) -> int:
    """`apt-get update` (nothing to fetch offline) and `apt-get install PKG...` of installed packages only."""
    words: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg in ("-o", "-t", "-c"):
            next(rest, None)
        elif not arg.startswith("-"):
            words.append(arg)
    if not words:
        print("E: No command given", file=sys.stderr)
        return 100
    command, packages = words[0], words[1:]
    if command == "update":
        print("Reading package lists... Done")
        return 0
    if command != "install":
        print(f"E: this offline apt-get supports update and install only, not '{command}'", file=sys.stderr)
        return 100
    print("Reading package lists... Done\nBuilding dependency tree... Done")
    for spec in packages:
        name, _, wanted = spec.partition("=")
        version = _dpkg_version(name)
        if version is None:
            print(f"E: Unable to locate package {name}", file=sys.stderr)
            return 100
        if wanted and wanted != version:
            print(f"E: Version '{wanted}' for '{name}' was not found", file=sys.stderr)
            return 100
        print(f"{name} is already the newest version ({version}).")
    print("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.")
    return 0


# --- systemd units ---------------------------------------------------------------------------------------

UNIT_DIR = Path("/etc/systemd/system")
SHIM_STATE = Path("/run/systemd-shim")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SERVICE_EXIT_NAMESPACE = 226  # systemd's status when it cannot set up the sandbox

# Directives the shim applies, and those it accepts without effect because they cannot change what
# a file or capability check sees (ordering, restarts, seccomp filters, device cgroups, kernel-only
# knobs). Anything else is refused, so a new directive in a unit gets a decision, not silence.
EMULATED = frozenset({
    "Type", "Environment", "EnvironmentFile", "ExecStart", "ProtectSystem", "ReadWritePaths",
    "RuntimeDirectory", "RuntimeDirectoryMode", "ConfigurationDirectory", "ConfigurationDirectoryMode",
    "StateDirectory", "StateDirectoryMode", "ProtectHome", "PrivateTmp", "CapabilityBoundingSet",
    "AmbientCapabilities", "NoNewPrivileges", "UMask", "TimeoutStopSec",
})
NOT_EMULATED = frozenset({
    "Description", "Wants", "After", "Before", "Requires", "WantedBy", "Documentation",
    "Restart", "RestartSec", "DevicePolicy", "DeviceAllow", "ProtectKernelModules", "ProtectKernelLogs",
    "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictAddressFamilies",
    "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
    "SystemCallArchitectures",
})
_STATE_BASES = {"RuntimeDirectory": "/run", "ConfigurationDirectory": "/etc", "StateDirectory": "/var/lib"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnitError(Exception):
    """A unit the shim cannot run the way systemd would."""


@dataclass
class Unit:
    """A parsed unit file: every section's directives, values in order (an empty value resets)."""

    name: str
    sections: dict[str, dict[str, list[str]]]

    def values(self, key: str, section: str = "Service") -> list[str]:
        return self.sections.get(section, {}).get(key, [])

    def value(self, key: str, default: str = "", section: str = "Service") -> str:
        found = self.values(key, section)
        return found[-1] if found else default

    def words(self, key: str) -> list[str]:
        """A space-separated list directive, all its lines joined."""
        return [word for line in self.values(key) for word in line.split()]


def parse_unit(name: str, text: str, *, runnable: bool = True) -> Unit:
    """Parse unit file syntax: [Section], Key=Value, #/; comments, backslash continuations.

    `runnable`: also refuse directives the shim neither emulates nor may safely ignore.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if current is None or not sep:
            raise UnitError(f"{name}: cannot parse line: {line!r}")
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    unknown = sorted({k for s in sections.values() for k in s} - EMULATED - NOT_EMULATED)
    if unknown and runnable:
        raise UnitError(f"{name}: directives this shim does not know: {', '.join(unknown)}")
    return Unit(name, sections)


def load_unit(name: str) -> Unit:
    path = UNIT_DIR / name
    if not path.is_file():
        raise UnitError(f"Unit {name} not found.")
    return parse_unit(name, path.read_text())


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value


def parse_environment_file(text: str) -> dict[str, str]:
    """EnvironmentFile= syntax: KEY=VALUE lines, quotes removed, # and ; comments, bad names skipped."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if sep and _ENV_NAME.match(key.strip()):
            env[key.strip()] = _unquote(value.strip())
    return env


def service_environment(unit: Unit) -> dict[str, str]:
    """What systemd hands the service: its own few variables, then Environment=, then EnvironmentFile=."""
    env = {"PATH": DEFAULT_PATH, "INVOCATION_ID": uuid.uuid4().hex}
    for key, base in _STATE_BASES.items():
        names = unit.words(key)
        if names:
            env[f"{key.removesuffix('Directory').upper()}_DIRECTORY"] = ":".join(f"{base}/{n}" for n in names)
    for line in unit.values("Environment"):
        for item in shlex.split(line):
            key, sep, value = item.partition("=")
            if sep and _ENV_NAME.match(key):
                env[key] = value
    for line in unit.values("EnvironmentFile"):
        optional = line.startswith("-")
        path = Path(line.removeprefix("-"))
        if not path.is_file():
            if optional:
                continue
            raise UnitError(f"{unit.name}: Failed to load environment files: {path}: No such file or directory")
        env.update(parse_environment_file(path.read_text()))
    return env


def exec_start(unit: Unit) -> list[str]:
    """The ExecStart command line, split as systemd does (no specifiers, no prefixes but none)."""
    lines = unit.values("ExecStart")
    if len(lines) != 1:
        raise UnitError(f"{unit.name}: expected one ExecStart=, found {len(lines)}")
    if "%" in lines[0] or lines[0][0] in "-@:+!":
        raise UnitError(f"{unit.name}: ExecStart prefixes and specifiers are not emulated: {lines[0]!r}")
    argv = shlex.split(lines[0])
    if not argv[0].startswith("/"):
        raise UnitError(f"{unit.name}: ExecStart must be an absolute path: {argv[0]!r}")
    return argv


def _writable_paths(unit: Unit) -> list[str]:
    paths = []
    for key, base in _STATE_BASES.items():
        paths += [f"{base}/{name}" for name in unit.words(key)]
    for path in unit.words("ReadWritePaths"):
        optional = path.startswith("-")
        path = path.removeprefix("-")
        if os.path.exists(path):
            paths.append(path)
        elif not optional:
            raise UnitError(f"Failed to set up mount namespacing: {path}: No such file or directory")
    return paths


def _caps(words: list[str]) -> str:
    return ",".join(["-all", *(f"+{w.lower().removeprefix('cap_')}" for w in words)])


def _privilege_argv(unit: Unit) -> list[str]:
    """setpriv options for CapabilityBoundingSet=, AmbientCapabilities=, NoNewPrivileges=."""
    argv = ["setpriv"]
    bounding = unit.words("CapabilityBoundingSet")
    ambient = unit.words("AmbientCapabilities")
    if bounding:
        argv.append(f"--bounding-set={_caps(bounding)}")
    if ambient:
        argv += [f"--inh-caps={_caps(ambient)}", f"--ambient-caps={_caps(ambient)}"]
    if unit.value("NoNewPrivileges") in ("yes", "true", "1", "on"):
        argv.append("--no-new-privs")
    return argv


def _sandbox(unit: Unit) -> None:
    """Apply the unit's file-system protections to this (private) mount namespace."""
    protect = unit.value("ProtectSystem", "no")
    if protect == "strict":
        read_only_except(_writable_paths(unit))
    elif protect not in ("no", "false"):
        raise UnitError(f"{unit.name}: ProtectSystem={protect} is not emulated")
    home = unit.value("ProtectHome", "no")
    if home in ("yes", "true"):
        for path in ("/home", "/root", "/run/user"):
            if os.path.isdir(path):
                _mount("-t", "tmpfs", "-o", "ro,mode=000", "tmpfs", path)
    elif home not in ("no", "false"):
        raise UnitError(f"{unit.name}: ProtectHome={home} is not emulated")
    if unit.value("PrivateTmp") in ("yes", "true"):
        for path in ("/tmp", "/var/tmp"):
            _mount("-t", "tmpfs", "-o", "mode=1777", "tmpfs", path)


def _exec_service(name: str) -> int:
    """In the service's fresh mount namespace: sandbox, umask, privileges, then exec ExecStart."""
    unit = load_unit(name)
    try:
        _sandbox(unit)
    except (UnitError, OSError) as exc:
        print(f"{name}: Failed at step NAMESPACE: {exc}", file=sys.stderr)
        return SERVICE_EXIT_NAMESPACE
    os.umask(int(unit.value("UMask", "0022"), 8))
    argv = [*_privilege_argv(unit), "--", *exec_start(unit)]
    os.execvp(argv[0], argv)  # noqa: S606 - exec, as systemd does
    return 1  # not reached


def _state(name: str, what: str) -> Path:
    return SHIM_STATE / f"{name}.{what}"


def _create_directories(unit: Unit) -> None:
    for key, base in _STATE_BASES.items():
        mode = int(unit.value(f"{key}Mode", "0755"), 8)
        for name in unit.words(key):
            path = Path(base) / name
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(mode)


def _manager(name: str) -> int:
    """systemd's part for one service: start it in its own mount namespace, wait, record how it ended."""
    try:
        unit = load_unit(name)
        _create_directories(unit)
        env = service_environment(unit)
    except (UnitError, OSError) as exc:
        print(f"{name}: Failed to start: {exc}", flush=True)
        _state(name, "result").write_text("resources")
        return 1
    argv = ["unshare", "--mount", "--propagation", "private", "--", SYSTEM_PYTHON, "-I", str(Path(__file__).resolve()),
            "exec-service", name]
    print(f"Starting {name}: {shlex.join(exec_start(unit))}", flush=True)
    child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
    own = os.readlink("/proc/self/ns/mnt")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and child.poll() is None:
        try:
            namespace = os.readlink(f"/proc/{child.pid}/ns/mnt")
        except OSError:
            break
        if namespace != own:
            _state(name, "mntns").write_text(namespace)
            break
        time.sleep(0.01)
    _state(name, "pid").write_text(str(child.pid))
    status = child.wait()
    print(f"{name}: Main process exited, status={status}", flush=True)
    for runtime in unit.words("RuntimeDirectory"):
        subprocess.run(["rm", "-rf", f"/run/{runtime}"], check=False)
    _state(name, "result").write_text(str(status))
    return 0


def _start(name: str) -> int:
    unit = load_unit(name)
    exec_start(unit)  # refuse a unit we cannot run before pretending to start it
    SHIM_STATE.mkdir(parents=True, exist_ok=True)
    for what in ("pid", "mntns", "result"):
        _state(name, what).unlink(missing_ok=True)
    with open(_state(name, "log"), "ab") as log:
        subprocess.Popen([SYSTEM_PYTHON, "-I", str(Path(__file__).resolve()), "manager", name],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    # Type=exec: start returns once the service's process exists.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _state(name, "pid").exists():
            return 0
        if _state(name, "result").exists():
            break
        time.sleep(0.01)
    print(f"Job for {name} failed: the service did not start", file=sys.stderr)
    return 1


def service_processes(name: str) -> list[int]:
    """The service's "cgroup": every process in the mount namespace it started in."""
    try:
        namespace = _state(name, "mntns").read_text()
    except OSError:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"/proc/{entry.name}/ns/mnt") == namespace and _alive(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min)?", value.strip())
    if not match:
        raise UnitError(f"cannot parse a time span: {value!r}")
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "min": 60, None: 1}[match.group(2)]


def _stop(name: str) -> int:
    """KillMode=control-group: SIGTERM to every process of the service, SIGKILL after TimeoutStopSec."""
    unit = load_unit(name)
    timeout = _seconds(unit.value("TimeoutStopSec", "90s"))
    for pid in service_processes(name):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while service_processes(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in service_processes(name):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not _state(name, "result").exists() and _state(name, "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return 0


def _enable(name: str) -> int:
    unit = load_unit(name)
    for target in unit.values("WantedBy", section="Install"):
        wants = UNIT_DIR / f"{target}.wants"
        wants.mkdir(exist_ok=True)
        link = wants / name
        link.unlink(missing_ok=True)
        link.symlink_to(UNIT_DIR / name)
        print(f"Created symlink {link} \u2192 {UNIT_DIR / name}.", file=sys.stderr)
    return 0


def systemctl(args: Sequence[str]) -> int:
    """daemon-reload, enable [--now], start, stop, is-active, show -p MainPID --value."""
    words = [a for a in args if not a.startswith("-")]
    flags = {a for a in args if a.startswith("-")}
    command, units = (words[0], words[1:]) if words else ("", [])
    try:
        if command == "daemon-reload":
            for path in UNIT_DIR.glob("*.service"):
                parse_unit(path.name, path.read_text(), runnable=False)
            return 0
        if command == "enable":
            return max([_enable(u) for u in units] + [_start(u) for u in units if "--now" in flags])
        if command == "start":
            return max(_start(u) for u in units)
        if command == "stop":
            return max(_stop(u) for u in units)
        if command == "is-active":
            active = all(service_processes(u) for u in units)
            print("active" if active else "inactive")
            return 0 if active else 3
    except UnitError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"this systemctl shim does not support: {shlex.join(args)}", file=sys.stderr)
    return 1


def _record(argv: Sequence[str]) -> None:
    log = os.environ.get("BULWARK_SHIM_LOG")
    if log:
        with open(log, "a") as handle:
            handle.write(json.dumps(list(argv)) + "\n")


def main(argv: Sequence[str]) -> int:
    tool, args = argv[0], argv[1:]
    if tool in SHIMS:
        _record(argv)
    if tool == "cloud-init":
        return cloud_init(args[0], args[1])
    if tool == "apt-get":
        return apt_get(args)
    if tool == "systemctl":
        return systemctl(args)
    if tool == "manager":
        return _manager(args[0])
    if tool == "exec-service":
        return _exec_service(args[0])
    if tool == "read-only":
        assert_private_mount_namespace(args[0])
        read_only_except(args[1:])
        return 0
    print(f"unknown fake: {tool}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
