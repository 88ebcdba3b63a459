"""``segdash apply``'s plan: what each input becomes, before anything is computed.

:func:`plan_jobs` opens every input (headers only for TIFF), checks it against the model
and decides its outputs (named by :func:`segdash.io.naming.result_name`); a :class:`Job`
then carries one input through the run, its tiles gathered into full-width bands
(:class:`Bands`) for the streaming writers.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, SegdashError
from ..io.naming import RESULT_KINDS, result_name
from ..io.sources import ImageSource, open_source
from ..io.write import PngStreamWriter, TiffStreamWriter, proba_writer, temporary_path
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
    kept: tuple[str, ...] = ()  # outputs a finished earlier run wrote, kept as they are

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def tiles_per_plane(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def pixels(self) -> int:
        return self.source.frames * self.source.shape[0] * self.source.shape[1]


class OutputFolderError(SegdashError):
    """The output folder cannot be written (missing rights, read-only filesystem)."""


def probe_writable(folder: Path) -> None:
    """Create and remove a file in ``folder``, so a folder that cannot be written is found
    before any image is processed.

    Raises
    ------
    OutputFolderError
        The probe could not be written (its reason in the message).
    """
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".segdash-probe-"):
            pass
    except OSError as exc:
        raise OutputFolderError(f"cannot write into the output folder {folder}: "
                                f"{exc.strerror or exc}") from exc


#: The temporary files :func:`segdash.io.write.temporary_path` makes of the results.
_PART = re.compile(r"^\.(?P<name>.+_(?:" + "|".join(RESULT_KINDS)
                   + r")\.(?:png|tif))\.(?P<pid>\d+)\.part$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the temporary result files (``.NAME_labels.png.PID.part``...) that runs
    killed mid-write left in ``folder``; return them.

    Only files of segdash's own pattern whose process is gone are removed: a run still
    writing into the same folder keeps its own, and nothing else is touched.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _PART.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not _alive(int(m["pid"])):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:  # gone meanwhile, or not ours to remove: left as it is
                pass
    return removed


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
            writer = proba_writer(tmp, (*lead, h, w, len(model.classes_)), src.is_stack)
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
        Unreadable inputs, another channel count than the model's, clashing output names,
        outputs that would overwrite an input.
    skipped : list of (name, reason)
        Inputs whose outputs all exist (without ``--overwrite``: a re-run resumes). An
        input with only some outputs is a job writing the missing ones (``Job.kept``).
    """
    jobs: list[Job] = []
    failed: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    claimed: dict[Path, str] = {}
    inputs = {_resolved(p) for p in files}
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
        # An input is never written over, --overwrite or not: it may be the only copy.
        hit = [p for p in outputs.values() if _resolved(p) in inputs]
        if hit:
            failed.append((str(path), f"its output {hit[0]} is also an input of this run and "
                                      "is never overwritten: write to another --out folder"))
            continue
        clash = [claimed[p] for p in outputs.values() if p in claimed]
        if clash:
            failed.append((str(path), f"its outputs would overwrite those of {clash[0]} "
                                      "(inputs with the same name): rename one of them"))
            continue
        claimed.update({p: str(path) for p in outputs.values()})
        kept = [] if opts.overwrite else [p.name for p in outputs.values() if p.exists()]
        if kept and len(kept) == len(outputs):
            skipped.append((str(path), f"done already ({', '.join(kept)} exist(s) in "
                                       f"{opts.out}); use --overwrite to replace"))
            continue
        # Resume: write only what is missing, keep what a run finished before.
        outputs = {k: p for k, p in outputs.items() if p.name not in kept}
        # output tiles: the working-resolution tiles' size at full resolution
        out_tile = tile * model.downsample
        jobs.append(Job(source, outputs, tile_chunks(source.shape[0], out_tile),
                        tile_chunks(source.shape[1], out_tile), kept=tuple(kept)))
    return jobs, failed, skipped


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:  # a symlink loop: compared as given
        return path.absolute()
