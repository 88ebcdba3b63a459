"""Training on painted pixels and labelling every pixel: :func:`fit` and
:class:`SegmentationModel`. Pure numpy and scikit-learn; no dashboard imports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import registry
from ._version import __version__
from .classes import ClassInfo, default_class
from .errors import ImageError
from .features import FeatureStack, Quantizer, n_channels, settings_of

#: Training pixels kept per class (a random subset beyond this): painting more keeps
#: retraining fast while adding nothing a forest needs.
MAX_TRAIN_PIXELS_PER_CLASS = 6_000
#: Pixels predicted per call, bounding the classifier's temporary memory.
PREDICT_CHUNK = 262_144


def training_pixels(
    features: np.ndarray, labels: np.ndarray, max_per_class: int = MAX_TRAIN_PIXELS_PER_CLASS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and class ids of the painted pixels.

    Parameters
    ----------
    features : numpy.ndarray
        ``(H, W, F)`` features.
    labels : numpy.ndarray
        ``(H, W)`` integer class ids, 0 = unlabelled.
    max_per_class : int
        At most this many pixels per class, drawn at random (reproducibly) when more are painted.

    Returns
    -------
    X : numpy.ndarray
        ``(N, F)`` float32.
    y : numpy.ndarray
        ``(N,)`` class ids.
    """
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    if max_per_class:
        rng = np.random.default_rng(seed)
        keep = []
        for cls in np.unique(flat[idx]):
            members = idx[flat[idx] == cls]
            if members.size > max_per_class:
                members = np.sort(rng.choice(members, max_per_class, replace=False))
            keep.append(members)
        idx = np.concatenate(keep) if keep else idx
    return features.reshape(-1, features.shape[-1])[idx], flat[idx]


