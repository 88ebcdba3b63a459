"""Pixel accuracy of segdash's defaults and of the scikit-image reference, same strokes.

The reference is the pipeline segdash descends from: ``multiscale_basic_features``
(sigma 1..16, all families, channels as features) and a random forest of 50 trees of depth
10 trained on 5 % of the painted pixels per tree. Accuracy counts every pixel of the image
against the scene's true labels, averaged over three seeds of each side's forest (one seed
swings a scene's accuracy by up to 2 points).

Run: ``.venv/bin/python benchmarks/accuracy.py [--size N]``
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


def run(size: int = 512, out=print) -> list[dict]:
    """Evaluate every scene; print and return one row per scene."""
    rows = []
    out(f"accuracy on {size}x{size} scenes (all pixels, scripted strokes, mean of "
        f"{len(SEEDS)} seeds)")
    out(f"{'scene':30s} {'painted':>8s} {'segdash':>8s} {'reference':>9s} {'gain':>6s} "
        f"{'gradient_boosting':>18s}")
    for make in SCENES:
        scene = make(size)
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
    args = parser.parse_args()
    run(args.size)


if __name__ == "__main__":
    main()
