"""Display settings (range, channels): the one display rule, per image, never the features;
saved with a project's images; the probability file."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tifffile

from segdash import Segmenter
from segdash.errors import ProjectError
from segdash.io.render import DisplaySettings, display_range, overlay_rgb, to_display_rgb
from segdash.io.write import proba_bytes
from segdash.project import Project

from .test_segmenter_project import open_session, paint, three_image_folder


def two_channel(h: int = 40, w: int = 50) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random((h, w, 2)) * 4000 + 100).astype(np.uint16)


def test_default_display_is_the_existing_rule():
    img = two_channel()
    auto = DisplaySettings.auto(img)
    low, high = display_range(img)
    assert auto.channels == (0, 1) and auto.low == tuple(low) and auto.high == tuple(high)
    assert np.array_equal(auto.rgb(img), to_display_rgb(img))


def test_one_channel_shows_grey_and_a_narrower_range_brightens():
    img = two_channel()
    auto = DisplaySettings.auto(img)
    grey = auto.with_channels([1]).rgb(img)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert np.array_equal(grey[..., 0], to_display_rgb(img[..., 1:], auto.low[1:],
                                                       auto.high[1:])[..., 0])
    narrow = auto.with_range(0, auto.low[0], (auto.low[0] + auto.high[0]) / 2).rgb(img)
    assert narrow[..., 0].mean() > auto.rgb(img)[..., 0].mean() + 20
    assert np.array_equal(narrow[..., 1], auto.rgb(img)[..., 1])  # other channel untouched


@pytest.mark.parametrize("data, message", [
    ({"low": [0], "high": [1], "channels": [0]}, "1 channel ranges for an image of 2"),
    ({"low": [0, 0], "high": [1, 0], "channels": [0]}, "high must exceed low"),
    ({"low": [0, 0], "high": [1, 1], "channels": [2]}, "each one of 0..1"),
    ({"low": [0, 0], "high": [1, 1], "channels": []}, "1 to 3 channels"),
    ({"low": [0, "x"], "high": [1, 1], "channels": [0]}, "needs lists"),
    ({"low": [0, 0], "high": [1, float("nan")], "channels": [0]}, "finite"),
    ({"low": [0, 0], "high": [1, 1], "channels": [True]}, "channel numbers"),
])
def test_malformed_display_settings_are_refused_with_the_reason(data, message):
    with pytest.raises(ValueError, match=message):
        DisplaySettings.from_dict(data, 2)


def test_display_changes_the_picture_and_overlay_file_never_the_features():
    img = two_channel()
    seg = Segmenter(image=img)
    seg.add_stroke([2, 40], [3, 3], 1, 3)
    seg.add_stroke([2, 40], [30, 30], 2, 3)
    codes, segmentation, computed = seg.feature_codes(), seg.segmentation, seg.feature_computations
    display = seg.display.with_range(0, 1000, 2000).with_channels([0])
    seg.set_display(display)
    assert seg.display == display
    assert seg.feature_codes() is codes and seg.feature_computations == computed
    assert seg.segmentation is segmentation
    name, data = seg.result_file("overlay")
    from PIL import Image
    shown = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(shown, overlay_rgb(img, segmentation, seg.classes, np.array(
        display.low), np.array(display.high), (0,)))
    seg.set_display(None)  # auto: the default range, channels kept
    assert seg.display == DisplaySettings.auto(img, (0,))
    with pytest.raises(ValueError, match="for 1 channel"):
        seg.set_display(DisplaySettings((0.0,), (1.0,), (0,)))
    seg.set_image(img[:20])  # a new image: its own default
    assert seg.display == DisplaySettings.auto(img[:20])


def test_probability_file_is_float32_k_bands_equal_to_the_session(tmp_path):
    img = two_channel()
    seg = Segmenter(image=img)
    seg.add_stroke([2, 40], [3, 3], 1, 3)
    seg.add_stroke([2, 40], [30, 30], 2, 3)
    name, data = seg.result_file("proba")
    proba = tifffile.imread(io.BytesIO(data))
    assert name == "image_proba.tif" and proba.dtype == np.float32
    assert proba.shape == (40, 50, 2) and np.array_equal(proba, seg.probabilities)
    assert proba_bytes(seg.probabilities) == data


def test_display_is_saved_per_image_in_the_project_and_old_files_still_read(tmp_path):
    paths, _ = three_image_folder(tmp_path)
    pfile = tmp_path / "segdash-project.json"
    seg = open_session(pfile, paths)
    paint(seg)
    chosen = seg.display.with_range(0, 10.0, 100.0)
    seg.set_display(chosen)
    doc = json.loads(pfile.read_text())
    assert doc["images"][0]["display"] == {"channels": [0], "low": [10.0], "high": [100.0]}
    assert "display" not in doc["images"][1]  # untouched images keep the default
    seg.select(1)
    assert seg.display == DisplaySettings.auto(seg.image)
    again = open_session(pfile)
    assert again.current == 0 and again.display == chosen
    # a file written before display settings existed reads as the default
    for img in doc["images"]:
        img.pop("display", None)
    old = Project.from_json(json.dumps(doc), pfile)
    assert all(img.display is None for img in old.images)
    doc["images"][0]["display"] = {"channels": [0], "low": [5.0], "high": [1.0]}
    with pytest.raises(ProjectError, match=r"images\[0\]: display: high must exceed low"):
        Project.from_json(json.dumps(doc), pfile)
