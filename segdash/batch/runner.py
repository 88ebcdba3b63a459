"""``segdash apply``: segment every input with a Dask client and write the results.

:func:`run` loads and checks the model, plans the jobs (:mod:`segdash.batch.plan`),
connects to a scheduler (an in-process one by default), checks that the workers can run the
model, and feeds tiles to the client through a :class:`TileRunner`, writing each output
band by band as its tiles arrive. Every input ends done, skipped or failed with its reason.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..codes import sample_grid
from ..errors import SegdashError
from ..io.render import display_range
from ..io.sources import expand_inputs
from ..model import SegmentationModel, load_model
from ..project import project_inputs
from ..tiling import check_tile, tile_chunks, tiled_labels, tiled_overlay, tiled_proba
from .plan import (
    ApplyOptions,
    Bands,
    Job,
    OutputFolderError,
    abort_job,
    close_job,
    error_text,
    open_writers,
    plan_jobs,
    probe_writable,
    remove_leftovers,
    without_name,
)


def upsample(arr: Any, downsample: int, size: tuple[int, int], job: Job) -> Any:
    """A lazy result at working resolution ``downsample`` as full-size ``size`` (nearest:
    each pixel repeated over its block), in the job's output tiles."""
    import dask.array as da

    up = da.repeat(da.repeat(arr, downsample, axis=0), downsample, axis=1)[:size[0], :size[1]]
    return up.rechunk((job.rows, job.cols) + up.chunks[2:])


def _pack_tile(kinds: Sequence[str], *blocks: np.ndarray) -> dict[str, np.ndarray]:
    """One tile's outputs in one result, so a tile travels back as one piece."""
    return dict(zip(kinds, blocks, strict=True))


def _worker_report(features: Sequence[str], classifier: str,
                   paths: Sequence[str]) -> dict[str, Any]:
    """Run on every worker before a batch: can it run this model and see these files?"""
    from .. import registry  # on the worker, in its own process

    missing = []
    for reg, names in ((registry.features, features), (registry.classifiers, [classifier])):
        for name in names:
            try:
                reg.get(name)
            except Exception as exc:  # unknown or broken plugin: reported to the user
                missing.append(f"{name} ({error_text(exc)})")
    return {"segdash": __version__, "missing": missing,
            "unseen": [p for p in paths if not os.path.exists(p)]}


