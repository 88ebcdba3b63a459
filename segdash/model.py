"""Training on painted pixels and labelling every pixel: :func:`fit`,
:class:`SegmentationModel` and loading model files. Pure numpy and scikit-learn."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import modelfile, parallel, registry
from ._version import __version__
from .classes import ClassInfo, default_class
from .codes import Quantizer, channel_range, sample_grid
from .contract import check_output, hook, image_channels, prepare_image, settings_of
from .errors import ImageError
from .postprocess import labels_and_uncertainty, smooth_probabilities, smoothing_halo
from .stack import FeatureStack
from .treewalk import predict_proba_codes

#: Training pixels kept per class (a random subset beyond this): painting more keeps
#: retraining fast while adding nothing a forest needs. 2 000 instead of 6 000: on the
#: benchmark scenes at 1024² with 30-pixel strokes (4 000-9 000 painted pixels a class)
#: mean accuracy 85.8 % instead of 86.0 % (seed noise is larger), fit 31-54 ms instead of
#: 42-98 ms (docs/performance.md).
MAX_TRAIN_PIXELS_PER_CLASS = 2_000


def painted_rows(codes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and class ids of every painted pixel, in row-major pixel order.

    Parameters
    ----------
    codes : numpy.ndarray
        ``(H, W, F)`` feature codes (or features).
    labels : numpy.ndarray
        ``(H, W)`` integer class ids, 0 = unlabelled.

    Returns
    -------
    X : numpy.ndarray
        ``(N, F)``, of ``codes``' dtype (a copy: ``codes`` can be dropped).
    y : numpy.ndarray
        ``(N,)`` class ids.
    """
    flat = np.asarray(labels).ravel()
    idx = np.flatnonzero(flat)
    return codes.reshape(-1, codes.shape[-1])[idx], flat[idx]


def subsample_index(
    y: np.ndarray, max_per_class: int = MAX_TRAIN_PIXELS_PER_CLASS, seed: int = 0,
) -> np.ndarray | None:
    """Positions of at most ``max_per_class`` entries of each class, drawn at random
    (reproducibly), in increasing order: the rows :func:`subsample_rows` keeps.

    Parameters
    ----------
    y : numpy.ndarray
        ``(N,)`` class ids.

    Returns
    -------
    numpy.ndarray or None
        ``(M,)`` int64 positions into ``y``; None when every entry is kept.
    """
    if not max_per_class:
        return None
    rng = np.random.default_rng(seed)
    pos = np.arange(y.size)
    keep = []
    dropped = False
    for cls in np.unique(y):
        members = pos[y == cls]
        if members.size > max_per_class:
            members = np.sort(rng.choice(members, max_per_class, replace=False))
            dropped = True
        keep.append(members)
    if not dropped:
        return None
    # in the rows' own order whether or not a class was thinned (classes grouped, the
    # forest's trees came out otherwise when a stroke crossed the cap)
    return np.sort(np.concatenate(keep))


