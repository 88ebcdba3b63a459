"""Tiling: a model applied to an image of any size, tile by tile with Dask.

:func:`apply` is the Python entry point (numpy or dask arrays); :func:`tiled_proba`,
:func:`tiled_labels` and :func:`tiled_overlay` are the lazy pieces ``segdash apply`` builds
on.

A plane is cut into tiles of at most ``tile`` pixels square (near-equal sizes);
:func:`dask.array.map_overlap` hands each tile to the model with ``model.halo`` pixels of its
neighbours on every side and the halo is trimmed off the result. At the image border the
tile is extended with ``boundary="reflect"``, which in Dask repeats the edge pixel
(``a b c | c b a``) exactly like numpy's ``mode="symmetric"`` the feature extractors pad
with. A pixel's features depend only on pixels within the halo, so the tiled result equals
the whole-image result exactly, and memory depends on the tile size, not the image size.

Dask is imported inside the functions that need it: ``import segdash`` stays light.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from .classes import ClassInfo
from .io.render import overlay_rgb
from .model import SegmentationModel
from .parallel import n_threads, serial
from .postprocess import labels_and_uncertainty, smoothing_halo

#: Memory the features of one tile (halo included) may take, in bytes: sets the default
#: tile size. A worker thread needs about this much plus the model's temporaries.
TILE_FEATURE_BYTES = 512 * 2**20
#: Default tiles are a multiple of this many pixels.
TILE_STEP = 256


def default_tile(model: SegmentationModel) -> int:
    """Tile side, in pixels, whose features (halo included) fit :data:`TILE_FEATURE_BYTES`.

    Parameters
    ----------
    model : SegmentationModel

    Returns
    -------
    int
        A multiple of :data:`TILE_STEP`, at least ``2 * model.halo``.
    """
    n_features = max(len(model.feature_names), 1)
    side = int(math.sqrt(TILE_FEATURE_BYTES / (model.code_bytes * n_features)))
    side -= 2 * model.halo
    tile = max(TILE_STEP, side // TILE_STEP * TILE_STEP)
    return max(tile, min_tile(model))




def min_tile(model: SegmentationModel) -> int:
    """Smallest tile the model can be tiled with: twice its halo (at least 16 pixels).

    Tiles are at least half ``tile`` wide, and Dask needs every tile at least as wide as
    the overlap it shares with its neighbours.
    """
    return max(16, 2 * int(model.halo))


def tile_chunks(size: int, tile: int) -> tuple[int, ...]:
    """Split ``size`` pixels into the fewest near-equal tiles of at most ``tile`` pixels.

    Every tile is then at least ``tile / 2`` pixels (when there are several), which keeps
    the last tile from being thinner than the halo.
    """
    n = max(1, -(-size // tile))
    base, extra = divmod(size, n)
    return tuple(base + 1 if i < extra else base for i in range(n))


def check_tile(model: SegmentationModel, tile: int | None) -> int:
    if tile is None:
        return default_tile(model)
    tile = int(tile)
    if tile < min_tile(model):
        raise ValueError(
            f"tile {tile} is too small for this model: its features need {model.halo} pixels "
            f"of context on each side, so tiles must be at least {min_tile(model)} pixels"
        )
    return tile




def tile_proba(codes: np.ndarray, model: SegmentationModel,
               ring: int | tuple[int, int] = 0) -> np.ndarray:
    """Probabilities of a tile from the codes of the tile grown by ``ring`` pixels (what the
    probability smoothing reads), with the ring trimmed off.

    Parameters
    ----------
    codes : numpy.ndarray
        ``(th + 2 ry, tw + 2 rx, F)`` uint8 codes made with ``model.quantizer``.
    model : SegmentationModel
    ring : int or (int, int)
        ``(ry, rx)`` pixels of ring on each axis (one int: both).

    Returns
    -------
    numpy.ndarray
        ``(th, tw, K)`` float32, last axis in ``model.classes_`` order.
    """
    ry, rx = (ring, ring) if np.isscalar(ring) else ring
    proba = model.predict_proba_codes(codes)
    return proba[ry:proba.shape[0] - ry, rx:proba.shape[1] - rx]


def _proba_block(block: np.ndarray, model: SegmentationModel,
                 halo_trim: tuple[int, int], one_thread: bool = False) -> np.ndarray:
    """Probabilities of one tile extended by the halo, with the halo trimmed off.

    The features are computed once per pixel: only for the tile and the ring the
    probability smoothing reads, from the neighbours' pixels the block already holds (the
    extractors' ``compute_codes_inner`` hook), not by padding the block again. With
    ``one_thread`` the compiled kernels run on the calling thread (tiles already keep every
    core busy: :func:`segdash.parallel.serial`).
    """
    if one_thread:
        with serial():
            return _proba_block(block, model, halo_trim)
    ty, tx = halo_trim
    ring = smoothing_halo(model.smoothing)
    # an axis with a halo holds the features' halo and the smoothing's ring
    context = (ty - ring if ty else 0, tx - ring if tx else 0)
    codes, _ = model.stack.codes(block, model.quantizer, context=context)
    return tile_proba(codes, model, ((ring if ty else 0), (ring if tx else 0)))


def _labels_block(proba: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Class ids of the most probable class, as ``SegmentationModel.labels_from_proba``."""
    with serial():  # one pass over a tile: not worth splitting over the pool
        return labels_and_uncertainty(proba, class_ids)[0]


