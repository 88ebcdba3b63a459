"""Checks for plugin authors, in the spirit of scikit-learn's ``check_estimator``.

Call them from a plugin's tests::

    from segdash.testing import check_classifier, check_feature_extractor

    def test_contract():
        check_feature_extractor(MyFeatures)          # the class: default settings
        check_feature_extractor(MyFeatures(sigma=3))  # or an instance: those settings
        check_classifier(MyClassifier)

Each check raises :class:`CheckFailed` (an ``AssertionError``) whose message says which
property failed and what to change. The individual checks (``check_extractor_*`` and
``check_classifier_*``) can be called on their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import param

from . import registry
from .contract import hook, settings_of, validate_classifier, validate_feature_extractor
from .errors import PluginLoadError
from .model import fit, fold_repeated_features, keep_split_size, model_from_bytes

__all__ = [
    "CheckFailed",
    "check_classifier",
    "check_classifier_contract",
    "check_classifier_determinism",
    "check_classifier_fit_predict",
    "check_classifier_model_roundtrip",
    "check_extractor_contract",
    "check_extractor_determinism",
    "check_extractor_finite",
    "check_extractor_halo",
    "check_extractor_model_roundtrip",
    "check_extractor_shapes",
    "check_feature_extractor",
    "texture_image",
]


class CheckFailed(AssertionError):
    """A plugin does not follow segdash's contract; the message says what to fix."""


def _fail(what: str, message: str) -> CheckFailed:
    return CheckFailed(f"{what}: {message}")


#: Probabilities that differ by less are equal: multi-threaded ensembles (scikit-learn's
#: forests with n_jobs=-1) sum their trees' votes in any order, changing the last bits.
_PROBA_ATOL = 1e-6


def _same_proba(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=0, atol=_PROBA_ATOL))


def _split(obj: Any) -> tuple[type, param.Parameterized]:
    """The class and a settings instance of ``obj`` (a class: default settings)."""
    if isinstance(obj, type):
        if not issubclass(obj, param.Parameterized):
            raise CheckFailed(f"{obj!r} is not a param.Parameterized subclass")
        try:
            return obj, obj()
        except Exception as exc:
            raise CheckFailed(f"{obj.__name__}() with no arguments failed: {exc!r}") from exc
    if isinstance(obj, param.Parameterized):
        return type(obj), obj
    raise CheckFailed(f"expected a param.Parameterized class or instance, got {obj!r}")


def texture_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A prepared test image with structure at every scale: ``(H, W, C)`` float32 in [0, 1].

    Smoothed noise at several scales plus fine noise, so that features of every scale vary
    across the image (a feature constant over the image could not reveal a dishonest halo).
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    h, w, c = shape
    img = np.zeros(shape, np.float64)
    for sigma, weight in ((0, 0.3), (2, 1.0), (6, 1.0), (16, 1.0)):
        noise = rng.normal(size=shape)
        if sigma:
            noise = ndi.gaussian_filter(noise, (sigma, sigma, 0))
        img += weight * noise / (noise.std() + 1e-12)
    img -= img.min()
    img /= img.max() + 1e-12
    return np.ascontiguousarray(img, dtype=np.float32)


# -- feature extractors ------------------------------------------------------------------


def check_extractor_contract(obj: Any) -> None:
    """The class passes the checks segdash's registry runs when loading it."""
    cls, ext = _split(obj)
    try:
        validate_feature_extractor(cls)
    except PluginLoadError as exc:
        raise _fail(cls.__name__, str(exc)) from exc
    if type(ext.halo) is bool or not isinstance(ext.halo, int | np.integer) or ext.halo < 0:
        raise _fail(cls.__name__, f"halo must be a non-negative int, got {ext.halo!r}")


