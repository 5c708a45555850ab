#!/usr/bin/env python3
"""Draws the built-in themes' logo.png and favicon.png (a keyhole on a rounded square), with the standard
library only: `python3 issuer/web/logos.py` rewrites them next to this file."""

import os
import struct
import zlib

THEMES = {
    # (square colour, keyhole colour)
    "light": ((0x24, 0x56, 0xD3), (0xFF, 0xFF, 0xFF)),
    "dark": ((0x7A, 0xA2, 0xFF), (0x13, 0x18, 0x21)),
}
SUPERSAMPLE = 4


def inside_square(x, y, radius):
    """Rounded unit square, corner radius `radius`."""
    cx = min(max(x, radius), 1 - radius)
    cy = min(max(y, radius), 1 - radius)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius**2


def inside_keyhole(x, y):
    if (x - 0.5) ** 2 + (y - 0.40) ** 2 <= 0.15**2:
        return True
    # A trapezoid widening downwards from the circle's centre.
    if 0.40 <= y <= 0.78:
        half = 0.06 + (y - 0.40) * 0.16
        return abs(x - 0.5) <= half
    return False


def pixel(px, py, size, square, hole):
    acc = [0.0, 0.0, 0.0, 0.0]
    n = SUPERSAMPLE
    for sy in range(n):
        for sx in range(n):
            x = (px + (sx + 0.5) / n) / size
            y = (py + (sy + 0.5) / n) / size
            if not inside_square(x, y, 0.22):
                continue
            colour = hole if inside_keyhole(x, y) else square
            for i in range(3):
                acc[i] += colour[i]
            acc[3] += 255
    covered = acc[3] / 255
    if covered == 0:
        return (0, 0, 0, 0)
    return tuple(round(acc[i] / covered) for i in range(3)) + (round(acc[3] / (n * n)),)


def png(size, square, hole):
    rows = b""
    for py in range(size):
        rows += b"\x00" + b"".join(bytes(pixel(px, py, size, square, hole)) for px in range(size))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    for theme, (square, hole) in THEMES.items():
        for name, size in (("logo.png", 96), ("favicon.png", 32)):
            with open(os.path.join(here, "themes", theme, name), "wb") as f:
                f.write(png(size, square, hole))
