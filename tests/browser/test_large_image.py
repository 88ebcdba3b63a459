"""A 16384² pyramidal OME-TIFF in the browser: only the viewport is sent, painting zoomed
in trains on the tiles under the strokes, the overlay fills the view wherever it goes, and
the downloaded labels have the full image's size and agree with the overlay.

The slide (benchmarks/slide.py) is a checkerboard of two textures in 1024-pixel squares,
written in the test (a few seconds), never committed.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from benchmarks.slide import SQUARE, slide_class, write_slide

from .conftest import start_server, stop_server
from .pages import (
    _JS_LIB,
    BLUE,
    ORANGE,
    choose_class,
    download,
    draw,
    frame,
    open_app,
    paint,
    wait_status,
)

SIDE = 16384

# The image and the overlay in the plot: their pixel shape and where they are drawn (data
# coordinates).
IMAGES_JS = """() => {""" + _JS_LIB + """
  return views('ImageRGBA').concat(views('Image')).map((v) => {
    const ds = v.model.data_source;
    const img = col(ds, 'image')[0];
    return {shape: img.shape, x: col(ds, 'x')[0], y: col(ds, 'y')[0],
            dw: col(ds, 'dw')[0], dh: col(ds, 'dh')[0]};
  });
}"""

# The overlay's pixels as packed RGBA (little-endian: R in the low byte), with its place.
OVERLAY_PIXELS_JS = """() => {""" + _JS_LIB + """
  const v = overlayView();
  if (v == null) return null;
  const {ds, img, packed} = overlayPixels(v);
  return {shape: img.shape, x: col(ds, 'x')[0], y: col(ds, 'y')[0], dw: col(ds, 'dw')[0],
          dh: col(ds, 'dh')[0], pixels: Array.from(packed)};
}"""


Image.MAX_IMAGE_PIXELS = SIDE * SIDE  # the labels downloaded are this large


def _rgb(hex_colour: str) -> int:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return r | (g << 8) | (b << 16)


@pytest.fixture(scope="module")
def slide_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slide")
    path = write_slide(folder / "slide.ome.tif", SIDE)
    proc, url = start_server(str(path), "--cache-gb", "0.5", log_path=folder / "serve.log")
    yield url, folder
    stop_server(proc)


# Show data x0..x1, y0..y1 and tell the server, as Bokeh's pan and zoom tools do at the
# end of a gesture (a RangesUpdate event, what HoloViews' RangeXY stream listens to).
VIEW_JS = """([x0, x1, y0, y1]) => {
  const v = Bokeh.index.query_one((v) => v.frame != null && v.canvas_view != null);
  v.model.x_range.setv({start: x0, end: x1});
  v.model.y_range.setv({start: y0, end: y1});
  v.trigger_ranges_update_event();
}"""


def zoom_to(page, cols: tuple[float, float], rows: tuple[float, float]) -> None:
    """Show full-resolution columns ``cols`` and rows ``rows`` (from the top) and wait for
    the picture of that view."""
    page.evaluate(VIEW_JS, [cols[0], cols[1], SIDE - rows[1], SIDE - rows[0]])
    width = cols[1] - cols[0]
    page.wait_for_function(
        f"(() => {{ const r = ({IMAGES_JS})(); return r.length > 0 && r[0].dw < {width * 1.5}"
        f" && r[0].x >= {cols[0] - width}; }})()", timeout=20_000)


def overlay_agreement(page) -> tuple[float, int, dict]:
    """Share of the overlay's coloured pixels whose colour is the slide's texture there, and
    how many are coloured."""
    data = page.evaluate(OVERLAY_PIXELS_JS)
    h, w = data["shape"]
    pix = np.asarray(data["pixels"], np.uint32).reshape(h, w)
    # image rows are drawn bottom-up in Bokeh: row 0 of the array is at data y = y
    ys = data["y"] + (np.arange(h) + 0.5) * data["dh"] / h
    xs = data["x"] + (np.arange(w) + 0.5) * data["dw"] / w
    rows = np.clip((SIDE - ys).astype(np.int64), 0, SIDE - 1)
    cols = np.clip(xs.astype(np.int64), 0, SIDE - 1)
    truth = slide_class(rows, cols)
    colour = pix & 0xFFFFFF
    coloured = (pix >> 24) > 0
    want = np.where(truth == 1, _rgb(ORANGE), _rgb(BLUE))
    n = int(coloured.sum())
    agree = float((colour[coloured] == want[coloured]).mean()) if n else 0.0
    return agree, n, data


# Share of the overlay's pixels that are coloured (counted in the browser).
FILLED_JS = """() => {""" + _JS_LIB + """
  const v = overlayView();
  if (v == null) return 0;
  const {packed} = overlayPixels(v);
  let n = 0;
  for (const p of packed) { if ((p >>> 24) !== 0) n += 1; }
  return n / packed.length;
}"""


def wait_overlay_filled(page, share: float, timeout: float = 60_000) -> tuple[float, dict]:
    """Wait until at least ``share`` of the overlay's pixels are coloured; return how many
    of them agree with the slide and the overlay."""
    page.wait_for_function(f"({FILLED_JS})() >= {share}", timeout=timeout, polling=300)
    agree, _, data = overlay_agreement(page)
    return agree, data


def test_slide_is_shown_painted_and_segmented_by_the_viewport(page, slide_server, console,
                                                              tmp_path):
    url, _ = slide_server
    start = time.monotonic()
    open_app(page, url)
    first_view = time.monotonic() - start
    page.get_by_text("slide.ome.tif: 16384x16384, 3 channel(s), uint8").wait_for()
    base = page.evaluate(IMAGES_JS)[0]
    f = frame(page)
    # the browser holds a screen-sized picture of the whole slide (at most twice the frame:
    # the pyramid level just finer than the screen), not the slide
    assert max(base["shape"]) <= 2 * max(f.w, f.h)
    assert base["dw"] == pytest.approx(SIDE, rel=0.01)

    # zoom in on four squares (2048² full-resolution pixels): a finer pyramid level comes
    zoom_to(page, (0, 2 * SQUARE), (0, 2 * SQUARE))
    zoomed = page.evaluate(IMAGES_JS)[0]
    assert zoomed["dw"] < SIDE / 4
    assert zoomed["shape"][1] / zoomed["dw"] > base["shape"][1] / base["dw"] * 4

    f = frame(page)
    smooth = [(200, 300), (700, 320), (760, 700)]  # in square (0, 0): texture 1
    striped = [(SQUARE + 200, 300), (SQUARE + 700, 330)]  # in square (0, 1): texture 2
    draw(page, [f.at(c, r, SIDE) for c, r in smooth])
    choose_class(page, "class 2", 2)
    paint(page, striped, SIDE)
    print("before training", time.monotonic() - start)
    wait_status(page, r"trained random_forest")
    print("trained", time.monotonic() - start)
    agree, data = wait_overlay_filled(page, 0.9)
    assert agree > 0.95, f"the overlay agrees with the slide at {agree:.1%} of its pixels"
    assert data["dw"] < SIDE / 4  # the overlay of the view, not of the slide

    print("overlay", time.monotonic() - start)
    # pan far away: the overlay fills there too
    zoom_to(page, (12 * SQUARE, 14 * SQUARE), (9 * SQUARE, 11 * SQUARE))
    agree, data = wait_overlay_filled(page, 0.9)
    assert data["x"] >= 11 * SQUARE and data["y"] <= SIDE - 8 * SQUARE
    assert agree > 0.95, f"far from the strokes the overlay agrees at {agree:.1%}"

    print("far overlay", time.monotonic() - start)
    # the downloaded labels are the full slide's size and agree with the overlay
    labels_file = download(page, "Label image", tmp_path)
    with Image.open(labels_file) as im:  # 268 M pixels: over Pillow's bomb limit
        im.load()
        labels = np.asarray(im)
    print("labels", time.monotonic() - start)
    assert labels.shape == (SIDE, SIDE)
    truth = slide_class(np.arange(0, SIDE, 97), np.arange(0, SIDE, 89))
    assert (labels[::97, ::89] == truth).mean() > 0.95
    print(f"first view {first_view:.1f} s")
