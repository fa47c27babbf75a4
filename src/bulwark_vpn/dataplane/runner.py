"""Running system commands (ip, wg, nft, wireguard-go) visibly, and undoing them on failure.

This module owns the one place where the data plane touches the system: `Runner.run`. Every command
that changes the system is logged as `[#] <command>` (as wg-quick does); read-only queries pass
`quiet=True` and are logged at DEBUG only. Stdin content (keys, configs) is never logged. A failed
command raises `SystemActionError` with one line: the command, the first line of its stderr and a fix
when the fix is obvious.

`RollbackStack` is wg-quick's `trap`: a bring-up registers an `Undo` after each step, and on failure
the undo actions run in reverse order.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from bulwark_vpn.errors import SystemActionError

LOGGER = logging.getLogger("bulwark_vpn")
DEFAULT_TIMEOUT = 60.0

# Which package provides a missing command (Debian/Ubuntu names).
_PACKAGES = {
    "ip": "iproute2",
    "wg": "wireguard-tools",
    "wg-quick": "wireguard-tools",
    "wireguard-go": "wireguard-go",
    "nft": "nftables",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "iptables-restore": "iptables",
    "ip6tables-restore": "iptables",
    "sysctl": "procps",
}

# (substring of stderr, fix) pairs, checked in order.
_HINTS = (
    ("Operation not permitted", "run as root (CAP_NET_ADMIN is needed)"),
    ("Permission denied", "run as root (CAP_NET_ADMIN is needed)"),
    ("Unknown device type", "the kernel has no WireGuard module: use the userspace backend (wireguard-go)"),
    ("File exists", "it already exists: remove it first or pick another name"),
    ("Cannot find device", "the interface does not exist: bring it up first"),
    ("does not exist", "the interface does not exist: bring it up first"),
    ("Address already in use", "the port is taken: pick another listen port"),
)


def _default_log(line: str) -> None:
    LOGGER.info("%s", line)


def missing_command_hint(program: str) -> str:
    """A one-line install hint for a missing program."""
    package = _PACKAGES.get(program, program)
    return f"install it: apt-get install -y {package}"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _hint_for(stderr: str) -> str:
    for needle, fix in _HINTS:
        if needle in stderr:
            return fix
    return ""


def format_failure(command: str, detail: str, hint: str = "") -> str:
    """`command failed: '<cmd>': <detail>: <fix>` on one line."""
    message = f"command failed: '{command}'"
    if detail:
        message += f": {detail}"
    if hint:
        message += f": {hint}"
    return message


class Runner:
    """Runs commands on this host or inside a network namespace (`ip netns exec NS ...`).

    `log` receives one line per system-changing command (default: the "bulwark_vpn" logger at INFO).
    With `dry_run=True`, system-changing commands are logged (prefixed `[dry-run]`) but not run;
    quiet (read-only) commands still run, so a dry run can read the live state to diff against.
    """

    def __init__(
        self,
        netns: str | None = None,
        log: Callable[[str], None] | None = None,
        dry_run: bool = False,
    ) -> None:
        self.netns = netns
        self.log = log or _default_log
        self.dry_run = dry_run

    def __repr__(self) -> str:
        return f"Runner(netns={self.netns!r}, dry_run={self.dry_run})"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The argv actually executed: prefixed with `ip netns exec NS` when in a namespace."""
        if self.netns is None:
            return list(argv)
        return ["ip", "netns", "exec", self.netns, *argv]

    def announce(self, argv: Sequence[str], quiet: bool = False) -> None:
        """Log a command the way wg-quick does: `[#] ip link add wg0 type wireguard`."""
        line = "[#] " + shlex.join(self.wrap(argv))
        if quiet:
            LOGGER.debug("%s", line)
        elif self.dry_run:
            self.log(f"[dry-run] {line}")
        else:
            self.log(line)

    def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        check: bool = True,
        quiet: bool = False,
        env: Mapping[str, str | None] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `argv`; raise `SystemActionError` on a non-zero exit when `check` is true.

        `quiet=True` marks a read-only query: logged at DEBUG only and run even in a dry run.
        `input` is fed to stdin and never logged. `env` entries are added to the environment (None unsets).
        """
        self.announce(argv, quiet)
        if self.dry_run and not quiet:
            return subprocess.CompletedProcess(list(argv), 0, b"", b"")
        full = self.wrap(argv)
        try:
            result = subprocess.run(
                full,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                env=_merged_env(env),
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            program = os.path.basename(full[0])
            raise SystemActionError(
                format_failure(shlex.join(argv), f"'{program}' not found", missing_command_hint(program))
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise SystemActionError(
                format_failure(shlex.join(argv), f"no answer after {timeout:g}s", "check that it is not hung")
            ) from exc
        if check and result.returncode != 0:
            raise self.failure(argv, result)
        return result

    def failure(self, argv: Sequence[str], result: subprocess.CompletedProcess[bytes]) -> SystemActionError:
        """The one-line error for a failed command."""
        stderr = result.stderr.decode(errors="replace") if result.stderr else ""
        detail = _first_line(stderr) or f"exit status {result.returncode}"
        if self.netns is not None and "Cannot open network namespace" in stderr:
            return SystemActionError(
                format_failure(shlex.join(argv), detail, f"network namespace '{self.netns}' does not exist")
            )
        if self.netns is not None and stderr.startswith("exec of") and "No such file" in stderr:
            program = os.path.basename(argv[0])
            return SystemActionError(
                format_failure(shlex.join(argv), f"'{program}' not found", missing_command_hint(program))
            )
        return SystemActionError(format_failure(shlex.join(argv), detail, _hint_for(stderr)))

    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str | None] | None = None,
        stdout: int | None = subprocess.DEVNULL,
        stderr: int | None = subprocess.PIPE,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running child (e.g. wireguard-go in the foreground); logged like `run`."""
        self.announce(argv)
        if self.dry_run:
            raise SystemActionError(f"cannot start '{shlex.join(argv)}' in a dry run")
        full = self.wrap(argv)
        try:
            return subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=_merged_env(env))
        except FileNotFoundError as exc:
            program = os.path.basename(full[0])
            raise SystemActionError(
                format_failure(shlex.join(argv), f"'{program}' not found", missing_command_hint(program))
            ) from exc


