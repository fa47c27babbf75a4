"""QR codes of client configs (PNG for the linuxserver layout, text for a terminal)."""

from __future__ import annotations

import io

import segno


def qr_png(text: str, scale: int = 4) -> bytes:
    """A PNG QR code of `text`, deterministic for the same input."""
    buffer = io.BytesIO()
    segno.make(text, error="l", micro=False).save(buffer, kind="png", scale=scale, border=2)
    return buffer.getvalue()


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
