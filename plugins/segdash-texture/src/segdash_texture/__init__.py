"""Texture features for segdash: local contrast, orientation, blobs and local binary patterns.

The ``basic`` features describe a pixel by smoothed intensity, edge strength and Hessian
curvature. Two textures with the same mean brightness and similar blur look alike to them.
:class:`TextureFeatures` adds what separates textures, per channel and per scale sigma:

``local std``
    Gaussian-weighted local standard deviation (contrast of the neighbourhood).
``structure max``, ``structure min``, ``coherence``
    Eigenvalues of the structure tensor (gradients at ``gradient_sigma``, averaged over a
    Gaussian window of sigma) and their coherence ``((l1 - l2) / (l1 + l2))**2``: 1 for
    stripes in a single direction, 0 for isotropic texture.
``orientation cos``, ``orientation sin``
    The dominant orientation as a doubled-angle vector ``(cos 2θ, sin 2θ)`` scaled by
    ``(l1 - l2) / (l1 + l2)``: tells vertical from horizontal bricks, which the
    rotation-invariant features above cannot (switch off for rotation invariance).
``blob``
    Scale-normalised Laplacian of Gaussian, ``-sigma**2 * LoG`` (the 5-point Laplacian of
    the Gaussian-smoothed image): positive on bright blobs of radius ~sigma*sqrt(2).
``lbp k``
    Fraction of pixels, in a square window of ``lbp_window`` px, whose rotation-invariant
    uniform local binary pattern (Ojala et al. 2002) is code ``k``: a local histogram of
    micro-structure (spots, edges, corners, flat), blind to brightness and contrast.

Every output pixel depends only on input pixels within :attr:`TextureFeatures.halo`: the
image is padded by the halo (mirrored) before filtering, so features of a tile equal the tile
of the features away from its border, and segdash can tile large images.
"""

from __future__ import annotations

import math

import numpy as np
import param
from scipy import ndimage as ndi

from segdash.contract import FeatureExtractor

__all__ = ["TextureFeatures", "__version__"]

__version__ = "0.1.0"

#: Gaussian kernels are cut at this many sigmas (scipy's default).
TRUNCATE = 4.0


def gaussian_radius(sigma: float) -> int:
    """Half-width, in pixels, of the Gaussian kernel scipy uses for ``sigma``."""
    return int(TRUNCATE * float(sigma) + 0.5)


def scales(sigma_min: float, sigma_max: float, num_sigma: int | None = None) -> np.ndarray:
    """Geometrically spaced scales from ``sigma_min`` to ``sigma_max``, in pixels.

    Parameters
    ----------
    sigma_min, sigma_max : float
        Smallest and largest scale (swapped if given in the wrong order).
    num_sigma : int, optional
        Number of scales; by default one per power of two.

    Returns
    -------
    numpy.ndarray
        ``(num_sigma,)`` float64.
    """
    lo, hi = sorted((float(sigma_min), float(sigma_max)))
    if num_sigma is None:
        num_sigma = int(math.floor(math.log2(hi) - math.log2(lo) + 1e-9)) + 1
    return np.logspace(math.log2(lo), math.log2(hi), num=max(int(num_sigma), 1), base=2)


