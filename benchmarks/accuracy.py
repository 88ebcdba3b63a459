"""Pixel accuracy of segdash's defaults and of the scikit-image reference, same strokes.

The reference is the pipeline segdash descends from: ``multiscale_basic_features``
(sigma 1..16, all families, channels as features) and a random forest of 50 trees of depth
10 trained on 5 % of the painted pixels per tree. Accuracy counts every pixel of the image
against the scene's true labels, averaged over three seeds of each side's forest (one seed
swings a scene's accuracy by up to 2 points).

``--useful`` also measures "Keep only the useful features" (:mod:`segdash.importance`):
per scene, the default model's importance picks the families and scales that matter, a
model is retrained with only those, and its accuracy and the time of features + predict
(the cost of every new image and of every update) are set beside the defaults'.

``--drawing K`` builds every scene with its seeds shifted by K (another layout of regions,
noise and strokes; 0 is the benchmark's own): a change that helps on one drawing only is
tuned to it.

Run: ``.venv/bin/python benchmarks/accuracy.py [--size N] [--drawing K] [--useful [--keep 0.9]]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenes import SCENES, Scene  # noqa: E402

import segdash  # noqa: E402


def reference_predict(scene: Scene, seed: int = 0) -> np.ndarray:
    """scikit-image features + RandomForest(50, depth 10, max_samples 0.05)."""
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    img = scene.image
    feats = multiscale_basic_features(
        img, sigma_min=1, sigma_max=16, channel_axis=-1 if img.ndim == 3 else None
    )
    labels = scene.labels
    mask = labels > 0
    clf = RandomForestClassifier(50, max_depth=10, max_samples=0.05, n_jobs=-1,
                                 random_state=seed)
    clf.fit(feats[mask], labels[mask])
    return clf.predict(feats.reshape(-1, feats.shape[-1])).reshape(labels.shape)


def segdash_predict(scene: Scene, seed: int = 0, **fit_args) -> np.ndarray:
    """segdash.fit with its defaults (or ``fit_args``) on the same strokes."""
    model = segdash.fit(scene.image, scene.labels,
                        classifier_params={"random_state": seed}, **fit_args)
    return model.predict(scene.image)


SEEDS = (0, 1, 2)


def useful_predict(scene: Scene, seed: int = 0, keep: float = 0.9,
                   **fit_args) -> tuple[np.ndarray, dict]:
    """The default model's useful features (:func:`segdash.importance.useful_settings`),
    a model retrained with only them, its prediction; and what it costs:
    ``{"features": (full, kept), "seconds": (full, kept)}``, seconds of features + predict
    on the scene's image (median of 3)."""
    from segdash.importance import feature_importance, useful_settings
    from segdash.model import painted_rows

    img, labels = scene.image, scene.labels
    params = {"random_state": seed}
    full = segdash.fit(img, labels, classifier_params=params, **fit_args)
    X, y = painted_rows(full.feature_codes(img), labels)
    settings = useful_settings(feature_importance(full, X, y), full.stack, keep)
    kept = segdash.fit(img, labels, classifier_params=params, feature_params=settings,
                       features=full.stack.names, **fit_args)

    def cost(model) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            model.predict(img)
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    return kept.predict(img), {"features": (len(full.feature_names), len(kept.feature_names)),
                               "seconds": (cost(full), cost(kept))}


