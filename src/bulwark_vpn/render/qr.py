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


# A version-40 code at the lowest error correction holds 2,953 bytes; a config with hundreds of AllowedIPs does not
# fit. Such a config gets no QR code (and a warning), never a failure.
MAX_QR_BYTES = 2953


class TooLargeForQR(ValueError):
    """The text does not fit in a QR code."""


def fits_in_qr(text: str) -> bool:
    return len(text.encode()) <= MAX_QR_BYTES


def qr_png(text: str, scale: int = 4) -> bytes:
    """A PNG QR code of `text`, deterministic for the same input; TooLargeForQR when it cannot hold it."""
    buffer = io.BytesIO()
    try:
        segno.make(text, error="l", micro=False).save(buffer, kind="png", scale=scale, border=2)
    except segno.DataOverflowError:
        raise TooLargeForQR(f"{len(text.encode())} bytes do not fit in a QR code") from None
    return buffer.getvalue()


def qr_svg(text: str, scale: int = 4) -> str:
    """An SVG QR code of `text` (for the web page); TooLargeForQR when it cannot hold it."""
    buffer = io.BytesIO()
    try:
        segno.make(text, error="l", micro=False).save(buffer, kind="svg", scale=scale, border=2, xmldecl=False,
                                                        svgns=True, title="WireGuard configuration")
    except segno.DataOverflowError:
        raise TooLargeForQR(f"{len(text.encode())} bytes do not fit in a QR code") from None
    return buffer.getvalue().decode()


def _qrencode_png(text: str, scale: int) -> bytes | None:
    if not fits_in_qr(text):
        return None
    result = subprocess.run(
        [QRENCODE, "-t", "PNG", "-l", "L", "-s", str(scale), "-m", "2", "-o", "-"],
        input=text.encode(), capture_output=True, check=False,
    )
    if result.returncode != 0 or not result.stdout.startswith(b"\x89PNG"):
        return _segno_or_none(text, scale)
    return result.stdout


def _segno_or_none(text: str, scale: int) -> bytes | None:
    try:
        return qr_png(text, scale)
    except TooLargeForQR:
        return None


def qr_pngs(texts: list[str], scale: int = 4) -> list[bytes | None]:
    """PNG QR codes of many texts (None for a text too large for a QR code): qrencode processes on every core
    when installed, else segno."""
    if not texts:
        return []
    if shutil.which(QRENCODE) is None:
        return [_segno_or_none(text, scale) for text in texts]
    if len(texts) == 1:
        return [_qrencode_png(texts[0], scale)]
    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(lambda text: _qrencode_png(text, scale), texts))


def qr_terminal(text: str) -> str:
    """A QR code drawn with Unicode half blocks, two modules per character row; TooLargeForQR when it does not fit."""
    try:
        code = segno.make(text, error="l", micro=False)
    except segno.DataOverflowError:
        raise TooLargeForQR(f"{len(text.encode())} bytes do not fit in a QR code") from None
    matrix = [list(row) for row in code.matrix]
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