def check_labels(image_shape: Sequence[int], labels: Any) -> np.ndarray:
    """Validate a label mask against an image; return it as an integer array.

    Raises
    ------
    ValueError
        Another shape than the image, not integers, negative ids, or fewer than two classes.
    """
    labels = np.asarray(labels)
    if labels.shape != tuple(image_shape[:2]):
        raise ValueError(
            f"labels have shape {labels.shape} but the image is {tuple(image_shape[:2])} "
            "(height, width): paint the labels on this image"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers (0 = unlabelled), got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be >= 0 (0 = unlabelled, 1..K = classes)")
    if labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
        # bincount: a tenth of np.unique's time on a megapixel mask (every stroke)
        present = np.flatnonzero(np.bincount(labels.ravel())[1:]) + 1
    else:
        present = np.unique(labels)
        present = present[present > 0]
    if present.size < 2:
        raise ValueError(
            f"paint at least two classes to train; painted: "
            f"{', '.join(map(str, present)) or 'nothing'}"
        )
    return labels


class SegmentationModel:
    """A trained pixel classifier with everything needed to reproduce its features.

    Build one with :func:`fit` (or :meth:`train` on precomputed features); save it with
    :meth:`save`, load it with :func:`segdash.load_model`.

    Attributes
    ----------
    estimator : object
        The fitted scikit-learn-compatible estimator.
    features : FeatureStack
        Feature extractors and their settings.
    classifier : str
        Registry name of the classifier entry; ``classifier_params`` its settings.
    n_channels : int
        Channels of the images the model applies to.
    classes : list of ClassInfo
        Id, name and colour of each class, in ``classes_`` order.
    quantizer : Quantizer or None
        How features become the uint8 codes the estimator was trained on (None: it was
        trained on float32 features, as models saved before codes existed).
    """

    def __init__(
        self,
        estimator: Any,
        features: FeatureStack,
        classifier: str,
        classifier_params: Mapping[str, Any],
        n_channels: int,
        classes: Sequence[ClassInfo],
        meta: Mapping[str, Any] | None = None,
        quantizer: Quantizer | None = None,
    ) -> None:
        self.estimator = estimator
        self.quantizer = quantizer
        self.features = features
        self.classifier = classifier
        self.classifier_params = dict(classifier_params)
        self.n_channels = int(n_channels)
        self.classes = list(classes)
        self.meta = dict(meta or {"segdash_version": __version__})

    # -- construction ------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        stack: FeatureStack,
        classifier: str = "random_forest",
        classifier_params: Mapping[str, Any] | None = None,
        n_channels: int = 1,
        classes: Sequence[ClassInfo] | None = None,
        quantizer: Quantizer | None = None,
    ) -> SegmentationModel:
        """Fit on precomputed features (the path the interactive session uses).

        Parameters
        ----------
        features : numpy.ndarray
            ``(H, W, F)`` output of ``stack`` on the image: float32 features, or uint8 codes
            made by ``quantizer`` (see :meth:`FeatureStack.codes`).
        labels : numpy.ndarray
            ``(H, W)`` class ids, 0 = unlabelled; at least two classes painted.
        stack : FeatureStack
            The extractors that made ``features``.
        classifier : str
            Registered classifier name.
        classifier_params : mapping, optional
            Its hyper-parameters.
        n_channels : int
            Channels of the image.
        classes : sequence of ClassInfo, optional
            Names and colours; default names and colours for ids not given.
        quantizer : Quantizer, optional
            With float features, the estimator is trained on their codes; required with
            uint8 codes. None with float features: trained on the features themselves.
        """
        labels = check_labels(features.shape, labels)
        if features.dtype == np.uint8 and quantizer is None:
            raise ValueError("uint8 feature codes need the quantizer that made them")
        entry = registry.classifiers.get(classifier)
        params = dict(classifier_params or {})
        unknown = set(params) - (set(entry.param) - {"name"})
        if unknown:
            raise ValueError(
                f"classifier {classifier!r} has no setting(s) {sorted(unknown)}; its settings "
                f"are {sorted(set(entry.param) - {'name'})}"
            )
        settings = entry(**params)
        X, y = training_pixels(features, labels)
        if quantizer is not None and X.dtype != np.uint8:
            X = quantizer(X)
        estimator = settings.build()
        threads = getattr(settings, "fit_threads", None)
        if threads:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=int(threads), user_api="openmp"):
                estimator.fit(X.astype(np.float32), y)
        else:
            estimator.fit(X.astype(np.float32), y)
        given = {c.id: c for c in classes or ()}
        ids = [int(i) for i in estimator.classes_]
        infos = [given.get(i) or default_class(i) for i in ids]
        return cls(estimator, stack, classifier, settings_of(settings), n_channels, infos,
                   quantizer=quantizer)

    # -- attributes --------------------------------------------------------------------

    @property
    def classes_(self) -> np.ndarray:
        """Class ids, in the order of :meth:`predict_proba`'s last axis."""
        return np.asarray(self.estimator.classes_)

    @property
    def feature_names(self) -> list[str]:
        return self.features.feature_names(self.n_channels)

    @property
    def smoothing(self) -> float:
        """Sigma (pixels) of the Gaussian smoothing of the probabilities: the classifier
        entry's ``smoothing`` setting, 0 when it has none."""
        return float(self.classifier_params.get("smoothing") or 0.0)

    @property
    def halo(self) -> int:
        """Pixels of context on each side a prediction depends on (for tiling)."""
        from .features.basic import gaussian_radius

        smoothing = self.smoothing
        return self.features.halo + (gaussian_radius(smoothing) if smoothing > 0 else 0)

    @property
    def label_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.classes_.max() <= 255 else np.uint16)

    # -- prediction --------------------------------------------------------------------

    def check_image(self, image: Any) -> None:
        """Raise :class:`ImageError` (a ValueError) if ``image`` has another channel count."""
        c = n_channels(image)
        if c != self.n_channels:
            raise ImageError(
                f"this model was trained on images with {self.n_channels} channel(s); the "
                f"image has {c} (shape {tuple(np.shape(image))}): use an image of the same "
                "kind or train a new model"
            )

    def compute_features(self, image: Any) -> np.ndarray:
        """``(H, W, F)`` float32 features of ``image`` as the model sees them."""
        self.check_image(image)
        return self.features(image)

    def compute_codes(self, image: Any) -> np.ndarray:
        """``(H, W, F)`` uint8 feature codes of ``image`` (models with a quantizer)."""
        self.check_image(image)
        if self.quantizer is None:
            raise ValueError("this model was trained on float features, not codes")
        return self.features.codes(image, self.quantizer)[0]

    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities from precomputed ``(H, W, F)`` features, ``(H, W, K)`` float32.

        ``features`` are float32 features, or uint8 codes for a model with a quantizer.
        With a :attr:`smoothing` sigma, each class's probability is then smoothed over the
        image (mirrored at its border), which keeps them summing to one.
        """
        proba = self._predict_proba_features(features)
        if self.smoothing > 0:
            from .features._kernels import smooth_channels

            proba = smooth_channels(proba, self.smoothing)
        return proba

    def _predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        from .classifiers import predict_proba_codes

        h, w, f = features.shape
        flat = features.reshape(-1, f)
        codes = self.quantizer is not None
        if codes and flat.dtype != np.uint8:
            flat = self.quantizer(flat)
        elif not codes and flat.dtype == np.uint8:
            raise ValueError("this model was trained on float features; got uint8 codes")
        if codes:
            return predict_proba_codes(self.estimator, flat).reshape(h, w, -1)
        out = np.empty((flat.shape[0], len(self.classes_)), dtype=np.float32)
        for start in range(0, flat.shape[0], PREDICT_CHUNK):
            stop = start + PREDICT_CHUNK
            out[start:stop] = self.estimator.predict_proba(flat[start:stop])
        return out.reshape(h, w, -1)

    def labels_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """``(H, W)`` class ids of the most probable class in ``(H, W, K)`` probabilities."""
        return self.labels_and_uncertainty(proba)[0]

    def labels_and_uncertainty(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class ids of the most probable class and ``1 - max probability``, in one pass.

        Returns
        -------
        labels : numpy.ndarray
            ``(H, W)`` class ids, :attr:`label_dtype`.
        uncertainty : numpy.ndarray
            ``(H, W)`` float32.
        """
        from .features._kernels import argmax_uncertainty

        index, uncertainty = argmax_uncertainty(proba)
        return self.classes_.astype(self.label_dtype)[index], uncertainty

    def predict_proba(self, image: Any) -> np.ndarray:
        """Per-pixel class probabilities.

        Parameters
        ----------
        image : array_like
            ``(H, W)`` or ``(H, W, C)`` with the model's channel count.

        Returns
        -------
        numpy.ndarray
            ``(H, W, K)`` float32, last axis in :attr:`classes_` order.
        """
        if self.quantizer is not None:
            return self.predict_proba_features(self.compute_codes(image))
        return self.predict_proba_features(self.compute_features(image))

    def predict(self, image: Any) -> np.ndarray:
        """Per-pixel class ids, ``(H, W)`` uint8 (uint16 when an id exceeds 255)."""
        return self.labels_from_proba(self.predict_proba(image))

    # -- persistence -------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the model to ``path`` with skops (no pickle); see :func:`segdash.load_model`."""
        from .persist import save_model

        save_model(self, path)

    def to_bytes(self) -> bytes:
        """The model file's content, as :meth:`save` writes it."""
        from .persist import model_to_bytes

        return model_to_bytes(self)

    def __repr__(self) -> str:
        return (
            f"SegmentationModel(features={self.features.names}, classifier={self.classifier!r}, "
            f"classes={self.classes_.tolist()}, n_channels={self.n_channels})"
        )