def run_useful(size: int = 512, keep: float = 0.9, classifier: str = "random_forest",
               out=print, drawing: int = 0) -> list[dict]:
    """Accuracy and cost of the kept-useful model against the defaults, every scene."""
    rows = []
    out(f"keep only the useful features ({classifier}, importance share {keep:g}) on "
        f"{size}x{size} scenes, mean of {len(SEEDS)} seeds; time = features + predict")
    out(f"{'scene':30s} {'defaults':>8s} {'kept':>8s} {'gain':>6s} {'features':>9s} "
        f"{'time':>15s} {'faster':>7s}")
    for make in SCENES:
        scene = make(size, drawing)
        full_acc, kept_acc, info = [], [], []
        for s in SEEDS:
            full_acc.append((segdash_predict(scene, s, classifier=classifier)
                             == scene.truth).mean())
            pred, got = useful_predict(scene, s, keep, classifier=classifier)
            kept_acc.append((pred == scene.truth).mean())
            info.append(got)
        nf = (info[0]["features"][0], float(np.mean([i["features"][1] for i in info])))
        sec = np.median([i["seconds"] for i in info], axis=0)
        r = {"scene": scene.name, "defaults": float(np.mean(full_acc)),
             "kept": float(np.mean(kept_acc)), "features": nf, "seconds": tuple(sec)}
        rows.append(r)
        out(f"{scene.name:30s} {100 * r['defaults']:7.1f}% {100 * r['kept']:7.1f}% "
            f"{100 * (r['kept'] - r['defaults']):+5.1f} {nf[0]:4d}->{nf[1]:<4.0f} "
            f"{1000 * sec[0]:6.0f}->{1000 * sec[1]:<5.0f}ms {sec[0] / sec[1]:6.1f}x")
    d = np.mean([r["defaults"] for r in rows])
    k = np.mean([r["kept"] for r in rows])
    speed = np.mean([r["seconds"][0] / r["seconds"][1] for r in rows])
    out(f"{'mean':30s} {100 * d:7.1f}% {100 * k:7.1f}% {100 * (k - d):+5.1f} "
        f"{'':9s} {'':15s} {speed:6.1f}x")
    return rows


def run(size: int = 512, out=print, drawing: int = 0) -> list[dict]:
    """Evaluate every scene; print and return one row per scene."""
    rows = []
    out(f"accuracy on {size}x{size} scenes (all pixels, scripted strokes, mean of "
        f"{len(SEEDS)} seeds{f', drawing {drawing}' if drawing else ''})")
    out(f"{'scene':30s} {'painted':>8s} {'segdash':>8s} {'reference':>9s} {'gain':>6s} "
        f"{'gradient_boosting':>18s}")
    for make in SCENES:
        scene = make(size, drawing)
        painted = int(np.count_nonzero(scene.labels))
        t = time.perf_counter()
        ours = float(np.mean([(segdash_predict(scene, s) == scene.truth).mean()
                              for s in SEEDS]))
        t_ours = (time.perf_counter() - t) / len(SEEDS)
        t = time.perf_counter()
        ref = float(np.mean([(reference_predict(scene, s) == scene.truth).mean()
                             for s in SEEDS]))
        t_ref = (time.perf_counter() - t) / len(SEEDS)
        gb = float(np.mean([(segdash_predict(scene, s, classifier="gradient_boosting")
                             == scene.truth).mean() for s in SEEDS]))
        rows.append({"scene": scene.name, "painted": painted, "segdash": ours,
                     "reference": ref, "gradient_boosting": gb, "t_segdash": t_ours,
                     "t_reference": t_ref})
        out(f"{scene.name:30s} {painted:8d} {100 * ours:7.1f}% {100 * ref:8.1f}% "
            f"{100 * (ours - ref):+5.1f} {100 * gb:17.1f}%")
    mean_ours = np.mean([r["segdash"] for r in rows])
    mean_ref = np.mean([r["reference"] for r in rows])
    mean_gb = np.mean([r["gradient_boosting"] for r in rows])
    out(f"{'mean':30s} {'':8s} {100 * mean_ours:7.1f}% {100 * mean_ref:8.1f}% "
        f"{100 * (mean_ours - mean_ref):+5.1f} {100 * mean_gb:17.1f}%")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--useful", action="store_true",
                        help="only 'keep only the useful features' against the defaults")
    parser.add_argument("--keep", type=float, default=0.9,
                        help="share of the importance the kept families/scales cover")
    parser.add_argument("--classifier", default="random_forest")
    parser.add_argument("--drawing", type=int, default=0,
                        help="shift every scene's seeds by this (0: the benchmark's scenes)")
    args = parser.parse_args()
    if args.useful:
        run_useful(args.size, args.keep, args.classifier, drawing=args.drawing)
    else:
        run(args.size, drawing=args.drawing)


if __name__ == "__main__":
    main()
