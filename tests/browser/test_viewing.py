"""Viewing in Chromium: display range and channels, a canvas that fills the window with
square pixels, the uncertainty and probability views with their legend, the probability
download, and Cancel of a long job.

One ``segdash serve`` of a 16-bit two-channel TIFF is shared by the module, with a test
plugin on its PYTHONPATH declaring the classifier ``slow`` (its fit sleeps for a minute);
one page is painted once and then looked at in turn by each test.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from playwright.sync_api import expect

import segdash

from ..test_plugins import make_distribution
from .conftest import serving
from .pages import (
    BASE_JS,
    BLUE,
    FRAME_JS,
    OVERLAY_JS,
    base_image,
    choose_class,
    download,
    frame,
    open_app,
    open_card,
    overlay,
    paint,
    wait_overlay,
    wait_status,
)

H, W = 90, 120
# What the page shows, as JavaScript expressions to wait on.
BASE_JS_CALL, FRAME_CALL, OVERLAY_CALL = (f"({js})()" for js in (BASE_JS, FRAME_JS, OVERLAY_JS))
SLOW_PLUGIN = '''
import time
from sklearn.dummy import DummyClassifier
from segdash.contract import Classifier

class _Slow(DummyClassifier):
    def fit(self, X, y, sample_weight=None):
        time.sleep(60)
        return super().fit(X, y)

class Slow(Classifier):
    def build(self):
        return _Slow()
'''


def two_channel_image() -> np.ndarray:
    """``(H, W, 2)`` uint16: a bright disc in channel 1, a bright right third in channel 2."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    disc = 500 + 3000 * ((xx - 40) ** 2 + (yy - 45) ** 2 < 20 ** 2)
    right = 800 + 2000 * (xx > 80)
    img = np.stack([disc, right], -1) + rng.normal(0, 40, (H, W, 2))
    return img.clip(0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("viewing") / "two.tif"
    tifffile.imwrite(path, two_channel_image(), photometric="minisblack",
                     planarconfig="contig")
    return path


@pytest.fixture(scope="module")
def viewing_server(tmp_path_factory, image_file):
    folder = tmp_path_factory.mktemp("slow-plugin")
    site = make_distribution(folder / "site", "segdash-slow", "0.1",
                             {"segdash_slow.py": SLOW_PLUGIN},
                             {"segdash.classifiers": {"slow": "segdash_slow:Slow"}})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    with serving(folder / "serve.log", env=env, args=(str(image_file),)) as url:
        yield url


@pytest.fixture(scope="module")
def view(browser, browser_context_args, viewing_server):
    """One page on the two-channel image, painted with two classes and segmented."""
    context = browser.new_context(**browser_context_args)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    open_app(page, viewing_server)
    paint(page, [(5, 5), (30, 5), (30, 12)], H)  # background, top left
    choose_class(page, "class 2", 2)
    paint(page, [(35, 40), (45, 50)], H)  # inside the disc
    wait_status(page, r"trained random_forest")
    wait_overlay(page, H * W)
    page.errors = errors
    yield page
    context.close()
    assert errors == []


def _slider_handle(page, channel: int, which: str):
    return page.locator(f".segdash-display-range-{channel} .noUi-handle-{which}").first


def test_display_range_and_channel_change_the_picture_not_the_results(view):
    page = view
    before, results = base_image(page), overlay(page)
    status = page.locator(".segdash-status pre").inner_text()
    assert before["shape"] == [H, W] and not before["grey"]
    # Drag channel 1's low end to the right: its dark pixels get darker (red falls).
    handle = _slider_handle(page, 1, "lower")
    handle.scroll_into_view_if_needed()  # the Display card is below the painting cards
    box = handle.bounding_box()
    track = page.locator(".segdash-display-range-1 .noUi-base").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * 0.5, box["y"] + box["height"] / 2, steps=6)
    page.mouse.up()
    page.wait_for_function(
        f"(({BASE_JS_CALL}) || {{}}).checksum !== {before['checksum']}", timeout=15_000)
    after = base_image(page)
    assert after["mean"][0] < before["mean"][0] - 5
    assert abs(after["mean"][1] - before["mean"][1]) < 0.5  # channel 2 untouched
    # Show channel 2 alone: grey, bright on the right third.
    page.locator(".segdash-display-channels select").select_option(label="channel 2")
    page.wait_for_function(f"(({BASE_JS_CALL}) || {{}}).grey === true", timeout=15_000)
    # The display never touches features or results: same overlay, no retraining.
    assert overlay(page) == results
    assert page.locator(".segdash-status pre").inner_text() == status
    # Auto brings back the default range of the shown channel.
    page.locator(".segdash-display-auto button").click()
    page.locator(".segdash-display-channels select").select_option(label="all (red, green)")
    page.wait_for_function(f"(({BASE_JS_CALL}) || {{}}).checksum === {before['checksum']}",
                           timeout=15_000)


