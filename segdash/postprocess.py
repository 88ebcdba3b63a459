"""From class probabilities to what users see: smoothed probabilities, labels, uncertainty.

The same functions run on a whole image (the dashboard) and on a tile (tiling): both are
exact on a tile extended by :func:`smoothing_halo` pixels.
"""

from __future__ import annotations

import numba
import numpy as np

from .filters import gaussian_radius, smooth_channels
from .parallel import run_parallel


def smoothing_halo(sigma: float) -> int:
    """Pixels of context on each side that smoothing by ``sigma`` (pixels) reads."""
    return gaussian_radius(sigma) if sigma > 0 else 0


def smooth_probabilities(proba: np.ndarray, sigma: float) -> np.ndarray:
    """Each class's ``(H, W, K)`` float32 probability smoothed by a Gaussian of ``sigma``
    pixels (mirrored at the border; 0: unchanged). The classes still sum to one."""
    if sigma <= 0:
        return proba
    return smooth_channels(proba, sigma)


@numba.njit(nogil=True, cache=True)
def _argmax_rows(proba, index, uncertainty, a, b):  # pragma: no cover - compiled
    for p in range(a, b):
        best = 0
        top = proba[p, 0]
        for k in range(1, proba.shape[1]):
            if proba[p, k] > top:  # first maximum wins, as numpy.argmax
                top = proba[p, k]
                best = k
        index[p] = best
        uncertainty[p] = np.float32(1.0) - top


def labels_and_uncertainty(
    proba: np.ndarray, class_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Class id of the most probable class and ``1 - max probability``, in one pass.

    Parameters
    ----------
    proba : numpy.ndarray
        ``(..., K)`` float32 probabilities.
    class_ids : numpy.ndarray
        ``(K,)`` class id of each column, of the label dtype wanted.

    Returns
    -------
    labels : numpy.ndarray
        ``(...)`` of ``class_ids.dtype``; ties go to the first column, as ``numpy.argmax``.
    uncertainty : numpy.ndarray
        ``(...)`` float32.
    """
    flat = np.ascontiguousarray(proba, dtype=np.float32).reshape(-1, proba.shape[-1])
    index = np.empty(flat.shape[0], np.uint16)
    unc = np.empty(flat.shape[0], np.float32)

    def job(a, b):
        _argmax_rows(flat, index, unc, a, b)

    run_parallel(job, flat.shape[0])
    return class_ids[index].reshape(proba.shape[:-1]), unc.reshape(proba.shape[:-1])
