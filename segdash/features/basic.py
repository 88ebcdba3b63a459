"""The built-in ``basic`` features: smoothed intensity, edges and Hessian texture per scale.

The three families of scikit-image's ``multiscale_basic_features``, per channel and per
scale sigma: the Gaussian-smoothed image (intensity), the gradient magnitude of the smoothed
image (edges) and the two eigenvalues of its Hessian (texture).
"""

from __future__ import annotations

import math

import numpy as np
import param
from scipy import ndimage as ndi

from .base import FeatureExtractor

#: Gaussian kernels are cut at this many sigmas (scipy's default).
TRUNCATE = 4.0
#: Two nested central differences (Hessian) reach this far beyond the Gaussian kernel.
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


def gaussian_radius(sigma: float) -> int:
    """Half-width in pixels of the Gaussian kernel scipy uses for ``sigma``."""
    return int(TRUNCATE * float(sigma) + 0.5)


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

    @property
    def halo(self) -> int:
        return gaussian_radius(max(self.sigmas)) + _DERIVATIVE_REACH

    def _families(self) -> list[str]:
        fam = []
        if self.intensity:
            fam.append("intensity")
        if self.edges:
            fam.append("edges")
        if self.texture:
            fam += ["texture max", "texture min"]
        return fam

    def feature_names(self, n_channels: int) -> list[str]:
        fam = self._families()
        return [
            f"ch{c} sigma={s:g} {f}"
            for c in range(n_channels)
            for s in self.sigmas
            for f in fam
        ]

    def compute(self, image: np.ndarray) -> np.ndarray:
        h, w, n_ch = image.shape
        fam = self._families()
        sig = self.sigmas
        out = np.empty((h, w, n_ch * len(sig) * len(fam)), dtype=np.float32)
        if out.shape[2] == 0:
            return out
        # Pad once by the halo (mirror, as scipy's "reflect") so every output pixel depends
        # only on pixels within `halo`: features of a tile equal the tile of the features.
        pad = self.halo
        k = 0
        for c in range(n_ch):
            chan = np.pad(image[:, :, c], pad, mode="symmetric")
            for s in sig:
                smooth = ndi.gaussian_filter(chan, s, mode="reflect", truncate=TRUNCATE)
                inner = (slice(pad, pad + h), slice(pad, pad + w))
                if self.intensity:
                    out[:, :, k] = smooth[inner]
                    k += 1
                if self.edges or self.texture:
                    gy, gx = np.gradient(smooth)
                if self.edges:
                    out[:, :, k] = np.hypot(gx[inner], gy[inner])
                    k += 1
                if self.texture:
                    hyy, hxy = np.gradient(gy)
                    hxx = np.gradient(gx, axis=1)
                    hyy, hxy, hxx = hyy[inner], hxy[inner], hxx[inner]
                    # Closed-form eigenvalues of the symmetric 2x2 Hessian.
                    mean = 0.5 * (hxx + hyy)
                    dev = np.sqrt(0.25 * (hxx - hyy) ** 2 + hxy**2)
                    out[:, :, k] = mean + dev
                    out[:, :, k + 1] = mean - dev
                    k += 2
        return out
