"""What results look like: the one rule for showing an image and colouring a segmentation.

Used by the dashboard (the canvas, the overlay download) and by ``segdash apply
--overlay``, so the same model and image give the same picture everywhere.

Display range: uint8 images are shown as they are; any other dtype (16-bit, float, bool)
is stretched per channel between its 0.5 and 99.5 percentiles, estimated on a fixed grid
of pixels (:func:`segdash.codes.sample_grid`), so a tile is shown exactly as the same
pixels of the whole image. Channels: grey shows as grey, two channels as red and green,
three or more as the RGB of the first three.

A user may choose otherwise per image (the dashboard's Display card): a
:class:`DisplaySettings` holds the range of each channel and the channels shown (one as
grey, two as red and green, three as RGB). It changes only what is shown, never the
features; its default, :meth:`DisplaySettings.auto`, is the rule above.

An overlay (``NAME_overlay.png``) is the image so displayed with each pixel's class colour
blended over it at :data:`OVERLAY_ALPHA`. The dashboard sends its overlay to the browser as
palette indices (:func:`class_indices`: one byte a pixel instead of four) whose colours are
the same classes' colours, blended by the browser.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..classes import ClassInfo, colorize
from ..codes import channel_range, sample_grid
from ..contract import drop_alpha

#: Opacity of class colours over the image in overlays.
OVERLAY_ALPHA = 0.5
#: The colour of "no class" in an indexed overlay's palette (index 0): transparent.
TRANSPARENT = "#00000000"


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


def value_bounds(image: Any) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest value of each channel (on the grid sample; uint8: 0 and 255):
    the extent a display range is chosen in.

    Returns
    -------
    low, high : numpy.ndarray
        ``(C,)`` float64 each, ``high > low``.
    """
    image = _yxc(image)
    c = image.shape[2]
    if image.dtype == np.uint8:
        return np.zeros(c), np.full(c, 255.0)
    flat = np.asarray(sample_grid(image), dtype=np.float64).reshape(-1, c)
    if not flat.size:
        return np.zeros(c), np.ones(c)
    with np.errstate(invalid="ignore"):
        lo, hi = np.nan_to_num(np.nanmin(flat, axis=0)), np.nan_to_num(np.nanmax(flat, axis=0))
    return lo, np.where(hi > lo, hi, lo + 1.0)


