"""The thread pool the compiled kernels split their work over.

The compiled (numba) functions release the GIL, so chunks of rows or pixels handed to
threads run on all cores. Feature filters, feature codes, tree inference and probability
post-processing all go through :func:`run_parallel`; a few coarse tasks that release the GIL
themselves (the parts of a forest's fit) go through :func:`run_tasks`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np


def n_threads() -> int:
    """Threads the compiled kernels use (``SEGDASH_THREADS`` or all cores)."""
    env = os.environ.get("SEGDASH_THREADS")
    if env:
        return max(1, int(env))
    return max(1, os.cpu_count() or 1)


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_LOCAL = threading.local()
# run_tasks' own pool: a task waiting on the kernel pool from a kernel-pool thread could wait
# for itself (every worker busy waiting), so coarse tasks never run on `_POOL`.
_TASKS: ThreadPoolExecutor | None = None
_TASKS_SIZE = 0
_T = TypeVar("_T")


@contextmanager
def serial() -> Iterator[None]:
    """Run every :func:`run_parallel` of this thread on this thread, in one piece.

    For callers that already run one task per core (tiles on Dask's threads): splitting
    each kernel of every task over the pool again costs a hand-off per kernel call and
    per chunk (8192² RGB batch: 3.9 MP/s with the pool, 5.0 MP/s without, 2 cores).
    """
    before = getattr(_LOCAL, "serial", False)
    _LOCAL.serial = True
    try:
        yield
    finally:
        _LOCAL.serial = before


def run_parallel(fn: Callable[..., Any], n_items: int, *args: Any) -> None:
    """Call ``fn(start, stop, *args)`` over ``range(n_items)`` split into chunks, in threads.

    Several small chunks per thread keep the work balanced when another process takes a
    core. Below 64 items, with one thread, or inside :func:`serial`, ``fn`` runs once on the
    calling thread.
    """
    global _POOL, _POOL_SIZE
    nt = n_threads()
    if nt == 1 or n_items < 64 or getattr(_LOCAL, "serial", False):
        fn(0, n_items, *args)
        return
    if _POOL is None or _POOL_SIZE != nt:
        _POOL = ThreadPoolExecutor(max_workers=nt, thread_name_prefix="segdash")
        _POOL_SIZE = nt
    n_chunks = min(n_items, 4 * nt)
    bounds = np.linspace(0, n_items, n_chunks + 1).astype(int)
    futures = [_POOL.submit(fn, int(a), int(b), *args)
               for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
    for f in futures:
        f.result()


def _mark_task_thread() -> None:
    _LOCAL.task_thread = True


def run_tasks(fns: Sequence[Callable[[], _T]]) -> list[_T]:
    """Call each zero-argument function, the first on this thread and the others on a
    small pool of their own; return their results in order.

    For a few coarse tasks that release the GIL themselves (fitting parts of a forest).
    With one thread (``SEGDASH_THREADS=1``), inside :func:`serial`, or called from one of
    these tasks, all run here one after the other.

    Parameters
    ----------
    fns : sequence of callable
        Functions taking no argument.

    Returns
    -------
    list
        ``fns[i]()`` at position ``i``.

    Raises
    ------
    Exception
        The error of the first function (in ``fns`` order) that raised, once every other
        function has ended: none is left running when this returns or raises.
    """
    global _TASKS, _TASKS_SIZE
    fns = list(fns)
    nt = n_threads()
    if (len(fns) < 2 or nt == 1 or getattr(_LOCAL, "serial", False)
            or getattr(_LOCAL, "task_thread", False)):
        return [fn() for fn in fns]
    size = nt - 1  # the calling thread runs the first task
    if _TASKS is None or _TASKS_SIZE != size:
        _TASKS = ThreadPoolExecutor(max_workers=size, thread_name_prefix="segdash-task",
                                    initializer=_mark_task_thread)
        _TASKS_SIZE = size
    futures = [_TASKS.submit(fn) for fn in fns[1:]]
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException | None] = [None] * len(fns)
    try:
        results[0] = fns[0]()
    except BaseException as exc:  # re-raised below, after the other tasks ended
        errors[0] = exc
    for i, f in enumerate(futures, 1):
        try:
            results[i] = f.result()
        except BaseException as exc:
            errors[i] = exc
    for exc in errors:
        if exc is not None:
            raise exc
    return results
