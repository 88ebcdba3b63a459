"""Compiled (numba) rows of the ``basic`` features: intensity, edges and Hessian texture of
each smoothed scale, written as float32 features or directly as uint8 codes.

Each output pixel is computed with the same float32 operations wherever it lies (see
:mod:`segdash.filters`), so a crop's features equal the crop of the features.
"""

from __future__ import annotations

import numba
import numpy as np

from ..codes import Quantizer, q_linear, q_root, q_signed_root
from ..parallel import run_parallel


@numba.njit(nogil=True, cache=True)
def _feature_rows(smooth, pad, i0, i1, w, fam, out, k0, q_off, q_scale, q_kind,
          quantize):  # pragma: no cover - compiled
    """Write the features of rows [i0, i1) of every smoothed scale into ``out``.

    ``smooth`` is ``(S, Hp, Wp)``; inner pixel (i, j) is ``smooth[:, pad + i, pad + j]``.
    ``fam`` flags intensity, edges, texture; features of scale s start at
    ``k0 + s * n_fam`` in ``out`` (``(H, W, F)``, float32 or uint8 codes when ``quantize``:
    intensity linear, edges root, texture signed root, as :meth:`BasicFeatures.quantizer`).
    A block of a row of every feature is computed first (vectorised along the row), then
    written pixel by pixel so that each pixel's features are written together.
    """
    half = np.float32(0.5)
    quarter = np.float32(0.25)
    do_i, do_e, do_t = fam[0], fam[1], fam[2]
    nf = do_i + do_e + 2 * do_t
    ns = smooth.shape[0]
    nt = ns * nf
    block = 256
    row = np.empty((nt, block), np.float32)
    rowq = np.empty((nt, block), np.uint8)
    for i, jb in np.ndindex(i1 - i0, (w + block - 1) // block):
        i += i0
        y = pad + i
        j0 = jb * block
        bw = min(block, w - j0)
        xs = pad + j0
        for s in range(ns):
            S = smooth[s]
            # views starting 2 (or 1, 0) columns left of the block: all indices >= 0
            r0 = S[y, xs - 2:xs + bw + 2]
            rm1 = S[y - 1, xs - 1:xs + bw + 1]
            rp1 = S[y + 1, xs - 1:xs + bw + 1]
            rm2 = S[y - 2, xs:xs + bw]
            rp2 = S[y + 2, xs:xs + bw]
            f = s * nf
            if do_i:
                rf = row[f]
                for j in range(bw):
                    rf[j] = r0[j + 2]
                f += 1
            if do_e:
                rf = row[f]
                for j in range(bw):
                    gx = (r0[j + 3] - r0[j + 1]) * half
                    gy = (rp1[j + 1] - rm1[j + 1]) * half
                    rf[j] = np.sqrt(gx * gx + gy * gy)
                f += 1
            if do_t:
                rmax = row[f]
                rmin = row[f + 1]
                for j in range(bw):
                    c = r0[j + 2]
                    hxx = ((r0[j + 4] - c) - (c - r0[j])) * quarter
                    hyy = ((rp2[j] - c) - (c - rm2[j])) * quarter
                    hxy = ((rp1[j + 2] - rm1[j + 2]) - (rp1[j] - rm1[j])) * quarter
                    mean = (hxx + hyy) * half
                    dd = (hxx - hyy) * half
                    dev = np.sqrt(dd * dd + hxy * hxy)
                    rmax[j] = mean + dev
                    rmin[j] = mean - dev
        if quantize:
            for s in range(ns):
                f = s * nf
                if do_i:
                    o, sc = q_off[k0 + f], q_scale[k0 + f]
                    rf, qf = row[f], rowq[f]
                    for j in range(bw):
                        qf[j] = q_linear((rf[j] - o) * sc)
                    f += 1
                if do_e:
                    o, sc = q_off[k0 + f], q_scale[k0 + f]
                    rf, qf = row[f], rowq[f]
                    for j in range(bw):
                        qf[j] = q_root((rf[j] - o) * sc)
                    f += 1
                if do_t:
                    for ff in range(f, f + 2):
                        o, sc = q_off[k0 + ff], q_scale[k0 + ff]
                        rf, qf = row[ff], rowq[ff]
                        for j in range(bw):
                            qf[j] = q_signed_root((rf[j] - o) * sc)
            target = out[i, j0:j0 + bw, k0:k0 + nt]
            for j in range(bw):
                pixel = target[j]
                for kk in range(nt):
                    pixel[kk] = rowq[kk, j]
        else:
            target = out[i, j0:j0 + bw, k0:k0 + nt]
            for j in range(bw):
                pixel = target[j]
                for kk in range(nt):
                    pixel[kk] = row[kk, j]


def write_feature_rows(smooth: np.ndarray, pad: int, h: int, w: int, fam: np.ndarray,
                       out: np.ndarray, k0: int, quantizer: Quantizer | None) -> None:
    """Write intensity, edges and texture of each smoothed scale into ``out[:, :, k0:]``.

    Parameters
    ----------
    smooth : numpy.ndarray
        ``(S, H + 2 pad, W + 2 pad)`` float32: one channel smoothed at S scales.
    pad : int
        Padding of ``smooth`` on each side, pixels.
    h, w : int
        Inner size, pixels.
    fam : numpy.ndarray
        ``(3,)`` int64 flags: intensity, edges, texture.
    out : numpy.ndarray
        ``(H, W, F)`` float32 features, or uint8 codes when ``quantizer`` is given.
    k0 : int
        First feature of this channel in ``out``.
    quantizer : Quantizer or None
        Codes to write (the whole stack's quantizer, indexed from ``k0``), or None for floats.
    """
    if quantizer is None:
        z = np.zeros(out.shape[2], np.float32)
        args = (z, z, np.zeros(out.shape[2], np.int8), False)
    else:
        args = (quantizer.offset, quantizer.scale, quantizer.kind, True)

    def job(a, b):
        _feature_rows(smooth, pad, a, b, w, fam, out, k0, *args)

    run_parallel(job, h)
