"""*Apply to project*: the session's model over every image of its project, by the batch
engine (``segdash apply``) in a child process.

A child process, not a thread: the images are decoded and tiled outside the server process
(a damaged file cannot take the server down), the run is cancelled by stopping that process
(by its id), and ``--scheduler`` hands it to a Dask cluster exactly as the command line
does. Progress is read from the command's progress bars; results are written to a folder of
the session's own, browsable and zipped on request.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_BAR = re.compile(r"(images|tiles)\s*:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)")


class ApplyRun:
    """One run of ``segdash apply MODEL IMAGES... --out DIR --overlay``.

    Parameters
    ----------
    model_bytes : bytes
        The model file's content (the session's current model).
    inputs : list of Path
        The project's image files.
    scheduler : str, optional
        Address of a ``dask.distributed`` scheduler.
    on_change : callable
        Called (from the run's thread) whenever progress or the state changes.

    Attributes
    ----------
    images, tiles : tuple of int
        ``(done, total)`` as the command's progress bars count them.
    state : str
        ``"running"``, ``"done"``, ``"failed"`` or ``"cancelled"``.
    message : str
        The command's summary (or its error).
    out : Path
        The results folder.
    """

    def __init__(self, model_bytes: bytes, inputs: list[Path], scheduler: str | None = None,
                 on_change: Callable[[], Any] = lambda: None) -> None:
        self.out = Path(tempfile.mkdtemp(prefix="segdash-apply-"))
        self._model = self.out / "model.skops"
        self._model.write_bytes(model_bytes)
        self.results = self.out / "results"
        cmd = [sys.executable, "-m", "segdash.cli", "apply", str(self._model),
               *map(str, inputs), "--out", str(self.results), "--overlay", "--overwrite"]
        if scheduler:
            cmd += ["--scheduler", scheduler]
        self.images = (0, 0)
        self.tiles = (0, 0)
        self.state = "running"
        self.message = ""
        self._on_change = on_change
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._cancelled = False
        self._errors: list[str] = []
        self._thread = threading.Thread(target=self._follow, name="segdash-apply",
                                        daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        out_lines: list[str] = []
        reader = threading.Thread(
            target=lambda: out_lines.extend(self._proc.stdout.read().decode(
                errors="replace").splitlines()), daemon=True)
        reader.start()
        buf = b""
        while True:
            chunk = self._proc.stderr.read1(4096) if hasattr(self._proc.stderr, "read1") \
                else self._proc.stderr.read(4096)
            if not chunk:
                break
            buf += chunk
            parts = re.split(rb"[\r\n]", buf)
            buf = parts.pop()
            for part in parts:
                self._line(part.decode(errors="replace"))
        self._proc.wait()
        reader.join(10)
        summary = [line for line in out_lines if line.startswith("segdash apply:")]
        failed = [line for line in out_lines if line.startswith("failed:")]
        if self._cancelled:
            self.state, self.message = "cancelled", "cancelled"
        elif self._proc.returncode == 0:
            self.state = "done"
            self.message = summary[-1] if summary else "done"
        else:
            self.state = "failed"
            self.message = "\n".join(summary[-1:] + failed + self._errors[-5:]) or (
                f"segdash apply exited with status {self._proc.returncode}")
        self._on_change()

    def _line(self, text: str) -> None:
        m = _BAR.search(text)
        if m:
            value = (int(m.group(2)), int(m.group(3)))
            if m.group(1) == "images":
                self.images = value
            else:
                self.tiles = value
            self._on_change()
        elif text.strip() and not text.lstrip().startswith(("images", "tiles")):
            self._errors.append(text.strip())

    @property
    def fraction(self) -> float:
        """Work done, 0..1 (tiles when known, else images)."""
        done, total = self.tiles if self.tiles[1] else self.images
        return done / total if total else 0.0

    def cancel(self) -> None:
        """Stop the run (its child process, by id); results written so far stay."""
        if self._proc.poll() is None:
            self._cancelled = True
            self._proc.terminate()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ended; False on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def files(self) -> list[Path]:
        """Result files written so far, by name."""
        if not self.results.is_dir():
            return []
        return sorted(p for p in self.results.iterdir() if p.is_file())

    def zip_bytes(self) -> bytes:
        """Every result file in one zip archive."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in self.files():
                zf.write(p, p.name)
        return buf.getvalue()

    def close(self) -> None:
        """Cancel if running and delete the results folder."""
        self.cancel()
        self.wait(15)
        shutil.rmtree(self.out, ignore_errors=True)
