"""The sample images bundled with segdash (``segdash/samples/``, see its README for sources)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from ..io.naming import is_image_name
from ..io.read import read_image

#: The sample opened when the dashboard starts without an image.
DEFAULT_SAMPLE = "coins.png"


def samples_dir() -> Path:
    """Folder holding the bundled samples."""
    return Path(str(resources.files("segdash").joinpath("samples")))


def sample_names() -> list[str]:
    """File names of the bundled sample images, sorted."""
    return sorted(p.name for p in samples_dir().iterdir() if is_image_name(p))


def load_sample(name: str = DEFAULT_SAMPLE) -> np.ndarray:
    """Read bundled sample ``name``.

    Raises
    ------
    ValueError
        ``name`` is not a bundled sample (the message lists them).
    """
    if name not in sample_names():
        raise ValueError(f"no sample named {name!r}; samples: {', '.join(sample_names())}")
    return read_image(samples_dir() / name)
