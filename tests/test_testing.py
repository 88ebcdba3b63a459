"""The plugin author's kit catches broken extractors and classifiers, and passes good ones."""

from __future__ import annotations

import numpy as np
import param
import pytest
from scipy import ndimage as ndi

import segdash
from segdash.contract import Classifier, FeatureExtractor
from segdash.testing import (
    CheckFailed,
    check_classifier,
    check_classifier_fit_predict,
    check_classifier_model_roundtrip,
    check_extractor_determinism,
    check_extractor_finite,
    check_extractor_halo,
    check_extractor_model_roundtrip,
    check_extractor_shapes,
    check_feature_extractor,
)


class Smooth(FeatureExtractor):
    """A correct extractor: Gaussian smoothing, padded by its true reach."""

    sigma = param.Number(2.0, bounds=(0.5, 8))

    @property
    def halo(self) -> int:
        return int(4 * self.sigma + 0.5)

    def feature_names(self, n_channels: int) -> list[str]:
        return [f"ch{c} smooth" for c in range(n_channels)]

    def compute(self, image: np.ndarray) -> np.ndarray:
        p = self.halo
        padded = np.pad(image, ((p, p), (p, p), (0, 0)), mode="symmetric")
        out = ndi.gaussian_filter(padded, (self.sigma, self.sigma, 0))
        return np.ascontiguousarray(out[p:-p or None, p:-p or None], dtype=np.float32)


class WrongShape(Smooth):
    def compute(self, image: np.ndarray) -> np.ndarray:
        return super().compute(image)[:, :-1]


class TooFewNames(Smooth):
    def feature_names(self, n_channels: int) -> list[str]:
        return ["smooth"]


class Float64(Smooth):
    def compute(self, image: np.ndarray) -> np.ndarray:
        return super().compute(image).astype(np.float64)


class DishonestHalo(Smooth):
    """Smooths with sigma 2 (reach 8 px) but claims a halo of 1 px."""

    @property
    def halo(self) -> int:
        return 1


class GlobalNormalisation(Smooth):
    """Divides by the image's maximum: no halo can make that tile-able."""

    def compute(self, image: np.ndarray) -> np.ndarray:
        out = super().compute(image)
        return out / out.max()


class NaNOnFlat(Smooth):
    def compute(self, image: np.ndarray) -> np.ndarray:
        out = super().compute(image)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (out - out.mean()) / out.std()


class Random(Smooth):
    def compute(self, image: np.ndarray) -> np.ndarray:
        return super().compute(image) + np.random.default_rng().random(1, np.float32)


class MutatesInput(Smooth):
    def compute(self, image: np.ndarray) -> np.ndarray:
        out = super().compute(image)
        image *= 2
        return out


class ObjectSetting(Smooth):
    """A setting whose value skops refuses to load (an arbitrary object)."""

    kernel = param.Parameter(default=None)

    def __init__(self, **params):
        params.setdefault("kernel", _Kernel())
        super().__init__(**params)


class _Kernel:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Kernel)

    __hash__ = object.__hash__


def test_a_correct_extractor_passes_every_check():
    check_feature_extractor(Smooth)
    check_feature_extractor(Smooth(sigma=3.5))


def test_builtin_basic_features_pass_the_kit():
    check_feature_extractor(segdash.registry.features.get("basic"))


def test_kit_catches_a_wrong_shape_extractor():
    with pytest.raises(CheckFailed, match=r"returned shape \(17, 22, 1\).*expected \(17, 23, 1\)"):
        check_extractor_shapes(WrongShape)
    with pytest.raises(CheckFailed, match="returned shape"):
        check_feature_extractor(WrongShape)


def test_kit_catches_names_that_do_not_match_the_features():
    with pytest.raises(CheckFailed, match=r"expected \(31, 20, 1\)"):
        check_extractor_shapes(TooFewNames)


def test_kit_catches_a_wrong_dtype():
    with pytest.raises(CheckFailed, match="float64; expected float32"):
        check_feature_extractor(Float64)


def test_kit_catches_a_dishonest_halo_and_says_the_true_reach():
    with pytest.raises(CheckFailed, match="dishonest halo: halo is 1") as info:
        check_extractor_halo(DishonestHalo)
    # The true reach of a sigma-2 Gaussian cut at 4 sigma is 8 px; the kit's estimate is
    # where differences fall below float32 noise, a little inside that.
    reach = int(str(info.value).split("up to ")[1].split(" px")[0])
    assert 4 <= reach <= 8
    with pytest.raises(CheckFailed, match="dishonest halo"):
        check_feature_extractor(DishonestHalo)


