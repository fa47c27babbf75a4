"""QR codes of client configs (PNG for the linuxserver layout, text for a terminal)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import segno

# The `qrencode` C tool makes a PNG in ~2 ms where pure-Python segno takes ~12 ms; it reads the config
# (which holds a private key) from stdin, never argv. Without it, segno is used.
QRENCODE = "qrencode"


def qr_png(text: str, scale: int = 4) -> bytes:
    """A PNG QR code of `text`, deterministic for the same input."""
    buffer = io.BytesIO()
    segno.make(text, error="l", micro=False).save(buffer, kind="png", scale=scale, border=2)
    return buffer.getvalue()


def _qrencode_png(text: str, scale: int) -> bytes:
    result = subprocess.run(
        [QRENCODE, "-t", "PNG", "-l", "L", "-s", str(scale), "-m", "2", "-o", "-"],
        input=text.encode(), capture_output=True, check=False,
    )
    if result.returncode != 0 or not result.stdout.startswith(b"\x89PNG"):
        return qr_png(text, scale)
    return result.stdout


def qr_pngs(texts: list[str], scale: int = 4) -> list[bytes]:
    """PNG QR codes of many texts: qrencode processes on every core when installed, else segno."""
    if not texts:
        return []
    if shutil.which(QRENCODE) is None:
        return [qr_png(text, scale) for text in texts]
    if len(texts) == 1:
        return [_qrencode_png(texts[0], scale)]
    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(lambda text: _qrencode_png(text, scale), texts))


def qr_terminal(text: str) -> str:
    """A QR code drawn with Unicode half blocks, two modules per character row."""
    matrix = [list(row) for row in segno.make(text, error="l", micro=False).matrix]
    border = 2
    width = len(matrix[0]) + 2 * border
    padded = [[0] * width for _ in range(border)]
    padded += [[0] * border + [int(bool(v)) for v in row] + [0] * border for row in matrix]
    padded += [[0] * width for _ in range(border + 1)]
    # Dark modules are drawn light-on-dark inverted so the code scans on dark terminals too.
    chars = {(0, 0): "█", (1, 0): "▄", (0, 1): "▀", (1, 1): " "}
    lines = []
    for top, bottom in zip(padded[0::2], padded[1::2], strict=False):
        lines.append("".join(chars[(t, b)] for t, b in zip(top, bottom, strict=True)))
    return "\n".join(lines) + "\n"
