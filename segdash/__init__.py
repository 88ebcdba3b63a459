"""segdash: paint a few strokes, train a pixel classifier, segment every pixel.

The library layer imports no dashboard code (Panel, HoloViews, Bokeh): those load only with
:mod:`segdash.ui`.
"""

from . import registry
from ._version import __version__
from .classes import ClassInfo
from .core import SegmentationModel, fit
from .errors import (
    ImageError,
    MissingPluginError,
    ModelFileError,
    PluginLoadError,
    SegdashError,
    UnknownNameError,
)
from .io import read_image
from .persist import load_model
from .segmenter import Segmenter
from .strokes import Stroke, rasterize_strokes

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
    "fit",
    "load_model",
    "rasterize_strokes",
    "read_image",
    "registry",
]
