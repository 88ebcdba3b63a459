"""Plugins end to end: the example plugins under plugins/, combined features, saved models,
missing and broken plugins, and ``segdash plugins``.

Broken and missing plugins are real distributions: a ``.dist-info`` folder with an
``entry_points.txt`` and the plugin's modules, written to a temporary folder that is put on
``PYTHONPATH`` of a fresh Python process (nothing is installed into the shared virtualenv).
"""

from __future__ import annotations

import importlib.metadata as im
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import segdash
from segdash.errors import MissingPluginError
from segdash.plugins_report import collect, format_report
from segdash.registry import Registry

from .conftest import scribbles, two_texture_image

EXAMPLE_PLUGINS = {
    ("features", "texture"): ("segdash-texture", "segdash_texture:TextureFeatures"),
    ("classifiers", "lightgbm"): ("segdash-lightgbm", "segdash_lightgbm:LightGBM"),
}


def _installed(dist: str) -> bool:
    try:
        im.distribution(dist)
    except im.PackageNotFoundError:
        return False
    return True


needs_examples = pytest.mark.skipif(
    not (_installed("segdash-texture") and _installed("segdash-lightgbm")),
    reason="example plugins not installed: pip install -e plugins/segdash-texture "
           "-e plugins/segdash-lightgbm (make test does it)",
)


def make_distribution(root: Path, name: str, version: str, modules: dict[str, str],
                      entry_points: dict[str, dict[str, str]]) -> Path:
    """Write an installed-looking distribution into ``root`` (a folder for sys.path).

    Parameters
    ----------
    root : Path
        Folder to hold the modules and the ``.dist-info``.
    name, version : str
        Distribution name and version (what ``segdash plugins`` shows).
    modules : dict
        ``{relative path: source}`` of the plugin's modules.
    entry_points : dict
        ``{group: {entry name: "module:attr"}}``.
    """
    for rel, source in modules.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = [f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
              for g, eps in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(groups))
    (info / "RECORD").write_text("")
    return root


def run_python(code: str, path: Path | None = None, cwd: Path | None = None
               ) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter of this environment, ``path`` on PYTHONPATH."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if path is not None:
        env["PYTHONPATH"] = str(path)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


# -- the example plugins ---------------------------------------------------------------------


@needs_examples
@pytest.mark.parametrize(("group", "name"), list(EXAMPLE_PLUGINS))
def test_example_plugins_are_in_the_registries_with_their_distribution(group, name):
    dist, value = EXAMPLE_PLUGINS[(group, name)]
    reg = getattr(segdash.registry, group)
    assert name in reg.names()
    info = reg.info(name)
    assert (info.distribution, info.value) == (dist, value)
    assert info.version == im.version(dist)
    obj = reg.get(name)
    assert f"{obj.__module__}:{obj.__name__}" == value


@needs_examples
def test_combined_plugin_features_save_load_and_predict_identically(tmp_path):
    img, _truth = two_texture_image(96)
    labels = scribbles(96)
    params = {"basic": {"sigma_max": 4}, "texture": {"sigma_max": 4, "lbp_window": 15}}
    model = segdash.fit(img, labels, features=["basic", "texture"], feature_params=params,
                        classifier="lightgbm", classifier_params={"n_estimators": 12})
    n_basic = len(segdash.registry.features.get("basic")(sigma_max=4).feature_names(1))
    n_texture = len(segdash.registry.features.get("texture")(
        sigma_max=4, lbp_window=15).feature_names(1))
    assert len(model.feature_names) == n_basic + n_texture
    assert model.feature_names[0].startswith("basic: ")
    assert model.feature_names[-1].startswith("texture: ")

    model.save(tmp_path / "m.skops")
    loaded = segdash.load_model(tmp_path / "m.skops")
    assert loaded.stack.names == ["basic", "texture"]
    assert loaded.stack.settings["texture"]["lbp_window"] == 15
    assert loaded.stack.settings["basic"]["sigma_max"] == 4
    assert loaded.classifier == "lightgbm"
    assert loaded.classifier_params["n_estimators"] == 12
    np.testing.assert_array_equal(loaded.predict_proba(img), model.predict_proba(img))
    np.testing.assert_array_equal(loaded.predict(img), model.predict(img))


@needs_examples
def test_model_file_records_which_plugin_made_each_part(tmp_path):


    img, _ = two_texture_image(64)
    model = segdash.fit(img, scribbles(64), features=["basic", "texture"],
                        classifier="lightgbm")
    doc = model.document()
    assert [(f["name"], f["distribution"], f["version"]) for f in doc["features"]] == [
        ("basic", "segdash", segdash.__version__),
        ("texture", "segdash-texture", im.version("segdash-texture")),
    ]
    assert doc["classifier"]["distribution"] == "segdash-lightgbm"


@pytest.fixture
def hide_texture(monkeypatch):
    """Call to make segdash.registry.features behave as if segdash-texture were not
    installed: its discovery (the real entry points of this environment) loses that
    distribution's entries. Restored after the test."""
    reg = segdash.registry.features
    real = reg._discover

    def hide() -> None:
        monkeypatch.setattr(reg, "_discover", lambda: [
            ep for ep in real()
            if ep.dist is None or ep.dist.metadata["Name"] != "segdash-texture"])
        reg.refresh()

    yield hide
    monkeypatch.undo()
    reg.refresh()