def _merged_env(extra: Mapping[str, str | None] | None) -> dict[str, str] | None:
    """The environment with `extra` applied: a value of None removes the variable."""
    if extra is None:
        return None
    merged = dict(os.environ)
    for name, value in extra.items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


@dataclass(frozen=True)
class Undo:
    """One reversible step: what it undoes (for the log) and how."""

    description: str
    action: Callable[[], object]

    def __call__(self) -> None:
        self.action()


class RollbackStack:
    """Undo actions registered by a bring-up, run in reverse order when it fails.

    Use as a context manager: on an exception every registered undo runs (last first) and the
    exception propagates; on success the stack is simply forgotten (the changes stay).
    An undo that fails is logged and does not stop the others.
    """

    def __init__(self, log: Callable[[str], None] | None = None) -> None:
        self._undos: list[Undo] = []
        self._log = log or _default_log

    def push(self, undo: Undo | Sequence[Undo]) -> None:
        """Register one undo (or several, in the order they were done)."""
        if isinstance(undo, Undo):
            self._undos.append(undo)
        else:
            self._undos.extend(undo)

    def __len__(self) -> int:
        return len(self._undos)

    def rollback(self) -> list[BaseException]:
        """Run every undo, newest first; return the errors of the undos that failed."""
        errors: list[BaseException] = []
        while self._undos:
            undo = self._undos.pop()
            self._log(f"[#] rollback: {undo.description}")
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest
                LOGGER.warning("rollback of %s failed: %s", undo.description, exc)
                errors.append(exc)
        return errors

    def commit(self) -> None:
        """Keep the changes: forget the undo actions."""
        self._undos.clear()

    def __enter__(self) -> RollbackStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
