"""WireGuard links and their backends: the kernel module, or wireguard-go in userspace.

This module owns creating and deleting the WireGuard interface itself: `ip link add IFACE type
wireguard` for the kernel, or a `wireguard-go IFACE` process with its control socket in
/var/run/wireguard/IFACE.sock. It also offers wireguard-go as a foreground child process
(`start_userspace_foreground`) for a supervisor that watches and restarts it.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Literal

from bulwark_vpn.dataplane.runner import Runner, format_failure, missing_command_hint
from bulwark_vpn.errors import ConflictError, SystemActionError
from bulwark_vpn.values import parse_interface_name

LOGGER = logging.getLogger("bulwark_vpn")

SOCKET_DIR = Path("/var/run/wireguard")
USERSPACE = "wireguard-go"
READY_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0

Backend = Literal["auto", "kernel", "userspace"]
ActiveBackend = Literal["kernel", "userspace"]

# Lines of wireguard-go's "you have a kernel module" warning box, not worth logging.
_BOX_CHARS = set("┌┐└┘│─ ")


def validate_ifname(name: str) -> str:
    """Return `name` if it is a valid interface name (1-15 of [a-zA-Z0-9_=+.-]), else InputError."""
    return parse_interface_name(name)


def socket_path(iface: str) -> Path:
    """wireguard-go's control socket for `iface`."""
    return SOCKET_DIR / f"{iface}.sock"


def link_exists(runner: Runner, iface: str) -> bool:
    """True if a network interface named `iface` exists (in the runner's namespace)."""
    return runner.run(["ip", "link", "show", "dev", iface], check=False, quiet=True).returncode == 0


def socket_answers(iface: str) -> bool:
    """True if wireguard-go answers a UAPI `get` on the control socket of `iface`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(socket_path(iface)))
            sock.sendall(b"get=1\n\n")
            reply = b""
            while b"\n\n" not in reply:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return b"errno=0" in reply


def kernel_available(runner: Runner) -> bool:
    """True if the kernel can create WireGuard links: tries a temporary one and deletes it."""
    probe = f"bwprobe{os.getpid() % 100000}"
    # A probe that leaves nothing behind: logged at DEBUG, not as a system change.
    added = runner.run(["ip", "link", "add", probe, "type", "wireguard"], check=False, quiet=True)
    if added.returncode != 0:
        return False
    runner.run(["ip", "link", "del", probe], check=False, quiet=True)
    return True


def create_link(runner: Runner, iface: str, backend: Backend = "auto") -> ActiveBackend:
    """Create the WireGuard interface; return the backend that serves it.

    "auto" tries the kernel module first, then wireguard-go (as wg-quick does).
    """
    validate_ifname(iface)
    if link_exists(runner, iface):
        raise ConflictError(f"interface '{iface}' already exists: delete it first or pick another name")
    if backend == "auto" and runner.dry_run:
        # A dry run cannot learn from a failed `ip link add`; probe instead (it leaves nothing).
        backend = "kernel" if kernel_available(runner) else "userspace"
    if backend in ("auto", "kernel"):
        if _add_kernel_link(runner, iface, must=backend == "kernel"):
            return "kernel"
    start_userspace(runner, iface)
    return "userspace"


def _add_kernel_link(runner: Runner, iface: str, must: bool) -> bool:
    """Try the kernel module; False only when the kernel lacks it (other failures raise)."""
    argv = ["ip", "link", "add", iface, "type", "wireguard"]
    result = runner.run(argv, check=must)
    if result.returncode == 0:
        return True
    stderr = result.stderr.decode(errors="replace")
    if "Unknown device type" not in stderr and "not supported" not in stderr.lower():
        raise runner.failure(argv, result)
    LOGGER.info("no WireGuard kernel module; using %s for '%s'", USERSPACE, iface)
    return False


def require_userspace() -> None:
    """Raise SystemActionError with the install hint if wireguard-go is not installed."""
    if shutil.which(USERSPACE) is None:
        raise SystemActionError(
            f"cannot start the userspace backend: '{USERSPACE}' not found: {missing_command_hint(USERSPACE)}"
        )


TUN_DEVICE = Path("/dev/net/tun")


def ensure_tun_device(runner: Runner) -> None:
    """Create /dev/net/tun (char 10:200) when it is missing, as in a container started without
    `--device /dev/net/tun`: Docker's default device policy allows this device and CAP_MKNOD."""
    if TUN_DEVICE.exists():
        return
    runner.run(["mkdir", "-p", str(TUN_DEVICE.parent)])
    result = runner.run(["mknod", "-m", "0600", str(TUN_DEVICE), "c", "10", "200"], check=False)
    if result.returncode != 0:
        raise SystemActionError(
            f"cannot create {TUN_DEVICE} for wireguard-go: {result.stderr.decode(errors='replace').strip()}: "
            f"pass the device (docker run --device /dev/net/tun) or load the kernel module (modprobe tun)"
        )


def start_userspace(runner: Runner, iface: str) -> None:
    """Start `wireguard-go IFACE` (it daemonizes) and wait until its socket and link are ready."""
    validate_ifname(iface)
    require_userspace()
    argv = [USERSPACE, iface]
    # Without LOG_LEVEL the daemonized child gets /dev/null for stdio, so `run` returns when the
    # parent exits; the parent's kernel-module warning box goes to the captured stderr.
    env: dict[str, str | None] = {"LOG_LEVEL": None, "WG_PROCESS_FOREGROUND": None}
    result = runner.run(argv, check=False, env=env)
    if runner.dry_run:
        return
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")
        detail = _userspace_error(stderr) or f"exit status {result.returncode}"
        raise SystemActionError(format_failure(shlex.join(argv), detail, _tun_hint(stderr)))
    _wait_ready(runner, iface, process=None)


