"""Slides inside a project: added, switched to, painted and trained on tile by tile, never
read whole; the project's working resolution is saved and recorded by its model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

import segdash.project as project_module
from segdash import Segmenter
from segdash.io.pyramid import LARGE_PIXELS
from segdash.io.write import write_pyramid_tiff
from segdash.model import model_from_bytes
from segdash.project import Project, train_project

H, W = 2304, 2048  # just over LARGE_PIXELS: a slide, tiled 512 px


def _scene(h: int, w: int) -> np.ndarray:
    """Bright left half, dark striped right half, RGB."""
    xx = np.arange(w)[None, :].repeat(h, 0)
    img = np.where(xx < w // 2, 190, 50 + 60 * ((xx // 4) % 2)).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 12, (h, w), dtype=np.uint8)
    return np.stack([img + noise, img, 255 - img], axis=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("large")
    full = _scene(H, W)

    def tile_of(level, y0, y1, x0, x1):
        f = 2 ** level
        return full[y0 * f:y1 * f:f, x0 * f:x1 * f:f]

    write_pyramid_tiff(root / "slide.ome.tif", full.shape, np.uint8, tile_of, tile=256)
    Image.fromarray(_scene(96, 128)).save(root / "small.png")
    return root, full


@pytest.fixture
def no_whole_slide(monkeypatch):
    """Fail if the slide is ever read whole (as a project image was before)."""
    whole = project_module.read_frame

    def read_frame(path, frame=0):
        assert "slide.ome" not in str(path), f"read whole: {path}"
        return whole(path, frame)

    monkeypatch.setattr(project_module, "read_frame", read_frame)


def _project(folder, tmp_path) -> Project:
    root, _ = folder
    return Project.open(root / f"{tmp_path.name}.json", [root / "small.png",
                                                          root / "slide.ome.tif"])


def _session(project: Project) -> Segmenter:
    seg = Segmenter()
    seg.cache_limit = 256 * 2**20
    seg.extractor("basic").sigma_max = 4
    seg.open_project(project)
    return seg


def _paint_slide(seg: Segmenter) -> None:
    # both halves near the top left of the slide (full-resolution pixels)
    seg.add_stroke([200, 800], [300, 300], 1, 9)
    seg.add_stroke([1100, 1700], [340, 340], 2, 9)


def test_a_slide_is_added_to_a_project_from_its_file_without_being_read_whole(
        folder, tmp_path, no_whole_slide):
    assert H * W > LARGE_PIXELS
    project = _project(folder, tmp_path)
    slide = project.images[1]
    assert slide.shape == (H, W, 3) and slide.frames == 1
    # the default working resolution is the slide's (as QuPath's classifier resolution,
    # it holds for every image of the project: all are then tiled)
    assert project.working_resolution() == 2
    assert project.is_tiled(slide) and project.is_tiled(project.images[0])
    project.downsample = 1
    assert project.working_resolution() == 1 and not project.is_tiled(0)
    assert project.is_tiled(1)


def test_a_project_slide_is_painted_and_trained_on_only_under_its_strokes(
        folder, tmp_path, no_whole_slide):
    project = _project(folder, tmp_path)
    project.downsample = 1
    seg = _session(project)
    assert seg.image is not None and seg.source is None  # the small PNG, whole
    seg.select(1)
    assert seg.image is None and seg.source is not None and seg.image_shape == (H, W, 3)
    assert seg.downsample == 1
    seg.set_view(0, 400, 0, 1900)
    _paint_slide(seg)
    assert "trained random_forest on the painted pixels of 1 image" in seg.status, seg.status
    tiled = seg._tiled
    gy, gx = tiled.grid.shape
    assert gy * gx == 20
    # the tiles under the strokes and the view: the top row only
    assert tiled.computed == gx
    view = seg.view_result(0, 400, 0, 1900, 40, 190)
    left, right = view[:, 10:90], view[:, 115:185]
    assert np.mean(left == 1) > 0.95 and np.mean(right == 2) > 0.95
    # strokes are saved in full-resolution pixels with the project
    again = Project.load(project.file, project.root)
    assert [s.label for s in again.images[1].strokes[0]] == [1, 2]
    assert max(again.images[1].strokes[0][1].xs) == 1700


def test_training_across_a_small_image_and_a_slide_uses_both_and_predicts_both(
        folder, tmp_path, no_whole_slide):
    root, full = folder
    project = _project(folder, tmp_path)
    project.downsample = 1
    seg = _session(project)
    seg.add_stroke([5, 50], [20, 20], 1, 5)  # the small image: one class only
    seg.select(1)
    seg.add_stroke([1100, 1700], [340, 340], 2, 9)  # the slide: the other class
    assert "painted pixels of 2 image(s)/frame(s)" in seg.status, seg.status
    model = seg.model
    assert sorted(model.classes_) == [1, 2]
    # back on the small image: the same model labels it whole
    seg.select(0)
    assert seg.segmentation is not None and seg.segmentation.shape == (96, 128)
    assert np.mean(seg.segmentation[:, :50] == 1) > 0.9
    assert np.mean(seg.segmentation[:, 80:] == 2) > 0.9
    # `segdash train`'s path (no session) gives a model of the same classes and resolution
    alone = train_project(Project.load(project.file, project.root))
    assert sorted(alone.classes_) == [1, 2] and alone.downsample == 1


def test_the_projects_working_resolution_is_saved_and_recorded_by_its_model(
        folder, tmp_path, no_whole_slide):
    project = _project(folder, tmp_path)
    seg = _session(project)
    assert seg.source is not None and seg.downsample == 2  # at 1/2, every image is tiled
    seg.downsample = 4
    assert seg.source is not None and seg._tiled.shape[:2] == (24, 32)  # the PNG at 1/4
    assert Project.load(project.file, project.root).working_resolution() == 4
    seg.select(1)
    assert seg.downsample == 4 and seg._tiled.shape[:2] == (H // 4, W // 4)
    _paint_slide(seg)
    assert seg.model.downsample == 4
    assert model_from_bytes(seg.result_file("model")[1]).downsample == 4
    name, data = seg.result_file("labels")
    assert Image.open(io.BytesIO(data)).size == (W, H)  # full size


def test_thumbnails_of_a_project_slide_come_from_a_coarse_level(folder, tmp_path,
                                                                   no_whole_slide):
    seg = _session(_project(folder, tmp_path))
    png = seg.thumbnail(1, side=64)
    thumb = np.asarray(Image.open(io.BytesIO(png)))
    assert max(thumb.shape[:2]) <= 64 and thumb[:, :20, 0].mean() > thumb[:, -20:, 0].mean()


def test_a_project_with_stacks_stays_at_full_resolution(tmp_path):
    stack = np.stack([_scene(64, 64)[:, :, 0]] * 3)
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    project = Project.open(tmp_path / "p.json", [tmp_path / "stack.tif"])
    seg = _session(project)
    seg.downsample = 2
    assert "stacks" in seg.error and seg.downsample == 1
    assert project.working_resolution() == 1 and seg.image is not None


def test_segdash_train_and_apply_on_a_project_with_a_slide_give_full_size_labels(
        folder, tmp_path, no_whole_slide):
    from segdash.cli import main

    root, full = folder
    project = _project(folder, tmp_path)  # at 1/2, the slide's default
    seg = _session(project)
    seg.select(1)
    _paint_slide(seg)
    model_file = tmp_path / "model.skops"
    assert main(["train", str(project.file), "--out", str(model_file)]) == 0
    out = tmp_path / "results"
    assert main(["apply", str(model_file), str(project.file), "--out", str(out), "--quiet",
                 "--workers", "1"]) == 0
    labels = np.asarray(Image.open(out / "slide_labels.png"))
    assert labels.shape == (H, W)
    truth = np.where(np.arange(W) < W // 2, 1, 2)[None, :]
    assert np.mean(labels[::7, ::7] == truth[:, ::7]) > 0.95
    # the session's labels (its tiles) are the batch engine's
    session = np.asarray(Image.open(io.BytesIO(seg.result_file("labels")[1])))
    np.testing.assert_array_equal(session, labels)


def test_small_images_tiled_at_a_coarse_resolution_are_not_all_kept_in_memory(
        tmp_path, monkeypatch):
    """At a working resolution of 1/2 every image is tiled from its decoded pixels: the
    project and its training keep them within HELD_PIXELS_BYTES (least recently used
    dropped), and a dropped image is read again, with the same result, when used again."""
    # each small image counts as 1 MB (held_bytes' floor): three are kept
    monkeypatch.setattr(project_module, "HELD_PIXELS_BYTES", 3_000_000)
    assert project_module.held_bytes([np.zeros(2_000_000, np.uint8)]) == 2_000_000
    assert project_module.held_bytes([np.zeros(5_000_000, np.uint8)]) == 3_000_000
    paths = []
    for k in range(8):
        paths.append(tmp_path / f"img{k}.png")
        Image.fromarray(_scene(96, 128)).save(paths[-1])
    project = Project.open(tmp_path / "p.json", paths)
    project.downsample = 2
    seg = _session(project)
    for k in range(8):
        seg.select(k)
        seg.add_stroke([5, 50], [20, 20], 1, 5)
        seg.add_stroke([80, 120], [60, 60], 2, 5)
    assert seg.model is not None and "8 image(s)" in seg.status, seg.status
    held = project._pyramids
    assert len(held) == 3 and held.nbytes <= project_module.HELD_PIXELS_BYTES
    rows = seg._rows  # the session's training rows across images
    assert len(rows._tiled) <= 3
    seg.select(0)  # dropped long ago: read again and segmented
    assert seg.source is not None and seg._tiled.shape[:2] == (48, 64)
    _, data = seg.result_file("labels")
    labels = np.asarray(Image.open(io.BytesIO(data)))
    assert labels.shape == (96, 128)
    assert np.mean(labels[:, :50] == 1) > 0.9 and np.mean(labels[:, 80:] == 2) > 0.9
