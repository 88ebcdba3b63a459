"""The built-in ``basic`` features: intensity, edges, curvature and texture per scale.

Per channel and per scale sigma, the three families of scikit-image's
``multiscale_basic_features`` -- the Gaussian-smoothed image (intensity), the gradient
magnitude of the smoothed image (edges) and the two eigenvalues of its Hessian (texture) --
and three texture families of ilastik's and QuPath's default banks, all from the same
cascade of Gaussians: the Laplacian of the smoothed image (blobs), the local standard
deviation (Gaussian-weighted, from the image and its square smoothed at sigma) and the
structure tensor (the image's gradient products smoothed at sigma: strength along and
across the dominant orientation, and coherence).

The filters are compiled (numba) and run on all cores; large scales are smoothed by a
cascade of dilated kernels whose cost does not grow with sigma (see
:mod:`segdash.filters`). Each pixel's features are computed with the same float32
operations wherever it lies, so features of a crop equal the crop of the features, exactly,
``halo`` pixels away from the crop's border.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np
import param

from ..codes import LINEAR, ROOT, SIGNED_ROOT, Quantizer
from ..contract import FeatureExtractor
from ..filters import Step, smooth_all, smoothing_plan
from .basic_kernels import FAMILY_SIZE, FLAG_ORDER, gradient_products, square, write_feature_rows

#: Two nested central differences (Hessian) reach this far beyond the smoothing (the
#: structure tensor's one difference before smoothing reaches less).
_DERIVATIVE_REACH = 2
#: Names of each family's features, in output order.
_FAMILY_NAMES = {
    "intensity": ["intensity"],
    "edges": ["edges"],
    "texture": ["texture max", "texture min"],
    "laplacian": ["laplacian"],
    "deviation": ["deviation"],
    "structure": ["structure max", "structure min", "coherence"],
}
#: Families computed once on the mean of the channels with ``texture_channels="mean"``.
_MEAN_FAMILIES = ("laplacian", "deviation", "structure")


def _channel_mean(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 mean of the channels of an ``(H, W, C)`` image, pixel by pixel
    with the same operations wherever the pixel lies."""
    acc = np.array(image[:, :, 0], dtype=np.float32)
    for c in range(1, image.shape[2]):
        acc += image[:, :, c]
    acc *= np.float32(1.0 / image.shape[2])
    return acc


def sigmas(sigma_min: float, sigma_max: float, num_sigma: int | None = None) -> np.ndarray:
    """Scales from ``sigma_min`` to ``sigma_max``, geometrically spaced.

    Parameters
    ----------
    sigma_min, sigma_max : float
        Smallest and largest Gaussian sigma, in pixels.
    num_sigma : int, optional
        Number of scales; by default one per power of two (0.5, 1, 2, ..., 16).

    Returns
    -------
    numpy.ndarray
        ``(num_sigma,)`` float64 sigmas in pixels.
    """
    if sigma_max < sigma_min:
        sigma_min, sigma_max = sigma_max, sigma_min
    if num_sigma is None:
        num_sigma = int(math.floor(math.log2(sigma_max) - math.log2(sigma_min) + 1e-9)) + 1
    return np.logspace(math.log2(sigma_min), math.log2(sigma_max), num=max(num_sigma, 1), base=2)


