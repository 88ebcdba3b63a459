"""Hostile model files: built by editing a real fitted model's arrays or its skops archive.

Each is loaded in this very process (``segdash.load_model`` / ``model_from_bytes``), as
the dashboard and ``segdash apply`` do: the load must raise a clear ``ModelFileError`` and
this process must carry on (a native crash would end the test run).
"""

from __future__ import annotations

import copy
import io
import json
import os
import zipfile

import numpy as np
import pytest
import skops.io as sio

import segdash
from segdash import registry
from segdash.classifiers import RandomForest
from segdash.errors import ModelFileError
from segdash.model import model_from_bytes

from .conftest import scribbles, two_texture_image


def _fit(classifier: str = "random_forest", **params) -> segdash.SegmentationModel:
    img, _ = two_texture_image(64)
    return segdash.fit(img, scribbles(64), feature_params={"sigma_min": 1, "sigma_max": 2},
                       classifier=classifier, classifier_params=params)


@pytest.fixture(scope="module")
def forest():
    return _fit(n_estimators=3, max_depth=4)


@pytest.fixture(scope="module")
def deep_forest():  # unlimited depth: the general layout of the compiled walk
    return _fit(n_estimators=2, max_depth=None, extra_trees=False)


@pytest.fixture(scope="module")
def boosting():
    return _fit("gradient_boosting", max_iter=3)


def _hostile(model: segdash.SegmentationModel, edit) -> bytes:
    """The model file of a deep copy of ``model`` after ``edit(estimator)``."""
    doc = model.document()
    doc["estimator"] = copy.deepcopy(model.estimator)
    edit(doc["estimator"])
    return sio.dumps(doc)


def _first_internal(tree) -> int:
    return int(np.flatnonzero(tree.children_left >= 0)[-1])


def _forest_feature(est) -> None:
    t = est.estimators_[0].tree_
    t.feature[_first_internal(t)] = 10**6


def _forest_child_to_root(est) -> None:
    t = est.estimators_[-1].tree_
    t.children_right[_first_internal(t)] = 0


@pytest.mark.parametrize("layout", ["forest", "deep_forest"])
def test_tree_testing_a_feature_beyond_the_models_is_refused(layout, request):
    model = request.getfixturevalue(layout)
    data = _hostile(model, _forest_feature)
    last = len(model.feature_names) - 1
    with pytest.raises(ModelFileError, match=rf"unsafe.*feature 1000000, outside 0\.\.{last}"):
        model_from_bytes(data)


@pytest.mark.parametrize("layout", ["forest", "deep_forest"])
def test_tree_whose_child_points_back_to_the_root_is_refused(layout, request):
    model = request.getfixturevalue(layout)
    data = _hostile(model, _forest_child_to_root)
    with pytest.raises(ModelFileError, match="unsafe.*a cycle or an index out of range"):
        model_from_bytes(data)


def _hgb_nodes(est):
    return est._predictors[0][0].nodes


def test_boosting_tree_testing_a_feature_beyond_the_models_is_refused(boosting):
    def edit(est):
        nodes = _hgb_nodes(est)
        nodes["feature_idx"][np.flatnonzero(~nodes["is_leaf"].astype(bool))[0]] = 5000

    with pytest.raises(ModelFileError, match="feature 5000, outside"):
        model_from_bytes(_hostile(boosting, edit))


def test_boosting_tree_whose_child_points_back_to_the_root_is_refused(boosting):
    def edit(est):
        nodes = _hgb_nodes(est)
        nodes["left"][np.flatnonzero(~nodes["is_leaf"].astype(bool))[-1]] = 0

    with pytest.raises(ModelFileError, match="a cycle"):
        model_from_bytes(_hostile(boosting, edit))


