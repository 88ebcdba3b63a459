"""What every card shares: the session context, the card layout, the upload path."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import panel as pn

from ...segmenter import Segmenter
from ..upload import DEFAULT_MAX_UPLOAD_GB, ChunkedUpload, UploadFolder, size_text
from ..worker import SessionWorker

#: Default largest upload (bytes): ``--max-upload-gb`` sets it per server.
MAX_UPLOAD_BYTES = int(DEFAULT_MAX_UPLOAD_GB * 1e9)
#: Largest upload read into memory whole (model, annotations and project files), bytes.
MAX_SMALL_UPLOAD_BYTES = 200_000_000


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
    uploads : UploadFolder
        The session's private folder uploads stream into (removed when it ends).
    max_upload_bytes : int
        Largest upload the operator allows (``--max-upload-gb``).
    """

    segmenter: Segmenter
    worker: SessionWorker
    report: Callable[[str], Any]
    clear_error: Callable[[], Any]
    on_ui: Callable[[Callable[[], Any]], Any]
    uploads: UploadFolder
    max_upload_bytes: int = MAX_UPLOAD_BYTES


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
    #: Folded (title only) until the user opens it: settings rarely changed.
    collapsed: ClassVar[bool] = False

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(**params)
        self.context = context
        self.segmenter = context.segmenter
        self._updating = False  # the card is setting its own widgets: not a user's change
        self._layout: pn.Card | None = None
        self._uploads: list[ChunkedUpload] = []

    def controls(self) -> list[Any]:
        """The card's contents, top to bottom."""
        raise NotImplementedError

    def refresh(self, names: set[str]) -> None:
        """Show the Segmenter parameters ``names`` (a subset of :attr:`watches`) as they are
        now. Called on the page's thread."""

    def __panel__(self) -> pn.Card:
        if self._layout is None:
            css = "segdash-card-" + self.title.lower().replace(" ", "-")
            self._layout = pn.Card(*self.controls(), title=self.title,
                                   sizing_mode="stretch_width", margin=(5, 0),
                                   collapsed=self.collapsed,
                                   css_classes=[css])
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

    def _upload_widget(self, kind: str, accept: list[str],
                       handler: Callable[[Path, str], Any], whole: bool = False
                       ) -> ChunkedUpload:
        """An upload whose files stream to the session's folder, then go to ``handler``.

        Parameters
        ----------
        kind : str
            Names the widget in the page (CSS class ``segdash-upload-KIND``).
        accept : list of str
            File endings (or MIME types) the browser offers to choose.
        handler : callable
            ``handler(path, filename)``, run on the session's worker with the received
            file; the file is deleted after it returns (it may move it away first).
        whole : bool
            The handler reads the file into memory: the limit is also
            :data:`MAX_SMALL_UPLOAD_BYTES`.
        """
        limit = self.context.max_upload_bytes
        if whole:
            limit = min(limit, MAX_SMALL_UPLOAD_BYTES)
        widget = ChunkedUpload(self.context.uploads, partial(self._on_upload, handler),
                               self._on_refused, accepted_filetypes=list(accept),
                               max_bytes=limit, css_classes=[f"segdash-upload-{kind}"],
                               layout="compact", sizing_mode="stretch_width",
                               width=None, margin=(0, 10))
        self._uploads.append(widget)
        return widget

    def close_uploads(self) -> None:
        """Drop files still arriving (the session ends)."""
        for widget in self._uploads:
            widget.close()

    def _on_refused(self, message: str) -> None:
        self.context.report(message)

    def _on_upload(self, handler: Callable[[Path, str], Any], path: Path,
                   filename: str) -> None:
        self.context.clear_error()
        self.context.worker.submit(partial(self._handle_upload, handler, path, filename),
                                   what=f"reading {filename}")

    @staticmethod
    def _handle_upload(handler: Callable[[Path, str], Any], path: Path, filename: str
                       ) -> None:
        try:
            handler(path, filename)
        finally:
            path.unlink(missing_ok=True)


def limit_note(context: CardContext) -> str:
    """The largest upload, for the line above an upload widget."""
    return f"up to {size_text(context.max_upload_bytes)}"


def read_upload(path: Path) -> bytes:
    """The bytes of a received upload small enough to hold in memory (model, annotations,
    project files: :data:`MAX_SMALL_UPLOAD_BYTES`, checked before transfer)."""
    return path.read_bytes()