def fit(
    image: Any,
    labels: Any,
    features: str | Sequence[str] = "basic",
    classifier: str = "random_forest",
    feature_params: Mapping[str, Any] | None = None,
    classifier_params: Mapping[str, Any] | None = None,
    classes: Sequence[ClassInfo] | None = None,
) -> SegmentationModel:
    """Train a pixel classifier on the painted pixels of one image.

    Parameters
    ----------
    image : array_like
        ``(H, W)`` or ``(H, W, C)``, any integer or float dtype.
    labels : array_like
        ``(H, W)`` integers: 0 = unlabelled, 1..K = classes; at least two classes painted.
    features : str or sequence of str
        Registered feature extractor name(s); several are concatenated.
    classifier : str
        Registered classifier name.
    feature_params : mapping, optional
        Settings of the extractor, or ``{name: settings}`` with several.
    classifier_params : mapping, optional
        Hyper-parameters of the classifier.
    classes : sequence of ClassInfo, optional
        Names and colours stored in the model.

    Returns
    -------
    SegmentationModel

    Raises
    ------
    ValueError
        Labels of another shape than the image, fewer than two classes painted, an unknown
        feature extractor or classifier name (listing the available ones), unknown settings.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ImageError(
            f"an image must be (height, width) or (height, width, channels); got {image.shape}"
        )
    labels = check_labels(image.shape, labels)
    stack = FeatureStack(features, feature_params)
    # Validate the classifier name before the (slow) features.
    registry.classifiers.get(classifier)
    codes, quantizer = stack.codes(image)
    return SegmentationModel.train(
        codes, labels, stack, classifier, classifier_params, n_channels(image), classes,
        quantizer=quantizer,
    )
