"""Running the sessions' slow work off the server's event loop, fairly and with a time limit.

Each browser session owns a :class:`SessionWorker`: a queue of jobs run one at a time, so
the :class:`~segdash.Segmenter` is never written by two jobs at once. A job submitted with a
``key`` replaces a queued job with the same key, so a burst of strokes trains once, on the
last one.

Every session of the process shares one :class:`ComputePool` of ``slots`` threads. The pool
serves sessions round robin, one job at a time: a session with many jobs queued waits its
turn behind the others instead of holding a thread until its queue is empty.

A job that raises anything, :class:`BaseException` included (a plugin calling
``sys.exit``), is reported and the session carries on. A job that runs longer than the time
limit, or whose session cancels it, is *abandoned*: the session is told, its next jobs run,
and the pool starts a new thread to take the old one's slot, so a plugin that hangs holds
no compute slot. Python cannot stop a thread from outside: the abandoned thread runs on
until the job returns (if ever), and whatever it returns is discarded. To bound what hung
plugins can pile up, a session with more than :data:`MAX_STUCK_JOBS` abandoned jobs still
running gets no new job run until one of them ends; stopping a hung plugin for good takes
restarting the server process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("segdash.ui")

#: Default longest run of one job (seconds) before it is abandoned.
DEFAULT_TIME_LIMIT = 120.0
#: Abandoned jobs of one session that may still be running while the session keeps working.
MAX_STUCK_JOBS = 1


class JobAbandoned(Exception):
    """A job ran past the time limit, or was cancelled, and was left behind.

    Attributes
    ----------
    what : str
        What the job was doing (``"training"``, ``"job"``...).
    seconds : float
        How long it had run.
    cancelled : bool
        True when the session cancelled it, False when it ran past the time limit.
    """

    def __init__(self, what: str, seconds: float, limit: float | None, cancelled: bool):
        self.what, self.seconds, self.cancelled = what, seconds, cancelled
        if cancelled:
            reason = f"{what} was cancelled after {seconds:.0f} s"
        else:
            reason = f"{what} did not finish within the time limit of {limit:g} s"
        super().__init__(
            f"{reason}; its result will be discarded. A plugin (feature extractor or "
            "classifier) may be stuck: its thread cannot be stopped and keeps running in the "
            "background. Choose another one to carry on.")


class SessionBlocked(Exception):
    """A session whose abandoned jobs are still running may not start another."""


@dataclass(eq=False)  # hashed by identity: the pool keys running jobs by them
class _Job:
    run: Callable[[], Any]
    key: str | None
    what: str
    started: float = 0.0
    thread: threading.Thread | None = None
    abandoned: bool = False


@dataclass
class _Slot:
    """One compute thread's claim on the pool (a retired thread no longer has one)."""

    retired: bool = False


class ComputePool:
    """Threads computing for every session of a process, shared round robin.

    Parameters
    ----------
    slots : int, optional
        Jobs running at once (default: the number of cores).
    time_limit : float or None
        Seconds a job may run before it is abandoned (None: no limit).
    """

    def __init__(self, slots: int | None = None,
                 time_limit: float | None = DEFAULT_TIME_LIMIT) -> None:
        self.slots = int(slots or os.cpu_count() or 2)
        self.time_limit = time_limit
        self._cond = threading.Condition()
        self._ready: deque[SessionWorker] = deque()
        self._running: dict[_Job, tuple[SessionWorker, _Slot]] = {}
        self._threads = 0
        self._watchdog: threading.Thread | None = None
        #: Abandoned jobs whose threads are still running (for the log and tests).
        self.stuck = 0

    # -- called by the session workers ------------------------------------------------

    def schedule(self, worker: SessionWorker) -> None:
        """Put ``worker`` in line for a thread (it has a job and none running)."""
        with self._cond:
            if worker not in self._ready:
                self._ready.append(worker)
            if self._threads < self.slots:
                self._spawn()
            self._cond.notify()

    def abandon(self, job: _Job, cancelled: bool) -> bool:
        """Leave ``job`` behind: free its slot (a new thread takes it) and tell its session.
        False when it was no longer running."""
        with self._cond:
            entry = self._running.pop(job, None)
            if entry is None or job.abandoned:
                return False
            worker, slot = entry
            job.abandoned = True
            slot.retired = True
            self._threads -= 1
            self.stuck += 1
            if self._ready:
                self._spawn()
        seconds = time.monotonic() - job.started
        log.warning("%s of a session abandoned after %.0f s (%s); its thread %s keeps running",
                    job.what, seconds, "cancelled" if cancelled else "time limit",
                    job.thread.name if job.thread else "?")
        worker._abandoned(job, JobAbandoned(job.what, seconds, self.time_limit, cancelled))
        return True

    # -- threads ----------------------------------------------------------------------

    def _spawn(self) -> None:
        """One more compute thread (called holding the lock)."""
        self._threads += 1
        threading.Thread(target=self._run, args=(_Slot(),), daemon=True,
                         name="segdash-compute").start()
        if self.time_limit is not None and self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name="segdash-watchdog")
            self._watchdog.start()

    def _run(self, slot: _Slot) -> None:
        while True:
            with self._cond:
                while not self._ready:
                    self._cond.wait()
                worker = self._ready.popleft()
            job = worker._take()  # outside the lock: it may call back into the page
            if job is None:
                continue
            with self._cond:
                job.started, job.thread = time.monotonic(), threading.current_thread()
                self._running[job] = (worker, slot)
            failure: BaseException | None = None
            try:
                job.run()
            except BaseException as exc:  # noqa: BLE001 - SystemExit from a plugin included
                failure = exc
            with self._cond:
                self._running.pop(job, None)
                if slot.retired:
                    self.stuck -= 1
            worker._finished(job, failure)
            if slot.retired:
                log.warning("an abandoned %s ended after %.0f s", job.what,
                            time.monotonic() - job.started)
                return  # a new thread took this one's slot

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, max(0.05, (self.time_limit or 1.0) / 20)))
            limit = self.time_limit
            if limit is None:
                continue
            now = time.monotonic()
            with self._cond:
                late = [j for j in self._running if now - j.started > limit]
            for job in late:
                self.abandon(job, cancelled=False)


