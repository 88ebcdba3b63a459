"""Annotations saved and restored through the page, and a broken plugin shown on the page.

The round trip uses the module's ``server`` (the coins sample); the broken plugin gets its own
``segdash serve`` whose PYTHONPATH holds a temporary distribution (built as in
tests/test_plugins.py) declaring a ``segdash.features`` entry point that raises ImportError.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from ..test_plugins import make_distribution
from .conftest import serving
from .pages import (
    BACKGROUND,
    BLUE,
    COIN,
    ORANGE,
    STROKES_JS,
    H,
    W,
    download,
    open_app,
    open_card,
    paint_two_classes,
    strokes,
    upload,
    wait_overlay,
    wait_status,
    wait_strokes,
)

PLUGIN_DIST, PLUGIN_NAME = "segdash-gpu-filters", "gpu_filters"
PLUGIN_REASON = "libcudart.so.12: cannot open shared object file"


def unexpected_console_errors(console: list[tuple[str, str, str]]) -> list:
    """Console errors other than the template's Google font request (no network here)."""
    return [c for c in console
            if not ("ERR_NAME_NOT_RESOLVED" in c[1] and "fonts.googleapis.com" in c[2])]


def test_annotations_download_clear_and_upload_restore_the_strokes(page, server, console,
                                                                     tmp_path):
    open_app(page, server)
    assert not page.locator(".segdash-plugin-errors").is_visible()  # nothing broken here
    paint_two_classes(page)
    wait_status(page, r"trained random_forest")
    wait_overlay(page, H * W)
    before = np.asarray(Image.open(download(page, "Label image", tmp_path / "before")))
    assert set(np.unique(before)) == {1, 2}

    # The annotations file: the segdash format, both classes, the two strokes where drawn.
    saved = download(page, "Annotations (JSON)", tmp_path)
    assert saved.name == "coins_annotations.json"
    doc = json.loads(saved.read_text())
    assert doc["format"] == "segdash-annotations" and doc["version"] == 2
    assert doc["image_shape"][:2] == [H, W]
    assert [(c["id"], c["color"]) for c in doc["classes"]] == [(1, ORANGE), (2, BLUE)]
    assert [(s["label"], s["width"]) for s in doc["strokes"]] == [(1, 5.0), (2, 5.0)]
    for stroke, drawn in zip(doc["strokes"], (BACKGROUND, COIN), strict=True):
        assert len(stroke["x"]) == len(stroke["y"]) >= len(drawn)
        # The ends are within a pixel of the pixel centres aimed at (x column, y row).
        for i, (column, row) in ((0, drawn[0]), (-1, drawn[-1])):
            x, y = stroke["x"][i], stroke["y"][i]
            assert abs(x - column) <= 1 and abs(y - row) <= 1, (x, y, column, row)
    in_page = [(s["cls"], s["points"]) for s in strokes(page)]
    assert in_page == [(s["label"], len(s["x"])) for s in doc["strokes"]]

    page.get_by_role("button", name="Clear").click()
    wait_status(page, r"painted: nothing")
    wait_strokes(page, [])
    wait_overlay(page, 0)

    upload(page, ".json", saved)
    page.wait_for_function(f"({STROKES_JS})().length === 2", timeout=30_000)
    restored = strokes(page)
    assert [(s["cls"], s["color"], s["width"], s["points"]) for s in restored] == [
        (s["label"], c, 5, len(s["x"])) for s, c in zip(doc["strokes"], (ORANGE, BLUE),
                                                         strict=True)]
    wait_status(page, r"trained random_forest")
    wait_overlay(page, H * W)
    after = np.asarray(Image.open(download(page, "Label image", tmp_path / "after")))
    assert after[8, 200] == 1 and after[53, 52] == 2  # under the restored strokes
    assert np.mean(after == before) > 0.999  # the same training data gives the same result
    assert unexpected_console_errors(console) == []


@pytest.fixture(scope="module")
def broken_plugin_server(tmp_path_factory):
    """``segdash serve`` with a plugin distribution whose feature extractor cannot import."""
    folder = tmp_path_factory.mktemp("broken_plugin")
    site = make_distribution(
        folder / "site", PLUGIN_DIST, "0.3",
        {"segdash_gpu_filters.py": f"raise ImportError({PLUGIN_REASON!r})\n"},
        {"segdash.features": {PLUGIN_NAME: "segdash_gpu_filters:GpuFilters"}},
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    with serving(folder / "serve.log", env=env) as url:
        yield url


def test_a_broken_plugin_is_listed_on_the_page_and_the_built_ins_still_work(
        page, broken_plugin_server, console):
    open_app(page, broken_plugin_server)
    box = page.locator(".segdash-plugin-errors")  # its text is inside its shadow root
    item = box.locator("li", has_text=PLUGIN_NAME)
    item.wait_for(timeout=10_000)
    assert box.get_by_text("Plugins that failed to load").is_visible()
    assert box.locator("li").count() == 1  # only the broken one
    text = item.inner_text()
    assert f"'{PLUGIN_NAME}'" in text and f"{PLUGIN_DIST} 0.3" in text
    assert f"ImportError: {PLUGIN_REASON}" in text
    assert not page.locator(".segdash-error").is_visible()  # a warning, not an error

    paint_two_classes(page)
    wait_status(page, r"trained random_forest")
    shown = wait_overlay(page, H * W)
    assert sorted(shown["colours"]) == sorted([ORANGE, BLUE])
    # The features used are the built-in ones: the broken plugin is not selected.
    open_card(page, "Features")
    choices = page.locator(".bk-input-group", has_text="Feature extractors")
    assert "basic" in choices.inner_text() and PLUGIN_NAME not in choices.inner_text()
    assert unexpected_console_errors(console) == []
