"""What only the browser needs: display sizes, the canvas overlays, coordinates, text.

Pure numpy (no Panel import), so it is tested without a browser. How an image is shown (its
display range, its channels) is :mod:`segdash.io.render`'s one rule, shared with the files
segdash writes; this module only decides how much of it the browser gets. The browser shows
images downsampled to at most :data:`MAX_DISPLAY_SIDE` pixels on their longer side; the
server keeps and computes at full resolution. Plot data coordinates are full-resolution image
pixels with y pointing up (``bounds=(0, 0, W, H)``): pixel column ``c`` spans ``[c, c + 1)``
in x, so its centre is ``x = c + 0.5``, and row ``r`` (from the top) has its centre at
``y = H - r - 0.5``.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from ..classes import ClassInfo, hex_to_rgb
from ..io.render import TRANSPARENT, class_indices

#: Longest side, in pixels, of the images sent to the browser (2000x2000 RGB takes ~2.5 s
#: to reach the canvas; beyond that the browser lags).
MAX_DISPLAY_SIDE = 1600
#: Colour of uncertain pixels in the uncertainty view.
UNCERTAINTY_COLOR = "#ff00ff"


def display_step(shape: Sequence[int], max_side: int = MAX_DISPLAY_SIDE) -> int:
    """Integer stride that brings an image of ``shape`` within ``max_side`` on each side."""
    return max(1, math.ceil(max(int(shape[0]), int(shape[1])) / max_side))


def downsample(arr: np.ndarray, step: int) -> np.ndarray:
    """Every ``step``-th row and column: ``ceil(H / step)`` by ``ceil(W / step)``.

    Nearest-neighbour on purpose: label images must keep their class ids, and the image
    shown under them must line up with them (both go through this function).
    """
    if step <= 1:
        return arr
    return arr[::step, ::step]


class Overlay(NamedTuple):
    """An overlay as the browser gets it: palette indices, the palette and an opacity.

    The browser colours each pixel ``palette[indices]`` (a Bokeh colour mapper) and draws
    the result at ``opacity``: a byte a pixel (two beyond 255 classes) crosses the
    websocket instead of four, and a change of opacity changes no pixel data.

    Attributes
    ----------
    indices : numpy.ndarray
        ``(H, W)`` uint8 or uint16.
    palette : tuple of str
        ``"#rrggbbaa"`` per index (index ``k`` shows as ``palette[k]``).
    opacity : float
        0..1, multiplies every palette colour's alpha.
    """

    indices: np.ndarray
    palette: tuple[str, ...]
    opacity: float

    def rgba(self) -> np.ndarray:
        """What the user sees of it: ``(H, W, 4)`` uint8, alpha times :attr:`opacity`."""
        lut = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5, 7)] for c in self.palette],
                       dtype=np.float32)
        lut[:, 3] *= _unit(self.opacity)
        return np.round(lut).astype(np.uint8)[self.indices]


#: Levels of the uncertainty and probability views (their indices are 0..LEVELS - 1).
LEVELS = 256


def empty_overlay() -> Overlay:
    """Nothing shown: one transparent pixel."""
    return Overlay(np.zeros((1, 1), np.uint8), (TRANSPARENT,), 1.0)


def segmentation_overlay(
    segmentation: np.ndarray, classes: Iterable[ClassInfo], opacity: float
) -> Overlay:
    """Each pixel in its class colour at ``opacity`` (0..1); unlabelled pixels and ids of
    no listed class stay transparent (:func:`segdash.io.render.class_indices`)."""
    indices, palette = class_indices(segmentation, classes)
    return Overlay(indices, palette, _unit(opacity))


def _ramp(color: str) -> tuple[str, ...]:
    """``color`` from transparent (index 0) to opaque (index LEVELS - 1)."""
    return tuple(f"{color.lower()}{round(255 * k / (LEVELS - 1)):02x}" for k in range(LEVELS))


def _levels(values: np.ndarray) -> np.ndarray:
    """0..1 values as ramp indices, uint8 (NaN shows nothing)."""
    level = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)
    return (level * np.float32(LEVELS - 1) + np.float32(0.5)).astype(np.uint8)


def uncertainty_overlay(uncertainty: np.ndarray, n_classes: int, opacity: float) -> Overlay:
    """:data:`UNCERTAINTY_COLOR`, more opaque where the model is unsure (256 levels).

    ``uncertainty`` is ``1 - max probability``, at most ``1 - 1/K`` for K classes; it is
    scaled to 0..1 by that maximum so that "as unsure as it can be" is fully coloured.
    """
    top = 1.0 - 1.0 / max(int(n_classes), 2)
    return Overlay(_levels(np.asarray(uncertainty, dtype=np.float32) / np.float32(top)),
                   _ramp(UNCERTAINTY_COLOR), _unit(opacity))


def probability_overlay(probability: np.ndarray, color: str, opacity: float) -> Overlay:
    """``color`` (``"#rrggbb"``, the class's), as opaque as the class is probable
    (``probability`` 0..1, ``(H, W)``; 256 levels) times ``opacity``."""
    return Overlay(_levels(probability), _ramp(color), _unit(opacity))


def legend_html(label: str, color: str, opacity: float) -> str:
    """A colour bar from 0 to 1 for an overlay of ``color`` whose opacity grows with a
    value (the uncertainty and probability views); ``label`` (a class name may be in it)
    is escaped."""
    r, g, b = hex_to_rgb(color)
    top = _unit(opacity)
    return (
        '<div class="segdash-legend-bar" style="display:flex;align-items:center;gap:6px;'
        'font-size:13px"><span>0</span><span style="display:inline-block;width:160px;'
        f'height:12px;border:1px solid #888;background:linear-gradient(to right, '
        f'rgba({r},{g},{b},0), rgba({r},{g},{b},{top:.2f}))"></span><span>1</span>'
        f'<span class="segdash-legend-label">{html.escape(str(label))}</span></div>')


def _unit(value: float) -> float:
    return min(max(float(value), 0.0), 1.0)


def data_to_image(
    xs: Iterable[float], ys: Iterable[float], height: int
) -> tuple[list[float], list[float]]:
    """Plot data coordinates (y up) to image pixels (x = column, y = row from the top)."""
    return ([float(x) - 0.5 for x in xs], [height - float(y) - 0.5 for y in ys])


def image_to_data(
    xs: Iterable[float], ys: Iterable[float], height: int
) -> tuple[list[float], list[float]]:
    """Image pixels (x = column, y = row from the top) to plot data coordinates (y up)."""
    return ([float(x) + 0.5 for x in xs], [height - float(y) - 0.5 for y in ys])


def text_color(background: str) -> str:
    """Black or white, whichever reads better on the ``"#rrggbb"`` background."""
    r, g, b = hex_to_rgb(background)
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#000000" if luminance > 140 else "#ffffff"


# Characters that start Markdown formatting (or Panel's math, between dollars) in a line,
# and those that do so at the start of a line (headings, lists, numbered lists).
_INLINE_SPECIAL = re.compile(r"([\\`*_\[\]~|$])")
_LINE_START_SPECIAL = re.compile(r"^(\s*)([#+\-=]|\d+(?=[.)]))", re.MULTILINE)


def markdown_text(text: str) -> str:
    """``text`` (a file name, a message) to put in Markdown so that it shows literally.

    HTML is written as entities (a file named ``<img onerror=...>.png`` stays a name) and
    Markdown punctuation is backslash-escaped (``*draft*.png`` is not set in italics).
    """
    escaped = _INLINE_SPECIAL.sub(r"\\\1", html.escape(str(text), quote=False))
    return _LINE_START_SPECIAL.sub(_escape_line_start, escaped)


def _escape_line_start(match: re.Match[str]) -> str:
    indent, marker = match.group(1), match.group(2)
    if marker.isdigit():  # "1. name": escape the dot or bracket after the number
        return f"{indent}{marker}\\"
    return f"{indent}\\{marker}"


def html_text(text: str) -> str:
    """``text`` to put in HTML (notifications render their message as HTML)."""
    return html.escape(str(text))
