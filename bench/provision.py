"""How fast Bulwark provisions peers (keys, PSKs, configs, QR PNGs), side by side with per-peer shell tools.

Run from the repository root (no root needed, no network, no namespaces):

    .venv/bin/python bench/provision.py            # 1,000 and 10,000 peers, about 1-2 minutes
    .venv/bin/python bench/provision.py --quick    # 1,000 peers, 200 QR codes, 3 runs, 100 shell peers

What one run measures, each in a fresh folder of its own:

  - keys, PSKs and configs without QR: the library path in-process (`service.init_server` with no peers,
    then the same calls `init_server` makes for N peers, minus the QR step of `_render_peers`);
  - with QR PNGs: the whole `bulwark init --peers N` command as a subprocess (Python start-up included);
  - the QR encoders on the same configs: segno one after the other, segno in a process pool on every core,
    and `qr_pngs` (what Bulwark uses: `qrencode` processes driven by threads, segno as the fallback);
  - `bulwark peer add NAME` on the largest store and `bulwark --help`, each a whole command;
  - the alternative: a bash script written here that runs `wg genkey`, `wg pubkey`, `wg genpsk` and
    `qrencode` per peer and writes the server's [Peer] section and the client config from the key files.

Everything is written under one temporary folder, removed at the end, also on error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import segno

from bulwark_vpn import service
from bulwark_vpn.config import InitRequest, parse_peers, settings_update
from bulwark_vpn.render import layout
from bulwark_vpn.render.qr import QRENCODE, qr_png, qr_pngs
from bulwark_vpn.store import open_store

BULWARK = str(Path(sys.executable).parent / "bulwark")
SERVER_URL = "vpn.example.com"
SUBNET = "10.20.0.0/16"
# Variables `bulwark init` reads from the environment (linuxserver names and BULWARK_*): none may leak in.
ENV_PREFIXES = ("PEER", "SERVER", "INTERNAL_SUBNET", "ALLOWEDIPS", "LOG_CONFS", "PERSISTENTKEEPALIVE", "BULWARK_")

GOAL_NO_QR = 1.0  # s for 1,000 peers: keys, PSKs and configs
GOAL_WITH_QR = 5.0  # s for 1,000 peers: the same plus QR PNGs
GOAL_PEER_ADD = 0.300  # s, whole `bulwark peer add` command on a 10,000-peer store
GOAL_HELP = 0.150  # s, whole `bulwark --help` command
GOAL_PEERS = 1000  # the peer count the first two goals are stated for

# The timings of linuxserver/wireguard's own generation on this kind of machine: quoted, not measured.
LINUXSERVER_QUOTED = {100: 16.0, 253: 147.0}

# Per-peer generation with the standard tools, as shell-based images do it: one `wg` process per key, one
# `qrencode` per config. Keys travel through files and pipes; `$(<file)` and printf are bash built-ins, so
# no key is ever an argument of a process. Written for this bench.
SHELL_SCRIPT = r"""#!/bin/bash
set -euo pipefail
umask 077
out=$1 count=$2 host=$3
mkdir -p "$out/server" "$out/wg_confs"
wg genkey > "$out/server/privatekey-server"
wg pubkey < "$out/server/privatekey-server" > "$out/server/publickey-server"
server_public=$(<"$out/server/publickey-server")
server_conf=$out/wg_confs/wg0.conf
printf '[Interface]\nAddress = 10.20.0.1/16\nListenPort = 51820\nPrivateKey = %s\n' \
    "$(<"$out/server/privatekey-server")" > "$server_conf"
for ((i = 1; i <= count; i++)); do
    name=peer$i
    dir=$out/$name
    offset=$((i + 1))
    address=10.20.$((offset / 256)).$((offset % 256))
    mkdir -p "$dir"
    wg genkey > "$dir/privatekey-$name"
    wg pubkey < "$dir/privatekey-$name" > "$dir/publickey-$name"
    wg genpsk > "$dir/presharedkey-$name"
    psk=$(<"$dir/presharedkey-$name")
    printf '\n[Peer]\n# %s\nPublicKey = %s\nPresharedKey = %s\nAllowedIPs = %s/32\n' \
        "$name" "$(<"$dir/publickey-$name")" "$psk" "$address" >> "$server_conf"
    {
        printf '[Interface]\nAddress = %s/32\nPrivateKey = %s\nDNS = 10.20.0.1\n' \
            "$address" "$(<"$dir/privatekey-$name")"
        printf '\n[Peer]\nPublicKey = %s\nPresharedKey = %s\n' "$server_public" "$psk"
        printf 'Endpoint = %s:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n' "$host"
    } > "$dir/$name.conf"
    qrencode -t PNG -o "$dir/$name.png" < "$dir/$name.conf"