def check_extractor_shapes(obj: Any) -> None:
    """``(H, W, len(feature_names(C)))`` float32 for 1, 2 and 3 channels, odd sizes too;
    unique string names; the input is not modified."""
    cls, ext = _split(obj)
    for shape in ((17, 23, 1), (31, 20, 2), (24, 37, 3)):
        img = texture_image(shape, seed=1)
        before = img.copy()
        out = ext(img)
        names = list(ext.feature_names(shape[2]))
        expected = (shape[0], shape[1], len(names))
        if not isinstance(out, np.ndarray):
            raise _fail(cls.__name__, f"returned {type(out).__name__}, not a numpy array")
        if out.shape != expected:
            raise _fail(cls.__name__,
                        f"returned shape {out.shape} for an image of shape {shape}; expected "
                        f"{expected} = (height, width, len(feature_names({shape[2]})))")
        if out.dtype != np.float32:
            raise _fail(cls.__name__, f"returned dtype {out.dtype}; expected float32")
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise _fail(cls.__name__, f"feature_names({shape[2]}) must be unique strings")
        if not np.array_equal(img, before):
            raise _fail(cls.__name__, "modified its input image in place; work on a copy")


def check_extractor_finite(obj: Any) -> None:
    """No NaN or infinity, on a textured image and on a perfectly flat one (0/0 traps)."""
    cls, ext = _split(obj)
    for label, img in (("a textured", texture_image((40, 40, 2), seed=2)),
                       ("a constant", np.full((40, 40, 2), 0.5, np.float32)),
                       ("an all-zero", np.zeros((40, 40, 2), np.float32))):
        out = ext(img)
        if not np.all(np.isfinite(out)):
            bad = [n for n, ok in zip(ext.feature_names(2),
                                      np.isfinite(out).all(axis=(0, 1)), strict=True) if not ok]
            raise _fail(cls.__name__, f"NaN or infinite features on {label} image: {bad[:5]}")


def check_extractor_determinism(obj: Any) -> None:
    """Two calls, and a fresh instance with the same settings, give identical features.

    A feature that depends on anything but the image and the parameters (randomness, a
    hidden attribute) would make saved models predict differently after loading.
    """
    cls, ext = _split(obj)
    img = texture_image((48, 40, 2), seed=3)
    first = ext(img)
    if not np.array_equal(first, ext(img), equal_nan=True):
        raise _fail(cls.__name__, "two calls on the same image gave different features; "
                                  "seed any randomness with a fixed seed")
    try:
        twin = cls(**settings_of(ext))
    except Exception as exc:
        raise _fail(cls.__name__, f"cannot rebuild from its settings: {exc!r}") from exc
    if not np.array_equal(first, twin(img), equal_nan=True):
        raise _fail(cls.__name__, "a new instance with the same settings gave different "
                                  "features; keep all state in param parameters")


def _halo_mismatch(full: np.ndarray, part: np.ndarray, off: int, inset: int,
                   rtol: float, atol: np.ndarray) -> tuple[int, float] | None:
    """First feature index and its largest difference where crop and image features differ,
    comparing crop pixels at least ``inset`` pixels from the crop border."""
    h, w = part.shape[:2]
    a = part[inset:h - inset, inset:w - inset]
    b = full[off + inset:off + h - inset, off + inset:off + w - inset]
    bad = np.abs(a - b) > atol + rtol * np.abs(b)
    if not bad.any():
        return None
    per_feature = bad.any(axis=(0, 1))
    idx = int(np.argmax(per_feature))
    return idx, float(np.max(np.abs(a[..., idx] - b[..., idx])))


