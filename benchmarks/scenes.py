"""Benchmark images with a known answer, and scripted strokes painted on them.

Every scene is built from arrays that ship with scikit-image or from seeded noise, so the
benchmarks need no download and give the same images on every machine. ``drawing`` shifts
every seed of a scene: another layout of its regions, noise and strokes, to check that a
change is not tuned to one drawing (``benchmarks/accuracy.py --drawing``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from segdash.strokes import Stroke, rasterize_strokes


@dataclass
class Scene:
    """An image, its true label of every pixel (1..K) and strokes painted on it."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    strokes: list[Stroke]

    @property
    def labels(self) -> np.ndarray:
        return rasterize_strokes(self.strokes, self.image.shape)


def _regions(size: int, n: int, seed: int) -> np.ndarray:
    """A partition of the square into ``n`` smooth-edged regions, labels 1..n."""
    rng = np.random.default_rng(seed)
    fields = [ndi.gaussian_filter(rng.normal(size=(size, size)), size / 10) for _ in range(n)]
    return (np.argmax(np.stack(fields), axis=0) + 1).astype(np.uint8)


def scripted_strokes(truth: np.ndarray, per_class: int = 3, seed: int = 0,
                     width: float = 3.0, length: int = 40,
                     classes: tuple[int, ...] | None = None) -> list[Stroke]:
    """Short wandering strokes well inside each class (or each of ``classes``), as a user
    would paint them."""
    rng = np.random.default_rng(seed)
    strokes = []
    h, w = truth.shape
    for cls in (np.unique(truth) if classes is None else classes):
        inside = ndi.binary_erosion(truth == cls, iterations=max(4, h // 64))
        if not inside.any():
            inside = truth == cls
        ys, xs = np.nonzero(inside)
        for _ in range(per_class):
            i = rng.integers(len(ys))
            y, x = float(ys[i]), float(xs[i])
            pts_x, pts_y = [x], [y]
            angle = rng.uniform(0, 2 * np.pi)
            for _ in range(length // 4):
                angle += rng.normal(0, 0.5)
                ny, nx = y + 4 * np.sin(angle) * h / 512, x + 4 * np.cos(angle) * w / 512
                if not (0 <= ny < h and 0 <= nx < w and inside[int(ny), int(nx)]):
                    angle += np.pi / 2
                    continue
                y, x = ny, nx
                pts_x.append(x)
                pts_y.append(y)
            strokes.append(Stroke(tuple(pts_x), tuple(pts_y), int(cls), width))
    return strokes


def two_textures(size: int = 512, drawing: int = 0) -> Scene:
    """Grey: a fine-grained region in a coarse-grained one, same mean and contrast."""
    rng = np.random.default_rng(1 + drawing)
    fine = rng.normal(0, 1, (size, size))
    coarse = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 3)
    coarse *= fine.std() / coarse.std()
    truth = _regions(size, 2, seed=11 + drawing)
    img = np.where(truth == 2, fine, coarse) * 30 + 128
    return Scene("two textures (grey)", np.clip(img, 0, 255).astype(np.uint8), truth,
                 scripted_strokes(truth, seed=1 + drawing))


def texture_mosaic(size: int = 512, drawing: int = 0) -> Scene:
    """Grey: brick, grass and gravel photographs in three regions."""
    from skimage import data

    tex = [data.brick(), data.grass(), data.gravel()]
    truth = _regions(size, 3, seed=12 + drawing)
    img = np.zeros((size, size), np.float64)
    for k, t in enumerate(tex):
        tile = np.tile(t, (size // t.shape[0] + 1, size // t.shape[1] + 1))[:size, :size]
        # equal mean and spread: only texture tells the classes apart
        tile = (tile - tile.mean()) / tile.std()
        img[truth == k + 1] = tile[truth == k + 1]
    return Scene("brick/grass/gravel (grey)", np.clip(img * 40 + 128, 0, 255).astype(np.uint8),
                 truth, scripted_strokes(truth, seed=2 + drawing))


def noisy_shapes(size: int = 512, drawing: int = 0) -> Scene:
    """Grey: blobs slightly brighter than the background under heavy noise."""
    rng = np.random.default_rng(3 + drawing)
    truth = _regions(size, 2, seed=13 + drawing)
    img = np.where(truth == 2, 0.55, 0.45) + rng.normal(0, 0.25, (size, size))
    img += np.linspace(-0.05, 0.05, size)[None, :]  # uneven illumination
    return Scene("noisy shapes (grey)", np.clip(img, 0, 1).astype(np.float32), truth,
                 scripted_strokes(truth, seed=3 + drawing))


def colour_cells(size: int = 512, drawing: int = 0) -> Scene:
    """RGB: reddish and greenish cells of similar brightness on a noisy grey background."""
    rng = np.random.default_rng(4 + drawing)
    yy, xx = np.mgrid[:size, :size]
    truth = np.ones((size, size), np.uint8)
    for _ in range(size // 8):
        cy, cx, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(6, 18) * size / 512
        truth[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(2, 4)
    colours = {1: (0.45, 0.45, 0.45), 2: (0.58, 0.42, 0.40), 3: (0.42, 0.56, 0.42)}
    img = np.zeros((size, size, 3))
    for k, c in colours.items():
        img[truth == k] = c
    img += rng.normal(0, 0.12, img.shape)
    img *= np.linspace(0.85, 1.15, size)[:, None, None]
    return Scene("colour cells (RGB)", (np.clip(img, 0, 1) * 255).astype(np.uint8), truth,
                 scripted_strokes(truth, per_class=4, seed=4 + drawing, length=16))


def photo_mosaic(size: int = 512, drawing: int = 0) -> Scene:
    """RGB: regions cut from three photographs (astronaut, coffee, cat)."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    truth = _regions(size, 3, seed=14 + drawing)
    img = np.zeros((size, size, 3), np.uint8)
    for k, p in enumerate(photos):
        tile = np.tile(p, (size // p.shape[0] + 1, size // p.shape[1] + 1, 1))[:size, :size]
        img[truth == k + 1] = tile[truth == k + 1]
    return Scene("photo mosaic (RGB)", img, truth, scripted_strokes(truth, seed=5 + drawing))


def _centreline_strokes(paths: list[np.ndarray], label: int, count: int, width: float,
                        seed: int, length: int = 30) -> list[Stroke]:
    """``count`` strokes along pieces of ``length`` points of the given ``(N, 2)`` (y, x)
    paths: painted down the middle of a thin structure, as a user would trace it."""
    rng = np.random.default_rng(seed)
    strokes = []
    for k in rng.choice(len(paths), size=min(count, len(paths)), replace=False):
        path = paths[k]
        i = int(rng.integers(0, max(1, len(path) - length)))
        piece = path[i:i + length]
        strokes.append(Stroke(tuple(piece[:, 1].tolist()), tuple(piece[:, 0].tolist()),
                              label, width))
    return strokes


def thin_fibres(size: int = 512, drawing: int = 0) -> Scene:
    """Grey: thin, faint, curving bright fibres (2-3 px wide) on a noisy, uneven background.

    Not a texture: what tells the classes apart is a line's shape at a fine scale (ridge
    curvature), and the strokes trace a few fibres down their middle.
    """
    rng = np.random.default_rng(6 + drawing)
    s = size / 512
    fibre = np.zeros((size, size), bool)
    paths = []
    for _ in range(24):
        # a smooth random curve: heading drifts slowly, steps of half a pixel
        y, x = rng.uniform(0, size, 2)
        heading = rng.uniform(0, 2 * np.pi)
        pts = []
        for _ in range(int(1400 * s)):
            heading += rng.normal(0, 0.03)
            y, x = y + 0.5 * np.sin(heading), x + 0.5 * np.cos(heading)
            if not (1 <= y < size - 1 and 1 <= x < size - 1):
                break
            pts.append((y, x))
        if len(pts) < 80:
            continue
        pts = np.array(pts)
        paths.append(pts[::2])
        fibre[pts[:, 0].astype(int), pts[:, 1].astype(int)] = True
    fibre = ndi.binary_dilation(fibre, iterations=1)
    truth = np.where(fibre, 2, 1).astype(np.uint8)
    img = 0.4 + 0.25 * ndi.gaussian_filter(fibre.astype(float), 0.7)
    img += 0.1 * ndi.gaussian_filter(rng.normal(size=(size, size)), size / 16) * size / 16
    img += rng.normal(0, 0.08, (size, size))
    # background strokes kept 6 px away from any fibre, fibre strokes down the middle
    strokes = (scripted_strokes(np.where(ndi.binary_dilation(fibre, iterations=6), 2, 1),
                                seed=6 + drawing, classes=(1,))
               + _centreline_strokes(paths, 2, 4, 1.5, seed=6 + drawing))
    return Scene("thin fibres (grey)", np.clip(img, 0, 1).astype(np.float32), truth, strokes)


def touching_blobs(size: int = 512, drawing: int = 0) -> Scene:
    """Grey: small and large round blobs, many touching, same brightness, on noise.

    Not a texture: the classes differ only by blob size, and touching blobs merge into
    shapes of every size, so only features at the blobs' own scale tell them apart.
    """
    rng = np.random.default_rng(7 + drawing)
    s = size / 512
    yy, xx = np.mgrid[:size, :size]
    truth = np.ones((size, size), np.uint8)
    centres = {2: [], 3: []}
    for _ in range(int(90 * s * s)):
        cls = int(rng.integers(2, 4))
        r = (5.0 if cls == 2 else 14.0) * s
        # half the blobs are placed against an earlier one, so that blobs touch
        if centres[2] + centres[3] and rng.random() < 0.5:
            cy, cx, cr = (centres[2] + centres[3])[rng.integers(len(centres[2] + centres[3]))]
            a = rng.uniform(0, 2 * np.pi)
            cy, cx = cy + (cr + r) * np.sin(a), cx + (cr + r) * np.cos(a)
        else:
            cy, cx = rng.uniform(0, size, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        if (truth[disc] != 1).mean() > 0.1 if disc.any() else True:
            continue
        truth[disc] = cls
        centres[cls].append((cy, cx, r))
    img = np.where(truth > 1, 0.6, 0.4) + rng.normal(0, 0.12, (size, size))
    strokes = scripted_strokes(truth, seed=7 + drawing, classes=(1,))
    for cls, width in ((2, 2.0), (3, 3.0)):
        picks = rng.choice(len(centres[cls]), size=min(4, len(centres[cls])), replace=False)
        for k in picks:
            cy, cx, r = centres[cls][k]
            # across the blob through its centre, staying inside it
            d = 0.6 * r
            strokes.append(Stroke((cx - d, cx + d), (cy, cy), cls, width))
    return Scene("touching blobs, 2 sizes (grey)", np.clip(img, 0, 1).astype(np.float32),
                 truth, strokes)


SCENES: list[Callable[..., Scene]] = [
    two_textures, texture_mosaic, noisy_shapes, colour_cells, photo_mosaic, thin_fibres,
    touching_blobs,
]


def astronaut(size: int, grey: bool = False) -> np.ndarray:
    """The astronaut photograph tiled to ``size`` x ``size`` (the speed reference's image)."""
    from skimage import data

    a = data.astronaut()
    img = np.tile(a, (size // a.shape[0] + 1, size // a.shape[1] + 1, 1))[:size, :size]
    if grey:
        img = (img @ np.array([0.2125, 0.7154, 0.0721])).astype(np.uint8)
    return np.ascontiguousarray(img)


def speed_strokes(size: int) -> tuple[list[Stroke], Stroke]:
    """Two classes' strokes on the astronaut (scaled to ``size``) and one more stroke."""
    s = size / 512

    def line(x0, y0, x1, y1, label):
        return Stroke((x0 * s, x1 * s), (y0 * s, y1 * s), label, 5 * s)

    strokes = [
        line(30, 40, 200, 60, 1), line(350, 30, 480, 80, 1), line(20, 300, 60, 480, 1),
        line(220, 120, 300, 130, 2), line(180, 260, 320, 420, 2), line(400, 300, 420, 480, 2),
    ]
    return strokes, line(100, 150, 150, 250, 2)
