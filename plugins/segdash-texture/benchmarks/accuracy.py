"""Ground-truth benchmark: pixel accuracy of ``basic`` vs ``basic`` + ``texture``.

Builds mosaics of scikit-image's texture photographs (brick, grass, gravel, and brick turned
by 90 degrees), each histogram-matched to one common histogram so that grey levels alone
cannot tell them apart. Regions are random smooth blobs (the ground truth). A few short
straight strokes per class, kept 10 px inside their region, play the user's scribbles. A
model is trained on the stroke pixels and scored on every other pixel.

Run from the repository root (writes ``RESULTS.md`` and ``example.png`` next to this file)::

    .venv/bin/python plugins/segdash-texture/benchmarks/accuracy.py

Options: ``--seeds N`` (default 5), ``--classifiers random_forest,lightgbm``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi
from skimage import data, exposure

import segdash
from segdash.classes import colorize, default_class
from segdash.contract import image_channels
from segdash.stack import FeatureStack

HERE = Path(__file__).resolve().parent
SIZE = 512

FEATURE_SETS = {
    "basic": (["basic"], None),
    "texture": (["texture"], None),
    "basic + texture": (["basic", "texture"], None),
    "basic + texture without lbp": (["basic", "texture"], {"texture": {"lbp": False}}),
}


def texture_bank() -> dict[str, np.ndarray]:
    """The textures, each matched to the histogram of all of them pooled (uint8)."""
    raw = {
        "brick": data.brick(),
        "brick turned 90°": np.rot90(data.brick()).copy(),
        "grass": data.grass(),
        "gravel": data.gravel(),
    }
    pooled = np.concatenate([t.ravel() for t in raw.values()])
    reference = np.sort(pooled)[:: len(raw)].reshape(SIZE, SIZE)
    return {
        name: np.clip(np.rint(exposure.match_histograms(t, reference)), 0, 255).astype(np.uint8)
        for name, t in raw.items()
    }


def layout(n_classes: int, seed: int) -> np.ndarray:
    """Random smooth blobs: ``(SIZE, SIZE)`` uint8 class ids 1..n_classes, each present."""
    rng = np.random.default_rng(seed)
    while True:
        fields = ndi.gaussian_filter(rng.normal(size=(n_classes, SIZE, SIZE)), (0, 45, 45))
        truth = (np.argmax(fields, axis=0) + 1).astype(np.uint8)
        counts = np.bincount(truth.ravel(), minlength=n_classes + 1)[1:]
        if counts.min() > 0.08 * truth.size:
            return truth


def scribbles(truth: np.ndarray, seed: int, per_class: int = 3, length: int = 90,
              width: int = 5, inset: int = 10) -> np.ndarray:
    """Short straight strokes per class, clipped to ``inset`` px inside the class."""
    rng = np.random.default_rng(seed + 1000)
    labels = np.zeros_like(truth)
    for cid in np.unique(truth):
        inside = ndi.distance_transform_edt(truth == cid) > inset
        ys, xs = np.nonzero(inside)
        canvas = Image.new("L", (SIZE, SIZE), 0)
        draw = ImageDraw.Draw(canvas)
        for _ in range(per_class):
            i = rng.integers(len(xs))
            angle = rng.uniform(0, np.pi)
            dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
            draw.line([(xs[i] - dx, ys[i] - dy), (xs[i] + dx, ys[i] + dy)], fill=1, width=width)
        stroke = (np.asarray(canvas) > 0) & inside
        labels[stroke] = cid
    return labels


def scenarios(bank: dict[str, np.ndarray]) -> dict[str, list[str]]:
    return {
        "brick / grass / gravel": ["brick", "grass", "gravel"],
        "brick / brick turned 90° / grass / gravel": ["brick", "brick turned 90°", "grass",
                                                      "gravel"],
    }


def compose(bank: dict[str, np.ndarray], names: list[str], truth: np.ndarray) -> np.ndarray:
    image = np.zeros((SIZE, SIZE), np.uint8)
    for cid, name in enumerate(names, start=1):
        image[truth == cid] = bank[name][truth == cid]
    return image


def run(seeds: int, classifiers: list[str]) -> tuple[str, dict]:
    bank = texture_bank()
    rows: dict[tuple[str, str, str], list[float]] = {}
    feature_time: dict[str, list[float]] = {}
    example = {}
    for scenario, names in scenarios(bank).items():
        for seed in range(seeds):
            truth = layout(len(names), seed)
            labels = scribbles(truth, seed)
            image = compose(bank, names, truth)
            unlabelled = labels == 0
            for set_name, (features, params) in FEATURE_SETS.items():
                stack = FeatureStack(features, params)
                t0 = time.perf_counter()
                stack(image)
                feature_time.setdefault(set_name, []).append(time.perf_counter() - t0)
                # What segdash.fit and the dashboard do: train on the uint8 feature codes.
                codes, quantizer = stack.codes(image)
                for clf in classifiers:
                    model = segdash.SegmentationModel.train(codes, labels, stack, quantizer, clf,
                                                            n_channels=image_channels(image))
                    pred = model.labels_from_proba(model.predict_proba_codes(codes))
                    acc = float(np.mean(pred[unlabelled] == truth[unlabelled]))
                    rows.setdefault((scenario, set_name, clf), []).append(acc)
                    if seed == 0 and clf == classifiers[0] and len(names) == 4:
                        example[set_name] = pred
            if seed == 0 and len(names) == 4:
                example.update(image=image, truth=truth, labels=labels)
            print(f"{scenario} seed {seed}: "
                  f"{labels.astype(bool).mean():.2%} of pixels painted", flush=True)
    return report(rows, feature_time, seeds, classifiers), example


def report(rows: dict, feature_time: dict, seeds: int, classifiers: list[str]) -> str:
    lines = [
        "# Texture benchmark results",
        "",
        "Generated by `benchmarks/accuracy.py` "
        f"({seeds} random layouts per scenario, {SIZE}x{SIZE} px, scikit-image textures "
        "histogram-matched to one common histogram; 3 strokes of 90x5 px per class, "
        "~1% of pixels painted). Pixel accuracy on every unpainted pixel, mean ± standard "
        "deviation over layouts; default settings of each extractor and classifier.",
        "",
        "| scenario | features | " + " | ".join(classifiers) + " |",
        "| --- | --- | " + " | ".join("---" for _ in classifiers) + " |",
    ]
    for scenario in dict.fromkeys(k[0] for k in rows):
        for set_name in FEATURE_SETS:
            cells = []
            for clf in classifiers:
                acc = np.array(rows[(scenario, set_name, clf)])
                cells.append(f"{acc.mean():.1%} ± {acc.std():.1%}")
            lines.append(f"| {scenario} | {set_name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Feature time per 512x512 grey image (median; "
        f"{platform.machine()}, shared 2-core machine, so indicative only):",
        "",
        "| features | seconds |",
        "| --- | --- |",
    ]
    for set_name, times in feature_time.items():
        lines.append(f"| {set_name} | {np.median(times):.2f} |")
    return "\n".join(lines) + "\n"


def save_example(example: dict, path: Path) -> None:
    """image | truth | basic | basic + texture, side by side, half size."""
    classes = [default_class(i) for i in range(1, 5)]

    def rgb(labels: np.ndarray) -> np.ndarray:
        return colorize(labels, classes)[..., :3]

    image = np.repeat(example["image"][..., None], 3, axis=2)
    painted = image.copy()
    mask = example["labels"] > 0
    painted[mask] = rgb(example["labels"])[mask]
    panels = [painted, rgb(example["truth"]), rgb(example["basic"]),
              rgb(example["basic + texture"])]
    gap = np.full((SIZE, 8, 3), 255, np.uint8)
    strip = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    half = Image.fromarray(strip).resize((strip.shape[1] // 2, SIZE // 2))
    half.quantize(colors=96).save(path, optimize=True)  # a palette PNG: a third of the bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--classifiers", default="random_forest,lightgbm")
    args = parser.parse_args()
    classifiers = [c for c in args.classifiers.split(",")
                   if c in segdash.registry.classifiers.names()]
    text, example = run(args.seeds, classifiers)
    (HERE / "RESULTS.md").write_text(text)
    save_example(example, HERE / "example.png")
    print(text)


if __name__ == "__main__":
    main()
