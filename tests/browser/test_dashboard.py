"""The dashboard in Chromium: painting, training, undo, uploads and downloads.

One ``segdash serve`` (on the bundled coins sample, 384x303 grey) serves every test of this
module; each test opens its own page, hence its own session.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

import segdash
from segdash.io.render import display_range, overlay_rgb
from segdash.ui.samples import DEFAULT_SAMPLE, load_sample

from .pages import (
    BLUE,
    NEW_OVERLAY_JS,
    ORANGE,
    OVERLAY_JS,
    STROKES_JS,
    H,
    W,
    choose_class,
    download,
    draw,
    error_text,
    frame,
    mark_overlay,
    open_app,
    open_card,
    overlay,
    paint,
    paint_two_classes,
    strokes,
    upload,
    wait_overlay,
    wait_status,
    wait_strokes,
)


def test_page_loads_without_console_errors(page, server, console):
    open_app(page, server)
    assert page.locator(".segdash-class button").all_inner_texts() == ["class 1", "class 2"]
    page.get_by_text(f"{DEFAULT_SAMPLE}: {W}x{H}").wait_for()
    page.wait_for_timeout(1000)  # late errors (fonts, websocket) arrive after the first paint
    # The template asks Google for its web font; without a network that alone fails.
    unexpected = [c for c in console
                  if not ("ERR_NAME_NOT_RESOLVED" in c[1] and "fonts.googleapis.com" in c[2])]
    assert unexpected == []


def test_two_class_strokes_make_an_overlay_and_the_files_say_so(page, server, console, tmp_path):
    open_app(page, server)
    paint_two_classes(page)
    wait_status(page, r"trained random_forest on \d+ painted pixels")
    # In the page: every pixel coloured, in the two class colours.
    shown = wait_overlay(page, H * W)
    assert shown["shape"] == [H, W]
    assert sorted(shown["colours"]) == sorted([ORANGE, BLUE])
    assert [(s["cls"], s["color"]) for s in strokes(page)] == [(1, ORANGE), (2, BLUE)]
    # Sent compactly: a byte a pixel (class indices the browser colours), drawn at the
    # overlay's opacity; another opacity changes the glyph's alpha and sends no pixels.
    assert shown["bytes_per_pixel"] == 1 and shown["alpha"] == 0.5
    mark_overlay(page)
    page.locator(".segdash-opacity .noUi-handle").focus()
    page.keyboard.press("End")
    page.wait_for_function(f"(({OVERLAY_JS})() || {{}}).alpha === 1")
    assert not page.evaluate(NEW_OVERLAY_JS) and overlay(page)["opaque"] == H * W
    # On the server: the label image and the model it serves for download.
    labels_path = download(page, "Label image", tmp_path)
    assert labels_path.name == "coins_labels.png"
    labels = np.asarray(Image.open(labels_path))
    assert labels.shape == (H, W) and set(np.unique(labels)) == {1, 2}
    assert labels[8, 200] == 1 and labels[53, 52] == 2  # under the strokes
    assert labels[H // 2, 5] == 1  # a background pixel far from any stroke
    model_path = download(page, "Model (.skops)", tmp_path)
    model = segdash.load_model(model_path)
    assert model.classifier == "random_forest" and list(model.classes_) == [1, 2]
    assert np.mean(model.predict(load_sample(DEFAULT_SAMPLE)) == labels) > 0.999
    # The overlay file: the class colours blended over the image, as `segdash apply` writes.
    overlay_path = download(page, "Coloured overlay", tmp_path)
    assert overlay_path.name == "coins_overlay.png"
    image = load_sample(DEFAULT_SAMPLE)
    classes = [segdash.ClassInfo(1, "class 1", ORANGE), segdash.ClassInfo(2, "class 2", BLUE)]
    assert np.array_equal(np.asarray(Image.open(overlay_path)),
                          overlay_rgb(image, labels, classes, *display_range(image)))
    # The uncertainty view: one highlight colour, transparent where the model is sure.
    page.get_by_role("button", name="uncertainty").click()
    page.wait_for_function(f"(({OVERLAY_JS})() || {{}}).colours.join() === '#ff00ff'")
    assert overlay(page)["opaque"] < H * W


def test_strokes_show_their_class_colour_while_drawn_and_keep_their_width_when_zoomed(
        page, server, console):
    open_app(page, server)
    choose_class(page, "class 2", 2)
    f = frame(page)
    draw(page, [f.at(40, 100, H), f.at(120, 100, H)], release=False)  # mouse still down
    (drawing,) = strokes(page)
    assert (drawing["cls"], drawing["color"], drawing["width"]) == (2, BLUE, 5)
    scale = f.w / (f.x1 - f.x0)  # screen pixels per image pixel
    assert abs(drawing["screen_width"] - 5 * scale) < 0.01
    page.mouse.up()
    page.mouse.move(*f.at(80, 100, H))
    page.mouse.wheel(0, -400)  # zoom in
    page.wait_for_function(f"(() => {{ const v = Bokeh.index.query_one((v) => v.frame != null "
                           f"&& v.canvas_view != null); return v.model.x_range.end - "
                           f"v.model.x_range.start < {0.8 * (f.x1 - f.x0)}; }})()")
    page.wait_for_timeout(300)
    zoomed = frame(page)
    zoomed_scale = zoomed.w / (zoomed.x1 - zoomed.x0)
    (stroke,) = strokes(page)
    assert abs(stroke["screen_width"] - 5 * zoomed_scale) < 0.01
    assert stroke["screen_width"] > 1.2 * drawing["screen_width"]
    # A stroke drawn while zoomed in is still 5 image pixels wide.
    draw(page, [zoomed.at(70, 95, H), zoomed.at(90, 95, H)])
    page.wait_for_function("() => " + "(" + STROKES_JS + ")().length === 2")
    new = strokes(page)[1]
    assert new["width"] == 5 and abs(new["screen_width"] - 5 * zoomed_scale) < 0.01
    # Training and the new overlay keep the zoom.
    choose_class(page, "class 1", 1)
    draw(page, [zoomed.at(65, 80, H), zoomed.at(95, 80, H)])
    wait_status(page, r"trained random_forest")
    wait_overlay(page, H * W)
    after = frame(page)
    assert (after.x0, after.x1, after.y0, after.y1) == (zoomed.x0, zoomed.x1, zoomed.y0,
                                                        zoomed.y1)


def test_a_stroke_released_outside_the_image_reaches_the_server(page, server, console):
    open_app(page, server)
    f = frame(page)
    draw(page, [f.at(100, 150, H), f.at(300, 150, H), (f.x + f.w + 60, f.y + f.h / 2)])
    wait_status(page, r'painted: "class 1"; not')  # the server has the stroke (class 1 only)
    assert len(strokes(page)) == 1


def test_switching_the_classifier_changes_the_result(page, server, console, tmp_path):
    open_app(page, server)
    paint_two_classes(page)
    wait_status(page, r"trained random_forest")
    forest = np.asarray(Image.open(download(page, "Label image", tmp_path / "rf")))
    open_card(page, "Classifier")
    page.locator("select").filter(has_text="gradient_boosting").select_option(
        "gradient_boosting")
    wait_status(page, r"trained gradient_boosting")
    page.get_by_text("gradient_boosting settings").wait_for()
    boosting = np.asarray(Image.open(download(page, "Label image", tmp_path / "gb")))
    assert boosting.shape == forest.shape
    assert np.count_nonzero(boosting != forest) > 0
    model = segdash.load_model(download(page, "Model (.skops)", tmp_path))
    assert model.classifier == "gradient_boosting"


def test_undo_redo_and_clear(page, server, console):
    open_app(page, server)
    paint_two_classes(page)
    wait_status(page, r"trained random_forest")
    page.get_by_role("button", name="Undo").click()
    wait_status(page, r"paint at least two classes")
    wait_strokes(page, [1])  # the strokes and the status are separate messages
    wait_overlay(page, 0)  # no result with one class
    page.get_by_role("button", name="Redo").click()
    wait_status(page, r"trained random_forest")
    wait_strokes(page, [1, 2])
    wait_overlay(page, H * W)
    page.get_by_role("button", name="Clear").click()
    wait_status(page, r"painted: nothing")
    wait_strokes(page, [])
    wait_overlay(page, 0)


def test_uploading_an_image_opens_it(page, server, console, tmp_path):
    open_app(page, server)
    rgb = (np.random.default_rng(0).random((90, 160, 3)) * 255).astype(np.uint8)
    rgb[30:60, 40:120] = (250, 20, 20)
    path = tmp_path / "red_box.png"
    Image.fromarray(rgb).save(path)
    upload(page, ".png", path)
    page.get_by_text("red_box.png: 160x90, 3 channel(s)").wait_for(timeout=30_000)
    page.wait_for_function("() => { const v = Bokeh.index.query_one((v) => v.frame != null "
                           "&& v.canvas_view != null); return v && v.model.x_range.end === 160; }")
    paint(page, [(5, 5), (150, 5), (150, 85)], 90)
    choose_class(page, "class 2", 2)
    paint(page, [(50, 40), (110, 50)], 90)
    wait_status(page, r"trained random_forest")
    assert wait_overlay(page, 90 * 160)["shape"] == [90, 160]


def test_file_names_show_as_text_not_as_markup(page, server, console, tmp_path):
    open_app(page, server)
    name = "<b>scan *1*_x &amp; more.png"
    path = tmp_path / name
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(path)
    upload(page, ".png", path)
    # Rendered as HTML or Markdown, the name would read "scan 1_x & more.png".
    page.get_by_text(f"{name}: 30x20, 1 channel(s), uint8", exact=True).wait_for(timeout=30_000)
    bad = tmp_path / "<i>notes.png"
    bad.write_text("not a picture")
    upload(page, ".png", bad)
    assert "not a PNG, JPEG or TIFF" in error_text(page, re.escape(f"{bad.name}: not a PNG"))


def test_a_bad_upload_shows_an_error_and_the_session_keeps_working(page, server, console,
                                                                   tmp_path):
    open_app(page, server)
    bad = tmp_path / "holiday.png"
    bad.write_text("not really a picture")
    upload(page, ".png", bad)
    text = error_text(page, "holiday.png")
    assert "not a PNG, JPEG or TIFF" in text and "Traceback" not in text
    page.get_by_text(f"{DEFAULT_SAMPLE}: {W}x{H}").wait_for()  # the image stays
    paint_two_classes(page)
    wait_status(page, r"trained random_forest")
    wait_overlay(page, H * W)
    wrong = tmp_path / "model.skops"
    wrong.write_bytes(b"\x80\x04 pickled")
    upload(page, ".skops", wrong)
    assert "pickle" in error_text(page, "pickle")


def test_uploading_a_model_segments_the_image(page, server, console, tmp_path):
    image = load_sample(DEFAULT_SAMPLE)
    labels = np.zeros(image.shape, np.uint8)
    labels[5:10, 5:380] = 1
    labels[50:56, 45:60] = 2
    path = tmp_path / "coins_model.skops"
    segdash.fit(image, labels).save(path)
    open_app(page, server)
    upload(page, ".skops", path)
    wait_status(page, r"applied a model")
    assert len(wait_overlay(page, H * W)["colours"]) == 2