def check_extractor_halo(obj: Any, rtol: float = 1e-4) -> None:
    """Halo honesty: features of a crop equal the crop of the features, except within
    ``halo`` pixels of the crop's border.

    segdash tiles large images with an overlap of ``halo`` pixels and keeps each tile's
    centre; a halo smaller than the true reach of the features makes tiled predictions
    differ from whole-image ones. The crop's border lies well inside the image, so padding
    at the crop's edge (mirror, zeros...) differs from the real neighbours there.
    """
    cls, ext = _split(obj)
    halo = int(ext.halo)
    crop = 2 * halo + 20
    off = halo + 13  # odd: catches extractors that work on a grid (downsampling)
    n = crop + 2 * off
    img = texture_image((n, n, 2), seed=4)
    full = ext(img)
    part = ext(img[off:off + crop, off:off + crop])
    # Absolute tolerance per feature, relative to its spread: float32 rounding, no more.
    scale = np.abs(full).reshape(-1, full.shape[2]).max(axis=0)
    atol = 1e-6 * (1.0 + scale)
    found = _halo_mismatch(full, part, off, halo, rtol, atol)
    if found is None:
        return
    idx, diff = found
    name = list(ext.feature_names(2))[idx]
    true_reach = None
    for inset in range(halo + 1, crop // 2):
        if _halo_mismatch(full, part, off, inset, rtol, atol) is None:
            true_reach = inset
            break
    hint = (f"the features look like they depend on pixels up to {true_reach} px away"
            if true_reach is not None else
            f"the features differ even {crop // 2 - 1} px from the border (a global "
            "normalisation, or padding outside the extractor?)")
    raise _fail(cls.__name__,
                f"dishonest halo: halo is {halo} but features of a crop differ from the crop "
                f"of the features {halo} px inside the crop's border (feature {name!r}, "
                f"max difference {diff:.3g}); {hint}. Make `halo` the true reach, and pad by "
                "it inside the extractor so no filter sees the array's edge")


@contextmanager
def _registered(reg: registry.Registry, cls: type) -> Iterator[str]:
    """Register ``cls`` under a unique temporary name for the duration of the block."""
    name = f"_segdash_check_{cls.__name__}_{uuid.uuid4().hex[:8]}"
    reg.register(name, cls)
    try:
        yield name
    finally:
        reg.unregister(name)


def _labelled(shape: tuple[int, int], seed: int = 5) -> np.ndarray:
    """Labels painted as two bands: class 1 on the left, class 2 on the right."""
    labels = np.zeros(shape, np.uint8)
    w = shape[1]
    labels[2:-2, 2:max(3, w // 4)] = 1
    labels[2:-2, -max(3, w // 4):-2] = 2
    return labels


def _same_settings(a: dict, b: dict) -> bool:
    def norm(v: Any) -> Any:
        if isinstance(v, list | tuple):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    return norm(a) == norm(b)


def check_extractor_model_roundtrip(obj: Any) -> None:
    """A model using these features and settings saves, loads with the same settings and
    predicts identically (settings must be plain values skops stores safely)."""
    cls, ext = _split(obj)
    settings = settings_of(ext)
    img = texture_image((48, 56, 3), seed=5)
    labels = _labelled(img.shape[:2])
    with _registered(registry.features, cls) as name:
        # Built-in classifier with its defaults: the kit must not depend on its settings.
        model = fit(img, labels, features=name, feature_params=settings,
                    classifier="random_forest")
        try:
            data = model.to_bytes()
            loaded = model_from_bytes(data)
        except Exception as exc:
            raise _fail(cls.__name__,
                        f"a model with settings {settings} does not save and load: "
                        f"{type(exc).__name__}: {exc}. Settings must be plain values "
                        "(numbers, strings, booleans, None, lists/tuples/dicts of them)") from exc
        kept = loaded.stack.settings[name]
        if not _same_settings(kept, settings):
            raise _fail(cls.__name__,
                        f"settings changed through a saved model: {settings} -> {kept}")
        if not _same_proba(loaded.predict_proba(img), model.predict_proba(img)):
            raise _fail(cls.__name__, "a loaded model predicts differently from the saved one")


def check_feature_extractor(obj: Any) -> None:
    """Run every feature-extractor check on ``obj`` (a class, or an instance whose settings
    are checked).

    Checks, in order: the contract the registry enforces; shapes, dtype and names for 1-3
    channels; no NaN/inf (flat images included); determinism; halo honesty; settings
    round-trip through a saved model.

    Raises
    ------
    CheckFailed
        The first property that does not hold, with what to change.
    """
    for check in _EXTRACTOR_CHECKS:
        check(obj)


_EXTRACTOR_CHECKS: tuple[Callable[[Any], None], ...] = (
    check_extractor_contract,
    check_extractor_shapes,
    check_extractor_finite,
    check_extractor_determinism,
    check_extractor_halo,
    check_extractor_model_roundtrip,
)


# -- classifiers -------------------------------------------------------------------------


def _blobs(class_ids: tuple[int, ...], n_per_class: int = 60, n_features: int = 6,
           seed: int = 6, spread: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """float32 clusters, one per class id, shuffled: well separated with the default
    ``spread``, overlapping with a large one."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for i, cid in enumerate(class_ids):
        centre = np.zeros(n_features)
        centre[i % n_features] = 6.0
        centre[(i + 1) % n_features] = 3.0 * i
        X.append(rng.normal(centre, spread, (n_per_class, n_features)))
        y.append(np.full(n_per_class, cid))
    order = rng.permutation(n_per_class * len(class_ids))
    return (np.concatenate(X)[order].astype(np.float32),
            np.concatenate(y)[order].astype(np.int64))


def check_classifier_contract(obj: Any) -> None:
    """The registry's checks; ``build()`` returns a new, unfitted estimator each call;
    ``trusted_types`` is a sequence of ``"module.Class"`` strings."""

    cls, entry = _split(obj)
    try:
        validate_classifier(cls)
    except PluginLoadError as exc:
        raise _fail(cls.__name__, str(exc)) from exc
    a, b = entry.build(), entry.build()
    if a is b:
        raise _fail(cls.__name__, "build() returned the same object twice; return a new "
                                  "estimator each call (segdash refits on every stroke)")
    if not callable(getattr(a, "predict", None)):
        raise _fail(cls.__name__, f"{type(a).__name__} has no predict")
    try:
        fitted = np.asarray(a.classes_).size > 0
    except Exception:
        fitted = False
    if fitted:
        raise _fail(cls.__name__, "build() returned an already fitted estimator")
    trusted = hook(entry, "trusted_types")
    if isinstance(trusted, str) or not all(isinstance(t, str) for t in trusted):
        raise _fail(cls.__name__, f"trusted_types must be a tuple of strings, got {trusted!r}")
    _check_feature_repeats(cls.__name__, entry)


def _check_feature_repeats(name: str, entry: Any) -> None:
    """A ``feature_repeats`` hook gives one count >= 0 per feature (not all 0), and the
    estimator fitted on the repeated columns can be read back on the features."""
    scales = [0.5, 1.0, 2.0, 4.0, None]
    repeats = hook(entry, "feature_repeats")(scales)
    if repeats is None:
        return
    counts = np.asarray(repeats)
    if (counts.shape != (len(scales),) or counts.dtype.kind not in "iu" or np.any(counts < 0)
            or not counts.any()):
        raise _fail(name, f"feature_repeats({scales}) must give {len(scales)} integer counts "
                          f">= 0, not all 0; got {repeats!r}")
    columns = np.repeat(np.arange(len(scales)), counts)
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (60, len(scales))).astype(np.float32)
    y = np.where(X[:, 0] > 127, 1, 2)
    est = entry.build()
    keep_split_size(est, len(scales))
    est.fit(X[:, columns], y)
    try:
        fold_repeated_features(est, columns, len(scales))
    except TypeError as exc:
        raise _fail(name, f"declares feature_repeats, but {exc}") from exc


def check_classifier_fit_predict(obj: Any) -> None:
    """Fit on float32 features with arbitrary class ids (2 and 3 classes): ``classes_`` are
    the ids; ``predict_proba`` is ``(N, K)``, rows sum to 1, columns in ``classes_`` order;
    ``predict`` agrees with it; chunked prediction equals whole prediction; X is unchanged."""
    cls, entry = _split(obj)
    for ids in ((3, 1), (7, 2, 5)):
        X, y = _blobs(ids)
        X_before = X.copy()
        est = entry.build()
        est.fit(X, y)
        if not np.array_equal(X, X_before):
            raise _fail(cls.__name__, "fit modified its input in place")
        classes = np.asarray(est.classes_)
        if classes.tolist() != sorted(ids):
            raise _fail(cls.__name__, f"classes_ is {classes.tolist()} after fitting class ids "
                                      f"{sorted(ids)}; it must be the sorted ids themselves")
        proba = np.asarray(est.predict_proba(X))
        if proba.shape != (len(X), len(ids)):
            raise _fail(cls.__name__, f"predict_proba returned shape {proba.shape}; expected "
                                      f"{(len(X), len(ids))} (samples, classes)")
        if not np.all(np.isfinite(proba)) or proba.min() < -1e-6:
            raise _fail(cls.__name__, "predict_proba returned negative or non-finite values")
        if not np.allclose(proba.sum(axis=1), 1.0, atol=1e-4):
            raise _fail(cls.__name__, "predict_proba rows do not sum to 1")
        for k, cid in enumerate(classes):
            own = proba[y == cid].mean(axis=0)
            if int(np.argmax(own)) != k:
                raise _fail(cls.__name__,
                            f"on well separated data, class {cid}'s samples get the highest "
                            f"mean probability in column {int(np.argmax(own))}, not {k}: "
                            "predict_proba's columns must follow classes_")
        pred = np.asarray(est.predict(X))
        agree = np.mean(pred == classes[np.argmax(proba, axis=1)])
        if agree < 0.99:
            raise _fail(cls.__name__, f"predict agrees with argmax(predict_proba) on only "
                                      f"{agree:.0%} of samples")
        half = len(X) // 2
        chunked = np.concatenate([est.predict_proba(X[:half]), est.predict_proba(X[half:])])
        if not np.allclose(chunked, proba, rtol=1e-6, atol=1e-7):
            raise _fail(cls.__name__, "predicting in chunks differs from predicting at once "
                                      "(segdash predicts large images in chunks)")


def check_classifier_determinism(obj: Any) -> None:
    """Two estimators built with the same settings and fitted on the same data predict
    identically (set a fixed seed by default)."""
    cls, entry = _split(obj)
    # Overlapping classes: probabilities depend on every random choice a fit makes (on
    # separated clusters, differently seeded models could all predict 0 and 1 alike).
    X, y = _blobs((1, 2, 3), seed=7, spread=4.0)
    X_new = _blobs((1, 2, 3), seed=8, spread=4.0)[0]
    a = np.asarray(entry.build().fit(X, y).predict_proba(X_new))
    b = np.asarray(entry.build().fit(X, y).predict_proba(X_new))
    # Up to summation order: multi-threaded ensembles add their trees' votes in any order.
    if not np.allclose(a, b, rtol=0, atol=_PROBA_ATOL):
        raise _fail(cls.__name__, f"two fits with the same settings and data predict "
                                  f"differently (by up to {np.abs(a - b).max():.3g}); give "
                                  "random_state a fixed default")


def check_classifier_model_roundtrip(obj: Any) -> None:
    """A fitted estimator holds no type outside skops' defaults and ``trusted_types``; a
    model using it saves, loads with the same settings and predicts identically."""
    import skops.io as sio

    cls, entry = _split(obj)
    X, y = _blobs((1, 2), seed=9)
    est = entry.build().fit(X, y)
    untrusted = set(sio.get_untrusted_types(data=sio.dumps(est)))
    missing = sorted(untrusted - set(hook(entry, "trusted_types") or ()))
    if missing:
        raise _fail(cls.__name__, f"a fitted {type(est).__name__} holds types skops does not "
                                  f"trust by default: add {missing} to {cls.__name__}."
                                  "trusted_types (only types that run no code when loaded)")
    settings = settings_of(entry)
    img = texture_image((40, 48, 1), seed=10)
    labels = _labelled(img.shape[:2])
    with _registered(registry.classifiers, cls) as name:
        model = fit(img, labels, features="basic", classifier=name,
                    classifier_params=settings)
        try:
            loaded = model_from_bytes(model.to_bytes())
        except Exception as exc:
            raise _fail(cls.__name__, f"a model with settings {settings} does not save and "
                                      f"load: {type(exc).__name__}: {exc}") from exc
        if not _same_settings(loaded.classifier_params, settings):
            raise _fail(cls.__name__, f"settings changed through a saved model: {settings} "
                                      f"-> {loaded.classifier_params}")
        if not _same_proba(loaded.predict_proba(img), model.predict_proba(img)):
            raise _fail(cls.__name__, "a loaded model predicts differently from the saved one")


def check_classifier(obj: Any) -> None:
    """Run every classifier check on ``obj`` (a class, or an instance whose settings are
    checked).

    Checks, in order: the contract the registry enforces and fresh unfitted estimators;
    fitting and predicting with arbitrary class ids; determinism; trusted types and the
    settings round-trip through a saved model.

    Raises
    ------
    CheckFailed
        The first property that does not hold, with what to change.
    """
    for check in _CLASSIFIER_CHECKS:
        check(obj)


_CLASSIFIER_CHECKS: tuple[Callable[[Any], None], ...] = (
    check_classifier_contract,
    check_classifier_fit_predict,
    check_classifier_determinism,
    check_classifier_model_roundtrip,
)
