"""The dashboard without a browser: build the view, drive it and its Segmenter, check what it holds.

Browser tests (tests/browser/) check the same behaviours through Chromium.
"""

from __future__ import annotations

import importlib.metadata as im
import io
import json
import threading
from pathlib import Path

import numpy as np
import param
import pytest
from PIL import Image

import segdash
from segdash import registry
from segdash.contract import FeatureExtractor
from segdash.io import render as render_module
from segdash.io.render import display_range, overlay_rgb, to_display_rgb
from segdash.ui import SegdashApp
from segdash.ui import canvas as canvas_module
from segdash.ui.canvas import CLASS_COL, COLOR_COL, FILL_COL, IMAGE_COL, WIDTH_COL, frame_size
from segdash.ui.cards import (
    IMAGE_ACCEPT,
    MAX_UPLOAD_BYTES,
    ApplyCard,
    Card,
    ClassesCard,
    ClassifierCard,
    DisplayCard,
    FeaturesCard,
    FilesCard,
    ImageCard,
    ImportanceCard,
    ProjectCard,
    ResultsCard,
    StrokesCard,
)
from segdash.ui.display import (
    data_to_image,
    display_step,
    downsample,
    image_to_data,
    markdown_text,
    segmentation_overlay,
    uncertainty_overlay,
)
from segdash.ui.samples import DEFAULT_SAMPLE, load_sample, sample_names
from segdash.ui.worker import SessionWorker

from .conftest import two_texture_image

# -- helpers ---------------------------------------------------------------------------


def browser_data(app: SegdashApp, strokes: list[tuple[list, list, int, float]]) -> dict:
    """FreehandDraw data as the browser sends it: plot coordinates (y up), one row a stroke."""
    h = app.segmenter.image.shape[0]
    colors = {c.id: c.color for c in app.segmenter.classes}
    data = {"xs": [], "ys": [], CLASS_COL: [], COLOR_COL: [], WIDTH_COL: []}
    for xs, ys, label, width in strokes:
        px, py = image_to_data(xs, ys, h)
        data["xs"].append(px)
        data["ys"].append(py)
        data[CLASS_COL].append(label)
        data[COLOR_COL].append(colors[label])
        data[WIDTH_COL].append(width)
    return data


def paint_two_classes(app: SegdashApp) -> None:
    """Strokes of class 1 on the background and class 2 inside the disc (128x128 texture)."""
    app.canvas.on_draw(browser_data(app, [
        ([6, 120, 120], [6, 6, 120], 1, 3.0),
        ([50, 78], [64, 64], 2, 3.0),
    ]))


@pytest.fixture
def app():
    image, _ = two_texture_image(128)
    view = SegdashApp(image=image, image_name="texture.png")
    yield view
    view.close()


@pytest.fixture
def rendered(app):
    """The app with its plot rendered into a Bokeh document (hooks run, data source exists)."""
    from bokeh.document import Document

    app.canvas.pane.get_root(Document())
    assert app.canvas._source is not None
    return app


def on_event_loop(body) -> None:
    """Run ``body`` inside a running event loop, as Bokeh server callbacks run, then let
    HoloViews process the data changes it made (the echo of strokes pushed to the browser).

    The loop runs on a thread of its own: Playwright's sync API (browser tests in the same
    session) keeps an event loop running on the main thread.
    """
    import asyncio

    async def main():
        body()
        await asyncio.sleep(0.5)

    errors: list[BaseException] = []

    def run():
        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def upload(widget, data: bytes, filename: str, chunk: int | None = None,
           chunks: int | None = None) -> None:
    """Send ``data`` to an upload widget as the browser does: numbered chunks, in order
    (only the first ``chunks`` of them if given)."""
    from types import SimpleNamespace

    size = chunk or widget.chunk_size
    total = -(-(len(data) + 1) // size)  # as FilePond counts: an empty file is one chunk
    for i in range(total if chunks is None else chunks):
        widget._process_event(SimpleNamespace(event_name="upload_event", data={
            "chunk": i + 1, "total_chunks": total, "name": filename, "type": "",
            "data": data[i * size:(i + 1) * size]}))


# -- display helpers -------------------------------------------------------------------


def shown_by_canvas(image: np.ndarray) -> np.ndarray:
    """The RGB image a canvas shows for ``image``."""
    canvas = canvas_module.Canvas(segdash.Segmenter(image=image),
                                  lambda: canvas_module.Brush(1, "#000000", 5.0),
                                  canvas_module.OverlayView, lambda message: None)
    canvas.rebuild()
    return canvas.base.data


def test_canvas_shows_grey_colour_16bit_float_and_odd_channel_counts():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = shown_by_canvas(grey)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :, 0], grey) and np.array_equal(out[:, :, 2], grey)

    deep = np.linspace(1000, 3000, 100).astype(np.uint16).reshape(10, 10)
    out = shown_by_canvas(deep)
    assert out.min() == 0 and out.max() == 255  # stretched, not divided by 65535

    flat = np.full((5, 5), 0.25, np.float32)
    assert shown_by_canvas(flat).dtype == np.uint8  # constant image: no division by zero

    assert shown_by_canvas(np.zeros((4, 4, 2), np.uint8)).shape == (4, 4, 3)
    five = np.random.default_rng(0).integers(0, 255, (4, 4, 5), dtype=np.uint8)
    assert np.array_equal(shown_by_canvas(five), five[:, :, :3])