@needs_examples
def test_loading_a_model_without_its_feature_plugin_names_the_plugin(tmp_path, hide_texture):
    img, _ = two_texture_image(64)
    model = segdash.fit(img, scribbles(64), features=["basic", "texture"])
    model.save(tmp_path / "m.skops")
    hide_texture()
    assert "texture" not in segdash.registry.features.names()
    with pytest.raises(MissingPluginError) as info:
        segdash.load_model(tmp_path / "m.skops")
    msg = str(info.value)
    assert "needs the feature extractor 'texture', which is not installed" in msg
    assert "install the plugin package 'segdash-texture'" in msg
    assert f"(version {im.version('segdash-texture')} made it)" in msg


# -- real distributions in a fresh interpreter ----------------------------------------------

TOY_FEATURES = """
    import numpy as np
    import param
    from scipy import ndimage as ndi
    from segdash.contract import FeatureExtractor


    class Toy(FeatureExtractor):
        sigma = param.Number(2.0)

        @property
        def halo(self):
            return int(4 * self.sigma + 0.5)

        def feature_names(self, n_channels):
            return [f"ch{c} toy" for c in range(n_channels)]

        def compute(self, image):
            p = self.halo
            padded = np.pad(image, ((p, p), (p, p), (0, 0)), mode="symmetric")
            out = ndi.gaussian_filter(padded, (self.sigma, self.sigma, 0))[p:-p, p:-p]
            return np.ascontiguousarray(out, dtype=np.float32)
"""

TRAIN_AND_SAVE = """
    import numpy as np, segdash
    rng = np.random.default_rng(0)
    img = (rng.random((40, 40)) * 255).astype(np.uint8)
    labels = np.zeros((40, 40), np.uint8); labels[5:10, 5:30] = 1; labels[30:35, 5:30] = 2
    model = segdash.fit(img, labels, features=["basic", "toy"], feature_params={{
        "basic": {{"sigma_max": 2}}, "toy": {{"sigma": 3.0}}}})
    model.save({model!r})
    np.save({pred!r}, model.predict_proba(img))
"""

LOAD = """
    import json, numpy as np, segdash
    try:
        model = segdash.load_model({model!r})
    except segdash.MissingPluginError as exc:
        print(json.dumps({{"error": str(exc)}}))
    else:
        rng = np.random.default_rng(0)
        img = (rng.random((40, 40)) * 255).astype(np.uint8)
        same = bool(np.array_equal(model.predict_proba(img), np.load({pred!r})))
        print(json.dumps({{"same": same, "settings": model.stack.settings}}))
"""


