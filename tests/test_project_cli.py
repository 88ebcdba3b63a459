"""``segdash train PROJECT`` and ``segdash apply MODEL PROJECT``: headless, on real files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import segdash
from segdash.cli import main
from segdash.errors import ProjectError
from segdash.project import DEFAULT_NAME, Project, locate

from .test_segmenter_project import bright_scene, open_session, paint, three_image_folder


@pytest.fixture
def painted_project(tmp_path):
    paths, truths = three_image_folder(tmp_path)
    pfile = tmp_path / DEFAULT_NAME
    seg = open_session(pfile, paths)
    paint(seg)
    seg.select(1)
    paint(seg)
    return pfile, paths, truths, seg


def test_train_writes_the_model_the_dashboard_trained(painted_project, tmp_path, capsys):
    pfile, paths, truths, seg = painted_project
    out = tmp_path / "model.skops"
    assert main(["train", str(pfile), "--out", str(out)]) == 0
    assert "2 image(s)" in capsys.readouterr().out
    model = segdash.load_model(out)
    for path, truth in zip(paths, truths, strict=True):
        img = np.asarray(Image.open(path))
        assert np.array_equal(model.predict(img), seg.model.predict(img))
        assert (model.predict(img) == truth).mean() > 0.95


def test_apply_to_a_project_writes_labels_for_every_image(painted_project, tmp_path, capsys):
    pfile, paths, truths, _ = painted_project
    model = tmp_path / "model.skops"
    assert main(["train", str(pfile), "--out", str(model)]) == 0
    out = tmp_path / "results"
    assert main(["apply", str(model), str(pfile), "--out", str(out), "--quiet"]) == 0
    for path, truth in zip(paths, truths, strict=True):
        labels = np.asarray(Image.open(out / f"{path.stem}_labels.png"))
        assert (labels == truth).mean() > 0.95


def test_train_refuses_a_project_whose_painted_image_changed(painted_project, tmp_path,
                                                             capsys):
    pfile, paths, _, _ = painted_project
    Image.fromarray(bright_scene(0, 9)[0]).save(paths[1])
    assert main(["train", str(pfile), "--out", str(tmp_path / "m.skops")]) == 2
    assert "scene1.png changed on disk" in capsys.readouterr().err
    assert not (tmp_path / "m.skops").exists()


def test_train_and_apply_report_a_broken_project_file(tmp_path, capsys):
    bad = tmp_path / "p.json"
    bad.write_text('{"format": "segdash-project", "version": 1, "images": [{"path": "../x"}]}')
    assert main(["train", str(bad), "--out", str(tmp_path / "m.skops")]) == 2
    assert "project file" in capsys.readouterr().err
    img, truth = bright_scene(0, 1)
    lab = np.zeros_like(truth)
    lab[10:14, 4:28], lab[10:14, 36:60] = 1, 2
    segdash.fit(img, lab).save(tmp_path / "m.skops")
    assert main(["apply", str(tmp_path / "m.skops"), str(bad), "--out",
                 str(tmp_path / "o"), "--quiet"]) == 1
    assert "p.json" in capsys.readouterr().out


def test_locate_finds_the_project_of_a_folder_or_of_images(tmp_path):
    paths, _ = three_image_folder(tmp_path)
    file, root, found = locate([tmp_path])
    assert file == tmp_path.resolve() / DEFAULT_NAME and root == tmp_path.resolve()
    assert found == paths
    sub = tmp_path / "sub"
    sub.mkdir()
    Image.fromarray(bright_scene(0, 4)[0]).save(sub / "x.png")
    file, _, found = locate([paths[0], sub / "x.png"])
    assert file.parent == tmp_path.resolve() and found == [paths[0], sub / "x.png"]
    with pytest.raises(ProjectError, match="no such file"):
        locate([tmp_path / "missing.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProjectError, match="holds no PNG"):
        locate([empty])
    # a project file elsewhere cannot name images outside its folder
    with pytest.raises(ProjectError, match="outside"):
        Project.open(sub / "p.json", paths)