def test_canvas_shows_images_by_the_display_rule_of_the_result_files():
    rng = np.random.default_rng(1)
    images = [
        (rng.random((30, 40)) * 255).astype(np.uint8),
        (rng.random((30, 40, 3)) * 60000).astype(np.uint16),
        rng.normal(0, 1, (30, 40, 2)).astype(np.float32),
        (rng.random((90, 3300)) * 4000).astype(np.uint16),  # downsampled for display
    ]
    for image in images:
        step = display_step(image.shape)
        expected = to_display_rgb(downsample(image, step), *display_range(image))
        assert np.array_equal(shown_by_canvas(image), expected)


def test_display_range_is_computed_once_per_image(monkeypatch):
    calls = []

    def counting(image):
        calls.append(image.shape)
        return display_range(image)

    monkeypatch.setattr(render_module, "display_range", counting)
    image, _ = two_texture_image(128)
    view = SegdashApp(image=image)
    try:
        assert len(calls) == 1
        paint_two_classes(view)
        assert view.wait_idle(60) and view.segmenter.segmentation is not None
        view.cards.results.opacity_slider.value = 0.8
        view.cards.results.view_select.value = "uncertainty"
        assert len(calls) == 1  # new results and view settings reuse it
        view.segmenter.set_image(image[:64], "half.png")
        assert calls == [(128, 128), (64, 128)]
    finally:
        view.close()


def test_display_step_keeps_the_longer_side_within_the_limit():
    assert display_step((512, 512)) == 1
    assert display_step((100, 3300), max_side=1600) == 3
    big = np.zeros((100, 3300), np.uint8)
    assert downsample(big, 3).shape == (34, 1100)


def test_plot_and_image_coordinates_round_trip():
    # Pixel (column 0, row 0) of a 10-row image has its centre at x=0.5, y=9.5 (y up).
    assert image_to_data([0], [0], 10) == ([0.5], [9.5])
    xs, ys = data_to_image(*image_to_data([3.0, 7.25], [1.0, 8.5], 10), 10)
    assert np.allclose(xs, [3.0, 7.25]) and np.allclose(ys, [1.0, 8.5])


def test_overlay_colours_follow_classes_and_opacity():
    classes = [segdash.ClassInfo(1, "a", "#ff0000"), segdash.ClassInfo(2, "b", "#0000ff")]
    seg = np.array([[1, 2], [2, 0]], np.uint8)
    shown = segmentation_overlay(seg, classes, 0.5)
    assert shown.indices.dtype == np.uint8  # a byte a pixel crosses the websocket
    rgba = shown.rgba()
    assert tuple(rgba[0, 0]) == (255, 0, 0, 128)
    assert tuple(rgba[0, 1]) == (0, 0, 255, 128)
    assert rgba[1, 1, 3] == 0  # unlabelled stays transparent
    unc = uncertainty_overlay(np.array([[0.0, 0.5, np.nan]], np.float32), n_classes=2,
                              opacity=1.0).rgba()
    assert unc[0, 0, 3] == 0 and unc[0, 1, 3] == 255  # 0.5 is the most unsure two classes get
    assert unc[0, 2, 3] == 0  # no value: nothing shown


def test_overlay_indices_widen_to_uint16_beyond_255_classes_and_skip_unknown_ids():
    classes = [segdash.ClassInfo(i, f"c{i}", "#%06x" % (i * 997)) for i in range(1, 301)]
    seg = np.array([[0, 1, 300, 4000]], np.uint16)
    shown = segmentation_overlay(seg, classes, 1.0)
    assert shown.indices.dtype == np.uint16
    rgba = shown.rgba()
    assert tuple(rgba[0, 2]) == (*segdash.classes.hex_to_rgb(classes[-1].color), 255)
    assert rgba[0, 0, 3] == 0 and rgba[0, 3, 3] == 0  # unlabelled and an unknown id


def test_bundled_samples_include_grey_and_colour_images():
    names = sample_names()
    assert DEFAULT_SAMPLE in names
    kinds = {load_sample(n).ndim for n in names}
    assert kinds == {2, 3}
    with pytest.raises(ValueError, match="samples:"):
        load_sample("nope.png")


# -- sessions --------------------------------------------------------------------------


def test_default_app_opens_the_default_sample_with_two_classes():
    view = SegdashApp()
    try:
        assert view.segmenter.image.shape == load_sample(DEFAULT_SAMPLE).shape
        assert [c.id for c in view.segmenter.classes] == [1, 2]
        assert [b.label for b in view.cards.classes.buttons.objects] == ["class 1", "class 2"]
        assert view.template().title == "segdash"
    finally:
        view.close()


def test_each_session_has_its_own_segmenter(app):
    other = SegdashApp(image=app.segmenter.image)
    try:
        assert other.segmenter is not app.segmenter
        paint_two_classes(app)
        assert app.segmenter.strokes and not other.segmenter.strokes
        assert other.canvas.pane is not app.canvas.pane
    finally:
        other.close()


def test_sidebar_is_one_card_per_step_in_the_order_they_are_used(app):
    cards = list(app.cards)
    assert [c.title for c in cards] == ["Project", "Image", "Classes", "Strokes", "Display",
                                        "Features", "Classifier", "Results",
                                        "Feature importance", "Files",
                                        "Apply to project"]
    assert all(isinstance(c, Card) for c in cards) and app.sidebar() == cards
    assert [c.__panel__().title for c in cards] == [c.title for c in cards]


def test_watched_parameters_are_the_union_of_what_the_cards_watch(app):
    card_watches = set().union(*(card.watches for card in app.cards))
    assert app.cards.watches == card_watches
    # The plot and the status line declare theirs the same way; nothing else is watched.
    assert app.watched == card_watches | set(app.canvas.watches) | set(SegdashApp.watches)
    assert {"classes", "features", "classifier", "image_name"} <= card_watches
    watchers = app.segmenter.param.watchers
    assert {name for name in watchers if any(
        w.fn == app._on_state for w in watchers[name].get("value", []))} == app.watched


