"""Sessions sharing one server: plugins that misbehave, fair turns, time limits, memory.

Each test drives real :class:`~segdash.ui.SegdashApp` sessions (their own Segmenter and
worker) on a :class:`~segdash.ui.worker.ComputePool` of its own, with real classifier
plugins registered in-process that exit, hang or block.
"""

from __future__ import annotations

import re
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image
from sklearn.dummy import DummyClassifier

import segdash
from segdash import registry
from segdash.contract import Classifier
from segdash.segmenter import check_memory, session_bytes
from segdash.stack import FeatureStack
from segdash.ui import SegdashApp
from segdash.ui.worker import ComputePool, JobAbandoned, SessionWorker

from .conftest import two_texture_image
from .test_ui import paint_two_classes

#: Released at the end of every test: the hung plugins' threads then end.
RELEASE = threading.Event()


class ExitingEstimator(DummyClassifier):
    def fit(self, X, y, sample_weight=None):
        sys.exit(3)


class ExitsDuringFit(Classifier):
    """A classifier plugin whose fit calls ``sys.exit`` (``SystemExit``)."""

    def build(self):
        return ExitingEstimator()


class HangingEstimator(DummyClassifier):
    def fit(self, X, y, sample_weight=None):
        RELEASE.wait()  # a fit that never returns on its own
        return super().fit(X, y)


class HangsDuringFit(Classifier):
    """A classifier plugin whose fit hangs until the test releases it."""

    def build(self):
        return HangingEstimator()


@pytest.fixture
def plugins():
    RELEASE.clear()
    registry.classifiers.register("test_exits", ExitsDuringFit, overwrite=True)
    registry.classifiers.register("test_hangs", HangsDuringFit, overwrite=True)
    yield
    RELEASE.set()
    registry.classifiers.unregister("test_exits")
    registry.classifiers.unregister("test_hangs")


def session(pool: ComputePool, **kwargs) -> SegdashApp:
    """A session whose worker runs on ``pool``."""
    image, _ = two_texture_image(128)
    return SegdashApp(image=image, image_name="texture.png", pool=pool, **kwargs)


def train_once_with(app: SegdashApp, classifier: str) -> None:
    """Paint two classes, choose ``classifier`` and press Train: one training job."""
    app.cards.results.live_toggle.value = False
    paint_two_classes(app)
    app.cards.classifier.select.value = classifier
    app.cards.results.train_button.clicks += 1


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# -- plugins that misbehave ------------------------------------------------------------


def test_a_plugin_calling_sys_exit_during_fit_is_a_message_and_the_session_carries_on(plugins):
    app = session(ComputePool(1, time_limit=None))
    try:
        app.cards.classifier.select.value = "test_exits"
        paint_two_classes(app)
        assert app.wait_idle(60)
        assert app.alert.visible and "SystemExit" in app.errors[-1]
        assert "test_exits" in app.errors[-1]
        assert not app.spinner.value and not app.segmenter.busy
        app.cards.classifier.select.value = "random_forest"  # the same session trains again
        assert app.wait_idle(60)
        assert app.segmenter.segmentation is not None and app.segmenter.error == ""
    finally:
        app.close()


def test_a_job_raising_a_base_exception_is_reported_and_the_worker_keeps_running():
    class PluginAbort(BaseException):
        pass

    def abort():
        raise PluginAbort("gone")

    errors, done = [], []
    worker = SessionWorker(on_error=errors.append, pool=ComputePool(1, time_limit=None))
    worker.submit(lambda: sys.exit(2))
    worker.submit(abort)
    worker.submit(lambda: done.append(1))
    assert worker.wait_idle(10)
    assert [type(e) for e in errors] == [SystemExit, PluginAbort] and done == [1]
    assert not worker.busy


