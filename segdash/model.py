"""Training on painted pixels and labelling every pixel: :func:`fit`,
:class:`SegmentationModel` and loading model files. Pure numpy and scikit-learn."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import modelfile, registry
from ._version import __version__
from .classes import ClassInfo, default_class
from .codes import Quantizer
from .contract import hook, image_channels, settings_of
from .errors import ImageError
from .postprocess import labels_and_uncertainty, smooth_probabilities, smoothing_halo
from .stack import FeatureStack
from .treewalk import predict_proba_codes

#: Training pixels kept per class (a random subset beyond this): painting more keeps
#: retraining fast while adding nothing a forest needs.
MAX_TRAIN_PIXELS_PER_CLASS = 6_000


def training_pixels(
    codes: np.ndarray, labels: np.ndarray, max_per_class: int = MAX_TRAIN_PIXELS_PER_CLASS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and class ids of the painted pixels.

    Parameters
    ----------
    codes : numpy.ndarray
        ``(H, W, F)`` feature codes (or features).
    labels : numpy.ndarray
        ``(H, W)`` integer class ids, 0 = unlabelled.
    max_per_class : int
        At most this many pixels per class, drawn at random (reproducibly) when more are painted.

    Returns
    -------
    X : numpy.ndarray
        ``(N, F)``, of ``codes``' dtype.
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
    return codes.reshape(-1, codes.shape[-1])[idx], flat[idx]


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

    Build one with :func:`fit` (or :meth:`train` on precomputed feature codes); save it with
    :meth:`save`, load it with :func:`load_model`.

    Attributes
    ----------
    estimator : object
        The fitted scikit-learn-compatible estimator, trained on feature codes.
    stack : FeatureStack
        Feature extractors and their settings.
    classifier : str
        Registry name of the classifier entry; ``classifier_params`` its settings.
    n_channels : int
        Channels of the images the model applies to.
    classes : list of ClassInfo
        Id, name and colour of each class, in ``classes_`` order.
    quantizer : Quantizer
        How features become the uint8 codes the estimator was trained on.
    """

    def __init__(
        self,
        estimator: Any,
        stack: FeatureStack,
        classifier: str,
        classifier_params: Mapping[str, Any],
        n_channels: int,
        classes: Sequence[ClassInfo],
        quantizer: Quantizer,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.estimator = estimator
        self.stack = stack
        self.classifier = classifier
        self.classifier_params = dict(classifier_params)
        self.n_channels = int(n_channels)
        self.classes = list(classes)
        self.quantizer = quantizer
        self.meta = dict(meta or {"segdash_version": __version__})
        self._smoothing: float | None = None

    # -- construction ------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        codes: np.ndarray,
        labels: np.ndarray,
        stack: FeatureStack,
        quantizer: Quantizer,
        classifier: str = "random_forest",
        classifier_params: Mapping[str, Any] | None = None,
        n_channels: int = 1,
        classes: Sequence[ClassInfo] | None = None,
    ) -> SegmentationModel:
        """Fit on precomputed feature codes (the path the interactive session uses).

        Parameters
        ----------
        codes : numpy.ndarray
            ``(H, W, F)`` uint8 codes of the image, ``stack.codes(image)``.
        labels : numpy.ndarray
            ``(H, W)`` class ids, 0 = unlabelled; at least two classes painted.
        stack : FeatureStack
            The extractors that made the codes.
        quantizer : Quantizer
            The quantizer that made them.
        classifier : str
            Registered classifier name.
        classifier_params : mapping, optional
            Its hyper-parameters.
        n_channels : int
            Channels of the image.
        classes : sequence of ClassInfo, optional
            Names and colours; default names and colours for ids not given.
        """
        labels = check_labels(codes.shape, labels)
        if codes.dtype != np.uint8:
            raise ValueError(f"train takes uint8 feature codes, got {codes.dtype}")
        entry = registry.classifiers.get(classifier)
        params = dict(classifier_params or {})
        unknown = set(params) - (set(entry.param) - {"name"})
        if unknown:
            raise ValueError(
                f"classifier {classifier!r} has no setting(s) {sorted(unknown)}; its settings "
                f"are {sorted(set(entry.param) - {'name'})}"
            )
        settings = entry(**params)
        X, y = training_pixels(codes, labels)
        estimator = settings.build()
        threads = hook(settings, "fit_threads")
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
                   quantizer)

    # -- attributes --------------------------------------------------------------------

    @property
    def classes_(self) -> np.ndarray:
        """Class ids, in the order of :meth:`predict_proba`'s last axis."""
        return np.asarray(self.estimator.classes_)

    @property
    def feature_names(self) -> list[str]:
        return self.stack.feature_names(self.n_channels)

    @property
    def smoothing(self) -> float:
        """Sigma (pixels) of the Gaussian smoothing of the probabilities: the classifier
        entry's ``smoothing`` hook with the model's settings."""
        if self._smoothing is None:
            settings = registry.classifiers.get(self.classifier)(**self.classifier_params)
            self._smoothing = float(hook(settings, "smoothing") or 0.0)
        return self._smoothing

    @property
    def halo(self) -> int:
        """Pixels of context on each side a prediction depends on (for tiling)."""
        return self.stack.halo + smoothing_halo(self.smoothing)

    @property
    def label_dtype(self) -> np.dtype:
        """uint8 when every class id fits, else uint16."""
        return np.dtype(np.uint8 if self.classes_.max() <= 255 else np.uint16)

    @property
    def code_bytes(self) -> int:
        """Bytes per feature and pixel a prediction needs at its peak (for tile sizes)."""
        return self.stack.code_bytes

    # -- prediction --------------------------------------------------------------------

    def check_image(self, image: Any) -> None:
        """Raise :class:`ImageError` (a ValueError) unless ``image`` is an image with the
        model's channel count."""
        c = image_channels(image)
        if c != self.n_channels:
            raise ImageError(
                f"this model was trained on images with {self.n_channels} channel(s); the "
                f"image has {c} (shape {tuple(np.shape(image))}): use an image of the same "
                "kind or train a new model"
            )

    def feature_codes(self, image: Any) -> np.ndarray:
        """``(H, W, F)`` uint8 feature codes of ``image`` as the model sees them."""
        self.check_image(image)
        return self.stack.codes(image, self.quantizer)[0]

    def predict_proba_codes(self, codes: np.ndarray) -> np.ndarray:
        """Class probabilities from precomputed ``(H, W, F)`` uint8 codes, ``(H, W, K)``
        float32.

        With a :attr:`smoothing` sigma, each class's probability is then smoothed over the
        image (mirrored at its border), which keeps them summing to one.
        """
        if codes.dtype != np.uint8:
            raise ValueError(f"predict_proba_codes takes uint8 feature codes, got {codes.dtype}")
        h, w, f = codes.shape
        proba = predict_proba_codes(self.estimator, codes.reshape(-1, f)).reshape(h, w, -1)
        return smooth_probabilities(proba, self.smoothing)

    def labels_and_uncertainty(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class ids of the most probable class and ``1 - max probability``, in one pass.

        Returns
        -------
        labels : numpy.ndarray
            ``(H, W)`` class ids, :attr:`label_dtype`.
        uncertainty : numpy.ndarray
            ``(H, W)`` float32.
        """
        return labels_and_uncertainty(proba, self.classes_.astype(self.label_dtype))

    def labels_from_proba(self, proba: np.ndarray) -> np.ndarray:
        """``(H, W)`` class ids of the most probable class in ``(H, W, K)`` probabilities."""
        return self.labels_and_uncertainty(proba)[0]

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
        return self.predict_proba_codes(self.feature_codes(image))

    def predict(self, image: Any) -> np.ndarray:
        """Per-pixel class ids, ``(H, W)`` uint8 (uint16 when an id exceeds 255)."""
        return self.labels_from_proba(self.predict_proba(image))

    def single_threaded(self) -> SegmentationModel:
        """This model with a single-threaded estimator, for callers that already run one
        task per core (tiles): an estimator spreading every prediction over all cores
        (``n_jobs=-1``) would oversubscribe them. Shallow: the fitted trees are shared."""
        est = self.estimator
        if getattr(est, "n_jobs", 1) in (1, None):
            return self
        est = copy.copy(est)
        est.n_jobs = 1
        out = copy.copy(self)
        out.estimator = est
        return out

    # -- model files -------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """The dictionary the model file holds (see :func:`segdash.modelfile.document`)."""
        return modelfile.document(self.estimator, self.stack, self.classifier,
                                  self.classifier_params, self.n_channels, self.classes,
                                  self.quantizer)

    def to_bytes(self) -> bytes:
        """The model file's content, as :meth:`save` writes it."""
        return modelfile.dumps(self.document())

    def save(self, path: str | Path) -> None:
        """Write the model to ``path`` with skops (no pickle); see :func:`load_model`."""
        Path(path).write_bytes(self.to_bytes())

    def __repr__(self) -> str:
        return (
            f"SegmentationModel(features={self.stack.names}, classifier={self.classifier!r}, "
            f"classes={self.classes_.tolist()}, n_channels={self.n_channels})"
        )


def model_from_bytes(data: bytes) -> SegmentationModel:
    """Load a model from the bytes of a model file, executing nothing in it.

    The file is bounded and checked first in a short-lived child process with memory and
    time limits (:func:`segdash.modelfile.loads`, docs/security.md), so a file that crashes
    a native parser ends that child, not this process.

    Raises
    ------
    ModelFileError
        Not a skops archive (pickle/joblib included), damaged, over a limit, holding
        untrusted types or unsafe trees, not a segdash model, or fatal to the checking
        child; MissingPluginError when it needs a plugin not installed.
    """
    return SegmentationModel(**modelfile.loads(data))


def load_model(path: str | Path) -> SegmentationModel:
    """Load a model file written by :meth:`SegmentationModel.save`.

    Parameters
    ----------
    path : str or Path
        A ``.skops`` model file.

    Returns
    -------
    SegmentationModel

    Raises
    ------
    ModelFileError
        Refused or damaged file (checked as :func:`model_from_bytes` does);
        MissingPluginError when a plugin the model needs is not installed.
    """
    return SegmentationModel(**modelfile.read(path))


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
    channels = image_channels(image)
    labels = check_labels(image.shape, labels)
    stack = FeatureStack(features, feature_params)
    # Validate the classifier name before the (slow) features.
    registry.classifiers.get(classifier)
    codes, quantizer = stack.codes(image)
    return SegmentationModel.train(codes, labels, stack, quantizer, classifier,
                                   classifier_params, channels, classes)
