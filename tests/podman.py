"""Podman for the container tests: a private engine per test session, a local Debian base image, the image
built from this repository's Dockerfile, and podman commands run inside a test's "container host".

- The engine is private: its own storage, run and temporary folders, containers.conf and network
  configuration folder under /var/tmp/bulwark-podman-<pid>-*, given to podman through CONTAINERS_CONF
  and CONTAINERS_STORAGE_CONF. Nothing of this machine's own podman (images, containers, networks,
  /etc/containers) is read or changed, and `Engine.destroy` removes everything, orphans of crashed
  sessions included.
- Its containers.conf is the system's (Debian's default capabilities: no MKNOD, NET_RAW or AUDIT_WRITE)
  plus what this kind of machine needs: runc (crun refuses its hybrid cgroups), ulimits within its hard
  limits, cgroupfs and a file event log (no systemd here).
- No image registry is reachable: `debian:bookworm-slim` is made with mmdebstrap as the official slim
  image is (minbase, merged /usr, no manuals, documentation or translations, apt keeping no cache) and
  imported under its usual name. The root file system is cached for a week in /var/cache/bulwark-tests
  (BULWARK_TEST_FRESH_BASE=1 makes a new one); a fresh machine makes it from scratch.
- A test's container host is a network namespace: podman runs in it (`nsenter --net`), so its bridges,
  published ports and firewall rules live there, and clients in other namespaces reach it over a veth.
  Its containers get namespaces of their own, as on any host.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.netns import Netns

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
CACHE_DIR = Path("/var/cache/bulwark-tests")
BASE_MAX_AGE = 7 * 24 * 3600
ENGINE_PARENT = Path("/var/tmp")
ENGINE_PREFIX = "bulwark-podman-"
SYSTEM_CONFS = (Path("/usr/share/containers/containers.conf"), Path("/etc/containers/containers.conf"))
CNI_ALLOCATIONS = Path("/var/lib/cni/networks")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The official slim images' apt settings: no package cache and no downloaded packages kept.
APT_SLIM = """\
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Keep-Downloaded-Packages "false";
Acquire::Languages "none";
"""
SLIM_EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/info/*", "/usr/share/locale/*",
                 "/usr/share/lintian/*", "/usr/share/linda/*", "/usr/share/groff/*")


def _mmdebstrap_argv(apt_conf: Path, target: Path) -> list[str]:
    argv = ["mmdebstrap", "--variant=minbase", "--quiet", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr"]
    argv += [f"--dpkgopt=path-exclude={p}" for p in SLIM_EXCLUDES]
    argv += ["--dpkgopt=path-include=/usr/share/doc/*/copyright",
             f"--customize-hook=upload {apt_conf} /etc/apt/apt.conf.d/90slim",
             '--customize-hook=rm -f "$1"/var/cache/apt/*.bin',
             "bookworm", str(target)]
    return argv


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def render_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """A TOML file of plain tables (strings, integers, booleans, lists of them)."""
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if not isinstance(value, dict)]
    return "\n".join(lines) + "\n"


def system_containers_conf() -> dict[str, dict[str, Any]]:
    """The tables of this machine's containers.conf files, merged (later files win per key)."""
    merged: dict[str, dict[str, Any]] = {}
    for path in SYSTEM_CONFS:
        if path.exists():
            for table, values in tomllib.loads(path.read_text()).items():
                if isinstance(values, dict):
                    merged.setdefault(table, {}).update({k: v for k, v in values.items() if not isinstance(v, dict)})
    return merged