class BasicFeatures(FeatureExtractor):
    """Multiscale intensity, edge, curvature and texture features, per channel.

    Output layout, for each channel then each sigma: ``intensity``, ``edges``,
    ``texture max``, ``texture min``, ``laplacian``, ``deviation``, ``structure max``,
    ``structure min``, ``coherence`` (the families switched off are skipped). With
    ``texture_channels="mean"`` and several channels, the last three families are left out
    of the channels and computed once, on the mean of the channels, after them (named
    ``mean sigma=...``).
    """

    intensity = param.Boolean(True, doc="Gaussian-smoothed intensity at each scale.")
    edges = param.Boolean(True, doc="Gradient magnitude of the smoothed image at each scale.")
    texture = param.Boolean(True, doc="Eigenvalues of the Hessian of the smoothed image.")
    laplacian = param.Boolean(True, doc="Laplacian of the smoothed image (blobs, spots).")
    deviation = param.Boolean(True, doc="Local standard deviation in a Gaussian window of "
                                        "each scale (contrast of the neighbourhood).")
    structure = param.Boolean(True, doc="Structure tensor at each scale: gradient strength "
                                        "along and across the dominant orientation, and "
                                        "coherence (1: stripes, 0: no orientation).")
    texture_channels = param.Selector(
        default="mean", objects=["mean", "each"],
        doc="Channels the laplacian, deviation and structure families are computed on: the "
            "mean of the channels (one set, a fraction of the cost on colour images) or each "
            "channel.")
    texture_sigma_max = param.Number(
        8.0, bounds=(0.3, 64), softbounds=(0.5, 32),
        doc="Largest scale of the laplacian, deviation and structure families, in pixels: "
            "wider windows blur thin structures into their surroundings.")
    sigma_min = param.Number(0.5, bounds=(0.3, 64), softbounds=(0.5, 32),
                             doc="Smallest scale, in pixels.")
    sigma_max = param.Number(16.0, bounds=(0.3, 64), softbounds=(0.5, 32),
                             doc="Largest scale, in pixels.")
    num_sigma = param.Integer(None, bounds=(1, 32), allow_None=True,
                              doc="Number of scales (default: one per power of two).")

    @property
    def sigmas(self) -> np.ndarray:
        return sigmas(self.sigma_min, self.sigma_max, self.num_sigma)

    @property
    def code_bytes(self) -> int:
        """Peak bytes per feature and pixel of :meth:`compute_codes`: one byte per feature
        plus the float32 smoothed scales of one pass (one cascade, one more for the square
        of the channel, three more for the gradient products)."""
        ns, nst = len(self.sigmas), self._texture_scales()
        per_pass = sum(FAMILY_SIZE[f] * (nst if f in _MEAN_FAMILIES else ns)
                       for f in self._enabled())
        if per_pass == 0:
            return 1
        cascades = ns + (self.deviation + 3 * self.structure) * nst
        return 1 + math.ceil(4 * cascades / per_pass)

    def _texture_scales(self) -> int:
        """How many of the first scales the laplacian, deviation and structure have."""
        return int(np.count_nonzero(self.sigmas <= self.texture_sigma_max * (1 + 1e-9)))

    def _scale_families(self, fams: list[str], k: int) -> list[str]:
        """The families of ``fams`` computed at the ``k``-th scale."""
        tex = k < self._texture_scales()
        return [f for f in fams if tex or f not in _MEAN_FAMILIES]

    def _plan(self) -> list[Step]:
        return smoothing_plan([float(s) for s in self.sigmas])

    @property
    def halo(self) -> int:
        return max(st.reach for st in self._plan()) + _DERIVATIVE_REACH

    def _enabled(self) -> list[str]:
        return [f for f in FLAG_ORDER if getattr(self, f)]

    def _layout(self, n_channels: int) -> list[tuple[int, list[str]]]:
        """The passes over the image: ``(channel, families)``, channel -1 for the mean of
        the channels, in output order."""
        fams = self._enabled()
        if self.texture_channels == "each" or n_channels == 1:
            return [(c, fams) for c in range(n_channels)]
        own = [f for f in fams if f not in _MEAN_FAMILIES]
        shared = [f for f in fams if f in _MEAN_FAMILIES] if self._texture_scales() else []
        passes = [(c, own) for c in range(n_channels)] if own else []
        return passes + ([(-1, shared)] if shared else [])

    def feature_names(self, n_channels: int) -> list[str]:
        return [
            f"{'mean' if c < 0 else f'ch{c}'} sigma={s:g} {name}"
            for c, fams in self._layout(n_channels)
            for k, s in enumerate(self.sigmas)
            for f in self._scale_families(fams, k)
            for name in _FAMILY_NAMES[f]
        ]

    def feature_groups(self, n_channels: int) -> list[tuple[str, float | None]]:
        """``(family, sigma)`` of each feature, in output order; the families are the
        names of the on/off settings (``intensity``, ..., ``structure``)."""
        return [
            (f, float(s))
            for _, fams in self._layout(n_channels)
            for k, s in enumerate(self.sigmas)
            for f in self._scale_families(fams, k)
            for _ in _FAMILY_NAMES[f]
        ]

    def trimmed_settings(self, families: Collection[str],
                         scales: Collection[float]) -> dict[str, Any] | None:
        """These settings with only ``families`` switched on and the scales from the
        smallest to the largest of ``scales`` (the scales in between are kept: the
        cascade computes them anyway). None when no family of ``basic`` is named."""
        keep = [f for f in FLAG_ORDER if f in set(families)]
        if not keep:
            return None
        out: dict[str, Any] = {f: f in keep for f in FLAG_ORDER}
        if scales:
            lo, hi = float(min(scales)), float(max(scales))
            out["sigma_min"], out["sigma_max"] = lo, hi
            if self.num_sigma is not None:
                mine = self.sigmas
                out["num_sigma"] = max(1, int(np.count_nonzero(
                    (mine >= lo * (1 - 1e-9)) & (mine <= hi * (1 + 1e-9)))))
        return out

    # -- computation -------------------------------------------------------------------

    def compute(self, image: np.ndarray) -> np.ndarray:
        return self._run(image, None)

    def compute_codes(self, image: np.ndarray, quantizer: Quantizer) -> np.ndarray:
        """uint8 feature codes of a prepared image: ``quantizer(self.compute(image))``.

        Computed channel by channel without the float32 features, so it needs a quarter of
        their memory.
        """
        if len(quantizer) != len(self.feature_names(image.shape[2])):
            raise ValueError("the quantizer does not match these feature settings")
        return self._run(image, quantizer)

    def compute_codes_inner(self, image: np.ndarray, quantizer: Quantizer,
                            context: tuple[int, int]) -> np.ndarray:
        """uint8 codes of ``image[cy:H - cy, cx:W - cx]`` using the ``context`` pixels
        around it instead of padding (see :meth:`FeatureExtractor.compute_codes_inner`):
        equal to the crop of :meth:`compute_codes` of the image the tile was cut from."""
        if len(quantizer) != len(self.feature_names(image.shape[2])):
            raise ValueError("the quantizer does not match these feature settings")
        return self._run(image, quantizer, context)

    def _run(self, image: np.ndarray, quantizer: Quantizer | None,
             context: tuple[int, int] = (0, 0)) -> np.ndarray:
        pad = self.halo
        cy, cx = (int(v) for v in context)
        for v in (cy, cx):
            if 0 < v < pad:
                raise ValueError(f"context of {v} pixels is less than the halo ({pad}): "
                                 "give 0 or at least the halo")
        # An axis with context is cut to the pixels its inner part needs and not padded;
        # an axis without is mirror-padded.
        ky, kx = (cy - pad if cy else 0), (cx - pad if cx else 0)
        image = image[ky:image.shape[0] - ky, kx:image.shape[1] - kx]
        py, px = (0 if cy else pad), (0 if cx else pad)  # mirror padding still needed
        h, w, n_ch = image.shape
        h, w = h + 2 * py - 2 * pad, w + 2 * px - 2 * pad
        steps = self._plan()
        ns = len(steps)
        layout = self._layout(n_ch)
        dtype = np.float32 if quantizer is None else np.uint8
        nst = self._texture_scales()
        per_pass = [sum(FAMILY_SIZE[f] for k in range(ns) for f in self._scale_families(fams, k))
                    for _, fams in layout]
        n_out = sum(per_pass)
        out = np.empty((h, w, n_out), dtype=dtype)
        if n_out == 0:
            return out
        shape = (h + 2 * pad, w + 2 * pad)
        # Pass by pass (channel by channel): the smoothed scales of one channel only in
        # memory (a third of all channels', and as fast since the feature rows are written
        # in blocks).
        smooth = np.empty((ns, *shape), np.float32)
        need_sq = any("deviation" in fams for _, fams in layout)
        need_st = any("structure" in fams for _, fams in layout)
        sq = np.empty((nst, *shape), np.float32) if need_sq else None
        products = np.empty((3, nst, *shape), np.float32) if need_st else None
        scratch = np.empty((3, *shape), np.float32) if (need_sq or need_st) else None
        k0 = 0
        for (c, fams), size in zip(layout, per_pass, strict=True):
            chan = image[:, :, c] if c >= 0 else _channel_mean(image)
            # Mirror padding (scipy's "reflect") by the halo: every output pixel then
            # depends only on pixels within `halo`, so a tile's features equal the tile of
            # the features.
            padded = np.pad(chan, ((py, py), (px, px)), mode="symmetric")
            smooth_all(padded, steps, smooth, pad)
            # The extra cascades only feed pointwise formulas: no margin around the inner
            # region is needed.
            # (the first scales of a cascade do not depend on the later ones)
            if "deviation" in fams and nst:
                square(padded, scratch[0])
                smooth_all(scratch[0], steps[:nst], sq, pad, margin=0)
            if "structure" in fams and nst:
                gradient_products(padded, scratch)
                for k in range(3):
                    smooth_all(scratch[k], steps[:nst], products[k], pad, margin=0)
            flags = np.array([f in fams for f in FLAG_ORDER], dtype=np.int64)
            write_feature_rows(smooth, pad, h, w, flags, out, k0, quantizer,
                               sq=sq, products=products, texture_scales=nst)
            k0 += size
        return out

    # -- quantization ------------------------------------------------------------------

    def quantizer(self, channel_low: np.ndarray, channel_span: np.ndarray) -> Quantizer:
        """Codes for these features on images whose channel ``c`` mostly spans
        ``channel_low[c]`` to ``channel_low[c] + channel_span[c]``.

        Intensity is coded linearly over that range, coherence linearly over 0..1. Edges,
        Hessian eigenvalues, the Laplacian, the deviation and the structure tensor's
        gradient strengths are scaled by their largest possible value on such an image (a
        step edge, or half the pixels at each end of the range) and coded by a fourth root,
        which spreads 256 levels over four decades of contrast.
        """
        offset, scale, kind = [], [], []

        def add(o, sc, k, n=1):
            offset.extend([o] * n)
            scale.extend([sc] * n)
            kind.extend([k] * n)

        lows = np.ravel(channel_low).astype(np.float64)
        spans = np.where(np.ravel(channel_span) > 0, np.ravel(channel_span), 1.0)
        for c, fams in self._layout(len(lows)):
            # the mean of the channels spans at most the mean of their spans
            lo = float(lows[c]) if c >= 0 else float(lows.mean())
            span = float(spans[c]) if c >= 0 else float(spans.mean())
            for k, s in enumerate(self.sigmas):
                at_k = self._scale_families(fams, k)
                s = max(float(s), 0.5)
                bound = min(0.5, 0.5 / (s * s))  # largest Hessian eigenvalue, per span
                if "intensity" in at_k:
                    add(lo, 1.0 / span, LINEAR)
                if "edges" in at_k:
                    add(0.0, s * math.sqrt(2 * math.pi) / span, ROOT)
                if "texture" in at_k:
                    add(0.0, 1.0 / (bound * span), SIGNED_ROOT, 2)
                if "laplacian" in at_k:
                    add(0.0, 1.0 / (2 * bound * span), SIGNED_ROOT)
                if "deviation" in at_k:
                    add(0.0, 2.0 / span, ROOT)
                if "structure" in at_k:
                    # a central difference is at most span / 2
                    add(0.0, 2.0 / span, ROOT, 2)
                    add(0.0, 1.0, LINEAR)
        return Quantizer(np.array(offset), np.array(scale), np.array(kind))