def test_each_card_is_refreshed_with_the_changes_it_watches_and_no_others(monkeypatch):
    card_types = (ProjectCard, ImageCard, ClassesCard, StrokesCard, DisplayCard, FeaturesCard,
                  ClassifierCard, ResultsCard, ImportanceCard, FilesCard, ApplyCard)
    calls: list[tuple[Card, set[str]]] = []
    for card_type in card_types:
        def recording(self, names, original=card_type.refresh):
            calls.append((self, set(names)))
            original(self, names)

        monkeypatch.setattr(card_type, "refresh", recording)
    # A card that starts watching a parameter is refreshed when it changes: the app's
    # watch list follows the cards.
    monkeypatch.setattr(FilesCard, "watches", (*FilesCard.watches, "feature_computations"))
    image, _ = two_texture_image(128)
    view = SegdashApp(image=image)
    try:
        assert tuple(type(card) for card in view.cards) == card_types
        assert "feature_computations" in view.watched
        # The first page: every card that shows something, with all it watches.
        assert {type(card): names for card, names in calls} == {
            type(card): set(card.watches) for card in view.cards if card.watches}
        calls.clear()
        paint_two_classes(view)
        assert view.wait_idle(60) and view.segmenter.segmentation is not None
        assert calls and all(names and names <= set(card.watches) for card, names in calls)
        refreshed = {type(card) for card, _ in calls}
        assert {StrokesCard, FilesCard} <= refreshed and FeaturesCard not in refreshed
        assert any("feature_computations" in names for card, names in calls
                   if card is view.cards.files)
    finally:
        view.close()


def test_file_names_are_shown_as_text(app):
    name = "<img src=x onerror=alert(1)>*draft*_1.png"
    upload(app.cards.image.upload, png_bytes(np.zeros((30, 20), np.uint8)), name)
    assert app.wait_idle(60)
    info = app.cards.image.info.object
    assert "<img" not in info and markdown_text(name) in info
    assert rendered_text(info) == f"{name}: 20x30, 1 channel(s), uint8"
    upload(app.cards.image.upload, b"not an image", name)
    assert app.wait_idle(60)
    assert name in app.errors[-1] and "<img" not in app.alert.object
    assert rendered_text(app.alert.object).startswith(f"{name}: not a PNG")


def rendered_text(markdown: str) -> str:
    """The text a Markdown pane shows for ``markdown`` (Panel's parser, tags removed)."""
    import html
    import re

    import panel as pn

    shown = pn.pane.Markdown(markdown)._transform_object(markdown)["object"]
    return html.unescape(re.sub(r"<[^>]+>", "", html.unescape(shown))).strip()


def test_image_upload_accepts_the_image_endings_segdash_reads(app):
    from segdash.io.naming import IMAGE_SUFFIXES

    assert app.cards.image.upload.accepted_filetypes == list(IMAGE_SUFFIXES)
    assert IMAGE_ACCEPT == ",".join(IMAGE_SUFFIXES)
    assert {Path(n).suffix.lower() for n in sample_names()} <= set(IMAGE_SUFFIXES)


