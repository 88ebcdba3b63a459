import numpy as np
import pytest

import segdash
from segdash import Segmenter


def _paint(seg, size=128):
    seg.extractor("basic").sigma_max = 4  # the texture's grain (see test_core)
    c = size // 2
    seg.add_stroke([c - 20, c + 20], [c, c], 2, width=4)
    seg.add_stroke([4, size - 4], [6, 6], 1, width=4)
    seg.add_stroke([size - 6, size - 6], [4, size - 4], 1, width=4)


def test_two_classes_by_default_and_strokes_train_live(two_texture):
    img, truth, _ = two_texture
    seg = Segmenter(image=img)
    assert [c.id for c in seg.classes] == [1, 2]
    _paint(seg)
    assert seg.segmentation is not None and seg.error == ""
    assert (seg.segmentation == truth).mean() > 0.9
    assert seg.probabilities.shape == (128, 128, 2)
    assert seg.uncertainty.shape == (128, 128) and seg.uncertainty.dtype == np.float32
    assert 0 <= seg.uncertainty.min() and seg.uncertainty.max() <= 0.5 + 1e-6
    assert set(np.unique(seg.labels)) == {0, 1, 2}


def test_one_class_painted_reports_a_status_not_an_exception(two_texture):
    img, _, _ = two_texture
    seg = Segmenter(image=img)
    seg.add_stroke([10, 20], [10, 10], 1)
    assert seg.segmentation is None
    assert "at least two classes" in seg.status


def test_undo_redo_clear(two_texture):
    img, _, _ = two_texture
    seg = Segmenter(image=img, live_update=False)
    _paint(seg)
    painted = list(seg.strokes)
    before = seg.labels.copy()
    assert seg.undo() is True
    assert seg.strokes == painted[:2]
    assert np.count_nonzero(seg.labels) < np.count_nonzero(before)
    assert seg.redo() is True and seg.strokes == painted
    np.testing.assert_array_equal(seg.labels, before)
    assert seg.redo() is False
    seg.undo()
    seg.add_stroke([1, 2], [1, 2], 1)  # a new stroke drops the redo history
    assert not seg.can_redo
    seg.clear()
    assert seg.strokes == [] and np.count_nonzero(seg.labels) == 0
    assert seg.undo() is True  # Clear is undone like a stroke
    assert len(seg.strokes) == 3


def test_features_are_cached_across_strokes_and_recomputed_on_settings(two_texture):
    img, _, _ = two_texture
    seg = Segmenter(image=img)
    _paint(seg)
    assert seg.feature_computations == 1
    seg.add_stroke([30, 40], [100, 100], 1)
    seg.undo()
    assert seg.feature_computations == 1
    seg.extractor("basic").sigma_max = 2
    assert seg.feature_computations == 2
    seg.add_stroke([30, 40], [100, 100], 1)
    assert seg.feature_computations == 2
    seg.set_image(img.copy())
    _paint(seg)
    assert seg.feature_computations == 3


def test_switching_classifier_retrains(two_texture):
    img, _, _ = two_texture
    seg = Segmenter(image=img)
    _paint(seg)
    assert seg.model.classifier == "random_forest"
    seg.classifier = "gradient_boosting"
    assert seg.model.classifier == "gradient_boosting"
    assert seg.feature_computations == 1


def test_classes_add_rename_recolor_remove(two_texture):
    img, _, _ = two_texture
    seg = Segmenter(image=img, live_update=False)
    third = seg.add_class()
    assert third.id == 3 and third.color != seg.classes[0].color
    seg.rename_class(3, "pores")
    seg.recolor_class(3, "#123456")
    assert seg.class_info(3).name == "pores" and seg.class_info(3).color == "#123456"
    seg.add_stroke([1, 5], [1, 1], 3)
    seg.add_stroke([1, 5], [9, 9], 1)
    seg.remove_class(3)
    assert [c.id for c in seg.classes] == [1, 2]
    assert [s.label for s in seg.strokes] == [1]
    with pytest.raises(ValueError, match="no class with id 3"):
        seg.add_stroke([1], [1], 3)


def test_annotations_json_round_trip(two_texture):
    img, _, _ = two_texture
    seg = Segmenter(image=img, live_update=False)
    seg.add_class("extra")
    _paint(seg)
    text = seg.strokes_json()
    other = Segmenter(image=img, live_update=False)
    assert other.load_strokes_json(text) == 3
    assert other.strokes == seg.strokes
    assert [c.name for c in other.classes] == ["class 1", "class 2", "extra"]
    small = Segmenter(image=img[:50, :50])
    with pytest.raises(ValueError, match="128x128 image"):
        small.load_strokes_json(text)


def test_applying_a_model_for_another_channel_count_is_refused(two_texture, rgb_image):
    img, truth, labels = two_texture
    model = segdash.fit(img, labels)
    seg = Segmenter(image=rgb_image)
    with pytest.raises(segdash.ImageError, match="1 channel"):
        seg.apply_model(model)
    seg2 = Segmenter(image=img)
    seg2.apply_model(model)
    assert (seg2.segmentation == truth).mean() > 0.9


def test_superseded_training_does_not_publish():
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    seg = Segmenter(image=img, live_update=False)
    seg.add_stroke([2, 30], [2, 2], 1)
    seg.add_stroke([2, 30], [29, 29], 2)

    original = seg.feature_codes

    def slow_features():
        feats = original()
        seg.add_stroke([2, 30], [15, 15], 1)  # a newer change arrives meanwhile
        return feats

    seg.feature_codes = slow_features
    assert seg.train() is None
    assert seg.segmentation is None
