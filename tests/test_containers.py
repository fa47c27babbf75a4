"""The image in a real container runtime: podman from Debian, as root, each test on a container host of
its own (a network namespace where podman runs; see tests/podman.py).

- The image is built from this repository's Dockerfile on a local debian:bookworm-slim, and holds every
  tool a user needs, and the API, in under 150 MB: every module of Bulwark imports in it, from compiled
  files, and no dependency misses a source it reads.
- The notes' `docker run` line (PEERS=leo_mac, SERVERPORT=51821 for `-p 51821:51820/udp`, the /config
  volume, the src_valid_mark sysctl) runs with podman, plus `--device /dev/net/tun` (podman's default
  capabilities have no MKNOD). A wg-quick client in another namespace connects through the published port
  and reaches the gateway and a private host behind it: a container on the gateway's own network that
  the client cannot reach without the tunnel. A peer added with `exec` applies live while pings flow.
- The API, served by default, answers a connected client through the tunnel (a peer made over it applies
  live) and nothing on the container host's network without it, not even with a route to the tunnel
  subnet through the container; `BULWARK_SERVE=false` turns it off, and `bulwark serve` with TLS in the
  gateway's network namespace publishes it on purpose.
- `podman stop` leaves no link, table or process; a restart on the same volume keeps every key and
  address, and the client reconnects with its config untouched.
- The image's HEALTHCHECK reports healthy while the tunnel is up and unhealthy when its data plane is
  gone, then healthy again once the gateway repairs it.
- The `bulwark deploy docker` compose file runs with podman-compose; the Kubernetes Deployment's pod
  runs with `podman kube play` (see `test_kubernetes_pod_runs_with_podman_kube_play` for podman 4.3's
  limits).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import bulwark, snapshot
from tests.netns import Netns, NetnsFactory, veth
from tests.podman import BASE_IMAGE, Engine, build_image, import_base, remove_orphan_engines

pytestmark = [pytest.mark.container, pytest.mark.netns, pytest.mark.timeout(600)]

IMAGE = "localhost/bulwark-vpn:test"
IMAGE_SIZE_LIMIT = 150_000_000
HOST = "192.0.2.1"  # the container host's address, as clients see it
CLIENT = "192.0.2.2"
TUNNEL_SERVER = "10.13.13.1"
REQUIRED = ("podman", "runc", "conmon", "mmdebstrap", "podman-compose", "catatonit", "nsenter")
_COUNTER = itertools.count(1)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str, details: Callable[[], str] = str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g} s\n{details()}")


@pytest.fixture(scope="session")
def engine(_netns_session: None) -> Iterator[Engine]:
    """A private podman with the local debian:bookworm-slim, destroyed at the end of the session."""
    missing = [tool for tool in REQUIRED if shutil.which(tool) is None and not Path(f"/usr/libexec/podman/{tool}")
               .exists()]
    if missing:
        pytest.fail(f"missing container tools: {', '.join(missing)}: run `make test` (it installs them)")
    remove_orphan_engines()
    created = Engine.create()
    try:
        started = time.monotonic()
        import_base(created)
        created.timings["base image"] = time.monotonic() - started
        yield created
    finally:
        created.destroy()


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    """The image built from the repository's Dockerfile."""
    started = time.monotonic()
    build_image(engine, IMAGE)
    engine.timings["build"] = time.monotonic() - started
    return IMAGE


