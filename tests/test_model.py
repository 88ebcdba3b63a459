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
