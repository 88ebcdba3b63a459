"""LightGBM's gradient-boosted trees as a segdash classifier.

:class:`LightGBM` is a segdash classifier entry: its parameters are LightGBM's main
hyper-parameters, with defaults sized for retraining after every stroke (few, small trees;
coarse feature histograms), and :meth:`LightGBM.build` returns an unfitted
``lightgbm.LGBMClassifier``.

Model files: a fitted ``LGBMClassifier`` holds a ``lightgbm.basic.Booster``, which skops
serialises as LightGBM's own text model format (no pickle). Those types are listed in
:attr:`LightGBM.trusted_types`, so segdash loads such model files without trusting anything
else.
"""

from __future__ import annotations

from typing import Any

import param

from segdash.contract import Classifier

__all__ = ["LightGBM", "__version__"]

__version__ = "0.1.0"


class LightGBM(Classifier):
    """LightGBM gradient boosting with interactive defaults.

    Prediction cost grows with ``n_estimators * num_leaves`` (times the number of classes
    beyond two); the defaults keep fitting on 50 000 painted pixels under a second and
    prediction on a megapixel image close to the random forest's.
    """

    n_estimators = param.Integer(30, bounds=(1, 5000), softbounds=(5, 300),
                                 doc="Boosting iterations (trees per class).")
    learning_rate = param.Number(0.2, bounds=(0.001, 1.0), softbounds=(0.01, 0.5),
                                 doc="Shrinkage of each tree: lower needs more trees.")
    num_leaves = param.Integer(15, bounds=(2, 1024), softbounds=(2, 127),
                               doc="Leaves per tree.")
    max_depth = param.Integer(None, bounds=(1, 64), allow_None=True,
                              doc="Maximum depth of a tree (None: limited by leaves only).")
    min_child_samples = param.Integer(10, bounds=(1, 10000), softbounds=(1, 200),
                                      doc="Fewest training pixels in a leaf.")
    subsample = param.Number(1.0, bounds=(0.01, 1.0),
                             doc="Fraction of painted pixels each tree is trained on.")
    colsample_bytree = param.Number(
        0.5, bounds=(0.01, 1.0),
        doc="Fraction of features each tree may use. Below 1, trees cannot all lean on the "
            "one feature that happens to separate the few painted pixels.")
    reg_lambda = param.Number(0.0, bounds=(0, None), softbounds=(0, 10),
                              doc="L2 penalty on leaf values.")
    max_bin = param.Integer(63, bounds=(3, 1023), softbounds=(15, 255),
                            doc="Histogram bins per feature (fewer: faster fitting).")
    class_weight = param.Selector(default="balanced", objects=["balanced", None],
                                  doc="'balanced' weights classes by how little they are painted.")
    random_state = param.Integer(0, allow_None=True, doc="Seed (None: different each fit).")
    n_jobs = param.Integer(-1, bounds=(-1, 256),
                           doc="Threads (-1: every core). Results do not depend on it; on a "
                               "busy machine 1 can be faster.")

    #: What a fitted LGBMClassifier holds beyond skops' defaults (Booster's state has an
    #: OrderedDict of parameters).
    trusted_types = (
        "collections.OrderedDict",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
    )

    def build(self) -> Any:
        """A fresh, unfitted ``lightgbm.LGBMClassifier`` with these settings."""
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            max_depth=-1 if self.max_depth is None else self.max_depth,
            min_child_samples=self.min_child_samples,
            subsample=self.subsample,
            # LightGBM ignores `subsample` unless bagging is switched on by a frequency.
            subsample_freq=1 if self.subsample < 1.0 else 0,
            colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda,
            max_bin=self.max_bin,
            class_weight=self.class_weight,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
            # Same model whatever the thread count (LightGBM asks for a forced layout too).
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
