"""Apply a saved model to many or huge images, tiled with Dask.

:func:`apply` is the Python entry point (numpy or dask arrays); :func:`run_cli` runs
``segdash apply MODEL INPUT... --out DIR``.

Tiling: a plane is cut into tiles of at most ``tile`` pixels square (near-equal sizes);
:func:`dask.array.map_overlap` hands each tile to the model with ``model.halo`` pixels of its
neighbours on every side and the halo is trimmed off the result. At the image border the
tile is extended with ``boundary="reflect"``, which in Dask repeats the edge pixel
(``a b c | c b a``) exactly like numpy's ``mode="symmetric"`` the feature extractors pad
with. A pixel's features depend only on pixels within the halo, so the tiled result equals
the whole-image result exactly, and memory depends on the tile size, not the image size.

Dask is imported only here: ``import segdash`` stays light.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .batch_io import (
    ImageSource,
    PngStreamWriter,
    TiffStreamWriter,
    expand_inputs,
    open_source,
    temporary_path,
)
from .classes import hex_to_rgb
from .errors import ImageError, SegdashError

#: Memory the features of one tile (halo included) may take, in bytes: sets the default
#: tile size. A worker thread needs about this much plus the model's temporaries.
TILE_FEATURE_BYTES = 512 * 2**20
#: Default tiles are a multiple of this many pixels.
TILE_STEP = 256
#: Opacity of class colours over the image in overlays.
OVERLAY_ALPHA = 0.5


# -- tiling --------------------------------------------------------------------------------

def default_tile(model: Any) -> int:
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
    side = int(math.sqrt(TILE_FEATURE_BYTES / (_bytes_per_feature(model) * n_features)))
    side -= 2 * model.halo
    tile = max(TILE_STEP, side // TILE_STEP * TILE_STEP)
    return max(tile, min_tile(model))


def _bytes_per_feature(model: Any) -> int:
    """Bytes one feature of one pixel takes while a tile is predicted.

    A model holding a quantizer predicts from uint8 feature codes: 1 byte, plus the
    extractor's float temporaries (counted as 1 more) when every extractor computes codes
    directly; an extractor that does not makes float32 features first (4 + 1). A model
    without a quantizer predicts from float32 features (4).
    """
    if getattr(model, "quantizer", None) is None:
        return 4
    direct = all(callable(getattr(e, "compute_codes", None))
                 for _, e in model.features.extractors)
    return 2 if direct else 5


def min_tile(model: Any) -> int:
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


def _check_tile(model: Any, tile: int | None) -> int:
    if tile is None:
        return default_tile(model)
    tile = int(tile)
    if tile < min_tile(model):
        raise ValueError(
            f"tile {tile} is too small for this model: its features need {model.halo} pixels "
            f"of context on each side, so tiles must be at least {min_tile(model)} pixels"
        )
    return tile


def batch_model(model: Any) -> Any:
    """The model as tiles use it: its estimator single-threaded.

    Dask already runs one tile per core; an estimator that also spreads every prediction
    over all cores (``n_jobs=-1``) would oversubscribe them. The copy is shallow: the
    fitted trees are shared, not copied.
    """
    est = model.estimator
    if getattr(est, "n_jobs", 1) in (1, None):
        return model
    est = copy.copy(est)
    est.n_jobs = 1
    out = copy.copy(model)
    out.estimator = est
    return out


def _proba_block(block: np.ndarray, model: Any, halo_trim: tuple[int, int]) -> np.ndarray:
    """Probabilities of one tile extended by the halo, with the halo trimmed off."""
    proba = model.predict_proba(block)
    ty, tx = halo_trim
    return proba[ty:proba.shape[0] - ty, tx:proba.shape[1] - tx]


def _labels_block(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class ids of the most probable class, as ``SegmentationModel.labels_from_proba``."""
    return classes[np.argmax(proba, axis=-1)]


