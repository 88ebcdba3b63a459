"""Fast inference on feature codes: fitted tree ensembles flattened and walked compiled.

scikit-learn predicts from float64 (boosting) or float32 (forests) features, one tree at a
time. segdash feeds tree ensembles uint8 feature codes (see :mod:`segdash.codes`) and walks
all trees for a few pixels at a time, the trees laid out as complete binary trees so a step
down is arithmetic, not a branch.

Which estimators have a fast path is the table :data:`TREE_READERS`: a reader turns a
fitted estimator into plain node arrays; :func:`register_tree_reader` adds one (a plugin's
gradient boosting library, say). Any other estimator is predicted with its own
``predict_proba`` on the codes, in chunks.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from .parallel import run_parallel

_MAX_COMPLETE_DEPTH = 12
#: Largest complete layout built (bytes of its value table): deeper or wider ensembles use
#: the general layout, whose size follows the real node count.
_MAX_COMPLETE_BYTES = 256 * 2**20

#: Bounds every tree is checked against before any walk (see :func:`validate_tree_arrays`).
MAX_TREE_DEPTH = 512
MAX_TREES = 100_000
MAX_TOTAL_NODES = 20_000_000


class TreeError(ValueError):
    """A tree ensemble whose node arrays are unsafe to walk (out-of-range feature or child,
    a cycle, NaN thresholds or values, too deep or too large)."""


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
    n_features: int = 0  # columns the codes must have (largest feature index + 1)
    #: complete layout: (T,) int64 levels each tree is walked (its own depth, at most
    #: ``depth``); None: every tree ``depth`` levels
    tree_depths: np.ndarray | None = None

    @property
    def complete(self) -> bool:
        return self.left is None


def _int_threshold(thr: np.ndarray) -> np.ndarray:
    # Codes are integers: code <= t  <=>  code <= floor(t); "go right" is code > floor(t).
    return np.clip(np.floor(np.nan_to_num(thr, nan=255.0, posinf=255.0, neginf=-1.0)),
                   -1, 255).astype(np.int16)


@dataclass
class TreeArrays:
    """A fitted ensemble as plain node arrays, what :func:`compile_trees` flattens.

    Attributes
    ----------
    trees : list of tuple
        Per tree ``(feature, threshold, left, right, value)``: node arrays, leaves marked
        by ``left == -1``, ``value`` ``(n_nodes, K)`` added at the leaf a pixel reaches; a
        pixel goes right when its code is greater than ``threshold``.
    link : str
        How the summed values become probabilities: ``"mean"`` (already probabilities),
        ``"logistic"`` or ``"softmax"`` (raw boosting scores, ``baseline`` added first).
    baseline : numpy.ndarray
        ``(K,)`` added before the link.
    n_outputs : int
        Probability columns.
    """

    trees: list
    link: str
    baseline: np.ndarray
    n_outputs: int


def _forest_arrays(est: Any) -> TreeArrays | None:
    if getattr(est, "n_outputs_", 1) != 1:
        return None
    trees = []
    n = len(est.estimators_)
    for e in est.estimators_:
        t = e.tree_
        v = np.asarray(t.value, dtype=np.float64)
        if v.ndim != 3 or v.shape[1] != 1:
            raise TreeError(f"tree values of shape {v.shape}, expected (nodes, 1, classes)")
        v = v[:, 0, :]
        v = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-300) / n
        trees.append((t.feature, t.threshold, t.children_left, t.children_right, v))
    k = len(est.classes_)
    return TreeArrays(trees, "mean", np.zeros(k), k)


def _hist_boosting_arrays(est: Any) -> TreeArrays | None:
    k_trees = int(est.n_trees_per_iteration_)
    n_classes = len(est.classes_)
    if k_trees != (1 if n_classes == 2 else n_classes):
        raise TreeError(f"{k_trees} trees per iteration for {n_classes} classes")
    trees = []
    for iteration in est._predictors:
        if len(iteration) != k_trees:
            raise TreeError(f"an iteration of {len(iteration)} trees, expected {k_trees}")
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
    base = np.ravel(np.asarray(est._baseline_prediction, dtype=np.float64))
    if base.shape != (k_trees,):
        raise TreeError(f"baseline of shape {base.shape}, expected ({k_trees},)")
    link = "logistic" if k_trees == 1 else "softmax"
    return TreeArrays(trees, link, base, n_classes)


#: Fully qualified estimator type name -> (reader, name of the fitted attribute that
#: changes when the estimator is refitted).
TREE_READERS: dict[str, tuple[Callable[[Any], TreeArrays | None], str]] = {
    "sklearn.ensemble._forest.RandomForestClassifier": (_forest_arrays, "estimators_"),
    "sklearn.ensemble._forest.ExtraTreesClassifier": (_forest_arrays, "estimators_"),
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting."
    "HistGradientBoostingClassifier": (_hist_boosting_arrays, "_predictors"),
}


def register_tree_reader(type_name: str, reader: Callable[[Any], TreeArrays | None],
                         fitted_attribute: str) -> None:
    """Give estimators of type ``type_name`` (``"module.Class"``) the compiled walk.

    Parameters
    ----------
    type_name : str
        Fully qualified name of the estimator's class (its subclasses match too).
    reader : callable
        Fitted estimator -> :class:`TreeArrays`, or None when this fit has no fast path.
    fitted_attribute : str
        Attribute that a refit replaces (the compiled trees are cached until it changes).
    """
    TREE_READERS[type_name] = (reader, fitted_attribute)


def _reader_of(est: Any) -> tuple[Callable[[Any], TreeArrays | None], str] | None:
    for cls in type(est).__mro__:  # a subclass of a known ensemble predicts as it does
        found = TREE_READERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if found is not None:
            return found
    return None


def _tree_depth(f, th, left, right, v, k: int, n_features: int | None, where: str) -> int:
    """Check one tree's node arrays (see :func:`validate_tree_arrays`); return its depth."""
    arrays = [np.asarray(a) for a in (f, th, left, right)]
    n = arrays[0].shape[0] if arrays[0].ndim == 1 else -1
    if n < 1 or any(a.ndim != 1 or a.shape[0] != n for a in arrays):
        raise TreeError(f"{where}: node arrays of different or no length")
    f, th, left, right = arrays
    if not all(np.issubdtype(a.dtype, np.integer) for a in (f, left, right)):
        raise TreeError(f"{where}: feature or child indices are not integers")
    v = np.asarray(v)
    if v.shape != (n, k):
        raise TreeError(f"{where}: values of shape {v.shape}, expected ({n}, {k})")
    if not np.all(np.isfinite(v)):
        raise TreeError(f"{where}: values that are not finite numbers")
    internal = left >= 0
    if np.any(~internal & ((left != -1) | (right != -1))):
        i = int(np.argmax(~internal & ((left != -1) | (right != -1))))
        raise TreeError(f"{where}: node {i} has children {int(left[i])}, {int(right[i])} "
                        "(a leaf has -1, -1)")
    nodes = np.flatnonzero(internal)
    li, ri = left[nodes].astype(np.int64), right[nodes].astype(np.int64)
    # Children numbered after their parent (how scikit-learn and its boosting both lay
    # trees out) rules out every cycle, a child pointing back to the root included.
    bad = (li <= nodes) | (ri <= nodes) | (li >= n) | (ri >= n) | (li == ri)
    if bad.any():
        i = nodes[np.argmax(bad)]
        raise TreeError(f"{where}: node {i} has children {int(left[i])}, {int(right[i])} "
                        f"outside {i + 1}..{n - 1} (a cycle or an index out of range)")
    parents = np.bincount(np.concatenate([li, ri]), minlength=n)
    if n > 1 and not np.all(parents[1:] == 1):
        i = 1 + int(np.argmax(parents[1:] != 1))
        raise TreeError(f"{where}: node {i} has {int(parents[i])} parents (not a tree)")
    feat = f[nodes].astype(np.int64)
    limit = n_features if n_features is not None else 65536
    if feat.size and (feat.min() < 0 or feat.max() >= limit):
        i = nodes[np.argmax((feat < 0) | (feat >= limit))]
        raise TreeError(f"{where}: node {i} tests feature {int(f[i])}, outside 0..{limit - 1}"
                        + (" (the model's features)" if n_features is not None else ""))
    thr = np.asarray(th, dtype=np.float64)[nodes]
    if np.isnan(thr).any():  # +-inf are meaningful ("all codes one way"), NaN is not
        raise TreeError(f"{where}: a split threshold is NaN")
    # Depth level by level: each node is visited once (one parent each), so this ends.
    depth, frontier = 0, np.zeros(1, np.int64)
    while True:
        frontier = frontier[internal[frontier]]
        if frontier.size == 0:
            return depth
        depth += 1
        if depth > MAX_TREE_DEPTH:
            raise TreeError(f"{where}: deeper than {MAX_TREE_DEPTH} levels")
        frontier = np.concatenate([left[frontier], right[frontier]]).astype(np.int64)


