import numpy as np
import pytest
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression

import segdash
from segdash.classifiers import GradientBoosting, RandomForest
from segdash.treewalk import compile_trees, predict_proba_codes, supports_codes


def _codes_problem(n_classes, n=3000, n_features=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (n, n_features)).astype(np.uint8)
    y = (X[:, 0].astype(int) + X[:, 1] + rng.integers(0, 60, n)) % n_classes + 1
    return X, y


ESTIMATORS = [
    lambda: RandomForestClassifier(20, max_depth=10, random_state=0),
    lambda: RandomForestClassifier(5, random_state=0),  # unlimited depth: general layout
    lambda: ExtraTreesClassifier(10, max_depth=8, random_state=0, class_weight="balanced"),
    lambda: HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=7),
]


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("make", ESTIMATORS)
def test_compiled_inference_equals_scikit_learn(make, n_classes):
    X, y = _codes_problem(n_classes)
    est = make().fit(X.astype(np.float32), y)
    assert supports_codes(est)
    ours = predict_proba_codes(est, X)
    assert ours.dtype == np.float32 and ours.shape == (len(X), n_classes)
    np.testing.assert_allclose(ours, est.predict_proba(X.astype(np.float32)), atol=1e-5)


def test_deep_trees_use_the_general_layout_and_shallow_ones_the_complete():
    X, y = _codes_problem(2)
    assert not compile_trees(RandomForestClassifier(3, random_state=0).fit(X, y)).complete
    assert compile_trees(RandomForestClassifier(3, max_depth=6).fit(X, y)).complete


def test_thresholds_outside_the_code_range_are_honoured():
    # trained on values beyond 0..255: some tests send every code one way
    rng = np.random.default_rng(1)
    Xf = rng.uniform(-40, 300, (2000, 4)).astype(np.float32)
    y = (Xf[:, 0] > 270) | (Xf[:, 1] < -20) | (Xf[:, 2] > 128)
    est = RandomForestClassifier(10, max_depth=6, random_state=0).fit(Xf, y)
    codes = rng.integers(0, 256, (5000, 4)).astype(np.uint8)
    np.testing.assert_allclose(predict_proba_codes(est, codes),
                               est.predict_proba(codes.astype(np.float32)), atol=1e-5)


def test_other_estimators_fall_back_to_their_own_predict_proba():
    X, y = _codes_problem(2, n=300)
    est = LogisticRegression(max_iter=500).fit(X.astype(np.float32), y)
    assert not supports_codes(est)
    np.testing.assert_allclose(predict_proba_codes(est, X),
                               est.predict_proba(X.astype(np.float32)), rtol=1e-5)


def test_a_refitted_estimator_is_compiled_again():
    X, y = _codes_problem(2)
    est = RandomForestClassifier(5, max_depth=5, random_state=0).fit(X, y)
    first = predict_proba_codes(est, X)
    est.set_params(random_state=1).fit(X, 3 - y)
    np.testing.assert_allclose(predict_proba_codes(est, X), est.predict_proba(X), atol=1e-5)
    assert not np.allclose(first, predict_proba_codes(est, X))


def test_random_forest_entry_builds_extra_trees_by_default():
    assert isinstance(RandomForest().build(), ExtraTreesClassifier)
    assert not RandomForest().build().bootstrap
    assert RandomForest(max_samples=0.3).build().max_samples == 0.3
    classic = RandomForest(extra_trees=False).build()
    assert isinstance(classic, RandomForestClassifier) and classic.max_samples is None
    assert isinstance(GradientBoosting().build(), HistGradientBoostingClassifier)


@pytest.mark.parametrize("classifier", ["random_forest", "gradient_boosting"])
def test_builtin_classifiers_segment_the_two_texture_image(two_texture, classifier):
    img, truth, labels = two_texture
    model = segdash.fit(img, labels, classifier=classifier)
    assert model.quantizer is not None
    assert (model.predict(img) == truth).mean() > 0.9


def test_smoothing_widens_the_halo_and_keeps_probabilities_normalised(two_texture):
    img, truth, labels = two_texture
    rough = segdash.fit(img, labels, classifier_params={"smoothing": 0})
    smooth = segdash.fit(img, labels, classifier_params={"smoothing": 2})
    assert smooth.halo == rough.halo + 8
    p = smooth.predict_proba(img)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-5)
    # smoothing removes isolated errors: fewer label changes between neighbours
    changes = [np.count_nonzero(np.diff(m.predict(img), axis=1)) for m in (rough, smooth)]
    assert changes[1] < changes[0]


def test_tiles_predict_like_the_whole_image_away_from_their_border():
    rng = np.random.default_rng(2)
    img = (rng.random((300, 280, 3)) * 255).astype(np.uint8)
    labels = np.zeros(img.shape[:2], np.uint8)
    labels[20:30, 20:260] = 1
    labels[250:260, 20:260] = 2
    model = segdash.fit(img, labels)
    h = model.halo
    full = model.predict_proba(img)
    tile = model.predict_proba(img[5:295, 9:275])
    np.testing.assert_array_equal(tile[h:-h, h:-h], full[5 + h:295 - h, 9 + h:275 - h])


