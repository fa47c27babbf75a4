"""Issue 4's two deployments, simulated for real in network namespaces.

1. An EC2 instance's first boot: the rendered user-data is handled by cloud-init's own code (its
   write_files writes the unit, the environment file, the sysctls and the bootstrap script; its runcmd
   runs the bootstrap), in a namespace that plays the instance (its own /run, /tmp, /opt, and /etc and
   /usr/local as overlays, everything else read-only, so the host is never modified). Offline
   stand-ins replace what cannot work here: a wheelhouse for pip, `apt-get` and `systemctl` shims
   (tests/fakes.py; the systemctl shim applies the unit's environment and sandbox as systemd would),
   and a fake IMDSv2 on 169.254.169.254. Bulwark must come up under its systemd unit with
   SERVERURL=auto resolved through IMDSv2 to the Elastic IP, and a real wg-quick client must reach it.
   A store of hostile-looking but valid values (peer BULWARK_EOF, names with + and =, a 215-character
   server name, IPv6) goes through `bulwark deploy terraform` and Terraform's templatefile
   (tests/tfharness.py; emulated where Terraform is not installed), and its first boot runs exactly
   the bootstrap's own commands and writes exactly its own files.
2. The container: the image's ENTRYPOINT, CMD and ENV read from the repository's Dockerfile, run in
   a root file system assembled as Docker would (host's /usr and /etc read-only, the image's
   /opt/bulwark, /config bind-mounted, private /run and /tmp, Docker's /dev, read-only /proc/sys,
   Docker's default capabilities plus NET_ADMIN), with the notes' `docker run` environment and
   `-p 51821:51820/udp` as an nftables redirect. A real wg-quick client uses the generated config.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bulwark_vpn.deploy import DeployOptions, render_cloud_init
from tests import tfharness
from tests.fakes import IMDS_ADDRESS, FakeImds, serve_imds, write_shims
from tests.helpers import bulwark
from tests.netns import Netns, NetnsFactory, veth

REPO = Path(__file__).resolve().parents[1]
FAKES = Path(__file__).resolve().parent / "fakes.py"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TUNNEL_SERVER = "10.13.13.1"


def _host_mount_namespace() -> str:
    return os.readlink("/proc/self/ns/mnt")


def _guard() -> str:
    """Shell line that stops a setup script unless it runs in a mount namespace of its own."""
    return f'test "$(readlink /proc/self/ns/mnt)" != "{_host_mount_namespace()}"\n'


def _offline_pip(wheelhouse: str) -> dict[str, str]:
    """pip without an index: only the wheelhouse (and no pip.conf of this machine)."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheelhouse, "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, details: Callable[[], str] = str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:g} s\n{details()}")


def _without_dns(config: str) -> str:
    # wg-quick's DNS= needs resolvconf, which the namespaces do not have.
    return "".join(line for line in config.splitlines(keepends=True) if not line.startswith("DNS"))


