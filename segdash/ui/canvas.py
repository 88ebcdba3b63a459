"""The image, the segmentation overlay and the painted strokes: one HoloViews plot.

The :class:`~segdash.Segmenter` is the source of truth for strokes. Strokes drawn in the
browser reach :meth:`Canvas.on_draw` (on mouse-up) and are added to the Segmenter; strokes
changed on the server (undo, redo, clear, restored annotations, a removed or recoloured
class) are pushed to the browser by :meth:`Canvas.sync_strokes`, which assigns the Bokeh data
source's ``data``.

Each stroke's class, colour, width (in image pixels) and fill flag are columns of the data
source. A plot hook maps the glyph's ``line_color`` to the colour column and ``line_width``
to the width column through a transform that converts image pixels to screen pixels at the
current zoom, and the freehand tool's ``default_overrides`` stamp the selected class, colour,
width and fill on each new stroke in the browser, so a stroke shows in its class colour while
it is drawn. Eraser strokes (class 0) show in :data:`ERASER_COLOR`; fill strokes (lassos)
also show their inside, through a patches glyph on the same data source.

The image is shown by :mod:`segdash.io.render`'s display rule (the one the overlay files
use) with the Segmenter's :attr:`~segdash.Segmenter.display` settings (range, channels):
the picture follows them without a new plot, so zoom and pan stay. The overlay over it is
the segmentation, the uncertainty or one class's probability, as the Results card's view
settings say. It is sent as palette indices (:class:`~segdash.ui.display.Overlay`: a byte a
pixel) shown through a Bokeh colour mapper holding the palette, drawn at the overlay's
opacity (the glyph's alpha): a quarter of the bytes of RGBA to make, send and decode.
HoloViews renders the picture and the overlay first; later ones (a new result, new display
settings, a new in-memory image) are written to the rendered glyphs' data sources directly,
which costs the event loop a few milliseconds instead of HoloViews' 50-150 ms under load.
A new in-memory image keeps the figure (:meth:`Canvas.rebuild`).

The plot fills the space the page gives it (it follows the window); a JavaScript callback
widens the x or y range whenever the frame's size or the ranges change, so that image
pixels stay square at any window shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, NamedTuple

import holoviews as hv
import numpy as np
import panel as pn
from bokeh.core.properties import field
from bokeh.models import CustomJS, CustomJSTransform, FreehandDrawTool, Patches

from ..io.pyramid import area_average
from ..io.render import DisplaySettings
from ..segmenter import Segmenter
from ..strokes import ERASER, Stroke
from .display import (
    Overlay,
    data_to_image,
    display_step,
    downsample,
    empty_overlay,
    image_to_data,
    probability_overlay,
    segmentation_overlay,
    uncertainty_overlay,
)

log = logging.getLogger("segdash.ui")
timing_log = logging.getLogger("segdash.timing")

#: Largest plot frame, in screen pixels; the image is fitted inside keeping its aspect.
FRAME_MAX_WIDTH = 760
FRAME_MAX_HEIGHT = 640
#: Data source columns of a stroke besides ``xs`` and ``ys``.
CLASS_COL, COLOR_COL, WIDTH_COL = "stroke_class", "stroke_color", "stroke_width"
FILL_COL = "stroke_fill"
#: The stroke column naming the image it was drawn on: the canvas's count of images shown,
#: stamped by the brush in the browser (strokes of a previous image are not applied).
IMAGE_COL = "stroke_image"
STROKE_COLS = (CLASS_COL, COLOR_COL, WIDTH_COL, FILL_COL, IMAGE_COL)
#: How eraser strokes show on the image.
ERASER_COLOR = "#ffffff"
#: Opacity of a fill stroke's inside (its edge is drawn like any stroke).
FILL_ALPHA = 0.35

# Screen pixels per image pixel at the current zoom (data units are image pixels).
_WIDTH_JS = """
const span = xr.end - xr.start;
let frame = frame_width;
try { if (fig.inner_width > 0) { frame = fig.inner_width; } } catch (e) {}  // unset before layout
const scale = span > 0 ? frame / span : 1;
return Array.from(xs, (w) => Math.max(1, w * scale));
"""
# Recompute the widths when zooming: a glyph change re-evaluates its visuals.
_REDRAW_JS = "renderer.glyph.change.emit()"
# A stroke whose mouse-up lands outside the frame is not synced until the next stroke (the
# tool's pan-end handler returns early off the frame). Setting the data again at the end of
# every pan gesture, without the equality check that would skip it, sends it at once.
_RESYNC_JS = "source.setv({data: source.data}, {check_eq: false})"
# Square image pixels in a frame of any shape: widen the range of the axis that has fewer
# data units per screen pixel, about its centre (the image then sits centred with a margin).
_SQUARE_JS = """
let w = 0, h = 0;
try { w = fig.inner_width; h = fig.inner_height; } catch (e) { return; }  // unset before layout
if (!(w > 0 && h > 0)) return;
const xr = fig.x_range, yr = fig.y_range;
const sx = (xr.end - xr.start) / w, sy = (yr.end - yr.start) / h;
if (!(sx > 0 && sy > 0) || Math.abs(sx - sy) <= 1e-9 * Math.max(sx, sy)) return;
if (sx > sy) {
  const c = (yr.start + yr.end) / 2;
  yr.setv({start: c - sx * h / 2, end: c + sx * h / 2});
} else {
  const c = (xr.start + xr.end) / 2;
  xr.setv({start: c - sy * w / 2, end: c + sy * w / 2});
}
"""
#: Smallest plot height, in screen pixels (the plot otherwise fills the page's height).
MIN_PLOT_HEIGHT = 360
#: Screen pixels above the plot (header, status, progress, hint and shortcuts lines), left
#: out of its height.
PLOT_TOP = 225
# The inside of fill strokes only (the fill column holds booleans, or 0/1).
_FILL_ALPHA_JS = f"return Array.from(xs, (f) => (f ? {FILL_ALPHA} : 0));"

_Row = tuple[np.ndarray, np.ndarray, int, str, float, bool]


class Brush(NamedTuple):
    """What the next stroke paints: class id (:data:`~segdash.strokes.ERASER` erases), its
    colour, width in image pixels, and whether it fills the lasso it draws."""

    class_id: int
    color: str
    width: float
    fill: bool = False


class Viewport(NamedTuple):
    """What the browser is sent of a large image: pyramid ``level``, its region ``rows`` x
    ``cols``, averaged by ``step`` (1: as read), shown over ``bounds`` (left, bottom, right,
    top in plot data coordinates) at ``shape`` (rows, columns) screen pixels."""

    level: int
    rows: slice
    cols: slice
    step: int
    bounds: tuple[float, float, float, float]
    shape: tuple[int, int]


def viewport_region(source: Any, size: tuple[int, int], y_range: tuple[float, float],
                    x_range: tuple[float, float], frame_width: int,
                    frame_height: int, margin: float = 0.1) -> Viewport:
    """The pyramid level and region to send for a view (see :class:`Viewport`).

    The level is the coarsest still as fine as the screen; its region covers the view and
    ``margin`` of it on each side (a short pan shows pixels at once), clipped to the image,
    and is area-averaged by the integer step that brings it nearest to screen resolution.
    """
    h, w = size
    x0, x1 = sorted(x_range)
    y0, y1 = sorted(y_range)
    per_px = max((x1 - x0) / max(frame_width, 1), (y1 - y0) / max(frame_height, 1), 1e-9)
    level = source.level_for(per_px)
    lh, lw = source.levels[level].shape[:2]
    fy, fx = h / lh, w / lw
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    # plot y is up: rows from the top are h - y
    r0 = max(int(np.floor((h - y1 - my) / fy)), 0)
    r1 = min(int(np.ceil((h - y0 + my) / fy)), lh)
    c0 = max(int(np.floor((x0 - mx) / fx)), 0)
    c1 = min(int(np.ceil((x1 + mx) / fx)), lw)
    r1, c1 = max(r1, r0 + 1), max(c1, c0 + 1)
    step = max(1, int(per_px / max(fx, fy)))
    shape = (-(-(r1 - r0) // step), -(-(c1 - c0) // step))
    bounds = (c0 * fx, max(h - r1 * fy, 0.0), min(c1 * fx, float(w)), h - r0 * fy)
    return Viewport(level, slice(r0, r1), slice(c0, c1), step, bounds, shape)


class OverlayView(NamedTuple):
    """How the overlay is shown: at all, how opaque (0..1), which result
    (``"segmentation"``, ``"uncertainty"`` or ``"probability"``) and, for the last, of
    which class id."""

    show: bool = True
    opacity: float = 0.5
    view: str = "segmentation"
    class_id: int | None = None


def frame_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """Plot frame (width, height) in screen pixels fitting an image of ``shape``."""
    h, w = int(shape[0]), int(shape[1])
    scale = min(FRAME_MAX_WIDTH / w, FRAME_MAX_HEIGHT / h)
    return max(1, round(w * scale)), max(1, round(h * scale))


class Canvas:
    """The plot of one session.

    Parameters
    ----------
    segmenter : Segmenter
        The session state drawn.
    brush : callable
        Returns the :class:`Brush` of the next stroke.
    overlay_view : callable
        Returns the :class:`OverlayView` the overlay follows.
    on_error : callable
        Called with a message for the user.
    """

    #: Segmenter parameters the plot shows (see :meth:`refresh`).
    watches: ClassVar[tuple[str, ...]] = (
        "image", "source", "classes", "strokes", "segmentation", "uncertainty", "model",
        "tiles_done", "display")

    def __init__(
        self,
        segmenter: Segmenter,
        brush: Callable[[], Brush],
        overlay_view: Callable[[], OverlayView],
        on_error: Callable[[str], Any],
    ) -> None:
        self.segmenter = segmenter
        self._brush = brush
        self._overlay_view = overlay_view
        self._on_error = on_error
        # fills the page's width, and its height below the header and the status lines
        self.pane = pn.pane.HoloViews(None, linked_axes=False, margin=(5, 5),
                                      sizing_mode="stretch_width", min_height=MIN_PLOT_HEIGHT,
                                      styles={"height": f"calc(100vh - {PLOT_TOP}px)"},
                                      css_classes=["segdash-plot"])
        self._step = 1
        #: How the open image is shown (the Segmenter's :attr:`~segdash.Segmenter.display`
        #: when the picture was last made).
        self.display: DisplaySettings | None = None
        self._pipe: hv.streams.Pipe | None = None
        self._base_pipe: hv.streams.Pipe | None = None
        # the picture shown (downsampled when large) and its bounds (see base)
        self._shown_base: tuple[np.ndarray, tuple] | None = None
        self._base_source: Any = None  # the picture's Bokeh data source, once rendered
        self.figure: Any = None  # the Bokeh figure, once rendered
        self._source: Any = None
        self._tool: FreehandDrawTool | None = None
        self._drawn: list[_Row] = []
        self._range: hv.streams.RangeXY | None = None  # the view of a large image
        self._overlay_glyph: Any = None  # the overlay's Bokeh Image glyph, once rendered
        self._overlay_source: Any = None  # and its data source
        # what the overlay shown was made from, but its opacity (see update_overlay)
        self._shown_key: tuple | None = None
        self._frame = (FRAME_MAX_WIDTH, FRAME_MAX_HEIGHT)
        self._bounds: tuple[float, float, float, float] = (0, 0, 1, 1)  # the image's, in plot
        self._width: CustomJSTransform | None = None  # stroke widths to screen pixels
        # the image shown (its array, or a large image's source), the count of images shown
        # (stamped on strokes: IMAGE_COL) and of plots built (their stroke streams)
        self._image: Any = None
        self._token = 0
        self._plot_id = 0

    def refresh(self, names: set[str]) -> None:
        """Show what changed among the Segmenter's parameters ``names``."""
        if names & {"image", "source"}:
            self.rebuild()
        else:
            if names & {"strokes", "classes"}:
                self.sync_strokes()
            if "display" in names:
                self.update_base()
        if "classes" in names:
            self.set_brush()
        shown = {"segmentation", "uncertainty", "classes", "model", "image", "tiles_done"}
        if self.segmenter.source is not None and self.segmenter.model is not None:
            # a large image's new model shows the previous one's tiles until its own are
            # announced (tiles_done): re-sending the view then would send the same picture
            shown.discard("model")
        if names & shown:
            self.update_overlay()

    # -- building ---------------------------------------------------------------------

    def rebuild(self) -> None:
        """Show the Segmenter's current image (zoom resets: it is a new image).

        An in-memory image following another one is shown in the plot already on the page
        (:meth:`_show_in_figure`): the new picture, overlay, ranges and strokes are sent
        to the existing Bokeh figure. A new plot is built only when there is none yet, or
        when the new image or the one shown is a large image's viewport.
        """
        seg = self.segmenter
        image = seg.image
        self._image = image if image is not None else seg.source
        self._token += 1  # strokes stamped before now belong to a previous image
        self._shown_key = None  # the first overlay of a new image always sends
        self._drawn = []
        if (image is not None and seg.source is None and self.figure is not None
                and self._range is None and self._base_pipe is not None):
            self._show_in_figure(image)
            return
        self.figure = self._source = self._tool = self._overlay_glyph = None
        self._overlay_source = None
        self._width = self._base_source = None
        self._range = None
        self._plot_id += 1
        if seg.source is not None:
            self._rebuild_viewport()
            return
        if image is None:
            self._pipe = self._base_pipe = self._shown_base = self.display = None
            self.pane.object = None
            return
        h, w = image.shape[:2]
        self._step = display_step(image.shape)
        self._bounds = (0, 0, w, h)
        fw, fh = frame_size(image.shape)
        self._frame = (fw, fh)
        self._base_pipe = hv.streams.Pipe(data=self._base_data())
        base = hv.DynamicMap(self._base_rgb, streams=[self._base_pipe])
        self._shown_base = (self._base_pipe.data, self._bounds)  # until it renders
        self._pipe = hv.streams.Pipe(data=self._overlay_data())
        overlay = hv.DynamicMap(self._overlay_image, streams=[self._pipe])
        path = hv.Path([], vdims=list(STROKE_COLS))
        stream = hv.streams.FreehandDraw(source=path, num_objects=0)
        stream.add_subscriber(partial(self._on_stream, self._plot_id))
        plot = (base * overlay * path).opts(
            hv.opts.RGB(
                responsive=True, xaxis=None, yaxis=None, xlim=(0, w), ylim=(0, h),
                default_tools=["pan", "wheel_zoom", "box_zoom", "reset"],
                active_tools=["freehand_draw", "wheel_zoom"], toolbar="above",
                hooks=[self._base_hook],
            ),
            hv.opts.Path(hooks=[self._hook]),
            hv.opts.Image(hooks=[self._overlay_hook]),
        )
        self.pane.object = plot

    def _show_in_figure(self, image: np.ndarray) -> None:
        """Show a new in-memory ``image`` in the figure already on the page.

        Rendering a new HoloViews plot into a Bokeh figure took ~180 ms of the event loop
        on a quiet machine and 0.5-2 s under load (all Python model building); the same
        figure takes the new picture in its data source (:meth:`_show_base`), the overlay
        through its Pipe, and its ranges, strokes and brush (with the new image's stroke
        stamp) directly.
        """
        h, w = image.shape[:2]
        self._step = display_step(image.shape)
        self._bounds = (0, 0, w, h)
        fw, fh = frame_size(image.shape)
        self._frame = (fw, fh)
        fig = self.figure
        # One websocket message for all of it: the browser's _SQUARE_JS (run after the
        # changes of one message are applied) then widens the new ranges as for a new
        # plot; in separate messages it widened after x alone and kept that margin.
        t0 = time.perf_counter()
        with pn.io.hold():
            self._show_base(self._base_data())
            t1 = time.perf_counter()
            self.update_overlay()  # _shown_key is None: it sends, over the new bounds
            t2 = time.perf_counter()
            # the whole new image in view, and the reset tool returns to it
            fig.x_range.update(start=0, end=w, reset_start=0, reset_end=w)
            fig.y_range.update(start=0, end=h, reset_start=0, reset_end=h)
            if self._width is not None:
                self._width.args = {**self._width.args, "frame_width": fw}
            self.set_brush()
            self.sync_strokes(force=True)
            t3 = time.perf_counter()
        if timing_log.isEnabledFor(logging.DEBUG):  # the message is made as the hold ends
            timing_log.debug("new image in the figure base=%.1f overlay=%.1f rest=%.1f "
                             "message=%.1f ms shape=%s", 1000 * (t1 - t0), 1000 * (t2 - t1),
                             1000 * (t3 - t2), 1000 * (time.perf_counter() - t3),
                             "x".join(map(str, image.shape[:2])))

    def _overlay_hook(self, plot: Any, element: Any) -> None:
        self._overlay_glyph = plot.handles.get("glyph")
        self._overlay_source = plot.handles.get("source")

    def _base_hook(self, plot: Any, element: Any) -> None:
        self._base_source = plot.handles.get("source")

    @property
    def base(self) -> hv.RGB | None:
        """The image as shown (downsampled when large, at its bounds in plot coordinates)."""
        if self._shown_base is None:
            return None
        data, bounds = self._shown_base
        return hv.RGB(data, bounds=bounds)

    def _show_base(self, rgb: np.ndarray) -> None:
        """Show ``rgb`` ((h, w, 3) uint8) over the image's bounds in the plot.

        Once rendered, the picture's data source is written directly, packed as BokehJS's
        ImageRGBA takes it (one uint32 a pixel, R in the low byte, bottom row first, as
        HoloViews packs it): HoloViews' own update of a 1024² RGB (channel stacking and
        range scans) held the event loop 70-150 ms at load 3-5, the packing ~10 ms.
        """
        self._shown_base = (rgb, self._bounds)
        source = self._base_source
        if source is None:  # not rendered yet: what the plot renders first
            self._base_pipe.send(rgb)
            return
        h, w = rgb.shape[:2]
        packed = np.empty((h, w, 4), np.uint8)
        packed[..., :3] = rgb[::-1]
        packed[..., 3] = 255
        source.data = self._image_source(packed.view(np.uint32).reshape(h, w))
        self._base_pipe.update(data=rgb)  # what a later render of the plot shows

    def _image_source(self, image: np.ndarray) -> dict[str, list]:
        """An image glyph's data source columns for ``image`` (bottom row first) over the
        image's bounds."""
        left, bottom, right, top = self._bounds
        return {"image": [image], "x": [left], "y": [bottom], "dw": [right - left],
                "dh": [top - bottom]}

    def _base_data(self) -> np.ndarray:
        """The image as shown now: ``(h, w, 3)`` uint8 at display resolution."""
        seg = self.segmenter
        self.display = seg.display or DisplaySettings.auto(seg.image)
        # the whole image's range: the downsampled copy looks like the image's files
        return self.display.rgb(downsample(seg.image, self._step))

    def _base_rgb(self, data: np.ndarray) -> hv.RGB:
        self._shown_base = (data, self._bounds)
        return hv.RGB(data, bounds=self._bounds)

    def _overlay_image(self, data: Overlay) -> hv.Image:
        return _overlay_image(data, self._bounds)

    def update_base(self) -> None:
        """Show the image again as the Segmenter's display settings say (same plot)."""
        seg = self.segmenter
        if seg.display == self.display:
            return
        if seg.source is not None and self._base_pipe is not None:
            self.display = seg.display or self.display
            self._base_pipe.send(None)  # the viewport is made again, with the new settings
        elif self._base_pipe is not None and seg.image is not None:
            self._show_base(self._base_data())

    def _rebuild_viewport(self) -> None:
        """The plot of a large image: the browser gets the region in view at screen
        resolution (:meth:`viewport`), fetched again on every pan and zoom."""
        seg = self.segmenter
        source = seg.source
        h, w = source.shape[:2]
        fw, fh = frame_size(source.shape)
        self._frame = (fw, fh)
        self.display = seg.display or DisplaySettings.auto(source.sample())
        self._range = hv.streams.RangeXY()
        self._shown_base = None
        self._base_pipe = hv.streams.Pipe(data=None)
        # the plot's size on screen: the pyramid level follows it (the plot follows the window)
        size = hv.streams.PlotSize()
        base = hv.DynamicMap(self._base_element,
                             streams=[self._range, self._base_pipe, size])
        self._pipe = hv.streams.Pipe(data=None)
        overlay = hv.DynamicMap(self._overlay_element, streams=[self._pipe])
        self._range.add_subscriber(self._on_range)
        path = hv.Path([], vdims=list(STROKE_COLS))
        stream = hv.streams.FreehandDraw(source=path, num_objects=0)
        stream.add_subscriber(partial(self._on_stream, self._plot_id))
        plot = (base * overlay * path).opts(
            hv.opts.RGB(
                responsive=True, xaxis=None, yaxis=None, xlim=(0, w), ylim=(0, h),
                default_tools=["pan", "wheel_zoom", "box_zoom", "reset"],
                active_tools=["freehand_draw", "wheel_zoom"], toolbar="above",
            ),
            hv.opts.Path(hooks=[self._hook]),
        )
        self.pane.object = plot
        seg.set_view(0, h, 0, w)

    def viewport(self, x_range: Any = None, y_range: Any = None) -> Viewport:
        """What the browser is sent for the view ``x_range``, ``y_range`` (plot data
        coordinates; None: the whole image): the pyramid level and region, and the screen
        size it is shown at."""
        source = self.segmenter.source
        h, w = source.shape[:2]
        fw, fh = self._frame
        xr = x_range if x_range and None not in x_range else (0, w)
        yr = y_range if y_range and None not in y_range else (0, h)
        return viewport_region(source, (h, w), (float(yr[0]), float(yr[1])),
                               (float(xr[0]), float(xr[1])), fw, fh)

    def _base_element(self, x_range: Any = None, y_range: Any = None, data: Any = None,
                      width: Any = None, height: Any = None, scale: Any = None) -> hv.RGB:
        if width and height:
            self._frame = (int(width), int(height))
        view = self.viewport(x_range, y_range)
        region = self.segmenter.source.region(view.level, view.rows, view.cols)
        if view.step > 1:
            region = area_average(region, view.step)
        shown = self.display.rgb(region)
        self._shown_base = (shown, view.bounds)
        return hv.RGB(shown, bounds=view.bounds)

    def _overlay_element(self, data: Any = None) -> hv.Image:
        view = self.viewport(*(self._range.x_range, self._range.y_range)
                             if self._range is not None else (None, None))
        return _overlay_image(self._viewport_overlay(view), view.bounds)

    def _viewport_overlay(self, view: Viewport) -> Overlay:
        seg = self.segmenter
        settings = self._overlay_view()
        empty = empty_overlay()
        if not settings.show or seg.model is None:
            return empty
        left, bottom, right, top = view.bounds
        h = seg.source.shape[0]
        which = "uncertainty" if settings.view == "uncertainty" else "labels"
        result = seg.view_result(h - top, h - bottom, left, right, view.shape[0],
                                 view.shape[1], which)
        if result is None:
            return empty
        if which == "uncertainty":
            return uncertainty_overlay(result, len(seg.model.classes_), settings.opacity)
        return segmentation_overlay(result, seg.classes, settings.opacity)

    def _on_range(self, x_range: Any = None, y_range: Any = None, **_: Any) -> None:
        source = self.segmenter.source
        if source is None or x_range is None or y_range is None:
            return
        h = source.shape[0]
        self.segmenter.set_view(h - y_range[1], h - y_range[0], x_range[0], x_range[1])
        if self._pipe is not None:
            self._pipe.send(None)

    def _hook(self, plot: Any, element: Any) -> None:
        fig = plot.state
        source = plot.handles["cds"]
        renderer = plot.handles["glyph_renderer"]
        tool = next((t for t in fig.tools if isinstance(t, FreehandDrawTool)), None)
        # frame_width: the frame's width until the browser has laid it out (a new image in
        # the same figure sets it again, _show_in_figure)
        self._width = CustomJSTransform(
            args={"xr": fig.x_range, "fig": fig, "frame_width": self._frame[0]},
            v_func=_WIDTH_JS)
        width = field(WIDTH_COL, self._width)
        for glyph in (renderer.glyph, renderer.selection_glyph, renderer.nonselection_glyph,
                      renderer.muted_glyph, renderer.hover_glyph):
            if glyph is not None and hasattr(glyph, "line_color"):
                glyph.update(line_color=field(COLOR_COL), line_width=width, line_alpha=0.9,
                             line_cap="round", line_join="round")
        if not any(r.name == "segdash-fill" for r in fig.renderers):
            alpha = field(FILL_COL, CustomJSTransform(v_func=_FILL_ALPHA_JS))
            fig.add_glyph(source, Patches(xs="xs", ys="ys", fill_color=field(COLOR_COL),
                                          fill_alpha=alpha, line_alpha=0),
                          name="segdash-fill", level="overlay")
        redraw = CustomJS(args={"renderer": renderer}, code=_REDRAW_JS)
        fig.x_range.js_on_change("start", redraw)
        fig.x_range.js_on_change("end", redraw)
        fig.js_on_event("panend", CustomJS(args={"source": source}, code=_RESYNC_JS))
        square = CustomJS(args={"fig": fig}, code=_SQUARE_JS)
        for name in ("inner_width", "inner_height"):
            fig.js_on_change(name, square)
        for axis in (fig.x_range, fig.y_range):
            axis.js_on_change("start", square)
            axis.js_on_change("end", square)
        for tool in fig.tools:
            if type(tool).__name__ == "BoxZoomTool":
                tool.match_aspect = True  # a box zoom keeps pixels square too
        self.figure, self._source, self._tool = fig, source, tool
        self.set_brush()
        self.sync_strokes(force=True)

    # -- strokes ----------------------------------------------------------------------

    def set_brush(self) -> None:
        """Stamp the selected class, its colour and the width on the next stroke drawn."""
        if self._tool is None:
            return
        brush = self._brush()
        self._tool.default_overrides = {
            CLASS_COL: int(brush.class_id), COLOR_COL: brush.color, WIDTH_COL: float(brush.width),
            FILL_COL: bool(brush.fill), IMAGE_COL: self._token}

    def _rows(self) -> list[_Row]:
        shape = self.segmenter.image_shape
        h = shape[0] if shape is not None else 0
        colors = {c.id: c.color for c in self.segmenter.classes}
        colors[ERASER] = ERASER_COLOR
        rows = []
        for s in self.segmenter.strokes:
            xs, ys = image_to_data(s.xs, s.ys, h)
            rows.append((np.asarray(xs), np.asarray(ys), s.label,
                         colors.get(s.label, "#000000"), s.width, s.fill))
        return rows

    def sync_strokes(self, force: bool = False) -> None:
        """Show the Segmenter's strokes in the browser (when they differ from what it shows)."""
        rows = self._rows()
        if not force and _same_rows(rows, self._drawn, colors=True):
            return
        self._drawn = rows
        if self._source is None:
            return
        data = {
            "xs": [r[0].tolist() for r in rows],
            "ys": [r[1].tolist() for r in rows],
            CLASS_COL: [r[2] for r in rows],
            COLOR_COL: [r[3] for r in rows],
            WIDTH_COL: [r[4] for r in rows],
            FILL_COL: [r[5] for r in rows],
            IMAGE_COL: [self._token] * len(rows),
        }
        self._source.data = data
        if any(isinstance(v, np.ndarray) for v in self._source.data.values()):
            # Bokeh keeps the old value when it "matches" the new one, and an empty float
            # array matches []: the browser then fails with "invalid color array".
            self._source.data.update(data)

    def _on_stream(self, plot_id: int, data: dict | None = None, **_: Any) -> None:
        seg = self.segmenter
        current = seg.image if seg.image is not None else seg.source
        if plot_id != self._plot_id or current is not self._image or data is None:
            # a late event from a replaced plot, or the Segmenter has opened another image
            # that this canvas is about to show (rebuild): the strokes were drawn on another
            return
        if _stamped_otherwise(data, self._token):
            # the browser's strokes of the previous image in this figure (a stroke drawn
            # before the new image reached it): not this image's, and replaced there too
            self.sync_strokes(force=True)
            return
        try:
            self.on_draw(data)
        except (ValueError, TypeError) as exc:
            log.warning("stroke refused: %s", exc)
            self._on_error(f"stroke refused: {exc}")
            self.sync_strokes(force=True)

    def on_draw(self, data: dict) -> None:
        """Take the browser's strokes (FreehandDraw data, plot coordinates) into the Segmenter.

        Strokes appended in the browser are added; if the browser's list differs otherwise
        (a stroke deleted with the tool: click it, then Backspace), it replaces the
        Segmenter's strokes, as one edit that undo takes back.
        """
        rows = _browser_rows(data, self._brush)
        if _same_rows(rows, self._drawn):
            return
        timing_log.debug("stroke received at=%.3f", time.time())
        k = len(self._drawn)
        seg = self.segmenter
        h = seg.image_shape[0]
        appended = len(rows) > k and _same_rows(rows[:k], self._drawn)
        self._drawn = rows
        if appended:
            for xs, ys, label, _, width, fill in rows[k:]:
                cx, cy = data_to_image(xs, ys, h)
                seg.add_stroke(cx, cy, label, width, fill)
        else:
            strokes = []
            for xs, ys, label, _, width, fill in rows:
                cx, cy = data_to_image(xs, ys, h)
                strokes.append(Stroke(tuple(cx), tuple(cy), label, width, fill))
            seg.set_strokes(strokes)

    # -- overlay ----------------------------------------------------------------------

    def _overlay_key(self) -> tuple:
        """What the overlay is made from, but its opacity: results are new arrays when they
        change (never written in place), so the same arrays and settings make the same
        picture."""
        seg, view = self.segmenter, self._overlay_view()
        result = {"uncertainty": seg.uncertainty, "probability": seg.probabilities}.get(
            view.view, seg.segmentation)
        return (view.show, view.view, view.class_id, result, seg.model,
                tuple(seg.classes), self._step)

    def _overlay_data(self) -> Overlay:
        seg = self.segmenter
        view = self._overlay_view()
        empty = empty_overlay()
        if not view.show:
            return empty
        if view.view == "uncertainty":
            if seg.uncertainty is None or seg.model is None:
                return empty
            return uncertainty_overlay(downsample(seg.uncertainty, self._step),
                                       len(seg.model.classes_), view.opacity)
        if view.view == "probability":
            model, proba = seg.model, seg.probabilities
            ids = [] if model is None else [int(c) for c in model.classes_]
            if proba is None or view.class_id not in ids:
                return empty
            k = ids.index(view.class_id)
            color = {c.id: c.color for c in seg.classes}.get(view.class_id, "#000000")
            return probability_overlay(downsample(proba[:, :, k], self._step), color,
                                       view.opacity)
        if seg.segmentation is None:
            return empty
        return segmentation_overlay(downsample(seg.segmentation, self._step), seg.classes,
                                    view.opacity)

    def update_overlay(self) -> None:
        """Send the overlay as the Segmenter's results and the view settings say."""
        if self._pipe is None:
            return
        if self.segmenter.source is not None:
            self._pipe.send(None)  # the viewport's overlay is made by _overlay_element
            return
        key = self._overlay_key()
        shown = self._shown_key
        if (self._overlay_glyph is not None and shown is not None
                and all(map(_same, key, shown))):
            # the same picture, maybe at another opacity: the glyph's alpha, no pixel data
            opacity = min(max(float(self._overlay_view().opacity), 0.0), 1.0)
            data = self._pipe.data._replace(opacity=opacity)
            self._overlay_glyph.global_alpha = float(data.opacity)
            self._pipe.update(data=data)  # what a later render of the plot shows
            return
        t0 = time.perf_counter()
        data = self._overlay_data()
        t1 = time.perf_counter()
        self._shown_key = key
        self._send_overlay(data)  # Bokeh models; sent once the callback returns
        if timing_log.isEnabledFor(logging.DEBUG):
            timing_log.debug("overlay build=%.1f send=%.1f ms shape=%s dtype=%s end=%.3f",
                             1000 * (t1 - t0), 1000 * (time.perf_counter() - t1),
                             "x".join(map(str, data.indices.shape)), data.indices.dtype,
                             time.time())

    def _send_overlay(self, data: Overlay) -> None:
        """Show ``data`` over the image's bounds.

        Once rendered, the overlay glyph's data source, colour mapper and alpha are set
        directly, as HoloViews sets them for :func:`_overlay_image` (indices bottom row
        first, the mapper's range ``-0.5 .. n - 0.5``): HoloViews' update of an element
        took 50-145 ms of the event loop at load 5-7, for a 1x1 overlay too.
        """
        source, glyph = self._overlay_source, self._overlay_glyph
        if source is None or glyph is None:  # not rendered yet: what the plot renders first
            self._pipe.send(data)
            return
        glyph.color_mapper.update(palette=list(data.palette), low=-0.5,
                                  high=len(data.palette) - 0.5)
        glyph.global_alpha = float(data.opacity)
        source.data = self._image_source(np.ascontiguousarray(data.indices[::-1]))
        self._pipe.update(data=data)  # what a later render of the plot shows

    @property
    def overlay(self) -> np.ndarray | None:
        """What the overlay in the plot shows (display resolution): ``(h, w, 4)`` uint8 RGBA
        (:meth:`Overlay.rgba <segdash.ui.display.Overlay.rgba>`), or None."""
        if self._pipe is None:
            return None
        if self.segmenter.source is not None:
            return self._viewport_overlay(self.viewport(self._range.x_range,
                                                        self._range.y_range)).rgba()
        return self._pipe.data.rgba()