class TextureFeatures(FeatureExtractor):
    """Multiscale texture features, per channel.

    Output layout: for each channel, for each sigma, the enabled families among
    ``local std``, ``structure max``, ``structure min``, ``coherence``, ``orientation cos``,
    ``orientation sin``, ``blob``; then, for each channel, the ``lbp`` densities
    (``lbp_points + 2`` codes).
    """

    local_std = param.Boolean(True, doc="Local standard deviation at each scale.")
    structure_tensor = param.Boolean(
        True, doc="Structure-tensor eigenvalues and coherence at each scale (orientation).")
    orientation = param.Boolean(
        True, doc="Dominant orientation at each scale, weighted by how strongly oriented "
                  "(tells horizontal from vertical stripes; switch off for rotation "
                  "invariance).")
    blob = param.Boolean(True, doc="Scale-normalised Laplacian of Gaussian at each scale.")
    lbp = param.Boolean(
        True, doc="Local densities of uniform local binary pattern codes "
                  "(lbp_points + 2 features per channel).")
    sigma_min = param.Number(1.0, bounds=(0.5, 64), softbounds=(0.5, 32),
                             doc="Smallest scale (window sigma), in pixels.")
    sigma_max = param.Number(8.0, bounds=(0.5, 64), softbounds=(0.5, 32),
                             doc="Largest scale (window sigma), in pixels.")
    num_sigma = param.Integer(None, bounds=(1, 16), allow_None=True,
                              doc="Number of scales (default: one per power of two).")
    gradient_sigma = param.Number(1.0, bounds=(0.3, 8), softbounds=(0.5, 4),
                                  doc="Scale of the gradients the structure tensor averages.")
    lbp_points = param.Integer(8, bounds=(4, 24), doc="Neighbours of the local binary pattern.")
    lbp_radius = param.Number(1.0, bounds=(1, 8), doc="Radius of the local binary pattern.")
    lbp_window = param.Integer(31, bounds=(3, 255), softbounds=(5, 101),
                               doc="Width in pixels of the square window in which LBP codes "
                                   "are counted (made odd).")
    lbp_step = param.Number(1 / 255, bounds=(0, None), inclusive_bounds=(False, True),
                            softbounds=(1e-4, 0.1),
                            doc="Intensity step: values are rounded to multiples of it before "
                                "comparing neighbours, so noise below it reads as flat.")

    @property
    def sigmas(self) -> np.ndarray:
        return scales(self.sigma_min, self.sigma_max, self.num_sigma)

    @property
    def halo(self) -> int:
        reach = 0
        r_max = gaussian_radius(max(self.sigmas))
        if self.local_std:
            reach = max(reach, r_max)
        if self.blob:
            reach = max(reach, r_max + 1)  # 5-point Laplacian of the smoothed image
        if self.structure_tensor or self.orientation:
            reach = max(reach, gaussian_radius(self.gradient_sigma) + r_max)
        if self.lbp:
            reach = max(reach, math.ceil(self.lbp_radius) + self.lbp_window // 2)
        return int(reach)

    def _scale_families(self) -> list[str]:
        fam = []
        if self.local_std:
            fam.append("local std")
        if self.structure_tensor:
            fam += ["structure max", "structure min", "coherence"]
        if self.orientation:
            fam += ["orientation cos", "orientation sin"]
        if self.blob:
            fam.append("blob")
        return fam

    def feature_names(self, n_channels: int) -> list[str]:
        fam = self._scale_families()
        names = [
            f"ch{c} sigma={s:g} {f}" for c in range(n_channels) for s in self.sigmas for f in fam
        ]
        if self.lbp:
            names += [
                f"ch{c} lbp {k}" for c in range(n_channels) for k in range(self.lbp_points + 2)
            ]
        return names

    def compute(self, image: np.ndarray) -> np.ndarray:
        """Texture features of a prepared image.

        Parameters
        ----------
        image : numpy.ndarray
            ``(H, W, C)`` float32 (see :func:`segdash.contract.prepare_image`).

        Returns
        -------
        numpy.ndarray
            ``(H, W, F)`` float32, in :meth:`feature_names` order.
        """
        h, w, n_ch = image.shape
        fam = self._scale_families()
        sig = self.sigmas
        n_lbp = self.lbp_points + 2 if self.lbp else 0
        out = np.empty((h, w, n_ch * (len(sig) * len(fam) + n_lbp)), dtype=np.float32)
        if out.shape[2] == 0:
            return out
        pad = self.halo
        inner = (slice(pad, pad + h), slice(pad, pad + w))
        k = 0
        for c in range(n_ch):
            # Mirror-pad by the halo so no filter reaches the array's own border for any
            # output pixel: a tile's features then equal the tile of the image's features.
            chan = np.pad(image[:, :, c], pad, mode="symmetric")  # float32
            # float64 where values are subtracted from each other: E[x^2] - E[x]^2 and the
            # Laplacian cancel badly in float32 on bright, flat areas.
            chan64 = chan.astype(np.float64)
            squared = chan64 * chan64 if self.local_std else None
            if self.structure_tensor or self.orientation:
                gy = ndi.gaussian_filter(chan, self.gradient_sigma, order=(1, 0),
                                         truncate=TRUNCATE)
                gx = ndi.gaussian_filter(chan, self.gradient_sigma, order=(0, 1),
                                         truncate=TRUNCATE)
                products = (gx * gx, gx * gy, gy * gy)
                del gx, gy
            for s in sig:
                if self.local_std or self.blob:
                    mean = ndi.gaussian_filter(chan64, s, truncate=TRUNCATE)
                if self.local_std:
                    var = ndi.gaussian_filter(squared, s, truncate=TRUNCATE)[inner]
                    var -= mean[inner] ** 2
                    # Cast before the strided write into `out`: much faster from float32.
                    std = var.astype(np.float32)
                    np.maximum(std, 0.0, out=std)
                    out[:, :, k] = np.sqrt(std, out=std)
                    k += 1
                if self.structure_tensor or self.orientation:
                    k = self._structure_into(out, k, products, s, inner)
                if self.blob:
                    # Laplacian of the smoothed image (5-point stencil), scale-normalised.
                    lap = ndi.laplace(mean)[inner].astype(np.float32)
                    out[:, :, k] = lap * np.float32(-(s * s))
                    k += 1
            if self.lbp:
                k = self._lbp_into(out, k, chan64, inner)
        return out

    def _structure_into(self, out: np.ndarray, k: int, products: tuple, sigma: float,
                        inner: tuple) -> int:
        """Write the structure-tensor features at ``sigma`` to ``out[..., k:]``; return the
        next free index."""
        jxx, jxy, jyy = (ndi.gaussian_filter(p, sigma, truncate=TRUNCATE)[inner]
                         for p in products)
        trace = jxx + jyy
        dev = np.sqrt(0.25 * (jxx - jyy) ** 2 + jxy**2)
        # Flat areas (no gradient at all) have no orientation: 0 there, not 0/0.
        flat = trace <= 1e-12
        safe = np.where(flat, 1.0, trace)
        if self.structure_tensor:
            l1 = 0.5 * trace + dev
            l2 = np.maximum(0.5 * trace - dev, 0.0)
            out[:, :, k] = l1
            out[:, :, k + 1] = l2
            coherence = np.where(flat, 0.0, (l1 - l2) / safe)
            out[:, :, k + 2] = coherence * coherence
            k += 3
        if self.orientation:
            # The doubled-angle vector (cos 2θ, sin 2θ) of the dominant gradient direction,
            # scaled by (l1 - l2) / (l1 + l2): long for clear stripes, ~0 for isotropic
            # texture, continuous where θ wraps around.
            out[:, :, k] = np.where(flat, 0.0, (jxx - jyy) / safe)
            out[:, :, k + 1] = np.where(flat, 0.0, 2.0 * jxy / safe)
            k += 2
        return k

    def _lbp_into(self, out: np.ndarray, k: int, chan: np.ndarray, inner: tuple) -> int:
        """Write the LBP code densities of one padded channel into ``out[..., k:]``."""
        from skimage.feature import local_binary_pattern

        # LBP compares neighbours with ">=": on float data tiny rounding differences flip
        # bits at random, so compare integer multiples of lbp_step (skimage warns likewise).
        quantised = np.rint(chan / self.lbp_step)
        quantised = np.clip(quantised, -(2**31) + 1, 2**31 - 1).astype(np.int32)
        codes = local_binary_pattern(quantised, self.lbp_points, self.lbp_radius,
                                     method="uniform")
        r = self.lbp_window // 2
        y0, x0 = inner[0].start - r, inner[1].start - r
        y1, x1 = inner[0].start + r + 1, inner[1].start + r + 1
        h, w = out.shape[:2]
        scale = np.float32(1.0 / (2 * r + 1) ** 2)
        table = np.zeros((codes.shape[0] + 1, codes.shape[1] + 1), np.int64)
        for code in range(self.lbp_points + 2):
            # Count codes in the box window with an integer summed-area table: exact, as
            # cheap for any width, and independent of where the image starts (tiling).
            np.cumsum(codes == code, axis=0, out=table[1:, 1:])
            np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
            counts = (table[y1:y1 + h, x1:x1 + w] - table[y0:y0 + h, x1:x1 + w]
                      - table[y1:y1 + h, x0:x0 + w] + table[y0:y0 + h, x0:x0 + w])
            out[:, :, k] = counts.astype(np.float32) * scale
            k += 1
        return k
