"""Which features a trained model relies on: importance by family and by scale, and the
feature settings that keep only the families and scales that matter.

Each feature belongs to a *cell*: its extractor, its family and its scale (the
extractor's ``feature_groups`` hook, :mod:`segdash.contract`). A model's importance is
given per cell as a share of the total, then summed by family or by scale for the
dashboard's bar chart. Two ways to measure it:

- **impurity**: the estimator's ``feature_importances_`` (scikit-learn's forests: the
  decrease of Gini impurity of the splits on each feature), summed per cell. Free: read
  from the fitted trees.
- **permutation**: for estimators without ``feature_importances_`` (scikit-learn's
  histogram gradient boosting, plugins), the drop of the score of the painted
  pixels' true classes (mean log-probability, each class weighted alike) when the codes
  of one cell's features are shuffled together across pixels,
  predicted by the compiled tree walk (:func:`segdash.treewalk.predict_proba_codes`).
  Measured on the training pixels: it says what the model uses, not how well it
  generalises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .contract import hook, settings_of
from .model import SegmentationModel
from .stack import FeatureStack
from .treewalk import predict_proba_codes

#: Painted pixels a permutation importance is measured on at most (a random subset).
MAX_PERMUTATION_ROWS = 4000
#: Share of the total importance the kept families (and, apart, the kept scales) cover.
DEFAULT_KEEP = 0.9

#: ``(extractor name, family, sigma or None)``
Cell = tuple[str, str, "float | None"]


@dataclass(frozen=True)
class Importance:
    """Importance of a model's features by cell (extractor, family, scale).

    Attributes
    ----------
    cells : dict
        ``{(extractor, family, sigma): share}``, shares >= 0 summing to 1 (all 0 when the
        model uses no feature: a one-node forest), in feature order.
    method : str
        ``"impurity"`` or ``"permutation"`` (see the module's docstring).
    n_features : int
        Features of the model.
    """

    cells: dict[Cell, float]
    method: str
    n_features: int

    @property
    def extractors(self) -> list[str]:
        return list(dict.fromkeys(c[0] for c in self.cells))

    def _label(self, ext: str, text: str) -> str:
        return text if len(self.extractors) == 1 else f"{ext}: {text}"

    def by_family(self) -> list[tuple[str, float]]:
        """``[(family, share), ...]`` in feature order; a family is prefixed by its
        extractor's name when the model has several."""
        out: dict[str, float] = {}
        for (ext, fam, _), v in self.cells.items():
            key = self._label(ext, fam)
            out[key] = out.get(key, 0.0) + v
        return list(out.items())

    def by_scale(self) -> list[tuple[str, float]]:
        """``[(scale, share), ...]`` from the smallest sigma up (``"sigma 0.5"``; features
        without a scale last, as ``"no scale"``), prefixed like :meth:`by_family`."""
        out: dict[tuple[str, float], float] = {}
        for (ext, _, s), v in self.cells.items():
            key = (ext, np.inf if s is None else float(s))
            out[key] = out.get(key, 0.0) + v
        order = sorted(out, key=lambda k: (self.extractors.index(k[0]), k[1]))
        return [(self._label(e, "no scale" if np.isinf(s) else f"sigma {s:g}"), out[(e, s)])
                for e, s in order]


def feature_cells(stack: FeatureStack, n_channels: int) -> list[Cell]:
    """The cell of each of the stack's features, in feature order
    (:meth:`segdash.stack.FeatureStack.feature_groups`).

    Raises
    ------
    ValueError
        An extractor's ``feature_groups`` does not give one group per feature.
    """
    return stack.feature_groups(n_channels)


def _true_class_score(proba: np.ndarray, y_index: np.ndarray, k: int) -> float:
    """Mean log-probability of the true class, averaged over the classes (each class
    counts alike however much of it is painted)."""
    p = np.log(np.clip(proba[np.arange(len(y_index)), y_index], 1e-6, None))
    per = [p[y_index == c].mean() for c in range(k) if np.any(y_index == c)]
    return float(np.mean(per)) if per else 0.0


def feature_importance(
    model: SegmentationModel, X: np.ndarray | None = None, y: np.ndarray | None = None,
    seed: int = 0, max_rows: int = MAX_PERMUTATION_ROWS,
) -> Importance:
    """Importance of ``model``'s features by family and scale.

    Parameters
    ----------
    model : SegmentationModel
    X : numpy.ndarray, optional
        ``(N, F)`` uint8 codes of painted pixels (:func:`segdash.model.painted_rows`);
        needed only by estimators without ``feature_importances_``.
    y : numpy.ndarray, optional
        ``(N,)`` their class ids.
    seed : int
        Seed of the subset and of the shuffles (permutation).
    max_rows : int
        Painted pixels the permutation uses at most.

    Returns
    -------
    Importance

    Raises
    ------
    ValueError
        The estimator has no ``feature_importances_`` and no painted pixels are given, or
        it was fitted on another number of features than the model's settings make (the
        settings changed since it was trained).
    """
    cells = feature_cells(model.stack, model.n_channels)
    keys = list(dict.fromkeys(cells))
    index = np.array([keys.index(c) for c in cells])
    est = model.estimator
    fitted = getattr(est, "n_features_in_", len(cells))  # scikit-learn's fitted attribute
    if fitted != len(cells) or (X is not None and np.shape(X)[1] != len(cells)):
        raise ValueError(f"the model was fitted on {fitted} features but its feature "
                         f"settings now make {len(cells)}: train it again")
    if hasattr(est, "feature_importances_"):
        per_feature = np.asarray(est.feature_importances_, np.float64)
        values = np.bincount(index, weights=per_feature, minlength=len(keys))
        method = "impurity"
    else:
        if X is None or y is None or len(y) == 0:
            raise ValueError(f"{type(est).__name__} has no feature_importances_: give the "
                             "painted pixels' codes for a permutation importance")
        values = _permutation(est, np.asarray(X), np.asarray(y), index, len(keys), seed,
                              max_rows)
        method = "permutation"
    values = np.clip(values, 0, None)
    total = values.sum()
    shares = values / total if total > 0 else np.zeros_like(values)
    return Importance(dict(zip(keys, map(float, shares), strict=True)), method, len(cells))


def _permutation(est: Any, X: np.ndarray, y: np.ndarray, index: np.ndarray, n_cells: int,
                 seed: int, max_rows: int) -> np.ndarray:
    """Drop of the true classes' score when each cell's columns are shuffled, ``(n_cells,)``."""
    rng = np.random.default_rng(seed)
    if len(y) > max_rows:
        pick = np.sort(rng.choice(len(y), max_rows, replace=False))
        X, y = X[pick], y[pick]
    X = np.ascontiguousarray(X, np.uint8)
    classes = np.asarray(est.classes_)
    y_index = np.searchsorted(classes, y)
    k = len(classes)
    base = _true_class_score(predict_proba_codes(est, X), y_index, k)
    drops = np.zeros(n_cells)
    order = rng.permutation(len(y))
    for cell in range(n_cells):
        cols = np.flatnonzero(index == cell)
        shuffled = X.copy()
        # the cell's columns move together: a feature and its neighbours in the same
        # family and scale (the two Hessian eigenvalues) carry the same information
        shuffled[:, cols] = X[order][:, cols]
        drops[cell] = base - _true_class_score(predict_proba_codes(est, shuffled), y_index, k)
    return drops


def _covering(shares: Mapping[Any, float], keep: float) -> set[Any]:
    """The fewest keys whose shares add up to ``keep`` of the total (at least one)."""
    total = sum(shares.values())
    if total <= 0:
        return set(shares)
    out, acc = set(), 0.0
    for key, v in sorted(shares.items(), key=lambda kv: -kv[1]):
        out.add(key)
        acc += v
        if acc >= keep * total - 1e-12:
            break
    return out


def useful_cells(importance: Importance, keep: float = DEFAULT_KEEP
                 ) -> tuple[set[tuple[str, str]], set[tuple[str, float]]]:
    """The families and the scales that matter: the fewest families covering ``keep`` of
    the total importance, and apart the fewest scales covering it.

    Returns
    -------
    families : set of (extractor, family)
    scales : set of (extractor, sigma)
        Features without a scale are not listed.
    """
    fam: dict[tuple[str, str], float] = {}
    sca: dict[tuple[str, float], float] = {}
    for (ext, f, s), v in importance.cells.items():
        fam[(ext, f)] = fam.get((ext, f), 0.0) + v
        if s is not None:
            sca[(ext, s)] = sca.get((ext, s), 0.0) + v
    return _covering(fam, keep), (_covering(sca, keep) if sca else set())


def useful_settings(importance: Importance, stack: FeatureStack,
                    keep: float = DEFAULT_KEEP) -> dict[str, dict[str, Any]]:
    """Feature settings computing only the families and scales that matter.

    Parameters
    ----------
    importance : Importance
        Of a model whose features are ``stack``'s.
    stack : FeatureStack
        The model's extractors and settings.
    keep : float
        Share of the total importance the kept families (and the kept scales) cover, 0..1.

    Returns
    -------
    dict
        ``{extractor name: {setting: value}}`` for every extractor of the stack: its
        ``trimmed_settings`` hook's answer merged over its current settings, or its
        current settings when it cannot be trimmed (the hook's default) or when the model
        uses none of its features.
    """
    families, scales = useful_cells(importance, keep)
    out: dict[str, dict[str, Any]] = {}
    for name, ext in stack.extractors:
        settings = settings_of(ext)
        fams = [f for e, f in families if e == name]
        if fams:
            trimmed = hook(ext, "trimmed_settings")(
                fams, sorted(s for e, s in scales if e == name))
            if trimmed:
                settings.update(trimmed)
        out[name] = settings
    return out