def test_an_upload_streams_to_a_file_in_the_sessions_folder_and_opens(app):
    rng = np.random.default_rng(1)
    image = (rng.random((300, 200, 3)) * 255).astype(np.uint8)
    data = png_bytes(image)
    widget = app.cards.image.upload
    folder = app.uploads.path
    widget.chunk_size = 400
    upload(widget, data, "scan.png", chunks=3)  # not finished: nothing opened yet
    parts = list(folder.glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == 1200
    widget.chunk_size = 4096
    upload(widget, data, "scan.png")  # a new file replaces the unfinished one
    assert app.wait_idle(60) and not app.errors
    np.testing.assert_array_equal(app.segmenter.image, image)
    assert app.segmenter.image_name == "scan.png"
    assert widget.value == {}  # Panel's in-memory copy is never made
    assert list(folder.iterdir()) == []  # the upload and the decoded pixels are unlinked
    app.close()
    assert not folder.exists()


def test_an_upload_over_the_limit_is_refused_as_it_arrives_and_the_session_goes_on(app):
    widget = app.cards.image.upload
    widget.max_bytes = 1500
    assert widget.max_file_size == "1KB"  # what the browser checks before sending
    before = app.segmenter.image
    noise = (np.random.default_rng(0).random((60, 40)) * 255).astype(np.uint8)
    # a client skipping the browser's check, sending chunks smaller than it announced
    widget.chunk_size = 1000
    upload(widget, png_bytes(noise), "big.png", chunk=500)
    assert app.wait_idle(10)
    assert app.segmenter.image is before
    assert app.errors[-1] == "big.png: upload refused: the file is larger than the limit of " \
                             "1.5 KB"
    assert list(app.uploads.path.iterdir()) == []
    # declared too large in its first chunk: refused before more arrives
    widget._process_event(type("E", (), {"event_name": "upload_event", "data": {
        "chunk": 1, "total_chunks": 3, "name": "huge.png", "type": "", "data": b"x"}})())
    assert "huge.png: upload refused" in app.errors[-1]
    widget.max_bytes = 10_000
    upload(widget, png_bytes(noise[:20]), "small.png")
    assert app.wait_idle(30) and app.segmenter.image_name == "small.png"
    assert MAX_UPLOAD_BYTES == 2_000_000_000


def test_browser_strokes_become_segmenter_strokes_in_image_pixels(app):
    h = app.segmenter.image.shape[0]
    # The browser sends plot coordinates: x = column + 0.5, y = H - row - 0.5.
    app.canvas.on_draw({"xs": [[10.5, 20.5]], "ys": [[h - 5.5, h - 5.5]], CLASS_COL: [2],
                        COLOR_COL: ["#56b4e9"], WIDTH_COL: [7.0]})
    (stroke,) = app.segmenter.strokes
    assert stroke.xs == (10.0, 20.0) and stroke.ys == (5.0, 5.0)
    assert stroke.label == 2 and stroke.width == 7.0
    assert app.segmenter.labels[5, 15] == 2
    # The echo of the same data (the server pushing it back) adds nothing.
    app.canvas.on_draw({"xs": [[10.5, 20.5]], "ys": [[h - 5.5, h - 5.5]], CLASS_COL: [2],
                        COLOR_COL: ["#56b4e9"], WIDTH_COL: [7.0]})
    assert len(app.segmenter.strokes) == 1


def test_a_stroke_deleted_in_the_browser_is_deleted_on_the_server(app):
    paint_two_classes(app)
    assert app.wait_idle(60)
    data = browser_data(app, [([50, 78], [64, 64], 2, 3.0)])  # the first stroke is gone
    app.canvas.on_draw(data)
    assert [s.label for s in app.segmenter.strokes] == [2]


def test_live_update_trains_off_the_calling_thread_and_fills_the_overlay(app):
    threads = []
    app.segmenter.param.watch(lambda e: threads.append(threading.current_thread()),
                              "segmentation")
    paint_two_classes(app)
    assert app.wait_idle(60)
    assert threads and all(t is not threading.current_thread() for t in threads)
    seg = app.segmenter
    assert seg.segmentation is not None and seg.error == ""
    assert "trained random_forest" in app.status.object
    overlay = app.canvas.overlay
    assert overlay.shape == (*seg.image.shape[:2], 4)
    colours = {tuple(p) for p in overlay[:, :, :3].reshape(-1, 3)}
    assert colours == {(0xe6, 0x9f, 0x00), (0x56, 0xb4, 0xe9)}  # the two class colours
    files = app.cards.files
    assert not files.download_labels.disabled and not files.download_model.disabled
    # Painted right: the disc centre is class 2, a corner class 1.
    assert seg.segmentation[64, 64] == 2 and seg.segmentation[2, 2] == 1


def test_live_update_off_waits_for_the_train_button(app):
    app.cards.results.live_toggle.value = False
    assert app.segmenter.live_update is False
    paint_two_classes(app)
    assert app.wait_idle(60)
    assert app.segmenter.segmentation is None
    app.cards.results.train_button.clicks += 1
    assert app.wait_idle(60)
    assert app.segmenter.segmentation is not None


def test_train_button_with_one_class_painted_shows_a_message(app):
    app.cards.results.live_toggle.value = False
    app.canvas.on_draw(browser_data(app, [([6, 120], [6, 6], 1, 3.0)]))
    app.cards.results.train_button.clicks += 1
    assert app.wait_idle(60)
    assert app.alert.visible and "at least two classes" in app.alert.object


def test_burst_of_strokes_trains_once_on_the_last(app):
    app.cards.results.live_toggle.value = False
    paint_two_classes(app)
    assert app.wait_idle(60)
    trained = []
    app.segmenter.param.watch(lambda e: trained.append(1), "model")
    gate = threading.Event()
    # hold the worker first: a training queued on an idle worker would start at once
    app.worker.submit(gate.wait)
    app.cards.results.live_toggle.value = True  # one training queued
    for i in range(5):
        app.segmenter.add_stroke([10 + i, 20 + i], [100, 100], 1, 2)
    gate.set()
    assert app.wait_idle(60)
    assert len(trained) == 1  # the queued trainings were replaced by the newest


def test_worker_reports_job_errors_and_keeps_running():
    errors = []
    worker = SessionWorker(on_error=errors.append)
    worker.submit(lambda: 1 / 0)
    done = []
    worker.submit(lambda: done.append(1))
    assert worker.wait_idle(10)
    assert isinstance(errors[0], ZeroDivisionError) and done == [1]
    worker.close()
    worker.submit(lambda: done.append(2))
    assert worker.wait_idle(10) and done == [1]


# -- the plot --------------------------------------------------------------------------


def test_plot_hook_maps_stroke_colour_and_width_columns(rendered):
    source = rendered.canvas._source
    # Empty columns must be lists: Bokeh sends empty float arrays, and the browser then
    # fails with "invalid color array".
    assert all(isinstance(v, list) for v in source.data.values())
    (renderer,) = rendered.canvas._tool.renderers
    assert renderer.data_source is source
    assert renderer.glyph.line_color.field == COLOR_COL
    width = renderer.glyph.line_width
    assert width.field == WIDTH_COL and "inner_width" in width.transform.v_func


def test_brush_follows_the_selected_class_and_width(rendered):
    tool = rendered.canvas._tool
    image = tool.default_overrides[IMAGE_COL]  # the stamp of the image shown
    assert tool.default_overrides == {CLASS_COL: 1, COLOR_COL: "#e69f00", WIDTH_COL: 5.0,
                                      FILL_COL: False, IMAGE_COL: image}
    rendered.cards.classes.buttons.objects[1].clicks += 1
    rendered.cards.strokes.width_slider.value = 12
    assert tool.default_overrides == {CLASS_COL: 2, COLOR_COL: "#56b4e9", WIDTH_COL: 12.0,
                                      FILL_COL: False, IMAGE_COL: image}
    assert "active" in rendered.cards.classes.buttons.objects[1].css_classes


def test_undo_redo_clear_update_the_browser_strokes(rendered):
    app = rendered
    source = app.canvas._source
    on_event_loop(lambda: paint_two_classes(app))
    assert len(source.data["xs"]) == 2

    on_event_loop(lambda: setattr(app.cards.strokes.undo_button, "clicks", 1))
    # The data pushed to the browser comes back through the stream: no stroke is re-added.
    assert len(app.segmenter.strokes) == 1 and len(source.data["xs"]) == 1
    assert not app.cards.strokes.redo_button.disabled
    on_event_loop(lambda: setattr(app.cards.strokes.redo_button, "clicks", 1))
    assert len(app.segmenter.strokes) == 2
    assert len(source.data["xs"]) == 2 and source.data[CLASS_COL] == [1, 2]
    on_event_loop(lambda: setattr(app.cards.strokes.clear_button, "clicks", 1))
    assert app.segmenter.strokes == [] and source.data["xs"] == []
    assert all(isinstance(v, list) for v in source.data.values())
    assert app.wait_idle(60)
    assert app.segmenter.segmentation is None
    assert app.canvas.overlay[:, :, 3].max() == 0  # nothing shown without a result


def test_zoom_survives_overlay_updates(rendered):
    app = rendered
    figure = app.canvas.figure
    figure.x_range.start, figure.x_range.end = 10, 60
    on_event_loop(lambda: (paint_two_classes(app), app.wait_idle(60)))
    app.canvas.update_overlay()
    assert (figure.x_range.start, figure.x_range.end) == (10, 60)
    assert app.canvas.figure is figure  # the same figure, updated in place


def test_a_new_image_of_another_size_is_shown_in_the_same_figure(rendered):
    app = rendered
    canvas, figure = app.canvas, app.canvas.figure
    on_event_loop(lambda: (paint_two_classes(app), app.wait_idle(60)))
    figure.x_range.start, figure.x_range.end = 10, 60  # zoomed in on the first image
    stamp = canvas._tool.default_overrides[IMAGE_COL]
    old = dict(canvas._source.data)  # what a browser still showing it would send
    tall = np.zeros((200, 90), np.uint8)
    tall[0, 0] = 255  # the top-left pixel white, the rest black
    on_event_loop(lambda: app.segmenter.set_image(tall, "t.png"))
    assert canvas.figure is figure
    # the picture and the overlay span the new image, the zoom is reset to it
    base = [r for r in figure.renderers if type(r.glyph).__name__ == "ImageRGBA"][0]
    assert (base.data_source.data["dw"], base.data_source.data["dh"]) == ([90], [200])
    packed = base.data_source.data["image"][0]  # RGBA as uint32, bottom row first
    assert packed.shape == (200, 90) and packed.dtype == np.uint32
    assert (packed[199, 0], packed[0, 0], packed[199, 1]) == (0xFFFFFFFF, 0xFF000000,
                                                               0xFF000000)
    assert canvas.base.data.shape[:2] == (200, 90)
    glyph = canvas._overlay_glyph
    assert [r for r in figure.renderers if r.glyph is glyph][0].data_source.data["dh"] == [200]
    assert (figure.x_range.start, figure.x_range.end) == (0, 90)
    assert (figure.y_range.reset_start, figure.y_range.reset_end) == (0, 200)
    assert canvas._source.data["xs"] == [] and app.segmenter.strokes == []
    # new strokes are stamped with the new image; the first image's are not taken (what
    # the stream hands the canvas when the browser sends them)
    assert canvas._tool.default_overrides[IMAGE_COL] != stamp
    canvas._on_stream(canvas._plot_id, data=old)
    assert app.segmenter.strokes == [] and canvas._source.data["xs"] == []
    data = browser_data(app, [([5, 80], [100, 100], 1, 3.0)])
    data[IMAGE_COL] = [canvas._tool.default_overrides[IMAGE_COL]]
    canvas._on_stream(canvas._plot_id, data=data)
    (stroke,) = app.segmenter.strokes  # in the new image's pixels
    assert stroke.xs == (5, 80) and stroke.ys == pytest.approx((100, 100))


def test_large_images_are_downsampled_for_display_only():
    image = (np.random.default_rng(0).random((120, 3300)) * 255).astype(np.uint8)
    view = SegdashApp(image=image)
    try:
        base = view.canvas.base
        assert base.data.shape[:2] == (40, 1100)
        assert base.bounds.lbrt() == (0, 0, 3300, 120)
        view.canvas.on_draw(browser_data(view, [([10, 3000], [10, 10], 1, 3.0),
                                                ([10, 3000], [100, 100], 2, 3.0)]))
        assert view.wait_idle(120)
        assert view.segmenter.segmentation.shape == (120, 3300)  # computed at full size
        assert view.canvas.overlay.shape == (40, 1100, 4)  # shown downsampled
    finally:
        view.close()


def test_frame_size_keeps_the_aspect_ratio():
    w, h = frame_size((303, 384))
    assert abs(w / h - 384 / 303) < 0.01 and w <= 760 and h <= 640


# -- classes ---------------------------------------------------------------------------


def test_classes_add_rename_recolour_remove(rendered):
    app = rendered
    on_event_loop(lambda: _class_edits(app))


def _class_edits(app):
    card = app.cards.classes
    card.add_button.clicks += 1
    seg = app.segmenter
    assert [c.id for c in seg.classes] == [1, 2, 3] and card.active_class == 3
    assert len(card.buttons.objects) == 3
    card.name_input.value = "sky"
    card.color_input.value = "#112233"
    assert seg.class_info(3).name == "sky" and seg.class_info(3).color == "#112233"
    assert card.buttons.objects[2].label == "sky"
    assert app.canvas._tool.default_overrides[COLOR_COL] == "#112233"
    # Recolouring repaints existing strokes.
    app.canvas.on_draw(browser_data(app, [([5, 40], [5, 5], 3, 3.0)]))
    card.color_input.value = "#445566"
    assert app.canvas._source.data[COLOR_COL] == ["#445566"]
    card.remove_button.clicks += 1
    assert [c.id for c in seg.classes] == [1, 2] and seg.strokes == []
    assert card.active_class == 1


def test_the_last_class_cannot_be_removed(app):
    card = app.cards.classes
    card.remove_button.clicks += 1
    assert [c.id for c in app.segmenter.classes] == [2]
    assert card.remove_button.disabled
    card._remove_class()
    assert [c.id for c in app.segmenter.classes] == [2]
    assert "at least one class" in app.errors[-1]


# -- features and classifiers ----------------------------------------------------------


class ConstantPlusIntensity(FeatureExtractor):
    """Two features: the intensity (first channel) and a constant."""

    level = param.Number(1.0, bounds=(0, 10), doc="The constant.")

    halo = 0

    def compute(self, image):
        out = np.empty((*image.shape[:2], 2), np.float32)
        out[:, :, 0] = image[:, :, 0]
        out[:, :, 1] = self.level
        return out

    def feature_names(self, n_channels):
        return ["intensity", "constant"]


@pytest.fixture
def extra_extractor():
    registry.features.register("ui_test_two", ConstantPlusIntensity, overwrite=True)
    yield "ui_test_two"
    registry.features.unregister("ui_test_two")


def test_feature_multi_select_concatenates_selected_extractors(extra_extractor):
    image, _ = two_texture_image(128)
    view = SegdashApp(image=image)
    try:
        card = view.cards.features
        assert set(registry.features.names()) <= set(card.select.options)
        card.select.value = ["basic", extra_extractor]
        assert view.segmenter.features == ["basic", extra_extractor]
        titles = [p.objects[0].object for p in card.settings.objects]
        assert titles == ["**basic** settings",
                              f"**{markdown_text(extra_extractor)}** settings"]
        paint_two_classes(view)
        assert view.wait_idle(60)
        model = view.segmenter.model
        n_basic = len(view.segmenter.extractor("basic").feature_names(1))
        assert model.stack.names == ["basic", extra_extractor]
        assert len(model.feature_names) == n_basic + 2
    finally:
        view.close()


def test_settings_widgets_edit_the_extractor_and_retrain_once(app):
    paint_two_classes(app)
    assert app.wait_idle(60)
    before = app.segmenter.feature_computations
    panel = app.cards.features.settings.objects[0]
    sigma = next(w for w in panel.objects if type(w).__name__ == "EditableRangeSlider")
    with param.edit_constant(sigma):  # as the browser does when the slider is released
        sigma.param.update(value=(1.0, 4.0), value_throttled=(1.0, 4.0))
    ext = app.segmenter.extractor("basic")
    assert (ext.sigma_min, ext.sigma_max) == (1.0, 4.0)
    assert app.wait_idle(60)
    assert app.segmenter.feature_computations == before + 1
    import panel as pn

    boxes = {w.name for w in panel.select(pn.widgets.Checkbox)}
    assert {"Intensity", "Edges", "Texture"} <= boxes


def test_empty_feature_selection_is_refused_with_a_message(app):
    app.cards.features.select.value = []
    assert app.segmenter.features == ["basic"]
    assert app.cards.features.select.value == ["basic"]
    assert "at least one feature extractor" in app.errors[-1]


def test_switching_classifier_retrains_and_shows_its_settings(app):
    card = app.cards.classifier
    assert set(registry.classifiers.names()) == set(card.select.options)
    paint_two_classes(app)
    assert app.wait_idle(60)
    assert app.segmenter.model.classifier == "random_forest"
    card.select.value = "gradient_boosting"
    assert app.wait_idle(60)
    assert app.segmenter.model.classifier == "gradient_boosting"
    settings = card.settings.objects[0]
    assert settings.objects[0].object == r"**gradient\_boosting** settings"
    assert "max_iter" in settings.objects[-1].parameters


class ExplodesOnRealImages(ConstantPlusIntensity):
    """Passes the registry's small probe, then fails on any real image."""

    def compute(self, image):
        if image.shape[0] > 30:
            raise RuntimeError("boom from a plugin")
        return super().compute(image)


def test_a_plugin_failing_during_training_is_a_message_not_a_dead_session(app):
    registry.features.register("ui_test_explodes", ExplodesOnRealImages, overwrite=True)
    try:
        app.cards.features.select.value = ["ui_test_explodes"]
        paint_two_classes(app)
        assert app.wait_idle(60)
        assert app.alert.visible
        assert app.alert.object == "unexpected error (RuntimeError): boom from a plugin"
        assert not app.spinner.value
        app.cards.features.select.value = ["basic"]  # the session carries on
        assert app.wait_idle(60)
        assert app.segmenter.segmentation is not None
        assert not app.alert.visible  # a new result replaces the message
    finally:
        registry.features.unregister("ui_test_explodes")


def test_broken_plugins_are_listed_in_the_page(monkeypatch):
    broken = im.EntryPoint(name="ui_broken", value="segdash_no_such_module:Nothing",
                           group=registry.FEATURES_GROUP)
    real = registry.features._discover
    monkeypatch.setattr(registry.features, "_discover", lambda: [*real(), broken])
    registry.features.refresh()
    try:
        image, _ = two_texture_image(64)
        view = SegdashApp(image=image)
        assert view.plugin_alert.visible
        assert markdown_text("ui_broken") in view.plugin_alert.object
        assert markdown_text("segdash_no_such_module") in view.plugin_alert.object
        # Choosing it: a message, no crash.
        view.cards.features.select.value = ["basic", "ui_broken"]
        assert view.segmenter.features == ["basic"]
        assert "ui_broken" in view.errors[-1]
        view.close()
    finally:
        monkeypatch.undo()
        registry.features.refresh()


# -- uploads ---------------------------------------------------------------------------


def test_image_uploads_of_every_kind_open(app):
    rng = np.random.default_rng(0)
    grey16 = (rng.random((40, 50)) * 60000).astype(np.uint16)
    rgba = (rng.random((30, 20, 4)) * 255).astype(np.uint8)
    card = app.cards.image
    for data, name, shape, dtype in [
        (png_bytes(grey16), "deep.png", (40, 50), np.uint16),
        (png_bytes(rgba), "rgba.png", (30, 20, 3), np.uint8),
    ]:
        upload(card.upload, data, name)
        assert app.wait_idle(60)
        assert app.segmenter.image.shape == shape and app.segmenter.image.dtype == dtype
        assert app.segmenter.image_name == name and name in card.info.object
        assert card.sample_select.value == ""
    buf = io.BytesIO()
    Image.fromarray(rgba[:, :, :3]).save(buf, format="JPEG")
    upload(card.upload, buf.getvalue(), "photo.jpg")
    assert app.wait_idle(60)
    assert app.segmenter.image.shape == (30, 20, 3)
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, grey16)
    upload(card.upload, buf.getvalue(), "deep.tif")
    assert app.wait_idle(60)
    assert app.segmenter.image.dtype == np.uint16 and app.canvas.pane.object is not None