def subsample_rows(
    X: np.ndarray, y: np.ndarray, max_per_class: int = MAX_TRAIN_PIXELS_PER_CLASS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_per_class`` rows per class, drawn at random (reproducibly), in order.

    Parameters
    ----------
    X : numpy.ndarray
        ``(N, F)`` feature rows.
    y : numpy.ndarray
        ``(N,)`` class ids.

    Returns
    -------
    X, y : numpy.ndarray
        The kept rows (:func:`subsample_index`), in their original order; ``X`` and ``y``
        themselves when every row is kept.
    """
    idx = subsample_index(y, max_per_class, seed)
    if idx is None:
        return X, y
    return X[idx], y[idx]


def training_pixels(
    codes: np.ndarray, labels: np.ndarray, max_per_class: int = MAX_TRAIN_PIXELS_PER_CLASS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and class ids of the painted pixels, at most ``max_per_class`` per
    class: ``subsample_rows(*painted_rows(codes, labels))``, gathering only the kept rows.

    Returns
    -------
    X : numpy.ndarray
        ``(N, F)``, of ``codes``' dtype (a copy).
    y : numpy.ndarray
        ``(N,)`` class ids.
    """
    flat = np.asarray(labels).ravel()
    pos = np.flatnonzero(flat)
    y = flat[pos]
    keep = subsample_index(y, max_per_class, seed)
    if keep is not None:
        # the kept pixels' positions first: only those rows are copied out of the codes
        pos, y = pos[keep], y[keep]
    return codes.reshape(-1, codes.shape[-1])[pos], y


def _forest_parts(estimator: Any) -> int:
    """How many parts :func:`fit_estimator` fits ``estimator`` in (1: a plain fit)."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    # exact classes only: a subclass may fit otherwise
    if type(estimator) not in (ExtraTreesClassifier, RandomForestClassifier):
        return 1
    p = estimator.get_params(deep=False)
    seed, n_jobs, n = p["random_state"], p["n_jobs"], p["n_estimators"]
    # an int seed only: a RandomState object or None draws differently on each fit
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        return 1
    if p["warm_start"] or p["oob_score"] or not isinstance(n, int | np.integer):
        return 1
    if n_jobs is None or n_jobs == 0 or not isinstance(n_jobs, int | np.integer):
        return 1  # None: sklearn fits on one thread (outside a joblib context)
    cap = parallel.n_threads() if n_jobs < 0 else min(int(n_jobs), parallel.n_threads())
    return max(1, min(cap, int(n)))


def fit_estimator(estimator: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """``estimator.fit(X, y)``, a scikit-learn forest fitted in one part per core.

    An ``ExtraTreesClassifier`` or ``RandomForestClassifier`` with an int ``random_state``
    and ``n_jobs`` other than 1 is fitted as :func:`~segdash.parallel.n_threads` clones
    with their share of the trees and ``n_jobs=1``, on threads (scikit-learn's tree
    building releases the GIL); their trees are then joined into ``estimator``. Every
    tree is the one ``estimator.fit`` grows: scikit-learn draws each tree's seed in turn
    from ``RandomState(random_state)`` and a tree (its bootstrap sample included) depends
    only on its seed, so part ``k`` starts from that RandomState advanced past the seeds
    of the trees before it. Any other estimator, or a forest with ``warm_start``,
    ``oob_score``, another seed, one tree or one thread, gets a plain ``fit``.

    Why: scikit-learn's own ``n_jobs=-1`` runs the trees through joblib, whose dispatch
    of short jobs waits in ~10 ms sleeps; on segdash's small fits (at most 2 000 rows a
    class, 16 trees) that was most of the fit (1024² RGB: 42 -> 32 ms, 2 cores).

    Parameters
    ----------
    estimator : object
        A scikit-learn-compatible estimator, not fitted.
    X : numpy.ndarray
        ``(N, F)`` training rows (float32 for a forest: no copy per part).
    y : numpy.ndarray
        ``(N,)`` class ids.

    Returns
    -------
    object
        ``estimator``, fitted.
    """
    n_parts = _forest_parts(estimator)
    if n_parts < 2:
        return estimator.fit(X, y)
    import sklearn
    from sklearn.base import clone

    params = estimator.get_params(deep=False)
    total, seed = int(params["n_estimators"]), int(params["random_state"])
    shares = [total // n_parts + (k < total % n_parts) for k in range(n_parts)]
    parts, done = [], 0
    for k, share in enumerate(shares):
        part = estimator if k == 0 else clone(estimator)
        rng = np.random.RandomState(seed)
        # past the seeds of the trees before this part: one draw per tree, as
        # sklearn's `_set_random_states` draws them
        for _ in range(done):
            rng.randint(np.iinfo(np.int32).max)
        part.set_params(n_estimators=share, n_jobs=1, random_state=rng)
        parts.append(part)
        done += share
    config = sklearn.get_config()  # thread-local: the tasks' threads get the caller's

    def fit_part(part: Any) -> Any:
        with sklearn.config_context(**config):
            return part.fit(X, y)

    try:
        parallel.run_tasks([lambda part=part: fit_part(part) for part in parts])
    finally:
        estimator.set_params(n_estimators=total, n_jobs=params["n_jobs"],
                             random_state=params["random_state"])
    for part in parts[1:]:
        estimator.estimators_.extend(part.estimators_)
    return estimator


def keep_split_size(estimator: Any, n_features: int) -> None:
    """Before fitting on repeated columns: make a scikit-learn tree or forest try as many
    features at each split as it would on the ``n_features`` columns (``max_features``
    given as a count), so that repeats change which features a split tries, not how many
    (nor the fit's cost: 4 000 x 97 codes, 16 trees, 38-40 ms of CPU alone, 43-44 ms with
    the built-in repeats, 57-59 ms letting the 182 repeated columns set the count).
    ``max_features=None`` (every feature), counts and other estimators are left as they
    are."""
    from sklearn.ensemble._forest import BaseForest
    from sklearn.tree import BaseDecisionTree

    if not isinstance(estimator, BaseForest | BaseDecisionTree):
        return
    rule = estimator.max_features
    if rule == "sqrt":
        count = int(np.sqrt(n_features))
    elif rule == "log2":
        count = int(np.log2(n_features))
    elif isinstance(rule, float):
        count = int(rule * n_features)
    else:
        return
    estimator.set_params(max_features=max(1, count))


def fold_repeated_features(estimator: Any, columns: np.ndarray, n_features: int) -> None:
    """Make a tree or forest fitted on ``X[:, columns]`` one that reads the ``n_features``
    columns of ``X`` (in place): each split's feature becomes ``columns[feature]``.

    Parameters
    ----------
    estimator : scikit-learn tree or forest
        Fitted on the repeated columns (an object with ``tree_``, or ``estimators_`` of
        such: random forests, extremely randomised trees).
    columns : numpy.ndarray
        ``(F',)`` intp: the feature of ``X`` behind each column the estimator saw.
    n_features : int
        F, the features of ``X``.

    Raises
    ------
    TypeError
        Not a scikit-learn tree or forest: repeated features cannot be mapped back.
    """
    from sklearn.tree._tree import Tree

    trees = [estimator] if hasattr(estimator, "tree_") else getattr(estimator, "estimators_",
                                                                   None)
    if not trees or not all(isinstance(getattr(t, "tree_", None), Tree) for t in trees):
        raise TypeError(f"feature_repeats needs a scikit-learn tree or forest, not "
                        f"{type(estimator).__name__}")
    for t in trees:
        old = t.tree_
        state = old.__getstate__()
        nodes = state["nodes"].copy()
        split = nodes["feature"] >= 0  # leaves hold -2
        nodes["feature"][split] = columns[nodes["feature"][split]]
        tree = Tree(n_features, np.asarray(old.n_classes, np.intp), old.n_outputs)
        tree.__setstate__({**state, "nodes": nodes})
        t.tree_ = tree
        t.n_features_in_ = n_features
    estimator.n_features_in_ = n_features


def check_classes(y: np.ndarray) -> None:
    """Raise ValueError unless the class ids ``y`` hold at least two classes."""
    present = np.unique(y)
    present = present[present > 0]
    if present.size < 2:
        raise ValueError(
            f"paint at least two classes to train; painted: "
            f"{', '.join(map(str, present)) or 'nothing'}"
        )


def pooled_range(
    ranges: Sequence[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """One channel range covering several images' :func:`~segdash.codes.channel_range`.

    Parameters
    ----------
    ranges : sequence of (low, span)
        ``(C,)`` arrays each, one pair per image or frame, all with the same C.

    Returns
    -------
    low, span : numpy.ndarray
        ``(C,)`` float64: the lowest low and the highest ``low + span``.
    """
    if not ranges:
        raise ValueError("no image to take channel ranges from")
    lows = np.array([np.asarray(lo, np.float64) for lo, _ in ranges])
    highs = np.array([np.asarray(lo, np.float64) + np.asarray(sp, np.float64)
                      for lo, sp in ranges])
    if lows.ndim != 2 or len({lo.shape for lo in lows}) != 1:
        raise ValueError("images with different channel counts cannot share a model")
    low, high = lows.min(axis=0), highs.max(axis=0)
    return low, np.where(high > low, high - low, 1.0)


def shared_quantizer(
    stack: FeatureStack, low: np.ndarray, span: np.ndarray, reference: Any = None,
) -> Quantizer:
    """The quantizer of a model trained on several images: the same codes on all of them.

    Each extractor's ``quantizer(channel_low, channel_span)`` hook gets the pooled channel
    range (:func:`pooled_range`); an extractor without one is coded linearly over the range
    of its features on ``reference`` (the first image), as for a single image.

    Parameters
    ----------
    stack : FeatureStack
    low, span : numpy.ndarray
        ``(C,)`` pooled channel range, in the images' units.
    reference : array_like or callable, optional
        ``(H, W[, C])`` image, or a function returning it (called only when needed); needed
        only by extractors without a quantizer hook.
    """
    img = None
    parts = []
    n_ch = int(np.size(low))
    for name, ext in stack.extractors:
        q = hook(ext, "quantizer")(low, span)
        if q is None:
            if reference is None:
                raise ValueError(f"feature extractor {name!r} needs a reference image")
            if img is None:
                img = prepare_image(reference() if callable(reference) else reference)
            feats = check_output(name, ext, img)
            size = len(ext.feature_names(n_ch))
            q = Quantizer.from_sample(sample_grid(feats).reshape(-1, size))
            del feats
        parts.append(q)
    return Quantizer.concatenate(parts)


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
    if labels.size and labels.dtype.kind == "i" and labels.min() < 0:
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
    downsample : int
        Working resolution the model was trained at: it sees images downsampled by this
        factor (:meth:`segdash.io.pyramid.Pyramid.at`; 1: full resolution).
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
        downsample: int = 1,
    ) -> None:
        self.estimator = estimator
        self.stack = stack
        self.classifier = classifier
        self.classifier_params = dict(classifier_params)
        self.n_channels = int(n_channels)
        self.classes = list(classes)
        self.quantizer = quantizer
        self.meta = dict(meta or {"segdash_version": __version__})
        self.downsample = int(downsample)
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
        # only the rows train_rows keeps (it subsamples the same way: no class has more
        # left, so nothing more is dropped)
        X, y = training_pixels(codes, labels)
        return cls.train_rows(X, y, stack, quantizer, classifier, classifier_params,
                              n_channels, classes)

    @classmethod
    def train_rows(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        stack: FeatureStack,
        quantizer: Quantizer,
        classifier: str = "random_forest",
        classifier_params: Mapping[str, Any] | None = None,
        n_channels: int = 1,
        classes: Sequence[ClassInfo] | None = None,
    ) -> SegmentationModel:
        """Fit on the feature codes of painted pixels, from one image or several.

        Parameters
        ----------
        X : numpy.ndarray
            ``(N, F)`` uint8 codes of painted pixels (:func:`painted_rows`, concatenated
            over images in their order); at most :data:`MAX_TRAIN_PIXELS_PER_CLASS` per
            class are used (:func:`subsample_rows`).
        y : numpy.ndarray
            ``(N,)`` their class ids; at least two classes.
        stack, quantizer, classifier, classifier_params, n_channels, classes
            As for :meth:`train`.
        """
        if X.dtype != np.uint8:
            raise ValueError(f"train takes uint8 feature codes, got {X.dtype}")
        check_classes(y)
        entry = registry.classifiers.get(classifier)
        params = dict(classifier_params or {})
        unknown = set(params) - (set(entry.param) - {"name"})
        if unknown:
            raise ValueError(
                f"classifier {classifier!r} has no setting(s) {sorted(unknown)}; its settings "
                f"are {sorted(set(entry.param) - {'name'})}"
            )
        settings = entry(**params)
        X, y = subsample_rows(X, y)
        estimator = settings.build()
        n_features = X.shape[1]
        repeats = hook(settings, "feature_repeats")(
            [s for _, _, s in stack.feature_groups(n_channels)])
        columns = None
        if repeats is not None:
            counts = np.asarray(repeats, np.intp)
            if counts.shape != (n_features,) or np.any(counts < 0) or not counts.any():
                raise ValueError(f"classifier {classifier!r}: feature_repeats gives "
                                 f"{counts.size} counts for {n_features} features (each "
                                 "0 or more, not all 0)")
            columns = np.repeat(np.arange(n_features), counts)
            X = X[:, columns]
            keep_split_size(estimator, n_features)
        threads = hook(settings, "fit_threads")
        if threads:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=int(threads), user_api="openmp"):
                fit_estimator(estimator, X.astype(np.float32), y)
        else:
            fit_estimator(estimator, X.astype(np.float32), y)
        if columns is not None:
            fold_repeated_features(estimator, columns, n_features)
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

    def predict_proba_preview(self, codes: np.ndarray, stride: int) -> np.ndarray:
        """Class probabilities at every ``stride``-th pixel of ``(H, W, F)`` uint8 codes,
        ``(ceil(H / stride), ceil(W / stride), K)`` float32: a preview costing
        ``1 / stride²`` of :meth:`predict_proba_codes`.

        Equal to it at those pixels before smoothing; smoothed by :attr:`smoothing` /
        ``stride`` on the coarse grid (the same width in image pixels), so an approximation
        of the smoothed result.
        """
        if codes.dtype != np.uint8:
            raise ValueError(f"predict_proba_preview takes uint8 feature codes, got {codes.dtype}")
        sub = np.ascontiguousarray(codes[::stride, ::stride])
        h, w, f = sub.shape
        proba = predict_proba_codes(self.estimator, sub.reshape(-1, f)).reshape(h, w, -1)
        return smooth_probabilities(proba, self.smoothing / stride)

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
                                  self.quantizer, self.downsample)

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
    """Train a pixel classifier on the painted pixels of one image, or of several.

    Parameters
    ----------
    image : array_like or list of array_like
        ``(H, W)`` or ``(H, W, C)``, any integer or float dtype; or a list of such images
        (sizes may differ, channel counts may not): one model is trained on the painted
        pixels of all of them. A stack is passed as the list of its frames.
    labels : array_like or list of array_like
        ``(H, W)`` integers: 0 = unlabelled, 1..K = classes; with a list of images, a list
        of label images, one per image (an image without strokes is all 0). At least two
        classes painted in all.
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

    Notes
    -----
    With several images, the features of all of them are coded with one quantizer, made
    from the channel range pooled over every image (:func:`pooled_range`,
    :func:`shared_quantizer`); only one image's features are in memory at a time, and only
    the codes of its painted pixels are kept.

    Raises
    ------
    ValueError
        Labels of another shape than their image, as many label images as images not
        given, images of different channel counts, fewer than two classes painted, an
        unknown feature extractor or classifier name (listing the available ones), unknown
        settings.
    """
    if isinstance(image, list | tuple):
        return fit_many(image, labels, features, classifier, feature_params,
                        classifier_params, classes)
    image = np.asarray(image)
    channels = image_channels(image)
    labels = check_labels(image.shape, labels)
    stack = FeatureStack(features, feature_params)
    # Validate the classifier name before the (slow) features.
    registry.classifiers.get(classifier)
    codes, quantizer = stack.codes(image)
    return SegmentationModel.train(codes, labels, stack, quantizer, classifier,
                                   classifier_params, channels, classes)


def fit_many(
    images: Sequence[Any],
    labels: Sequence[Any],
    features: str | Sequence[str] = "basic",
    classifier: str = "random_forest",
    feature_params: Mapping[str, Any] | None = None,
    classifier_params: Mapping[str, Any] | None = None,
    classes: Sequence[ClassInfo] | None = None,
) -> SegmentationModel:
    """:func:`fit` on several images (see there)."""
    images = [np.asarray(im) for im in images]
    if not isinstance(labels, list | tuple) or len(labels) != len(images):
        raise ValueError(
            f"give one label image per image: {len(images)} image(s), "
            f"{len(labels) if isinstance(labels, list | tuple) else 'not a list of'} label "
            "image(s)"
        )
    if not images:
        raise ValueError("give at least one image")
    channels = {image_channels(im) for im in images}
    if len(channels) > 1:
        raise ImageError(
            f"the images have different channel counts ({sorted(channels)}): one model "
            "needs images of one kind"
        )
    masks = []
    for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
        lab = np.asarray(lab)
        if lab.shape != im.shape[:2] or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(
                f"label image {i} has shape {lab.shape} and dtype {lab.dtype}; image {i} is "
                f"{im.shape[:2]} (height, width): give integer labels of its size"
            )
        if lab.size and lab.min() < 0:
            raise ValueError(f"label image {i}: labels must be >= 0 (0 = unlabelled)")
        masks.append(lab)
    stack = FeatureStack(features, feature_params)
    registry.classifiers.get(classifier)
    low, span = pooled_range([channel_range(prepare_image(im)) for im in images])
    quantizer = shared_quantizer(stack, low, span, images[0])
    Xs, ys = [], []
    for im, lab in zip(images, masks, strict=True):
        if not lab.any():
            continue  # no strokes: its features are not needed
        codes = stack.codes(im, quantizer)[0]
        X, y = painted_rows(codes, lab)
        del codes
        Xs.append(X)
        ys.append(y)
    if not Xs:
        check_classes(np.zeros(0, np.int64))
    return SegmentationModel.train_rows(np.concatenate(Xs), np.concatenate(ys), stack,
                                        quantizer, classifier, classifier_params,
                                        channels.pop(), classes)
