"""Driving the segdash page: where the plot is, drawing strokes, reading what the page shows.

What the page shows is read from the Bokeh models in the browser (``window.Bokeh``), never
from a test-only server endpoint.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from segdash.ui.samples import DEFAULT_SAMPLE, load_sample

H, W = load_sample(DEFAULT_SAMPLE).shape[:2]  # the coins sample, what ``segdash serve`` opens
ORANGE, BLUE = "#e69f00", "#56b4e9"  # the default colours of classes 1 and 2
BACKGROUND = [(10, 8), (370, 8), (370, 295)]  # along the top and right edges of the coins
COIN = [(45, 52), (60, 55)]  # inside the top-left coin

# The plot frame (the image area) in page pixels, and its data ranges.
FRAME_JS = """() => {
  const v = Bokeh.index.query_one((v) => v.frame != null && v.canvas_view != null);
  if (v == null) return null;
  const b = v.frame.bbox, r = v.canvas_view.el.getBoundingClientRect();
  return {x: r.left + b.x0, y: r.top + b.y0, w: b.width, h: b.height,
          x0: v.model.x_range.start, x1: v.model.x_range.end,
          y0: v.model.y_range.start, y1: v.model.y_range.end};
}"""

# Shared JS helpers: column of a data source (Map or object), the renderer views, the
# overlay's renderer view (the one Image glyph: palette indices through a colour mapper; the
# image under it is an ImageRGBA) and what the user sees of it: its indices mapped by
# BokehJS's own colour mapper, alpha times the glyph's global alpha, as packed RGBA (R in
# the low byte) with the indices array itself (img) and its data source (ds).
_JS_LIB = """
  const col = (ds, k) => ds.data instanceof Map ? ds.data.get(k) : ds.data[k];
  const views = (type) => [...Bokeh.index.query((v) => v.model.type === 'GlyphRenderer'
                                                 && v.model.glyph.type === type)];
  const overlayView = () => views('Image').pop() || null;
  const overlayPixels = (v) => {
    const ds = v.model.data_source, img = col(ds, 'image')[0], glyph = v.model.glyph;
    const rgba = glyph.color_mapper.rgba_mapper.v_compute(img);
    const ga = glyph.global_alpha;  // a NumberSpec: {value: ...} (or a bare number)
    const a = typeof ga === 'number' ? ga : ga.value;
    if (a !== 1) { for (let i = 3; i < rgba.length; i += 4) rgba[i] = rgba[i] * a; }
    return {ds: ds, img: img, alpha: a,
            packed: new Uint32Array(rgba.buffer, rgba.byteOffset, rgba.length / 4)};
  };
