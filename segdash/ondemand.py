"""Features, training and prediction on demand, tile by tile, for an image of any size.

An interactive session on a large image computes only what it needs: the feature codes of
the tiles under the strokes (training) and of the tiles in view (the overlay), kept in a
:class:`ByteCache` bounded in bytes. The tiles are those of :mod:`segdash.tiling` (the
same near-equal tile sizes, :func:`~segdash.tiling.tile_chunks`), each read with the
model's halo mirrored at the image border exactly as Dask's ``map_overlap`` extends it
(:func:`read_block`), and predicted by :func:`~segdash.tiling.tile_proba`, the batch
engine's own tile function: a tile's probabilities equal the whole image's there.

Images are worked on at a *working resolution* (downsample factor ``d``): the image is
:meth:`~segdash.io.pyramid.Pyramid.at` ``d``, strokes (full-resolution pixels) are scaled
by ``1 / d`` (:func:`scale_strokes`), and results are per working-resolution pixel.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .codes import Quantizer
from .model import SegmentationModel
from .postprocess import smoothing_halo
from .stack import FeatureStack
from .strokes import Stroke, rasterize_strokes
from .tiling import tile_chunks, tile_proba

#: Default side of the tiles computed on demand, in working-resolution pixels.
TILE = 512


class ByteCache:
    """A least-recently-used cache bounded in bytes (thread safe).

    Parameters
    ----------
    limit : int
        Bytes the values may hold together; the oldest are dropped beyond it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> Any:
        """The value of ``key`` (now the most recent), or None."""
        with self._lock:
            hit = self._items.get(key)
            if hit is None:
                return None
            self._items.move_to_end(key)
            return hit[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        """Keep ``value`` (``nbytes`` large) under ``key``; drops the oldest beyond the limit.
        A value larger than the whole limit is not kept."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if nbytes > self.limit:
                return
            self._items[key] = (value, int(nbytes))
            self._bytes += int(nbytes)
            while self._bytes > self.limit and self._items:
                _, (_, n) = self._items.popitem(last=False)
                self._bytes -= n

    def drop(self, keep: Any) -> None:
        """Remove the entries whose key ``keep(key)`` is False for."""
        with self._lock:
            for key in [k for k in self._items if not keep(k)]:
                self._bytes -= self._items.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


@dataclass(frozen=True)
class TileGrid:
    """The tiles of an ``height x width`` plane: :func:`~segdash.tiling.tile_chunks` of
    at most ``tile`` pixels on each axis, as ``segdash apply`` cuts it."""

    height: int
    width: int
    tile: int = TILE

    @property
    def row_edges(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(tile_chunks(self.height, self.tile))])

    @property
    def col_edges(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(tile_chunks(self.width, self.tile))])

    @property
    def shape(self) -> tuple[int, int]:
        """Tiles along rows and columns."""
        return len(self.row_edges) - 1, len(self.col_edges) - 1

    def bounds(self, ty: int, tx: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` of tile ``(ty, tx)``, end excluded."""
        r, c = self.row_edges, self.col_edges
        return int(r[ty]), int(r[ty + 1]), int(c[tx]), int(c[tx + 1])

    def tiles_in(self, y0: float, y1: float, x0: float, x1: float) -> list[tuple[int, int]]:
        """Tiles meeting the region rows ``[y0, y1)``, columns ``[x0, x1)``, nearest to its
        centre first."""
        r, c = self.row_edges, self.col_edges
        ty0 = max(int(np.searchsorted(r, y0, side="right")) - 1, 0)
        ty1 = min(int(np.searchsorted(r, y1, side="left")), len(r) - 1)
        tx0 = max(int(np.searchsorted(c, x0, side="right")) - 1, 0)
        tx1 = min(int(np.searchsorted(c, x1, side="left")), len(c) - 1)
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        tiles = [(ty, tx) for ty in range(ty0, ty1) for tx in range(tx0, tx1)]

        def distance(t: tuple[int, int]) -> float:
            a, b, e, f = self.bounds(*t)
            return ((a + b) / 2 - cy) ** 2 + ((e + f) / 2 - cx) ** 2

        return sorted(tiles, key=distance)


def read_block(level: Any, y0: int, y1: int, x0: int, x1: int, halo: int) -> np.ndarray:
    """Rows ``[y0, y1)`` and columns ``[x0, x1)`` of ``level`` with ``halo`` pixels of
    context on every side, mirrored beyond the image border.

    The mirror repeats the edge pixel (numpy's ``mode="symmetric"``), which is what
    ``dask.array.map_overlap(boundary="reflect")`` gives the batch engine's tiles and what
    the feature extractors pad with: the block is the one ``segdash apply`` computes on.

    Returns
    -------
    numpy.ndarray
        ``(y1 - y0 + 2 halo, x1 - x0 + 2 halo, C)`` in the level's dtype.
    """
    h, w = level.shape[:2]
    ry0, ry1 = max(y0 - halo, 0), min(y1 + halo, h)
    rx0, rx1 = max(x0 - halo, 0), min(x1 + halo, w)
    region = np.asarray(level[ry0:ry1, rx0:rx1])
    if region.ndim == 2:
        region = region[:, :, None]
    pad = ((ry0 - (y0 - halo), (y1 + halo) - ry1), (rx0 - (x0 - halo), (x1 + halo) - rx1),
           (0, 0))
    if any(p for pair in pad for p in pair):
        region = np.pad(region, pad, mode="symmetric")
    return region


def scale_strokes(strokes: Sequence[Stroke], downsample: int) -> list[Stroke]:
    """Strokes in full-resolution pixels as strokes on the image downsampled by
    ``downsample`` (pixel centres map to pixel centres; widths shrink, at least 1)."""
    d = float(downsample)
    if d == 1:
        return list(strokes)
    return [replace(s, xs=tuple((x + 0.5) / d - 0.5 for x in s.xs),
                    ys=tuple((y + 0.5) / d - 0.5 for y in s.ys), width=max(s.width / d, 1.0))
            for s in strokes]


def stroke_bounds(stroke: Stroke) -> tuple[float, float, float, float] | None:
    """``(y0, y1, x0, x1)`` the stroke may paint (its points grown by its width), or None."""
    xs = np.asarray(stroke.xs, float)
    ys = np.asarray(stroke.ys, float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
        return None
    r = stroke.width / 2 + 2
    return (float(ys[ok].min() - r), float(ys[ok].max() + r + 1),
            float(xs[ok].min() - r), float(xs[ok].max() + r + 1))


def _quantizer_key(q: Quantizer) -> bytes:
    return q.offset.tobytes() + q.scale.tobytes() + q.kind.tobytes()


class TiledImage:
    """One image at one working resolution, computed tile by tile on demand.

    Parameters
    ----------
    level : array-like
        ``(h, w, C)`` image at the working resolution (region reads).
    cache : ByteCache
        Where feature codes, painted rows and tile results are kept.
    tile : int
        Tile side in pixels.
    token : hashable
        Tells this image's cache entries from others' in a shared cache.
    """

    def __init__(self, level: Any, cache: ByteCache, tile: int = TILE,
                 token: Hashable = None) -> None:
        self.level = level
        self.cache = cache
        self.grid = TileGrid(int(level.shape[0]), int(level.shape[1]), int(tile))
        self.token = token
        #: Tiles whose features were computed (for tests and the status line).
        self.computed = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.level.shape)

    def codes(self, t: tuple[int, int], stack: FeatureStack, quantizer: Quantizer,
              ring: int = 0) -> np.ndarray:
        """uint8 codes of tile ``t`` grown by ``ring`` pixels on every side (what the
        probability smoothing reads), from the cache when there.

        Returns
        -------
        numpy.ndarray
            ``(th + 2 ring, tw + 2 ring, F)`` uint8.
        """
        key = ("codes", self.token, t, stack.key(), _quantizer_key(quantizer), int(ring))
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        y0, y1, x0, x1 = self.grid.bounds(*t)
        halo = int(stack.halo)
        # the tile with ring + halo of context, mirrored at the border as a whole: the ring
        # beyond the border is the mirror of the pixels inside, as Dask's reflect gives
        block = read_block(self.level, y0, y1, x0, x1, ring + halo)
        codes, _ = stack.codes(block, quantizer, context=(halo, halo))
        self.computed += 1
        self.cache.put(key, codes, codes.nbytes)
        return codes

    def painted_rows(self, strokes: Sequence[Stroke], stack: FeatureStack,
                     quantizer: Quantizer, ring: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)``: codes ``(N, F)`` uint8 and class ids ``(N,)`` of the painted pixels,
        computing only the tiles the strokes (in this image's pixels) touch.

        ``ring``: take the codes from those grown by ``ring`` (:meth:`codes`), the ones the
        prediction of the same tiles reads, so that a tile's features are computed once."""
        by_tile: dict[tuple[int, int], list[Stroke]] = {}
        for s in strokes:
            b = stroke_bounds(s)
            if b is None:
                continue
            for t in self.grid.tiles_in(*b):
                by_tile.setdefault(t, []).append(s)
        Xs, ys = [], []
        for t in sorted(by_tile):
            key = ("rows", self.token, t, tuple(by_tile[t]), stack.key(),
                   _quantizer_key(quantizer))
            hit = self.cache.get(key)
            if hit is None:
                y0, y1, x0, x1 = self.grid.bounds(*t)
                shifted = [replace(s, xs=tuple(x - x0 for x in s.xs),
                                   ys=tuple(y - y0 for y in s.ys)) for s in by_tile[t]]
                labels = rasterize_strokes(shifted, (y1 - y0, x1 - x0))
                mask = labels > 0
                if mask.any():
                    codes = self.codes(t, stack, quantizer, ring)
                    codes = codes[ring:codes.shape[0] - ring, ring:codes.shape[1] - ring]
                    hit = (np.ascontiguousarray(codes[mask]), labels[mask])
                else:
                    hit = (np.zeros((0, 0), np.uint8), np.zeros(0, np.uint16))
                self.cache.put(key, hit, hit[0].nbytes + hit[1].nbytes + 64)
            if hit[1].size:
                Xs.append(hit[0])
                ys.append(hit[1])
        if not Xs:
            return np.zeros((0, 0), np.uint8), np.zeros(0, np.uint16)
        return np.concatenate(Xs), np.concatenate(ys)

    def result(self, t: tuple[int, int], model: SegmentationModel,
               model_key: Hashable) -> tuple[np.ndarray, np.ndarray] | None:
        """Cached labels and uncertainty of tile ``t`` under ``model_key``, or None."""
        return self.cache.get(("result", self.token, t, model_key))

    def predict(self, t: tuple[int, int], model: SegmentationModel,
                model_key: Hashable) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``(th, tw)`` and uncertainty ``(th, tw)`` float16 of tile ``t``, equal to
        the whole image's prediction there (:func:`~segdash.tiling.tile_proba`)."""
        hit = self.result(t, model, model_key)
        if hit is not None:
            return hit
        ring = smoothing_halo(model.smoothing)
        codes = self.codes(t, model.stack, model.quantizer, ring)
        proba = tile_proba(codes, model, ring)
        labels, uncertainty = model.labels_and_uncertainty(proba)
        out = (labels, uncertainty.astype(np.float16))
        self.cache.put(("result", self.token, t, model_key), out,
                       labels.nbytes + out[1].nbytes + 64)
        return out

    def mosaic(self, rows: np.ndarray, cols: np.ndarray, model_keys: Sequence[Hashable],
               which: int = 0) -> np.ndarray:
        """Cached tile results at the pixels ``rows x cols`` (ascending working-resolution
        indices), of the first of ``model_keys`` that has the tile: ``which`` 0 gives labels
        (0 where not computed), 1 uncertainty (float32, NaN where not computed).

        Returns
        -------
        numpy.ndarray
            ``(len(rows), len(cols))``.
        """
        r_tile = np.searchsorted(self.grid.row_edges, rows, side="right") - 1
        c_tile = np.searchsorted(self.grid.col_edges, cols, side="right") - 1
        out = None
        for ty in np.unique(r_tile):
            ri = np.nonzero(r_tile == ty)[0]
            for tx in np.unique(c_tile):
                hit = next((h for k in model_keys if (h := self.cache.get(
                    ("result", self.token, (int(ty), int(tx)), k))) is not None), None)
                if hit is None:
                    continue
                part = hit[which]
                if out is None:
                    out = (np.zeros((len(rows), len(cols)), part.dtype) if which == 0 else
                           np.full((len(rows), len(cols)), np.nan, np.float32))
                ci = np.nonzero(c_tile == tx)[0]
                y0, _, x0, _ = self.grid.bounds(int(ty), int(tx))
                out[np.ix_(ri, ci)] = part[np.ix_(rows[ri] - y0, cols[ci] - x0)]
        if out is None:
            out = (np.zeros((len(rows), len(cols)), np.uint8) if which == 0 else
                   np.full((len(rows), len(cols)), np.nan, np.float32))
        return out

    def forget_results(self, keep: Sequence[Hashable] = ()) -> None:
        """Drop the tile results of every model but those of ``keep`` (a new model)."""
        self.cache.drop(lambda k: not (k[0] == "result" and k[1] == self.token
                                       and k[3] not in keep))
