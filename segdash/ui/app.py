"""The dashboard of one browser session: a :class:`panel.viewable.Viewer` composing the parts.

Every browser session builds its own :class:`SegdashApp`: its own
:class:`~segdash.Segmenter`, :class:`~segdash.ui.worker.SessionWorker`,
:class:`~segdash.ui.canvas.Canvas` and sidebar :mod:`~segdash.ui.cards`. Widgets write to
the Segmenter; the app watches the Segmenter parameters the cards and the canvas show and,
when some change, refreshes those parts. Slow work (features, training, prediction, reading
uploads) runs on the worker, never on the server's event loop; what it changes reaches the
page through :meth:`SegdashApp._on_ui`, which schedules page updates on the Bokeh
document's event loop, coalesced so that a burst of changes costs one update.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import numpy as np
import panel as pn
import param
from panel.io.state import set_curdoc

from .. import registry
from ..errors import SegdashError
from ..io.pyramid import Pyramid
from ..project import Project
from ..segmenter import Segmenter
from ..strokes import ERASER
from .canvas import ERASER_COLOR, Brush, Canvas
from .cards import CardContext, Cards
from .display import html_text, markdown_text
from .progress import ProgressRow
from .samples import DEFAULT_SAMPLE, load_sample
from .shortcuts import Guide
from .upload import DEFAULT_MAX_UPLOAD_GB, UploadFolder
from .worker import ComputePool, JobAbandoned, SessionBlocked, SessionWorker

log = logging.getLogger("segdash.ui")
timing_log = logging.getLogger("segdash.timing")
#: Page updates holding the event loop longer than this are logged (``SEGDASH_TIMING=1``).
SLOW_UPDATE_S = 0.05


def user_message(exc: BaseException) -> str:
    """What to tell the user about ``exc``: segdash's own errors as they are, others named."""
    if isinstance(exc, SegdashError | ValueError | JobAbandoned | SessionBlocked):
        return str(exc)
    return f"unexpected error ({type(exc).__name__}): {exc}"



def _held() -> Any:
    """``pn.io.hold()``: the page changes made inside go out as one message, in order with
    every other held message of the page.

    Panel writes a held message at once, or, while the socket is still writing an earlier
    one, on a later turn of the loop; a change made outside a hold goes by Bokeh's own path
    and can be written first. The canvas holds its changes of a new image together (both
    ranges in one message, for the square-pixel script), so every page change of the app
    is held too: none overtakes another.
    """
    return pn.io.hold()

