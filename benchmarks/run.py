"""segdash against the scikit-image reference, side by side, in one run.

The reference is the pipeline segdash descends from: ``multiscale_basic_features`` with
``channel_axis=-1`` and a ``RandomForestClassifier(50, max_depth=10, max_samples=0.05)``
refitted and run on every pixel after each stroke. Both sides run on the same images (the
astronaut photograph tiled, grey and RGB) with the same strokes, in the same process, one
after the other, so that a busy machine slows both alike: read the ratios.

Measures (medians of repeats):

features   basic features, default settings (sigma 0.5..16, 6 scales, all six families),
           against ``multiscale_basic_features`` (its three families, same scales).
features (skimage's families)
           basic with skimage's three families only (intensity, edges, Hessian texture),
           against ``multiscale_basic_features`` with the same families and scales.
first      a newly opened image: features + fit + predict + results (segdash through the
           ``Segmenter``), against reference features (sigma 1..16) + fit + predict.
update     one more stroke with features cached: stroke in -> new segmentation,
           probabilities and uncertainty out (``Segmenter.add_stroke``), against the
           reference's refit + predict. ``update parts`` splits it: rasterising the strokes
           and gathering the painted pixels' codes, fitting, the tree walk, the smoothing of
           the probabilities, labels and uncertainty.
predict    seconds per megapixel to predict, per built-in classifier (fit time beside).
memory     peak resident memory of a fresh process: a session (open, paint, train, one
           more stroke) against the reference pipeline.

Run: ``make bench`` or ``.venv/bin/python benchmarks/run.py [--quick] [--sizes 512 1024]``.
``--quick`` measures 512 and 1024 only, with fewer repeats. The accuracy benchmark
(``benchmarks/accuracy.py``) runs at the end unless ``--no-accuracy``, then the projects
benchmark (``benchmarks/projects.py``) unless ``--no-projects``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scenes import astronaut, speed_strokes  # noqa: E402

REF_TREES = {"n_estimators": 50, "max_depth": 10, "max_samples": 0.05}


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads of the process) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def median_time(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``reps`` calls."""
    return tuple(np.median([timed(fn) for _ in range(reps)], axis=0))