def test_kit_catches_an_extractor_that_cannot_be_tiled_at_all():
    with pytest.raises(CheckFailed, match="global normalisation"):
        check_extractor_halo(GlobalNormalisation)


def test_halo_check_passes_an_honest_extractor_with_a_large_halo():
    check_extractor_halo(Smooth(sigma=8))  # halo 32


def test_kit_catches_nan_on_flat_images():
    with pytest.raises(CheckFailed, match="NaN or infinite features on a constant image"):
        check_extractor_finite(NaNOnFlat)


def test_kit_catches_nondeterminism():
    with pytest.raises(CheckFailed, match="two calls on the same image"):
        check_extractor_determinism(Random)


def test_kit_catches_input_mutation():
    with pytest.raises(CheckFailed, match="modified its input"):
        check_extractor_shapes(MutatesInput)


def test_kit_catches_settings_that_do_not_survive_a_saved_model():
    with pytest.raises(CheckFailed, match="does not save and load.*plain values"):
        check_extractor_model_roundtrip(ObjectSetting)


def test_model_roundtrip_check_leaves_the_registry_as_it_was():
    before = segdash.registry.features.names()
    check_extractor_model_roundtrip(Smooth)
    assert segdash.registry.features.names() == before


# -- classifiers ----------------------------------------------------------------------------


class Forest(Classifier):
    n_estimators = param.Integer(5)
    random_state = param.Integer(0, allow_None=True)
    trusted_types = ("sklearn.tree._tree.Tree",)

    def build(self):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=self.n_estimators,
                                      random_state=self.random_state)


class Unseeded(Forest):
    random_state = param.Integer(None, allow_None=True)


class SameObject(Forest):
    def build(self):
        if not hasattr(self, "_est"):
            self._est = super().build()
        return self._est


class _Reversed:
    """Columns of predict_proba in the wrong order."""

    def __init__(self, est):
        self.est = est

    def fit(self, X, y):
        self.est.fit(X, y)
        self.classes_ = self.est.classes_
        return self

    def predict_proba(self, X):
        return self.est.predict_proba(X)[:, ::-1]

    def predict(self, X):
        return self.est.predict(X)


class ReversedColumns(Forest):
    def build(self):
        return _Reversed(super().build())


class UndeclaredTypes(Forest):
    trusted_types = ()


def test_a_correct_classifier_passes_every_check():
    check_classifier(Forest)
    check_classifier(Forest(n_estimators=3))


@pytest.mark.parametrize("name", ["random_forest", "gradient_boosting"])
def test_builtin_classifiers_pass_the_kit(name):
    check_classifier(segdash.registry.classifiers.get(name))


def test_kit_catches_predict_proba_columns_out_of_classes_order():
    with pytest.raises(CheckFailed, match="columns must follow classes_"):
        check_classifier_fit_predict(ReversedColumns)


def test_kit_catches_an_unseeded_classifier():
    with pytest.raises(CheckFailed, match="fixed default"):
        check_classifier(Unseeded)


def test_kit_catches_build_returning_the_same_estimator():
    with pytest.raises(CheckFailed, match="same object twice"):
        check_classifier(SameObject)


def test_kit_catches_missing_trusted_types_even_when_another_entry_declares_them():
    # random_forest declares sklearn's Tree, so a model file would load anyway; the entry
    # itself must still declare what its estimator needs.
    with pytest.raises(CheckFailed, match=r"add \['sklearn.tree._tree.Tree'\]"):
        check_classifier_model_roundtrip(UndeclaredTypes)


class FineForest(Forest):
    """A correct entry with feature_repeats: a forest, whose trees can be read back."""

    def feature_repeats(self, scales):
        return [2 if s is not None and s <= 1 else 1 for s in scales]


class RepeatedBoosting(Forest):
    """feature_repeats on an estimator segdash cannot read back on the features."""

    trusted_types = ()

    def build(self):
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(max_iter=3)

    def feature_repeats(self, scales):
        return [2] * len(scales)


class WrongRepeats(Forest):
    def feature_repeats(self, scales):
        return [1, 2]


def test_kit_passes_a_forest_with_feature_repeats():
    check_classifier(FineForest)


@pytest.mark.parametrize("entry, message", [
    (RepeatedBoosting, "declares feature_repeats, but feature_repeats needs a scikit-learn"),
    (WrongRepeats, r"must give 5 integer counts"),
])
def test_kit_catches_feature_repeats_segdash_cannot_use(entry, message):
    with pytest.raises(CheckFailed, match=message):
        check_classifier(entry)