@dataclass
class Engine:
    """A private podman: storage, configuration and networks under `root`."""

    root: Path
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls) -> Engine:
        root = Path(tempfile.mkdtemp(prefix=f"{ENGINE_PREFIX}{os.getpid()}-", dir=ENGINE_PARENT))
        engine = cls(root)
        engine.write_conf("containers.conf")
        for part in ("storage", "run", "tmp", "cni"):
            (root / part).mkdir()
        (root / "storage.conf").write_text(render_toml({"storage": {
            "driver": "overlay", "graphroot": str(root / "storage"), "runroot": str(root / "run")}}))
        return engine

    def write_conf(self, name: str, **containers: Any) -> Path:
        """A containers.conf for this engine; `containers` adds keys to its [containers] table."""
        tables = system_containers_conf()
        tables.setdefault("containers", {}).update(
            {"default_ulimits": ["nofile=1024:1024", "nproc=4096:4096"], **containers})
        tables.setdefault("engine", {}).update({
            "runtime": "runc", "cgroup_manager": "cgroupfs", "events_logger": "file",
            "tmp_dir": str(self.root / "tmp")})
        tables.setdefault("network", {}).update({"network_config_dir": str(self.root / "cni")})
        path = self.root / name
        path.write_text(render_toml(tables))
        return path

    def env(self, conf: str = "containers.conf") -> dict[str, str]:
        return {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8",
                "CONTAINERS_CONF": str(self.root / conf), "CONTAINERS_STORAGE_CONF": str(self.root / "storage.conf")}

    def run(self, *args: str, ns: Netns | None = None, check: bool = True, timeout: float = 120,
            conf: str = "containers.conf", tool: str = "podman", cwd: Path | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:  # noqa: A002
        """`podman ARGS` (or `tool`) with this engine, inside the network namespace `ns` when given."""
        prefix = ["nsenter", f"--net=/run/netns/{ns.name}"] if ns is not None else []
        result = subprocess.run([*prefix, tool, *args], capture_output=True, text=True, env=self.env(conf),
                                timeout=timeout, check=False, cwd=cwd, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def clear(self, ns: Netns | None) -> None:
        """Remove every pod, container, volume, secret and network of this engine (images stay)."""
        self.run("pod", "rm", "--all", "--force", ns=ns, check=False)
        self.run("rm", "--all", "--force", "--time", "0", ns=ns, check=False)
        self.run("volume", "rm", "--all", "--force", ns=ns, check=False)
        self.run("secret", "rm", "--all", ns=ns, check=False)
        for conf in (self.root / "cni").glob("*.conflist"):
            self.run("network", "rm", "--force", conf.stem, ns=ns, check=False)
            # The CNI address allocator keeps a folder per network name, shared by the whole machine.
            shutil.rmtree(CNI_ALLOCATIONS / conf.stem, ignore_errors=True)

    def destroy(self) -> None:
        """Remove everything this engine holds, then its folder."""
        self.clear(None)
        self.run("rmi", "--all", "--force", check=False, timeout=300)
        for mount in reversed(_mounts_under(self.root)):
            subprocess.run(["umount", "--lazy", mount], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return sorted(p for p in points if p.startswith(prefix))


def remove_orphan_engines() -> None:
    """Destroy the engines of test sessions that no longer run (after a crash)."""
    for entry in ENGINE_PARENT.glob(f"{ENGINE_PREFIX}*"):
        match = re.fullmatch(rf"{ENGINE_PREFIX}(\d+)-.*", entry.name)
        if match and not Path(f"/proc/{match.group(1)}").exists() and (entry / "storage.conf").exists():
            Engine(entry).destroy()


def base_rootfs(scratch: Path) -> Path:
    """The cached root file system of debian:bookworm-slim, made with mmdebstrap when missing or old."""
    apt_conf = scratch / "apt-slim.conf"
    apt_conf.write_text(APT_SLIM)
    recipe = " ".join(_mmdebstrap_argv(Path("APT"), Path("OUT"))) + APT_SLIM
    path = CACHE_DIR / f"debian-bookworm-slim-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}.tar"
    fresh = os.environ.get("BULWARK_TEST_FRESH_BASE") == "1"
    if path.exists() and not fresh and time.time() - path.stat().st_mtime < BASE_MAX_AGE:
        return path
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # mmdebstrap picks the output format from the extension: keep ".tar" last.
    partial = path.with_name(f"partial-{os.getpid()}-{path.name}")
    try:
        result = subprocess.run(_mmdebstrap_argv(apt_conf, partial), capture_output=True, text=True, timeout=900,
                                check=False, env={"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"})
        assert result.returncode == 0, f"mmdebstrap failed:\n{result.stderr[-4000:]}"
        os.replace(partial, path)  # atomic: a concurrent session sees the old file or the whole new one
    finally:
        partial.unlink(missing_ok=True)
    return path


def import_base(engine: Engine) -> None:
    """`debian:bookworm-slim` in the engine, with the official image's CMD and PATH."""
    rootfs = base_rootfs(engine.root)
    engine.run("import", "--quiet", "--change", 'CMD ["bash"]', "--change", f"ENV PATH={DEFAULT_PATH}",
               str(rootfs), BASE_IMAGE)


def ca_bundle() -> Path:
    """This machine's CA bundle (pip inside the build must trust the same authorities)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise AssertionError("no CA bundle found: apt-get install ca-certificates")


def build_image(engine: Engine, tag: str, build_args: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """`podman build` of this repository's Dockerfile, in Docker's image format (which keeps HEALTHCHECK).

    pip in the build trusts this machine's CA bundle through a pip.conf mounted for the build's RUN
    steps only: nothing of it lands in a layer, and the Dockerfile stays as users run it.
    """
    pip_conf = engine.root / "build-pip.conf"
    pip_conf.write_text("[global]\ncert = /etc/ssl/bulwark-build-ca.crt\n")
    args = ["build", "--format", "docker", "--network", "host", "--tag", tag,
            "--volume", f"{pip_conf}:/etc/pip.conf:ro",
            "--volume", f"{ca_bundle()}:/etc/ssl/bulwark-build-ca.crt:ro"]
    for arg in build_args:
        args += ["--build-arg", arg]
    return engine.run(*args, str(REPO), timeout=900)