def test_hung_plugins_in_two_sessions_do_not_starve_a_third(plugins):
    pool = ComputePool(2, time_limit=3.0)  # two compute slots, both taken by hung fits
    hung = [session(pool), session(pool)]
    bystander = session(pool)
    try:
        for app in hung:
            train_once_with(app, "test_hangs")
        assert wait_for(lambda: pool.stuck == 0 and len(pool._running) == 2, 10)
        start = time.monotonic()
        paint_two_classes(bystander)
        assert bystander.wait_idle(60)
        waited = time.monotonic() - start
        assert bystander.segmenter.segmentation is not None  # served once the slots freed
        assert waited < 30, waited
        for app in hung:
            assert app.wait_idle(10)  # the abandoned fit no longer counts as busy
            assert "did not finish within the time limit of 3 s" in app.errors[-1]
            assert app.segmenter.status == "training abandoned"
            assert not app.segmenter.busy and app.worker.stuck == 1
        assert pool.stuck == 2
        # A hung session carries on with another classifier while its old thread hangs.
        hung[0].cards.classifier.select.value = "random_forest"
        hung[0].cards.results.train_button.clicks += 1
        assert hung[0].wait_idle(60)
        assert hung[0].segmenter.segmentation is not None
        # Released, the hung fits end; their results are discarded.
        hung[1].segmenter.param.watch(lambda e: pytest.fail("late result published"),
                                      "model")
        RELEASE.set()
        assert wait_for(lambda: pool.stuck == 0, 10)
        assert hung[1].worker.stuck == 0 and hung[1].segmenter.model is None
    finally:
        RELEASE.set()
        for app in (*hung, bystander):
            app.close()


def test_cancel_abandons_a_running_job_and_drops_the_queued_ones(plugins):
    pool = ComputePool(1, time_limit=None)
    app = session(pool)
    try:
        train_once_with(app, "test_hangs")
        assert wait_for(lambda: len(pool._running) == 1, 10)
        ran = []
        app.worker.submit(lambda: ran.append(1))
        app.progress.cancel_button.clicks += 1
        assert app.wait_idle(10)
        assert ran == [] and not app.errors  # the user's own Cancel is not an error
        assert app.segmenter.status == "training cancelled; the previous result stays"
        assert not app.progress.row.visible
        assert app.progress.cancel() is False  # nothing is running
    finally:
        RELEASE.set()
        app.close()


def test_a_session_with_too_many_stuck_jobs_gets_no_more_until_they_end(plugins):
    pool = ComputePool(1, time_limit=0.5)
    errors = []
    worker = SessionWorker(on_error=errors.append, pool=pool)
    for _ in range(2):
        worker.submit(RELEASE.wait, what="fit")
        assert wait_for(lambda: not worker.busy, 10)
    assert worker.stuck == 2 and all(isinstance(e, JobAbandoned) for e in errors)
    ran = []
    worker.submit(lambda: ran.append(1))
    assert worker.wait_idle(10)
    assert ran == [] and "still stuck in a plugin" in str(errors[-1])
    RELEASE.set()
    assert wait_for(lambda: worker.stuck == 0, 10)
    worker.submit(lambda: ran.append(1))
    assert worker.wait_idle(10) and ran == [1]


def test_sessions_take_turns_instead_of_first_come_first_served():
    pool = ComputePool(1, time_limit=None)
    order: list[str] = []
    gate = threading.Event()
    busy = SessionWorker(on_error=print, pool=pool)
    other = SessionWorker(on_error=print, pool=pool)
    busy.submit(gate.wait)  # holds the only slot while both queue work
    assert wait_for(lambda: len(pool._running) == 1, 5)
    for i in range(4):
        busy.submit(lambda i=i: order.append(f"busy{i}"))
    other.submit(lambda: order.append("other"))
    gate.set()
    assert busy.wait_idle(10) and other.wait_idle(10)
    # The session that had its turn (the gate) goes to the back: the other session's job
    # runs before its four queued ones, not after them.
    assert order == ["other", "busy0", "busy1", "busy2", "busy3"]


# -- memory per session ----------------------------------------------------------------


def test_session_memory_estimate_matches_the_measured_2048_rgb_peak():
    stack = FeatureStack("basic")
    estimate = session_bytes((2048, 2048, 3), stack, 2)
    # docs/performance.md: a 2048² RGB session with the default features peaks at 1.44 GB
    # (VmHWM, imports included): never below it, never far above it
    assert 1.44e9 < estimate < 1.5 * 1.44e9


