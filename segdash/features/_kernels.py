"""Compiled (numba) filters behind the ``basic`` features, and the feature-code quantizer.

Everything here works on float32 and computes each output pixel with the same sequence of
float32 operations wherever the pixel lies, so the result does not depend on where an image
was cut: features of a crop equal the crop of the features, bit for bit, away from the
border (batch tiling relies on it).

Gaussian smoothing at large scales uses a cascade ("a trous"): the image smoothed at sigma
``s`` is smoothed again by a sampled Gaussian of sigma ``sqrt(t**2 - s**2) / d`` whose taps
are ``d`` pixels apart, giving the image smoothed at sigma ``t`` for a cost that does not
grow with ``t``. With ``d <= s`` the replicas that the dilated kernel adds to the spectrum
fall where the previous smoothing has already removed everything (relative error below
1e-6), so the cascade equals a direct Gaussian up to the kernels' truncation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np

#: Gaussian kernels are cut at this many sigmas (scipy's default).
TRUNCATE = 4.0
#: Cascade only when it needs at most this fraction of a direct kernel's taps.
_CASCADE_GAIN = 0.75
#: Quality needed for a dilated cascade step: (a*b)^2 / (a^2 + b^2) with a, b the previous
#: and added sigmas in units of the dilation (0.75 for a sigma doubling with d = s gives a
#: relative spectral error of 4e-7).
_CASCADE_QUALITY = 0.7

_F = np.float32


def n_threads() -> int:
    """Threads the compiled filters and tree inference use (``SEGDASH_THREADS`` or all cores)."""
    env = os.environ.get("SEGDASH_THREADS")
    if env:
        return max(1, int(env))
    return max(1, os.cpu_count() or 1)


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0


def run_parallel(fn, n_items: int, *args) -> None:
    """Call ``fn(start, stop, *args)`` over ``range(n_items)`` split into chunks, in threads.

    The compiled functions release the GIL, so the chunks run on all cores. Several small
    chunks per thread keep the work balanced when another process takes a core.
    """
    global _POOL, _POOL_SIZE
    nt = n_threads()
    if nt == 1 or n_items < 64:
        fn(0, n_items, *args)
        return
    if _POOL is None or _POOL_SIZE != nt:
        _POOL = ThreadPoolExecutor(max_workers=nt, thread_name_prefix="segdash")
        _POOL_SIZE = nt
    n_chunks = min(n_items, 4 * nt)
    bounds = np.linspace(0, n_items, n_chunks + 1).astype(int)
    futures = [_POOL.submit(fn, int(a), int(b), *args)
               for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    for f in futures:
        f.result()


# -- Gaussian kernels and the cascade plan ------------------------------------------------


def gaussian_weights(sigma: float) -> np.ndarray:
    """Half of scipy's sampled Gaussian kernel for ``sigma`` (centre first), float32."""
    radius = int(TRUNCATE * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (float(sigma) ** 2) * x**2)
    phi /= phi.sum()
    return phi[radius:].astype(np.float32)


@dataclass(frozen=True)
class Step:
    """How one scale is smoothed: from the image or from an earlier scale."""

    sigma: float
    source: int  # index of the scale it is computed from; -1: the image
    weights: np.ndarray  # half kernel, centre first
    dilation: int  # distance between taps, pixels
    reach: int  # pixels of the image this scale depends on, on each side

    @property
    def taps(self) -> int:
        return 2 * len(self.weights) - 1


def smoothing_plan(sigmas: Sequence[float]) -> list[Step]:
    """The cheapest exact-enough way to smooth an image at each of ``sigmas`` (ascending)."""
    steps: list[Step] = []
    for k, s in enumerate(sigmas):
        s = float(s)
        direct = gaussian_weights(s)
        best = Step(s, -1, direct, 1, len(direct) - 1)
        if k > 0 and s > float(sigmas[k - 1]):
            prev = float(sigmas[k - 1])
            add = math.sqrt(s * s - prev * prev)
            for d in range(max(int(prev), 1), 0, -1):
                a, b = prev / d, add / d
                if (a * b) ** 2 / (a * a + b * b) >= _CASCADE_QUALITY:
                    w = gaussian_weights(b)
                    if 2 * len(w) - 1 <= _CASCADE_GAIN * best.taps:
                        best = Step(s, k - 1, w, d, steps[k - 1].reach + (len(w) - 1) * d)
                    break
        steps.append(best)
    return steps