_pool: ComputePool | None = None
_pool_lock = threading.Lock()


def shared_pool(slots: int | None = None,
                time_limit: float | None = DEFAULT_TIME_LIMIT) -> ComputePool:
    """The process-wide :class:`ComputePool` (created on first use, with these settings)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ComputePool(slots, time_limit)
        return _pool


class SessionWorker:
    """A serial job queue for one session, run on a :class:`ComputePool`.

    Parameters
    ----------
    on_error : callable
        Called (on a compute thread) with the exception a job raised, or a
        :class:`JobAbandoned` or :class:`SessionBlocked`; it decides what to show and log.
    on_busy : callable, optional
        Called with no argument when :attr:`busy` may have changed (read it then).
    on_abandon : callable, optional
        Called with the abandoned job's ``what`` before ``on_error``: the place to make the
        session's state consistent again (e.g. :meth:`segdash.Segmenter.abandon_training`).
    pool : ComputePool, optional
        Where jobs run (default: :func:`shared_pool`).
    """

    def __init__(
        self,
        on_error: Callable[[BaseException], Any],
        on_busy: Callable[[], Any] | None = None,
        on_abandon: Callable[[str], Any] | None = None,
        pool: ComputePool | None = None,
    ) -> None:
        self._on_error = on_error
        self._on_busy = on_busy or (lambda: None)
        self._on_abandon = on_abandon or (lambda what: None)
        self._pool = pool or shared_pool()
        self._lock = threading.Lock()
        self._queue: list[_Job] = []
        self._current: _Job | None = None
        self._stuck = 0
        self._closed = False
        self._idle = threading.Event()
        self._idle.set()

    @property
    def busy(self) -> bool:
        """True while a job runs or waits."""
        return not self._idle.is_set()

    @property
    def running(self) -> tuple[str, float] | None:
        """What the running job is doing and when it started (``time.monotonic()``), or
        None while no job runs."""
        with self._lock:
            job = self._current
        if job is None or job.abandoned:
            return None
        return job.what, job.started or time.monotonic()

    @property
    def stuck(self) -> int:
        """Abandoned jobs of this session still running in the background."""
        return self._stuck

    def submit(self, job: Callable[[], Any], key: str | None = None,
               what: str | None = None) -> None:
        """Queue ``job``; with a ``key``, a queued job with the same key is dropped first.

        ``what`` names the job in messages (default: ``"training"`` for the key ``"train"``,
        else ``"job"``).
        """
        what = what or ("training" if key == "train" else "job")
        with self._lock:
            if self._closed:
                return
            if key is not None:
                self._queue = [j for j in self._queue if j.key != key]
            self._queue.append(_Job(job, key, what))
            start = self._current is None
            self._idle.clear()
        if start:
            self._on_busy()
            self._pool.schedule(self)

    def cancel(self) -> bool:
        """Drop queued jobs and abandon the running one; False when nothing ran."""
        with self._lock:
            self._queue.clear()
            current = self._current
        if current is None:
            return False
        return self._pool.abandon(current, cancelled=True)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued job has run or was abandoned; False on timeout."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Drop queued jobs and accept no more (the running job finishes)."""
        with self._lock:
            self._closed = True
            self._queue.clear()

    # -- called by the pool -----------------------------------------------------------

    def _take(self) -> _Job | None:
        """The next job to run, or None (nothing queued, closed, or too many stuck)."""
        blocked = None
        with self._lock:
            if self._current is not None:
                return None
            if self._queue and not self._closed and self._stuck > MAX_STUCK_JOBS:
                blocked, self._queue = self._queue, []
            if not self._queue or self._closed:
                self._queue.clear()
                self._idle.set()
                job = None
            else:
                job = self._current = self._queue.pop(0)
        if blocked:
            self._report(SessionBlocked(
                f"{self._stuck} earlier jobs of this session are still stuck in a plugin "
                "(they cannot be stopped); new work waits until they end. Reload the page to "
                "start a fresh session, or ask the operator to restart the server."))
        if job is None:
            self._on_busy()
        return job

    def _finished(self, job: _Job, failure: BaseException | None) -> None:
        if job.abandoned:
            with self._lock:
                self._stuck -= 1
            return  # already reported; its result is discarded
        if failure is not None:
            self._report(failure)  # before the session counts as idle
        self._next(job)

    def _abandoned(self, job: _Job, reason: JobAbandoned) -> None:
        with self._lock:
            self._stuck += 1
        try:
            self._on_abandon(job.what)
        except Exception:
            log.exception("making a session consistent after an abandoned job failed")
        self._report(reason)
        self._next(job)

    def _next(self, job: _Job) -> None:
        """``job`` is done with: back in line for the next one, or idle."""
        with self._lock:
            if self._current is job:
                self._current = None
            more = bool(self._queue) and not self._closed
            if not more:
                self._queue.clear()
                self._idle.set()
        if more:
            self._pool.schedule(self)  # to the back of the line: other sessions go first
        else:
            self._on_busy()

    def _report(self, exc: BaseException) -> None:
        try:
            self._on_error(exc)
        except Exception:
            log.exception("reporting a failed job failed")
