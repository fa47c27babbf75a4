"""QR codes of client configs (PNG for the linuxserver layout, text for a terminal)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import os
import shutil
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor

import segno

# The `qrencode` C tool makes a PNG in ~2 ms where pure-Python segno takes ~12 ms; it reads the config
# (which holds a private key) from stdin, never argv. Without it, segno is used. Faster still: its library,
# libqrencode, called in this process (about 0.2 ms a code, no process per code, the key never leaves it).
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


class _QRcode(ctypes.Structure):
    _fields_ = [("version", ctypes.c_int), ("width", ctypes.c_int), ("data", ctypes.POINTER(ctypes.c_ubyte))]


@functools.cache
def _library() -> ctypes.CDLL | None:
    """libqrencode, when installed (the `qrencode` package brings it), else None."""
    name = ctypes.util.find_library("qrencode")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.QRcode_encodeString.restype = ctypes.POINTER(_QRcode)
    lib.QRcode_encodeString.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.QRcode_free.argtypes = [ctypes.POINTER(_QRcode)]
    lib.QRcode_free.restype = None
    return lib


_QR_ECLEVEL_L, _QR_MODE_8 = 0, 2
_DARK_TO_BIT = bytes(0 if i & 1 else 1 for i in range(256))  # a module's byte -> 0 (black) or 1 (white)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


_MODULE_TO_HEX = bytes(ord("0") if i & 1 else ord("f") for i in range(256))  # scale 4: a module is a nibble
# zlib level 3: a quarter of the time of level 9 for about 15% more bytes (1.0 KB a code instead of 0.9).
_PNG_LEVEL = 3


def matrix_png(modules: bytes, width: int, scale: int = 4, border: int = 2) -> bytes:
    """A 1-bit greyscale PNG of a QR matrix (`width` rows of `width` bytes, bit 0 set for a dark module), each
    module `scale` pixels, with a light border of `border` modules. Deterministic."""
    side = (width + 2 * border) * scale
    row_bytes = (side + 7) // 8
    blank = b"\0" + int("1" * side + "0" * (row_bytes * 8 - side), 2).to_bytes(row_bytes, "big")
    rows = [blank * (border * scale)]
    if scale == 4:
        # Each module is four pixels: one hex digit (f light, 0 dark), so a row is bytes.fromhex of the matrix row.
        edge = b"f" * border
        odd = b"0" if (width + 2 * border) % 2 else b""
        for y in range(width):
            digits = edge + modules[y * width:(y + 1) * width].translate(_MODULE_TO_HEX) + edge + odd
            rows.append((b"\0" + bytes.fromhex(digits.decode())) * scale)
    else:
        light = b"1" * (border * scale)
        pad = b"0" * (row_bytes * 8 - side)
        for y in range(width):
            bits = modules[y * width:(y + 1) * width].translate(_DARK_TO_BIT).translate(b"01" + bytes(254))
            line = light + bits.replace(b"1", b"1" * scale).replace(b"0", b"0" * scale) + light + pad
            rows.append((b"\0" + int(line, 2).to_bytes(row_bytes, "big")) * scale)
    rows.append(blank * (border * scale))
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"".join(rows), _PNG_LEVEL)) + _png_chunk(b"IEND", b""))


def _library_png(lib: ctypes.CDLL, text: str, scale: int) -> bytes | None:
    """The QR code libqrencode makes of `text` as `qrencode -l L` does (8-bit mode hint, case-sensitive), as a PNG;
    None when it does not fit in a QR code."""
    if not fits_in_qr(text):
        return None
    code = lib.QRcode_encodeString(text.encode(), 0, _QR_ECLEVEL_L, _QR_MODE_8, 1)
    if not code:
        return _segno_or_none(text, scale)
    try:
        width = code.contents.width
        modules = ctypes.string_at(code.contents.data, width * width)
    finally:
        lib.QRcode_free(code)
    return matrix_png(modules, width, scale)


def qr_pngs(texts: list[str], scale: int = 4) -> list[bytes | None]:
    """PNG QR codes of many texts (None for a text too large for a QR code): libqrencode in this process when
    installed, else qrencode processes on every core, else segno."""
    if not texts:
        return []
    lib = _library()
    if lib is not None:
        return [_library_png(lib, text, scale) for text in texts]
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