# -- separable passes ---------------------------------------------------------------------


# The compiled loops index 1-D views from 0: numba then knows no index is negative, skips
# its wrap-around test, and LLVM vectorises the loops (5 to 8 times faster than indexing
# the 2-D arrays with computed, possibly negative, indices).


@numba.njit(nogil=True, cache=True)
def _vpass(src, dst, w, d, r0, r1, c0, c1):  # pragma: no cover - compiled
    """dst[i, c0:c1] = sum_k w[|k|] src[i + k d, c0:c1] for rows i in [r0, r1)."""
    n = w.shape[0]
    m = c1 - c0
    acc = np.empty(m, np.float32)
    for i in range(r0, r1):
        w0 = w[0]
        centre = src[i, c0:c1]
        for j in range(m):
            acc[j] = w0 * centre[j]
        for k in range(1, n):
            wk = w[k]
            above = src[i - k * d, c0:c1]
            below = src[i + k * d, c0:c1]
            for j in range(m):
                acc[j] += wk * (above[j] + below[j])
        target = dst[i, c0:c1]
        for j in range(m):
            target[j] = acc[j]


@numba.njit(nogil=True, cache=True)
def _hpass(src, dst, w, d, r0, r1, c0, c1):  # pragma: no cover - compiled
    """dst[i, j] = sum_k w[|k|] src[i, j + k d] for rows [r0, r1), columns [c0, c1)."""
    n = w.shape[0]
    m = c1 - c0
    acc = np.empty(m, np.float32)
    for i in range(r0, r1):
        w0 = w[0]
        centre = src[i, c0:c1]
        for j in range(m):
            acc[j] = w0 * centre[j]
        for k in range(1, n):
            wk = w[k]
            left = src[i, c0 - k * d:c1 - k * d]
            right = src[i, c0 + k * d:c1 + k * d]
            for j in range(m):
                acc[j] += wk * (left[j] + right[j])
        target = dst[i, c0:c1]
        for j in range(m):
            target[j] = acc[j]


def smooth_all(padded: np.ndarray, steps: list[Step], out: np.ndarray, pad: int,
               margin: int = 2) -> None:
    """Smooth a padded single-channel image at every scale of ``steps``.

    Parameters
    ----------
    padded : numpy.ndarray
        ``(H + 2 pad, W + 2 pad)`` float32 image, mirror-padded by ``pad``.
    steps : list of Step
        From :func:`smoothing_plan`; ``pad`` must be at least the largest reach + ``margin``.
    out : numpy.ndarray
        ``(len(steps), H + 2 pad, W + 2 pad)`` float32; every scale is written on the inner
        ``H x W`` region grown by ``margin`` pixels (what the derivatives need), and further
        where a later scale is computed from it.
    pad : int
        The padding.
    margin : int
        Pixels around the inner region every scale must cover.
    """
    hp, wp = padded.shape
    # how far beyond the inner region each scale is needed: by the derivatives, and by
    # the scales cascaded from it (each pixel is computed the same way wherever it lies,
    # so computing less of the padding changes no value)
    need = [margin] * len(steps)
    for k in range(len(steps) - 1, -1, -1):
        src = steps[k].source
        if src >= 0:
            r = (len(steps[k].weights) - 1) * steps[k].dilation
            need[src] = max(need[src], need[k] + r)
    tmp = np.empty_like(padded)
    for k, st in enumerate(steps):
        src = padded if st.source < 0 else out[st.source]
        r = (len(st.weights) - 1) * st.dilation
        lo, hi = pad - need[k], pad + (hp - 2 * pad) + need[k]
        clo, chi = pad - need[k], pad + (wp - 2 * pad) + need[k]
        # vertical pass on the columns the horizontal pass reads, then horizontal (a
        # fused row-by-row version measured 20 % slower)
        _parallel_rows(_vpass, lo, hi, src, tmp, st.weights, st.dilation, clo - r, chi + r)
        _parallel_rows(_hpass, lo, hi, tmp, out[k], st.weights, st.dilation, clo, chi)