def tiled_proba(model: SegmentationModel, image: Any, tile: int | None = None,
                model_ref: Any = None) -> Any:
    """Lazy per-pixel class probabilities of a dask image, tile by tile.

    Parameters
    ----------
    model : SegmentationModel
    image : dask.array.Array
        ``(H, W, C)`` with the model's channel count.
    tile : int, optional
        Tile side in pixels (default :func:`default_tile`).
    model_ref : optional
        What the tasks receive as the model: a ``dask.delayed`` or a distributed Future of
        ``model.single_threaded()``; by default a new delayed of it.

    Returns
    -------
    dask.array.Array
        ``(H, W, K)`` float32, one chunk per tile, last axis in ``model.classes_`` order.
    """
    import dask
    import dask.array as da

    tile = check_tile(model, tile)
    h, w, c = image.shape
    chunks = (tile_chunks(h, tile), tile_chunks(w, tile), (c,))
    if image.chunks != chunks:
        image = image.rechunk(chunks)
    halo = int(model.halo)
    # An axis in one piece needs no overlap: the extractor mirror-pads it itself, exactly
    # as on the whole image (and Dask cannot reflect a halo wider than the axis).
    depth = {0: halo if len(chunks[0]) > 1 else 0, 1: halo if len(chunks[1]) > 1 else 0, 2: 0}
    boundary = {ax: "reflect" if d else "none" for ax, d in depth.items()}
    if model_ref is None:
        model_ref = dask.delayed(model.single_threaded(),
                                 name=f"segdash-model-{uuid.uuid4().hex}")
    return da.map_overlap(
        _proba_block, image, depth=depth, boundary=boundary, trim=False,
        dtype=np.float32, chunks=(chunks[0], chunks[1], (len(model.classes_),)),
        meta=np.empty((0, 0, 0), np.float32), model=model_ref,
        halo_trim=(depth[0], depth[1]),
        # as many tiles as threads or more: one tile per thread, kernels not split again
        one_thread=len(chunks[0]) * len(chunks[1]) >= n_threads(),
    )


def tiled_labels(model: SegmentationModel, proba: Any) -> Any:
    """Lazy ``(H, W)`` class ids from lazy ``(H, W, K)`` probabilities (block by block)."""
    class_ids = model.classes_.astype(model.label_dtype)
    return proba.map_blocks(_labels_block, class_ids=class_ids, drop_axis=2,
                            dtype=model.label_dtype,
                            meta=np.empty((0, 0), model.label_dtype))


def apply(model: SegmentationModel, image: Any, *, tile: int | None = None,
          proba: bool = False) -> Any:
    """Segment an image of any size, tile by tile with Dask.

    Parameters
    ----------
    model : SegmentationModel
        A trained model (:func:`segdash.fit`, :func:`segdash.load_model`).
    image : numpy.ndarray or dask.array.Array
        ``(H, W)`` or ``(H, W, C)`` with the model's channel count, any integer or float
        dtype. A dask array is processed lazily (a large TIFF can be opened with
        ``dask.array.from_zarr(tifffile.imread(path, aszarr=True))``).
    tile : int, optional
        Tile side in pixels; by default one whose features take about 512 MB. At least
        ``2 * model.halo``.
    proba : bool
        Return class probabilities instead of class ids.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        A numpy array for numpy input (computed with Dask's current scheduler), a lazy dask
        array for dask input: ``(H, W)`` class ids of ``model.label_dtype``, or with
        ``proba`` ``(H, W, K)`` float32 in ``model.classes_`` order. Equal, exactly, to
        ``model.predict(image)`` / ``model.predict_proba(image)`` with a single-threaded
        estimator.

    Raises
    ------
    ImageError
        Not 2-D or 3-D, or another channel count than the model's.
    ValueError
        A tile smaller than ``2 * model.halo``.
    """
    import dask.array as da

    lazy = isinstance(image, da.Array)
    if not lazy:
        image = np.asarray(image)
    model.check_image(image)
    tile = check_tile(model, tile)
    if image.ndim == 2:
        image = image[:, :, None]
    h, w, c = image.shape
    chunks = (tile_chunks(h, tile), tile_chunks(w, tile), (c,))
    arr = image.rechunk(chunks) if lazy else da.from_array(image, chunks=chunks)
    out = tiled_proba(model, arr, tile)
    if not proba:
        out = tiled_labels(model, out)
    return out if lazy else out.compute()




def _overlay_block(image: np.ndarray, labels: np.ndarray, classes: list[ClassInfo],
                   low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return overlay_rgb(image, labels, classes, low, high)


def tiled_overlay(image: Any, labels: Any, classes: Iterable[ClassInfo],
                  low: np.ndarray, high: np.ndarray) -> Any:
    """Lazy ``(H, W, 3)`` uint8 overlay (:func:`segdash.io.render.overlay_rgb`), tile by tile.

    Parameters
    ----------
    image : dask.array.Array
        ``(H, W, C)``.
    labels : dask.array.Array
        ``(H, W)`` class ids chunked like ``image``.
    classes : iterable of ClassInfo
        Colours.
    low, high : numpy.ndarray
        The whole plane's display range (:func:`segdash.io.render.display_range`).
    """
    import dask.array as da

    return da.blockwise(
        _overlay_block, "ijk", image, "ijk", labels, "ij", classes=list(classes),
        low=low, high=high, dtype=np.uint8, adjust_chunks={"k": 3},
        meta=np.empty((0, 0, 0), np.uint8))