def test_bad_image_upload_shows_an_error_and_keeps_the_session(app):
    before = app.segmenter.image
    upload(app.cards.image.upload, b"this is not an image", "notes.png")
    assert app.wait_idle(60)
    assert app.alert.visible and "notes.png" in app.alert.object
    assert "not a PNG, JPEG or TIFF" in app.alert.object
    assert "Traceback" not in app.alert.object
    assert app.segmenter.image is before
    paint_two_classes(app)  # still works
    assert app.wait_idle(60)
    assert app.segmenter.segmentation is not None


def test_an_empty_upload_is_named_as_empty_and_keeps_the_session(app):
    before = app.segmenter.image
    upload(app.cards.image.upload, b"", "zero.png")  # FilePond sends one empty chunk
    assert app.wait_idle(60)
    assert app.errors and app.errors[-1] == "zero.png: the file is empty (0 bytes)"
    assert app.segmenter.image is before
    assert list(app.uploads.path.iterdir()) == []


def test_choosing_a_sample_opens_it(app):
    app.cards.image.sample_select.value = "astronaut.jpg"
    assert app.wait_idle(60)
    assert app.segmenter.image.shape == (512, 512, 3)
    assert app.segmenter.image_name == "astronaut.jpg"


def test_model_upload_applies_it_and_a_wrong_model_is_refused(app):
    paint_two_classes(app)
    assert app.wait_idle(60)
    data = app.segmenter.model.to_bytes()
    image, _ = two_texture_image(128, seed=3)
    other = SegdashApp(image=image)
    try:
        upload(other.cards.files.model_upload, data, "model.skops")
        assert other.wait_idle(60)
        assert other.segmenter.segmentation is not None and not other.errors
        assert other.canvas.overlay[:, :, 3].max() > 0
        rgb = SegdashApp(image=np.zeros((20, 20, 3), np.uint8))
        upload(rgb.cards.files.model_upload, data, "model.skops")
        assert rgb.wait_idle(60)
        assert "channel" in rgb.alert.object and rgb.segmenter.segmentation is None
        upload(rgb.cards.files.model_upload, b"\x80\x04garbage", "evil.skops")
        assert rgb.wait_idle(60)
        assert "pickle" in rgb.alert.object
        rgb.close()
    finally:
        other.close()


