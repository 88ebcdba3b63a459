"""Built-in classifiers and the classifier contract.

A classifier entry is a :class:`param.Parameterized` class whose parameters are its
hyper-parameters. ``build()`` returns a fresh, unfitted scikit-learn-compatible estimator
(``fit``, ``predict_proba``, ``classes_``). An entry may list, in ``trusted_types``, the fully
qualified type names its fitted estimator holds that skops does not trust by default; model
files made with it are then loadable without trusting anything else.
"""

from __future__ import annotations

from typing import Any

import param

from .errors import PluginLoadError


class Classifier(param.Parameterized):
    """Convenience base class for classifier entries."""

    #: Type names (``"module.Class"``) skops must trust to load a fitted estimator.
    trusted_types: tuple[str, ...] = ()

    def build(self) -> Any:
        """A fresh, unfitted scikit-learn-compatible estimator with these settings."""
        raise NotImplementedError


class RandomForest(Classifier):
    """scikit-learn's random forest, sized for interactive retraining on every stroke."""

    n_estimators = param.Integer(50, bounds=(1, 1000), softbounds=(5, 300),
                                 doc="Number of trees.")
    max_depth = param.Integer(12, bounds=(1, 64), softbounds=(2, 32), allow_None=True,
                              doc="Maximum depth of a tree (None: unlimited).")
    min_samples_leaf = param.Integer(1, bounds=(1, 1000), softbounds=(1, 50),
                                     doc="Fewest training pixels in a leaf.")
    max_features = param.Selector(default="sqrt", objects=["sqrt", "log2", None],
                                  doc="Features tried at each split (None: all).")
    max_samples = param.Number(0.5, bounds=(0.01, 1.0),
                               doc="Fraction of painted pixels each tree is trained on.")
    class_weight = param.Selector(default="balanced", objects=["balanced", None],
                                  doc="'balanced' weights classes by how little they are painted.")
    random_state = param.Integer(0, allow_None=True, doc="Seed (None: a new forest each fit).")

    trusted_types = ("sklearn.tree._tree.Tree",)

    def build(self) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            max_samples=self.max_samples,
            class_weight=self.class_weight,
            random_state=self.random_state,
            n_jobs=-1,
        )


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
    class_weight = param.Selector(default=None, objects=["balanced", None],
                                  doc="'balanced' weights classes by how little they are painted "
                                      "(makes fitting several times slower).")
    random_state = param.Integer(0, allow_None=True, doc="Seed.")

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