def test_model_needing_an_uninstalled_plugin_names_it_in_a_fresh_process(tmp_path):
    site = make_distribution(
        tmp_path / "site", "segdash-toy-features", "0.2.1",
        {"segdash_toy_features.py": TOY_FEATURES},
        {"segdash.features": {"toy": "segdash_toy_features:Toy"}},
    )
    paths = {"model": str(tmp_path / "m.skops"), "pred": str(tmp_path / "p.npy")}
    trained = run_python(TRAIN_AND_SAVE.format(**paths), path=site, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr

    missing = run_python(LOAD.format(**paths), path=None, cwd=tmp_path)
    assert missing.returncode == 0, missing.stderr
    error = json.loads(missing.stdout)["error"]
    assert "needs the feature extractor 'toy', which is not installed" in error
    assert "install the plugin package 'segdash-toy-features' (version 0.2.1 made it)" in error

    back = run_python(LOAD.format(**paths), path=site, cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    result = json.loads(back.stdout)
    assert result["same"] is True
    assert result["settings"]["toy"] == {"sigma": 3.0}


BROKEN_MODULES = {
    "segdash_broken_example/__init__.py": "",
    "segdash_broken_example/raising.py": """
        raise ImportError("libbroken.so.1: cannot open shared object file")
    """,
    "segdash_broken_example/wrong_shape.py": """
        import numpy as np
        from segdash.contract import FeatureExtractor


        class WrongShape(FeatureExtractor):
            halo = 0

            def feature_names(self, n_channels):
                return ["a", "b"]

            def compute(self, image):
                return np.zeros(image.shape[:2] + (3,), np.float32)
    """,
}
BROKEN_ENTRY_POINTS = {
    "segdash.features": {
        "raising": "segdash_broken_example.raising:Features",
        "wrong_shape": "segdash_broken_example.wrong_shape:WrongShape",
    },
}


@pytest.fixture
def broken_site(tmp_path):
    return make_distribution(tmp_path / "site", "segdash-broken-example", "0.1",
                             BROKEN_MODULES, BROKEN_ENTRY_POINTS)


def test_broken_plugins_are_recorded_while_everything_else_works(broken_site, tmp_path):
    result = run_python("""
        import json, numpy as np, segdash
        from segdash.errors import PluginLoadError
        loaded = sorted(segdash.registry.features.load_all())
        errors = {e.name: [e.info.distribution, e.info.version, type(e.exception).__name__,
                           str(e.exception)] for e in segdash.registry.features.errors}
        rng = np.random.default_rng(0)
        img = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
        labels = np.zeros((48, 48), np.uint8); labels[5:10] = 1; labels[-10:-5] = 2
        names = segdash.registry.features.names()
        usable = [n for n in ("basic", "texture") if n in loaded]
        model = segdash.fit(img, labels, features=usable)
        try:
            segdash.fit(img, labels, features=["basic", "wrong_shape"])
            refused = None
        except PluginLoadError as exc:
            refused = str(exc)
        session = segdash.Segmenter(image=img)
        session.features = ["basic", "raising"]
        print(json.dumps({"loaded": loaded, "errors": errors, "names": names,
                          "predicted": list(model.predict(img).shape), "refused": refused,
                          "session_error": session.error}))
    """, path=broken_site, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"raising", "wrong_shape", "basic"} <= set(out["names"])
    assert "basic" in out["loaded"]
    assert "raising" not in out["loaded"] and "wrong_shape" not in out["loaded"]
    dist, version, exc_type, message = out["errors"]["raising"]
    assert (dist, version, exc_type) == ("segdash-broken-example", "0.1", "ImportError")
    assert "libbroken.so.1" in message
    assert "returned shape (24, 20, 3)" in out["errors"]["wrong_shape"][3]
    assert out["predicted"] == [48, 48]
    assert "wrong_shape" in out["refused"] and "returned shape" in out["refused"]
    assert "raising" in out["session_error"] and "libbroken.so.1" in out["session_error"]


def test_segdash_plugins_reports_broken_plugins_and_check_fails(broken_site, tmp_path):
    cli = "import sys; from segdash.cli import main; sys.exit(main({argv!r}))"
    listed = run_python(cli.format(argv=["plugins"]), path=broken_site, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    text = listed.stdout
    assert "Failed to load: 2" in text
    assert ("feature extractor 'raising' (segdash_broken_example.raising:Features, from "
            "segdash-broken-example 0.1): ImportError: libbroken.so.1") in text
    assert "feature extractor 'wrong_shape'" in text and "returned shape" in text
    for line in text.splitlines():
        if line.strip().startswith("basic "):
            assert " ok " in line and "segdash " + segdash.__version__ in line
    checked = run_python(cli.format(argv=["plugins", "--check"]), path=broken_site,
                         cwd=tmp_path)
    assert checked.returncode == 1
    assert "--check: 2 plugin(s) failed to load" in checked.stdout


def test_segdash_plugins_check_passes_when_nothing_is_broken(tmp_path):
    result = subprocess.run([sys.executable, "-m", "segdash.cli", "plugins", "--check"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed to load: none" in result.stdout
    assert "random_forest" in result.stdout


# -- the report as a library ----------------------------------------------------------------


def test_report_lists_every_entry_with_distribution_and_version():
    report = collect()
    names = {(e.kind, e.name) for e in report.entries}
    assert {("feature extractor", "basic"), ("classifier", "random_forest"),
            ("classifier", "gradient_boosting")} <= names
    basic = next(e for e in report.entries if e.name == "basic")
    assert (basic.distribution, basic.version, basic.ok) == ("segdash", segdash.__version__,
                                                             True)
    text = format_report(report)
    assert "segdash.features.basic:BasicFeatures" in text


def test_report_shows_name_clashes_as_warnings():
    eps = [im.EntryPoint("dup", "tests.test_registry:GoodFeatures", "segdash.features"),
           im.EntryPoint("dup", "tests.test_registry:WrongShapeFeatures", "segdash.features")]
    from segdash.contract import validate_classifier, validate_feature_extractor

    features = Registry("segdash.features", "feature extractor", validate_feature_extractor,
                        discover=lambda: eps)
    classifiers = Registry("segdash.classifiers", "classifier", validate_classifier,
                           discover=lambda: [])
    report = collect(features, classifiers)
    assert any("declared more than once" in w for w in report.warnings)
    assert "Warnings:" in format_report(report)
    assert report.of_kind("classifier") == []
    assert "Classifiers (entry-point group segdash.classifiers):\n  none" in format_report(report)


# -- batch apply -----------------------------------------------------------------------------


@needs_examples
def test_tiled_apply_with_plugin_features_and_classifier_equals_whole_image_prediction():
    from segdash.tiling import apply

    img, _ = two_texture_image(128)
    labels = scribbles(128)
    model = segdash.fit(img, labels, features=["basic", "texture"],
                        feature_params={"basic": {"sigma_max": 4},
                                        "texture": {"sigma_max": 4, "lbp_window": 15}},
                        classifier="lightgbm")
    assert model.single_threaded().estimator.n_jobs == 1  # one tile per core, no oversubscription
    big = np.tile(img, (2, 2))
    tile = max(2 * model.halo, 64)
    tiled = apply(model, big, tile=tile, proba=True)
    assert -(-big.shape[0] // tile) > 1  # really tiled
    np.testing.assert_array_equal(tiled, model.predict_proba(big))
