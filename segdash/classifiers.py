"""The built-in classifier entries: ``random_forest`` and ``gradient_boosting``.

Each is a :class:`segdash.contract.Classifier`: its parameters are the hyper-parameters and
``build()`` returns a fresh scikit-learn estimator. Both are trained on uint8 feature codes
and predicted by segdash's compiled tree walk (:mod:`segdash.treewalk`), several times faster
than scikit-learn's own ``predict_proba`` and without its float64 copy of the features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import param

from .contract import Classifier

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
    prefer_fine_scales = param.Boolean(
        True, doc="Let each split try features of the finest scales more often (sigma up to "
                  "1 px three times, 2 px twice as often as coarser ones): they follow "
                  "boundaries closely, where coarse ones spread thin structures into halos "
                  "that nothing painted contradicts.")
    smoothing = param.Number(2.0, bounds=(0, 32), softbounds=(0, 8), doc=_SMOOTHING_DOC)
    random_state = param.Integer(0, allow_None=True, doc="Seed (None: a new forest each fit).")

    trusted_types = ("sklearn.tree._tree.Tree",)

    def feature_repeats(self, scales: Sequence[float | None]) -> list[int] | None:
        # Each split tries sqrt(F) features drawn at random and keeps the best; a smooth
        # coarse feature separates the painted pixels most cleanly, and then calls
        # everything within its scale of a thin fibre "fibre" too. Drawing fine scales more
        # often (as many tried per split): benchmarks/accuracy.py +0.8 points on average
        # (thin fibres +1.8, touching blobs +2.3), +0.7 and +1.1 on two other drawings of
        # the scenes (--drawing 100, 200; docs/performance.md).
        if not self.prefer_fine_scales:
            return None
        return [1 if s is None or s > 2 else (2 if s > 1 else 3) for s in scales]

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
    image within twice the random forest's time. 20 iterations were chosen on
    ``benchmarks/accuracy.py`` (3 seeds per scene): 10 were 0.4 points less accurate on
    average and below the reference on the thin fibres.
    """

    max_iter = param.Integer(20, bounds=(1, 2000), softbounds=(5, 300),
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
