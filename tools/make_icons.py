#!/usr/bin/env python3
"""Draws the extension's icons (extension/icons/icon-{16,32,48,128}.png) with the standard
library alone: shapes as signed distances, 4x4 supersampled, written as PNG by zlib and struct.

A build-time script: its output is committed, so nothing runs it at install or run time.
Re-run it after changing the drawing: `python3 tools/make_icons.py`.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "extension" / "icons"
SIZES = (16, 32, 48, 128)
BACKGROUND = (21, 101, 192)  # a plain blue
FOREGROUND = (255, 255, 255)
SAMPLES = 4  # per axis, per pixel


def rounded_square(x: float, y: float) -> float:
    """Signed distance to the icon's rounded square (in units where the icon is 0..1)."""
    half, radius = 0.46, 0.18
    qx, qy = abs(x - 0.5) - (half - radius), abs(y - 0.5) - (half - radius)
    outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
    return outside + min(max(qx, qy), 0.0) - radius


def segment(x: float, y: float, ax: float, ay: float, bx: float, by: float) -> float:
    """Distance to the segment a-b."""
    px, py, dx, dy = x - ax, y - ay, bx - ax, by - ay
    t = max(0.0, min(1.0, (px * dx + py * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - t * dx, py - t * dy)


def arrows(x: float, y: float) -> float:
    """Distance to the glyph: two arrows, one each way (bytes out, bytes in), stroked."""
    strokes = (
        (0.25, 0.38, 0.75, 0.38), (0.75, 0.38, 0.63, 0.26), (0.75, 0.38, 0.63, 0.50),  # to the right
        (0.75, 0.62, 0.25, 0.62), (0.25, 0.62, 0.37, 0.50), (0.25, 0.62, 0.37, 0.74),  # to the left
    )
    return min(segment(x, y, *s) for s in strokes) - 0.055


def pixel(px: int, py: int, size: int) -> tuple[int, int, int, int]:
    inside = glyph = 0
    for sy in range(SAMPLES):
        for sx in range(SAMPLES):
            x, y = (px + (sx + 0.5) / SAMPLES) / size, (py + (sy + 0.5) / SAMPLES) / size
            if rounded_square(x, y) <= 0:
                inside += 1
                glyph += arrows(x, y) <= 0
    n = SAMPLES * SAMPLES
    if inside == 0:
        return (0, 0, 0, 0)
    mix = glyph / inside
    rgb = tuple(round(b + (f - b) * mix) for b, f in zip(BACKGROUND, FOREGROUND))
    return (*rgb, round(255 * inside / n))  # type: ignore[return-value]


def png(size: int) -> bytes:
    rows = b"".join(b"\x00" + bytes(c for px in range(size) for c in pixel(px, py, size)) for py in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for size in SIZES:
        (OUT / f"icon-{size}.png").write_bytes(png(size))
        print(f"wrote {OUT / f'icon-{size}.png'}")


if __name__ == "__main__":
    main()