"""

# The strokes the browser holds: class, colour, width (image px) and on-screen width.
STROKES_JS = """() => {""" + _JS_LIB + """
  const v = views('MultiLine')[0];
  if (v == null) return null;
  const ds = v.model.data_source, n = ds.get_length() || 0;
  const out = [];
  for (let i = 0; i < n; i++) {
    out.push({cls: col(ds, 'stroke_class')[i], color: col(ds, 'stroke_color')[i],
              width: col(ds, 'stroke_width')[i], points: col(ds, 'xs')[i].length,
              screen_width: v.glyph.visuals.line.line_width.get(i)});
  }
  return out;
}"""

# The overlay as the user sees it: shape, opaque pixel count, distinct colours, the glyph's
# alpha (the overlay's opacity), and the bytes a pixel its data takes (1: uint8 indices).
OVERLAY_JS = """() => {""" + _JS_LIB + """
  const v = overlayView();
  if (v == null) return null;
  const {img, packed, alpha} = overlayPixels(v);
  let opaque = 0; const colours = new Set();
  for (const p of packed) {
    if ((p >>> 24) !== 0) { opaque += 1; colours.add(p & 0xffffff); }
  }
  const hex = [...colours].slice(0, 20).map((c) => '#' + [c & 0xff, (c >> 8) & 0xff,
    (c >> 16) & 0xff].map((x) => x.toString(16).padStart(2, '0')).join(''));
  return {shape: img.shape, opaque: opaque, colours: hex.sort(), alpha: alpha,
          bytes_per_pixel: img.BYTES_PER_ELEMENT};
}"""

# The image under the overlay (first ImageRGBA): shape, mean of R, G, B over opaque pixels,
# whether every pixel is grey (R = G = B), and a checksum of its bytes.
BASE_JS = """() => {""" + _JS_LIB + """
  const imgs = views('ImageRGBA');
  if (imgs.length < 1) return null;
  const img = col(imgs[0].model.data_source, 'image')[0];
  const packed = new Uint32Array(img.buffer, img.byteOffset, img.length);
  let r = 0, g = 0, b = 0, grey = true, sum = 0;
  for (const p of packed) {
    const pr = p & 0xff, pg = (p >> 8) & 0xff, pb = (p >> 16) & 0xff;
    r += pr; g += pg; b += pb; sum = (sum * 31 + pr + 7 * pg + 13 * pb) % 1000000007;
    if (pr !== pg || pg !== pb) grey = false;
  }
  const n = packed.length || 1;
  return {shape: img.shape, mean: [r / n, g / n, b / n], grey: grey, checksum: sum};
}"""

# The plot with the freehand tool: its Bokeh model id, frame size (screen px) and ranges,
# and where its image (first ImageRGBA) and overlay (the Image) glyphs are: their data's
# shape [rows, columns] and extent x, y, dw, dh (plot data units: image pixels).
PLOT_JS = """() => {""" + _JS_LIB + """
  const v = Bokeh.index.query_one((v) => v.model.toolbar != null
    && v.model.toolbar.tools.some((t) => t.type === 'FreehandDrawTool'));
  if (v == null) return null;
  const glyph = (g) => {
    if (g == null) return null;
    const ds = g.model.data_source, img = col(ds, 'image')[0];
    return {shape: img.shape, x: col(ds, 'x')[0], y: col(ds, 'y')[0],
            dw: col(ds, 'dw')[0], dh: col(ds, 'dh')[0]};
  };
  const r = (range) => [range.start, range.end, range.reset_start, range.reset_end];
  return {id: v.model.id, frame: [v.frame.bbox.width, v.frame.bbox.height],
          x_range: r(v.model.x_range), y_range: r(v.model.y_range),
          base: glyph(views('ImageRGBA')[0]), overlay: glyph(overlayView())};
}"""

# Marks the overlay image now shown (a new one is another array object), returns its count.
MARK_OVERLAY_JS = """() => {""" + _JS_LIB + """
  const v = overlayView();
  window.__segdash_marked = v == null ? null : col(v.model.data_source, 'image')[0];
  return v == null ? 0 : 1;
}"""

# True once the overlay shows another image than the one marked by MARK_OVERLAY_JS.
NEW_OVERLAY_JS = """() => {""" + _JS_LIB + """
  const v = overlayView();
  if (v == null) return false;
  const img = col(v.model.data_source, 'image')[0];
  return img != null && img !== window.__segdash_marked;
}"""

# The bar charts (VBar glyphs): per chart, its bar names and heights.
BARS_JS = """() => {""" + _JS_LIB + """
  return views('VBar').map((v) => {
    const ds = v.model.data_source, n = ds.get_length() || 0;
    const key = [...(ds.data instanceof Map ? ds.data.keys() : Object.keys(ds.data))]
      .find((k) => k !== 'top' && typeof col(ds, k)[0] === 'string');
    const names = key ? [...col(ds, key)] : [];
    return {n: n, names: names, top: [...col(ds, v.model.glyph.top.field)]};
  });
}"""

# The freehand tool's stamp for the next stroke.
BRUSH_JS = """() => {
  const v = Bokeh.index.query_one((v) => v.model.type === 'FreehandDrawTool');
  const o = v.model.default_overrides;
  return o instanceof Map ? Object.fromEntries(o.entries()) : o;
}"""


@dataclass
class Frame:
    """The plot frame on the page and the data range it shows."""

    x: float
    y: float
    w: float
    h: float
    x0: float
    x1: float
    y0: float
    y1: float

    def at(self, column: float, row: float, height: int) -> tuple[float, float]:
        """Page position of image pixel (column, row from the top) of an image ``height`` tall."""
        x_data, y_data = column + 0.5, height - row - 0.5
        return (self.x + (x_data - self.x0) / (self.x1 - self.x0) * self.w,
                self.y + (self.y1 - y_data) / (self.y1 - self.y0) * self.h)


def open_app(page: Page, url: str) -> Frame:
    """Load the dashboard and wait until the plot is drawn."""
    page.goto(url)
    expect(page).to_have_title("segdash")
    page.wait_for_function(f"({FRAME_JS})() !== null", timeout=30_000)
    page.wait_for_function(f"({BRUSH_JS})() != null", timeout=30_000)
    return frame(page)


def frame(page: Page) -> Frame:
    return Frame(**page.evaluate(FRAME_JS))


def draw(page: Page, points: list[tuple[float, float]], release: bool = True) -> None:
    """Drag the mouse through page positions ``points`` (a freehand stroke)."""
    page.mouse.move(*points[0])
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*p, steps=8)
    if release:
        page.mouse.up()


def paint(page: Page, pixels: list[tuple[float, float]], height: int) -> None:
    """Draw a stroke through image pixels (column, row) on the current plot."""
    f = frame(page)
    draw(page, [f.at(c, r, height) for c, r in pixels])


def choose_class(page: Page, name: str, class_id: int) -> None:
    """Click a class button and wait until the browser stamps that class on new strokes."""
    page.locator(".segdash-class button", has_text=name).click()
    page.wait_for_function(f"({BRUSH_JS})().stroke_class === {class_id}", timeout=10_000)


def paint_two_classes(page: Page) -> float:
    """On the coins sample: background as class 1, a coin as class 2; returns the time of
    the last mouse-up."""
    paint(page, BACKGROUND, H)
    choose_class(page, "class 2", 2)
    paint(page, COIN, H)
    return time.monotonic()


def wait_status(page: Page, pattern: str, timeout: float = 60_000) -> str:
    """Wait until the status line matches ``pattern`` (a regex); return its text."""
    locator = page.locator(".segdash-status pre", has_text=re.compile(pattern))
    try:
        locator.wait_for(timeout=timeout)
    except PlaywrightTimeout as exc:
        # what the page shows instead, and the strokes it holds (a lost stroke or a
        # stale status read differently)
        shown = page.locator(".segdash-status pre").all_inner_texts()
        raise AssertionError(f"status never matched {pattern!r} in {timeout / 1000:.0f} s; "
                             f"it reads {shown}; strokes {page.evaluate(STROKES_JS)}; "
                             f"errors {page.locator('.segdash-error').all_inner_texts()}"
                             ) from exc
    return locator.inner_text()


def base_image(page: Page) -> dict | None:
    """What the page shows of the image itself (see ``BASE_JS``)."""
    return page.evaluate(BASE_JS)


def open_card(page: Page, title: str) -> None:
    """Unfold a sidebar card (Features and Classifier start folded)."""
    card = page.locator(f".segdash-card-{title.lower().replace(' ', '-')}").first
    header = card.locator(".card-header").first
    if "collapsed" in (card.get_attribute("class") or "") or not card.locator(
            ".bk-input-group, .bk-panel-models-widgets").first.is_visible():
        header.click()


def strokes(page: Page) -> list[dict]:
    return page.evaluate(STROKES_JS)


def overlay(page: Page) -> dict | None:
    return page.evaluate(OVERLAY_JS)


def wait_overlay(page: Page, opaque: int, timeout: float = 30_000) -> dict:
    """Wait until the overlay has ``opaque`` non-transparent pixels; return its summary."""
    page.wait_for_function(f"(({OVERLAY_JS})() || {{}}).opaque === {int(opaque)}",
                           timeout=timeout)
    return overlay(page)


def wait_overlay_colours(page: Page, n: int, timeout: float = 30_000) -> dict:
    """Wait until the overlay shows at least ``n`` class colours; return its summary."""
    page.wait_for_function(f"((({OVERLAY_JS})() || {{}}).colours || []).length >= {int(n)}",
                           timeout=timeout)
    return overlay(page)


def plot(page: Page) -> dict | None:
    """The plot's figure id, frame, ranges and image and overlay extents (see ``PLOT_JS``)."""
    return page.evaluate(PLOT_JS)


