"""Uploads that stream to disk in chunks, with a size limit checked before anything is sent.

:class:`ChunkedUpload` is Panel's :class:`~panel.widgets.FileDropper` (FilePond in the
browser, which sends a file as a series of websocket messages of ``chunk_size`` bytes) with
one change: each chunk is appended to a temporary file in the session's
:class:`UploadFolder` as it arrives, instead of being kept in a list in memory and joined
(Panel's own widget holds the whole file in RAM, then a copy of it). The browser refuses a
file over the limit (FilePond's size check, before the first chunk is read), and the server
counts the bytes it receives, so a client that skips the browser's check is refused too.

A finished file is handed to a callback as a path; the callback owns the file from then on.
The folder, and anything left in it, is removed when the session ends.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import panel as pn
import param

#: Default largest upload, GB (``segdash serve --max-upload-gb``).
DEFAULT_MAX_UPLOAD_GB = 2.0

log = logging.getLogger("segdash.ui")

#: Bytes per websocket message of an upload (Panel's default; the websocket limit of
#: ``segdash serve`` leaves room for it).
CHUNK_BYTES = 10_000_000


def size_text(n: int) -> str:
    """``n`` bytes for people, in the decimal units the browser's size check uses."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def filepond_size(n: int) -> str:
    """``n`` bytes as FilePond's size option: an integer of KB or MB (it reads no GB)."""
    return f"{n // 1_000_000}MB" if n >= 10_000_000 else f"{max(n // 1000, 1)}KB"


class UploadFolder:
    """A private temporary folder for one session's uploads, removed by :meth:`close`.

    Parameters
    ----------
    root : path, optional
        Where the folder is created (default: the system's temporary folder).
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self._root = root
        self._path: Path | None = None
        self._lock = threading.Lock()
        self._closed = False
        _open_folders.add(self)

    @property
    def path(self) -> Path:
        """The folder (created on first use, readable by this user only)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the session has ended")
            if self._path is None:
                self._path = Path(tempfile.mkdtemp(prefix="segdash-session-", dir=self._root))
            return self._path

    def new_file(self, suffix: str = "") -> Path:
        """A new empty file in the folder (its name is segdash's, never the user's)."""
        fd, name = tempfile.mkstemp(suffix=suffix, dir=self.path)
        os.close(fd)
        return Path(name)

    def close(self) -> None:
        """Remove the folder and everything in it; no file may be made afterwards."""
        with self._lock:
            self._closed = True
            path, self._path = self._path, None
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


#: Folders of sessions still open: removed when the server process exits (sessions alive
#: at shutdown are not destroyed one by one).
_open_folders: weakref.WeakSet[UploadFolder] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for folder in list(_open_folders):
        folder.close()


@dataclass
class _Incoming:
    """A file being received: where its chunks go and how far it has come."""

    name: str
    path: Path
    fh: BinaryIO
    chunks: int
    received: int = 0
    size: int = 0


class ChunkedUpload(pn.widgets.FileDropper):
    """A FileDropper whose chunks go to a file on disk as they arrive.

    Parameters
    ----------
    folder : UploadFolder
        Where files are received.
    on_file : callable
        ``on_file(path, filename)``, called (on the event loop) with each complete file;
        it owns the file afterwards (moves or deletes it).
    on_refused : callable
        ``on_refused(message)``, called when a file is refused while it arrives (over the
        limit, chunks out of order, the disk full).
    max_bytes : int
        Largest file accepted, in bytes; the browser checks it before sending anything.
    """

    max_bytes = param.Integer(default=int(DEFAULT_MAX_UPLOAD_GB * 1e9), bounds=(1, None),
                              doc="Largest file accepted, in bytes.")

    # max_bytes is the server's; the browser gets it as FilePond's max_file_size
    _rename = {**pn.widgets.FileDropper._rename, "max_bytes": None}

    def __init__(self, folder: UploadFolder, on_file: Callable[[Path, str], Any],
                 on_refused: Callable[[str], Any], **params: Any) -> None:
        params.setdefault("multiple", False)
        params.setdefault("previews", [])  # a preview would decode the file in the browser
        params.setdefault("chunk_size", CHUNK_BYTES)
        super().__init__(**params)
        self._folder = folder
        self._on_file = on_file
        self._on_refused = on_refused
        self._incoming: _Incoming | None = None
        self._refused: set[str] = set()
        self._sync_limit()

    @param.depends("max_bytes", watch=True)
    def _sync_limit(self) -> None:
        self.max_file_size = filepond_size(self.max_bytes)

    # -- receiving --------------------------------------------------------------------

    def _process_event(self, event: Any) -> None:
        data = event.data
        name = str(data.get("name") or "upload")
        if event.event_name == "delete_event":
            # A finished file removed from the browser's list: it is no longer here (its
            # callback owns it). Cancelling one that is arriving stops its chunks; what came
            # of it goes with the next file or the session.
            return
        try:
            chunk, total = int(data["chunk"]), int(data["total_chunks"])
        except (KeyError, TypeError, ValueError):
            self._refuse(name, "the upload was malformed")
            return
        if chunk == 1:
            self._refused.discard(name)
            self._start(name, total)
        if name in self._refused:
            return  # the rest of a refused file: dropped as it comes
        incoming = self._incoming
        if incoming is None or incoming.name != name or chunk != incoming.received + 1 \
                or total != incoming.chunks:
            self._refuse(name, "its parts arrived out of order")
            return
        part = data.get("data") or b""
        incoming.size += len(part)
        if incoming.size > self.max_bytes:
            self._refuse(name, f"the file is larger than the limit of "
                               f"{size_text(self.max_bytes)}")
            return
        try:
            view = memoryview(part)
            while view:  # an unbuffered write may take less than it was given
                view = view[incoming.fh.write(view):]
        except OSError as exc:
            self._refuse(name, f"the server could not store it ({exc.strerror or exc})")
            return
        incoming.received = chunk
        if chunk == total:
            incoming.fh.close()
            self._incoming = None
            self._on_file(incoming.path, name)

    def _start(self, name: str, total: int) -> None:
        self._drop()  # one file at a time: a new one replaces an unfinished one
        if total < 1 or (total - 1) * self.chunk_size > self.max_bytes:
            self._refuse(name, f"the file is larger than the limit of "
                               f"{size_text(self.max_bytes)}")
            return
        try:
            path = self._folder.new_file(".part")
            # unbuffered: each chunk goes to the OS as it is, no copy kept here
            fh = open(path, "wb", buffering=0)  # noqa: SIM115  (closed when complete)
        except (OSError, RuntimeError) as exc:
            self._refuse(name, f"the server could not store it ({exc})")
            return
        self._incoming = _Incoming(name, path, fh, total)

    def _refuse(self, name: str, why: str) -> None:
        if self._incoming is not None and self._incoming.name == name:
            self._drop()
        if name in self._refused:
            return
        self._refused.add(name)
        log.warning("upload refused: %s", why)
        self._on_refused(f"{name}: upload refused: {why}")

    def _drop(self) -> None:
        """Forget the file being received and delete what arrived of it."""
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            with contextlib.suppress(OSError):
                incoming.fh.close()
            incoming.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Drop an unfinished file (the session ends)."""
        self._drop()