def test_nan_thresholds_and_values_are_refused(forest):
    def nan_threshold(est):
        t = est.estimators_[1].tree_
        t.threshold[0] = np.nan

    def nan_value(est):
        est.estimators_[2].tree_.value[0, 0, 0] = np.inf

    with pytest.raises(ModelFileError, match="threshold is NaN"):
        model_from_bytes(_hostile(forest, nan_threshold))
    with pytest.raises(ModelFileError, match="not finite"):
        model_from_bytes(_hostile(forest, nan_value))


def _lightgbm_model():
    pytest.importorskip("segdash_lightgbm")
    return _fit("lightgbm", n_estimators=3, num_leaves=7)


def _edit_schema(data: bytes, edit) -> bytes:
    zin = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            content = zin.read(info.filename)
            if info.filename == "schema.json":
                content = edit(content.decode()).encode()
            zout.writestr(info.filename, content)
    return out.getvalue()


def test_corrupt_lightgbm_booster_is_refused_and_the_caller_survives(tmp_path):
    # LightGBM aborts the whole process (SIGABRT) on this booster string: the load must
    # happen in a child, and this process must get an error instead.
    data = _lightgbm_model().to_bytes()

    def corrupt(schema: str) -> str:
        assert "num_leaves=" in schema
        return schema.replace("num_leaves=", "num_leaves=7000000", 1)

    path = tmp_path / "corrupt.skops"
    path.write_bytes(_edit_schema(data, corrupt))
    with pytest.raises(ModelFileError, match=r"isolated process aborted \(SIGABRT"):
        segdash.load_model(path)
    # still alive, and a sound file still loads
    assert model_from_bytes(data).classifier == "lightgbm"


# -- archives ------------------------------------------------------------------------------

def test_member_too_large_uncompressed_is_refused_before_reading(forest):
    out = io.BytesIO(forest.to_bytes())
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("big.npy", "w", force_zip64=True) as fh:
            block = bytes(16 << 20)
            for _ in range(37):  # 620 MB of zeros, 2.7 MB compressed
                fh.write(block)
    data = out.getvalue()
    assert len(data) < 5_000_000
    with pytest.raises(ModelFileError, match="'big.npy' would take 620756992 bytes"):
        model_from_bytes(data)


def test_huge_schema_is_refused_before_reading(forest):
    big = " " * 100_000_000  # 100 MB of JSON whitespace, 0.1 MB compressed

    def pad(schema: str) -> str:
        return schema + big

    data = _edit_schema(forest.to_bytes(), pad)
    assert len(data) < 2_000_000
    with pytest.raises(ModelFileError, match="schema.json over"):
        model_from_bytes(data)


def test_array_referenced_many_times_is_refused(forest):
    # skops reads an array file once per node referencing it: 40 references to one
    # 256 MB member cost 10 GB. A file segdash writes references each array once.
    def repeat(schema: str) -> str:
        doc = json.loads(schema)
        nodes, todo = [], [doc]
        while todo:
            node = todo.pop()
            if isinstance(node, dict):
                if node.get("__loader__") == "NdArrayNode" and "file" in node:
                    nodes.append(node)
                todo.extend(node.values())
            elif isinstance(node, list):
                todo.extend(node)
        assert len(nodes) > 3
        for node in nodes:
            node["file"] = nodes[0]["file"]
        return json.dumps(doc)

    with pytest.raises(ModelFileError, match="referenced more than once"):
        model_from_bytes(_edit_schema(forest.to_bytes(), repeat))


def test_overlapping_members_are_refused(forest):
    zin = zipfile.ZipFile(io.BytesIO(forest.to_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info.filename))
        member = next(i for i in zout.filelist if i.filename.endswith(".npy"))
        for k in range(40):  # 40 directory entries, one member's bytes
            clone = copy.copy(member)
            clone.filename = f"copy{k}.npy"
            zout.filelist.append(clone)
            zout.NameToInfo[clone.filename] = clone
    with pytest.raises(ModelFileError, match="overlapping"):
        model_from_bytes(out.getvalue())


