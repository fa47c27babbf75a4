"""How fast `bulwark backup` and `bulwark restore` are at 10,000 and 65,000 peers, each part timed.

Run from the repository root (no root, no network, no namespaces):

    .venv/bin/python bench/backup.py                 # 10,000 and 65,000 peers
    .venv/bin/python bench/backup.py --peers 10000   # one size

For each size, in a fresh temporary folder (removed at the end, also on error or Ctrl-C):

  - the store is filled through the store itself in one transaction (keys, PSKs, addresses; no files, no QR);
  - backup, plain and encrypted (age, scrypt): the library call `service.backup_store`, parts timed (snapshot with
    SQLite's backup API, archive with the manifest and SHA-256, age encryption, the atomic 0600 write);
  - restore into a new folder: `service.restore_store`, parts timed (check: read, decrypt, checksum, manifest;
    extract: the snapshot written and opened; verify: every value through the strict parsers; render: every file
    of every peer, QR PNGs included, staged, the store renamed into place, the files renamed).

The goal, "each under 5 s at 65,000 peers", is checked for the backup (whole) and for the restore of the store
(check + extract + verify: everything but rendering the files). Rendering the files of 65,000 peers is the same work
as `bulwark init --peers 65000` (a config and a QR PNG per peer): it is measured and printed beside the goal, not
under it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bulwark_vpn import service
from bulwark_vpn.backupfile import Passphrase
from bulwark_vpn.config import InitRequest, settings_update
from bulwark_vpn.keys import PresharedKey, PrivateKey
from bulwark_vpn.model import Peer
from bulwark_vpn.service.backup import BackupRequest, RestoreRequest, backup_store, restore_store
from bulwark_vpn.service.peers import pools
from bulwark_vpn.store import open_store

GOAL = 5.0
GOAL_PEERS = 65_000
SUBNET = "10.64.0.0/14"


def fill(config: Path, count: int) -> float:
    """A server with `count` peers inserted through the store in one transaction; returns the seconds it took."""
    start = time.perf_counter()
    ctx = service.Context(config, run_dir=config / "run")
    service.init_server(ctx, InitRequest(update=settings_update({"server_url": "vpn.example.com",
                                                                 "subnet4": SUBNET})))
    with open_store(config) as store, store.transaction():
        settings = store.settings()
        pool4, _ = pools(settings)
        for index in range(count):
            key = PrivateKey.generate()
            store.insert_peer(Peer(name=f"p{index}", public_key=key.public_key(), private_key=key,
                                   preshared_key=PresharedKey.generate(),
                                   address4=store.allocate(pool4)))  # type: ignore[arg-type]
    return time.perf_counter() - start


def verdict(seconds: float) -> str:
    return "MET" if seconds < GOAL else "MISS"


def parts(seconds: dict[str, float], order: list[str]) -> str:
    return ", ".join(f"{k} {seconds[k]:.2f}" for k in order if k in seconds)


def run(count: int, root: Path) -> None:
    config = root / f"c{count}"
    print(f"\n== {count:,} peers (store filled in {fill(config, count):.1f} s)", flush=True)
    ctx = service.Context(config, run_dir=root / "run")
    plain = backup_store(ctx, BackupRequest(out=root / f"b{count}.tar.gz"))
    size = plain.bytes_written / 1024**2
    print(f"backup            {plain.seconds['total']:6.2f} s   goal < {GOAL:.0f} s: {verdict(plain.seconds['total'])}"
          f"   ({parts(plain.seconds, ['snapshot', 'archive', 'write'])}; {size:.1f} MiB)", flush=True)
    passphrase = Passphrase("bench passphrase")
    sealed = backup_store(ctx, BackupRequest(out=root / f"b{count}.tar.gz.age", passphrase=passphrase))
    shown = parts(sealed.seconds, ["snapshot", "archive", "encrypt", "write"])
    print(f"backup --encrypt  {sealed.seconds['total']:6.2f} s   goal < {GOAL:.0f} s: "
          f"{verdict(sealed.seconds['total'])}   ({shown})", flush=True)
    for label, path, secret in (("restore", plain.path, None), ("restore (age)", sealed.path, passphrase)):
        target = root / f"r{count}-{label[-4:-1]}"
        result = restore_store(service.Context(target, run_dir=root / "run"), RestoreRequest(path, passphrase=secret))
        store_part = sum(result.seconds.get(k, 0.0) for k in ("check", "extract", "verify"))
        print(f"{label:<17} {store_part:6.2f} s   goal < {GOAL:.0f} s: {verdict(store_part)}   (store: "
              f"{parts(result.seconds, ['check', 'extract', 'verify'])}); + files {result.seconds['render']:.2f} s "
              f"({result.files_written:,} files, QR PNGs included; not under the goal); total "
              f"{result.seconds['total']:.2f} s", flush=True)
        shutil.rmtree(target)
    shutil.rmtree(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, action="append", help="peer count (repeatable) [10000, 65000]")
    args = parser.parse_args()
    counts = args.peers or [10_000, GOAL_PEERS]
    load = os.getloadavg()[0]
    print(f"bench/backup.py: {os.cpu_count()} CPUs, load {load:.2f}; goal: backup and restore (store) of "
          f"{GOAL_PEERS:,} peers each under {GOAL:.0f} s", flush=True)
    root = Path(tempfile.mkdtemp(prefix="bulwark-bench-backup-"))
    os.chmod(root, 0o700)
    try:
        for count in counts:
            run(count, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
