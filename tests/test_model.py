import numpy as np
import pytest

import segdash
from segdash.errors import ImageError, UnknownNameError


@pytest.mark.parametrize("classifier", ["random_forest", "gradient_boosting"])
def test_fit_segments_two_textures_accurately(two_texture, classifier):
    img, truth, labels = two_texture
    # Scales up to the texture's grain (4 px); larger ones see only noise at this size.
    model = segdash.fit(img, labels, classifier=classifier, feature_params={"sigma_max": 4})
    pred = model.predict(img)
    assert pred.shape == truth.shape
    accuracy = (pred == truth).mean()
    assert accuracy >= 0.95, accuracy


def test_predict_proba_is_float32_in_classes_order(two_texture):
    img, truth, labels = two_texture
    labels = np.select([labels == 1, labels == 2], [7, 3], 0).astype(np.uint16)
    model = segdash.fit(img, labels, feature_params={"sigma_max": 4})
    assert model.classes_.tolist() == [3, 7]
    proba = model.predict_proba(img)
    assert proba.shape == (*img.shape, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(-1), 1, atol=1e-5)
    pred = model.predict(img)
    assert set(np.unique(pred)) <= {3, 7}
    # the disc (truth 2) is labelled 3, and its probability column is the first
    assert (pred[truth == 2] == 3).mean() > 0.9
    assert proba[64, 64, 0] > 0.5


def test_feature_names_match_the_features(rgb_image):
    labels = np.zeros(rgb_image.shape[:2], np.uint8)
    labels[:5] = 1
    labels[-5:] = 2
    model = segdash.fit(rgb_image, labels, feature_params={"sigma_max": 4})
    # 3 channels x 4 scales x 4 features, and 4 scales x 5 texture features of their mean
    assert len(model.feature_names) == 3 * 4 * 4 + 4 * 5
    assert model.n_channels == 3


def test_labels_of_another_shape_are_refused(two_texture):
    img, truth, labels = two_texture
    with pytest.raises(ValueError, match="labels have shape"):
        segdash.fit(img, labels[:-1])


@pytest.mark.parametrize("classes", [[], [1]])
def test_fewer_than_two_classes_is_refused(two_texture, classes):
    img, truth, labels = two_texture
    painted = np.where(np.isin(labels, classes), labels, 0)
    with pytest.raises(ValueError, match="at least two classes"):
        segdash.fit(img, painted)


def test_image_with_another_channel_count_is_refused(two_texture, rgb_image):
    img, truth, labels = two_texture
    model = segdash.fit(img, labels)
    with pytest.raises(ImageError, match="1 channel.*has 3") as info:
        model.predict(rgb_image)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("kw", "name"), [
    ({"features": "nope"}, "feature extractor"), ({"classifier": "nope"}, "classifier")])
def test_unknown_names_list_available_ones(two_texture, kw, name):
    img, truth, labels = two_texture
    with pytest.raises(UnknownNameError, match=f"unknown {name} 'nope'; available: .*") as info:
        segdash.fit(img, labels, **kw)
    assert isinstance(info.value, ValueError)
    assert ("basic" in str(info.value)) or ("random_forest" in str(info.value))


def test_classifier_params_are_applied_and_checked(two_texture):
    img, truth, labels = two_texture
    model = segdash.fit(img, labels, classifier_params={"n_estimators": 7})
    assert len(model.estimator.estimators_) == 7
    with pytest.raises(ValueError, match="no setting"):
        segdash.fit(img, labels, classifier_params={"trees": 7})


def test_training_pixels_are_capped_per_class():
    from segdash.model import training_pixels

    feats = np.random.default_rng(0).random((100, 100, 2)).astype(np.float32)
    labels = np.zeros((100, 100), np.uint8)
    labels[:60] = 1
    labels[99, 0] = 2
    X, y = training_pixels(feats, labels, max_per_class=100)
    assert X.shape == (101, 2)
    assert (y == 2).sum() == 1


