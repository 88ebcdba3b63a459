"""The built-in ``basic`` features: smoothed intensity, edges and Hessian texture per scale.

The three families of scikit-image's ``multiscale_basic_features``, per channel and per
scale sigma: the Gaussian-smoothed image (intensity), the gradient magnitude of the smoothed
image (edges) and the two eigenvalues of its Hessian (texture).

The filters are compiled (numba) and run on all cores; large scales are smoothed by a
cascade of dilated kernels whose cost does not grow with sigma (see
:mod:`segdash.filters`). Each pixel's features are computed with the same float32
operations wherever it lies, so features of a crop equal the crop of the features, exactly,
``halo`` pixels away from the crop's border.
"""

from __future__ import annotations

import math

import numpy as np
import param

from ..codes import LINEAR, ROOT, SIGNED_ROOT, Quantizer
from ..contract import FeatureExtractor
from ..filters import Step, smooth_all, smoothing_plan
from .basic_kernels import write_feature_rows

#: Two nested central differences (Hessian) reach this far beyond the smoothing.
_DERIVATIVE_REACH = 2


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
    """Multiscale intensity, edge and Hessian-texture features, per channel.

    Output layout, for each channel then each sigma: ``intensity``, ``edges``,
    ``texture max``, ``texture min`` (the families switched off are skipped).
    """

    intensity = param.Boolean(True, doc="Gaussian-smoothed intensity at each scale.")
    edges = param.Boolean(True, doc="Gradient magnitude of the smoothed image at each scale.")
    texture = param.Boolean(True, doc="Eigenvalues of the Hessian of the smoothed image.")
    sigma_min = param.Number(0.5, bounds=(0.3, 64), softbounds=(0.5, 32),
                             doc="Smallest scale, in pixels.")
    sigma_max = param.Number(16.0, bounds=(0.3, 64), softbounds=(0.5, 32),
                             doc="Largest scale, in pixels.")
    num_sigma = param.Integer(None, bounds=(1, 32), allow_None=True,
                              doc="Number of scales (default: one per power of two).")

    @property
    def sigmas(self) -> np.ndarray:
        return sigmas(self.sigma_min, self.sigma_max, self.num_sigma)

    #: Codes are written straight from the smoothed scales of one channel at a time: one
    #: byte per feature plus about as much for the smoothed scales.
    code_bytes = 2

    def _plan(self) -> list[Step]:
        return smoothing_plan([float(s) for s in self.sigmas])

    @property
    def halo(self) -> int:
        return max(st.reach for st in self._plan()) + _DERIVATIVE_REACH

    def _families(self) -> list[str]:
        fam = []
        if self.intensity:
            fam.append("intensity")
        if self.edges:
            fam.append("edges")
        if self.texture:
            fam += ["texture max", "texture min"]
        return fam

    def _flags(self) -> np.ndarray:
        return np.array([self.intensity, self.edges, self.texture], dtype=np.int64)

    def feature_names(self, n_channels: int) -> list[str]:
        fam = self._families()
        return [
            f"ch{c} sigma={s:g} {f}"
            for c in range(n_channels)
            for s in self.sigmas
            for f in fam
        ]

    # -- computation -------------------------------------------------------------------

    def _smooth_channel(self, chan: np.ndarray, pad: int, steps: list, out: np.ndarray) -> None:
        # Mirror padding (scipy's "reflect") by the halo: every output pixel then depends
        # only on pixels within `halo`, so a tile's features equal the tile of the features.
        padded = np.pad(chan, pad, mode="symmetric")
        smooth_all(padded, steps, out, pad)

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

    def _run(self, image: np.ndarray, quantizer: Quantizer | None) -> np.ndarray:
        h, w, n_ch = image.shape
        nf = len(self._families())
        steps = self._plan()
        ns = len(steps)
        dtype = np.float32 if quantizer is None else np.uint8
        out = np.empty((h, w, n_ch * ns * nf), dtype=dtype)
        if out.shape[2] == 0:
            return out
        pad = self.halo
        flags = self._flags()
        shape = (h + 2 * pad, w + 2 * pad)
        # Channel by channel: the smoothed scales of one channel only in memory (a third
        # of all channels', and as fast since the feature rows are written in blocks).
        smooth = np.empty((ns, *shape), np.float32)
        for c in range(n_ch):
            self._smooth_channel(image[:, :, c], pad, steps, smooth)
            write_feature_rows(smooth, pad, h, w, flags, out, c * ns * nf, quantizer)
        return out

    # -- quantization ------------------------------------------------------------------

    def quantizer(self, channel_low: np.ndarray, channel_span: np.ndarray) -> Quantizer:
        """Codes for these features on images whose channel ``c`` mostly spans
        ``channel_low[c]`` to ``channel_low[c] + channel_span[c]``.

        Intensity is coded linearly over that range. Edges and Hessian eigenvalues are
        scaled by their largest possible value on such an image (a step edge) and coded by
        a fourth root, which spreads 256 levels over four decades of contrast.
        """
        offset, scale, kind = [], [], []
        for lo, span in zip(np.ravel(channel_low), np.ravel(channel_span), strict=True):
            span = float(span) if span > 0 else 1.0
            for s in self.sigmas:
                s = max(float(s), 0.5)
                if self.intensity:
                    offset.append(lo)
                    scale.append(1.0 / span)
                    kind.append(LINEAR)
                if self.edges:
                    offset.append(0.0)
                    scale.append(s * math.sqrt(2 * math.pi) / span)
                    kind.append(ROOT)
                if self.texture:
                    bound = min(0.5, 0.5 / (s * s))
                    offset += [0.0, 0.0]
                    scale += [1.0 / (bound * span)] * 2
                    kind += [SIGNED_ROOT, SIGNED_ROOT]
        return Quantizer(np.array(offset), np.array(scale), np.array(kind))