def test_annotations_download_and_upload_round_trip(app):
    paint_two_classes(app)
    assert app.wait_idle(60)
    download = app.cards.files.download_annotations
    text = download.callback().read()
    assert download.filename == "texture_annotations.json"
    doc = json.loads(text)
    assert len(doc["strokes"]) == 2
    image, _ = two_texture_image(128)
    other = SegdashApp(image=image)
    try:
        upload(other.cards.files.annotations_upload, text, "texture_annotations.json")
        assert other.wait_idle(60)
        assert [s.label for s in other.segmenter.strokes] == [1, 2]
        assert other.segmenter.segmentation is not None
        upload(other.cards.files.annotations_upload, b"{not json", "broken.json")
        assert other.wait_idle(60)
        assert "not valid JSON" in other.alert.object
    finally:
        other.close()


# -- downloads -------------------------------------------------------------------------


def test_downloads_label_image_overlay_and_model(app, tmp_path):
    files = app.cards.files
    with pytest.raises(ValueError):
        files.download_labels.callback()
    assert "train a model first" in app.errors[-1]
    paint_two_classes(app)
    assert app.wait_idle(60)
    labels = np.asarray(Image.open(files.download_labels.callback()))
    assert files.download_labels.filename == "texture_labels.png"
    assert labels.shape == (128, 128) and set(np.unique(labels)) == {1, 2}
    overlay = Image.open(files.download_overlay.callback())
    assert overlay.mode == "RGB" and overlay.size == (128, 128)
    assert files.download_overlay.filename == "texture_overlay.png"
    content = files.download_model.callback().read()  # also sets the file name
    path = tmp_path / files.download_model.filename
    path.write_bytes(content)
    assert path.name == "texture_model.skops"
    model = segdash.load_model(path)
    assert np.array_equal(model.predict(app.segmenter.image), app.segmenter.segmentation)


