"""Cost of loading a model file with its isolated check (a benchmark, not a test).

For each built-in classifier and the LightGBM plugin (when installed): a model fitted with
the defaults on a 256² crop of scikit-image's camera, its file loaded five times

1. with every check and the load in this process only (``modelfile._load_checked``: what
   loading cost before the isolated check, plus the new bounds), and
2. as users load it (``model_from_bytes``: the check in a forked, limited child first,
   then the load here),

once the checking helper has started (``modelfile.start_checker``, timed too: a process
pays it once). Prints milliseconds per load and the ratio.

Run: ``.venv/bin/python benchmarks/model_load.py``
"""

from __future__ import annotations

import os
import time

import numpy as np
from skimage import data

import segdash
from segdash import modelfile
from segdash.model import model_from_bytes


def main() -> None:
    img = data.camera()[:256, :256]
    labels = np.zeros(img.shape, np.uint8)
    labels[10:20, 10:200] = 1
    labels[200:210, 10:200] = 2
    start = time.perf_counter()
    modelfile.start_checker()
    print(f"checking helper started in {time.perf_counter() - start:.1f} s "
          f"(load average {os.getloadavg()[0]:.1f})")
    for clf in ("random_forest", "gradient_boosting", "lightgbm"):
        if clf not in segdash.registry.classifiers.names():
            continue
        blob = segdash.fit(img, labels, classifier=clf).to_bytes()
        model_from_bytes(blob)  # warm
        start = time.perf_counter()
        for _ in range(5):
            modelfile._load_checked(blob)
        here = (time.perf_counter() - start) / 5
        start = time.perf_counter()
        for _ in range(5):
            model_from_bytes(blob)
        full = (time.perf_counter() - start) / 5
        print(f"{clf:18s} {len(blob) / 1e3:6.0f} kB  in-process {here * 1e3:5.0f} ms  "
              f"isolated check + load {full * 1e3:5.0f} ms  ({full / here:.1f}x)")


if __name__ == "__main__":
    main()