def test_empty_model_file_says_it_is_empty(tmp_path):
    (tmp_path / "empty.skops").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"empty \(0 bytes\)"):
        segdash.load_model(tmp_path / "empty.skops")


# -- metadata ------------------------------------------------------------------------------

def _with(model, **changes) -> bytes:
    doc = model.document()
    doc.update(changes)
    return sio.dumps(doc)


def test_huge_channel_count_is_refused_before_building_anything(forest):
    with pytest.raises(ModelFileError, match=r"n_channels = 10000000 \(1\.\.64 allowed\)"):
        model_from_bytes(_with(forest, n_channels=10**7))


def test_too_many_classes_are_refused(forest):
    classes = [{"id": i, "name": f"c{i}", "color": "#112233"} for i in range(1, 1001)]
    with pytest.raises(ModelFileError, match=r"1000 classes \(1\.\.256 allowed\)"):
        model_from_bytes(_with(forest, classes=classes))


@pytest.mark.parametrize("bad_id", [-3, 2**40, 70000])
def test_class_ids_outside_1_to_65535_are_refused_not_wrapped(forest, bad_id):
    def edit(est):
        ids = np.array([1, bad_id], dtype=np.int64)
        est.classes_ = ids
        for tree in est.estimators_:
            tree.classes_ = ids

    with pytest.raises(ModelFileError, match="class ids must be 1..65535"):
        model_from_bytes(_hostile(forest, edit))


def test_class_ids_must_match_the_files_classes(forest):
    classes = [{"id": 1, "name": "a", "color": "#112233"}, {"id": 9, "name": "b",
                                                              "color": "#445566"}]
    with pytest.raises(ModelFileError, match="differ from the file's classes"):
        model_from_bytes(_with(forest, classes=classes))


def test_huge_settings_are_refused(forest):
    clf = dict(forest.document()["classifier"])
    clf["settings"] = {**clf["settings"], "padding": "x" * 100_000}
    with pytest.raises(ModelFileError, match="classifier's settings take"):
        model_from_bytes(_with(forest, classifier=clf))


# -- trust ---------------------------------------------------------------------------------

class TrustsEverything(RandomForest):
    """A plugin declaring dangerous types: only files naming it may hold them."""

    trusted_types = ("posix.system", "builtins.eval")


@pytest.fixture
def reckless_plugin():
    registry.classifiers.register("reckless_for_test", TrustsEverything, overwrite=True)
    yield "reckless_for_test"
    registry.classifiers.unregister("reckless_for_test")


def test_a_plugins_trusted_types_do_not_open_files_naming_another_classifier(
        forest, reckless_plugin):
    doc = forest.document()
    doc["extra"] = os.system
    assert doc["classifier"]["name"] == "random_forest"
    with pytest.raises(ModelFileError, match=r"does not trust \(posix.system\) for the "
                                             r"classifier 'random_forest'"):
        model_from_bytes(sio.dumps(doc))


def test_trusted_types_are_those_of_the_named_classifier_only(reckless_plugin):
    from segdash.modelfile import trusted_types

    assert trusted_types("random_forest") == {"sklearn.tree._tree.Tree"}
    assert "posix.system" in trusted_types(reckless_plugin)
    assert "posix.system" not in trusted_types("gradient_boosting")


def test_limits_changed_in_the_calling_process_apply_in_the_checking_child(forest,
                                                                          monkeypatch):
    from segdash import modelfile, treewalk

    data = forest.to_bytes()
    monkeypatch.setattr(modelfile, "MAX_CLASSES", 1)
    with pytest.raises(ModelFileError, match=r"2 classes \(1\.\.1 allowed\)"):
        model_from_bytes(data)
    monkeypatch.setattr(modelfile, "MAX_CLASSES", 256)
    monkeypatch.setattr(treewalk, "MAX_TREE_DEPTH", 2)
    with pytest.raises(ModelFileError, match="deeper than 2 levels"):
        model_from_bytes(data)