class TileRunner:
    """Feeds the tiles of every plane of every job to a Dask client and writes results.

    Tiles are submitted one row of tiles at a time, in order, keeping about
    ``window`` tiles in flight across images: enough to keep every thread busy (also
    between images), few enough that finished tiles waiting for the rest of their band stay
    within a couple of tile rows whatever the image size.
    """

    def __init__(self, client: Any, model: SegmentationModel, opts: ApplyOptions, tile: int,
                 bars: Any) -> None:
        self.client, self.model, self.opts, self.tile, self.bars = (
            client, model, opts, tile, bars)
        # One copy of the model per worker, not one per task or per plane.
        self.model_ref = client.scatter(model.single_threaded(), broadcast=True, hash=False)
        self.threads = sum(client.nthreads().values()) or 1
        self.done: list[Job] = []
        self.failed: list[tuple[str, str]] = []
        self.in_flight = 0
        self.meta: dict[Any, tuple[Job, int, int, int]] = {}

    def _plane_tiles(self, job: Job, p: int) -> list[list[Any]]:
        """The Delayed results of every tile of plane ``p``, as rows of tiles."""
        import dask

        src = job.source
        image = src.plane(p, (job.rows, job.cols, (src.shape[2],)))
        d = self.model.downsample
        if d > 1:  # at the model's working resolution, results upsampled to full size
            h, w = src.shape[:2]
            hd, wd = -(-h // d), -(-w // d)
            work = src.plane(p, (tile_chunks(hd, self.tile), tile_chunks(wd, self.tile),
                                 (src.shape[2],)), downsample=d)
            proba = tiled_proba(self.model, work, self.tile, model_ref=self.model_ref)
            labels = upsample(tiled_labels(self.model, proba), d, (h, w), job)
            proba = upsample(proba, d, (h, w), job) if "proba" in job.outputs else None
        else:
            proba = tiled_proba(self.model, image, self.tile, model_ref=self.model_ref)
            labels = tiled_labels(self.model, proba)
        arrays = {"labels": labels}
        if "proba" in job.outputs:
            arrays["proba"] = proba
        if "overlay" in job.outputs:
            # the whole plane's display range, from a grid sample (what the dashboard uses)
            low, high = display_range(self.client.compute(sample_grid(image), sync=True))
            arrays["overlay"] = tiled_overlay(image, arrays["labels"], self.model.classes,
                                              low, high)
        arrays = {k: a for k, a in arrays.items() if k in job.outputs}  # resumed: no labels
        kinds = list(arrays)
        grids = [arrays[k].to_delayed(optimize_graph=False) for k in kinds]
        pack = dask.delayed(_pack_tile, pure=True)
        name = f"segdash-tile-{uuid.uuid4().hex}"
        job.bands[p] = Bands(kinds, len(job.rows), len(job.cols))
        return [[pack(kinds, *[g[(i, j) + (0,) * (g.ndim - 2)] for g in grids],
                      dask_key_name=f"{name}-{i}-{j}")
                 for j in range(len(job.cols))]
                for i in range(len(job.rows))]

    def fail(self, job: Job, exc: BaseException | str) -> None:
        if job.error is not None:
            return
        job.error = without_name(job.name, exc if isinstance(exc, str) else error_text(exc))
        if job.futures:
            for fut in job.futures:
                if self.meta.pop(fut.key, None) is not None:
                    self.in_flight -= 1
            self.client.cancel(list(job.futures))
            job.futures.clear()
        job.graphs.clear()
        abort_job(job)
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
        close_job(job)
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
                        open_writers(job, self.model)
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


def _connect(opts: ApplyOptions) -> tuple[Any, Any, str]:
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
            raise _SetupError(f"cannot reach the Dask scheduler {target}: {error_text(exc)}"
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


def _check_workers(client: Any, model: SegmentationModel, jobs: list[Job],
                   runner_failed: list) -> list[Job]:
    """Stop when workers cannot run the model; drop jobs whose TIFF they cannot see."""
    paths = sorted({str(j.source.path.resolve()) for j in jobs if j.source.is_lazy})
    try:
        reports = client.run(_worker_report, model.stack.names, model.classifier, paths)
    except Exception as exc:
        raise _SetupError(
            f"the Dask workers cannot run segdash ({error_text(exc)}): install segdash "
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


def run(model_path: str | Path, inputs: Sequence[str], opts: ApplyOptions) -> int:
    """``segdash apply``: segment every input, write the results, print a summary.

    Returns
    -------
    int
        0 when every input succeeded (or was skipped because its outputs exist), 1 when
        any failed, 2 when the batch could not start.
    """
    start = time.perf_counter()
    out = sys.stdout
    try:
        try:
            model = load_model(model_path)
        except (SegdashError, OSError) as exc:
            raise _SetupError(f"cannot use the model {model_path}: {error_text(exc)}") from exc
        tile = check_tile(model, opts.tile)
        try:
            opts.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _SetupError(f"cannot create the output folder {opts.out}: {exc}") from exc
        probe_writable(opts.out)
    except (_SetupError, OutputFolderError, ValueError) as exc:
        print(f"segdash apply: {exc}", file=sys.stderr)
        return 2
    leftovers = remove_leftovers(opts.out)
    if leftovers:
        print(f"segdash apply: removed {len(leftovers)} unfinished file(s) of an interrupted "
              f"run: {', '.join(p.name for p in leftovers)}", file=sys.stderr)

    inputs, from_projects = project_inputs(inputs)
    files, failed = expand_inputs(inputs)
    failed = from_projects + failed
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
            runner = TileRunner(client, model, opts, tile, bars)
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
            abort_job(job)
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
    for job in done:
        if job.kept:
            print(f"kept: {job.source.path}: {', '.join(job.kept)} (from an earlier run; "
                  "--overwrite to replace)", file=out)
    for item, reason in failed:
        print(f"failed: {item}: {reason}", file=out)
    return 1 if failed else 0


def run_cli(args: argparse.Namespace) -> int:
    """Run ``segdash apply`` from parsed command-line arguments; return the exit status."""
    opts = ApplyOptions(
        out=Path(args.out), proba=args.proba, overlay=args.overlay, overwrite=args.overwrite,
        tile=args.tile, scheduler=args.scheduler, workers=getattr(args, "workers", None),
        quiet=getattr(args, "quiet", False),
    )
    return run(args.model, args.inputs, opts)
