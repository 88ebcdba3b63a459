"""A synthetic whole-slide image for the large-image benchmark and browser test.

:func:`write_slide` writes a pyramidal OME-TIFF (``segdash.io.write.write_pyramid_tiff``)
of two textures in :data:`SQUARE`-pixel squares, alternating like a checkerboard: smooth
warm tissue and grey stripes 8 pixels apart. Any view of a few squares shows both, so a
model painted in one place has something to find everywhere. Levels sample the pattern at
their pixel centres (cheap: nothing is read back), so a 16384² RGB slide takes seconds.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from segdash.io.write import write_pyramid_tiff

#: Side of the checkerboard's squares, in full-resolution pixels.
SQUARE = 1024
#: Period of the stripes, in full-resolution pixels.
PERIOD = 8


def slide_class(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The texture (1 smooth, 2 striped) at full-resolution pixels ``rows x cols``."""
    return (((rows[:, None] // SQUARE) + (cols[None, :] // SQUARE)) % 2 + 1).astype(np.uint8)


def slide_tile(level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Pixels rows ``[y0, y1)``, columns ``[x0, x1)`` of pyramid level ``level``, RGB uint8."""
    f = 2 ** level
    period = max(2 * SQUARE // f, 1)  # the checkerboard repeats: tiles repeat too
    return _tile(level, y0 % period, x0 % period, y1 - y0, x1 - x0)


@functools.lru_cache(maxsize=64)
def _tile(level: int, y0: int, x0: int, th: int, tw: int) -> np.ndarray:
    f = 2 ** level
    y1, x1 = y0 + th, x0 + tw
    rows = (np.arange(y0, y1) + 0.5) * f
    cols = (np.arange(x0, x1) + 0.5) * f
    r, c = rows.astype(np.int64), cols.astype(np.int64)
    kind = slide_class(r, c)
    stripes = ((c // (PERIOD // 2)) % 2).astype(np.float32)[None, :]
    grey = 60 + 140 * np.broadcast_to(stripes, kind.shape)
    out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    smooth = kind == 1
    for ch, (a, b) in enumerate(((220, grey), (170, grey), (150, grey))):
        out[:, :, ch] = np.where(smooth, a, b).astype(np.uint8)
    return out


def write_slide(path: str | Path, side: int = 16384) -> Path:
    """Write a ``side x side`` RGB pyramidal OME-TIFF of the pattern; returns ``path``."""
    write_pyramid_tiff(path, (side, side, 3), np.uint8, slide_tile)
    return Path(path)