class SegdashApp(pn.viewable.Viewer):
    """The segdash dashboard for one browser session.

    Parameters
    ----------
    image : numpy.ndarray, optional
        Image to open; default: the bundled sample :data:`DEFAULT_SAMPLE`.
    image_name : str, optional
        Its name, used for download file names.
    project : Project, optional
        A project to open instead (its first usable image on screen).
    scheduler : str, optional
        Address of the Dask scheduler *Apply to project* runs on (default: local).
    memory_limit : int, optional
        Bytes the session may use for an image's features and results (see
        :func:`segdash.segmenter.check_memory`); default: no limit.
    pool : ComputePool, optional
        Where the session's jobs run (default: the process's shared pool).
    source : Pyramid, optional
        A large image to open, read lazily (instead of ``image``).
    cache_limit : int, optional
        Bytes of a large image's tile cache (default
        :data:`segdash.segmenter.DEFAULT_CACHE_BYTES`).
    max_upload_bytes : int, optional
        Largest upload accepted (default ``DEFAULT_MAX_UPLOAD_GB``).
    upload_root : path, optional
        Where the session's private upload folder is made (default: the system's
        temporary folder); the folder is removed when the session ends.
    """

    #: Segmenter parameters the page shows outside the cards and the plot: the busy
    #: indicator, the status line and the error box (a new result hides the last error).
    watches: ClassVar[tuple[str, ...]] = ("busy", "status", "error", "segmentation")

    def __init__(self, image: np.ndarray | None = None, image_name: str | None = None,
                 project: Project | None = None, scheduler: str | None = None,
                 memory_limit: int | None = None, pool: ComputePool | None = None,
                 source: Pyramid | None = None, cache_limit: int | None = None,
                 max_upload_bytes: int | None = None, upload_root: str | None = None,
                 **params: Any) -> None:
        super().__init__(**params)
        if image is None and project is None and source is None:
            image, image_name = load_sample(DEFAULT_SAMPLE), DEFAULT_SAMPLE
        self._doc = pn.state.curdoc
        self._closed = False
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._scheduled = False
        #: The latest messages shown to the user (for tests and scripts).
        self.errors: deque[str] = deque(maxlen=100)

        self.segmenter = Segmenter()
        self.segmenter.memory_limit = memory_limit
        self.worker = SessionWorker(on_error=self._job_failed,
                                    on_busy=partial(self._request, "busy"),
                                    on_abandon=self._job_abandoned, pool=pool)
        self.segmenter.run_training = partial(self.worker.submit, key="train")
        self.segmenter.run_view = partial(self.worker.submit, key="view")
        if cache_limit is not None:
            self.segmenter.cache_limit = int(cache_limit)
        opened_error = ""
        if project is not None:
            try:
                self.segmenter.open_project(project)
            except SegdashError as exc:
                opened_error = str(exc)
                image, image_name = load_sample(DEFAULT_SAMPLE), DEFAULT_SAMPLE
        if source is not None and self.segmenter.project is None:
            self.segmenter.open_pyramid(source, image_name)
        elif self.segmenter.project is None:
            self.segmenter.set_image(image, image_name)
            self.segmenter.error = opened_error
        self._build_messages()
        #: The session's private folder for uploads (removed by :meth:`close`).
        self.uploads = UploadFolder(upload_root)
        self.cards = Cards.build(CardContext(
            segmenter=self.segmenter, worker=self.worker, report=self.report,
            clear_error=self._clear_error, on_ui=self._on_ui, uploads=self.uploads,
            max_upload_bytes=int(max_upload_bytes or DEFAULT_MAX_UPLOAD_GB * 1e9)))
        self.cards.apply.scheduler = scheduler
        self.canvas = Canvas(self.segmenter, self._brush, self.cards.results.overlay_view,
                             self.report)
        self.guide = Guide(self.segmenter, self.cards)  # shortcuts, their help, the hint
        self.cards.classes.param.watch(self._on_brush, "active_class")
        self.cards.strokes.param.watch(self._on_brush, ["stroke_width", "tool"])
        self.cards.results.param.watch(self._on_overlay_view,
                                       ["show_overlay", "opacity", "view", "probability_class"])
        self.progress = ProgressRow(self.worker, self._on_ui)
        #: Segmenter parameters the page shows: what the cards, the plot and the app watch.
        self.watched = frozenset(self.cards.watches | set(self.canvas.watches)
                                 | set(self.guide.watches) | set(self.watches))
        self.segmenter.param.watch(self._on_state, sorted(self.watched))
        self._pending.update(self.watched)
        self._flush()  # the first page is complete before it is sent

    # -- layout -----------------------------------------------------------------------

    def _build_messages(self) -> None:
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False,
                                   sizing_mode="stretch_width", css_classes=["segdash-error"])
        for reg in (registry.features, registry.classifiers):
            reg.load_all()  # failures are recorded in reg.errors, shown below
        plugin_errors = [str(e) for reg in (registry.features, registry.classifiers)
                         for e in reg.errors]
        self.plugin_alert = pn.pane.Alert(
            "**Plugins that failed to load:**\n\n"
            + "\n".join(f"- {markdown_text(e)}" for e in plugin_errors),
            alert_type="warning", visible=bool(plugin_errors), sizing_mode="stretch_width",
            css_classes=["segdash-plugin-errors"])
        self.spinner = pn.indicators.LoadingSpinner(value=False, size=24,
                                                    css_classes=["segdash-busy"])
        self.status = pn.pane.Str("", css_classes=["segdash-status"])

    def sidebar(self) -> list[Any]:
        """The controls, one card each, in the order they are used."""
        return list(self.cards)

    def main(self) -> list[Any]:
        """Messages, the busy indicator and status, and the plot."""
        return [self.plugin_alert, self.alert, pn.Row(self.spinner, self.status),
                self.progress, self.cards.results.legend, self.guide.panel(), self.canvas.pane]

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(pn.Column(*self.sidebar(), width=380), pn.Column(*self.main()))

    def template(self) -> pn.template.FastListTemplate:
        """The full page: a FastListTemplate titled segdash."""
        return pn.template.FastListTemplate(
            title="segdash", sidebar=self.sidebar(), main=self.main(), sidebar_width=390,
            main_layout=None, accent="#0072b2", theme_toggle=False)

    # -- from worker threads to the page ----------------------------------------------

    def _on_ui(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` where it may touch the page: now if this thread holds the
        document, else on the document's event loop."""
        doc = self._doc
        if doc is None or doc.session_context is None:
            callback()
            return
        with set_curdoc(doc):
            pn.state.execute(callback)

    def _on_state(self, *events: param.parameterized.Event) -> None:
        self._request(*(e.name for e in events))

    def _request(self, *names: str) -> None:
        """Ask for the page parts depending on ``names`` to be refreshed (coalesced)."""
        with self._pending_lock:
            self._pending.update(names)
            if self._scheduled:
                return
            self._scheduled = True
        self._on_ui(self._flush)

    def _flush(self) -> None:
        with self._pending_lock:
            names, self._pending = self._pending, set()
            self._scheduled = False
        if self._closed or not names:
            return
        t0 = time.perf_counter()
        slowest = (0.0, "")  # the card that took longest, for the timing log
        # One message for the whole refresh, sent by Panel's held-events path like every
        # page change of the app (see _held): Bokeh's own path sends each change as soon
        # as the socket is free and overtook a held message Panel was still waiting to
        # write (a new image's empty overlay arrived after its result and stayed).
        with _held():
            for card in self.cards:
                changed = names.intersection(card.watches)
                if changed:
                    c0 = time.perf_counter()
                    card.refresh(changed)
                    slowest = max(slowest, (time.perf_counter() - c0, type(card).__name__))
            t1 = time.perf_counter()
            changed = names.intersection(self.canvas.watches)
            if changed:
                self.canvas.refresh(changed)
            t2 = time.perf_counter()
            changed = names.intersection(self.guide.watches)
            if changed:
                self.guide.refresh(changed)
            self._show_state(names)
        took = time.perf_counter() - t0
        if took > SLOW_UPDATE_S and timing_log.isEnabledFor(logging.DEBUG):
            # what holds the event loop (benchmarks/serve_load.py --timing lists these)
            timing_log.debug("page update took=%.1f ms cards=%.1f canvas=%.1f names=%s "
                             "slowest=%s:%.1f", 1000 * took, 1000 * (t1 - t0),
                             1000 * (t2 - t1), ",".join(sorted(names)), slowest[1],
                             1000 * slowest[0])

    def _show_state(self, names: set[str]) -> None:
        seg = self.segmenter
        if "segmentation" in names and seg.segmentation is not None and not seg.error:
            self._clear_error()  # a new result: the last error is history
        if "busy" in names or "status" in names:
            self.spinner.value = bool(seg.busy or self.worker.busy)
            # a Str pane renders its text as HTML (Panel decodes it once into innerHTML):
            # the status names files and classes, so it is escaped
            self.status.object = html_text(seg.status)
            self.progress.update()
        if "error" in names and seg.error:
            self._show_error(seg.error)

    # -- brush and overlay view -------------------------------------------------------

    def _brush(self) -> Brush:
        classes, strokes = self.cards.classes, self.cards.strokes
        width = float(strokes.stroke_width)
        if strokes.tool == "eraser":
            return Brush(ERASER, ERASER_COLOR, width)
        return Brush(classes.active_class, classes.active_color(), width,
                     fill=strokes.tool == "fill")

    def _on_brush(self, *events: param.parameterized.Event) -> None:
        with _held():
            self.canvas.set_brush()

    def _on_overlay_view(self, *events: param.parameterized.Event) -> None:
        with _held():
            self.canvas.update_overlay()

    # -- messages ---------------------------------------------------------------------

    def report(self, message: str) -> None:
        """Show a user error in the page (from any thread)."""
        self._on_ui(partial(self._show_error, message))

    def _show_error(self, message: str) -> None:
        self.errors.append(message)
        self.alert.object = markdown_text(message)
        self.alert.visible = True
        notifications = pn.state.notifications
        if notifications is not None:
            notifications.error(html_text(message), duration=8000)

    def _clear_error(self) -> None:
        self.alert.visible = False

    def _job_failed(self, exc: BaseException) -> None:
        if isinstance(exc, JobAbandoned) and exc.cancelled:
            # the user's own Cancel: not an error; the previous result stays on screen
            self.segmenter.status = f"{exc.what} cancelled; the previous result stays"
            return
        if not isinstance(exc, SegdashError | ValueError | JobAbandoned | SessionBlocked):
            log.error("job failed", exc_info=exc)
        self.report(user_message(exc))

    def _job_abandoned(self, what: str) -> None:
        # Whatever the abandoned job was, a training it started must not publish later.
        self.segmenter.abandon_training()

    # -- lifetime ---------------------------------------------------------------------

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until queued jobs have run (for scripts and tests); False on timeout."""
        return self.worker.wait_idle(timeout)

    def close(self) -> None:
        """Free the session's memory: stop jobs, drop the image, features and results."""
        if self._closed:
            return  # Bokeh may report a session's end more than once
        self._closed = True
        log.info("session closed: releasing %s", self.segmenter.image_name)
        self.worker.close()
        self.progress.close()
        self.cards.apply.close()
        self.segmenter.run_training = lambda job: None
        self.segmenter.release()
        self.canvas.pane.object = None
        for card in self.cards:
            card.close_uploads()
        self.uploads.close()  # after release: the image mapped from it is gone
