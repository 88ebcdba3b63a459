"""The Segmenter on a project: switching images keeps strokes, one model is trained on all
of them, every change is saved and restored."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

import segdash
from segdash import Segmenter
from segdash.errors import ProjectError
from segdash.project import Project, train_project


def bright_scene(offset: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Two classes (left, right) whose brightness depends on ``offset``: a model trained
    only on a dark scene (offset 0) labels a bright one (offset 90) all as one class."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 4, (size, size)) + 60 + offset
    truth = np.ones((size, size), np.uint8)
    truth[:, size // 2:] = 2
    img[:, size // 2:] += 50
    return np.clip(img, 0, 255).astype(np.uint8), truth


def three_image_folder(tmp_path):
    truths = []
    for i, (offset, seed) in enumerate([(0, 1), (90, 2), (90, 3)]):
        img, truth = bright_scene(offset, seed)
        Image.fromarray(img).save(tmp_path / f"scene{i}.png")
        truths.append(truth)
    return sorted(tmp_path.glob("scene*.png")), truths


def paint(seg: Segmenter) -> None:
    seg.add_stroke([4, 28], [12, 12], 1, width=4)
    seg.add_stroke([36, 60], [12, 12], 2, width=4)


def open_session(pfile, paths=()) -> Segmenter:
    seg = Segmenter()
    seg.extractor("basic").sigma_max = 2.0
    seg.open_project(Project.open(pfile, paths))
    return seg


def test_model_trained_on_two_images_labels_the_third_that_one_image_mislabels(tmp_path):
    paths, truths = three_image_folder(tmp_path)
    pfile = tmp_path / "segdash-project.json"
    seg = open_session(pfile, paths)
    assert seg.image_name == "scene0.png" and len(seg.project.images) == 3
    paint(seg)
    one = seg.model
    assert (seg.segmentation == truths[0]).mean() > 0.95
    seg.select(1)
    assert seg.strokes == [] and seg.image_name == "scene1.png"
    assert seg.model is one and seg.segmentation is not None  # the current model's prediction
    assert (seg.segmentation == truths[1]).mean() < 0.8  # trained on image 0 only: wrong
    paint(seg)
    assert seg.model is not one and "2 image(s)" in seg.status
    assert (seg.segmentation == truths[1]).mean() > 0.95
    seg.select(2)
    assert seg.strokes == []
    assert (seg.segmentation == truths[2]).mean() > 0.95  # never painted, labelled right
    seg.select(0)
    assert len(seg.strokes) == 2  # image 0's strokes were kept
    # the headless training of the saved project gives the dashboard's model
    headless = train_project(Project.load(pfile))
    img2 = np.asarray(Image.open(paths[2]))
    assert np.array_equal(headless.predict(img2), seg.model.predict(img2))


def test_only_the_image_on_screen_holds_full_features(tmp_path):
    paths, _ = three_image_folder(tmp_path)
    seg = open_session(tmp_path / "p.json", paths)
    paint(seg)
    seg.select(1)
    paint(seg)
    codes = seg.feature_codes()
    assert codes.shape[:2] == (64, 64)
    # painted rows of the images not on screen: a few hundred pixels, not 64x64 each
    assert 0 < seg._rows.nbytes < 2 * 64 * 64 * codes.shape[2]


def test_a_new_session_restores_every_image_s_strokes_classes_and_settings(tmp_path):
    paths, truths = three_image_folder(tmp_path)
    pfile = tmp_path / "segdash-project.json"
    seg = open_session(pfile, paths)
    seg.rename_class(1, "dark")
    seg.recolor_class(2, "#00ff00")
    paint(seg)
    seg.select(1)
    seg.add_stroke([4, 28], [40, 40], 1, width=4)
    seg.classifier_settings().n_estimators = 17
    seg.release()

    again = Segmenter()
    again.open_project(Project.open(pfile, paths))
    assert [c.name for c in again.classes] == ["dark", "class 2"]
    assert again.classes[1].color == "#00ff00"
    assert again.extractor("basic").sigma_max == 2.0
    assert again.classifier_settings().n_estimators == 17
    assert len(again.strokes) == 2 and again.current == 0
    again.select(1)
    assert len(again.strokes) == 1
    assert again.model is not None  # trained on both images' strokes when it opened


def test_stack_frames_are_painted_and_stepped_through(tmp_path):
    frames = np.stack([bright_scene(o, s)[0] for o, s in [(0, 1), (90, 2), (90, 3)]])
    tifffile.imwrite(tmp_path / "stack.tif", frames, photometric="minisblack",
                     metadata={"axes": "TYX"})
    pfile = tmp_path / "segdash-project.json"
    seg = open_session(pfile, [tmp_path / "stack.tif"])
    assert seg.project.images[0].frames == 3
    paint(seg)
    seg.select(0, 2)
    assert np.array_equal(seg.image, frames[2]) and seg.strokes == []
    paint(seg)
    seg.select(0, 1)
    truth = bright_scene(90, 2)[1]
    assert (seg.segmentation == truth).mean() > 0.95
    assert Project.load(pfile).painted() == [(0, 0), (0, 2)]


def test_upload_adds_an_image_to_the_project(tmp_path):
    paths, _ = three_image_folder(tmp_path)
    seg = open_session(tmp_path / "p.json", paths[:1])
    paint(seg)
    import io

    buf = io.BytesIO()
    Image.fromarray(bright_scene(90, 7)[0]).save(buf, format="PNG")
    seg.open_file(buf.getvalue(), "new scan.png")
    assert len(seg.project.images) == 2 and seg.current == 1
    assert seg.image_name.endswith("new_scan.png")
    assert len(Project.load(tmp_path / "p.json").images) == 2
    seg.select(0)
    assert len(seg.strokes) == 2


def test_changed_image_is_refused_and_the_session_stays(tmp_path):
    paths, _ = three_image_folder(tmp_path)
    seg = open_session(tmp_path / "p.json", paths)
    paint(seg)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(paths[1])
    with pytest.raises(ProjectError, match="changed on disk"):
        seg.select(1)
    assert seg.current == 0 and len(seg.strokes) == 2


def test_second_session_on_the_same_project_is_told(tmp_path):
    paths, _ = three_image_folder(tmp_path)
    pfile = tmp_path / "p.json"
    a = open_session(pfile, paths)
    b = open_session(pfile, paths)
    paint(a)
    b.add_stroke([4, 28], [30, 30], 1, width=4)
    assert "another session" in b.error
    assert len(Project.load(pfile).strokes(0)) == 2  # a's work is intact


def test_applied_model_brings_its_class_names_and_colours(tmp_path):
    img, truth = bright_scene(0, 1)
    lab = np.zeros_like(truth)
    lab[10:14, 4:28] = 1
    lab[10:14, 36:60] = 2
    classes = [segdash.ClassInfo(1, "dark", "#101010"), segdash.ClassInfo(2, "bright",
                                                                          "#f0f0f0")]
    model = segdash.fit(img, lab, classes=classes)
    seg = Segmenter(image=img)
    seg.apply_model(model)
    assert [(c.name, c.color) for c in seg.classes] == [("dark", "#101010"),
                                                        ("bright", "#f0f0f0")]


def test_project_file_downloads_and_uploads(tmp_path):
    paths, _ = three_image_folder(tmp_path)
    seg = open_session(tmp_path / "p.json", paths)
    paint(seg)
    name, data = seg.project_json()
    assert name == "p.json" and Project.from_json(data, None, tmp_path).strokes(0) == seg.strokes
    seg.clear()
    assert Project.load(tmp_path / "p.json").strokes(0) == []
    seg.load_project_json(data)  # the downloaded file restores the strokes
    assert len(seg.strokes) == 2 and len(Project.load(tmp_path / "p.json").strokes(0)) == 2
    doc = Project.from_json(data, None, tmp_path).to_dict()
    doc["images"][0]["path"] = "../elsewhere.png"
    import json

    with pytest.raises(ProjectError, match="outside the project's folder"):
        seg.load_project_json(json.dumps(doc).encode())
    assert len(seg.strokes) == 2  # nothing changed


def test_removing_an_image_drops_its_strokes_keeps_its_file_and_retrains_without_it(tmp_path):
    paths, _ = three_image_folder(tmp_path)
    seg = open_session(tmp_path / "p.json", paths)
    paint(seg)
    seg.select(1)
    paint(seg)
    assert "of 2 image(s)" in seg.status
    seg.select(2)
    seg.remove_image(0)  # an image before the one on screen: the same image stays shown
    assert seg.image_name == "scene2.png" and seg.current == 1
    assert "of 1 image(s)" in seg.status, seg.status  # retrained on the strokes left
    saved = Project.load(tmp_path / "p.json")
    assert [img.name for img in saved.images] == ["scene1.png", "scene2.png"]
    assert paths[0].exists()
    seg.remove_image(0)  # the last painted image: no model is left
    assert seg.model is None and seg.segmentation is None
    with pytest.raises(ValueError, match="at least one image"):
        seg.remove_image(0)
