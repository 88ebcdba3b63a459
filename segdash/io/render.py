"""What results look like: the one rule for showing an image and colouring a segmentation.

Used by the dashboard (the canvas, the overlay download) and by ``segdash apply
--overlay``, so the same model and image give the same picture everywhere.

Display range: uint8 images are shown as they are; any other dtype (16-bit, float, bool)
is stretched per channel between its 0.5 and 99.5 percentiles, estimated on a fixed grid
of pixels (:func:`segdash.codes.sample_grid`), so a tile is shown exactly as the same
pixels of the whole image. Channels: grey shows as grey, two channels as red and green,
three or more as the RGB of the first three.

An overlay (``NAME_overlay.png``) is the image so displayed with each pixel's class colour
blended over it at :data:`OVERLAY_ALPHA`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..classes import ClassInfo, colorize
from ..codes import channel_range, sample_grid
from ..contract import drop_alpha

#: Opacity of class colours over the image in overlays.
OVERLAY_ALPHA = 0.5


def _yxc(image: Any) -> Any:
    return image[:, :, None] if image.ndim == 2 else drop_alpha(image)


def display_range(image: Any) -> tuple[np.ndarray, np.ndarray]:
    """Values shown as black and as full brightness, per channel.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` or ``(H, W, C)``, numpy or dask (only a grid sample is read).

    Returns
    -------
    low, high : numpy.ndarray
        ``(C,)`` float64 each, ``high > low``.
    """
    image = _yxc(image)
    c = image.shape[2]
    if image.dtype == np.uint8:
        return np.zeros(c), np.full(c, 255.0)
    sample = np.asarray(sample_grid(image)).astype(np.float64)
    low, span = channel_range(sample)
    return low, low + span


def to_display_rgb(image: Any, low: np.ndarray | None = None,
                   high: np.ndarray | None = None) -> np.ndarray:
    """An image as ``(H, W, 3)`` uint8 for display.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``, any numeric dtype.
    low, high : numpy.ndarray, optional
        ``(C,)`` display range (default :func:`display_range` of ``image``; pass the whole
        image's range when showing a tile or a downsampled copy).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8, C-contiguous.
    """
    arr = _yxc(np.asarray(image))
    if low is None or high is None:
        low, high = display_range(arr)
    shown = arr[:, :, :3]
    k = shown.shape[2]
    lo = np.asarray(low, dtype=np.float64)[:k]
    hi = np.asarray(high, dtype=np.float64)[:k]
    if shown.dtype == np.uint8 and np.all(lo == 0) and np.all(hi == 255):
        out = shown
    else:
        scale = (255.0 / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)
        values = (shown.astype(np.float32) - lo.astype(np.float32)) * scale
        out = np.clip(np.nan_to_num(values, nan=0.0) + np.float32(0.5), 0, 255).astype(np.uint8)
    if k == 1:
        out = np.repeat(out, 3, axis=2)
    elif k == 2:
        out = np.concatenate([out, np.zeros_like(out[:, :, :1])], axis=2)
    return np.ascontiguousarray(out)


def overlay_rgb(image: Any, labels: np.ndarray, classes: Iterable[ClassInfo],
                low: np.ndarray | None = None, high: np.ndarray | None = None) -> np.ndarray:
    """Class colours blended over the displayed image: ``(H, W, 3)`` uint8.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``.
    labels : numpy.ndarray
        ``(H, W)`` class ids; pixels of no listed class show the image alone.
    classes : iterable of ClassInfo
        Colours.
    low, high : numpy.ndarray, optional
        Display range (see :func:`to_display_rgb`).
    """
    base = to_display_rgb(image, low, high).astype(np.float32)
    colour = colorize(labels, classes)
    alpha = (colour[:, :, 3:] > 0) * np.float32(OVERLAY_ALPHA)
    blended = base * (1 - alpha) + colour[:, :, :3].astype(np.float32) * alpha
    return (blended + 0.5).astype(np.uint8)
