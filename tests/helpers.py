"""Shared test helpers: run the real `bulwark` command, snapshot a folder byte-for-byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BULWARK = [sys.executable, "-m", "bulwark_vpn"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus any linuxserver/Bulwark variables of the caller, plus `extra`."""
    drop = ("PEERS", "SERVERURL", "SERVERPORT", "INTERNAL_SUBNET", "PEERDNS", "ALLOWEDIPS", "LOG_CONFS",
            "PERSISTENTKEEPALIVE_PEERS", "BULWARK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def bulwark(*args: str, env: dict[str, str] | None = None, check: bool = True, input: str | None = None,
            netns: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    result = subprocess.run(
        [*prefix, *BULWARK, *args], capture_output=True, text=True, env=env or clean_env(), input=input,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"bulwark {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` with its bytes and mode (the lock file excluded: it is never rewritten)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != ".bulwark.lock":
            out[str(path.relative_to(folder))] = (path.read_bytes(), path.stat().st_mode & 0o777)
        elif path.is_dir():
            out[str(path.relative_to(folder)) + "/"] = (b"", path.stat().st_mode & 0o777)
    return out
