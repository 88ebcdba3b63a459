"""Built-in classifiers and the classifier contract.

A classifier entry is a :class:`param.Parameterized` class whose parameters are its
hyper-parameters. ``build()`` returns a fresh, unfitted scikit-learn-compatible estimator
(``fit``, ``predict_proba``, ``classes_``). An entry may list, in ``trusted_types``, the fully
qualified type names its fitted estimator holds that skops does not trust by default; model
files made with it are then loadable without trusting anything else.

An entry may set ``fit_threads`` to cap the OpenMP threads its estimator fits with
(scikit-learn's boosting spins all cores in OpenMP and slows down many times over when
another process wants a core; one thread is steady).

An entry with a ``smoothing`` parameter (a Gaussian sigma, in pixels) has segdash smooth
the class probabilities it predicts over the image (see
:meth:`segdash.core.SegmentationModel.predict_proba_features`).

The built-in ensembles are trained on uint8 feature codes and predicted by a compiled walk
over all their trees (:func:`predict_proba_codes`), several times faster than
scikit-learn's own ``predict_proba`` and without its float64 copy of the features.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import param

from .errors import PluginLoadError


class Classifier(param.Parameterized):
    """Convenience base class for classifier entries."""

    #: Type names (``"module.Class"``) skops must trust to load a fitted estimator.
    trusted_types: tuple[str, ...] = ()
    #: OpenMP threads while fitting (None: the library's default).
    fit_threads: int | None = None

    def build(self) -> Any:
        """A fresh, unfitted scikit-learn-compatible estimator with these settings."""
        raise NotImplementedError


_SMOOTHING_DOC = ("Sigma, in pixels, of a Gaussian applied to the class probabilities "
                  "(0: off): removes isolated misclassified pixels.")


class RandomForest(Classifier):
    """A random forest, sized for interactive retraining on every stroke.

    By default extremely randomised trees (scikit-learn's ``ExtraTreesClassifier``: random
    split thresholds, every tree sees all painted pixels): faster to fit than a classic
    random forest and, on segdash's accuracy benchmark, more accurate from few strokes.
    ``extra_trees=False`` gives scikit-learn's ``RandomForestClassifier``.

    16 trees of depth 10 were chosen on ``benchmarks/accuracy.py`` (3 seeds per scene):
    12 trees of depth 9 predict a third faster but fell below the reference on one scene;
    24 trees were 0.3 points more accurate and predict 1.5 times slower.
    """

    n_estimators = param.Integer(16, bounds=(1, 1000), softbounds=(5, 300),
                                 doc="Number of trees.")
    max_depth = param.Integer(10, bounds=(1, 64), softbounds=(2, 32), allow_None=True,
                              doc="Maximum depth of a tree (None: unlimited; deeper trees "
                                  "predict more slowly).")
    min_samples_leaf = param.Integer(1, bounds=(1, 1000), softbounds=(1, 50),
                                     doc="Fewest training pixels in a leaf.")
    max_features = param.Selector(default="sqrt", objects=["sqrt", "log2", None],
                                  doc="Features tried at each split (None: all).")
    max_samples = param.Number(1.0, bounds=(0.01, 1.0),
                               doc="Fraction of painted pixels each tree is trained on (a "
                                   "bootstrap sample when below 1; always with "
                                   "extra_trees=False).")
    extra_trees = param.Boolean(True, doc="Extremely randomised trees (random thresholds).")
    class_weight = param.Selector(default="balanced", objects=["balanced", None],
                                  doc="'balanced' weights classes by how little they are painted.")
    smoothing = param.Number(2.0, bounds=(0, 32), softbounds=(0, 8), doc=_SMOOTHING_DOC)
    random_state = param.Integer(0, allow_None=True, doc="Seed (None: a new forest each fit).")

    trusted_types = ("sklearn.tree._tree.Tree",)

    def build(self) -> Any:
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

        common = dict(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            class_weight=self.class_weight,
            random_state=self.random_state,
            n_jobs=-1,
        )
        samples = None if self.max_samples >= 1.0 else self.max_samples
        if self.extra_trees:
            return ExtraTreesClassifier(bootstrap=samples is not None, max_samples=samples,
                                        **common)
        return RandomForestClassifier(max_samples=samples, **common)


class GradientBoosting(Classifier):
    """scikit-learn's histogram gradient boosting, with few small trees for interactive use.

    Multiclass boosting grows one tree per class per iteration, so prediction cost grows
    with ``max_iter * n_classes * depth``; the defaults keep prediction on a megapixel
    image within twice the random forest's time.
    """

    max_iter = param.Integer(10, bounds=(1, 2000), softbounds=(5, 300),
                             doc="Boosting iterations (trees per class).")
    learning_rate = param.Number(0.3, bounds=(0.001, 1.0), doc="Shrinkage of each tree.")
    max_leaf_nodes = param.Integer(7, bounds=(2, 255), softbounds=(2, 63),
                                   doc="Leaves per tree.")
    max_depth = param.Integer(None, bounds=(1, 64), allow_None=True,
                              doc="Maximum depth of a tree (None: limited by leaves).")
    min_samples_leaf = param.Integer(5, bounds=(1, 1000), softbounds=(1, 200),
                                     doc="Fewest training pixels in a leaf.")
    l2_regularization = param.Number(0.0, bounds=(0, None), softbounds=(0, 10),
                                     doc="L2 penalty on leaf values.")
    max_features = param.Number(0.3, bounds=(0.01, 1.0),
                                doc="Fraction of features each split may choose from: with few "
                                    "painted pixels, boosting otherwise latches onto one "
                                    "feature that happens to separate them.")
    class_weight = param.Selector(default=None, objects=["balanced", None],
                                  doc="'balanced' weights classes by how little they are painted "
                                      "(makes fitting several times slower).")
    smoothing = param.Number(2.0, bounds=(0, 32), softbounds=(0, 8), doc=_SMOOTHING_DOC)
    random_state = param.Integer(0, allow_None=True, doc="Seed.")

    # On 2 shared cores, a fit took 0.14-0.24 s on one thread and 0.4-9 s on two.
    fit_threads = 1

    trusted_types = (
        "sklearn._loss.link.Interval",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.common.PREDICTOR_RECORD_DTYPE",
    )

    def build(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            max_features=self.max_features,
            class_weight=self.class_weight,
            random_state=self.random_state,
            early_stopping=False,
        )


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
        est = cls().build()
    except Exception as exc:
        raise PluginLoadError(f"{cls.__name__}().build() failed: {exc}") from exc
    missing = [m for m in ("fit", "predict_proba") if not callable(getattr(est, m, None))]
    if missing:
        raise PluginLoadError(
            f"{cls.__name__}().build() returned {type(est).__name__}, which has no "
            f"{', '.join(missing)}"
        )
    return cls


# -- fast inference on feature codes -------------------------------------------------------
#
# scikit-learn predicts from float64 (boosting) or float32 (forests) features, one tree at a
# time. segdash feeds its built-in tree ensembles uint8 feature codes (see
# segdash.features._kernels.Quantizer) and walks all trees for a few pixels at a time, the
# trees laid out as complete binary trees so a step down is arithmetic, not a branch.

#: Trees up to this depth are laid out as complete binary trees (2**depth leaves each).
_MAX_COMPLETE_DEPTH = 12


@dataclass
class CompiledTrees:
    """A fitted tree ensemble flattened for :func:`predict_proba_codes`.

    Every tree adds a ``(K,)`` vector at the leaf a pixel reaches; ``link`` turns the sum
    into probabilities (``"mean"``: already probabilities; ``"logistic"``, ``"softmax"``:
    raw boosting scores, ``baseline`` added first).
    """

    depth: int
    feature: np.ndarray  # complete: (T, 2**depth - 1) uint8/uint16; general: (n_nodes,) int32
    threshold: np.ndarray  # go right when code > threshold (complete: uint8; general: int16)
    value: np.ndarray  # complete: (T, 2**(depth+1) - 1, K), leaves last; general: (n_nodes, K)
    left: np.ndarray | None  # general layout only
    right: np.ndarray | None
    roots: np.ndarray | None
    link: str
    baseline: np.ndarray  # (K,)
    n_outputs: int  # probability columns

    @property
    def complete(self) -> bool:
        return self.left is None


def _int_threshold(thr: np.ndarray) -> np.ndarray:
    # Codes are integers: code <= t  <=>  code <= floor(t); "go right" is code > floor(t).
    return np.clip(np.floor(np.nan_to_num(thr, nan=255.0, posinf=255.0, neginf=-1.0)),
                   -1, 255).astype(np.int16)


def _tree_arrays(est: Any) -> tuple[list, str, np.ndarray, int] | None:
    """(trees, link, baseline, n_outputs); each tree is (feature, threshold, left, right,
    value (n_nodes, K)) with leaves marked by left == -1."""
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )

    if isinstance(est, RandomForestClassifier | ExtraTreesClassifier):
        if getattr(est, "n_outputs_", 1) != 1:
            return None
        trees = []
        n = len(est.estimators_)
        for e in est.estimators_:
            t = e.tree_
            v = np.asarray(t.value[:, 0, :], dtype=np.float64)
            v = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-300) / n
            trees.append((t.feature, t.threshold, t.children_left, t.children_right, v))
        k = len(est.classes_)
        return trees, "mean", np.zeros(k), k
    if isinstance(est, HistGradientBoostingClassifier):
        k_trees = est.n_trees_per_iteration_
        trees = []
        for iteration in est._predictors:
            for cls, pred in enumerate(iteration):
                nodes = pred.nodes
                if np.any(nodes["is_categorical"]):
                    return None
                leaf = nodes["is_leaf"].astype(bool)
                v = np.zeros((len(nodes), k_trees))
                v[:, cls] = nodes["value"]
                left = np.where(leaf, -1, nodes["left"].astype(np.int64))
                right = np.where(leaf, -1, nodes["right"].astype(np.int64))
                trees.append((nodes["feature_idx"], nodes["num_threshold"], left, right, v))
        base = np.ravel(est._baseline_prediction).astype(np.float64)
        link = "logistic" if k_trees == 1 else "softmax"
        return trees, link, base, len(est.classes_)
    return None


def compile_trees(est: Any) -> CompiledTrees | None:
    """Flatten a fitted RandomForest/ExtraTrees/HistGradientBoosting classifier, or None."""
    got = _tree_arrays(est)
    if got is None:
        return None
    trees, link, base, n_out = got
    k = trees[0][4].shape[1]

    def depth_of(left, right):
        depth = np.zeros(len(left), np.int64)
        for n in range(len(left)):  # parents come before children in both libraries
            if left[n] >= 0:
                depth[left[n]] = depth[right[n]] = depth[n] + 1
        return int(depth.max())

    d = max(depth_of(t[2], t[3]) for t in trees)
    n_features = 1 + max(int(np.max(t[0], initial=0)) for t in trees)
    if d <= _MAX_COMPLETE_DEPTH:
        n_int, n_leaf = 2**d - 1, 2**d
        fdtype = np.uint8 if n_features <= 256 else np.uint16
        feat = np.zeros((len(trees), max(n_int, 1)), fdtype)
        thr = np.full((len(trees), max(n_int, 1)), 255, np.uint8)  # 255: always left
        val = np.zeros((len(trees), n_int + n_leaf, k), np.float32)
        for ti, (f, th, left, right, v) in enumerate(trees):
            ith = _int_threshold(np.asarray(th, dtype=np.float64))
            stack = [(0, 0, 0)]
            while stack:
                n, p, dep = stack.pop()
                if left[n] >= 0 and ith[n] >= 255:  # every code goes left: skip the test
                    stack.append((left[n], p, dep))
                    continue
                if left[n] >= 0 and ith[n] < 0:  # every code goes right
                    stack.append((right[n], p, dep))
                    continue
                if left[n] < 0:
                    for _ in range(d - dep):
                        p = 2 * p + 1  # padded nodes always go left
                    val[ti, p] = v[n]
                    continue
                feat[ti, p], thr[ti, p] = f[n], ith[n]
                stack.append((left[n], 2 * p + 1, dep + 1))
                stack.append((right[n], 2 * p + 2, dep + 1))
        return CompiledTrees(d, feat, thr, val, None, None, None, link,
                             base.astype(np.float32), n_out)
    sizes = [len(t[0]) for t in trees]
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    feat = np.concatenate([np.where(t[2] < 0, -1, t[0]) for t in trees]).astype(np.int32)
    thr = np.concatenate([_int_threshold(np.asarray(t[1], np.float64)) for t in trees])
    pairs = list(zip(trees, offs, strict=True))
    left = np.concatenate([np.where(t[2] < 0, 0, t[2] + o) for t, o in pairs])
    right = np.concatenate([np.where(t[3] < 0, 0, t[3] + o) for t, o in pairs])
    val = np.concatenate([t[4] for t in trees]).astype(np.float32)
    return CompiledTrees(d, feat, thr, val, left.astype(np.int32), right.astype(np.int32),
                         offs.astype(np.int32), link, base.astype(np.float32), n_out)


@numba.njit(nogil=True, cache=True)
def _walk_complete(X, feat, thr, val, depth, out, a, b):  # pragma: no cover - compiled
    # Tree by tree over blocks of pixels (one tree's nodes stay in the L1 cache), eight
    # pixels at a time (eight independent walks keep the core busy while loads wait).
    # Node numbers are unsigned, so numba skips its negative-index test (1.4x faster).
    n_trees, k = feat.shape[0], val.shape[2]
    one, two = np.uint64(1), np.uint64(2)
    block = 512
    for p0 in range(a, b, block):
        p1 = min(p0 + block, b)
        for t in range(n_trees):
            ft, th, vt = feat[t], thr[t], val[t]
            p = p0
            while p + 8 <= p1:
                x0, x1, x2, x3 = X[p], X[p + 1], X[p + 2], X[p + 3]
                x4, x5, x6, x7 = X[p + 4], X[p + 5], X[p + 6], X[p + 7]
                n0 = n1 = n2 = n3 = n4 = n5 = n6 = n7 = np.uint64(0)
                for _ in range(depth):
                    n0 = two * n0 + one + np.uint64(x0[ft[n0]] > th[n0])
                    n1 = two * n1 + one + np.uint64(x1[ft[n1]] > th[n1])
                    n2 = two * n2 + one + np.uint64(x2[ft[n2]] > th[n2])
                    n3 = two * n3 + one + np.uint64(x3[ft[n3]] > th[n3])
                    n4 = two * n4 + one + np.uint64(x4[ft[n4]] > th[n4])
                    n5 = two * n5 + one + np.uint64(x5[ft[n5]] > th[n5])
                    n6 = two * n6 + one + np.uint64(x6[ft[n6]] > th[n6])
                    n7 = two * n7 + one + np.uint64(x7[ft[n7]] > th[n7])
                v0, v1, v2, v3 = vt[n0], vt[n1], vt[n2], vt[n3]
                v4, v5, v6, v7 = vt[n4], vt[n5], vt[n6], vt[n7]
                o0, o1, o2, o3 = out[p], out[p + 1], out[p + 2], out[p + 3]
                o4, o5, o6, o7 = out[p + 4], out[p + 5], out[p + 6], out[p + 7]
                for c in range(k):
                    o0[c] += v0[c]
                    o1[c] += v1[c]
                    o2[c] += v2[c]
                    o3[c] += v3[c]
                    o4[c] += v4[c]
                    o5[c] += v5[c]
                    o6[c] += v6[c]
                    o7[c] += v7[c]
                p += 8
            while p < p1:
                x0 = X[p]
                n0 = np.uint64(0)
                for _ in range(depth):
                    n0 = two * n0 + one + np.uint64(x0[ft[n0]] > th[n0])
                v0, o0 = vt[n0], out[p]
                for c in range(k):
                    o0[c] += v0[c]
                p += 1


@numba.njit(nogil=True, cache=True)
def _walk_general(X, feat, thr, left, right, val, roots, out, a, b):  # pragma: no cover
    k = val.shape[1]
    for p in range(a, b):
        x = X[p]
        for t in range(roots.shape[0]):
            n = roots[t]
            while feat[n] >= 0:
                if x[feat[n]] > thr[n]:
                    n = right[n]
                else:
                    n = left[n]
            for c in range(k):
                out[p, c] += val[n, c]


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_for(est: Any) -> CompiledTrees | None:
    fitted = getattr(est, "estimators_", None)
    if fitted is None:
        fitted = getattr(est, "_predictors", None)
    if fitted is None:
        return None
    try:
        cached = _COMPILED.get(est)
    except TypeError:  # not weak-referenceable
        return compile_trees(est)
    if cached is not None and cached[0] is fitted:
        return cached[1]
    compiled = compile_trees(est)
    _COMPILED[est] = (fitted, compiled)
    return compiled


def supports_codes(est: Any) -> bool:
    """Whether :func:`predict_proba_codes` has a fast path for this fitted estimator."""
    return _compiled_for(est) is not None


#: Pixels handed at once to an estimator without a compiled walk (plugins).
_FOREIGN_CHUNK = 262_144


def predict_proba_codes(est: Any, codes: np.ndarray) -> np.ndarray:
    """Class probabilities of ``(N, F)`` uint8 feature codes, ``(N, K)`` float32.

    Uses the compiled walk for the built-in tree ensembles and ``est.predict_proba`` on the
    codes as float32 for any other estimator. Columns follow ``est.classes_``.
    """
    from .features._kernels import run_parallel

    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    ct = _compiled_for(est)
    if ct is None:
        # Chunks bound the float32 copy (and the estimator's own temporaries).
        out = np.empty((codes.shape[0], len(est.classes_)), np.float32)
        for start in range(0, codes.shape[0], _FOREIGN_CHUNK):
            part = codes[start:start + _FOREIGN_CHUNK].astype(np.float32)
            out[start:start + _FOREIGN_CHUNK] = est.predict_proba(part)
        return out
    k = ct.value.shape[-1]
    raw = np.zeros((codes.shape[0], k), np.float32)
    if ct.complete:
        def job(a, b):
            _walk_complete(codes, ct.feature, ct.threshold, ct.value, ct.depth, raw, a, b)
    else:
        def job(a, b):
            _walk_general(codes, ct.feature, ct.threshold, ct.left, ct.right, ct.value,
                          ct.roots, raw, a, b)
    run_parallel(job, codes.shape[0])
    if ct.link == "mean":
        return raw
    raw += ct.baseline
    if ct.link == "logistic":
        p1 = 1.0 / (1.0 + np.exp(-raw[:, 0]))
        return np.stack([1.0 - p1, p1], axis=1).astype(np.float32)
    raw -= raw.max(axis=1, keepdims=True)
    np.exp(raw, out=raw)
    raw /= raw.sum(axis=1, keepdims=True)
    return raw


def warm_up() -> None:
    """Compile (or load from numba's cache) the feature and tree-walk kernels on a tiny
    problem, so that the first real segmentation does not wait for them."""
    from sklearn.ensemble import ExtraTreesClassifier

    from .core import fit

    rng = np.random.default_rng(0)
    for shape in ((24, 24), (24, 24, 3)):
        img = rng.random(shape).astype(np.float32)
        labels = np.zeros(shape[:2], np.uint8)
        labels[2:4] = 1
        labels[20:22] = 2
        for name in ("random_forest", "gradient_boosting"):
            fit(img, labels, feature_params={"sigma_max": 4},
                classifier=name).predict_proba(img)
    X = rng.integers(0, 256, (64, 3)).astype(np.uint8)
    deep = ExtraTreesClassifier(2, random_state=0).fit(X, np.arange(64) % 2)
    if not compile_trees(deep).complete:
        predict_proba_codes(deep, X)
