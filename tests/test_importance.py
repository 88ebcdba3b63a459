"""Feature importance by family and scale, and the settings keeping the useful ones."""

from __future__ import annotations

import numpy as np
import pytest

import segdash
from segdash.contract import FeatureExtractor
from segdash.features.basic import BasicFeatures
from segdash.importance import (
    Importance,
    feature_cells,
    feature_importance,
    useful_cells,
    useful_settings,
)
from segdash.model import SegmentationModel, painted_rows
from segdash.stack import FeatureStack

from .conftest import scribble_strokes, scribbles, two_texture_image


@pytest.fixture(scope="module")
def texture():
    image, _ = two_texture_image(96)
    return image, scribbles(96)


def test_default_groups_are_read_from_feature_names():
    class Named(FeatureExtractor):
        def feature_names(self, n_channels):
            return ["ch0 sigma=2 edges", "mean sigma=1 structure max", "sobel", "ch1 blur"]

    assert Named().feature_groups(2) == [("edges", 2.0), ("structure max", 1.0),
                                         ("sobel", None), ("blur", None)]


def test_basic_groups_name_each_feature_by_its_on_off_setting_and_sigma():
    basic = BasicFeatures()
    for channels in (1, 3):
        groups = basic.feature_groups(channels)
        names = basic.feature_names(channels)
        assert len(groups) == len(names)
        for (family, sigma), name in zip(groups, names, strict=True):
            assert f"sigma={sigma:g} " in name and family in BasicFeatures.param
        assert {f for f, _ in groups} == {"intensity", "edges", "texture", "laplacian",
                                          "deviation", "structure"}


def test_basic_trimmed_settings_switch_families_and_keep_the_scale_range():
    basic = BasicFeatures()
    got = basic.trimmed_settings(["edges", "structure"], [4.0, 1.0])
    assert got == {"intensity": False, "edges": True, "texture": False, "laplacian": False,
                   "deviation": False, "structure": True, "sigma_min": 1.0, "sigma_max": 4.0}
    trimmed = BasicFeatures(**got)
    assert list(trimmed.sigmas) == [1.0, 2.0, 4.0]
    assert {f for f, _ in trimmed.feature_groups(1)} == {"edges", "structure"}
    assert basic.trimmed_settings(["no such family"], [1.0]) is None
    # with a set number of scales, the count of those kept between the ends
    six = BasicFeatures(sigma_min=1, sigma_max=32, num_sigma=11)
    assert six.trimmed_settings(["edges"], [2.0, 8.0])["num_sigma"] == 5


def test_forest_importance_is_its_impurity_importance_summed_per_family_and_scale(texture):
    image, labels = texture
    model = segdash.fit(image, labels)
    imp = feature_importance(model)
    assert imp.method == "impurity" and imp.n_features == len(model.feature_names)
    cells = feature_cells(model.stack, 1)
    expected: dict = {}
    for cell, v in zip(cells, model.estimator.feature_importances_, strict=True):
        expected[cell] = expected.get(cell, 0.0) + v
    assert imp.cells == pytest.approx(expected)
    assert sum(v for _, v in imp.by_family()) == pytest.approx(1.0)
    assert [k for k, _ in imp.by_scale()] == ["sigma 0.5", "sigma 1", "sigma 2", "sigma 4",
                                              "sigma 8", "sigma 16"]
    assert [k for k, _ in imp.by_family()] == ["intensity", "edges", "texture", "laplacian",
                                               "deviation", "structure"]


class OneColumn:
    """A fitted duck-typed classifier that looks at feature ``col`` only."""

    def __init__(self, col: int, n_features: int):
        self.col, self.n_features_in_ = col, n_features
        self.classes_ = np.array([1, 2])

    def predict_proba(self, X):
        p2 = np.clip(X[:, self.col] / 255.0, 0.01, 0.99)
        return np.stack([1 - p2, p2], axis=1)


