"""``segdash apply``'s plan: what each input becomes, before anything is computed.

:func:`plan_jobs` opens every input (headers only for TIFF), checks it against the model
and decides its outputs (named by :func:`segdash.io.naming.result_name`); a :class:`Job`
then carries one input through the run, its tiles gathered into full-width bands
(:class:`Bands`) for the streaming writers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, SegdashError
from ..io.naming import result_name
from ..io.sources import ImageSource, open_source
from ..io.write import PngStreamWriter, TiffStreamWriter, temporary_path
from ..model import SegmentationModel
from ..tiling import tile_chunks


@dataclass
class ApplyOptions:
    """What ``segdash apply`` was asked to do."""

    out: Path
    proba: bool = False
    overlay: bool = False
    overwrite: bool = False
    tile: int | None = None
    scheduler: str | None = None
    workers: int | None = None
    quiet: bool = False


class Bands:
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
    bands: dict[int, Bands] = field(default_factory=dict)
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


def output_paths(model: SegmentationModel, source: ImageSource,
                 opts: ApplyOptions) -> dict[str, Path]:
    """Where an input's results go: ``{kind: path}`` for kinds labels, proba, overlay."""
    kinds = ["labels"] + (["proba"] if opts.proba else []) + (["overlay"] if opts.overlay else [])
    return {kind: opts.out / result_name(source.name, kind, model.label_dtype, source.is_stack)
            for kind in kinds}


def open_writers(job: Job, model: SegmentationModel) -> None:
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


def close_job(job: Job) -> None:
    """Finish every output of a job and move them into place (all or none)."""
    for writer in job.writers.values():
        writer.close()
    for final in job.outputs.values():
        os.replace(temporary_path(final), final)
    job.writers.clear()


def abort_job(job: Job) -> None:
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


def without_name(name: str, message: str) -> str:
    """``message`` without a leading ``"name: "`` (reports put the path in front)."""
    prefix = f"{name}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def error_text(exc: BaseException) -> str:
    """What to report about ``exc``: segdash's own errors as they are, others named."""
    if isinstance(exc, SegdashError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def plan_jobs(model: SegmentationModel, files: Sequence[Path], opts: ApplyOptions, tile: int
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
            # the channel check needs only shape and dtype: a zero-stride stand-in
            model.check_image(np.broadcast_to(np.zeros((), source.dtype), shape))
        except ImageError as exc:
            failed.append((str(path), without_name(path.name, str(exc))))
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
