"""Running a session's slow work off the server's event loop.

Each browser session owns a :class:`SessionWorker`: a queue of jobs run one at a time on a
thread pool shared by every session of the process. Jobs of one session never overlap (the
:class:`~segdash.Segmenter` is not written by two jobs at once), and a job submitted with a
``key`` replaces a queued job with the same key, so a burst of strokes trains once, on the
last one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("segdash.ui")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def shared_executor(max_workers: int | None = None) -> ThreadPoolExecutor:
    """The process-wide thread pool for computations (created on first use).

    Parameters
    ----------
    max_workers : int, optional
        Threads, on first call only (default: the number of cores). Sessions beyond this
        number wait for a free thread; one session never holds more than one of them.
    """
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=max_workers or os.cpu_count() or 2, thread_name_prefix="segdash"
            )
        return _executor


class SessionWorker:
    """A serial job queue for one session.

    Parameters
    ----------
    on_error : callable
        Called (on the worker thread) with the exception a job raised; it decides what to
        show and what to log.
    on_busy : callable, optional
        Called with no argument when :attr:`busy` may have changed (read it then).
    executor : ThreadPoolExecutor, optional
        Where jobs run (default: :func:`shared_executor`).
    """

    def __init__(
        self,
        on_error: Callable[[BaseException], Any],
        on_busy: Callable[[], Any] | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self._on_error = on_error
        self._on_busy = on_busy or (lambda: None)
        self._executor = executor or shared_executor()
        self._lock = threading.Lock()
        self._queue: list[tuple[str | None, Callable[[], Any]]] = []
        self._running = False
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()

    @property
    def busy(self) -> bool:
        """True while a job runs or waits."""
        return not self._idle.is_set()

    def submit(self, job: Callable[[], Any], key: str | None = None) -> None:
        """Queue ``job``; with a ``key``, a queued job with the same key is dropped first."""
        with self._lock:
            if self._closed:
                return
            if key is not None:
                self._queue = [(k, j) for k, j in self._queue if k != key]
            self._queue.append((key, job))
            start = not self._running
            self._running = True
            self._idle.clear()
        if start:
            self._on_busy()
            self._executor.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue or self._closed:
                    self._queue.clear()
                    self._running = False
                    self._idle.set()
                    break
                _, job = self._queue.pop(0)
            try:
                job()
            except Exception as exc:  # reported to the user; the session keeps working
                try:
                    self._on_error(exc)
                except Exception:
                    log.exception("reporting a failed job failed")
        self._on_busy()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued job has run; False on timeout."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Drop queued jobs and accept no more (the running job finishes)."""
        with self._lock:
            self._closed = True
            self._queue.clear()