@dataclass(frozen=True)
class DisplaySettings:
    """How one image is shown: each channel's display range and which channels are shown.

    Attributes
    ----------
    low, high : tuple of float
        One per image channel (``C``), in the image's units: ``low`` shows as black,
        ``high`` as full brightness (``high > low``).
    channels : tuple of int
        Image channels shown, 1 to 3 of ``0..C-1``: one as grey, two as red and green,
        three as red, green and blue.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    channels: tuple[int, ...]

    def __post_init__(self) -> None:
        c = len(self.low)
        if c == 0 or len(self.high) != c:
            raise ValueError("display: one low and one high value per channel")
        if not all(np.isfinite(v) for v in (*self.low, *self.high)):
            raise ValueError("display: low and high must be finite numbers")
        if not all(h > lo for lo, h in zip(self.low, self.high, strict=True)):
            raise ValueError("display: high must exceed low in every channel")
        if not 1 <= len(self.channels) <= 3 or not all(
                isinstance(k, int) and 0 <= k < c for k in self.channels):
            raise ValueError(f"display: 1 to 3 channels shown, each one of 0..{c - 1}")

    @classmethod
    def auto(cls, image: Any, channels: Sequence[int] | None = None) -> DisplaySettings:
        """The default rule (see the module's docstring) for ``image`` ``(H, W[, C])``
        (numpy or dask: only a grid sample is read), showing ``channels`` (default: the
        first three)."""
        low, high = display_range(image)
        c = len(low)
        shown = tuple(range(min(c, 3))) if channels is None else tuple(int(k) for k in channels)
        return cls(tuple(map(float, low)), tuple(map(float, high)), shown)

    @property
    def n_channels(self) -> int:
        """Channels of the image these settings are for (``C``)."""
        return len(self.low)

    def with_range(self, channel: int, low: float, high: float) -> DisplaySettings:
        """These settings with channel ``channel`` shown between ``low`` and ``high``."""
        lows, highs = list(self.low), list(self.high)
        lows[channel], highs[channel] = float(low), float(high)
        return DisplaySettings(tuple(lows), tuple(highs), self.channels)

    def with_channels(self, channels: Sequence[int]) -> DisplaySettings:
        """These settings showing ``channels`` instead."""
        return DisplaySettings(self.low, self.high, tuple(int(k) for k in channels))

    def rgb(self, image: Any) -> np.ndarray:
        """``image`` as shown: ``(H, W, 3)`` uint8 (see :func:`to_display_rgb`)."""
        return to_display_rgb(image, np.array(self.low), np.array(self.high), self.channels)

    def to_dict(self) -> dict[str, list]:
        """The settings as JSON-ready lists (the project file's ``images[].display``)."""
        return {"channels": list(self.channels), "low": list(self.low),
                "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], n_channels: int) -> DisplaySettings:
        """Settings from :meth:`to_dict`'s form, for an image of ``n_channels`` channels.

        Raises
        ------
        ValueError
            Malformed, or not for ``n_channels`` channels (says what is wrong).
        """
        try:
            low = tuple(float(v) for v in data["low"])
            high = tuple(float(v) for v in data["high"])
            channels = tuple(data["channels"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("display needs lists 'channels', 'low' and 'high'") from None
        if len(low) != n_channels:
            raise ValueError(f"display: {len(low)} channel ranges for an image of "
                             f"{n_channels} channel(s)")
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in channels):
            raise ValueError("display: channels must be channel numbers")
        return cls(low, high, channels)


def to_display_rgb(image: Any, low: np.ndarray | None = None,
                   high: np.ndarray | None = None,
                   channels: Sequence[int] | None = None) -> np.ndarray:
    """An image as ``(H, W, 3)`` uint8 for display.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``, any numeric dtype.
    low, high : numpy.ndarray, optional
        ``(C,)`` display range (default :func:`display_range` of ``image``; pass the whole
        image's range when showing a tile or a downsampled copy).
    channels : sequence of int, optional
        Channels shown (see :class:`DisplaySettings`); default: the first three.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8, C-contiguous.
    """
    arr = _yxc(np.asarray(image))
    if low is None or high is None:
        low, high = display_range(arr)
    picked = list(range(min(arr.shape[2], 3))) if channels is None else [int(k) for k in channels]
    # the first channels in order are a view; any other choice is a copy
    in_order = picked == list(range(len(picked)))
    shown = arr[:, :, :len(picked)] if in_order else arr[:, :, picked]
    k = shown.shape[2]
    lo = np.asarray(low, dtype=np.float64)[picked]
    hi = np.asarray(high, dtype=np.float64)[picked]
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
                low: np.ndarray | None = None, high: np.ndarray | None = None,
                channels: Sequence[int] | None = None) -> np.ndarray:
    """Class colours blended over the displayed image: ``(H, W, 3)`` uint8.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` or ``(H, W, C)``.
    labels : numpy.ndarray
        ``(H, W)`` class ids; pixels of no listed class show the image alone.
    classes : iterable of ClassInfo
        Colours.
    low, high, channels : optional
        Display range and channels shown (see :func:`to_display_rgb`).
    """
    base = to_display_rgb(image, low, high, channels).astype(np.float32)
    colour = colorize(labels, classes)
    alpha = (colour[:, :, 3:] > 0) * np.float32(OVERLAY_ALPHA)
    blended = base * (1 - alpha) + colour[:, :, :3].astype(np.float32) * alpha
    return (blended + 0.5).astype(np.uint8)


def class_indices(labels: np.ndarray,
                  classes: Iterable[ClassInfo]) -> tuple[np.ndarray, tuple[str, ...]]:
    """A label image as palette indices and the palette: what :func:`colorize` shows, in a
    quarter of its bytes (the browser maps the indices through the palette).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer class ids; 0 and ids of no listed class show nothing.
    classes : iterable of ClassInfo
        Colours to use.

    Returns
    -------
    indices : numpy.ndarray
        ``(H, W)`` uint8 (uint16 beyond 255 classes): 0 where nothing shows, ``k`` where the
        ``k``-th listed class does.
    palette : tuple of str
        ``"#rrggbbaa"`` per index: :data:`TRANSPARENT`, then each class's colour, opaque.
    """
    labels = np.asarray(labels)
    classes = list(classes)
    dtype = np.uint8 if len(classes) < 256 else np.uint16
    top = max([int(labels.max(initial=0))] + [c.id for c in classes])
    lut = np.zeros(top + 1, dtype=dtype)
    for k, c in enumerate(classes, 1):
        lut[c.id] = k
    palette = (TRANSPARENT, *(c.color.lower() + "ff" for c in classes))
    return lut[labels], palette