#: The value dimension of the overlay image (its palette index).
OVERLAY_DIM = "overlay_index"


def _overlay_image(data: Overlay, bounds: tuple[float, float, float, float]) -> hv.Image:
    """The overlay as an image of palette indices through a colour mapper of its palette.

    The mapper's range puts index ``k`` at the middle of the ``k``-th palette colour
    (``-0.5 .. n - 0.5`` for ``n`` colours), so each index shows exactly its colour.
    """
    n = len(data.palette)
    return hv.Image(data.indices, bounds=bounds, vdims=[OVERLAY_DIM]).opts(
        cmap=list(data.palette), clim=(-0.5, n - 0.5), alpha=float(data.opacity))


def _same(a: Any, b: Any) -> bool:
    """The same object, or equal values (arrays and models: the same object only)."""
    if a is b:
        return True
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _stamped_otherwise(data: dict, token: int) -> bool:
    """Whether the browser's stroke ``data`` holds a stroke stamped with another image than
    ``token`` (:data:`IMAGE_COL`; unstamped strokes count as this image's)."""
    stamps = data.get(IMAGE_COL)
    return stamps is not None and any(not _missing(s) and int(s) != token for s in stamps)


def _browser_rows(data: dict, brush: Callable[[], Brush]) -> list[_Row]:
    xs_all = data.get("xs") or []
    n = len(xs_all)
    default_class, default_color, default_width, default_fill = brush()

    def column(name: str, default: Any) -> list:
        values = list(data.get(name) or [])
        values += [default] * (n - len(values))
        return [default if _missing(v) else v for v in values]

    classes = column(CLASS_COL, default_class)
    colors = column(COLOR_COL, default_color)
    widths = column(WIDTH_COL, default_width)
    fills = column(FILL_COL, default_fill)
    ys_all = data.get("ys") or []
    return [
        (np.asarray(xs_all[i], dtype=float), np.asarray(ys_all[i], dtype=float),
         int(classes[i]), str(colors[i]), float(widths[i]), bool(fills[i]))
        for i in range(n)
    ]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not np.isfinite(value))


def _same_rows(a: list[_Row], b: list[_Row], colors: bool = False) -> bool:
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b, strict=True):
        if (ra[2] != rb[2] or abs(ra[4] - rb[4]) > 1e-9 or ra[5] != rb[5]
                or (colors and ra[3] != rb[3])):
            return False
        if ra[0].shape != rb[0].shape or ra[1].shape != rb[1].shape:
            return False
        if not (np.allclose(ra[0], rb[0], equal_nan=True)
                and np.allclose(ra[1], rb[1], equal_nan=True)):
            return False
    return True