def test_overlay_download_is_the_blended_overlay_segdash_apply_writes():
    rng = np.random.default_rng(2)
    image = (rng.random((128, 128)) * 3000 + 1000).astype(np.uint16)  # stretched for display
    image[32:96, 32:96] += 20000
    view = SegdashApp(image=image, image_name="deep.ome.tif")
    try:
        view.canvas.on_draw(browser_data(view, [([6, 120, 120], [6, 6, 120], 1, 3.0),
                                                ([50, 78], [64, 64], 2, 3.0)]))
        assert view.wait_idle(60)
        seg = view.segmenter
        download = view.cards.files.download_overlay
        shown = np.asarray(Image.open(download.callback()))
        assert download.filename == "deep_overlay.png"
        expected = overlay_rgb(seg.image, seg.segmentation, seg.classes,
                               *display_range(seg.image))
        assert shown.dtype == np.uint8 and np.array_equal(shown, expected)
        # The image under the colours is the one the canvas shows.
        assert np.array_equal(view.canvas.base.data, to_display_rgb(image, *display_range(image)))
    finally:
        view.close()


def test_labels_beyond_255_download_as_tiff(app):
    import tifffile

    doc = {"format": "segdash-annotations", "strokes": [
        {"x": [6, 120], "y": [6, 6], "label": 1, "width": 3},
        {"x": [50, 78], "y": [64, 64], "label": 300, "width": 3}]}
    app.segmenter.load_strokes_json(json.dumps(doc))
    assert app.wait_idle(60)
    download = app.cards.files.download_labels
    buf = download.callback()
    assert download.filename == "texture_labels.tif"
    assert set(np.unique(tifffile.imread(buf))) == {1, 300}


