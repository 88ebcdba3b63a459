"""The progress row: what the session is computing, and **Cancel**.

Shown above the plot while one of the session's jobs (features of a new image, a slow
plugin, a training) has run for longer than :data:`SHOW_AFTER` seconds, so quick updates
never flash it. *Cancel* is the one way to stop the session's work: it abandons the
running job through :meth:`SessionWorker.cancel <segdash.ui.worker.SessionWorker.cancel>`
(queued jobs are dropped, the running one's result is discarded, and the page keeps the
previous result). *Apply to project* runs in a child process with its own progress bar
and Cancel in its card.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import panel as pn

from .display import html_text
from .worker import SessionWorker

#: Seconds a job runs before the progress row shows.
SHOW_AFTER = 0.5


class ProgressRow(pn.viewable.Viewer):
    """An activity bar, what runs, and Cancel, for one session's worker.

    Parameters
    ----------
    worker : SessionWorker
        The session's jobs.
    on_ui : callable
        Runs a zero-argument function where it may touch the page (from any thread).
    show_after : float
        Seconds a job runs before the row shows.
    """

    def __init__(self, worker: SessionWorker, on_ui: Callable[[Callable[[], Any]], Any],
                 show_after: float = SHOW_AFTER, **params: Any) -> None:
        super().__init__(**params)
        self.worker = worker
        self._on_ui = on_ui
        self.show_after = show_after
        self._timer: threading.Timer | None = None
        self.bar = pn.indicators.Progress(active=True, value=-1, width=160, height=14,
                                          margin=(12, 10), css_classes=["segdash-progress-bar"])
        self.text = pn.pane.Str("", css_classes=["segdash-progress-text"], margin=(5, 10))
        self.cancel_button = pn.widgets.Button(label="Cancel", variant="outline",
                                               css_classes=["segdash-cancel"])
        self.cancel_button.on_click(self._cancel_clicked)
        self.row = pn.Row(self.bar, self.text, self.cancel_button, visible=False,
                          css_classes=["segdash-progress"])

    def __panel__(self) -> pn.Row:
        return self.row

    def update(self) -> None:
        """Follow the worker (called on the page's thread when it may have changed):
        hidden when idle; shown, once a job has run :attr:`show_after` seconds."""
        running = self.worker.running
        if running is None:
            self.row.visible = False
            return
        what, started = running
        wait = self.show_after - (time.monotonic() - started)
        if wait <= 0:
            # a Str pane renders HTML, and the job's name may hold a file name
            self.text.object = html_text(f"{what}…")
            self.row.visible = True
            return
        if self._timer is None or not self._timer.is_alive():
            # look again when the job would have run long enough (from the page's thread)
            self._timer = threading.Timer(wait + 0.02, self._on_ui, args=(self.update,))
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> bool:
        """Stop the session's work (see the module's docstring); False when none ran."""
        stopped = self.worker.cancel()
        self.row.visible = False
        return stopped

    def _cancel_clicked(self, event: Any = None) -> None:
        self.cancel()

    def close(self) -> None:
        """Forget a pending look (the session ends)."""
        if self._timer is not None:
            self._timer.cancel()