def _field(config: str, name: str) -> str:
    match = re.search(rf"(?m)^{name} = (.*)$", config)
    assert match, f"no {name} in:\n{config}"
    return match.group(1).strip()


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of this repository plus wheels of its dependencies: the package index, offline."""
    out = tmp_path_factory.mktemp("wheelhouse")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(out), f"{REPO}[web]"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"building the wheelhouse failed:\n{result.stderr}"
    assert list(out.glob("bulwark_vpn-*.whl")), sorted(p.name for p in out.iterdir())
    return out


# --- 1. EC2 first boot -----------------------------------------------------------------------------------

ELASTIC_IP = "198.51.100.77"
INSTANCE_PRIVATE = "10.0.1.20"
VPC_ROUTER = "10.0.1.1"  # also the "VPC host" the client reaches through the tunnel
INTERNET_INSTANCE, INTERNET_CLIENT = "172.30.77.1", "172.30.77.2"
SIM = "/run/sim"  # where the instance sees the test's folder (shims, script, logs, overlay layers)
UNIT = "bulwark.service"
ADMIN_ENV = (f"PATH={DEFAULT_PATH}", "BULWARK_CONFIG_DIR=/etc/bulwark")  # an administrator's `sudo` session


# Where the bootstrap writes (and the instance's resolv.conf): the host's own must stay untouched.
BOOTSTRAP_WRITES = ("/opt/bulwark", "/usr/local/bin/bulwark", "/usr/local/sbin/bulwark-bootstrap", "/etc/bulwark",
                    "/etc/default/bulwark", f"/etc/systemd/system/{UNIT}",
                    f"/etc/systemd/system/multi-user.target.wants/{UNIT}", "/etc/sysctl.d/90-bulwark.conf",
                    "/etc/resolv.conf")


def _fingerprint(paths: tuple[str, ...]) -> dict[str, tuple[int, int, int] | None]:
    out: dict[str, tuple[int, int, int] | None] = {}
    for path in paths:
        try:
            info = os.lstat(path)
            out[path] = (info.st_mode, info.st_size, info.st_mtime_ns)
        except FileNotFoundError:
            out[path] = None
    return out


@dataclass
class Ec2Instance:
    """A namespace booted as an EC2 instance; `holder` is a process in its mount namespace."""

    ns: Netns
    root: Path
    holder: subprocess.Popen[bytes]

    def path(self, inside: str) -> Path:
        """A path of the instance's file system, seen from the host."""
        return Path(f"/proc/{self.holder.pid}/root{inside}")

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command on the instance, as an administrator logged in over SSH would (`sudo ...`)."""
        return subprocess.run(["nsenter", f"--target={self.holder.pid}", "--mount", "--net", "--",
                               "env", "-i", *ADMIN_ENV, *argv], capture_output=True, text=True, timeout=timeout,
                              check=False)

    def trace(self) -> list[str]:
        """The commands the bootstrap ran, as its `set -x` wrote them to the log."""
        return [line for line in _read(self.root / "bootstrap.log").splitlines() if line.startswith("+ ")]

    def shim_calls(self) -> list[list[str]]:
        """Every apt-get and systemctl call made during the boot, in order."""
        log = self.root / "shims.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def written(self) -> set[str]:
        """Files and links the boot left in /etc and /usr/local (their overlays' upper layers)."""
        out = set()
        for layer, base in (("etc", "/etc"), ("local", "/usr/local")):
            upper = self.root / f"{layer}.upper"
            out |= {f"{base}/{p.relative_to(upper)}" for p in upper.rglob("*") if p.is_file() or p.is_symlink()}
        return out

    def bootstrap_rc(self) -> int | None:
        rc = self.root / "bootstrap.rc"
        return int(rc.read_text()) if rc.exists() else None

    def logs(self) -> str:
        service = self.path(f"/run/systemd-shim/{UNIT}.log")
        return (f"--- bootstrap log ---\n{_read(self.root / 'bootstrap.log')}\n"
                f"--- {UNIT} log ---\n{_read(service)}")

    def service_pid(self) -> int | None:
        pid = self.path(f"/run/systemd-shim/{UNIT}.pid")
        return int(pid.read_text()) if pid.exists() else None

    def shut_down(self) -> None:
        """`systemctl stop` the service, then end the instance's holder process."""
        if self.holder.poll() is None:
            try:
                self.run(f"{SIM}/bin/systemctl", "stop", UNIT, timeout=60)
            except subprocess.TimeoutExpired:
                pass  # the namespace's cleanup kills what is left
            self.holder.kill()
        self.holder.wait(10)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return f"({exc})"


def boot_instance(ns: Netns, root: Path, user_data: str, wheelhouse: Path) -> Ec2Instance:
    """Lay out the instance's own file systems, boot it with `user_data` as cloud-init would, keep it."""
    (root / "user-data.yaml").write_text(user_data)
    shutil.copy(FAKES, root / "fakes.py")
    write_shims(root / "bin", script=f"{SIM}/fakes.py")
    for layer in ("etc", "local"):
        for part in ("upper", "work"):
            (root / f"{layer}.{part}").mkdir()
    (root / "wheelhouse").mkdir()
    # cloud-init's environment, plus pip pointed at the wheelhouse instead of the package index.
    env = {"PATH": f"{SIM}/bin:{DEFAULT_PATH}", "HOME": "/root", "LANG": "C.UTF-8",
           "BULWARK_SHIM_LOG": f"{SIM}/shims.log", **_offline_pip(f"{SIM}/wheelhouse")}
    setup = (
        "set -eu\n"
        + _guard()
        + "mount -t tmpfs -o mode=0755 tmpfs /run\n"
        f"mkdir {SIM} && mount --bind {root} {SIM}\n"
        f"mount --bind {wheelhouse} {SIM}/wheelhouse\n"
        "mount -t tmpfs -o mode=1777 tmpfs /tmp\n"
        "mount -t tmpfs -o mode=0755 tmpfs /opt\n"
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={SIM}/etc.upper,workdir={SIM}/etc.work /etc\n"
        f"mount -t overlay overlay -o lowerdir=/usr/local,upperdir={SIM}/local.upper,workdir={SIM}/local.work"
        " /usr/local\n"
        # Everything else read-only: the bootstrap cannot reach the host's files even by mistake.
        f"/usr/bin/python3 -I {SIM}/fakes.py read-only {_host_mount_namespace()} /run {SIM} /tmp /opt /etc"
        " /usr/local\n"
        # No resolver answers on the instance: discovery stays on IMDS and nothing leaves the namespaces.
        "printf 'nameserver 127.0.0.1\\n' > /etc/resolv.conf\n"
        "cd /\n"
        "rc=0\n"
        f"env -i {shlex.join(f'{k}={v}' for k, v in env.items())} /usr/bin/python3 -I {SIM}/fakes.py cloud-init"
        f" {SIM}/user-data.yaml {SIM} > {SIM}/bootstrap.log 2>&1 || rc=$?\n"
        f"echo $rc > {SIM}/bootstrap.rc\n"
        "exec sleep infinity\n"
    )
    with open(root / "setup.err", "wb") as errors:
        holder = ns.popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", setup],
                          stdout=subprocess.DEVNULL, stderr=errors)
    return Ec2Instance(ns, root, holder)


