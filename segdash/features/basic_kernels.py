"""Compiled (numba) rows of the ``basic`` features, written as float32 features or directly
as uint8 codes.

Per smoothed scale: intensity, edges and Hessian texture of the smoothed image, its
Laplacian, the local standard deviation (from the image and its square smoothed at the
same scale) and the structure tensor's eigenvalues and coherence (from the products of the
image's gradients smoothed at that scale).

Each output pixel is computed with the same float32 operations wherever it lies (see
:mod:`segdash.filters`), so a crop's features equal the crop of the features.
"""

from __future__ import annotations

import numba
import numpy as np

from ..codes import Quantizer, q_linear, q_root, q_signed_root
from ..parallel import run_parallel

#: Order of the family flags handed to the kernel.
FLAG_ORDER = ("intensity", "edges", "texture", "laplacian", "deviation", "structure")
#: Features each family writes per scale.
FAMILY_SIZE = {"intensity": 1, "edges": 1, "texture": 2, "laplacian": 1, "deviation": 1,
               "structure": 3}


@numba.njit(nogil=True, cache=True)
def _feature_rows(smooth, sq, jxx, jxy, jyy, nst, pad, i0, i1, w, fam, out, k0, q_off,
                  q_scale, q_kind, quantize):  # pragma: no cover - compiled
    """Write the features of rows [i0, i1) of every smoothed scale into ``out``.

    ``smooth`` is ``(S, Hp, Wp)``; inner pixel (i, j) is ``smooth[:, pad + i, pad + j]``;
    ``sq`` is the squared image smoothed the same way (read when ``fam[4]``), ``jxx``,
    ``jxy``, ``jyy`` the gradient products smoothed (read when ``fam[5]``). ``fam`` flags
    the families in :data:`FLAG_ORDER`; the laplacian, deviation and structure families are
    written for the first ``nst`` scales only. Features are written from ``k0`` in
    ``out``, scale by scale (``(H, W, F)``, float32, or uint8 codes when ``quantize``,
    each feature coded by its quantizer kind). A block of a row of every feature is
    computed first (vectorised along the row), then written pixel by pixel so that each
    pixel's features are written together.
    """
    half = np.float32(0.5)
    quarter = np.float32(0.25)
    zero = np.float32(0.0)
    tiny = np.float32(1e-12)
    do_i, do_e, do_t, do_l, do_d, do_s = fam[0], fam[1], fam[2], fam[3], fam[4], fam[5]
    ns = smooth.shape[0]
    nt = ns * (do_i + do_e + 2 * do_t) + nst * (do_l + do_d + 3 * do_s)
    block = 256
    row = np.empty((nt, block), np.float32)
    rowq = np.empty((nt, block), np.uint8)
    for i, jb in np.ndindex(i1 - i0, (w + block - 1) // block):
        i += i0
        y = pad + i
        j0 = jb * block
        bw = min(block, w - j0)
        xs = pad + j0
        f = 0
        for s in range(ns):
            tex = s < nst
            S = smooth[s]
            # views starting 2 (or 1, 0) columns left of the block: all indices >= 0
            r0 = S[y, xs - 2:xs + bw + 2]
            rm1 = S[y - 1, xs - 1:xs + bw + 1]
            rp1 = S[y + 1, xs - 1:xs + bw + 1]
            rm2 = S[y - 2, xs:xs + bw]
            rp2 = S[y + 2, xs:xs + bw]
            lap = do_l and tex
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
            if do_t or lap:
                rmax = row[f] if do_t else row[0]
                rmin = row[f + 1] if do_t else row[0]
                rlap = row[f + 2 * do_t] if lap else row[0]
                for j in range(bw):
                    c = r0[j + 2]
                    hxx = ((r0[j + 4] - c) - (c - r0[j])) * quarter
                    hyy = ((rp2[j] - c) - (c - rm2[j])) * quarter
                    if do_t:
                        hxy = ((rp1[j + 2] - rm1[j + 2]) - (rp1[j] - rm1[j])) * quarter
                        mean = (hxx + hyy) * half
                        dd = (hxx - hyy) * half
                        dev = np.sqrt(dd * dd + hxy * hxy)
                        rmax[j] = mean + dev
                        rmin[j] = mean - dev
                    if lap:
                        rlap[j] = hxx + hyy
                f += 2 * do_t + lap
            if do_d and tex:
                rf = row[f]
                m2 = sq[s, y, xs:xs + bw]
                for j in range(bw):
                    m = r0[j + 2]
                    # E[x^2] - E[x]^2 is < 0 by rounding on flat areas
                    rf[j] = np.sqrt(max(m2[j] - m * m, zero))
                f += 1
            if do_s and tex:
                rmax = row[f]
                rmin = row[f + 1]
                rcoh = row[f + 2]
                axx = jxx[s, y, xs:xs + bw]
                axy = jxy[s, y, xs:xs + bw]
                ayy = jyy[s, y, xs:xs + bw]
                for j in range(bw):
                    tr = (axx[j] + ayy[j]) * half
                    dd = (axx[j] - ayy[j]) * half
                    dev = np.sqrt(dd * dd + axy[j] * axy[j])
                    l1 = tr + dev
                    l2 = max(tr - dev, zero)
                    # square roots: gradient strength along and across the orientation
                    rmax[j] = np.sqrt(l1)
                    rmin[j] = np.sqrt(l2)
                    rcoh[j] = (l1 - l2) / (l1 + l2) if l1 > tiny else zero
                f += 3
        if quantize:
            for ff in range(nt):
                o, sc, kind = q_off[k0 + ff], q_scale[k0 + ff], q_kind[k0 + ff]
                rf, qf = row[ff], rowq[ff]
                if kind == 0:
                    for j in range(bw):
                        qf[j] = q_linear((rf[j] - o) * sc)
                elif kind == 1:
                    for j in range(bw):
                        qf[j] = q_root((rf[j] - o) * sc)
                else:
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


@numba.njit(nogil=True, cache=True)
def _gradient_products(src, pxx, pxy, pyy, r0, r1):  # pragma: no cover - compiled
    """Products of the central-difference gradients of ``src`` for rows [r0, r1) (the
    outermost rows and columns, which have no neighbour, are set to 0)."""
    hp, wp = src.shape
    half = np.float32(0.5)
    zero = np.float32(0.0)
    for i in range(r0, r1):
        if i == 0 or i == hp - 1:
            for j in range(wp):
                pxx[i, j] = zero
                pxy[i, j] = zero
                pyy[i, j] = zero
            continue
        up = src[i - 1]
        mid = src[i]
        down = src[i + 1]
        ox, oy, oz = pxx[i], pxy[i], pyy[i]
        ox[0] = zero
        oy[0] = zero
        oz[0] = zero
        ox[wp - 1] = zero
        oy[wp - 1] = zero
        oz[wp - 1] = zero
        for j in range(1, wp - 1):
            gx = (mid[j + 1] - mid[j - 1]) * half
            gy = (down[j] - up[j]) * half
            ox[j] = gx * gx
            oy[j] = gx * gy
            oz[j] = gy * gy


def gradient_products(padded: np.ndarray, out: np.ndarray) -> None:
    """``out[0], out[1], out[2]`` = gx², gx·gy, gy² of a ``(Hp, Wp)`` float32 image
    (central differences, pixels of the image; 0 on the outermost rows and columns)."""

    def job(a, b):
        _gradient_products(padded, out[0], out[1], out[2], a, b)

    run_parallel(job, padded.shape[0])


@numba.njit(nogil=True, cache=True)
def _square_rows(src, dst, r0, r1):  # pragma: no cover - compiled
    for i in range(r0, r1):
        a, b = src[i], dst[i]
        for j in range(a.shape[0]):
            b[j] = a[j] * a[j]


def square(padded: np.ndarray, out: np.ndarray) -> None:
    """``out = padded ** 2`` (float32, row-parallel)."""

    def job(a, b):
        _square_rows(padded, out, a, b)

    run_parallel(job, padded.shape[0])


_EMPTY = np.zeros((1, 1, 1), np.float32)


def write_feature_rows(smooth: np.ndarray, pad: int, h: int, w: int, fam: np.ndarray,
                       out: np.ndarray, k0: int, quantizer: Quantizer | None,
                       sq: np.ndarray | None = None,
                       products: np.ndarray | None = None, texture_scales: int = -1) -> None:
    """Write the features of each smoothed scale into ``out[:, :, k0:]``.

    Parameters
    ----------
    smooth : numpy.ndarray
        ``(S, H + 2 pad, W + 2 pad)`` float32: one channel smoothed at S scales.
    pad : int
        Padding of ``smooth`` on each side, pixels.
    h, w : int
        Inner size, pixels.
    fam : numpy.ndarray
        ``(6,)`` int64 flags, in :data:`FLAG_ORDER`.
    out : numpy.ndarray
        ``(H, W, F)`` float32 features, or uint8 codes when ``quantizer`` is given.
    k0 : int
        First feature of this channel in ``out``.
    quantizer : Quantizer or None
        Codes to write (the whole stack's quantizer, indexed from ``k0``), or None for floats.
    sq : numpy.ndarray, optional
        Like ``smooth``: the squared channel smoothed at the same scales (deviation).
    products : numpy.ndarray, optional
        ``(3, S, H + 2 pad, W + 2 pad)``: gx², gx·gy, gy² smoothed (structure tensor).
    texture_scales : int
        The laplacian, deviation and structure families are written for this many of the
        first scales (-1: all).
    """
    nst = smooth.shape[0] if texture_scales < 0 else texture_scales
    if quantizer is None:
        z = np.zeros(out.shape[2], np.float32)
        args = (z, z, np.zeros(out.shape[2], np.int8), False)
    else:
        args = (quantizer.offset, quantizer.scale, quantizer.kind, True)
    sq = _EMPTY if sq is None else sq
    jxx, jxy, jyy = (_EMPTY,) * 3 if products is None else products

    def job(a, b):
        _feature_rows(smooth, sq, jxx, jxy, jyy, nst, pad, a, b, w, fam, out, k0, *args)

    run_parallel(job, h)