def test_canvas_follows_the_window_with_square_pixels(view):
    page = view
    sizes = []
    for width, height in ((1400, 1000), (1000, 700), (1700, 1100)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_function(
            f"""(() => {{ const f = ({FRAME_CALL}); if (!f) return false;
                const sx = f.w / (f.x1 - f.x0), sy = f.h / (f.y1 - f.y0);
                return f.w > {width} * 0.4 && Math.abs(sx - sy) < 1e-6 * sx
                       && f.y + f.h <= {height} + 1; }})()""", timeout=15_000)
        f = frame(page)
        sizes.append((f.w, f.h))
        # the whole image is in view
        assert f.x0 <= 0 and f.x1 >= W and f.y0 <= 0 and f.y1 >= H
    assert sizes[1][0] < sizes[0][0] < sizes[2][0]
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_uncertainty_and_probability_views_are_selected_and_have_a_legend(view):
    page = view
    legend = page.locator(".segdash-legend")
    expect(legend.get_by_text("uncertain")).to_have_count(0)
    page.locator(".segdash-view button", has_text="uncertainty").click()
    expect(page.locator(".segdash-view button.bk-active")).to_have_text("uncertainty")
    expect(legend.get_by_text("uncertain", exact=True)).to_be_visible()
    page.wait_for_function(f"(({OVERLAY_CALL}) || {{}}).colours?.join() === '#ff00ff'",
                           timeout=15_000)
    page.locator(".segdash-view button", has_text="probability").click()
    expect(page.locator(".segdash-view button.bk-active")).to_have_text("probability")
    select = page.locator(".segdash-probability-class select")
    select.select_option(label="class 2")
    expect(legend.get_by_text("probability of class 2")).to_be_visible()
    page.wait_for_function(f"(({OVERLAY_CALL}) || {{}}).colours?.join() === '{BLUE}'",
                           timeout=15_000)
    page.locator(".segdash-view button", has_text="segmentation").click()
    expect(page.locator(".segdash-view button.bk-active")).to_have_text("segmentation")
    expect(legend).to_be_hidden()


def test_probability_download_is_the_models_float32_tiff(view, tmp_path, image_file):
    page = view
    path = download(page, "Probabilities (TIFF)", tmp_path)
    assert path.name == "two_proba.tif"
    proba = tifffile.imread(path)
    assert proba.dtype == np.float32 and proba.shape == (H, W, 2)
    assert proba.min() >= 0 and proba.max() <= 1
    np.testing.assert_allclose(proba.sum(axis=2), 1, atol=1e-5)
    model = segdash.load_model(download(page, "Model (.skops)", tmp_path))
    expected = model.predict_proba(tifffile.imread(image_file))
    np.testing.assert_allclose(proba, expected, atol=1e-6)


def test_cancel_stops_a_slow_training_and_keeps_the_previous_result(view):
    page = view
    results = overlay(page)
    open_card(page, "Classifier")
    page.locator(".segdash-card-classifier select").first.select_option("slow")
    progress = page.locator(".segdash-progress")
    expect(progress.get_by_text("training")).to_be_visible(timeout=15_000)
    progress.locator(".segdash-cancel button").click()
    wait_status(page, r"training cancelled; the previous result stays", timeout=15_000)
    expect(progress.get_by_text("training")).to_be_hidden()
    assert overlay(page) == results
    assert page.locator(".segdash-error").is_hidden()
    # The session carries on.
    page.locator(".segdash-card-classifier select").first.select_option("random_forest")
    wait_status(page, r"trained random_forest", timeout=60_000)