def validate_tree_arrays(arrays: TreeArrays, n_features: int | None = None) -> int:
    """Check that every tree is safe to walk, before any walk; return the deepest depth.

    Every internal node's feature index lies within ``n_features`` (the model's feature
    count; below 65536 when not given), its children lie in the tree and are numbered after
    it (so no path returns to a node: no cycle), every node but the root has exactly one
    parent, no threshold is NaN, values are finite and of ``(n_nodes, K)``; at most
    :data:`MAX_TREES` trees, :data:`MAX_TOTAL_NODES` nodes, :data:`MAX_TREE_DEPTH` levels.

    Raises
    ------
    TreeError
        The first problem found, naming the tree and node.
    """
    trees = arrays.trees
    if not trees or len(trees) > MAX_TREES:
        raise TreeError(f"{len(trees)} trees (1..{MAX_TREES} allowed)")
    if arrays.link not in ("mean", "logistic", "softmax"):
        raise TreeError(f"unknown link {arrays.link!r}")
    base = np.asarray(arrays.baseline, dtype=np.float64)
    if not np.all(np.isfinite(base)):
        raise TreeError("baseline scores that are not finite numbers")
    total = sum(np.shape(t[0])[0] if np.ndim(t[0]) else 0 for t in trees)
    if total > MAX_TOTAL_NODES:
        raise TreeError(f"{total} nodes in all (at most {MAX_TOTAL_NODES})")
    k = np.shape(trees[0][4])[-1] if np.ndim(trees[0][4]) == 2 else -1
    if k < 1 or base.shape != (k,):
        raise TreeError("tree values and baseline do not agree on the number of outputs")
    return max(_tree_depth(*t, k, n_features, f"tree {i}") for i, t in enumerate(trees))


