"""Projects: what training on two images buys on images without strokes, and the memory of
a 20-image project.

accuracy   On each benchmark scene (benchmarks/scenes.py, known answer): image A is the
           scene, image B the scene mirrored under another acquisition (gain 0.75, offset
           +20 % of the range). Strokes are painted on A (one image) or on A and B (two
           images, ``segdash.fit([A, B], [strokes A, strokes B])``). Pixel accuracy is
           measured on two images that have no strokes: the scene rotated under an
           acquisition between A's and B's (gain 0.85, +10 %), and flipped under one beyond
           B's (gain 0.7, +25 %).
memory     A fresh process opens a project of 20 RGB images of 1024x1024 (PNG files) in a
           ``Segmenter``, paints two strokes per class on every image in turn (each switch
           shows the current model's prediction, each stroke retrains on every painted
           image) and reports its peak resident memory. Target: < 1.5 GB. For scale: the
           feature codes of all 20 images held at once would be 20 x 1024^2 x F bytes.

Run: ``.venv/bin/python benchmarks/projects.py [--size 512] [--images 20]`` (``make bench``
runs it after the speed and accuracy tables).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scenes import SCENES, scripted_strokes  # noqa: E402


def acquisition(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """The same sample under another gain and offset (offset as a fraction of the range)."""
    if image.dtype == np.uint8:
        out = image.astype(np.float32) * gain + offset * 255
        return np.clip(out, 0, 255).astype(np.uint8)
    return np.clip(image * gain + offset, 0, 1).astype(image.dtype)


def accuracy(size: int = 512, out=print) -> list[dict]:
    import segdash
    from segdash.strokes import rasterize_strokes

    out("accuracy on images without strokes (pixels right), strokes on one image vs two")
    out(f"{'scene':<28}{'unseen image':>14}{'one image':>11}{'two images':>12}")
    rows = []
    for make in SCENES:
        scene = make(size)
        a, ta = scene.image, scene.truth
        b, tb = acquisition(np.fliplr(a).copy(), 0.75, 0.2), np.fliplr(ta).copy()
        la = scene.labels
        lb = rasterize_strokes(scripted_strokes(tb, seed=7), tb.shape)
        tests = {
            "between": (acquisition(np.rot90(a).copy(), 0.85, 0.1), np.rot90(ta)),
            "beyond": (acquisition(np.flipud(a).copy(), 0.7, 0.25), np.flipud(ta)),
        }
        one = segdash.fit(a, la)
        two = segdash.fit([a, b], [la, lb])
        for name, (img, truth) in tests.items():
            acc1 = float((one.predict(img) == truth).mean())
            acc2 = float((two.predict(img) == truth).mean())
            rows.append({"scene": scene.name, "test": name, "one": acc1, "two": acc2})
            out(f"{scene.name:<28}{name:>14}{acc1:>10.1%}{acc2:>12.1%}")
    one = np.mean([r["one"] for r in rows])
    two = np.mean([r["two"] for r in rows])
    out(f"{'mean':<42}{one:>10.1%}{two:>12.1%}   ({(two - one) * 100:+.1f} points)")
    return rows


_MEMORY_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
from segdash import Segmenter
from segdash.project import Project
folder, n, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
paths = sorted(folder.glob("*.png"))[:n]
t0 = time.perf_counter()
seg = Segmenter()
seg.open_project(Project.open(folder / "segdash-project.json", paths))
switches = []
for i in range(len(paths)):
    t = time.perf_counter()
    if i:
        seg.select(i)
    switches.append(time.perf_counter() - t)
    s = size
    seg.add_stroke([0.1 * s, 0.4 * s], [0.1 * s, 0.1 * s], 1, width=5)
    seg.add_stroke([0.6 * s, 0.9 * s], [0.9 * s, 0.9 * s], 2, width=5)
    seg.add_stroke([0.1 * s, 0.1 * s], [0.5 * s, 0.9 * s], 1, width=5)
    seg.add_stroke([0.9 * s, 0.9 * s], [0.1 * s, 0.5 * s], 2, width=5)
codes = seg.feature_codes()
print(json.dumps({
    "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    "seconds": time.perf_counter() - t0,
    "switch_median_s": float(np.median(switches[1:])) if len(switches) > 1 else 0.0,
    "features": int(codes.shape[2]),
    "painted_rows_mb": seg._rows.nbytes / 1e6,
    "status": seg.status,
}))
"""


def memory(n: int = 20, size: int = 1024, out=print) -> dict:
    from PIL import Image
    from skimage import data

    base = data.astronaut()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(n):
            tile = np.tile(base, (size // 512 + 1, size // 512 + 1, 1))[:size, :size]
            img = acquisition(np.roll(tile, (37 * i, 53 * i), axis=(0, 1)),
                              float(rng.uniform(0.7, 1.0)), float(rng.uniform(0, 0.2)))
            Image.fromarray(img).save(folder / f"img{i:02d}.png", compress_level=1)
        proc = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(folder), str(n),
                               str(size)], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    all_codes = n * size * size * res["features"] / 1e9
    out(f"\nproject of {n} RGB images of {size}x{size}, 4 strokes on each, retrained after "
        f"every stroke: peak {res['peak_gb']:.2f} GB (target < 1.5 GB; the codes of all "
        f"images at once would be {all_codes:.1f} GB), painted rows kept "
        f"{res['painted_rows_mb']:.1f} MB, switch to an image {res['switch_median_s']:.2f} s "
        f"(median), whole run {res['seconds']:.0f} s")
    out(f"last status: {res['status']}")
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="accuracy scene size")
    parser.add_argument("--images", type=int, default=20, help="images of the memory run")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = accuracy(args.size)
    mem = memory(args.images, args.image_size)
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({"accuracy": rows, "memory": mem}, indent=1))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