def wait_plot_of(page: Page, height: int, width: int, timeout: float = 30_000) -> dict:
    """Wait until the plot shows an image of ``height`` x ``width`` pixels (its picture
    and its overlay both span it); return :func:`plot`."""
    page.wait_for_function(
        f"""(() => {{ const p = ({PLOT_JS})();
          const spans = (g) => g != null && g.dw === {width} && g.dh === {height};
          return p != null && spans(p.base) && spans(p.overlay); }})()""", timeout=timeout)
    return plot(page)


def mark_overlay(page: Page) -> None:
    """Remember the overlay now shown, for :func:`wait_new_overlay`."""
    page.evaluate(MARK_OVERLAY_JS)


def wait_new_overlay(page: Page, timeout: float = 30_000) -> None:
    """Wait until the overlay shows another image than the one :func:`mark_overlay` saw."""
    page.wait_for_function(NEW_OVERLAY_JS, timeout=timeout, polling="raf")


def bar_charts(page: Page) -> list[dict]:
    """The page's bar charts: ``[{"n": bars, "names": [...], "top": [...]}, ...]``."""
    return page.evaluate(BARS_JS)


# What a FileDownload's model holds: clicks (sent by the page), transfers (answered by the
# server, each starts a download) and whether its link is disabled.
DOWNLOAD_STATE_JS = """(label) => [...Bokeh.index.query((v) => v.model.type.endsWith('FileDownload')
    && v.model.label === label)].map((v) => ({clicks: v.model.clicks,
    transfers: v.model._transfers, disabled: v.model.disabled,
    link_disabled: v.anchor_el.hasAttribute('disabled'), on_page: v.el.isConnected,
    data_chars: (v.model.data || '').length}))"""