def _rows(n=1500, f=12, seed=3):
    """uint8 codes of three unevenly painted classes that features partly separate."""
    rng = np.random.default_rng(seed)
    y = rng.choice([1, 2, 5], size=n, p=[0.6, 0.3, 0.1])
    X = rng.integers(0, 256, (n, f))
    X[:, :3] = np.clip(X[:, :3] // 4 + 60 * y[:, None], 0, 255)
    return X.astype(np.uint8), y.astype(np.uint8)


def _same_trees(a, b):
    assert len(a.estimators_) == len(b.estimators_) == a.n_estimators
    for ta, tb in zip(a.estimators_, b.estimators_, strict=True):
        assert ta.random_state == tb.random_state
        for name in ("feature", "threshold", "value", "children_left", "children_right"):
            np.testing.assert_array_equal(getattr(ta.tree_, name), getattr(tb.tree_, name))


@pytest.mark.parametrize("threads", ["2", "3"])
@pytest.mark.parametrize("settings", [
    {},  # ExtraTrees, no bootstrap, class_weight balanced
    {"extra_trees": False},  # RandomForest: bootstrap samples drawn from each tree's seed
    {"max_samples": 0.5},  # ExtraTrees with bootstrap
    {"n_estimators": 5},  # shares of 3 + 2 (2 threads)
    {"n_estimators": 1},  # one tree: a plain fit
    {"class_weight": None, "extra_trees": False, "max_samples": 0.3, "random_state": 7},
])
def test_a_forest_fitted_in_parts_has_the_trees_of_a_plain_fit(monkeypatch, threads, settings):
    from segdash.classifiers import RandomForest
    from segdash.model import _forest_parts, fit_estimator
    from segdash.treewalk import predict_proba_codes

    monkeypatch.setenv("SEGDASH_THREADS", threads)
    X, y = _rows()
    X = X.astype(np.float32)
    est = RandomForest(**settings).build()
    plain = est.__class__(**{**est.get_params(), "n_jobs": 1}).fit(X, y)
    expected_parts = min(int(threads), est.n_estimators)
    assert _forest_parts(est) == expected_parts
    params = est.get_params()
    assert fit_estimator(est, X, y) is est
    assert est.get_params() == params  # n_estimators, n_jobs and the seed put back
    _same_trees(est, plain)
    # segdash's tree walk (sklearn's n_jobs=-1 predict_proba sums the trees in whatever
    # order its threads finish: last-bit differences between two calls on one forest)
    codes = X.astype(np.uint8)
    np.testing.assert_array_equal(predict_proba_codes(est, codes),
                                  predict_proba_codes(plain, codes))
    np.testing.assert_array_equal(est.classes_, plain.classes_)


def test_forests_that_cannot_be_split_exactly_get_a_plain_fit(monkeypatch):
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    from segdash.classifiers import GradientBoosting
    from segdash.model import _forest_parts, fit_estimator

    monkeypatch.setenv("SEGDASH_THREADS", "2")
    for est in (ExtraTreesClassifier(8, random_state=None, n_jobs=-1),
                ExtraTreesClassifier(8, random_state=np.random.RandomState(0), n_jobs=-1),
                ExtraTreesClassifier(8, random_state=0, n_jobs=1),
                ExtraTreesClassifier(8, random_state=0, n_jobs=None),
                ExtraTreesClassifier(8, random_state=0, n_jobs=-1, warm_start=True),
                RandomForestClassifier(8, random_state=0, n_jobs=-1, oob_score=True),
                GradientBoosting().build()):
        assert _forest_parts(est) == 1, est
    monkeypatch.setenv("SEGDASH_THREADS", "1")
    assert _forest_parts(ExtraTreesClassifier(8, random_state=0, n_jobs=-1)) == 1
    X, y = _rows()
    oob = fit_estimator(RandomForestClassifier(32, random_state=0, n_jobs=-1, oob_score=True),
                        X.astype(np.float32), y)
    assert 0 < oob.oob_score_ <= 1


def test_training_pixels_gather_the_rows_subsample_rows_keeps():
    from segdash.model import painted_rows, subsample_rows, training_pixels

    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (120, 90, 4), dtype=np.uint8)
    labels = rng.choice(np.arange(4, dtype=np.uint8), size=(120, 90), p=[0.3, 0.5, 0.15, 0.05])
    for cap in (0, 100, 600, 10_000):  # none, all, some and no class over the cap
        X, y = training_pixels(codes, labels, cap, seed=4)
        X0, y0 = subsample_rows(*painted_rows(codes, labels), cap, seed=4)
        np.testing.assert_array_equal(X, X0)
        np.testing.assert_array_equal(y, y0)
        assert X.dtype == X0.dtype and y.dtype == y0.dtype
    assert np.bincount(training_pixels(codes, labels, 600)[1]).max() == 600


def test_training_on_codes_gives_the_model_of_training_on_all_painted_rows():
    from segdash.model import SegmentationModel, painted_rows
    from segdash.stack import FeatureStack

    rng = np.random.default_rng(2)
    img = rng.random((80, 80, 3)).astype(np.float32)
    labels = np.zeros((80, 80), np.uint8)
    labels[:50] = 1
    labels[60:, :30] = 2
    stack = FeatureStack("basic")
    codes, q = stack.codes(img)
    a = SegmentationModel.train(codes, labels, stack, q, n_channels=3)
    b = SegmentationModel.train_rows(*painted_rows(codes, labels), stack, q, n_channels=3)
    _same_trees(a.estimator, b.estimator)


def test_training_rows_keep_the_pixels_order_whether_or_not_a_class_is_capped():
    from segdash.model import subsample_index, subsample_rows

    y = np.array([2, 1, 2, 1, 1, 2, 1, 2, 2])
    X = np.arange(9)[:, None]
    assert subsample_index(y, 10) is None  # nothing dropped: every row, as given
    idx = subsample_index(y, 3)
    assert np.all(np.diff(idx) > 0) and np.bincount(y[idx]).tolist() == [0, 3, 3]
    kept, ky = subsample_rows(X, y, 3)
    assert np.array_equal(kept[:, 0], idx) and np.array_equal(ky, y[idx])
