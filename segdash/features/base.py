"""The feature-extractor contract, image normalisation and validation.

A feature extractor is a :class:`param.Parameterized` class whose parameters are its
settings. An instance, called on a prepared image ``(H, W, C)`` float32 (see
:func:`prepare_image`), returns ``(H, W, F)`` float32; ``feature_names(C)`` names the F
features; ``halo`` is how many pixels of context, on each side, a pixel's features depend on.
Subclassing :class:`FeatureExtractor` is convenient but not required.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import param

from ..errors import ImageError, PluginLoadError


def prepare_image(image: Any) -> np.ndarray:
    """Normalise an image to ``(H, W, C)`` float32, scaled by its dtype.

    The scaling depends on the dtype only, never on the image's content, so that a model
    trained on one image applies to another image of the same kind, and a tile gives the same
    values as the whole image.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` grey, ``(H, W, 3)`` RGB, ``(H, W, 4)`` uint8 RGBA (alpha is dropped), or
        ``(H, W, C)`` with any C. bool, unsigned or signed integers (divided by the dtype's
        maximum: uint8 by 255, uint16 by 65535) or floats (kept as they are).

    Returns
    -------
    numpy.ndarray
        ``(H, W, C)`` C-contiguous float32.

    Raises
    ------
    ImageError
        Not 2-D or 3-D, empty, or of a dtype that is not a number.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim != 3:
        raise ImageError(
            f"an image must be (height, width) or (height, width, channels); got shape {arr.shape}"
        )
    if arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ImageError(f"the image is empty (shape {arr.shape})")
    if arr.shape[2] == 4 and arr.dtype == np.uint8:
        arr = arr[:, :, :3]  # RGBA: alpha is transparency, not a measurement
    if arr.dtype == bool:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        out = arr.astype(np.float32)
        out *= np.float32(1.0 / np.iinfo(arr.dtype).max)
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32, copy=False)
    else:
        raise ImageError(f"images of dtype {arr.dtype} are not supported; use integers or floats")
    return np.ascontiguousarray(out)


def n_channels(image: Any) -> int:
    """Number of channels segdash sees in ``image`` (after dropping an RGBA alpha)."""
    shape = np.shape(image)
    if len(shape) == 2:
        return 1
    if len(shape) == 3:
        dtype = image.dtype if hasattr(image, "dtype") else np.asarray(image).dtype
        if shape[2] == 4 and dtype == np.uint8:
            return 3
        return shape[2]
    raise ImageError(
        f"an image must be (height, width) or (height, width, channels); got shape {shape}"
    )


class FeatureExtractor(param.Parameterized):
    """Convenience base class for feature extractors.

    Subclasses implement :meth:`compute` (on a prepared image), :meth:`feature_names` and
    :attr:`halo`; calling an instance prepares the image first, so raw uint8/uint16 arrays work.
    """

    def __call__(self, image: Any) -> np.ndarray:
        return self.compute(prepare_image(image))

    def compute(self, image: np.ndarray) -> np.ndarray:
        """Features of a prepared ``(H, W, C)`` float32 image, ``(H, W, F)`` float32."""
        raise NotImplementedError

    def feature_names(self, n_channels: int) -> list[str]:
        """Names of the F features produced for an image of ``n_channels`` channels."""
        raise NotImplementedError

    @property
    def halo(self) -> int:
        """Pixels of context on each side that one pixel's features depend on."""
        raise NotImplementedError


def settings_of(obj: param.Parameterized) -> dict[str, Any]:
    """The parameter values of a settings object, without param's automatic ``name``."""
    return {k: v for k, v in obj.param.values().items() if k != "name"}


def validate_feature_extractor(cls: Any) -> Any:
    """Check that ``cls`` follows the feature-extractor contract; return it unchanged.

    Instantiates it with no arguments and runs it on a small image, checking the output's
    shape and dtype against ``feature_names`` and the ``halo``.

    Raises
    ------
    PluginLoadError
        What is wrong, in words a plugin author can act on.
    """
    if not (isinstance(cls, type) and issubclass(cls, param.Parameterized)):
        raise PluginLoadError(
            f"a feature extractor must be a param.Parameterized subclass, got {cls!r}"
        )
    try:
        obj = cls()
    except Exception as exc:
        raise PluginLoadError(f"{cls.__name__}() with no arguments failed: {exc}") from exc
    for attr in ("feature_names", "halo"):
        if not hasattr(obj, attr):
            raise PluginLoadError(f"{cls.__name__} has no {attr!r}")
    if not callable(obj):
        raise PluginLoadError(f"{cls.__name__} instances are not callable")
    halo = obj.halo
    if not isinstance(halo, int | np.integer) or halo < 0:
        raise PluginLoadError(f"{cls.__name__}.halo must be a non-negative int, got {halo!r}")
    rng = np.random.default_rng(0)
    probe = rng.random((24, 20, 2), dtype=np.float32)
    check_output(cls.__name__, obj, probe)
    return cls


def check_output(name: str, extractor: Any, image: np.ndarray) -> np.ndarray:
    """Run ``extractor`` on a prepared image and check shape, dtype and names.

    Raises
    ------
    PluginLoadError
        The output is not ``(H, W, len(feature_names(C)))`` float32.
    """
    out = extractor(image)
    names = list(extractor.feature_names(image.shape[2]))
    expected = (image.shape[0], image.shape[1], len(names))
    if not isinstance(out, np.ndarray):
        raise PluginLoadError(f"feature extractor {name!r} returned {type(out).__name__}, "
                              "not a numpy array")
    if out.shape != expected:
        raise PluginLoadError(
            f"feature extractor {name!r} returned shape {out.shape} for an image of shape "
            f"{image.shape}; expected {expected} (height, width, len(feature_names))"
        )
    if out.dtype != np.float32:
        raise PluginLoadError(
            f"feature extractor {name!r} returned dtype {out.dtype}; expected float32"
        )
    return out
