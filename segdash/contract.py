"""What segdash asks of a feature extractor and a classifier entry, and of an image.

Everything a plugin may provide is declared here, with its default, on the two base
classes :class:`FeatureExtractor` and :class:`Classifier`. Subclassing them is convenient but
not required: any :class:`param.Parameterized` class with the required members is accepted
(:func:`validate_feature_extractor`, :func:`validate_classifier`), and segdash reads every
optional member through :func:`hook`, which falls back to the default declared here.

Images: :func:`image_channels` is the one check of an image's shape and dtype,
:func:`drop_alpha` the one rule for RGBA, :func:`prepare_image` the one conversion to what
extractors receive.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import param

from .codes import Quantizer
from .errors import ImageError, PluginLoadError

# -- images -------------------------------------------------------------------------------


def _has_alpha(shape: tuple[int, ...], dtype: np.dtype) -> bool:
    # Only 8-bit RGBA is read as colour + transparency; four 16-bit or float channels are
    # four measurements (a 4-channel fluorescence stack).
    return len(shape) == 3 and shape[2] == 4 and np.dtype(dtype) == np.uint8


def image_channels(image: Any) -> int:
    """Check that ``image`` is an image segdash can use; return its channel count.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` grey or ``(H, W, C)``; anything with ``shape`` and ``dtype`` (numpy, dask,
        a lazy TIFF plane).

    Returns
    -------
    int
        Channels segdash sees: C, or 3 for uint8 RGBA (the alpha is dropped).

    Raises
    ------
    ImageError
        Not 2-D or 3-D, empty, or not of a numeric (bool, integer, float) dtype.
    """
    shape = tuple(np.shape(image))
    dtype = np.dtype(image.dtype if hasattr(image, "dtype") else np.asarray(image).dtype)
    if len(shape) not in (2, 3):
        raise ImageError(
            f"an image must be (height, width) or (height, width, channels); got shape {shape}"
        )
    if min(shape) < 1:
        raise ImageError(f"the image is empty (shape {shape})")
    if dtype.kind not in "biuf":
        raise ImageError(f"images of dtype {dtype} are not supported; use integers or floats")
    if len(shape) == 2:
        return 1
    return 3 if _has_alpha(shape, dtype) else shape[2]


def drop_alpha(image: np.ndarray) -> np.ndarray:
    """``image`` without the alpha channel of uint8 RGBA (a view); other images unchanged."""
    if _has_alpha(image.shape, image.dtype):
        return image[:, :, :3]
    return image


def prepare_image(image: Any) -> np.ndarray:
    """Normalise an image to ``(H, W, C)`` float32, scaled by its dtype.

    The scaling depends on the dtype only, never on the image's content, so that a model
    trained on one image applies to another image of the same kind, and a tile gives the same
    values as the whole image.

    Parameters
    ----------
    image : array_like
        See :func:`image_channels`. bool, unsigned or signed integers are divided by the
        dtype's maximum (uint8 by 255, uint16 by 65535); floats are kept as they are.

    Returns
    -------
    numpy.ndarray
        ``(H, W, C)`` C-contiguous float32.

    Raises
    ------
    ImageError
        As :func:`image_channels`.
    """
    arr = np.asarray(image)
    image_channels(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = drop_alpha(arr)
    if arr.dtype == bool:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        out = arr.astype(np.float32)
        out *= np.float32(1.0 / np.iinfo(arr.dtype).max)
    else:
        out = arr.astype(np.float32, copy=False)
    return np.ascontiguousarray(out)


def settings_of(obj: param.Parameterized) -> dict[str, Any]:
    """The parameter values of a settings object, without param's automatic ``name``."""
    return {k: v for k, v in obj.param.values().items() if k != "name"}


# -- the two plugin contracts -------------------------------------------------------------


class FeatureExtractor(param.Parameterized):
    """A feature extractor: per-pixel features of a prepared image.

    Required: :meth:`compute` (or ``__call__``), :meth:`feature_names`, :attr:`halo`; the
    parameters are the settings and the class builds with no arguments.

    Optional hooks, with their defaults: :meth:`quantizer`, :meth:`compute_codes`,
    :meth:`compute_codes_inner`, :attr:`code_bytes`, :meth:`feature_groups`,
    :meth:`trimmed_settings`.
    """

    #: Bytes per feature and pixel that :meth:`compute_codes` needs at its peak (tiling
    #: sizes tiles with it). Default: float32 features and their uint8 codes, 4 + 1.
    code_bytes: int = 5

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

    def quantizer(self, channel_low: np.ndarray, channel_span: np.ndarray) -> Quantizer | None:
        """Codes for these features on images whose channel ``c`` mostly spans
        ``channel_low[c]`` to ``channel_low[c] + channel_span[c]`` (prepared units).

        Default None: segdash codes each feature linearly over its range on the training
        image (:meth:`Quantizer.from_sample`).
        """
        return None

    def compute_codes(self, image: np.ndarray, quantizer: Quantizer) -> np.ndarray:
        """uint8 codes of a prepared image, ``quantizer(features)``, ``(H, W, F)``.

        Default: the float32 features, then their codes. Override to write codes without
        holding the float features (and lower :attr:`code_bytes`).
        """
        return quantizer(check_output(type(self).__name__, self, image))

    def compute_codes_inner(self, image: np.ndarray, quantizer: Quantizer,
                            context: tuple[int, int]) -> np.ndarray:
        """uint8 codes of the inner part of a prepared image that already holds its own
        context: ``compute_codes(whole image)[cy:H - cy, cx:W - cx]`` restricted to the
        pixels whose features that context covers.

        Tiling hands each tile with ``halo`` pixels of its neighbours (mirrored at the image
        border) on every side: an extractor that uses them instead of padding the tile
        again computes each pixel's features once.

        Parameters
        ----------
        image : numpy.ndarray
            ``(H, W, C)`` prepared image.
        quantizer : Quantizer
        context : (int, int)
            ``(cy, cx)``: rows (columns) of context on each side; each is 0 (the axis is
            whole: pad it as :meth:`compute_codes` does) or at least :attr:`halo`.

        Returns
        -------
        numpy.ndarray
            ``(H - 2 cy, W - 2 cx, F)`` uint8, equal to the same pixels of the codes of the
            image the tile was cut from.

        Default: :meth:`compute_codes` of the whole input, cropped (each pixel of the
        context is computed too, and then thrown away).
        """
        cy, cx = (int(v) for v in context)
        codes = hook(self, "compute_codes")(image, quantizer)
        return codes[cy:codes.shape[0] - cy, cx:codes.shape[1] - cx]


    def feature_groups(self, n_channels: int) -> list[tuple[str, float | None]]:
        """The family and scale of each of the F features: ``[(family, sigma), ...]``, in
        output order; sigma in pixels, or None for a feature without a scale.

        Feature importance is summed by family and by scale with it
        (:mod:`segdash.importance`). Default: read from :meth:`feature_names`: a
        ``sigma=S`` word is the scale, and the name without it and without a leading
        channel word (``ch0``, ``mean``) is the family.
        """
        return [_group_of_name(n) for n in self.feature_names(n_channels)]

    def trimmed_settings(self, families: Collection[str],
                         scales: Collection[float]) -> dict[str, Any] | None:
        """Settings that compute only ``families`` at (about) ``scales``, or None when the
        extractor cannot be trimmed.

        "Keep only the useful features" (:func:`segdash.importance.useful_settings`)
        retrains with these. ``families`` and ``scales`` are among those of
        :meth:`feature_groups`. Default: None.
        """
        return None


_CHANNEL_WORD = re.compile(r"^(ch\d+|mean)$")


def _group_of_name(name: str) -> tuple[str, float | None]:
    """``(family, sigma)`` of a feature named like ``"ch0 sigma=2 edges"``."""
    words, sigma = [], None
    for i, word in enumerate(name.split()):
        if word.startswith("sigma="):
            try:
                sigma = float(word[6:])
                continue
            except ValueError:
                pass
        if i == 0 and _CHANNEL_WORD.match(word):
            continue
        words.append(word)
    return " ".join(words) or name, sigma


class Classifier(param.Parameterized):
    """A classifier entry: its parameters are hyper-parameters; :meth:`build` makes an
    unfitted scikit-learn-compatible estimator (``fit``, ``predict_proba``, ``classes_``).

    Optional hooks, with their defaults: :attr:`trusted_types`, :attr:`fit_threads`,
    :attr:`smoothing` (usually a parameter, so users can set it), :meth:`feature_repeats`.
    """

    #: Type names (``"module.Class"``) skops must trust to load a fitted estimator.
    trusted_types: tuple[str, ...] = ()
    #: OpenMP threads while fitting (None: the library's default, usually all cores).
    fit_threads: int | None = None
    #: Sigma, in pixels, of a Gaussian segdash applies to the predicted class
    #: probabilities (0: none).
    smoothing: float = 0.0

    def build(self) -> Any:
        """A fresh, unfitted scikit-learn-compatible estimator with these settings."""
        raise NotImplementedError

    def feature_repeats(self, scales: Sequence[float | None]) -> Sequence[int] | None:
        """How many times each feature is given to the estimator's fit, or None (once).

        A tree ensemble that draws the features each split may try at random tries a
        feature given twice twice as often; segdash then maps the fitted trees back to the
        F features (scikit-learn trees and forests only). ``scales`` is each feature's
        sigma in pixels (None: no scale), in feature order. Default: None.
        """
        return None


#: Optional hooks and the contract class declaring their defaults.
HOOKS: dict[str, type] = {
    "quantizer": FeatureExtractor,
    "compute_codes": FeatureExtractor,
    "compute_codes_inner": FeatureExtractor,
    "code_bytes": FeatureExtractor,
    "feature_groups": FeatureExtractor,
    "trimmed_settings": FeatureExtractor,
    "trusted_types": Classifier,
    "fit_threads": Classifier,
    "smoothing": Classifier,
    "feature_repeats": Classifier,
}


def hook(obj: Any, name: str) -> Any:
    """Optional hook ``name`` of a feature extractor or classifier (class or instance).

    The plugin's own member when it has one, else the default declared on
    :class:`FeatureExtractor` or :class:`Classifier` (methods bound to ``obj``).

    Raises
    ------
    KeyError
        ``name`` is not a declared hook.
    """
    base = HOOKS[name]
    if hasattr(obj, name):
        return getattr(obj, name)
    default = base.__dict__[name]
    return default.__get__(obj) if callable(default) else default


# -- validation ---------------------------------------------------------------------------


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
    code_bytes = hook(obj, "code_bytes")
    if not isinstance(code_bytes, int | np.integer) or code_bytes < 1:
        raise PluginLoadError(
            f"{cls.__name__}.code_bytes must be a positive int, got {code_bytes!r}")
    rng = np.random.default_rng(0)
    probe = rng.random((24, 20, 2), dtype=np.float32)
    check_output(cls.__name__, obj, probe)
    return cls


def validate_classifier(cls: Any) -> Any:
    """Check that ``cls`` follows the classifier contract; return it unchanged.

    Raises
    ------
    PluginLoadError
        What is wrong, in words a plugin author can act on.
    """
    if not (isinstance(cls, type) and issubclass(cls, param.Parameterized)):
        raise PluginLoadError(f"a classifier must be a param.Parameterized subclass, got {cls!r}")
    try:
        entry = cls()
        est = entry.build()
    except Exception as exc:
        raise PluginLoadError(f"{cls.__name__}().build() failed: {exc}") from exc
    missing = [m for m in ("fit", "predict_proba") if not callable(getattr(est, m, None))]
    if missing:
        raise PluginLoadError(
            f"{cls.__name__}().build() returned {type(est).__name__}, which has no "
            f"{', '.join(missing)}"
        )
    trusted = hook(entry, "trusted_types")
    if not (isinstance(trusted, tuple | list) and all(isinstance(t, str) for t in trusted)):
        raise PluginLoadError(
            f"{cls.__name__}.trusted_types must be a tuple of 'module.Type' strings")
    threads = hook(entry, "fit_threads")
    if threads is not None and (not isinstance(threads, int | np.integer) or threads < 1):
        raise PluginLoadError(f"{cls.__name__}.fit_threads must be None or a positive int")
    smoothing = hook(entry, "smoothing")
    if not isinstance(smoothing, int | float | np.number) or not smoothing >= 0:
        raise PluginLoadError(f"{cls.__name__}.smoothing must be a number >= 0")
    return cls