def download(page: Page, label: str, folder: Path) -> Path:
    """Click a download button and save the file in ``folder``; returns its path.

    When no download starts, the error says how far the click got: not counted by the page,
    not answered by the server, or answered while the link was disabled.
    """
    before = page.evaluate(DOWNLOAD_STATE_JS, label)
    try:
        with page.expect_download(timeout=60_000) as info:
            page.locator(".bk-btn, button", has_text=label).first.click()
    except PlaywrightTimeout as exc:
        after = page.evaluate(DOWNLOAD_STATE_JS, label)
        raise AssertionError(f"no download from {label!r}: before the click {before}, "
                             f"60 s after {after}") from exc
    target = folder / info.value.suggested_filename
    info.value.save_as(target)
    return target


#: The upload widget of each kind of file, by the ending tests name them with.
UPLOADS = {".png": "image", ".tif": "image", ".skops": "model", ".json": "annotations",
           "project": "project"}


def upload_input(page: Page, kind: str):
    """The file input of an upload widget (``kind``: a key of :data:`UPLOADS`, or the
    widget's own kind: image, model, annotations, project)."""
    kind = UPLOADS.get(kind, kind)
    return page.locator(f".segdash-upload-{kind} input[type=file]")


def upload(page: Page, accept: str, path: Path | dict) -> None:
    """Choose ``path`` (or a Playwright file payload) in the upload for ``accept``."""
    upload_input(page, accept).set_input_files(path if isinstance(path, dict) else str(path))


def error_text(page: Page, pattern: str, timeout: float = 30_000) -> str:
    """Wait for the error banner to show text matching ``pattern``; return it."""
    locator = page.locator(".segdash-error").get_by_text(re.compile(pattern))
    locator.wait_for(timeout=timeout)
    return locator.inner_text()


# -- painting: tools, keys, status history (tests/browser/test_painting.py) -----------------

# Which drag tool is on: "pan", "draw" or null.
DRAG_TOOL_JS = """() => {
  const plot = Bokeh.index.query_one((v) => v.model.toolbar != null
    && v.model.toolbar.tools.some((t) => t.type === 'FreehandDrawTool'));
  if (plot == null) return null;
  const tools = plot.model.toolbar.tools;
  if (tools.find((t) => t.type === 'PanTool').active) return 'pan';
  return tools.find((t) => t.type === 'FreehandDrawTool').active ? 'draw' : null;
}"""

