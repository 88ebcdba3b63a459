"""Shared fixtures: small synthetic images with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi


def two_texture_image(size: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fine-grained texture disc on a coarse-grained background, same mean brightness.

    Returns
    -------
    image : (size, size) uint8
    truth : (size, size) uint8, 1 = background, 2 = disc
    """
    rng = np.random.default_rng(seed)
    fine = rng.normal(0, 1, (size, size))
    coarse = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 4)
    coarse *= fine.std() / coarse.std()
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3.2) ** 2
    img = np.where(disc, fine, coarse) * 30 + 128
    truth = np.where(disc, 2, 1).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def scribbles(size: int = 128) -> np.ndarray:
    """Painted strokes: class 2 as a cross and a ring inside the disc, class 1 along the
    four sides of the background."""
    from segdash.strokes import rasterize_strokes

    return rasterize_strokes(scribble_strokes(size), (size, size))


def scribble_strokes(size: int = 128) -> list:
    """The strokes of :func:`scribbles`."""
    from segdash.strokes import Stroke

    c, r = size / 2, size / 3.2
    t = np.linspace(0, 2 * np.pi, 60)
    strokes = [
        Stroke((c - r / 2, c + r / 2), (c, c), 2, 3),
        Stroke((c, c), (c - r / 2, c + r / 2), 2, 3),
        Stroke(tuple(c + 0.7 * r * np.cos(t)), tuple(c + 0.7 * r * np.sin(t)), 2, 3),
        Stroke((6, size - 6, size - 6, 6, 6), (6, 6, size - 6, size - 6, 6), 1, 3),
    ]
    return strokes


@pytest.fixture
def two_texture():
    img, truth = two_texture_image()
    return img, truth, scribbles()


@pytest.fixture
def rgb_image():
    rng = np.random.default_rng(1)
    return (rng.random((40, 48, 3)) * 255).astype(np.uint8)