def read_trees(est: Any, n_features: int | None = None) -> tuple[TreeArrays, int] | None:
    """The validated node arrays of a fitted ensemble with a reader, and their depth.

    Returns None for an estimator without a reader in :data:`TREE_READERS`.

    Raises
    ------
    TreeError
        Trees unsafe to walk (:func:`validate_tree_arrays`), unreadable node arrays, or an
        ensemble of a known type whose trees the reader cannot take (multi-output,
        categorical splits): its own ``predict_proba`` would walk them unchecked.
    """
    reader = _reader_of(est)
    if reader is None:
        return None
    try:
        got = reader[0](est)
    except TreeError:
        raise
    except Exception as exc:  # damaged or foreign node arrays
        raise TreeError(f"unreadable trees ({type(exc).__name__}: {exc})") from exc
    if got is None:
        raise TreeError(f"{type(est).__name__} with trees segdash cannot check "
                        "(several outputs or categorical splits)")
    return got, validate_tree_arrays(got, n_features)


def check_trees(est: Any, n_features: int) -> None:
    """Raise :class:`TreeError` unless ``est``'s trees are safe to walk on ``n_features``
    features (a no-op for estimators without a reader)."""
    read_trees(est, n_features)


def compile_trees(est: Any) -> CompiledTrees | None:
    """Flatten a fitted estimator that has a reader in :data:`TREE_READERS`, or None.

    The trees are validated first (:func:`validate_tree_arrays`, against the estimator's
    ``n_features_in_`` when it has one).

    Raises
    ------
    TreeError
        Trees unsafe to walk.
    """
    n_in = getattr(est, "n_features_in_", None)
    read = read_trees(est, int(n_in) if isinstance(n_in, int | np.integer) else None)
    if read is None:
        return None
    got, d = read
    trees, link, base, n_out = got.trees, got.link, got.baseline, got.n_outputs
    k = trees[0][4].shape[1]
    n_features = 1 + max(int(np.max(np.where(np.asarray(t[2]) >= 0, t[0], 0), initial=0))
                         for t in trees)
    n_int, n_leaf = 2**d - 1, 2**d
    complete_bytes = len(trees) * (n_int + n_leaf) * k * 4
    if d <= _MAX_COMPLETE_DEPTH and complete_bytes <= _MAX_COMPLETE_BYTES:
        fdtype = np.uint8 if n_features <= 256 else np.uint16
        feat = np.zeros((len(trees), max(n_int, 1)), fdtype)
        thr = np.full((len(trees), max(n_int, 1)), 255, np.uint8)  # 255: always left
        val = np.zeros((len(trees), n_int + n_leaf, k), np.float32)
        depths = np.zeros(len(trees), np.int64)
        for ti, (f, th, left, right, v) in enumerate(trees):
            ith = _int_threshold(np.asarray(th, dtype=np.float64))
            # compiled: the Python loop over nodes took 10-25 ms per retraining (16 trees
            # of ~300 nodes), a fifth of an update's prediction
            depths[ti] = _flatten_complete(
                np.asarray(f, np.int64), ith, np.asarray(left, np.int64),
                np.asarray(right, np.int64), np.asarray(v, np.float64),
                feat[ti], thr[ti], val[ti])
        return CompiledTrees(d, feat, thr, val, None, None, None, link,
                             base.astype(np.float32), n_out, n_features, depths)
    sizes = [len(t[0]) for t in trees]
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    feat = np.concatenate([np.where(t[2] < 0, -1, t[0]) for t in trees]).astype(np.int32)
    thr = np.concatenate([_int_threshold(np.asarray(t[1], np.float64)) for t in trees])
    pairs = list(zip(trees, offs, strict=True))
    left = np.concatenate([np.where(t[2] < 0, 0, t[2] + o) for t, o in pairs])
    right = np.concatenate([np.where(t[3] < 0, 0, t[3] + o) for t, o in pairs])
    val = np.concatenate([t[4] for t in trees]).astype(np.float32)
    return CompiledTrees(d, feat, thr, val, left.astype(np.int32), right.astype(np.int32),
                         offs.astype(np.int32), link, base.astype(np.float32), n_out,
                         n_features)




