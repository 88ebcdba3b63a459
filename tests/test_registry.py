import importlib.metadata as im
import warnings
from types import SimpleNamespace

import numpy as np
import param
import pytest

import segdash
from segdash.contract import FeatureExtractor, validate_feature_extractor
from segdash.errors import PluginLoadError, UnknownNameError
from segdash.registry import Registry


class GoodFeatures(FeatureExtractor):
    scale = param.Number(1.0)

    def compute(self, image):
        return image.astype(np.float32) * self.scale

    def feature_names(self, n_channels):
        return [f"ch{c} raw" for c in range(n_channels)]

    @property
    def halo(self):
        return 0


class WrongShapeFeatures(GoodFeatures):
    def compute(self, image):
        return np.zeros((3, 3, 1), np.float32)


def _ep(name, value, dist=None):
    ep = im.EntryPoint(name, value, "segdash.features")
    if dist is not None:
        ep = ep._for(SimpleNamespace(metadata={"Name": dist[0]}, version=dist[1]))
    return ep


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "raising_plugin.py").write_text("raise ImportError('no libfoo here')\n")
    (tmp_path / "counting_plugin.py").write_text(
        "IMPORTS = []\nIMPORTS.append(1)\n"
        "from tests.test_registry import GoodFeatures as Feat\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def make_registry(eps):
    return Registry("segdash.features", "feature extractor", validate_feature_extractor,
                    discover=lambda: eps)


def test_builtins_are_discovered_through_entry_points():
    assert "basic" in segdash.registry.features.names()
    assert {"random_forest", "gradient_boosting"} <= set(segdash.registry.classifiers.names())
    info = segdash.registry.features.info("basic")
    assert info.distribution == "segdash"
    assert info.value == "segdash.features.basic:BasicFeatures"


def test_names_does_not_import_plugins(plugin_dir):
    import sys

    reg = make_registry([_ep("counting", "counting_plugin:Feat")])
    assert reg.names() == ["counting"]
    assert "counting_plugin" not in sys.modules
    assert reg.get("counting") is GoodFeatures
    assert "counting_plugin" in sys.modules


def test_get_caches_the_loaded_object(plugin_dir):
    reg = make_registry([_ep("good", "tests.test_registry:GoodFeatures")])
    assert reg.get("good") is reg.get("good")


def test_broken_plugin_is_recorded_not_raised_on_listing(plugin_dir):
    reg = make_registry([
        _ep("raising", "raising_plugin:Feat", dist=("segdash-broken", "0.3")),
        _ep("good", "tests.test_registry:GoodFeatures"),
    ])
    loaded = reg.load_all()
    assert list(loaded) == ["good"]
    [err] = reg.errors
    assert err.name == "raising"
    assert err.info.distribution == "segdash-broken" and err.info.version == "0.3"
    assert isinstance(err.exception, ImportError)
    assert "no libfoo here" in str(err) and "segdash-broken 0.3" in str(err)
    with pytest.raises(PluginLoadError, match="no libfoo here"):
        reg.get("raising")


def test_wrong_shape_extractor_is_recorded_as_error():
    reg = make_registry([_ep("wrong", "tests.test_registry:WrongShapeFeatures")])
    assert reg.load_all() == {}
    [err] = reg.errors
    assert "expected (24, 20, 2)" in str(err)


def test_unknown_name_lists_available_names():
    reg = make_registry([_ep("good", "tests.test_registry:GoodFeatures"),
                         _ep("other", "tests.test_registry:GoodFeatures")])
    with pytest.raises(UnknownNameError, match="available: good, other") as info:
        reg.get("nope")
    assert isinstance(info.value, ValueError)


def test_duplicate_names_resolve_deterministically_with_warning():
    eps = [
        _ep("dup", "tests.test_registry:WrongShapeFeatures", dist=("zzz-plugin", "1")),
        _ep("dup", "tests.test_registry:GoodFeatures", dist=("aaa-plugin", "1")),
    ]
    for order in (eps, eps[::-1]):
        reg = make_registry(order)
        with pytest.warns(UserWarning, match="declared more than once"):
            names = reg.names()
        assert names == ["dup"]
        assert reg.info("dup").distribution == "aaa-plugin"
        assert reg.get("dup") is GoodFeatures


def test_segdash_own_entry_wins_a_name_clash():
    eps = [
        _ep("basic", "tests.test_registry:GoodFeatures", dist=("aaa-plugin", "1")),
        _ep("basic", "segdash.features.basic:BasicFeatures", dist=("segdash", "0.1")),
    ]
    reg = make_registry(eps)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert reg.get("basic").__name__ == "BasicFeatures"


def test_register_refuses_duplicates_unless_overwrite():
    reg = make_registry([_ep("good", "tests.test_registry:GoodFeatures")])
    with pytest.raises(ValueError, match="already registered"):
        reg.register("good", GoodFeatures)
    reg.register("good", GoodFeatures, overwrite=True)
    reg.register("mine", GoodFeatures)
    assert reg.names() == ["good", "mine"]
    assert reg.get("mine") is GoodFeatures


def test_register_validates_the_object():
    reg = make_registry([])
    with pytest.raises(PluginLoadError, match="param.Parameterized"):
        reg.register("bad", object)
    with pytest.raises(PluginLoadError, match="returned shape"):
        reg.register("wrong", WrongShapeFeatures)
    assert reg.names() == []


def test_registered_extractor_is_usable_by_fit(two_texture):
    img, truth, labels = two_texture
    segdash.registry.features.register("raw_test", GoodFeatures)
    try:
        model = segdash.fit(img, labels, features="raw_test")
        assert model.feature_names == ["ch0 raw"]
    finally:
        segdash.registry.features.unregister("raw_test")
    assert "raw_test" not in segdash.registry.features.names()


def test_classifier_without_predict_proba_is_refused():
    from segdash.contract import validate_classifier

    class NoProba(param.Parameterized):
        def build(self):
            return object()

    with pytest.raises(PluginLoadError, match="fit, predict_proba"):
        validate_classifier(NoProba)