@dataclass
class Site:
    """One test's container host: podman's namespace, a client namespace on a veth, a network with a
    private host on it."""

    engine: Engine
    factory: NetnsFactory
    host: Netns
    client: Netns
    prefix: str
    network: str = ""
    private_ip: str = ""

    def podman(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.engine.run(*args, ns=self.host, **kwargs)

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def container_ip(self, name: str) -> str:
        shown = self.podman("inspect", name, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}")
        return shown.stdout.split()[0]

    def status(self, container: str) -> dict[str, Any] | None:
        shown = self.podman("exec", container, "bulwark", "status", "--json", check=False)
        return json.loads(shown.stdout) if shown.returncode == 0 else None

    def wait_up(self, container: str, timeout: float = 30) -> dict[str, Any]:
        status: dict[str, Any] = {}

        def up() -> bool:
            status.update(self.status(container) or {})
            return bool(status.get("up") and status.get("backend"))

        _wait_for(up, timeout, f"{container} up", lambda: self.logs(container))
        return status

    def wait_for_api(self, container: str, timeout: float = 20) -> None:
        """Until the API answers on the container's loopback, asked as the docs say (`exec ... curl`)."""
        argv = ("exec", container, "curl", "-fsS", "--max-time", "2", "http://127.0.0.1:8080/api/v1/health")
        _wait_for(lambda: self.podman(*argv, check=False).stdout.strip() == '{"ok":true}', timeout,
                  f"the API of {container}", lambda: self.logs(container))

    def logs(self, container: str) -> str:
        shown = self.podman("logs", container, check=False)
        return shown.stdout + shown.stderr

    def client_config(self, container: str, endpoint: str) -> str:
        """`bulwark peer show leo_mac --endpoint ...` in the container, without DNS= (needs resolvconf)."""
        shown = self.podman("exec", container, "bulwark", "peer", "show", "leo_mac", "--endpoint", endpoint)
        return "".join(line for line in shown.stdout.splitlines(keepends=True) if not line.startswith("DNS"))

    def reaches(self, address: str, count: int = 1) -> bool:
        return self.client.ping(address, count=count, timeout=2)


@pytest.fixture
def site(engine: Engine, image: str, netns_factory: NetnsFactory) -> Iterator[Site]:
    host, client = netns_factory(), netns_factory()
    veth(host, client, f"{HOST}/24", f"{CLIENT}/24")
    built = Site(engine, netns_factory, host, client, f"bwt{os.getpid()}n{next(_COUNTER)}")
    try:
        built.network = built.name("net")
        built.podman("network", "create", built.network)
        private = built.name("private")
        built.podman("run", "-d", "--name", private, "--network", built.network, BASE_IMAGE, "sleep", "infinity")
        built.private_ip = built.container_ip(private)
        yield built
    finally:
        # podman's own clean-up first, from the host namespace that holds the bridges and port rules.
        engine.clear(host)


def notes_run_line(site: Site, name: str, config: Path, *, device: bool = True, detach: bool = True,
                   extra: Sequence[str] = ()) -> list[str]:
    """The notes' `docker run` line (SERVERPORT as the published port), with this test's names, plus `extra`
    options.

    Added: `--device /dev/net/tun` (podman's default capabilities lack MKNOD) and `--network`. On a host
    without /lib/modules (such as this one) an empty folder stands in: Docker would create the missing
    folder, podman refuses it.
    """
    modules = "/lib/modules"
    if not Path(modules).is_dir():
        modules = str(site.factory.tmpdir())
    argv = ["run", *(["-d"] if detach else []), "--rm", f"--name={name}",
            "--cap-add=NET_ADMIN", "--cap-add=SYS_MODULE",
            "-e", "PUID=1000", "-e", "PGID=1000", "-e", "TZ=Europe/London",
            "-e", "PEERS=leo_mac", "-e", "SERVERURL=0.0.0.0", "-e", "SERVERPORT=51821",
            "-e", "INTERNAL_SUBNET=10.13.13.0", "-e", "PEERDNS=auto",
            "-p", "51821:51820/udp",
            "-v", f"{config}:/config", "-v", f"{modules}:/lib/modules",
            "--sysctl=net.ipv4.conf.all.src_valid_mark=1"]
    if device:
        argv.append("--device=/dev/net/tun")
    return [*argv, *extra, f"--network={site.network}", IMAGE]


def start_gateway(site: Site, name: str, config: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    site.podman(*notes_run_line(site, name, config, extra=extra))
    return site.wait_up(name)


def _ping_summary(output: str) -> tuple[int, int]:
    match = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert match, output
    return int(match.group(1)), int(match.group(2))


def _host_pid(site: Site, container: str) -> int:
    return int(site.podman("inspect", container, "--format", "{{.State.Pid}}").stdout)


def _child(pid: int, comm: str) -> int:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses, so split at the last ')'.
        name, _, rest = text.partition("(")[2].rpartition(")")
        if int(rest.split()[1]) == pid and name == comm:
            return int(stat.parent.name)
    raise AssertionError(f"no {comm} process under {pid}")


# --- the image --------------------------------------------------------------------------------------------


# Run in the image: import every module of Bulwark (the API's included), recording every source file read
# through linecache (inspect.getsource's funnel) and every imported module that would be compiled at each
# start because it has no compiled file. Prints a JSON summary; a module that fails to import fails the run.
IMPORT_EVERY_MODULE = """
import importlib, json, linecache, os, pathlib, sys
import bulwark_vpn
root = pathlib.Path(bulwark_vpn.__file__).parent
names = []
for path in sorted(root.rglob("*.py")):
    parts = path.relative_to(root.parent).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    if parts[-1] != "__main__":
        names.append(".".join(parts))
read = []
update = linecache.updatecache
linecache.updatecache = lambda name, module_globals=None: (read.append(name), update(name, module_globals))[1]
for name in names:
    importlib.import_module(name)
linecache.updatecache = update
specs = [m.__spec__ for m in list(sys.modules.values()) if getattr(m, "__spec__", None)]
uncompiled = sorted(s.name for s in specs if s.has_location and s.origin.endswith(".py")
                    and not (s.cached and os.path.exists(s.cached)))
print(json.dumps({"modules": names, "loaded": len(sys.modules), "sources_missing":
                  [n for n in read if not (n.endswith(".py") and os.path.exists(n))], "uncompiled": uncompiled}))
"""


def test_image_is_small_and_has_every_tool_a_user_needs(site: Site) -> None:
    size = int(site.podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout)
    tools = ("bulwark", "wg", "wg-quick", "wireguard-go", "nft", "qrencode", "ip", "ss", "sysctl", "ping", "bash",
             "curl")
    script = (
        f"for t in {' '.join(tools)}; do command -v $t >/dev/null || echo missing: $t; done\n"
        # The DNS forwarder and the QR codes come from the package itself.
        "python3 -c 'import bulwark_vpn.dataplane.dns, dnslib, segno, cryptography, yaml' || echo missing: python\n"
        # No build tooling or caches in the final stage.
        "for p in /opt/bulwark/bin/pip /usr/bin/strip /var/lib/apt/lists/partial /root/.cache/pip \\\n"
        "    /tmp/trim_python.py; do\n"
        "  [ -e $p ] && echo leftover: $p; done\n"
        "ls /var/lib/apt/lists /var/cache/apt/archives | grep -q '\\.deb$\\|_Packages' && echo leftover: apt\n"
        "bulwark --help >/dev/null || echo broken: bulwark\n"
    )
    checked = site.podman("run", "--rm", "--network=none", "--entrypoint", "sh", IMAGE, "-c", script)
    assert checked.stdout.strip() == "", checked.stdout
    inspected = json.loads(site.podman("image", "inspect", IMAGE).stdout)[0]
    config = inspected["Config"]
    assert inspected["Healthcheck"]["Test"] == ["CMD", "bulwark", "status", "--json"]  # Docker's format keeps it
    assert config["Entrypoint"] == ["bulwark"] and config["Cmd"] == ["up", "--foreground"]
    assert size < IMAGE_SIZE_LIMIT, f"the image is {size / 1e6:.1f} MB"

    # The trimmed Python still has everything Bulwark imports: every module of the package (the API, its
    # pages and the DNS forwarder included) imports, no dependency reads a source the trimming removed, and
    # every module loaded runs from a compiled file (nothing is compiled again at each start).
    imported = site.podman("run", "--rm", "--network=none", "--entrypoint", "python3", IMAGE, "-c",
                           IMPORT_EVERY_MODULE, check=False)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    found = json.loads(imported.stdout)
    assert {"bulwark_vpn.web.app", "bulwark_vpn.web.server", "bulwark_vpn.dataplane.dns", "bulwark_vpn.cli"} <= set(
        found["modules"]) and len(found["modules"]) > 70, found["modules"]
    assert found["sources_missing"] == [], found["sources_missing"]
    assert found["uncompiled"] == [], found["uncompiled"]
    print(f"image {size / 1e6:.1f} MB; {len(found['modules'])} modules of Bulwark import ({found['loaded']} "
          f"loaded); timings: {site.engine.timings}")


# --- the notes' docker run line ---------------------------------------------------------------------------


def test_notes_docker_run_line_serves_a_client_and_the_private_host_behind_it(site: Site) -> None:
    config = site.factory.tmpdir() / "wireguard-config"
    config.mkdir()
    gateway = site.name("gw")
    status = start_gateway(site, gateway, config)
    assert status["interface"] == "wg0" and status["backend"] == "userspace"

    files = {str(p.relative_to(config)) for p in config.rglob("*") if p.is_file()}
    assert {"wg_confs/wg0.conf", "server/privatekey-server", "peer_leo_mac/peer_leo_mac.conf",
            "peer_leo_mac/peer_leo_mac.png", "peer_leo_mac/presharedkey-peer_leo_mac"} <= files, sorted(files)
    assert "Endpoint = 0.0.0.0:51821" in (config / "peer_leo_mac/peer_leo_mac.conf").read_text()

    # Before the tunnel, neither the gateway's tunnel address nor the private host answers.
    assert not site.reaches(TUNNEL_SERVER) and not site.reaches(site.private_ip)
    iface = site.factory.wg_quick_up(site.client, site.client_config(gateway, f"{HOST}:51821"))
    assert site.reaches(TUNNEL_SERVER, count=2)
    assert site.reaches(site.private_ip, count=2), "the private host behind the gateway"

    # A live `peer add` while the client pings the private host: nothing lost, no new handshake needed.
    # (By name: `wg show all` also lists the wireguard-go interfaces of other namespaces on this machine.)
    handshake_before = site.client.run(["wg", "show", iface, "latest-handshakes"]).stdout.split()[-1]
    pinger = site.client.popen(["ping", "-n", "-i", "0.2", "-c", "20", "-W", "1", site.private_ip],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    added = site.podman("exec", gateway, "bulwark", "peer", "add", "bob")
    assert "added peer bob (10.13.13.3)" in added.stderr
    output, _ = pinger.communicate(timeout=30)
    assert _ping_summary(output) == (20, 20), output
    assert site.client.run(["wg", "show", iface, "latest-handshakes"]).stdout.split()[-1] == handshake_before
    peers = site.podman("exec", gateway, "wg", "show", "wg0", "allowed-ips").stdout
    assert "10.13.13.3/32" in peers and "10.13.13.2/32" in peers
    assert (config / "peer_bob/peer_bob.conf").exists()

    assert site.podman("healthcheck", "run", gateway, check=False).returncode == 0


def test_without_the_tun_device_the_gateway_says_what_to_pass(site: Site) -> None:
    config = site.factory.tmpdir() / "config"
    config.mkdir()
    # podman's default capabilities have no MKNOD: Bulwark cannot create /dev/net/tun, and says so.
    started = site.podman(*notes_run_line(site, site.name("gw"), config, device=False, detach=False),
                          check=False, timeout=60)
    assert started.returncode != 0
    output = started.stdout + started.stderr
    assert "[#] mknod -m 0600 /dev/net/tun c 10 200" in output
    assert "pass the device (docker run --device /dev/net/tun)" in output, output
    assert "Traceback" not in output


# --- the API in the container ----------------------------------------------------------------------------

API = f"http://{TUNNEL_SERVER}:8080"
PASSWORD = "correct horse battery staple"
# One HTTP request, made by this machine's Python from inside a namespace; prints the status (0: no answer)
# and the body. The token reaches it through argv of this helper, never of Bulwark.
HTTP = """
import json, ssl, sys, urllib.error, urllib.request
method, url, token, body, cafile, timeout = sys.argv[1:7]
data = body.encode() if body else None
request = urllib.request.Request(url, data=data, method=method)
if token:
    request.add_header("Authorization", "Bearer " + token)
if data:
    request.add_header("Content-Type", "application/json")
context = ssl.create_default_context(cafile=cafile) if cafile else None
try:
    with urllib.request.urlopen(request, timeout=float(timeout), context=context) as answer:
        print(answer.status); sys.stdout.write(answer.read().decode())
except urllib.error.HTTPError as error:
    print(error.code); sys.stdout.write(error.read().decode())
except OSError as error:
    print(0); sys.stdout.write(str(error))
"""


def call(ns: Netns, method: str, url: str, token: str = "", body: object = None, cafile: Path | None = None,
         timeout: float = 3) -> tuple[int, str]:
    """(status, body) of one request from inside `ns`; status 0 when nothing answered within `timeout`."""
    argv = [sys.executable, "-c", HTTP, method, url, token, json.dumps(body) if body is not None else "",
            str(cafile or ""), str(timeout)]
    result = ns.run(argv, check=False, timeout=timeout + 20)
    status, _, text = result.stdout.decode().partition("\n")
    return int(status or 0), text


def _admin_token(site: Site, container: str) -> str:
    """The first admin, made as the docs say (`exec ... user add --password-stdin`), and an admin token."""
    site.podman("exec", "-i", container, "bulwark", "user", "add", "boss", "--admin", "--password-stdin",
                input=PASSWORD + "\n")
    created = site.podman("exec", container, "bulwark", "token", "create", "--name", "ci", "--scope", "admin",
                          "--user", "boss")
    return created.stdout.strip()


def _listening(site: Site, container: str) -> str:
    return site.podman("exec", container, "ss", "-Hltn").stdout


def test_the_api_is_served_through_the_tunnel_only(site: Site) -> None:
    config = site.factory.tmpdir() / "config"
    config.mkdir()
    gateway = site.name("gw")
    start_gateway(site, gateway, config)
    site.wait_for_api(gateway)
    # The notes' line publishes the WireGuard port only; the API listens on the loopback and the tunnel address.
    assert site.podman("port", gateway).stdout.split() == ["51820/udp", "->", "0.0.0.0:51821"]
    listening = _listening(site, gateway)
    assert "127.0.0.1:8080" in listening and f"{TUNNEL_SERVER}:8080" in listening, listening
    assert "0.0.0.0:8080" not in listening and "*:8080" not in listening, listening

    # Without the tunnel, nothing on the container host's network reaches it: not the client, on the host's
    # published address or the tunnel address, and not the container host itself, even with a route to the
    # tunnel subnet through the gateway container (ping shows that route works: only the API port is closed).
    assert call(site.client, "GET", f"http://{HOST}:8080/api/v1/health")[0] == 0
    assert call(site.client, "GET", f"{API}/api/v1/health")[0] == 0
    site.host.ip("route", "add", "10.13.13.0/24", "via", site.container_ip(gateway))
    assert site.host.ping(TUNNEL_SERVER), "the route to the tunnel address through the container"
    assert call(site.host, "GET", f"{API}/api/v1/health")[0] == 0
    assert call(site.host, "GET", f"http://{site.container_ip(gateway)}:8080/api/v1/health")[0] == 0

    # The first admin and a token, through exec; then a connected client uses the API through the tunnel.
    token = _admin_token(site, gateway)
    assert token.startswith("bwk_")
    site.factory.wg_quick_up(site.client, site.client_config(gateway, f"{HOST}:51821"))
    status, body = call(site.client, "GET", f"{API}/api/v1/health")
    assert (status, json.loads(body)) == (200, {"ok": True}), body
    assert call(site.client, "POST", f"{API}/api/v1/peers", "", {"names": ["eve"]})[0] == 401
    status, body = call(site.client, "POST", f"{API}/api/v1/peers", token, {"names": ["bob"]})
    assert status == 201, body
    # The peer is live on the device and in the /config volume, and the container is still healthy.
    assert "10.13.13.3/32" in site.podman("exec", gateway, "wg", "show", "wg0", "allowed-ips").stdout
    assert (config / "peer_bob" / "peer_bob.conf").exists()
    status, text = call(site.client, "GET", f"{API}/api/v1/peers/bob/config", token)
    assert status == 200 and text.startswith("[Interface]"), text
    # From the container host, as the docs say: curl in the container, the header (token) on its stdin.
    listed = site.podman("exec", "-i", gateway, "curl", "-fsS", "-H", "@-", "http://127.0.0.1:8080/api/v1/peers",
                         input=f"Authorization: Bearer {token}\n")
    assert sorted(p["name"] for p in json.loads(listed.stdout)["peers"]) == ["bob", "leo_mac"], listed.stdout
    checked = site.podman("healthcheck", "run", gateway, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Traceback" not in site.logs(gateway)


def _self_signed(folder: Path, address: str) -> tuple[Path, Path]:
    """A self-signed certificate for `address` and its key, as PEM files (the key mode 0600)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(mode=0o700, exist_ok=True)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_serve_false_turns_the_api_off_and_a_deliberate_tls_listener_publishes_it(site: Site) -> None:
    config = site.factory.tmpdir() / "config"
    config.mkdir()
    gateway = site.name("gw")
    # The documented way to publish the API: the gateway's own API off, its network namespace publishing
    # 8443/tcp, and `bulwark serve` with TLS in a second container on that namespace and the same volume.
    start_gateway(site, gateway, config, extra=["-e", "BULWARK_SERVE=false", "-p", "8443:8443/tcp"])
    assert ":8080" not in _listening(site, gateway)
    iface = site.factory.wg_quick_up(site.client, site.client_config(gateway, f"{HOST}:51821"))
    assert site.reaches(TUNNEL_SERVER)
    assert call(site.client, "GET", f"{API}/api/v1/health")[0] == 0, "closed through the tunnel"
    site.factory.wg_quick_down(iface)
    token = _admin_token(site, gateway)

    tls = site.factory.tmpdir() / "tls"
    cert, _ = _self_signed(tls, HOST)
    api = site.name("api")
    site.podman("run", "-d", "--rm", f"--name={api}", f"--network=container:{gateway}", "-v", f"{config}:/config",
                "-v", f"{tls}:/tls:ro", IMAGE, "serve", "--listen", "0.0.0.0:8443", "--tls-cert", "/tls/cert.pem",
                "--tls-key", "/tls/key.pem")
    url = f"https://{HOST}:8443/api/v1"
    _wait_for(lambda: call(site.client, "GET", f"{url}/health", cafile=cert)[0] == 200, 30, "the TLS listener",
              lambda: site.logs(api))
    status, body = call(site.client, "GET", f"{url}/peers", token, cafile=cert)
    assert status == 200 and [p["name"] for p in json.loads(body)["peers"]] == ["leo_mac"], body
    # Plain HTTP on that port, and the gateway's own API port, get nothing.
    assert call(site.client, "GET", f"http://{HOST}:8443/api/v1/health")[0] == 0
    assert call(site.client, "GET", f"http://{HOST}:8080/api/v1/health")[0] == 0


# --- stop and restart -------------------------------------------------------------------------------------


def _netns_inode(fd: int) -> int:
    return os.fstat(fd).st_ino


def _processes_in(fd: int) -> list[int]:
    inode = _netns_inode(fd)
    found = []
    for entry in Path("/proc").glob("[0-9]*/ns/net"):
        try:
            if entry.stat().st_ino == inode:
                found.append(int(entry.parent.parent.name))
        except OSError:
            continue
    return found


def _in_netns(fd: int, *argv: str) -> str:
    return subprocess.run(["nsenter", f"--net=/proc/{os.getpid()}/fd/{fd}", *argv], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def test_stop_leaves_nothing_and_a_restart_keeps_keys_addresses_and_the_client(site: Site) -> None:
    config = site.factory.tmpdir() / "config"
    config.mkdir()
    gateway = site.name("gw")
    start_gateway(site, gateway, config)
    client_conf = site.client_config(gateway, f"{HOST}:51821")
    site.factory.wg_quick_up(site.client, client_conf)
    assert site.reaches(TUNNEL_SERVER)
    before, before_rows = snapshot(config), _store_rows(config)
    pid = _host_pid(site, gateway)
    userspace = _child(pid, "wireguard-go")
    logs = subprocess.Popen(["nsenter", f"--net=/run/netns/{site.host.name}", "podman", "logs", "--follow", gateway],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=site.engine.env())
    # Hold the container's network namespace open, to look inside once the container is gone.
    sandbox = site.podman("inspect", gateway, "--format", "{{.NetworkSettings.SandboxKey}}").stdout.strip()
    held = os.open(sandbox, os.O_RDONLY)
    try:
        assert "wg0" in _in_netns(held, "ip", "-brief", "link")
        started = time.monotonic()
        site.podman("stop", gateway)
        stop_seconds = time.monotonic() - started
        log, _ = logs.communicate(timeout=30)
        assert "SIGTERM received, bringing wg0 down" in log, log
        assert stop_seconds < 8, f"stop took {stop_seconds:.1f} s: Bulwark did not end on SIGTERM"
        assert "wg0" not in _in_netns(held, "ip", "-brief", "link")
        assert "bulwark" not in _in_netns(held, "nft", "list", "tables")
        assert _processes_in(held) == [], "no process left in the container's network namespace"
        assert not Path(f"/proc/{pid}").exists() and not Path(f"/proc/{userspace}").exists()
    finally:
        os.close(held)
        if logs.poll() is None:
            logs.kill()
    # The published port is gone from the host; the container is gone (--rm).
    assert "51821" not in site.host.run(["nft", "list", "ruleset"]).stdout.decode()
    assert site.podman("container", "exists", gateway, check=False).returncode == 1

    # The same line on the same volume: every key, address and file as it was. The store's file itself changes
    # (the gateway keeps where each peer was last seen, and traffic, in it): its settings and peers do not.
    start_gateway(site, gateway, config)
    assert _files_but_the_store(snapshot(config)) == _files_but_the_store(before)
    assert _store_rows(config) == before_rows
    assert site.client_config(gateway, f"{HOST}:51821") == client_conf
    # The client, untouched, is back at once: the gateway starts the handshake to where it was last seen (without
    # that, the client would wait for its own retry, about 15 s).
    seconds = _wait_for(lambda: site.reaches(TUNNEL_SERVER), 40, "the client reconnecting after the restart")
    assert site.reaches(site.private_ip)
    print(f"stop {stop_seconds:.1f} s; client back {seconds:.1f} s after the restarted gateway was up")
    assert seconds < 5, f"the client waited {seconds:.1f} s: the gateway did not reconnect it"


def _files_but_the_store(files: dict[str, tuple[bytes, int]]) -> dict[str, tuple[bytes, int]]:
    return {name: value for name, value in files.items() if not name.startswith("bulwark.db")}


def _store_rows(config: Path) -> dict[str, list[tuple]]:
    """The store's settings, peers, addresses and server key (not the revision, endpoints, traffic or logs)."""
    conn = sqlite3.connect(f"{(config / 'bulwark.db').as_uri()}?mode=ro", uri=True)
    try:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)  # noqa: S608 - fixed
                for table in ("settings", "peers", "free_offsets")} | {
            "meta": sorted(conn.execute("SELECT * FROM meta WHERE key != 'revision'").fetchall())}
    finally:
        conn.close()


# --- HEALTHCHECK ------------------------------------------------------------------------------------------


def _health(site: Site, container: str) -> dict[str, Any]:
    return json.loads(site.podman("inspect", container, "--format", "{{json .State.Health}}").stdout)


def test_healthcheck_follows_the_data_plane(site: Site) -> None:
    config = site.factory.tmpdir() / "config"
    config.mkdir()
    gateway = site.name("gw")
    start_gateway(site, gateway, config)
    checked = site.podman("healthcheck", "run", gateway, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert _health(site, gateway)["Status"] == "healthy"

    # Failures only count after the image's start period (20 s), as for any HEALTHCHECK.
    started_at = site.podman("inspect", gateway, "--format", "{{.State.StartedAt.Unix}}").stdout.strip()
    time.sleep(max(0.0, int(started_at) + 21 - time.time()))
    # The data plane gone: the supervisor frozen (so it cannot repair), wireguard-go killed, wg0 gone.
    supervisor = _host_pid(site, gateway)
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.kill(_child(supervisor, "wireguard-go"), signal.SIGKILL)
        _wait_for(lambda: site.podman("exec", gateway, "ip", "link", "show", "wg0", check=False).returncode != 0,
                  10, "wg0 to disappear")
        for _ in range(3):  # the image's --retries=3
            failed = site.podman("healthcheck", "run", gateway, check=False)
            assert failed.returncode == 1 and "unhealthy" in failed.stdout, failed.stdout + failed.stderr
        health = _health(site, gateway)
        assert health["Status"] == "unhealthy" and health["FailingStreak"] == 3, health
    finally:
        os.kill(supervisor, signal.SIGCONT)
    # The supervisor restarts wireguard-go and the check passes again.
    _wait_for(lambda: site.podman("healthcheck", "run", gateway, check=False).returncode == 0, 20,
              "healthy again", lambda: site.logs(gateway))
    assert _health(site, gateway)["Status"] == "healthy"
    logs = site.podman("logs", gateway)
    assert "wireguard-go for wg0 exited" in logs.stdout + logs.stderr


# --- the deploy bundles -----------------------------------------------------------------------------------


def _store_with_peer(site: Site) -> Path:
    store = site.factory.tmpdir() / "store"
    bulwark("init", "--config-dir", str(store), "--peers", "leo_mac", "--server-url", HOST)
    return store


def test_compose_file_from_deploy_docker_runs_with_podman_compose(site: Site) -> None:
    out = site.factory.tmpdir() / "deploy"
    bulwark("deploy", "docker", "--config-dir", str(_store_with_peer(site)), "--out", str(out), "--image", IMAGE)
    compose = yaml.safe_load((out / "compose.yaml").read_text())
    assert compose["services"]["bulwark"]["image"] == IMAGE
    project = site.name("compose")
    up = site.podman("-p", project, "up", "-d", tool="podman-compose", cwd=out, check=False, timeout=120)
    try:
        assert up.returncode == 0 and not re.search(r"exit code: [1-9]", up.stdout), up.stdout + up.stderr
        status = site.wait_up("bulwark")
        assert status["listen_port"] == 51820
        site.factory.wg_quick_up(site.client, site.client_config("bulwark", f"{HOST}:51820"))
        assert site.reaches(TUNNEL_SERVER, count=2)
        sysctl = site.podman("exec", "bulwark", "cat", "/proc/sys/net/ipv4/conf/all/src_valid_mark").stdout
        assert sysctl.strip() == "1"
        assert (out / "config" / "wg_confs" / "wg0.conf").exists(), "state in the compose file's ./config"
    finally:
        down = site.podman("-p", project, "down", tool="podman-compose", cwd=out, check=False, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert site.podman("container", "exists", "bulwark", check=False).returncode == 1


# --- Kubernetes -------------------------------------------------------------------------------------------


def _podman_version(site: Site) -> tuple[int, ...]:
    shown = site.podman("version", "--format", "{{.Client.Version}}").stdout.strip()
    return tuple(int(part) for part in re.findall(r"\d+", shown)[:3])


def kube_play_documents(bundle: str, version: tuple[int, ...], pod_name: str) -> list[dict[str, Any]]:
    """What `podman kube play` gets: the rendered ConfigMap, claim and Deployment.

    podman before 4.4 gives init containers the pod's restart policy: with a Deployment's `Always` the
    sysctl initContainer re-runs forever and the pod never starts (fixed in podman 4.4.0). There the
    Deployment's own pod template is played as a Pod with `restartPolicy: OnFailure`, unchanged otherwise.
    Namespace, Service and NetworkPolicy are left out: kube play does not implement them.
    """
    documents = [d for d in yaml.safe_load_all(bundle) if d]
    kept = [d for d in documents if d["kind"] in ("ConfigMap", "PersistentVolumeClaim")]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    if version >= (4, 4):
        return [*kept, deployment]
    template = deployment["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name, "labels": template["metadata"]["labels"]},
           "spec": {**template["spec"], "restartPolicy": "OnFailure"}}
    return [*kept, pod]


def test_kubernetes_pod_runs_with_podman_kube_play(site: Site) -> None:
    """The Deployment's pod: sysctl initContainer, capabilities (all dropped but NET_ADMIN and
    NET_BIND_SERVICE), read-only root, liveness probe, /config on the claim. kube play publishes the
    containerPort on the host, where the client connects.

    `--storage secret` is not played: podman before 4.4 mounts a Secret's values still base64-encoded
    (podman issues 16269 and 16625), so the seeded store is unreadable there.

    This machine has no WireGuard kernel module, which Kubernetes nodes need (pods get no /dev/net/tun):
    in its place the runtime passes /dev/net/tun to the pod's containers (containers.conf `devices`), so
    the gateway runs wireguard-go.
    """
    out = site.factory.tmpdir() / "k8s"
    bulwark("deploy", "kubernetes", "--config-dir", str(_store_with_peer(site)), "--out", str(out),
            "--image", IMAGE, "--server-url", HOST)
    version = _podman_version(site)
    pod_name = site.name("kube")
    manifest = out / "play.yaml"
    manifest.write_text(yaml.safe_dump_all(kube_play_documents((out / "bulwark.yaml").read_text(), version,
                                                               pod_name)))
    conf = "containers-kube.conf"
    site.engine.write_conf(conf, devices=["/dev/net/tun:/dev/net/tun:rwm"])
    played = site.engine.run("kube", "play", "--network", site.network, str(manifest), ns=site.host, conf=conf,
                             check=False, timeout=120)
    try:
        assert played.returncode == 0, played.stdout + played.stderr
        pods = json.loads(site.podman("pod", "ps", "--format", "json").stdout)
        name = next(p["Name"] for p in pods if p["Name"] != "")
        gateway = f"{name}-bulwark"
        site.wait_up(gateway)
        # The initContainer ran once and set forwarding in the pod's network namespace.
        assert site.podman("exec", gateway, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
        containers = {c["Names"][0] for c in json.loads(site.podman("ps", "-a", "--format", "json").stdout)}
        assert f"{name}-sysctls" not in containers, "the once initContainer is removed after it ran"
        proc = Path(f"/proc/{_host_pid(site, gateway)}/status").read_text()
        assert re.search(r"(?m)^CapEff:\s*0000000000001400$", proc), proc  # NET_ADMIN + NET_BIND_SERVICE
        assert re.search(r"(?m)^NoNewPrivs:\s*1$", proc)
        touched = site.podman("exec", gateway, "touch", "/probe", check=False)
        assert touched.returncode != 0 and "Read-only file system" in touched.stderr
        assert site.podman("healthcheck", "run", gateway, check=False).returncode == 0, "the liveness probe"

        site.factory.wg_quick_up(site.client, site.client_config(gateway, f"{HOST}:51820"))
        assert site.reaches(TUNNEL_SERVER, count=2)
        assert site.reaches(site.private_ip), "the private host, through the pod"
    finally:
        site.engine.run("kube", "down", str(manifest), ns=site.host, conf=conf, check=False, timeout=120)
