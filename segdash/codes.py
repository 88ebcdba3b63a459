"""Feature codes: uint8 levels that float features are quantised to.

Trees only compare a feature with thresholds, so 256 well-spread levels lose little and
make the features four times smaller and faster to classify. A :class:`Quantizer` holds one
affine map and companding kind per feature; the compiled ``q_*`` functions are shared with
feature families that write codes directly (``basic``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from .parallel import run_parallel

#: Pixels sampled to estimate channel and feature ranges (on a fixed grid: the same image
#: always gives the same range).
RANGE_SAMPLE = 1 << 16

@numba.njit(nogil=True, inline="always")
def q_linear(u):  # pragma: no cover - compiled
    if u != u:  # NaN
        u = np.float32(0.0)
    c = min(max(u * np.float32(255.0) + np.float32(0.5), np.float32(0.0)), np.float32(255.0))
    return np.uint8(c)


@numba.njit(nogil=True, inline="always")
def q_root(u):  # pragma: no cover - compiled
    if u != u:
        u = np.float32(0.0)
    u = min(max(u, np.float32(0.0)), np.float32(1.0))
    return np.uint8(np.sqrt(np.sqrt(u)) * np.float32(255.0) + np.float32(0.5))


@numba.njit(nogil=True, inline="always")
def q_signed_root(u):  # pragma: no cover - compiled
    if u != u:
        u = np.float32(0.0)
    a = min(abs(u), np.float32(1.0))
    r = np.floor(np.sqrt(np.sqrt(a)) * np.float32(127.0) + np.float32(0.5))
    if u < np.float32(0.0):
        r = -r
    return np.uint8(np.float32(128.0) + r)


@numba.njit(nogil=True, inline="always")
def _quantize(v, off, scale, kind):  # pragma: no cover - compiled
    u = (v - off) * scale
    if kind == 0:
        return q_linear(u)
    if kind == 1:
        return q_root(u)
    return q_signed_root(u)


# -- quantizer ----------------------------------------------------------------------------

#: Quantizer kinds: ``u = (v - offset) * scale`` then
#: linear: ``round(255 u)``; root: ``round(255 u**0.25)`` (u >= 0, for magnitudes spanning
#: decades); signed root: ``128 + sign(u) round(127 |u|**0.25)``. All clipped to 0..255.
LINEAR, ROOT, SIGNED_ROOT = 0, 1, 2


@dataclass
class Quantizer:
    """Maps float32 features to uint8 codes, one affine map and companding per feature.

    Trees only compare a feature with thresholds, so 256 well-spread levels lose little and
    make the features four times smaller and faster to classify.
    """

    offset: np.ndarray  # (F,) float32
    scale: np.ndarray  # (F,) float32
    kind: np.ndarray  # (F,) int8

    def __post_init__(self) -> None:
        self.offset = np.ascontiguousarray(self.offset, dtype=np.float32)
        self.scale = np.ascontiguousarray(self.scale, dtype=np.float32)
        self.kind = np.ascontiguousarray(self.kind, dtype=np.int8)
        if not (self.offset.shape == self.scale.shape == self.kind.shape
                and self.offset.ndim == 1):
            raise ValueError("quantizer arrays must be 1-D and of equal length")
        if not np.isin(self.kind, (LINEAR, ROOT, SIGNED_ROOT)).all():
            raise ValueError("unknown quantizer kind")

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """uint8 codes of ``(..., F)`` float features (same shape)."""
        feats = np.ascontiguousarray(features, dtype=np.float32)
        if feats.shape[-1] != len(self):
            raise ValueError(f"the quantizer expects {len(self)} features, got {feats.shape[-1]}")
        flat = feats.reshape(-1, len(self))
        out = np.empty(flat.shape, np.uint8)

        def job(a, b):
            _quantize_rows(flat, out, self.offset, self.scale, self.kind, a, b)

        run_parallel(job, flat.shape[0])
        return out.reshape(feats.shape)

    def subset(self, start: int, stop: int) -> Quantizer:
        return Quantizer(self.offset[start:stop], self.scale[start:stop], self.kind[start:stop])

    def to_dict(self) -> dict:
        return {"offset": self.offset, "scale": self.scale, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> Quantizer:
        return cls(np.asarray(d["offset"]), np.asarray(d["scale"]), np.asarray(d["kind"]))

    @classmethod
    def concatenate(cls, parts: Sequence[Quantizer]) -> Quantizer:
        return cls(np.concatenate([p.offset for p in parts]),
                   np.concatenate([p.scale for p in parts]),
                   np.concatenate([p.kind for p in parts]))

    @classmethod
    def from_sample(cls, sample: np.ndarray) -> Quantizer:
        """Linear codes over each feature's 0.1 %..99.9 % range in an ``(N, F)`` sample."""
        sample = np.asarray(sample, dtype=np.float64)
        lo = np.nanpercentile(sample, 0.1, axis=0) if len(sample) else np.zeros(sample.shape[1])
        hi = np.nanpercentile(sample, 99.9, axis=0) if len(sample) else np.ones(sample.shape[1])
        lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)
        span = np.where(hi > lo, hi - lo, 1.0)
        return cls(lo, 1.0 / span, np.full(sample.shape[1], LINEAR))


@numba.njit(nogil=True, cache=True)
def _quantize_rows(x, out, off, scale, kind, a, b):  # pragma: no cover - compiled
    for p in range(a, b):
        xp, op = x[p], out[p]
        for k in range(x.shape[1]):
            op[k] = _quantize(xp[k], off[k], scale[k], kind[k])



def sample_step(shape: Sequence[int], n: int = RANGE_SAMPLE) -> int:
    """Stride of the fixed grid that samples about ``n`` pixels of an image of ``shape``."""
    return max(1, int(np.sqrt(int(shape[0]) * int(shape[1]) / n)))


def sample_grid(image: Any) -> Any:
    """Every :func:`sample_step`-th row and column of an ``(H, W, ...)`` array.

    The same image always gives the same sample, and a numpy array and a dask array of the
    same pixels give the same sample (the batch's display range equals the dashboard's).
    """
    s = sample_step(image.shape)
    return image[::s, ::s]


def channel_range(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Low end and span of each channel of an ``(H, W, C)`` image (0.5 and 99.5 percentiles).

    Estimated on :func:`sample_grid`; NaNs are ignored; a flat channel gets a span of 1.

    Returns
    -------
    low, span : numpy.ndarray
        ``(C,)`` float64 each, in the image's units.
    """
    flat = np.asarray(sample_grid(image), dtype=np.float64).reshape(-1, image.shape[-1])
    with np.errstate(invalid="ignore"):
        lo, hi = np.nanpercentile(flat, [0.5, 99.5], axis=0) if flat.size else (
            np.zeros(image.shape[-1]), np.ones(image.shape[-1]))
    lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)
    span = np.where(hi > lo, hi - lo, 1.0)
    return lo.astype(np.float64), span.astype(np.float64)