# -- lifetime --------------------------------------------------------------------------


def test_close_frees_the_session_memory(app):
    paint_two_classes(app)
    assert app.wait_idle(60)
    app.close()
    seg = app.segmenter
    assert seg.image is None and seg.segmentation is None and seg.model is None
    assert seg.probabilities is None and seg.labels is None and seg._cache is None
    seg.add_class()  # later changes reach no page and start no job
    assert app.wait_idle(5)


def test_segmenter_release_discards_a_running_training():
    image, _ = two_texture_image(64)
    seg = segdash.Segmenter(image=image, live_update=False)
    seg.add_stroke([2, 60], [2, 2], 1, 2)
    seg.add_stroke([20, 40], [32, 32], 2, 2)
    seg.feature_codes()
    seg.release()
    assert seg.image is None and seg._cache is None and seg.strokes == []
    assert seg.train() is None and seg.error == "open an image first"


# -- overlay view, busy indicator ------------------------------------------------------


def test_overlay_opacity_show_hide_and_uncertainty_view(app):
    paint_two_classes(app)
    assert app.wait_idle(60)
    assert set(np.unique(app.canvas.overlay[:, :, 3])) == {128}
    results = app.cards.results
    results.opacity_slider.value = 1.0
    assert set(np.unique(app.canvas.overlay[:, :, 3])) == {255}
    results.overlay_toggle.value = False
    assert app.canvas.overlay[:, :, 3].max() == 0
    results.overlay_toggle.value = True
    results.view_select.value = "uncertainty"
    shown = app.canvas.overlay
    assert {tuple(p) for p in shown[:, :, :3].reshape(-1, 3)} == {(255, 0, 255)}
    unsure = app.segmenter.uncertainty
    # More opaque where the model is less sure.
    assert shown[..., 3][unsure > np.percentile(unsure, 90)].mean() > \
        shown[..., 3][unsure <= np.percentile(unsure, 10)].mean()


def test_busy_indicator_follows_the_worker(app):
    gate = threading.Event()
    app.worker.submit(gate.wait)
    assert app.spinner.value is True
    gate.set()
    assert app.wait_idle(10)
    assert app.spinner.value is False


# -- serve -----------------------------------------------------------------------------


def test_serve_refuses_an_unreadable_image_before_starting(tmp_path, capsys):
    from segdash.ui.serve import serve

    bad = tmp_path / "nothing.png"
    bad.write_text("hello")
    assert serve(image=bad, port=0) == 2
    assert "nothing.png: not a PNG, JPEG or TIFF" in capsys.readouterr().err


def test_websocket_origins_default_to_this_machine():
    from segdash.ui.serve import websocket_origins

    assert websocket_origins(5006, None) == ["localhost:5006", "127.0.0.1:5006"]
    assert websocket_origins(80, "10.1.2.3")[-1] == "10.1.2.3:80"
    assert websocket_origins(80, "0.0.0.0", ["example.org"]) == ["example.org"]


def test_feature_extractor_names_are_escaped_in_the_choices_menu():
    # The MultiChoice menu renders labels as HTML: a name reaches it escaped.
    name = '<img src="x" onerror="window.flag=1">'
    registry.features.register(name, ConstantPlusIntensity, overwrite=True)
    try:
        image, _ = two_texture_image(64)
        view = SegdashApp(image=image)
        options = view.cards.features.select.options
        assert options["&lt;img src=&quot;x&quot; onerror=&quot;window.flag=1&quot;&gt;"] == name
        assert not any("<" in label for label in options)
        view.cards.features.select.value = ["basic", name]
        assert view.segmenter.features == ["basic", name]
        view.close()
    finally:
        registry.features.unregister(name)
