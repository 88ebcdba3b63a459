"""A 16384² slide inside a project against the same slide opened alone, in one run.

Writes the synthetic slide of :mod:`benchmarks.slide` (a pyramidal RGB OME-TIFF, seconds),
then, in this process (no browser: benchmarks/large_image.py measures the page), for a
project holding the slide and a small PNG, and for the slide opened by itself
(``Segmenter.open_pyramid``, as ``segdash serve slide.ome.tif`` does):

- adding the slide to a new project (hash, shape, channel range from a coarse level);
- opening it (the project: select; alone: open_pyramid) at full working resolution;
- two strokes zoomed in, the model trained and a 2048x1024 view predicted;
- one more stroke: trained again and the view predicted (median of 5);
- the process's peak memory.

Run: ``python benchmarks/project_slide.py [--side 16384]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.slide import SQUARE, write_slide  # noqa: E402
from segdash import Segmenter  # noqa: E402
from segdash.io.pyramid import open_pyramid  # noqa: E402
from segdash.project import Project  # noqa: E402


def _strokes(seg: Segmenter, times: list[float]) -> None:
    seg.set_view(0, 1024, 0, 2048)
    seg.add_stroke([200, 700], [300, 320], 1, 9)
    seg.add_stroke([SQUARE + 200, SQUARE + 700], [300, 330], 2, 9)
    for k in range(5):
        y, x = 400 + 60 * k, 200 + (k % 2) * SQUARE  # alternating classes, each on its own
        start = time.perf_counter()
        seg.add_stroke([x, x + 500], [y, y + 10], 1 + k % 2, 9)
        times.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=16384)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        slide = write_slide(root / "slide.ome.tif", args.side)
        Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(root / "small.png")
        rows = []
        for mode in ("project", "alone"):
            seg = Segmenter()
            seg.cache_limit = 2**30
            start = time.perf_counter()
            if mode == "project":
                project = Project.open(root / "p.json", [root / "small.png", slide])
                added = time.perf_counter() - start
                project.downsample = 1
                seg.open_project(project)
                start = time.perf_counter()
                seg.select(1)
            else:
                added = float("nan")
                seg.open_pyramid(open_pyramid(slide), downsample=1)
            opened = time.perf_counter() - start
            start = time.perf_counter()
            times: list[float] = []
            _strokes(seg, times)
            first = time.perf_counter() - start - sum(times)
            assert seg.model is not None, seg.status
            rows.append((mode, added, opened, first, statistics.median(times)))
        load = os.getloadavg()[0]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.side}² RGB slide, full working resolution, load {load:.1f}")
    print(f"{'':8} {'add':>7} {'open':>7} {'2 strokes+view':>15} {'stroke p50':>11}")
    for mode, added, opened, first, p50 in rows:
        add = "-" if np.isnan(added) else f"{added:.2f}s"
        print(f"{mode:8} {add:>7} {opened:6.2f}s {first:14.2f}s {p50:10.3f}s")
    print(f"project / alone, stroke p50: {rows[0][4] / rows[1][4]:.2f}x; "
          f"peak RSS {peak:.2f} GB (both sessions, one process)")


if __name__ == "__main__":
    main()
