"""Shared test helpers: run the real `bulwark` command, snapshot a folder byte-for-byte."""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BULWARK = [sys.executable, "-m", "bulwark_vpn"]
# The runtime folder of every gateway the tests start: never the host's real /run/bulwark. Made by the test
# session and inherited by the helper processes it starts (through the environment).
if os.environ.get("BULWARK_TEST_RUN_DIR"):
    TEST_RUN_DIR = Path(os.environ["BULWARK_TEST_RUN_DIR"])
else:
    TEST_RUN_DIR = Path(tempfile.mkdtemp(prefix="bulwark-run-"))
    os.environ["BULWARK_TEST_RUN_DIR"] = str(TEST_RUN_DIR)
    atexit.register(shutil.rmtree, TEST_RUN_DIR, ignore_errors=True)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus any linuxserver/Bulwark variables of the caller, plus `extra`."""
    drop = ("PEERS", "SERVERURL", "SERVERPORT", "INTERNAL_SUBNET", "PEERDNS", "ALLOWEDIPS", "LOG_CONFS",
            "PERSISTENTKEEPALIVE_PEERS", "BULWARK_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["BULWARK_RUN_DIR"] = str(TEST_RUN_DIR)
    env.update(extra)
    return env


def bulwark(*args: str, env: dict[str, str] | None = None, check: bool = True, input: str | None = None,
            netns: str | None = None, timeout: float = 120, process: bool = False) -> subprocess.CompletedProcess:
    """The real `bulwark` command line: in this process (fast: same argument parsing, same output and exit code),
    or as its own process inside a namespace or when `process` is asked for."""
    if netns is None and not process:
        return _check(_in_process(list(args), env or clean_env(), input), args, check)
    prefix = ["ip", "netns", "exec", netns] if netns else []
    result = subprocess.run(
        [*prefix, *BULWARK, *args], capture_output=True, text=True, env=env or clean_env(), input=input,
        timeout=timeout,
    )
    return _check(result, args, check)


def _in_process(args: list[str], env: dict[str, str], input: str | None) -> subprocess.CompletedProcess:
    from bulwark_vpn import cli

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_stdin, saved_umask = dict(os.environ), sys.stdin, os.umask(0o022)
    os.environ.clear()
    os.environ.update(env)
    sys.stdin = io.StringIO(input or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.run(args)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.stdin = saved_stdin
        os.umask(saved_umask)
    return subprocess.CompletedProcess([*BULWARK, *args], code, out.getvalue(), err.getvalue())


def _check(result: subprocess.CompletedProcess, args: tuple[str, ...], check: bool) -> subprocess.CompletedProcess:
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


def context(config_dir: Path):
    """A service Context for a test's config folder (the tests' runtime folder, a clean environment)."""
    from bulwark_vpn.service import Context

    return Context(Path(config_dir), run_dir=TEST_RUN_DIR, environ=clean_env())


def add_peers(config_dir: Path, names: list[str], **options: object):
    """service.add_peers as a library call (the CLI is not what such a test exercises)."""
    from bulwark_vpn import service

    return service.add_peers(context(config_dir), service.AddPeersRequest.parse(names, **options))


def insert_peers(config_dir: Path, count: int, prefix: str = "peer", start: int = 1) -> None:
    """`count` peers (`{prefix}N` from `start`) straight into the store in one transaction: keys, PSK and addresses
    as `peer add` makes them, no files and no live apply (large stores for tests and benches). Their files are the
    render journal's job: recorded as pending, a command renders them."""
    from bulwark_vpn.addressing import Pool
    from bulwark_vpn.keys import PresharedKey, PrivateKey
    from bulwark_vpn.model import Peer
    from bulwark_vpn.store import RENDER_ALL_PEERS, RENDER_SERVER, open_store

    with open_store(config_dir) as store:
        settings = store.settings()
        pool4 = Pool(settings.subnet4)
        pool6 = Pool(settings.subnet6) if settings.subnet6 is not None else None
        with store.transaction():
            for number in range(start, start + count):
                private = PrivateKey.generate()
                store.insert_peer(Peer(
                    name=f"{prefix}{number}", public_key=private.public_key(), private_key=private,
                    preshared_key=PresharedKey.generate(), address4=store.allocate(pool4),  # type: ignore[arg-type]
                    address6=store.allocate(pool6) if pool6 is not None else None))  # type: ignore[arg-type]
            store.add_pending([RENDER_SERVER, RENDER_ALL_PEERS])