@numba.njit(nogil=True, cache=True)
def _flatten_complete(f, ith, left, right, v, feat, thr, val):  # pragma: no cover - compiled
    """Lay one validated tree out as a complete binary tree of its own depth; return it.

    Node ``p``'s children are ``2p + 1`` (code <= threshold) and ``2p + 2``; tests every
    code passes one way are skipped; leaves above the tree's depth are moved down its
    left-most padding (threshold 255: always left). ``feat``, ``thr``, ``val`` are this
    tree's rows of the ensemble's arrays, padding already in place.
    """
    n = f.shape[0]
    st_n = np.empty(n + 1, np.int64)
    st_p = np.empty(n + 1, np.int64)
    st_d = np.empty(n + 1, np.int64)
    lf_n = np.empty(n, np.int64)
    lf_p = np.empty(n, np.int64)
    lf_d = np.empty(n, np.int64)
    top, n_leaves = 1, 0
    st_n[0] = st_p[0] = st_d[0] = 0
    while top > 0:
        top -= 1
        node, p, dep = st_n[top], st_p[top], st_d[top]
        if left[node] >= 0 and ith[node] >= 255:  # every code goes left: skip the test
            st_n[top], st_p[top], st_d[top] = left[node], p, dep
            top += 1
        elif left[node] >= 0 and ith[node] < 0:  # every code goes right
            st_n[top], st_p[top], st_d[top] = right[node], p, dep
            top += 1
        elif left[node] < 0:
            lf_n[n_leaves], lf_p[n_leaves], lf_d[n_leaves] = node, p, dep
            n_leaves += 1
        else:
            feat[p] = f[node]
            thr[p] = ith[node]
            st_n[top], st_p[top], st_d[top] = left[node], 2 * p + 1, dep + 1
            st_n[top + 1], st_p[top + 1], st_d[top + 1] = right[node], 2 * p + 2, dep + 1
            top += 2
    depth = 0
    for i in range(n_leaves):
        depth = max(depth, lf_d[i])
    for i in range(n_leaves):
        # down the padding: k steps of p -> 2p + 1 give (p + 1) 2^k - 1
        p = (lf_p[i] + 1) * (1 << (depth - lf_d[i])) - 1
        for c in range(val.shape[1]):
            val[p, c] = v[lf_n[i], c]
    return depth


@numba.njit(nogil=True, cache=True)
def _walk_complete(X, feat, thr, val, depths, out, a, b):  # pragma: no cover - compiled
    # Tree by tree over blocks of pixels (one tree's nodes stay in the L1 cache), eight
    # pixels at a time (eight independent walks keep the core busy while loads wait);
    # tree t is walked depths[t] levels.
    # Node numbers are unsigned, so numba skips its negative-index test (1.4x faster).
    n_trees, k = feat.shape[0], val.shape[2]
    one, two = np.uint64(1), np.uint64(2)
    block = 512
    for p0 in range(a, b, block):
        p1 = min(p0 + block, b)
        for t in range(n_trees):
            ft, th, vt = feat[t], thr[t], val[t]
            depth = depths[t]
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
    reader = _reader_of(est)
    fitted = None if reader is None else getattr(est, reader[1], None)
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
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    ct = _compiled_for(est)
    if ct is None:
        # Chunks bound the float32 copy (and the estimator's own temporaries).
        out = np.empty((codes.shape[0], len(est.classes_)), np.float32)
        for start in range(0, codes.shape[0], _FOREIGN_CHUNK):
            part = codes[start:start + _FOREIGN_CHUNK].astype(np.float32)
            out[start:start + _FOREIGN_CHUNK] = est.predict_proba(part)
        return out
    if codes.ndim != 2 or codes.shape[1] < ct.n_features:
        # the walk indexes codes by the trees' feature numbers: never past the row's end
        raise ValueError(f"the trees test {ct.n_features} features; the codes have shape "
                         f"{codes.shape}")
    k = ct.value.shape[-1]
    raw = np.zeros((codes.shape[0], k), np.float32)
    if ct.complete:
        depths = (ct.tree_depths if ct.tree_depths is not None
                  else np.full(ct.feature.shape[0], ct.depth, np.int64))

        def job(a, b):
            _walk_complete(codes, ct.feature, ct.threshold, ct.value, depths, raw, a, b)
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