@pytest.fixture
def ec2(netns_factory: NetnsFactory) -> tuple[Netns, Netns, Netns]:
    """(instance, VPC host, client) namespaces wired like a public subnet and the internet."""
    instance, vpc, client = netns_factory(), netns_factory(), netns_factory()
    # eth0 in the VPC subnet, the default route via the VPC router.
    veth(instance, vpc, f"{INSTANCE_PRIVATE}/24", f"{VPC_ROUTER}/24")
    instance.ip("route", "add", "default", "via", VPC_ROUTER)
    # The Elastic IP and the metadata service's address both live on the instance's lo.
    for address in (ELASTIC_IP, IMDS_ADDRESS):
        instance.ip("address", "add", f"{address}/32", "dev", "lo")
    # "The internet": the client reaches the Elastic IP, nothing else.
    veth(instance, client, f"{INTERNET_INSTANCE}/24", f"{INTERNET_CLIENT}/24")
    client.ip("route", "add", f"{ELASTIC_IP}/32", "via", INTERNET_INSTANCE)
    return instance, vpc, client


def test_ec2_first_boot_brings_bulwark_up_under_systemd_with_the_imds_address(
    ec2: tuple[Netns, Netns, Netns], netns_factory: NetnsFactory, wheelhouse: Path
) -> None:
    instance_ns, _vpc, client = ec2
    options = DeployOptions(peers=("leo_mac",))
    imds = FakeImds(public_ipv4=ELASTIC_IP)
    host_before = _fingerprint(BOOTSTRAP_WRITES)
    with serve_imds(imds, IMDS_ADDRESS, 80, netns=instance_ns.name):
        instance = boot_instance(instance_ns, netns_factory.tmpdir(), render_cloud_init(options), wheelhouse)
        try:
            _wait_for(lambda: instance.bootstrap_rc() is not None or instance.holder.poll() is not None, 120,
                      "the bootstrap script to finish",
                      lambda: _read(instance.root / "setup.err") + instance.logs())
            assert instance.bootstrap_rc() == 0, instance.logs()

            status: dict = {}

            def service_up() -> bool:
                assert not instance.path(f"/run/systemd-shim/{UNIT}.result").exists(), instance.logs()
                shown = instance.run("/usr/local/bin/bulwark", "status", "--json")
                status.update(json.loads(shown.stdout) if shown.returncode == 0 else {})
                # The device answers a moment before the gateway has recorded its state (backend, pid).
                return bool(status.get("up") and status.get("backend"))

            _wait_for(service_up, 30, "bulwark up under systemd", instance.logs)
            assert status["up"] and status["interface"] == "wg0" and status["backend"] == "userspace", status
            assert instance_ns.run(["ip", "link", "show", "wg0"], check=False).returncode == 0

            # The service really ran in the unit's sandbox: only the unit's capabilities, no new privileges.
            pid = instance.service_pid()
            proc_status = Path(f"/proc/{pid}/status").read_text()
            assert re.search(r"(?m)^CapEff:\s*0000000000001400$", proc_status), proc_status  # NET_ADMIN, BIND
            assert re.search(r"(?m)^NoNewPrivs:\s*1$", proc_status)

            # SERVERURL=auto went through IMDSv2: a token first, then public-ipv4 with that token.
            assert imds.requests[:2] == [("PUT", "/latest/api/token", False),
                                         ("GET", "/latest/meta-data/public-ipv4", True)]
            shown = instance.run("/usr/local/bin/bulwark", "peer", "show", "leo_mac")
            assert shown.returncode == 0, shown.stderr
            config = shown.stdout
            assert _field(config, "Endpoint") == f"{ELASTIC_IP}:51820"
            assert str(options.aws_vpc_cidr) in _field(config, "AllowedIPs").replace(" ", "").split(",")
            on_disk = instance.path("/etc/bulwark/peer_leo_mac/peer_leo_mac.conf").read_text()
            assert on_disk == config

            netns_factory.wg_quick_up(client, _without_dns(config))
            assert client.ping(TUNNEL_SERVER, count=3), instance.logs()
            assert client.ping(VPC_ROUTER, count=1), "the VPC CIDR is reachable through the tunnel"

            # `systemctl stop`: SIGTERM to every process of the service; Bulwark undoes everything.
            stop = instance.run(f"{SIM}/bin/systemctl", "stop", UNIT)
            assert stop.returncode == 0, stop.stderr
            assert instance_ns.run(["ip", "link", "show", "wg0"], check=False).returncode != 0
            assert "bulwark" not in instance_ns.run(["nft", "list", "tables"]).stdout.decode()
            assert instance.path(f"/run/systemd-shim/{UNIT}.result").read_text() == "0", instance.logs()
        finally:
            instance.shut_down()
    assert _fingerprint(BOOTSTRAP_WRITES) == host_before, "the host's own files were left alone"


