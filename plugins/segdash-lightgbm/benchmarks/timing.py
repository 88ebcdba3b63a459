"""Fit and predict times of the classifiers on a 1024x1024 RGB image, as segdash runs them.

The image is scikit-image's astronaut tiled 2x2; three classes are painted as thin
horizontal and vertical strokes (by brightness tercile), about 3 % of the pixels, capped by
segdash at its per-class training maximum. Features are ``basic`` with default settings, as
uint8 codes (what ``segdash.fit`` and the dashboard train on). Fit = ``SegmentationModel.train``
on the codes; predict = ``predict_proba_codes`` on all 1 M pixels. Median of ``--repeat``
runs.

Run from the repository root::

    .venv/bin/python plugins/segdash-lightgbm/benchmarks/timing.py
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from skimage import data

import segdash
from segdash.model import training_pixels
from segdash.stack import FeatureStack

CANDIDATES = [
    ("random_forest", {}),
    ("gradient_boosting", {}),
    ("lightgbm", {}),
    ("lightgbm", {"n_jobs": 1}),
]


def painted(image: np.ndarray) -> np.ndarray:
    grey = image.mean(axis=2)
    cuts = np.quantile(grey, [1 / 3, 2 / 3])
    classes = (1 + (grey > cuts[0]) + (grey > cuts[1])).astype(np.uint8)
    mask = np.zeros(grey.shape, bool)
    mask[::37, :] = True
    mask[:, ::41] = True
    return np.where(mask, classes, 0).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    image = np.tile(data.astronaut(), (2, 2, 1))
    labels = painted(image)
    stack = FeatureStack("basic")
    codes, quantizer = stack.codes(image)
    n_train = len(training_pixels(codes, labels)[1])
    print(f"image {image.shape}, {codes.shape[2]} features, {n_train} training pixels, "
          f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}")
    print("| classifier | settings | fit (s) | predict 1 M px (s) |")
    print("| --- | --- | --- | --- |")
    for name, params in CANDIDATES:
        fits, preds = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            model = segdash.SegmentationModel.train(codes, labels, stack, quantizer, name,
                                                    params, n_channels=3)
            fits.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            model.predict_proba_codes(codes)
            preds.append(time.perf_counter() - t0)
        print(f"| {name} | {params or 'defaults'} | {np.median(fits):.2f} | "
              f"{np.median(preds):.2f} |", flush=True)


if __name__ == "__main__":
    main()