def tiled_proba(model: Any, image: Any, tile: int | None = None,
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
        ``batch_model(model)``; by default a new delayed of it.

    Returns
    -------
    dask.array.Array
        ``(H, W, K)`` float32, one chunk per tile, last axis in ``model.classes_`` order.
    """
    import dask
    import dask.array as da

    tile = _check_tile(model, tile)
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
        model_ref = dask.delayed(batch_model(model), name=f"segdash-model-{uuid.uuid4().hex}")
    return da.map_overlap(
        _proba_block, image, depth=depth, boundary=boundary, trim=False,
        dtype=np.float32, chunks=(chunks[0], chunks[1], (len(model.classes_),)),
        meta=np.empty((0, 0, 0), np.float32), model=model_ref,
        halo_trim=(depth[0], depth[1]),
    )


def tiled_labels(model: Any, proba: Any) -> Any:
    """Lazy ``(H, W)`` class ids from lazy ``(H, W, K)`` probabilities (block by block)."""
    classes = model.classes_.astype(model.label_dtype)
    return proba.map_blocks(_labels_block, classes=classes, drop_axis=2,
                            dtype=model.label_dtype,
                            meta=np.empty((0, 0), model.label_dtype))


def apply(model: Any, image: Any, *, tile: int | None = None, proba: bool = False) -> Any:
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
    if image.ndim not in (2, 3):
        raise ImageError(
            f"an image must be (height, width) or (height, width, channels); got {image.shape}"
        )
    model.check_image(image)
    tile = _check_tile(model, tile)
    if image.ndim == 2:
        image = image[:, :, None]
    h, w, c = image.shape
    chunks = (tile_chunks(h, tile), tile_chunks(w, tile), (c,))
    arr = image.rechunk(chunks) if lazy else da.from_array(image, chunks=chunks)
    out = tiled_proba(model, arr, tile)
    if not proba:
        out = tiled_labels(model, out)
    return out if lazy else out.compute()


# -- overlays ------------------------------------------------------------------------------

def display_rgb(block: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """An image tile as ``(h, w, 3)`` uint8 for display.

    Integers are scaled by their dtype's maximum (as the features see them), floats from
    ``lo..hi`` (the plane's range). Three channels (or uint8 RGBA) are shown as RGB,
    anything else as the grey of the first channel.
    """
    c = block.shape[2]
    rgb = c == 3 or (c == 4 and block.dtype == np.uint8)
    view = block[:, :, :3] if rgb else block[:, :, :1]
    if block.dtype == bool:
        v = view.astype(np.float32)
    elif np.issubdtype(block.dtype, np.integer):
        v = view.astype(np.float32) / np.float32(np.iinfo(block.dtype).max)
    else:
        v = (view.astype(np.float32) - np.float32(lo)) / np.float32(max(hi - lo, 1e-12))
    out = np.clip(v * 255 + 0.5, 0, 255).astype(np.uint8)
    return out if rgb else np.repeat(out, 3, axis=2)


def _overlay_block(image: np.ndarray, labels: np.ndarray, lut: np.ndarray,
                   lo: float, hi: float) -> np.ndarray:
    """Class colours blended over the image, ``(h, w, 3)`` uint8."""
    base = display_rgb(image, lo, hi).astype(np.float32)
    colour = lut[labels].astype(np.float32)
    blended = base * (1 - OVERLAY_ALPHA) + colour * OVERLAY_ALPHA
    return (blended + 0.5).astype(np.uint8)


def _colour_lut(model: Any) -> np.ndarray:
    top = int(model.classes_.max())
    lut = np.zeros((top + 1, 3), np.uint8)
    for c in model.classes:
        if c.id <= top:
            lut[c.id] = hex_to_rgb(c.color)
    return lut


# -- the command line: jobs ----------------------------------------------------------------

@dataclass
class Options:
    """What ``segdash apply`` was asked to do."""

    out: Path
    proba: bool = False
    overlay: bool = False
    overwrite: bool = False
    tile: int | None = None
    scheduler: str | None = None
    workers: int | None = None
    quiet: bool = False


class _Bands:
    """Collects the tiles of one plane and releases them as full-width bands, in order."""

    def __init__(self, kinds: Sequence[str], n_rows: int, n_cols: int) -> None:
        self.kinds = list(kinds)
        self.n_rows, self.n_cols = n_rows, n_cols
        self.blocks: dict[tuple[str, int, int], np.ndarray] = {}
        self.next_row = 0

    def add(self, kind: str, i: int, j: int, block: np.ndarray) -> None:
        self.blocks[kind, i, j] = block

    def ready(self) -> Iterator[dict[str, np.ndarray]]:
        """Bands whose tiles have all arrived, top to bottom; each ``{kind: rows}``."""
        while self.next_row < self.n_rows and all(
            (kind, self.next_row, j) in self.blocks
            for kind in self.kinds for j in range(self.n_cols)
        ):
            i = self.next_row
            yield {kind: np.concatenate([self.blocks.pop((kind, i, j))
                                         for j in range(self.n_cols)], axis=1)
                   for kind in self.kinds}
            self.next_row += 1

    @property
    def done(self) -> bool:
        return self.next_row == self.n_rows


@dataclass
class Job:
    """One input file on its way through the batch."""

    source: ImageSource
    outputs: dict[str, Path]
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    writers: dict[str, Any] = field(default_factory=dict)
    graphs: dict[int, list] = field(default_factory=dict)
    bands: dict[int, _Bands] = field(default_factory=dict)
    futures: set = field(default_factory=set)
    written: int = 0
    error: str | None = None

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def tiles_per_plane(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def pixels(self) -> int:
        return self.source.frames * self.source.shape[0] * self.source.shape[1]


def output_paths(model: Any, source: ImageSource, opts: Options) -> dict[str, Path]:
    """Where an input's results go: ``{kind: path}`` for kinds labels, proba, overlay.

    Labels are PNG for a single image with class ids up to 255, else TIFF (16-bit ids, or a
    stack that stays a stack); probabilities are float32 TIFF; overlays PNG (TIFF for stacks).
    """
    stem = source.path.stem
    if stem.lower().endswith(".ome"):  # name.ome.tif -> name
        stem = stem[:-4]
    png_labels = not source.is_stack and model.label_dtype == np.uint8
    out = {"labels": opts.out / f"{stem}_labels.{'png' if png_labels else 'tif'}"}
    if opts.proba:
        out["proba"] = opts.out / f"{stem}_proba.tif"
    if opts.overlay:
        out["overlay"] = opts.out / f"{stem}_overlay.{'tif' if source.is_stack else 'png'}"
    return out


def _open_writers(job: Job, model: Any) -> None:
    src = job.source
    h, w = src.shape[:2]
    lead = (src.frames,) if src.is_stack else ()
    for kind, final in job.outputs.items():
        tmp = temporary_path(final)
        if kind == "labels":
            if final.suffix == ".png":
                writer = PngStreamWriter(tmp, w, h, 1)
            else:
                writer = TiffStreamWriter(tmp, (*lead, h, w), model.label_dtype, src.is_stack)
        elif kind == "proba":
            writer = TiffStreamWriter(tmp, (*lead, h, w, len(model.classes_)), np.float32,
                                      src.is_stack, level=1)
        elif final.suffix == ".png":
            writer = PngStreamWriter(tmp, w, h, 3)
        else:
            writer = TiffStreamWriter(tmp, (*lead, h, w, 3), np.uint8, src.is_stack,
                                      photometric="rgb")
        job.writers[kind] = writer


def _close_job(job: Job) -> None:
    """Finish every output of a job and move them into place (all or none)."""
    for writer in job.writers.values():
        writer.close()
    for final in job.outputs.values():
        os.replace(temporary_path(final), final)
    job.writers.clear()


def _abort_job(job: Job) -> None:
    for writer in job.writers.values():
        try:
            writer.abort()
        except Exception:  # the job has failed already; its error is what matters
            pass
    for final in job.outputs.values():
        tmp = temporary_path(final)
        if tmp.exists():
            tmp.unlink()
    job.writers.clear()
    job.bands.clear()


def _without_name(name: str, message: str) -> str:
    """``message`` without a leading ``"name: "`` (reports put the path in front)."""
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SegdashError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def plan_jobs(model: Any, files: Sequence[Path], opts: Options, tile: int
              ) -> tuple[list[Job], list[tuple[str, str]], list[tuple[str, str]]]:
    """Open every input and decide its outputs, without computing anything.

    Returns
    -------
    jobs : list of Job
        Inputs to process.
    failed : list of (name, reason)
        Unreadable inputs, another channel count than the model's, clashing output names.
    skipped : list of (name, reason)
        Inputs whose outputs exist (without ``--overwrite``).
    """
    jobs: list[Job] = []
    failed: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    claimed: dict[Path, str] = {}
    for path in files:
        try:
            source = open_source(path)
            shape = source.shape if source.shape[2] > 1 else source.shape[:2]
            model.check_image(np.broadcast_to(np.zeros((), source.dtype), shape))
        except ImageError as exc:
            failed.append((str(path), _without_name(path.name, str(exc))))
            continue
        outputs = output_paths(model, source, opts)
        clash = [claimed[p] for p in outputs.values() if p in claimed]
        if clash:
            failed.append((str(path), f"its outputs would overwrite those of {clash[0]} "
                                      "(inputs with the same name): rename one of them"))
            continue
        existing = [p.name for p in outputs.values() if p.exists()]
        if existing and not opts.overwrite:
            skipped.append((str(path), f"{', '.join(existing)} exist(s) in {opts.out}; "
                                       "use --overwrite to replace"))
            continue
        claimed.update({p: str(path) for p in outputs.values()})
        jobs.append(Job(source, outputs, tile_chunks(source.shape[0], tile),
                        tile_chunks(source.shape[1], tile)))
    return jobs, failed, skipped


# -- the command line: running -------------------------------------------------------------

def _pack_tile(kinds: Sequence[str], *blocks: np.ndarray) -> dict[str, np.ndarray]:
    """One tile's outputs in one result, so a tile travels back as one piece."""
    return dict(zip(kinds, blocks, strict=True))


def _worker_report(features: Sequence[str], classifier: str,
                   paths: Sequence[str]) -> dict[str, Any]:
    """Run on every worker before a batch: can it run this model and see these files?"""
    from . import __version__, registry

    missing = []
    for reg, names in ((registry.features, features), (registry.classifiers, [classifier])):
        for name in names:
            try:
                reg.get(name)
            except Exception as exc:  # unknown or broken plugin: reported to the user
                missing.append(f"{name} ({_reason(exc)})")
    return {"segdash": __version__, "missing": missing,
            "unseen": [p for p in paths if not os.path.exists(p)]}


class _Runner:
    """Feeds the tiles of every plane of every job to a Dask client and writes results.

    Tiles are submitted one row of tiles at a time, in order, keeping about
    ``window`` tiles in flight across images: enough to keep every thread busy (also
    between images), few enough that finished tiles waiting for the rest of their band stay
    within a couple of tile rows whatever the image size.
    """

    def __init__(self, client: Any, model: Any, opts: Options, tile: int, bars: Any) -> None:
        self.client, self.model, self.opts, self.tile, self.bars = (
            client, model, opts, tile, bars)
        # One copy of the model per worker, not one per task or per plane.
        self.model_ref = client.scatter(batch_model(model), broadcast=True, hash=False)
        self.lut = _colour_lut(model)
        self.threads = sum(client.nthreads().values()) or 1
        self.done: list[Job] = []
        self.failed: list[tuple[str, str]] = []
        self.in_flight = 0
        self.meta: dict[Any, tuple[Job, int, int, int]] = {}

    def _plane_tiles(self, job: Job, p: int) -> list[list[Any]]:
        """The Delayed results of every tile of plane ``p``, as rows of tiles."""
        import dask
        import dask.array as da

        src = job.source
        image = src.plane(p, (job.rows, job.cols, (src.shape[2],)))
        proba = tiled_proba(self.model, image, self.tile, model_ref=self.model_ref)
        arrays = {"labels": tiled_labels(self.model, proba)}
        if "proba" in job.outputs:
            arrays["proba"] = proba
        if "overlay" in job.outputs:
            lo, hi = 0.0, 1.0
            if src.dtype.kind == "f":
                lo, hi = (float(v) for v in self.client.compute(
                    [da.nanmin(image), da.nanmax(image)], sync=True))
            arrays["overlay"] = da.blockwise(
                _overlay_block, "ijk", image, "ijk", arrays["labels"], "ij", lut=self.lut,
                lo=lo, hi=hi, dtype=np.uint8, adjust_chunks={"k": 3},
                meta=np.empty((0, 0, 0), np.uint8))
        kinds = list(arrays)
        grids = [arrays[k].to_delayed(optimize_graph=False) for k in kinds]
        pack = dask.delayed(_pack_tile, pure=True)
        name = f"segdash-tile-{uuid.uuid4().hex}"
        job.bands[p] = _Bands(kinds, len(job.rows), len(job.cols))
        return [[pack(kinds, *[g[(i, j) + (0,) * (g.ndim - 2)] for g in grids],
                      dask_key_name=f"{name}-{i}-{j}")
                 for j in range(len(job.cols))]
                for i in range(len(job.rows))]

    def fail(self, job: Job, exc: BaseException | str) -> None:
        if job.error is not None:
            return
        job.error = _without_name(job.name, exc if isinstance(exc, str) else _reason(exc))
        if job.futures:
            for fut in job.futures:
                if self.meta.pop(fut.key, None) is not None:
                    self.in_flight -= 1
            self.client.cancel(list(job.futures))
            job.futures.clear()
        job.graphs.clear()
        _abort_job(job)
        remaining = (job.source.frames - job.written) * job.tiles_per_plane
        self.bars.tiles.total = max(self.bars.tiles.n, self.bars.tiles.total - remaining)
        self.bars.tiles.refresh()
        self.failed.append((str(job.source.path), job.error))
        self.bars.write(f"failed: {job.source.path}: {job.error}")

    def _emit(self, job: Job) -> None:
        while job.written < job.source.frames:
            bands = job.bands.get(job.written)
            if bands is None:
                return
            for band in bands.ready():
                for kind, rows in band.items():
                    job.writers[kind].write(rows)
            if not bands.done:
                return
            del job.bands[job.written]
            job.written += 1
        _close_job(job)
        self.done.append(job)
        self.bars.images.update(1)

    def run(self, jobs: Sequence[Job]) -> None:
        from distributed import as_completed

        pending = deque((job, p, i) for job in jobs for p in range(job.source.frames)
                        for i in range(len(job.rows)))
        stream = as_completed(loop=self.client.loop)

        def refill() -> None:
            while pending:
                job, p, i = pending[0]
                window = max(2 * self.threads, len(job.cols) + self.threads)
                if self.in_flight >= window:
                    return
                pending.popleft()
                if job.error is not None:
                    continue
                try:
                    if p == 0 and i == 0:
                        _open_writers(job, self.model)
                    if i == 0:
                        job.graphs[p] = self._plane_tiles(job, p)
                    row = job.graphs[p][i]
                    if i == len(job.rows) - 1:
                        del job.graphs[p]
                    futures = self.client.compute(row)
                except Exception as exc:
                    self.fail(job, exc)
                    continue
                for j, fut in enumerate(futures):
                    self.meta[fut.key] = (job, p, i, j)
                    job.futures.add(fut)
                    stream.add(fut)
                self.in_flight += len(futures)

        refill()
        for fut in stream:
            info = self.meta.pop(fut.key, None)
            if info is not None:  # None: its job failed and was accounted for then
                job, p, i, j = info
                self.in_flight -= 1
                job.futures.discard(fut)
                try:
                    if fut.status != "finished":
                        raise fut.exception() or RuntimeError(f"tile {fut.status}")
                    for kind, block in fut.result().items():
                        job.bands[p].add(kind, i, j, block)
                    self.bars.tiles.update(1)
                    self._emit(job)
                except Exception as exc:
                    self.fail(job, exc)
            fut.release()
            refill()
        for job in jobs:  # never silent: every job ends done or failed
            if job.error is None and job not in self.done:
                self.fail(job, "not processed (internal error: no tile result came back)")


class _Bars:
    """The two progress bars (images, tiles) and a way to print between them."""

    def __init__(self, n_images: int, n_tiles: int, quiet: bool) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.images = tqdm(total=n_images, desc="images", unit="img", position=0,
                           disable=quiet, file=sys.stderr, dynamic_ncols=True)
        self.tiles = tqdm(total=n_tiles, desc="tiles ", unit="tile", position=1,
                          disable=quiet, file=sys.stderr, dynamic_ncols=True)

    def write(self, message: str) -> None:
        self._tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        self.tiles.close()
        self.images.close()


class _SetupError(SegdashError):
    """The batch cannot start (model, output folder, scheduler, workers)."""


def _connect(opts: Options) -> tuple[Any, Any, str]:
    """A Dask client: to ``opts.scheduler``, or to an in-process cluster of threads."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    if opts.scheduler:
        target = opts.scheduler
        kwargs = ({"scheduler_file": target} if target.endswith(".json")
                  else {"address": target})
        try:
            client = Client(**kwargs, set_as_default=False,
                            timeout=dask.config.get("distributed.comm.timeouts.connect"))
        except Exception as exc:
            raise _SetupError(f"cannot reach the Dask scheduler {target}: {_reason(exc)}"
                              ) from exc
        n = client.nthreads()
        return client, None, (f"scheduler {client.scheduler.address} "
                              f"({len(n)} workers, {sum(n.values())} threads)")
    threads = opts.workers or os.cpu_count() or 1
    # No dashboard (it would import Bokeh) and no fixed port: Dask's HTTP server always
    # starts, so bind it to a free port on localhost.
    cluster = LocalCluster(n_workers=1, threads_per_worker=threads, processes=False,
                           dashboard_address=None, memory_limit=0,
                           silence_logs=logging.ERROR,
                           scheduler_kwargs={"dashboard": False,
                                             "dashboard_address": "127.0.0.1:0"})
    client = Client(cluster, set_as_default=False)
    return client, cluster, f"local scheduler ({threads} threads)"


def _check_workers(client: Any, model: Any, jobs: list[Job], runner_failed: list) -> list[Job]:
    """Stop when workers cannot run the model; drop jobs whose TIFF they cannot see."""
    from . import __version__

    paths = sorted({str(j.source.path.resolve()) for j in jobs if j.source.is_lazy})
    try:
        reports = client.run(_worker_report, model.features.names, model.classifier, paths)
    except Exception as exc:
        raise _SetupError(
            f"the Dask workers cannot run segdash ({_reason(exc)}): install segdash "
            f"{__version__} and the plugins this model needs on every worker (see docs/batch.md)"
        ) from exc
    if not reports:
        raise _SetupError("the Dask scheduler has no workers")
    problems = [f"{w}: needs {', '.join(r['missing'])}" for w, r in reports.items()
                if r["missing"]]
    if problems:
        raise _SetupError("workers lack what this model needs: " + "; ".join(problems))
    unseen = {p for r in reports.values() for p in r["unseen"]}
    keep = []
    for job in jobs:
        if str(job.source.path.resolve()) in unseen:
            runner_failed.append((str(job.source.path),
                                  "the workers cannot see this file at this path (they read "
                                  "TIFF inputs themselves: use a filesystem they share)"))
        else:
            keep.append(job)
    return keep


def run(model_path: str | Path, inputs: Sequence[str], opts: Options) -> int:
    """``segdash apply``: segment every input, write the results, print a summary.

    Returns
    -------
    int
        0 when every input succeeded (or was skipped because its outputs exist), 1 when
        any failed, 2 when the batch could not start.
    """
    from .persist import load_model

    start = time.perf_counter()
    out = sys.stdout
    try:
        try:
            model = load_model(model_path)
        except (SegdashError, OSError) as exc:
            raise _SetupError(f"cannot use the model {model_path}: {_reason(exc)}") from exc
        tile = _check_tile(model, opts.tile)
        try:
            opts.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _SetupError(f"cannot create the output folder {opts.out}: {exc}") from exc
    except (_SetupError, ValueError) as exc:
        print(f"segdash apply: {exc}", file=sys.stderr)
        return 2

    files, failed = expand_inputs(inputs)
    jobs, bad, skipped = plan_jobs(model, files, opts, tile)
    failed += bad
    client = cluster = None
    runner = None
    bars = None
    try:
        if jobs:
            client, cluster, where = _connect(opts)
            if opts.scheduler:
                if opts.workers:
                    print("segdash apply: --workers applies to the local scheduler; the "
                          "cluster's workers are used as they are", file=sys.stderr)
                jobs = _check_workers(client, model, jobs, failed)
            print(f"segdash apply: {len(jobs)} image(s), tile {tile} px (halo {model.halo}), "
                  f"{where}", file=out, flush=True)
            for item, reason in failed:
                print(f"failed: {item}: {reason}", file=sys.stderr)
            bars = _Bars(len(jobs), sum(j.tiles_per_plane * j.source.frames for j in jobs),
                         opts.quiet)
            runner = _Runner(client, model, opts, tile, bars)
            runner.run(jobs)
            failed += runner.failed
        else:
            for item, reason in failed:
                print(f"failed: {item}: {reason}", file=sys.stderr)
    except _SetupError as exc:
        print(f"segdash apply: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        for job in jobs:
            _abort_job(job)
        print("segdash apply: interrupted", file=sys.stderr)
        return 130
    finally:
        if bars is not None:
            bars.close()
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    done = runner.done if runner else []
    seconds = time.perf_counter() - start
    pixels = sum(j.pixels for j in done)
    planes = sum(j.source.frames for j in done)
    print(f"segdash apply: {len(done)} image(s) segmented ({planes} plane(s), "
          f"{pixels / 1e6:.1f} megapixels) in {seconds:.1f} s: "
          f"{pixels / 1e6 / max(seconds, 1e-9):.2f} megapixels/s; "
          f"{len(failed)} failed, {len(skipped)} skipped; results in {opts.out}", file=out)
    for item, reason in skipped:
        print(f"skipped: {item}: {reason}", file=out)
    for item, reason in failed:
        print(f"failed: {item}: {reason}", file=out)
    return 1 if failed else 0


def run_cli(args: argparse.Namespace) -> int:
    """Run ``segdash apply`` from parsed command-line arguments; return the exit status."""
    opts = Options(
        out=Path(args.out), proba=args.proba, overlay=args.overlay, overwrite=args.overwrite,
        tile=args.tile, scheduler=args.scheduler, workers=getattr(args, "workers", None),
        quiet=getattr(args, "quiet", False),
    )
    return run(args.model, args.inputs, opts)