# --- 1b. a hostile-looking store, through Terraform -----------------------------------------------------

# Valid values chosen to look like trouble: the old heredoc terminator as a peer, + and = (legal in names),
# a leading = and +, a lone _, a numbered peer, a 63-character name; a 215-character server name of
# 34 labels with '-'; IPv6 tunnel subnet and DNS; several AllowedIPs.
HOSTILE_PEERS = ("BULWARK_EOF", "a+b=c", "x.y-z", "=eq", "+plus", "_", "peer7", "P" * 63)
HOSTILE_URL = ".".join(f"l{i:02d}-x" for i in range(34)) + ".example.com"
HOSTILE_SETTINGS = ("--server-url", HOSTILE_URL, "--subnet", "10.44.0.0/22", "--subnet6", "fd44:44:44::/64",
                    "--peer-dns", "1.1.1.1,2606:4700:4700::1111", "--allowed-ips", "0.0.0.0/0, ::/0, 192.168.7.0/24")
# What the bootstrap's `set -x` must show: its own commands, nothing else.
EXPECTED_TRACE = [
    "+ export DEBIAN_FRONTEND=noninteractive",
    "+ apt-get update",
    "+ apt-get install -y --no-install-recommends python3-venv wireguard-tools wireguard-go nftables iproute2",
    "+ python3 -m venv /opt/bulwark",
    "+ /opt/bulwark/bin/pip install --no-cache-dir --upgrade bulwark-vpn[web]==0.1.0",
    "+ mkdir -p /usr/local/bin",
    "+ ln -sf /opt/bulwark/bin/bulwark /usr/local/bin/bulwark",
    "+ install -d -m 0700 /etc/bulwark",
    "+ sysctl -p /etc/sysctl.d/90-bulwark.conf",
    "+ systemctl daemon-reload",
    f"+ systemctl enable --now {UNIT}",
]
EXPECTED_SHIM_CALLS = [
    ["apt-get", "update"],
    ["apt-get", "install", "-y", "--no-install-recommends", "python3-venv", "wireguard-tools", "wireguard-go",
     "nftables", "iproute2"],
    ["systemctl", "daemon-reload"],
    ["systemctl", "enable", "--now", UNIT],
]
EXPECTED_FILES = {"/etc/default/bulwark", f"/etc/systemd/system/{UNIT}",
                  f"/etc/systemd/system/multi-user.target.wants/{UNIT}", "/etc/sysctl.d/90-bulwark.conf",
                  "/etc/resolv.conf", "/usr/local/sbin/bulwark-bootstrap", "/usr/local/bin/bulwark"}