def test_a_9000_square_upload_is_worked_on_tile_by_tile_instead_of_being_refused(tmp_path):
    # 81 M pixels: under Pillow's decompression-bomb limit (89 M), a small file; its
    # whole-image features would need more than the session's 4 GB budget.
    big = np.zeros((9000, 9000), np.uint8)
    big[4500:] = 200
    big[::7] = 100
    path = tmp_path / "huge.png"
    Image.fromarray(big).save(path)
    del big
    assert path.stat().st_size < 2_000_000
    app = SegdashApp(memory_limit=4 * 10**9)
    try:
        app.cards.image._open_upload(path, "huge.png")
        seg = app.segmenter
        assert seg.image is None and seg.source is not None
        assert seg.source.shape[:2] == (9000, 9000)
        assert seg.downsample == 8  # the default working resolution of a 9000² image
        seg.set_view(0, 3000, 0, 3000)  # the top-left tile at 1/8 (375² of 1125²)
        seg.add_stroke([500, 2500], [2000, 2000], 1, 60.0)
        seg.add_stroke([500, 2500], [7000, 7000], 2, 60.0)
        assert app.wait_idle(120)
        assert not app.errors, app.errors
        assert seg.model is not None and seg.model.downsample == 8
        assert "at 1/8 resolution" in seg.status
        # only the tiles under the strokes and in view were computed, not the image
        assert seg._tiled.grid.shape == (3, 3) and seg._tiled.computed == 2
        seg.set_view(0, 9000, 0, 9000)
        assert app.wait_idle(120)
        labels = seg.view_result(0, 9000, 0, 9000, 90, 90)
        assert (labels[5:40] == 1).mean() > 0.95 and (labels[50:85] == 2).mean() > 0.95
    finally:
        app.close()


def test_training_over_the_memory_limit_is_refused_before_features_are_computed():
    seg = segdash.Segmenter(image=np.zeros((600, 600), np.float32))
    seg.memory_limit = 10_000_000  # 10 MB: a 600² image needs more
    seg.add_stroke([10, 100], [10, 10], 1, width=4)
    seg.add_stroke([10, 100], [300, 300], 2, width=4)
    assert seg.model is None and seg.feature_computations == 0
    assert re.match(r"this image \(600x600\) needs ~\d+ MB of features; the limit of a "
                    r"session on this server is 10 MB: use a working resolution", seg.error)


def test_the_memory_limit_also_guards_applying_a_model():
    image, labels = two_texture_image(64)
    model = segdash.fit(image, labels)
    seg = segdash.Segmenter(image=np.zeros((600, 600), np.float32), live_update=False)
    seg.memory_limit = 10_000_000  # 10 MB: a 600² image needs more
    limit = r"needs ~\d+ MB of features; the limit of a session on this server is 10 MB"
    with pytest.raises(segdash.errors.ImageError, match=limit):
        seg.apply_model(model)
    seg.memory_limit = None
    seg.apply_model(model)
    assert seg.segmentation.shape == (600, 600)


def test_no_memory_limit_means_no_check():
    check_memory(np.zeros((10, 10)), FeatureStack("basic"), 2, None)


def test_the_progress_row_shows_a_jobs_file_name_as_text():
    import threading

    from segdash.ui.progress import ProgressRow

    gate = threading.Event()
    worker = SessionWorker(on_error=print, pool=ComputePool(1, time_limit=None))
    row = ProgressRow(worker, on_ui=lambda f: f(), show_after=0.0)
    try:
        worker.submit(gate.wait, what="reading <img src=x onerror=alert(1)>.png")
        assert wait_for(lambda: worker.running is not None, 10)
        row.update()
        assert row.row.visible
        assert row.text.object == "reading &lt;img src=x onerror=alert(1)&gt;.png…"
    finally:
        gate.set()
        worker.wait_idle(10)