def test_permutation_importance_finds_the_one_feature_a_model_uses():
    stack = FeatureStack("basic", {"sigma_max": 4})
    names = stack.feature_names(1)
    col = names.index("ch0 sigma=2 edges")
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (600, len(names))).astype(np.uint8)
    y = np.where(X[:, col] > 127, 2, 1)
    model = SegmentationModel(OneColumn(col, len(names)), stack, "random_forest", {}, 1,
                              [segdash.ClassInfo(1, "a", "#000000"),
                               segdash.ClassInfo(2, "b", "#ffffff")], None)
    imp = feature_importance(model, X, y)
    assert imp.method == "permutation"
    assert imp.cells[("basic", "edges", 2.0)] == pytest.approx(1.0)
    assert dict(imp.by_family())["edges"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="permutation"):
        feature_importance(model)  # no painted pixels to permute


def test_gradient_boosting_importance_is_measured_on_the_painted_pixels(texture):
    image, labels = texture
    model = segdash.fit(image, labels, classifier="gradient_boosting")
    X, y = painted_rows(model.feature_codes(image), labels)
    imp = feature_importance(model, X, y)
    assert imp.method == "permutation"
    assert sum(imp.cells.values()) == pytest.approx(1.0)


def test_a_model_whose_settings_changed_since_training_is_refused(texture):
    image, labels = texture
    model = segdash.fit(image, labels)
    model.stack.extractors[0][1].deviation = False  # 44 features now, 49 fitted
    with pytest.raises(ValueError, match="train it again"):
        feature_importance(model)


def test_useful_settings_keep_the_families_and_scales_covering_the_share():
    stack = FeatureStack("basic")
    cells = {("basic", "edges", 1.0): 0.5, ("basic", "edges", 4.0): 0.2,
             ("basic", "intensity", 2.0): 0.25, ("basic", "texture", 16.0): 0.05}
    imp = Importance(cells, "impurity", 49)
    families, scales = useful_cells(imp, 0.9)
    assert families == {("basic", "edges"), ("basic", "intensity")}
    assert scales == {("basic", 1.0), ("basic", 2.0), ("basic", 4.0)}
    got = useful_settings(imp, stack, 0.9)["basic"]
    assert (got["edges"], got["intensity"], got["texture"], got["structure"]) == (
        True, True, False, False)
    assert (got["sigma_min"], got["sigma_max"]) == (1.0, 4.0)
    assert got["texture_channels"] == "mean"  # the rest as it was


def test_an_extractor_that_cannot_be_trimmed_keeps_its_settings():
    class Plain(FeatureExtractor):
        def feature_names(self, n_channels):
            return ["a", "b"]

    stack = FeatureStack.from_objects([("plain", Plain())])
    imp = Importance({("plain", "a", None): 1.0, ("plain", "b", None): 0.0}, "impurity", 2)
    assert useful_settings(imp, stack) == {"plain": {}}


def test_session_keeps_the_useful_features_and_goes_back(texture):
    image, labels = texture
    seg = segdash.Segmenter(image=image)
    seg.set_strokes(scribble_strokes(96))
    full = len(seg.model.feature_names)
    assert not seg.can_restore_features
    settings = seg.keep_useful_features()
    assert seg.can_restore_features
    kept = len(seg.model.feature_names)
    assert kept < full and kept == len(seg.feature_stack().feature_names(1))
    assert seg.extractor("basic").structure == settings["basic"]["structure"]
    assert (seg.segmentation > 0).all()
    seg.restore_features()
    assert not seg.can_restore_features and len(seg.model.feature_names) == full


def test_session_without_live_update_retrains_when_keeping_the_useful_features(texture):
    image, labels = texture
    seg = segdash.Segmenter(image=image, live_update=False)
    seg.set_strokes(scribble_strokes(96))
    seg.train()
    full = len(seg.model.feature_names)
    seg.keep_useful_features()
    assert len(seg.model.feature_names) < full