# Every text the status line shows from now on (not the one it shows now), in order
# (window.segdashStatuses).
RECORD_STATUS_JS = """() => {
  const v = Bokeh.index.query_one((v) => v.model.css_classes != null
    && v.model.css_classes.includes('segdash-status'));
  const seen = window.segdashStatuses = [];
  // the text is HTML-escaped "<pre>...</pre>", as the pane renders it
  const text = (html) => { const d = document.createElement('div'); d.innerHTML = html;
                           return d.textContent; };
  const read = () => seen.push(text(text(v.model.text)).trim());
  v.model.properties.text.change.connect(read);
}"""


def wait_strokes(page: Page, classes: list[int], timeout: float = 20_000) -> list[dict]:
    """Wait until the browser holds strokes of exactly these class ids, in this order."""
    page.wait_for_function(f"(({STROKES_JS})() || []).map((s) => s.cls).join() === "
                           f"'{','.join(map(str, classes))}'", timeout=timeout)
    return strokes(page)


def wait_brush(page: Page, **stamp: object) -> dict:
    """Wait until the freehand tool stamps new strokes with ``stamp`` (column names without
    the ``stroke_`` prefix: cls, color, width, fill)."""
    checks = " && ".join(f"o.stroke_{'class' if k == 'cls' else k} === "
                         f"{str(v).lower() if isinstance(v, bool) else repr(v)}"
                         for k, v in stamp.items())
    page.wait_for_function(f"(() => {{ const o = ({BRUSH_JS})(); return {checks}; }})()",
                           timeout=10_000)
    return page.evaluate(BRUSH_JS)


def class_names(page: Page) -> list[str]:
    return page.locator(".segdash-class button").all_inner_texts()


def blur(page: Page) -> None:
    """Leave any text field: keys typed next are shortcuts."""
    page.locator(".segdash-status").click()


class HeldSocket:
    """The page's Bokeh websocket routed through the test: what the server sends can be
    held back (a server slow to answer) and released, in order. Install before loading
    the page."""

    def __init__(self, page: Page) -> None:
        self.holding = False
        self.held: list[str | bytes] = []
        self._page_side = None
        page.route_web_socket(re.compile(r"/ws(\?|$)"), self._route)

    def _route(self, ws) -> None:
        server = ws.connect_to_server()
        self._page_side = ws
        server.on_message(self._from_server)  # the page's messages still go through as sent

    def _from_server(self, message: str | bytes) -> None:
        if self.holding or self.held:  # while releasing too: the order is kept
            self.held.append(message)
        else:
            self._page_side.send(message)

    def hold(self) -> None:
        self.holding = True

    def wait_held(self, page: Page, quiet_ms: int = 300) -> int:
        """Wait until the server has sent its answer (messages held, then none for
        ``quiet_ms``); returns how many are held."""
        before = -1
        while len(self.held) != before or not self.held:
            before = len(self.held)
            page.wait_for_timeout(quiet_ms)  # messages reach us while Playwright waits
        return len(self.held)

    def wait_held_text(self, page: Page, text: str, timeout: float = 30.0) -> None:
        """Wait until a held message holds ``text`` (as sent: JSON, HTML-escaped)."""
        deadline = time.monotonic() + timeout
        while not any(isinstance(m, str) and text in m for m in self.held):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no held message holds {text!r}")
            page.wait_for_timeout(50)  # messages reach us while Playwright waits

    def release(self) -> None:
        self.holding = False
        while self.held:
            self._page_side.send(self.held.pop(0))


def record_status(page: Page) -> None:
    """Start recording every status line text (see :func:`wait_recorded`)."""
    page.evaluate(RECORD_STATUS_JS)


def wait_recorded(page: Page, pattern: str, timeout: float = 60_000) -> str:
    """Wait until a status recorded since :func:`record_status` matches ``pattern`` (a
    regex: the server has acted on what the test did since); return the last match."""
    page.wait_for_function("(p) => window.segdashStatuses.some((s) => new RegExp(p).test(s))",
                           arg=pattern, timeout=timeout)
    return [s for s in page.evaluate("window.segdashStatuses") if re.search(pattern, s)][-1]