def paired(ours: Callable[[], object], ref: Callable[[], object],
           reps: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (wall, CPU) of each side, the two sides called in turn (a load that comes and
    goes then hits both alike)."""
    a, b = [], []
    for _ in range(reps):
        a.append(timed(ours))
        b.append(timed(ref))
    return tuple(np.median(a, axis=0)), tuple(np.median(b, axis=0))


def ref_features(img: np.ndarray, sigma_min: float = 1.0) -> np.ndarray:
    from skimage.feature import multiscale_basic_features

    return multiscale_basic_features(img, sigma_min=sigma_min, sigma_max=16,
                                     channel_axis=-1 if img.ndim == 3 else None)


def ref_fit_predict(feats: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from sklearn.ensemble import RandomForestClassifier

    mask = labels > 0
    clf = RandomForestClassifier(n_jobs=-1, random_state=0, **REF_TREES)
    clf.fit(feats[mask], labels[mask])
    return clf.predict_proba(feats.reshape(-1, feats.shape[-1]))


def warm_up() -> None:
    """Load the compiled kernels (numba's on-disk cache) before timing anything, and touch
    4 GB of memory once.

    On a fresh virtual machine the first touch of memory the guest has never used costs
    the host an allocation: 1.2 GB took 2 s the first time and 0.07 s afterwards. Touching
    it once here keeps that cost out of whichever side happens to be measured first.
    """
    import segdash

    block = np.ones(4 * 2**30 // 8)
    del block

    for grey in (True, False):
        img = astronaut(160, grey=grey)
        strokes, _ = speed_strokes(160)
        for clf in ("random_forest", "gradient_boosting"):
            seg = segdash.Segmenter(image=img, live_update=False, classifier=clf)
            seg.set_strokes(strokes)
            seg.train()
    ref_features(astronaut(64))


def bench_size(size: int, grey: bool, reps: int, out: Callable[[str], None]) -> list[dict]:
    import segdash
    from segdash.contract import image_channels
    from segdash.features.basic import BasicFeatures
    from segdash.model import SegmentationModel
    from segdash.stack import FeatureStack
    from segdash.strokes import rasterize_strokes

    mode = "grey" if grey else "RGB"
    img = astronaut(size, grey=grey)
    strokes, extra = speed_strokes(size)
    labels = rasterize_strokes(strokes, img.shape)
    labels_more = rasterize_strokes([*strokes, extra], img.shape)
    rows = []
    big = size >= 2048
    # 3 at 2048² at least: the first call of a process to reach a new peak of memory pays
    # the kernel for fresh pages (here 1.3-1.5 s of system time for 1.6 GB, both sides),
    # which a median of 2 would average in
    r = max(3, reps // 2) if big else reps

    def row(measure, ours, ref, unit="s", note=""):
        ours_cpu = ref_cpu = None
        if isinstance(ours, tuple):
            ours, ours_cpu = ours
        if isinstance(ref, tuple):
            ref, ref_cpu = ref
        d = {"measure": measure, "size": size, "mode": mode, "segdash": ours,
             "reference": ref, "ratio": (ref / ours) if (ref and ours) else None,
             "segdash_cpu": ours_cpu, "reference_cpu": ref_cpu,
             "cpu_ratio": (ref_cpu / ours_cpu) if (ref_cpu and ours_cpu) else None,
             "unit": unit, "note": note}
        rows.append(d)
        out(format_row(d))
        return d

    # features: the defaults, and skimage's families alone (its defaults are sigma 0.5..16)
    ext = BasicFeatures()
    same = BasicFeatures(laplacian=False, deviation=False, structure=False)
    t_ours, t_ref = paired(lambda: ext(img), lambda: ref_features(img, sigma_min=0.5), r)
    row("features", t_ours, t_ref, note=f"{len(ext.feature_names(image_channels(img)))} features")
    t_ours, t_ref = paired(lambda: same(img), lambda: ref_features(img, sigma_min=0.5), r)
    row("features skimage's families", t_ours, t_ref,
        note=f"{len(same.feature_names(image_channels(img)))} features")

    # first segmentation of a newly opened image
    def ours_first():
        seg = segdash.Segmenter(image=img, live_update=False)
        seg.set_strokes(strokes)
        seg.train()
        assert seg.segmentation is not None
        return seg

    cache: dict = {}

    def ref_first():
        cache["feats"] = None
        cache["feats"] = ref_features(img)
        ref_fit_predict(cache["feats"], labels)

    t_ours, t_ref = paired(ours_first, ref_first, r)
    row("first", t_ours, t_ref)

    # update after one more stroke, features cached
    seg = segdash.Segmenter(image=img, live_update=False)
    seg.set_strokes(strokes)
    seg.train()
    seg.live_update = True
    times, ref_times = [], []
    for _ in range(max(5, 2 * reps)):
        times.append(timed(lambda: seg.add_stroke(extra.xs, extra.ys, extra.label,
                                                  extra.width)))
        assert seg.segmentation is not None and seg.error == ""
        seg.undo()  # retrains too (not timed)
        ref_times.append(timed(lambda: ref_fit_predict(cache["feats"], labels_more)))
    t_ours = tuple(np.median(times, axis=0))
    t_ref = tuple(np.median(ref_times, axis=0))
    row("update", t_ours, t_ref, note=f"{int(np.count_nonzero(labels_more))} painted px")
    total = update_parts(seg, img, [*strokes, extra], max(5, 2 * reps))
    row("update parts", total, None, note=update_parts.note)
    from sklearn.ensemble import RandomForestClassifier

    feats = cache["feats"]
    mask = labels_more > 0
    ref_clf = RandomForestClassifier(n_jobs=-1, random_state=0, **REF_TREES)
    ref_clf.fit(feats[mask], labels_more[mask])
    cache["flat"] = feats.reshape(-1, feats.shape[-1])
    ref_predict = median_time(lambda: ref_clf.predict_proba(cache["flat"]), max(3, r))
    cache.clear()
    feats = None

    # predict time per megapixel, each built-in classifier; fit time beside
    stack = FeatureStack("basic")
    codes, quantizer = stack.codes(img)
    mpx = size * size / 1e6
    for name in ("random_forest", "gradient_boosting"):
        fits, preds = [], []
        for _ in range(max(3, r)):
            got = {}

            def train(name=name, got=got):
                got["model"] = SegmentationModel.train(
                    codes, labels_more, stack, quantizer, name, None, image_channels(img))

            fits.append(timed(train))
            preds.append(timed(lambda got=got: got["model"].predict_proba_codes(codes)))
        fit_w = float(np.median([f[0] for f in fits]))
        pred = tuple(np.median(preds, axis=0))
        ref = (ref_predict[0] / mpx, ref_predict[1] / mpx) if name == "random_forest" else None
        row(f"predict/Mpx {name}", (pred[0] / mpx, pred[1] / mpx), ref, "s/Mpx",
            note=f"fit {fit_w:.3f} s, predict {pred[0]:.3f} s (smoothing included)")
    return rows


def format_row(d: dict) -> str:
    def num(v, fmt="9.3f"):
        return format(v, fmt) if v is not None else format("-", ">" + fmt.split(".")[0])

    ratio = f"{d['ratio']:6.1f}x" if d["ratio"] is not None else f"{'':>7s}"
    cpu = d.get("cpu_ratio")
    cpu_ratio = f"{cpu:6.1f}x" if cpu is not None else f"{'':>7s}"
    return (f"{d['measure']:30s} {d['size']:5d}² {d['mode']:4s} {num(d['segdash'])} "
            f"{num(d['reference'])} {ratio}  {num(d.get('segdash_cpu'), '7.2f')} "
            f"{num(d.get('reference_cpu'), '7.2f')} {cpu_ratio}  {d['unit']:5s} {d['note']}")


HEADER = (f"{'measure':30s} {'size':>6s} {'mode':4s} {'segdash':>9s} {'reference':>9s} "
          f"{'ratio':>7s}  {'cpu us':>7s} {'cpu ref':>7s} {'cpu':>7s}  unit  note\n"
          f"{'':42s}{'(wall-clock)':^27s}  {'(CPU seconds, all threads)':^23s}")


# -- peak memory, each in a fresh process -----------------------------------------------

_MEMORY_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, {here!r})
import numpy as np
from scenes import astronaut, speed_strokes
from segdash.strokes import rasterize_strokes
size, grey, side = {size}, {grey}, {side!r}
img = astronaut(size, grey=grey)
strokes, extra = speed_strokes(size)
def rss():
    # VmHWM: this process's own peak (ru_maxrss would include the parent's at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
if side == "segdash":
    import segdash
    base = rss()
    seg = segdash.Segmenter(image=img, live_update=False)
    seg.set_strokes(strokes)
    seg.train()
    seg.live_update = True
    seg.add_stroke(extra.xs, extra.ys, extra.label, extra.width)
    assert seg.segmentation is not None
else:
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier
    base = rss()
    feats = multiscale_basic_features(img, sigma_min=1, sigma_max=16,
                                      channel_axis=None if grey else -1)
    for lab in (rasterize_strokes(strokes, img.shape),
                rasterize_strokes([*strokes, extra], img.shape)):
        m = lab > 0
        clf = RandomForestClassifier(50, max_depth=10, max_samples=0.05, n_jobs=-1)
        clf.fit(feats[m], lab[m])
        proba = clf.predict_proba(feats.reshape(-1, feats.shape[-1]))
print(json.dumps({{"peak_gb": rss(), "after_imports_gb": base}}))
"""


def peak_memory(size: int, grey: bool, side: str) -> dict:
    code = _MEMORY_SCRIPT.format(here=str(HERE), size=size, grey=grey, side=side)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_memory(size: int, grey: bool, out: Callable[[str], None]) -> dict:
    ours = peak_memory(size, grey, "segdash")
    ref = peak_memory(size, grey, "reference")
    d = {"measure": "peak memory", "size": size, "mode": "grey" if grey else "RGB",
         "segdash": ours["peak_gb"], "reference": ref["peak_gb"],
         "ratio": ref["peak_gb"] / ours["peak_gb"], "unit": "GB",
         "note": f"after imports: {ours['after_imports_gb']:.2f} vs "
                 f"{ref['after_imports_gb']:.2f} GB"}
    out(format_row(d))
    return d


def update_parts(seg, img: np.ndarray, strokes: list, reps: int) -> tuple[float, float]:
    """Where an update's time goes, each part timed alone on the session's cached codes
    (median of ``reps``); returns the parts' total and prints them in the row's note."""
    from segdash.model import SegmentationModel
    from segdash.postprocess import labels_and_uncertainty, smooth_probabilities
    from segdash.strokes import rasterize_strokes
    from segdash.treewalk import predict_proba_codes

    model = seg.model
    codes = seg.feature_codes()
    h, w, f = codes.shape
    parts: dict[str, list[float]] = {k: [] for k in ("strokes", "fit", "trees", "smooth",
                                                      "labels")}
    for _ in range(reps):
        t = time.perf_counter()
        labels = rasterize_strokes(strokes, img.shape)
        parts["strokes"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fitted = SegmentationModel.train(codes, labels, model.stack, model.quantizer,
                                         model.classifier, model.classifier_params,
                                         model.n_channels)
        parts["fit"].append(time.perf_counter() - t)
        t = time.perf_counter()
        proba = predict_proba_codes(fitted.estimator, codes.reshape(-1, f)).reshape(h, w, -1)
        parts["trees"].append(time.perf_counter() - t)
        t = time.perf_counter()
        proba = smooth_probabilities(proba, fitted.smoothing)
        parts["smooth"].append(time.perf_counter() - t)
        t = time.perf_counter()
        labels_and_uncertainty(proba, fitted.classes_.astype(fitted.label_dtype))
        parts["labels"].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in parts.items()}
    update_parts.note = ", ".join(f"{k} {1000 * v:.0f}" for k, v in med.items()) + " ms"
    return sum(med.values())


# -- targets ------------------------------------------------------------------------------


def check_targets(rows: list[dict], acc: list[dict] | None, out: Callable[[str], None]) -> None:
    def get(measure, size, mode="RGB"):
        for d in rows:
            if d["measure"] == measure and d["size"] == size and d["mode"] == mode:
                return d
        return None

    out("\ntargets (issue 6)")
    checks = []
    f = get("features", 2048)
    if f:
        checks.append(("features 2048² RGB >= 8x faster than skimage",
                       f["ratio"] >= 8, f"{f['ratio']:.1f}x ({f['segdash']:.2f} s vs "
                                        f"{f['reference']:.2f} s)"))
    u = get("update", 1024)
    if u:
        checks.append(("update 1024² RGB median < 250 ms", u["segdash"] < 0.25,
                       f"{1000 * u['segdash']:.0f} ms"))
        checks.append(("update 1024² RGB >= 3x faster than reference refit+predict",
                       u["ratio"] >= 3, f"{u['ratio']:.1f}x ({1000 * u['reference']:.0f} ms)"))
    fs = get("first", 1024)
    if fs:
        checks.append(("first segmentation 1024² RGB < 1 s", fs["segdash"] < 1.0,
                       f"{fs['segdash']:.2f} s (reference {fs['reference']:.2f} s)"))
    m = get("peak memory", 2048)
    if m:
        checks.append(("session peak memory 2048² RGB < 1 GB", m["segdash"] < 1.0,
                       f"{m['segdash']:.2f} GB (reference {m['reference']:.2f} GB)"))
    if acc:
        worst = min(r["segdash"] - r["reference"] for r in acc)
        mean = np.mean([r["segdash"] - r["reference"] for r in acc])
        checks.append(("accuracy >= reference on every scene", worst >= 0,
                       f"worst {100 * worst:+.1f} points"))
        checks.append(("accuracy >= 5 points better on average", mean >= 0.05,
                       f"{100 * mean:+.1f} points"))
    for what, ok, fig in checks:
        out(f"  [{'met' if ok else 'NOT MET':7s}] {what}: {fig}")
    check_targets_12(get, acc, out)


def check_targets_12(get: Callable, acc: list[dict] | None, out: Callable[[str], None]) -> None:
    """The targets of issue 12 (texture-aware defaults, faster updates and batch)."""
    out("\ntargets (issue 12)")
    checks = []
    f = get("features skimage's families", 2048)
    if f:
        checks.append(("features 2048² RGB >= 15x faster than skimage, same families",
                       f["ratio"] >= 15, f"{f['ratio']:.1f}x ({f['segdash']:.2f} s vs "
                                         f"{f['reference']:.2f} s)"))
    f = get("features", 2048)
    if f:
        checks.append(("features 2048² RGB, all default families, >= 15x faster than skimage",
                       f["ratio"] >= 15, f"{f['ratio']:.1f}x ({f['segdash']:.2f} s vs "
                                         f"{f['reference']:.2f} s)"))
    u = get("update", 1024)
    if u:
        checks.append(("update 1024² RGB median < 100 ms", u["segdash"] < 0.1,
                       f"{1000 * u['segdash']:.0f} ms"))
    fs = get("first", 1024)
    if fs:
        checks.append(("first segmentation 1024² RGB < 0.3 s", fs["segdash"] < 0.3,
                       f"{fs['segdash']:.2f} s"))
    if acc:
        gain = [r["segdash"] - r["reference"] for r in acc]
        by = {r["scene"]: r for r in acc}
        checks.append(("accuracy >= 6 points better on average", np.mean(gain) >= 0.06,
                       f"{100 * np.mean(gain):+.1f} points over {len(acc)} scenes"))
        worst = int(np.argmin(gain))
        checks.append(("accuracy >= reference on every scene", gain[worst] >= 0,
                       f"worst {100 * gain[worst]:+.1f} points ({acc[worst]['scene']})"))
        for name, need in (("brick/grass/gravel (grey)", 0.85), ("photo mosaic (RGB)", 0.65)):
            if name in by:
                checks.append((f"{name} >= {100 * need:.0f} %", by[name]["segdash"] >= need,
                               f"{100 * by[name]['segdash']:.1f} %"))
        gb = [r["gradient_boosting"] - r["reference"] for r in acc]
        worst = int(np.argmin(gb))
        checks.append(("gradient_boosting >= reference on every scene", gb[worst] >= 0,
                       f"worst {100 * gb[worst]:+.1f} points ({acc[worst]['scene']})"))
    batch = _batch_result()
    if batch:
        best = max(batch["mp_per_s"].values())
        checks.append(("batch 8192² RGB >= 6.2 MP/s (2x 3.1)", best >= 6.2,
                       f"{best:.2f} MP/s at {batch['size']}² (make bench-batch, load "
                       f"{batch['load'][0]:.1f})"))
    else:
        checks.append(("batch 8192² RGB >= 6.2 MP/s (2x 3.1)", False,
                       "not measured: run make bench-batch first"))
    import latency_browser

    browser = latency_browser.last_result()
    if browser:
        checks += latency_browser.targets(browser)
    else:
        checks.append(("mouse-up -> overlay in Chromium p50 < 250 ms, p95 < 500 ms", False,
                       "not measured: run make bench-browser first"))
    for what, ok, fig in checks:
        out(f"  [{'met' if ok else 'NOT MET':7s}] {what}: {fig}")


def _batch_result() -> dict | None:
    """The last ``make bench-batch`` result at 8192², if any."""
    from batch_memory import RESULT_FILE

    try:
        res = json.loads(RESULT_FILE.read_text())
    except (OSError, ValueError):
        return None
    return res if res.get("size") == 8192 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512² and 1024² only, fewer repeats")
    parser.add_argument("--sizes", type=int, nargs="*", help="image sizes (default 512 1024 2048)")
    parser.add_argument("--reps", type=int, help="repeats per measure (median)")
    parser.add_argument("--no-accuracy", action="store_true")
    parser.add_argument("--no-projects", action="store_true",
                        help="skip benchmarks/projects.py (one vs two training images, "
                             "memory of a 20-image project)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    sizes = args.sizes or ([512, 1024] if args.quick else [512, 1024, 2048])
    reps = args.reps or (3 if args.quick else 5)

    def out(line: str) -> None:
        print(line, flush=True)

    import threadpoolctl  # noqa: F401  (scikit-learn's; listed for the header)

    out(f"segdash vs scikit-image reference | {os.cpu_count()} cores | load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} | ratio = reference / segdash")
    warm_up()
    out(HEADER)
    rows: list[dict] = []
    for size in sizes:
        for grey in (True, False):
            rows += bench_size(size, grey, reps, out)
    if not args.no_memory:
        for size in sizes:
            rows.append(bench_memory(size, False, out))
    acc = None
    if not args.no_accuracy:
        import accuracy

        out("")
        acc = accuracy.run(512, out=out)
    check_targets(rows, acc, out)
    if not args.no_projects:
        import projects

        out("")
        projects.accuracy(512, out=out)
        projects.memory(20 if not args.quick else 5, 1024, out=out)
    out(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "accuracy": acc}, indent=1))


if __name__ == "__main__":
    main()