def test_session_caches_codes_and_matches_the_library_path(two_texture):
    img, truth, labels = two_texture
    seg = segdash.Segmenter(image=img, live_update=False)
    seg.set_strokes([segdash.Stroke((10, 100), (10, 10), 1, 3),
                     segdash.Stroke((50, 70), (64, 64), 2, 3)])
    model = seg.train()
    cached = seg.feature_codes()
    assert cached.dtype == np.uint8 and cached.shape[:2] == img.shape
    np.testing.assert_array_equal(model.predict_proba(img), seg.probabilities)
    lib = segdash.fit(img, seg.labels)
    np.testing.assert_array_equal(lib.predict_proba(img), seg.probabilities)
    np.testing.assert_allclose(seg.uncertainty, 1 - seg.probabilities.max(axis=-1), atol=1e-7)


def test_estimators_without_a_compiled_walk_are_predicted_in_chunks(monkeypatch):
    from sklearn.linear_model import LogisticRegression

    from segdash import treewalk

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (50, 4), dtype=np.uint8)
    est = LogisticRegression().fit(codes.astype(np.float32), np.arange(50) % 3)
    calls = []
    original = est.predict_proba
    monkeypatch.setattr(est, "predict_proba", lambda x: calls.append(len(x)) or original(x))
    monkeypatch.setattr(treewalk, "_FOREIGN_CHUNK", 16)
    out = treewalk.predict_proba_codes(est, codes)
    assert calls == [16, 16, 16, 2]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, original(codes.astype(np.float32)), rtol=1e-6)


def _hostile_forest(edit, max_depth):
    X, y = _codes_problem(2)
    est = RandomForestClassifier(3, max_depth=max_depth, random_state=0).fit(X, y)
    t = est.estimators_[1].tree_
    edit(t, int(np.flatnonzero(t.children_left >= 0)[-1]))
    return est, X


@pytest.mark.parametrize("max_depth", [5, None])  # complete and general layouts
def test_walk_refuses_a_feature_index_beyond_the_codes(max_depth):
    def edit(t, i):
        t.feature[i] = 200

    est, X = _hostile_forest(edit, max_depth)
    # (a TreeError, a ValueError; on main the walk read past each row: garbage or SIGSEGV)
    with pytest.raises(ValueError, match="tree 1: node .* tests feature 200, outside 0..19"):
        predict_proba_codes(est, X)


@pytest.mark.parametrize("max_depth", [5, None])
def test_walk_refuses_a_child_pointing_back_to_the_root(max_depth):
    def edit(t, i):
        t.children_left[i] = 0

    est, X = _hostile_forest(edit, max_depth)
    with pytest.raises(ValueError, match="a cycle"):  # on main: compiled, then walked for ever
        compile_trees(est)


def test_walk_refuses_children_shared_between_nodes():
    def edit(t, i):
        internal = np.flatnonzero(t.children_left >= 0)
        a, b = internal[-2], internal[-1]
        t.children_left[b] = t.children_left[a] if t.children_left[a] > b else t.children_left[b]
        t.children_right[b] = t.children_left[b]

    est, X = _hostile_forest(edit, 5)
    with pytest.raises(ValueError, match="tree 1: node"):
        compile_trees(est)


def test_walk_refuses_codes_with_fewer_columns_than_the_trees_test():
    X, y = _codes_problem(2)
    est = RandomForestClassifier(3, max_depth=5, random_state=0).fit(X, y)
    est.n_features_in_ = 20
    with pytest.raises(ValueError, match="the trees test"):
        predict_proba_codes(est, X[:, :3])


def test_wide_deep_ensembles_fall_back_to_the_general_layout():
    # the complete layout pads every tree to 2**depth leaves: bounded in bytes
    from segdash import treewalk

    X, y = _codes_problem(3)
    est = RandomForestClassifier(40, max_depth=12, random_state=0).fit(X, y)
    old = treewalk._MAX_COMPLETE_BYTES
    try:
        treewalk._MAX_COMPLETE_BYTES = 1_000_000
        assert not compile_trees(est).complete
    finally:
        treewalk._MAX_COMPLETE_BYTES = old
    np.testing.assert_allclose(predict_proba_codes(est, X), est.predict_proba(X), atol=1e-5)


def test_each_tree_is_walked_to_its_own_depth_with_scikit_learn_probabilities():
    # trees of very different depths in one ensemble (one stump, deep ones): each is walked
    # only to its own depth, and the leaves padded to it still give scikit-learn's result
    X, y = _codes_problem(3)
    deep = RandomForestClassifier(4, max_depth=9, random_state=0).fit(X, y)
    stump = RandomForestClassifier(1, max_depth=1, random_state=1).fit(X, y)
    deep.estimators_ = [*deep.estimators_, *stump.estimators_]
    deep.n_estimators = len(deep.estimators_)
    ct = compile_trees(deep)
    assert ct.complete
    assert ct.tree_depths.tolist()[-1] == 1 and max(ct.tree_depths) == ct.depth == 9
    np.testing.assert_allclose(predict_proba_codes(deep, X),
                               deep.predict_proba(X.astype(np.float32)), atol=1e-5)