done
"""


# -- measuring ----------------------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}


def _timed_command(argv: Sequence[str], what: str, timeout: float = 600) -> float:
    """Wall time of one whole command; a failure stops the bench with the command's last words."""
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=_environment(), timeout=timeout, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"bench: {what} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
    return elapsed


def _init_argv(config_dir: Path, count: int) -> list[str]:
    return [BULWARK, "init", "--config-dir", str(config_dir), "--server-url", SERVER_URL, "--subnet", SUBNET,
            "--peers", str(count)]


def _count(folder: Path, pattern: str) -> int:
    return sum(1 for _ in folder.glob(pattern))


def _check_peer_files(folder: Path, count: int, pngs: bool, what: str) -> None:
    confs, images = _count(folder, "peer*/peer*.conf"), _count(folder, "peer*/peer*.png")
    if confs != count or images != (count if pngs else 0):
        raise SystemExit(f"bench: {what} left {confs} configs and {images} PNGs for {count} peers")


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (qrencode processes, pool workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def filesystem_floor(folder: Path, count: int) -> float:
    """Seconds to create `count` private folders with 4 empty files each (plain mkdir and open, no data, no
    sync) on the filesystem the bench writes to: the part of any writer's time that is the disk's, not its own."""
    started = time.perf_counter()
    for number in range(1, count + 1):
        peer = folder / f"peer{number}"
        peer.mkdir(parents=True, mode=0o700)
        for name in ("conf", "privatekey", "publickey", "presharedkey"):
            os.close(os.open(peer / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return time.perf_counter() - started


@contextlib.contextmanager
def _timing_os_sync() -> Iterator[list[float]]:
    """Time each os.sync() made inside (a batch write ends with two), still calling the real one.

    os.sync() flushes the dirty pages of the whole machine, so its cost depends on what else is writing.
    """
    real, spent = os.sync, []

    def timed() -> None:
        started = time.perf_counter()
        real()
        spent.append(time.perf_counter() - started)

    os.sync = timed
    try:
        yield spent
    finally:
        os.sync = real


@dataclass(frozen=True)
class LibraryRun:
    """The in-process library path without QR, by phase (seconds)."""

    init_server: float
    create_peers: float
    render_server: float
    render_peers: float
    write_peers: float
    syncs: tuple[float, ...]  # the os.sync() calls inside write_peers

    @property
    def total(self) -> float:
        return self.init_server + self.create_peers + self.render_server + self.render_peers + self.write_peers


def library_without_qr(config_dir: Path, count: int) -> LibraryRun:
    """What `init_server` does for `count` new peers, through the same calls, without the QR step.

    `init_server` creates peers with `_create_requested` (= `_create_peer` with no options) in its store
    transaction, then `_render_server`, then `_render_peers(store.peers())`, which is `layout.peer_files` for
    every peer, `qr_pngs` of the configs and one `_write_files`. Here: the same, minus `qr_pngs`.
    """
    from bulwark_vpn.fsutil import SafeFolder
    from bulwark_vpn.service.files import _server_file_set
    from bulwark_vpn.service.peers import create_peer

    marks = [time.perf_counter()]
    request = InitRequest(update=settings_update({"server_url": SERVER_URL, "subnet4": SUBNET}))
    service.init_server(service.Context(config_dir), request)
    marks.append(time.perf_counter())
    with open_store(config_dir) as store, SafeFolder.open(config_dir) as folder:
        settings = store.settings()
        with store.transaction():
            for name in parse_peers(str(count)):
                create_peer(store, settings, name)
        marks.append(time.perf_counter())
        folder.write_many(_server_file_set(store))
        marks.append(time.perf_counter())
        public = store.require_server_key().public_key()
        files: dict[str, layout.RenderedFile] = {}
        for peer in store.peers():
            files.update(layout.peer_files(settings, public, peer))
        marks.append(time.perf_counter())
        with _timing_os_sync() as syncs:
            folder.write_many([(rel, f.content, f.mode) for rel, f in files.items()])
        marks.append(time.perf_counter())
    _check_peer_files(config_dir, count, pngs=False, what="the library path")
    return LibraryRun(*(b - a for a, b in zip(marks, marks[1:], strict=False)), syncs=tuple(syncs))


@dataclass(frozen=True)
class EncoderRun:
    name: str
    codes: int
    wall: float
    cpu: float
    pngs: list[bytes]


def _measure_encoder(name: str, encode: Callable[[list[str]], list[bytes]], texts: list[str]) -> EncoderRun:
    cpu, started = _cpu_seconds(), time.perf_counter()
    pngs = encode(texts)
    wall = time.perf_counter() - started
    return EncoderRun(name, len(texts), wall, _cpu_seconds() - cpu, pngs)


def _segno_sequential(texts: list[str]) -> list[bytes]:
    return [qr_png(text) for text in texts]


def _segno_pool(texts: list[str]) -> list[bytes]:
    # The pool's start-up and shutdown are part of the time: a real caller pays them on every batch.
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=cores) as pool:
        return list(pool.map(qr_png, texts, chunksize=max(1, len(texts) // (cores * 8))))


def compare_encoders(texts: list[str]) -> tuple[list[EncoderRun], int]:
    """The three encoders on the same texts; also how many of qr_pngs' codes came from its segno fallback."""
    cores = os.cpu_count() or 1
    sequential = _measure_encoder("segno, one after the other (`qr_png` per config)", _segno_sequential, texts)
    pool = _measure_encoder(f"segno, ProcessPoolExecutor on {cores} cores", _segno_pool, texts)
    bulwark = _measure_encoder("Bulwark: `qr_pngs` (qrencode processes from threads)", qr_pngs, texts)
    if pool.pngs != sequential.pngs:
        raise SystemExit("bench: segno in a process pool made different PNGs from segno in-process")
    if len(bulwark.pngs) != len(texts) or not all(png.startswith(b"\x89PNG") for png in bulwark.pngs):
        raise SystemExit("bench: qr_pngs did not return one PNG per config")
    # segno is deterministic, so a code identical to segno's came from qr_pngs' fallback, not from qrencode.
    fallbacks = sum(a == b for a, b in zip(bulwark.pngs, sequential.pngs, strict=True))
    return [sequential, pool, bulwark], fallbacks


def shell_tools(workdir: Path, script: Path, count: int) -> float:
    out = workdir / f"shell-{count}"
    elapsed = _timed_command(["bash", str(script), str(out), str(count), SERVER_URL], f"the shell script ({count})")
    _check_peer_files(out, count, pngs=True, what="the shell script")
    return elapsed


def _p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (of 7 runs, the slowest)."""
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


# -- the report ---------------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _verdict(value: float, goal: float | None) -> str:
    if goal is None:
        return "(no goal)"
    return "PASS" if value <= goal else "MISS"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


def _versions() -> str:
    wg = subprocess.run(["wg", "--version"], capture_output=True, text=True, check=False).stdout.split(" - ")[0]
    found = subprocess.run([QRENCODE, "--version"], capture_output=True, text=True, check=False)
    qrencode = found.stdout or found.stderr
    return f"{wg.strip()}, {qrencode.splitlines()[0].strip() if qrencode else 'no qrencode'}, segno {segno.__version__}"


def run(sizes: list[int], qr_count: int | None, runs: int, shell_sizes: list[int], tmpdir: str | None) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bulwark-provision-", dir=tmpdir))
    try:
        return _run(workdir, sizes, qr_count, runs, shell_sizes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run(workdir: Path, sizes: list[int], qr_count: int | None, runs: int, shell_sizes: list[int]) -> int:
    began = time.perf_counter()
    goals_met = True
    rows: list[list[str]] = []
    breakdown: list[str] = []

    library: dict[int, LibraryRun] = {}
    cli: dict[int, float] = {}
    floor: dict[int, float] = {}
    for size in sizes:
        print(f"... {size} peers: filesystem floor, library path without QR, bulwark init --peers {size}",
              file=sys.stderr)
        floor[size] = filesystem_floor(workdir / f"floor-{size}", size)
        library[size] = library_without_qr(workdir / f"library-{size}", size)
        cli[size] = _timed_command(_init_argv(workdir / f"cli-{size}", size), f"bulwark init --peers {size}")
        _check_peer_files(workdir / f"cli-{size}", size, pngs=True, what=f"bulwark init --peers {size}")
    for size in sizes:
        lib = library[size]
        goal = GOAL_NO_QR if size == GOAL_PEERS else None
        rows.append(["keys, PSKs, configs: library in-process, no QR (*)", f"{size:,}", _s(lib.total),
                     f"{lib.total / size * 1000:.2f} ms", f"<= {_s(goal)}" if goal else "-",
                     _verdict(lib.total, goal)])
        goals_met &= _verdict(lib.total, goal) != "MISS"
        goal = GOAL_WITH_QR if size == GOAL_PEERS else None
        rows.append([f"all of it + QR PNGs: `bulwark init --peers {size}` (whole command)", f"{size:,}", _s(cli[size]),
                     f"{cli[size] / size * 1000:.2f} ms", f"<= {_s(goal)}" if goal else "-",
                     _verdict(cli[size], goal)])
        goals_met &= _verdict(cli[size], goal) != "MISS"
        breakdown.append(
            f"  {size:,} peers: init_server (no peers) {_s(lib.init_server)}, {size:,} x _create_peer in one "
            f"transaction {_s(lib.create_peers)}, _render_server {_s(lib.render_server)}, layout.peer_files "
            f"{_s(lib.render_peers)}, _write_files {_s(lib.write_peers)} (of which {len(lib.syncs)} x os.sync "
            f"{' + '.join(_s(t) for t in lib.syncs)}); without the syncs {_s(lib.total - sum(lib.syncs))}; "
            f"the filesystem alone, just before: {size:,} folders with 4 empty files each {_s(floor[size])}")

    store_size = sizes[-1]
    print(f"... bulwark peer add x {runs} on the {store_size}-peer store, bulwark --help x {runs}", file=sys.stderr)
    store = workdir / f"cli-{store_size}"
    adds = [_timed_command([BULWARK, "peer", "add", f"bench{n}", "--config-dir", str(store)], "bulwark peer add")
            for n in range(1, runs + 1)]
    helps = [_timed_command([BULWARK, "--help"], "bulwark --help") for _ in range(runs)]
    add_goal = GOAL_PEER_ADD if store_size >= 10_000 else None
    for label, value in ((f"`bulwark peer add NAME`, median of {runs}", statistics.median(adds)),
                         (f"`bulwark peer add NAME`, p95 of {runs}", _p95(adds))):
        rows.append([label, f"store of {store_size:,}", _s(value), "-",
                     f"<= {_s(add_goal)}" if add_goal else "-", _verdict(value, add_goal)])
        goals_met &= _verdict(value, add_goal) != "MISS"
    help_median = statistics.median(helps)
    rows.append([f"`bulwark --help`, median of {runs}", "-", _s(help_median), "-", f"<= {_s(GOAL_HELP)}",
                 _verdict(help_median, GOAL_HELP)])
    goals_met &= help_median <= GOAL_HELP

    first = sizes[0]
    texts = [(workdir / f"cli-{first}" / f"peer{i}" / f"peer{i}.conf").read_text()
             for i in range(1, min(first, qr_count or first) + 1)]
    print(f"... QR encoders on {len(texts)} configs", file=sys.stderr)
    encoders, fallbacks = compare_encoders(texts)

    script = workdir / "per-peer-tools.sh"
    script.write_text(SHELL_SCRIPT)
    shell: dict[int, tuple[float, float]] = {}
    for size in shell_sizes:
        print(f"... {size} peers: per-peer shell tools, then bulwark init --peers {size}", file=sys.stderr)
        shell_time = shell_tools(workdir, script, size)
        bulwark_time = _timed_command(_init_argv(workdir / f"cli-small-{size}", size), f"bulwark init ({size})")
        _check_peer_files(workdir / f"cli-small-{size}", size, pngs=True, what=f"bulwark init --peers {size}")
        shell[size] = (bulwark_time, shell_time)

    print(f"\nPeer provisioning: Bulwark vs per-peer shell tools; {os.cpu_count()} CPUs; {_versions()}; "
          f"load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"whole bench {time.perf_counter() - began:.0f} s\n")
    print("\n".join(_table(["what", "peers", "time", "per peer", "goal", "verdict"], rows)))
    print("\n(*) in-process, no Python start-up, no QR: `service.init_server` (settings, server key, empty server "
          "files), then in one store transaction `service._create_peer` per peer (X25519 key pair, PSK, address), "
          "`service._render_server` (wg_confs/wg0.conf with every peer), `layout.peer_files` for every peer read "
          "back from the store (keys, PSK, client config) and one `service._write_files` (two syncs in all); "
          "that is `init_server --peers N` without the `qr_pngs` step. By phase:")
    print("\n".join(breakdown))
    print(f"  (\"the filesystem alone\": plain mkdir and open of empty files, no data, no rename, no sync, in "
          f"{workdir.parent}: the part of any writer's time that belongs to the filesystem)")
    if store_size < 10_000:
        print(f"(the peer add goal is stated for a 10,000-peer store; this run used {store_size:,})")

    print(f"\nQR encoders on the same {len(texts):,} client configs (PNG, error level L, scale 4, border 2):\n")
    print("\n".join(_table(
        ["encoder", "wall", "ms per code (wall)", "CPU ms per code"],
        [[e.name, _s(e.wall), f"{e.wall / e.codes * 1000:.2f}", f"{e.cpu / e.codes * 1000:.2f}"] for e in encoders],
    )))
    sequential, pool, bulwark = encoders
    print(f"\nqr_pngs: {len(texts) - fallbacks} of {len(texts)} codes from qrencode, {fallbacks} from the segno "
          f"fallback (a code byte-identical to segno's came from segno).")
    print(f"Why Bulwark uses qrencode from threads: one code costs {bulwark.cpu / bulwark.codes * 1000:.1f} ms of CPU "
          f"with qrencode (process start included) against {sequential.cpu / sequential.codes * 1000:.1f} ms with "
          f"segno, so it is cheaper before any parallelism. Each code is its own qrencode process, so plain threads "
          f"keep every core busy while Python only waits on pipes (no GIL contention, no pickling, no worker "
          f"start-up). A segno process pool also uses every core but still pays segno's CPU per code: at best it "
          f"divides segno's time by the core count ({sequential.wall / pool.wall:.1f}x here, against "
          f"{sequential.wall / bulwark.wall:.1f}x for qr_pngs). segno stays as the fallback when qrencode is missing "
          f"or fails, so a PNG is always written.")

    if shell:
        print("\nThe alternative: per-peer shell tools (for each peer `wg genkey`, `wg pubkey`, `wg genpsk`, the "
              "server [Peer] section and the client config written from the key files, `qrencode -t PNG -o FILE`), "
              "a bash script written for this bench, against the whole `bulwark init --peers N` command:\n")
        shell_rows = []
        for size, (bulwark_time, shell_time) in shell.items():
            quoted = LINUXSERVER_QUOTED.get(size)
            shell_rows.append([f"{size:,}", _s(bulwark_time), _s(shell_time), f"{shell_time / bulwark_time:.1f}x",
                               f"~{quoted:.0f} s" if quoted else "-"])
        print("\n".join(_table(["peers", "Bulwark (bulwark init, with QR)", "per-peer shell tools (measured)",
                                "shell / Bulwark", "linuxserver's script (QUOTED from the issue, not measured)"],
                               shell_rows)))
        print("\nThe shell script does not fsync; Bulwark's writes end with two syncs per batch. The linuxserver "
              "numbers are the issue's, taken on this kind of machine; they were not run here.")
    return 0 if goals_met else 1


def _counts(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run: 1,000 peers, 200 QR codes, 3 runs, 100 shell peers")
    parser.add_argument("--sizes", type=_counts, default=[1000, 10000],
                        help="peer counts to provision, ascending (default 1000,10000); peer add runs on the last")
    parser.add_argument("--qr-count", type=int, default=None,
                        help="configs for the QR encoder comparison (default: all of the first size)")
    parser.add_argument("--runs", type=int, default=7, help="runs of peer add and --help (default 7)")
    parser.add_argument("--shell-sizes", type=_counts, default=[100, 253],
                        help="peer counts for the shell-tools comparison (default 100,253)")
    parser.add_argument("--tmpdir", help="where the temporary folder goes (default: $TMPDIR or /tmp); e.g. /dev/shm "
                        "to leave the disk's file-creation cost out")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.qr_count, args.runs, args.shell_sizes = [1000], 200, 3, [100]
    for tool in ("wg", QRENCODE, "bash"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: '{tool}' is not installed: apt-get install -y wireguard-tools qrencode")
    # SIGTERM unwinds like Ctrl-C, so the temporary folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(sorted(args.sizes), args.qr_count, args.runs, args.shell_sizes, args.tmpdir)


if __name__ == "__main__":
    sys.exit(main())