def test_ec2_first_boot_of_a_hostile_looking_store_runs_only_its_own_commands(
    ec2: tuple[Netns, Netns, Netns], netns_factory: NetnsFactory, wheelhouse: Path
) -> None:
    instance_ns, _vpc, _client = ec2
    store, bundle = netns_factory.tmpdir() / "store", netns_factory.tmpdir() / "aws"
    bulwark("init", "--config-dir", str(store), "--peers", ",".join(HOSTILE_PEERS), *HOSTILE_SETTINGS)
    bulwark("deploy", "terraform", "--config-dir", str(store), "--out", str(bundle))
    user_data = tfharness.user_data(bundle, netns_factory.tmpdir() / "tf")
    imds = FakeImds(public_ipv4=ELASTIC_IP)
    with serve_imds(imds, IMDS_ADDRESS, 80, netns=instance_ns.name):
        instance = boot_instance(instance_ns, netns_factory.tmpdir(), user_data, wheelhouse)
        try:
            _wait_for(lambda: instance.bootstrap_rc() is not None or instance.holder.poll() is not None, 120,
                      "the bootstrap script to finish",
                      lambda: _read(instance.root / "setup.err") + instance.logs())
            assert instance.bootstrap_rc() == 0, instance.logs()
            # Nothing but the bootstrap's own commands ran, and only its own files were written.
            assert instance.trace() == EXPECTED_TRACE, instance.logs()
            assert instance.shim_calls() == EXPECTED_SHIM_CALLS
            assert {p for p in instance.written() if not p.startswith("/etc/bulwark/")} == EXPECTED_FILES

            listed: list[str] = []

            def peers_up() -> bool:
                assert not instance.path(f"/run/systemd-shim/{UNIT}.result").exists(), instance.logs()
                shown = instance.run("/usr/local/bin/bulwark", "peer", "list", "--json")
                listed[:] = [p["name"] for p in json.loads(shown.stdout)["peers"]] if shown.returncode == 0 else []
                return len(listed) == len(HOSTILE_PEERS)

            _wait_for(peers_up, 30, "bulwark up under systemd with its peers", instance.logs)
            assert listed == list(HOSTILE_PEERS)
            # The service read each value back whole from the environment file (one variable per line).
            environ = Path(f"/proc/{instance.service_pid()}/environ").read_bytes().decode().split("\0")
            env = dict(item.split("=", 1) for item in environ if "=" in item)
            assert env["PEERS"] == ",".join(HOSTILE_PEERS) and env["SERVERURL"] == HOSTILE_URL
            assert env["PEERDNS"] == "1.1.1.1,2606:4700:4700::1111" and env["INTERNAL_SUBNET6"] == "fd44:44:44::/64"
            assert env["ALLOWEDIPS"] == "0.0.0.0/0, ::/0, 192.168.7.0/24, 10.0.0.0/16"
            shown = instance.run("/usr/local/bin/bulwark", "peer", "show", "BULWARK_EOF")
            assert _field(shown.stdout, "Endpoint") == f"{HOSTILE_URL}:51820", shown.stderr
            assert imds.requests == [], "a set SERVERURL is used as given: nothing is discovered"
        finally:
            instance.shut_down()


