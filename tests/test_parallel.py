import threading
import time

import pytest

from segdash.parallel import run_parallel, run_tasks, serial


def _threads_used(n_items):
    seen = []

    def fn(a, b):
        seen.append((threading.get_ident(), a, b))

    run_parallel(fn, n_items)
    return seen


def test_serial_runs_the_kernels_on_the_calling_thread_in_one_piece(monkeypatch):
    monkeypatch.setenv("SEGDASH_THREADS", "2")
    assert len(_threads_used(1000)) > 1  # split over the pool otherwise
    with serial():
        assert _threads_used(1000) == [(threading.get_ident(), 0, 1000)]
    assert len(_threads_used(1000)) > 1  # only inside the block


def test_serial_is_per_thread(monkeypatch):
    monkeypatch.setenv("SEGDASH_THREADS", "2")
    got = []
    with serial():
        t = threading.Thread(target=lambda: got.append(len(_threads_used(1000))))
        t.start()
        t.join()
    assert got[0] > 1


def test_run_tasks_returns_results_in_order_using_other_threads(monkeypatch):
    monkeypatch.setenv("SEGDASH_THREADS", "3")
    seen = []

    def task(i):
        def fn():
            time.sleep(0.02 * (4 - i))  # later tasks end first
            seen.append(threading.get_ident())
            return i * i
        return fn

    assert run_tasks([task(i) for i in range(4)]) == [0, 1, 4, 9]
    assert threading.get_ident() in seen and len(set(seen)) > 1


def test_run_tasks_raises_the_first_error_after_the_other_tasks_ended(monkeypatch):
    monkeypatch.setenv("SEGDASH_THREADS", "2")
    ended = []

    def fail(msg):
        def fn():
            raise ValueError(msg)
        return fn

    def slow():
        time.sleep(0.2)
        ended.append(True)

    with pytest.raises(ValueError, match="first"):
        run_tasks([fail("first"), slow, fail("second")])
    assert ended == [True]  # the slow task had ended before the error came out


def test_run_tasks_runs_everything_here_with_one_thread_or_nested(monkeypatch):
    monkeypatch.setenv("SEGDASH_THREADS", "1")
    here = threading.get_ident()
    assert run_tasks([threading.get_ident] * 3) == [here] * 3
    with serial():
        monkeypatch.setenv("SEGDASH_THREADS", "2")
        assert run_tasks([threading.get_ident] * 3) == [here] * 3
    # a task that runs tasks itself runs them on its own thread: the pool never waits on
    # itself (one worker here, so waiting on it from it would hang)
    inner = run_tasks([lambda: None, lambda: (threading.get_ident(),
                                              run_tasks([threading.get_ident] * 2))])[1]
    assert inner[1] == [inner[0]] * 2
