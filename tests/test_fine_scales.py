"""Features of fine scales offered to the forest's splits more often
(``random_forest``'s ``prefer_fine_scales``): columns given repeatedly to the fit, the
fitted trees mapped back to the model's features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier
from sklearn.ensemble import RandomForestClassifier as SkRandomForest

import segdash
from segdash.classifiers import RandomForest
from segdash.model import fold_repeated_features, model_from_bytes


def _rows(seed: int = 0, n: int = 400, f: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, f)).astype(np.float32)
    y = (X[:, 0] + X[:, 3] > 255).astype(int) + 1
    return X, y


@pytest.mark.parametrize("forest", [ExtraTreesClassifier, SkRandomForest])
def test_a_forest_fitted_on_repeated_columns_predicts_the_same_from_the_original_ones(forest):
    X, y = _rows()
    columns = np.array([0, 0, 0, 1, 2, 2, 3, 4, 5])
    est = forest(n_estimators=5, max_depth=6, random_state=0).fit(X[:, columns], y)
    expected = est.predict_proba(X[:, columns])
    used = {int(f) for t in est.estimators_ for f in t.tree_.feature if f >= 0}
    assert max(used) > 5  # some split reads a repeated column, beyond the original ones
    fold_repeated_features(est, columns, X.shape[1])
    assert est.n_features_in_ == 6 and all(t.tree_.n_features == 6 for t in est.estimators_)
    np.testing.assert_array_equal(est.predict_proba(X), expected)
    assert est.feature_importances_.shape == (6,)


def test_folding_a_model_that_is_not_a_tree_ensemble_is_refused():
    X, y = _rows()
    est = HistGradientBoostingClassifier(max_iter=2).fit(X[:, [0, 0, 1, 2, 3, 4, 5]], y)
    with pytest.raises(TypeError, match="scikit-learn tree or forest"):
        fold_repeated_features(est, np.array([0, 0, 1, 2, 3, 4, 5]), 6)


def test_fine_scales_are_offered_three_and_two_times_and_others_once():
    rf = RandomForest()
    assert rf.feature_repeats([0.5, 1.0, 1.5, 2.0, 4.0, 16.0, None]) == [3, 3, 2, 2, 1, 1, 1]
    rf.prefer_fine_scales = False
    assert rf.feature_repeats([0.5, 1.0]) is None


def test_a_model_trained_preferring_fine_scales_reads_only_its_own_features_and_round_trips(
        two_texture):
    img, _, labels = two_texture
    model = segdash.fit(img, labels, feature_params={"sigma_max": 4})
    n = len(model.feature_names)
    assert model.estimator.n_features_in_ == n
    for t in model.estimator.estimators_:
        split = t.tree_.feature[t.tree_.feature >= 0]
        assert split.max() < n
    proba = model.predict_proba(img)
    # the compiled walk and scikit-learn agree on the folded trees
    codes = model.feature_codes(img).reshape(-1, n).astype(np.float32)
    sk = model.estimator.predict_proba(codes).reshape(proba.shape)
    unsmoothed = segdash.fit(img, labels, feature_params={"sigma_max": 4},
                             classifier_params={"smoothing": 0})
    np.testing.assert_allclose(unsmoothed.predict_proba(img), sk, atol=1e-5)
    again = model_from_bytes(model.to_bytes())
    np.testing.assert_array_equal(again.predict_proba(img), proba)


def test_preferring_fine_scales_changes_which_features_the_trees_split_on(two_texture):
    img, _, labels = two_texture
    fine = segdash.fit(img, labels, feature_params={"sigma_max": 8})
    even = segdash.fit(img, labels, feature_params={"sigma_max": 8},
                       classifier_params={"prefer_fine_scales": False})

    def share_fine(model) -> float:
        sig = np.array([s for _, _, s in model.stack.feature_groups(1)])
        feats = np.concatenate([t.tree_.feature[t.tree_.feature >= 0]
                                for t in model.estimator.estimators_])
        return float((sig[feats] <= 1).mean())

    assert share_fine(fine) > share_fine(even)


def test_repeats_that_do_not_match_the_features_are_refused(two_texture, monkeypatch):
    img, _, labels = two_texture
    monkeypatch.setattr(RandomForest, "feature_repeats", lambda self, scales: [1, 2])
    with pytest.raises(ValueError, match="feature_repeats gives 2 counts"):
        segdash.fit(img, labels, feature_params={"sigma_max": 4})


@pytest.mark.parametrize("rule, count", [("sqrt", 7), ("log2", 5), (0.3, 14), (None, None),
                                         (3, 3)])
def test_repeated_columns_leave_each_split_trying_as_many_features_as_before(rule, count):
    from segdash.model import keep_split_size

    est = ExtraTreesClassifier(max_features=rule)
    keep_split_size(est, 49)
    assert est.max_features == count


def test_the_sessions_forest_tries_sqrt_of_the_models_features_at_each_split(two_texture):
    img, _, labels = two_texture
    model = segdash.fit(img, labels, feature_params={"sigma_max": 4})
    n = len(model.feature_names)
    assert model.estimator.max_features == int(np.sqrt(n))
    assert all(t.max_features_ == int(np.sqrt(n)) for t in model.estimator.estimators_)
