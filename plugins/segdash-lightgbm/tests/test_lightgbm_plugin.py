"""segdash-lightgbm: registration, the author's kit, settings, model files and accuracy."""

from __future__ import annotations

import importlib.metadata as im

import numpy as np
import pytest
import skops.io as sio
from scipy import ndimage as ndi
from segdash_lightgbm import LightGBM

import segdash
from segdash.errors import ModelFileError
from segdash.testing import check_classifier


def two_textures(size: int = 96, seed: int = 0):
    """Fine noise in a disc on coarse noise of the same brightness, with painted bands."""
    rng = np.random.default_rng(seed)
    fine = rng.normal(0, 1, (size, size))
    coarse = ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 4)
    coarse *= fine.std() / coarse.std()
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3.2) ** 2
    image = np.clip(np.where(disc, fine, coarse) * 30 + 128, 0, 255).astype(np.uint8)
    truth = np.where(disc, 2, 1).astype(np.uint8)
    labels = np.zeros_like(truth)
    labels[3:8, 3:-3] = 1
    labels[size // 2 - 2:size // 2 + 3, size // 3:-size // 3] = 2
    return image, truth, labels


def test_lightgbm_is_registered_by_its_entry_point():
    assert "lightgbm" in segdash.registry.classifiers.names()
    info = segdash.registry.classifiers.info("lightgbm")
    assert info.distribution == "segdash-lightgbm"
    assert info.version == im.version("segdash-lightgbm")
    assert segdash.registry.classifiers.get("lightgbm") is LightGBM


def test_default_settings_pass_the_authors_kit():
    check_classifier(LightGBM)


def test_other_settings_pass_the_authors_kit():
    check_classifier(LightGBM(n_estimators=7, num_leaves=4, max_depth=3, subsample=0.5,
                              colsample_bytree=0.5, class_weight=None, reg_lambda=1.0,
                              max_bin=15, n_jobs=1, random_state=3))


def test_settings_map_to_lightgbm_parameters():
    est = LightGBM(max_depth=None, subsample=1.0).build()
    params = est.get_params()
    assert params["max_depth"] == -1
    assert params["subsample_freq"] == 0  # bagging off
    assert params["max_bin"] == 63 and params["verbose"] == -1
    bagged = LightGBM(subsample=0.4, max_depth=5).build().get_params()
    assert (bagged["subsample"], bagged["subsample_freq"], bagged["max_depth"]) == (0.4, 1, 5)


def test_predictions_do_not_depend_on_the_thread_count():
    image, _truth, labels = two_textures()
    probas = [
        segdash.fit(image, labels, classifier="lightgbm",
                    classifier_params={"n_jobs": n}).predict_proba(image)
        for n in (1, 2)
    ]
    np.testing.assert_array_equal(probas[0], probas[1])


def test_fitted_model_holds_only_the_declared_types():
    image, _truth, labels = two_textures(64)
    model = segdash.fit(image, labels, classifier="lightgbm")
    untrusted = set(sio.get_untrusted_types(data=model.to_bytes()))
    assert untrusted
    assert untrusted <= set(LightGBM.trusted_types)


def test_saved_model_loads_and_predicts_identically(tmp_path):
    image, _truth, labels = two_textures()
    model = segdash.fit(image, labels, classifier="lightgbm",
                        classifier_params={"n_estimators": 20, "num_leaves": 7})
    model.save(tmp_path / "m.skops")
    loaded = segdash.load_model(tmp_path / "m.skops")
    assert loaded.classifier == "lightgbm"
    assert loaded.classifier_params["num_leaves"] == 7
    assert type(loaded.estimator).__name__ == "LGBMClassifier"
    np.testing.assert_array_equal(loaded.predict_proba(image), model.predict_proba(image))


def test_model_file_with_an_extra_untrusted_type_is_still_refused(tmp_path):
    image, _truth, labels = two_textures(64)
    model = segdash.fit(image, labels, classifier="lightgbm")
    doc = model.document()
    doc["extra"] = np.random.default_rng(0).bit_generator  # PCG64: not trusted by anyone
    with pytest.raises(ModelFileError, match="does not trust"):
        segdash.model.model_from_bytes(sio.dumps(doc))


def test_accuracy_is_close_to_the_random_forest():
    # Three blobs of different brightness under strong noise: basic features suffice.
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:128, :128]
    truth = np.ones((128, 128), np.uint8)
    truth[(yy - 40) ** 2 + (xx - 40) ** 2 < 25**2] = 2
    truth[(yy - 90) ** 2 + (xx - 85) ** 2 < 28**2] = 3
    image = np.choose(truth - 1, [90.0, 130.0, 170.0]) + rng.normal(0, 40, truth.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    labels = np.zeros_like(truth)
    labels[3:8, 3:-3] = 1
    labels[38:43, 25:55] = 2
    labels[88:93, 70:100] = 3
    unlabelled = labels == 0
    acc = {}
    for clf in ("random_forest", "lightgbm"):
        pred = segdash.fit(image, labels, classifier=clf).predict(image)
        acc[clf] = np.mean(pred[unlabelled] == truth[unlabelled])
    assert acc["lightgbm"] > 0.9
    assert acc["lightgbm"] > acc["random_forest"] - 0.03