def _userspace_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not set(line) <= _BOX_CHARS]
    meaningful = [line for line in lines if not line.startswith("│")]
    return meaningful[-1] if meaningful else ""


def _tun_hint(stderr: str) -> str:
    if "/dev/net/tun" in stderr:
        return "the TUN device is missing: modprobe tun (in a container: --device /dev/net/tun)"
    if "operation not permitted" in stderr.lower():
        return "run as root (CAP_NET_ADMIN is needed)"
    return ""


def _wait_ready(runner: Runner, iface: str, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemActionError(f"{USERSPACE} for '{iface}' exited with status {process.returncode}")
        if socket_answers(iface) and link_exists(runner, iface):
            return
        time.sleep(0.02)
    raise SystemActionError(
        f"{USERSPACE} for '{iface}' did not become ready in {READY_TIMEOUT:g}s: "
        f"check {socket_path(iface)} and 'ip link show {iface}'"
    )


def _netns_inode(netns: str | None) -> int:
    path = f"/var/run/netns/{netns}" if netns else "/proc/self/ns/net"
    return os.stat(path).st_ino


def userspace_pid(iface: str, netns: str | None = None) -> int | None:
    """The pid of the wireguard-go serving `iface` in `netns` (None: this process's namespace)."""
    try:
        wanted_ns = _netns_inode(netns)
    except OSError:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        if _is_userspace_for(int(entry.name), iface, wanted_ns):
            return int(entry.name)
    return None


def _is_userspace_for(pid: int, iface: str, wanted_ns: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if not argv or os.path.basename(argv[0]) != USERSPACE.encode():
            return False
        if iface.encode() not in argv[1:]:
            return False
        return os.stat(f"/proc/{pid}/ns/net").st_ino == wanted_ns
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stop_pid(runner: Runner, pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if _wait_gone(pid, 0 if sig == signal.SIGTERM else STOP_TIMEOUT):
            return
        runner.announce(["kill", f"-{sig.name}", str(pid)])
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if _wait_gone(pid, STOP_TIMEOUT):
            return
    raise SystemActionError(f"{USERSPACE} (pid {pid}) did not stop: kill -9 {pid}")


def delete_link(runner: Runner, iface: str) -> bool:
    """Delete the interface; for wireguard-go also make sure the process is gone and its socket removed.

    Return False if there was nothing to delete.
    """
    validate_ifname(iface)
    pid = userspace_pid(iface, runner.netns)
    existed = link_exists(runner, iface)
    if existed:
        runner.run(["ip", "link", "del", "dev", iface])
    if runner.dry_run:
        return existed
    if pid is not None:
        # wireguard-go exits by itself when its TUN device goes away; make sure of it.
        _stop_pid(runner, pid)
    removed_socket = _remove_stale_socket(runner, iface)
    return existed or pid is not None or removed_socket


def _remove_stale_socket(runner: Runner, iface: str) -> bool:
    path = socket_path(iface)
    if not path.exists() or socket_answers(iface):
        # An answering socket belongs to a live wireguard-go (maybe in another namespace): not ours.
        return False
    runner.announce(["rm", "-f", str(path)])
    path.unlink(missing_ok=True)
    return True


class UserspaceProcess:
    """wireguard-go running in the foreground as our child: watch it with `poll()`, stop it with `stop()`.

    Its output (errors; the kernel-module warning box is dropped) is logged at DEBUG and the last
    lines are kept in `last_output` for error messages.
    """

    def __init__(self, runner: Runner, iface: str, process: subprocess.Popen[bytes]) -> None:
        self.runner = runner
        self.iface = iface
        self.process = process
        self.last_output: deque[str] = deque(maxlen=20)
        self._reader = threading.Thread(target=self._drain, name=f"wireguard-go-{iface}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        """None while running, else its exit status."""
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def _drain(self) -> None:
        stream = self.process.stdout
        if stream is None:
            return
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if not line or set(line) <= _BOX_CHARS or line.startswith("│"):
                continue
            self.last_output.append(line)
            LOGGER.debug("%s[%s]: %s", USERSPACE, self.iface, line)

    def stop(self) -> None:
        """Terminate the process (the link and socket go with it) and wait for it."""
        if self.process.poll() is None:
            self.runner.announce(["kill", "-SIGTERM", str(self.process.pid)])
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        self._reader.join(1.0)
        _remove_stale_socket(self.runner, self.iface)


def start_userspace_foreground(runner: Runner, iface: str) -> UserspaceProcess:
    """Start wireguard-go as a foreground child (WG_PROCESS_FOREGROUND=1) and wait until it is ready."""
    validate_ifname(iface)
    if link_exists(runner, iface):
        raise ConflictError(f"interface '{iface}' already exists: delete it first or pick another name")
    require_userspace()
    env: dict[str, str | None] = {"WG_PROCESS_FOREGROUND": "1"}
    process = runner.popen([USERSPACE, iface], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    child = UserspaceProcess(runner, iface, process)
    try:
        _wait_ready(runner, iface, process)
    except SystemActionError as exc:
        child.stop()
        detail = child.last_output[-1] if child.last_output else ""
        raise SystemActionError(f"{exc}{': ' + detail if detail else ''}") from exc
    return child