# --- 2. the container ------------------------------------------------------------------------------------

# debian:bookworm-slim's image config (the Dockerfile's base): what the final stage's ENV builds on.
BASE_IMAGE_ENV = {"PATH": DEFAULT_PATH}
# Docker's default capabilities of a container's root; `docker run --cap-add` adds to them.
DOCKER_CAPABILITIES = ("chown", "dac_override", "fsetid", "fowner", "mknod", "net_raw", "setgid", "setuid",
                       "setfcap", "setpcap", "net_bind_service", "sys_chroot", "kill", "audit_write")
DOCKER_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
DOCKER_HOST = "192.0.2.1"  # the server's address as the client sees it
DOCKER_CLIENT = "192.0.2.2"


@dataclass
class Stage:
    """What one Dockerfile stage adds up to (its base stage's settings included)."""

    env: dict[str, str] = field(default_factory=lambda: dict(BASE_IMAGE_ENV))
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    apt_packages: list[str] = field(default_factory=list)
    copied: list[tuple[str, str, str]] = field(default_factory=list)  # (stage, source, destination)


def _instructions(text: str) -> list[tuple[str, str]]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else ["/bin/sh", "-c", args]


def parse_dockerfile(text: str) -> Stage:
    """The final stage of a Dockerfile: ENV (expanded as Docker does), ENTRYPOINT, CMD, apt packages, COPYs.

    `FROM scratch` starts with no environment; `COPY --from=STAGE / /` brings that stage's whole file system
    (its packages and its own COPYs) into the stage.
    """
    stages: dict[str, Stage] = {}
    current = Stage()
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            words = args.split()
            base = stages.get(words[0])
            current = Stage(dict(base.env), list(base.entrypoint), list(base.cmd), list(base.apt_packages),
                            list(base.copied)) if base else Stage(env={}) if words[0] == "scratch" else Stage()
            if len(words) == 3 and words[1].upper() == "AS":
                stages[words[2]] = current
        elif keyword == "ENV":
            pairs = shlex.split(args) if "=" in args.split()[0] else [args.replace(" ", "=", 1)]
            before = dict(current.env)  # one ENV line sees the variables as they were before it
            current.env.update({k: _expand(v, before) for k, _, v in (p.partition("=") for p in pairs)})
        elif keyword == "ENTRYPOINT":
            current.entrypoint, current.cmd = _exec_form(args), []
        elif keyword == "CMD":
            current.cmd = _exec_form(args)
        elif keyword == "RUN":
            for group in re.findall(r"apt-get install ([^&;|]*)", args):
                current.apt_packages += [w for w in group.split() if not w.startswith("-")]
        elif keyword == "COPY" and args.startswith("--from="):
            source_stage, source, destination = args.removeprefix("--from=").split()
            if (source, destination) == ("/", "/"):
                current.apt_packages += stages[source_stage].apt_packages
                current.copied += stages[source_stage].copied
            else:
                current.copied.append((source_stage, source, destination))
    return current


