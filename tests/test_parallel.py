import threading

from segdash.parallel import run_parallel, serial


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
