"""segdash: paint a few strokes, train a pixel classifier, segment every pixel.

The library layer imports no dashboard code (Panel, HoloViews, Bokeh): those load only with
:mod:`segdash.ui`.
"""

from . import registry
from ._version import __version__
from .classes import ClassInfo
from .errors import (
    ImageError,
    MissingPluginError,
    ModelFileError,
    PluginLoadError,
    SegdashError,
    UnknownNameError,
)
from .io.read import read_image
from .model import SegmentationModel, fit, load_model
from .segmenter import Segmenter
from .strokes import Stroke, rasterize_strokes


def __getattr__(name: str) -> object:
    # `segdash.apply` lives with Dask in segdash.tiling, imported on first use so that
    # `import segdash` stays light.
    if name == "apply":
        from .tiling import apply

        return apply
    raise AttributeError(f"module 'segdash' has no attribute {name!r}")


__all__ = [
    "ClassInfo",
    "ImageError",
    "MissingPluginError",
    "ModelFileError",
    "PluginLoadError",
    "SegdashError",
    "SegmentationModel",
    "Segmenter",
    "Stroke",
    "UnknownNameError",
    "__version__",
    "apply",
    "fit",
    "load_model",
    "rasterize_strokes",
    "read_image",
    "registry",
]