@pytest.fixture(scope="session")
def container_image(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> tuple[Stage, dict[str, Path]]:
    """The image: the Dockerfile's final stage, and the folders it copies from the build stage.

    Each copied folder is built as the build stage does (`python3 -m venv` + pip install of this
    repository, here its wheel), at its real path inside a private mount namespace.
    """
    stage = parse_dockerfile((REPO / "Dockerfile").read_text())
    missing = [p for p in stage.apt_packages
               if subprocess.run(["dpkg-query", "-W", p], capture_output=True).returncode != 0]
    assert not missing, f"the simulated image takes /usr from this host: apt-get install {' '.join(missing)}"
    built: dict[str, Path] = {}
    for _, source, destination in stage.copied:
        out = tmp_path_factory.mktemp("image") / "venv"
        out.mkdir()
        script = (
            "set -eu\n" + _guard()
            + f"mount -t tmpfs -o mode=0755 tmpfs {os.path.dirname(source)}\n"
            f"mkdir {source} && mount --bind {out} {source}\n"
            f"python3 -m venv {source}\n"
            f"{source}/bin/pip install --quiet --no-cache-dir bulwark-vpn\n"
        )
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                env={"PATH": DEFAULT_PATH, **_offline_pip(str(wheelhouse))},
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        built[destination] = out
    return stage, built


def _docker_root_script(rootfs: Path, built: dict[str, Path], config: Path, devices: tuple[str, ...],
                        argv: list[str]) -> str:
    """Shell that assembles the container's root file system as Docker would, then execs `argv` in it."""
    lines = [
        "set -eu", _guard().strip(),
        f"mount -t tmpfs -o mode=0755 tmpfs {rootfs}", f"cd {rootfs}",
        "mkdir -p usr etc config proc sys dev run tmp var/tmp var/lib root",
        "ln -s usr/bin bin && ln -s usr/sbin sbin && ln -s usr/lib lib && ln -s usr/lib64 lib64",
        "ln -s ../run var/run",
        # The image's files: Debian's from this host (read-only), the copied folders from the build stage.
        "for d in usr etc; do mount --rbind /$d $d && mount -o remount,bind,ro $d; done",
    ]
    for destination, source in built.items():
        lines += [f"mkdir -p .{destination}", f"mount --bind {source} .{destination}",
                  f"mount -o remount,bind,ro .{destination}"]
    lines += [
        f"mount --bind {config} config",  # -v DIR:/config
        # runc: its own proc with /proc/sys read-only, a read-only sysfs, private /run and /tmp.
        "mount -t proc proc proc && mount --bind proc/sys proc/sys && mount -o remount,bind,ro proc/sys",
        "mount -t sysfs -o ro sysfs sys",
        "mount -t tmpfs -o mode=0755 tmpfs run && mount -t tmpfs -o mode=1777 tmpfs tmp",
        # Docker's /dev: a few pseudo devices plus the --device ones.
        "mount -t tmpfs -o mode=0755 tmpfs dev",
        "mkdir dev/pts dev/shm && mount -t devpts -o newinstance,ptmxmode=0666 devpts dev/pts",
        "mount -t tmpfs tmpfs dev/shm && ln -s pts/ptmx dev/ptmx && ln -s /proc/self/fd dev/fd",
        "ln -s /proc/self/fd/0 dev/stdin && ln -s /proc/self/fd/1 dev/stdout && ln -s /proc/self/fd/2 dev/stderr",
    ]
    for device in (*(f"/dev/{d}" for d in DOCKER_DEVICES), *devices):
        lines += [f"mkdir -p .{os.path.dirname(device)}", f"touch .{device}", f"mount --bind {device} .{device}"]
    lines.append(f"exec chroot . {shlex.join(argv)}")
    return "\n".join(lines) + "\n"


def _docker_exec(pid: int, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    """`docker exec`: the container's namespaces and root, its environment."""
    return subprocess.run(["nsenter", f"--target={pid}", "--mount", "--net", "--root", "--wd", "--",
                           "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
                          capture_output=True, text=True, timeout=60, check=False)


# `-p 51821:51820/udp`: Docker's DNAT of the published port, here inside the server's namespace.
PUBLISH_RULESET = """
table ip dockersim {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        udp dport 51821 redirect to :51820
    }
}
"""


def test_container_entrypoint_serves_the_notes_docker_run_line(
    netns_factory: NetnsFactory, container_image: tuple[Stage, dict[str, Path]]
) -> None:
    stage, built = container_image
    server, client = netns_factory(), netns_factory()
    veth(server, client, f"{DOCKER_HOST}/24", f"{DOCKER_CLIENT}/24")
    server.run(["nft", "-f", "-"], input=PUBLISH_RULESET.encode())
    # --sysctl net.ipv4.conf.all.src_valid_mark=1; and a Docker host forwards (dockerd turns ip_forward
    # on, new network namespaces inherit it), which matters because /proc/sys is read-only inside.
    server.run(["sysctl", "-qw", "net.ipv4.conf.all.src_valid_mark=1", "net.ipv4.ip_forward=1"])
    config = netns_factory.tmpdir() / "config"
    config.mkdir()
    # The notes' `docker run -e ...` line, on top of the image's ENV (and HOME, which Docker adds).
    # The interface keeps its default name wg0: wireguard-go's socket and Bulwark's state live in the
    # container's own /run (a tmpfs), so parallel tests cannot collide on them, as in Docker.
    env = {**stage.env, "HOME": "/root", "PUID": "1000", "PGID": "1000", "TZ": "Europe/London",
           "PEERS": "leo_mac", "SERVERURL": DOCKER_HOST, "SERVERPORT": "51821", "INTERNAL_SUBNET": "10.13.13.0",
           "PEERDNS": "auto"}
    # --cap-add=NET_ADMIN --cap-add=SYS_MODULE on Docker's defaults.
    caps = ",".join(["-all", *(f"+{c}" for c in (*DOCKER_CAPABILITIES, "net_admin", "sys_module"))])
    argv = ["setpriv", f"--bounding-set={caps}", "--", "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
            *stage.entrypoint, *stage.cmd]
    # This host has no WireGuard kernel module, so the wireguard-go fallback needs the TUN device. The
    # notes' line has no --device: Bulwark creates /dev/net/tun itself (Docker allows it, with CAP_MKNOD).
    script = _docker_root_script(netns_factory.tmpdir(), built, config, (), argv)
    log_path = netns_factory.tmpdir() / "container.log"
    with open(log_path, "wb") as log:
        container = server.popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()

        def up() -> bool:
            assert container.poll() is None, f"the container exited ({container.returncode}):\n{_read(log_path)}"
            return _docker_exec(container.pid, env, "bulwark", "status", "--json").returncode == 0

        _wait_for(up, 30, "the container's gateway up", lambda: _read(log_path))
        up_seconds = time.monotonic() - started
        status = json.loads(_docker_exec(container.pid, env, "bulwark", "status", "--json").stdout)
        assert status["up"] and status["interface"] == "wg0"

        files = {str(p.relative_to(config)) for p in config.rglob("*") if p.is_file()}
        expected = {"wg_confs/wg0.conf", "server/privatekey-server", "server/publickey-server",
                    *(f"peer_leo_mac/{n}" for n in ("peer_leo_mac.conf", "peer_leo_mac.png", "privatekey-peer_leo_mac",
                                                    "publickey-peer_leo_mac", "presharedkey-peer_leo_mac"))}
        assert expected <= files, sorted(files)
        assert (config / "peer_leo_mac/peer_leo_mac.png").read_bytes().startswith(b"\x89PNG")
        peer_config = (config / "peer_leo_mac/peer_leo_mac.conf").read_text()
        assert _field(peer_config, "Endpoint") == f"{DOCKER_HOST}:51821"

        netns_factory.wg_quick_up(client, _without_dns(peer_config))
        assert client.ping(TUNNEL_SERVER, count=3), _read(log_path)
        assert "[#] mknod -m 0600 /dev/net/tun c 10 200" in _read(log_path)

        container.send_signal(signal.SIGTERM)
        assert container.wait(20) == 0, _read(log_path)
        assert server.run(["ip", "link", "show", "wg0"], check=False).returncode != 0
        assert "bulwark" not in server.run(["nft", "list", "tables"]).stdout.decode()
        assert server.pids() == [], "every process of the container is gone"
        assert up_seconds < 30
    finally:
        if container.poll() is None:
            container.kill()
            container.wait(10)
