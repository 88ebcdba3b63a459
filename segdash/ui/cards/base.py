"""What every card shares: the session context, the card layout, the upload path."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import panel as pn

from ...segmenter import Segmenter
from ..worker import SessionWorker

#: Uploads larger than this are refused on the server (bytes); the browser checks too.
MAX_UPLOAD_BYTES = 200_000_000


@dataclass(frozen=True)
class CardContext:
    """What a card may use of its session besides the Segmenter's own methods.

    Attributes
    ----------
    segmenter : Segmenter
        The session's state: cards write to it and show it.
    worker : SessionWorker
        Runs slow calls (reading an upload, training) off the server's event loop.
    report : callable
        Shows a message for the user (from any thread).
    clear_error : callable
        Hides the last message (a new action started).
    on_ui : callable
        Runs a zero-argument function where it may touch the page (from any thread).
    """

    segmenter: Segmenter
    worker: SessionWorker
    report: Callable[[str], Any]
    clear_error: Callable[[], Any]
    on_ui: Callable[[Callable[[], Any]], Any]


def note(text: str) -> pn.pane.Markdown:
    """A line of explanation between a card's widgets."""
    return pn.pane.Markdown(text, margin=(0, 10))


class Card(pn.viewable.Viewer):
    """A sidebar card: a titled, collapsible group of controls.

    Parameters
    ----------
    context : CardContext
        The session the card belongs to.
    """

    #: Card title in the sidebar.
    title: ClassVar[str] = ""
    #: Segmenter parameters the card shows; :meth:`refresh` gets those that changed.
    watches: ClassVar[tuple[str, ...]] = ()
    #: Shown only while the session holds a project (kept up to date by :meth:`_show_if_project`).
    project_only: ClassVar[bool] = False

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(**params)
        self.context = context
        self.segmenter = context.segmenter
        self._updating = False  # the card is setting its own widgets: not a user's change
        self._layout: pn.Card | None = None

    def controls(self) -> list[Any]:
        """The card's contents, top to bottom."""
        raise NotImplementedError

    def refresh(self, names: set[str]) -> None:
        """Show the Segmenter parameters ``names`` (a subset of :attr:`watches`) as they are
        now. Called on the page's thread."""

    def __panel__(self) -> pn.Card:
        if self._layout is None:
            self._layout = pn.Card(*self.controls(), title=self.title,
                                   sizing_mode="stretch_width", margin=(5, 0))
            self._show_if_project()
        return self._layout

    def _show_if_project(self) -> None:
        """Hide a :attr:`project_only` card while no project is open."""
        if self.project_only and self._layout is not None:
            self._layout.visible = self.segmenter.project is not None

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """Widget changes inside the block are the card's own, not the user's."""
        self._updating = True
        try:
            yield
        finally:
            self._updating = False

    def _set_quietly(self, widget: Any, value: Any) -> None:
        with self._quiet():
            widget.value = value

    def _watch_upload(self, widget: pn.widgets.FileInput,
                      handler: Callable[[bytes, str], Any]) -> None:
        """Hand each file chosen in ``widget`` to ``handler(data, filename)`` on the worker."""
        widget.param.watch(partial(self._on_upload, handler), "value")

    def _on_upload(self, handler: Callable[[bytes, str], Any], event: Any) -> None:
        data = event.new
        if data is None:  # cleared; an empty file (b"") goes on and is reported as empty
            return
        widget = event.obj
        filename = str(getattr(widget, "filename", None) or "upload")
        widget.clear()  # the same file can be chosen again...
        widget.param.update(value=None, filename=None)  # ...and the widget keeps no copy
        self.context.clear_error()
        if len(data) > MAX_UPLOAD_BYTES:
            self.context.report(f"{filename}: file too large ({len(data)} bytes; the limit is "
                                f"{MAX_UPLOAD_BYTES} bytes)")
            return
        self.context.worker.submit(partial(handler, bytes(data), filename))