def _parallel_rows(kernel, r0: int, r1: int, src, dst, w, d, c0: int, c1: int) -> None:
    def job(a, b):
        kernel(src, dst, w, d, r0 + a, r0 + b, c0, c1)

    run_parallel(job, r1 - r0)


# -- features from the smoothed images ----------------------------------------------------


@numba.njit(nogil=True, inline="always")
def _q_linear(u):  # pragma: no cover - compiled
    if u != u:  # NaN
        u = np.float32(0.0)
    c = min(max(u * np.float32(255.0) + np.float32(0.5), np.float32(0.0)), np.float32(255.0))
    return np.uint8(c)


@numba.njit(nogil=True, inline="always")
def _q_root(u):  # pragma: no cover - compiled
    if u != u:
        u = np.float32(0.0)
    u = min(max(u, np.float32(0.0)), np.float32(1.0))
    return np.uint8(np.sqrt(np.sqrt(u)) * np.float32(255.0) + np.float32(0.5))


@numba.njit(nogil=True, inline="always")
def _q_signed_root(u):  # pragma: no cover - compiled
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
        return _q_linear(u)
    if kind == 1:
        return _q_root(u)
    return _q_signed_root(u)


@numba.njit(nogil=True, cache=True)
def _emit(smooth, pad, i0, i1, w, fam, out, k0, q_off, q_scale, q_kind,
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
                        qf[j] = _q_linear((rf[j] - o) * sc)
                    f += 1
                if do_e:
                    o, sc = q_off[k0 + f], q_scale[k0 + f]
                    rf, qf = row[f], rowq[f]
                    for j in range(bw):
                        qf[j] = _q_root((rf[j] - o) * sc)
                    f += 1
                if do_t:
                    for ff in range(f, f + 2):
                        o, sc = q_off[k0 + ff], q_scale[k0 + ff]
                        rf, qf = row[ff], rowq[ff]
                        for j in range(bw):
                            qf[j] = _q_signed_root((rf[j] - o) * sc)
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


def emit(smooth: np.ndarray, pad: int, h: int, w: int, fam: np.ndarray, out: np.ndarray,
         k0: int, quantizer: Quantizer | None) -> None:
    """Write intensity/edges/texture of each smoothed scale into ``out[:, :, k0:]``."""
    if quantizer is None:
        z = np.zeros(out.shape[2], np.float32)
        args = (z, z, np.zeros(out.shape[2], np.int8), False)
    else:
        args = (quantizer.offset, quantizer.scale, quantizer.kind, True)

    def job(a, b):
        _emit(smooth, pad, a, b, w, fam, out, k0, *args)

    run_parallel(job, h)


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


def smooth_channels(arr: np.ndarray, sigma: float) -> np.ndarray:
    """Each channel of an ``(H, W, K)`` float32 array smoothed by a Gaussian of ``sigma``.

    Mirror-padded like the features, so a tile gives the tile of the result away from its
    border (``radius(sigma)`` pixels).
    """
    w = gaussian_weights(sigma)
    r = len(w) - 1
    out = np.empty(arr.shape, np.float32)
    for k in range(arr.shape[2]):
        padded = np.pad(np.ascontiguousarray(arr[:, :, k], dtype=np.float32), r,
                        mode="symmetric")
        hp, wp = padded.shape
        tmp = np.empty_like(padded)
        res = np.empty_like(padded)
        _parallel_rows(_vpass, r, hp - r, padded, tmp, w, 1, 0, wp)
        _parallel_rows(_hpass, r, hp - r, tmp, res, w, 1, r, wp - r)
        out[:, :, k] = res[r:hp - r, r:wp - r]
    return out


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


def argmax_uncertainty(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the most probable class and ``1 - max probability`` of ``(..., K)`` float32
    probabilities, in one pass: ``(...)`` uint16 and ``(...)`` float32."""
    flat = np.ascontiguousarray(proba, dtype=np.float32).reshape(-1, proba.shape[-1])
    index = np.empty(flat.shape[0], np.uint16)
    unc = np.empty(flat.shape[0], np.float32)

    def job(a, b):
        _argmax_rows(flat, index, unc, a, b)

    run_parallel(job, flat.shape[0])
    return index.reshape(proba.shape[:-1]), unc.reshape(proba.shape[:-1])
