"""Where an update's time goes: the ``segdash.timing`` log lines, as the Chromium latency
benchmark (benchmarks/latency_browser.py) reads them."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import segdash
from segdash.ui import SegdashApp

from .conftest import scribble_strokes, two_texture_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from latency_browser import parse_timing, split  # noqa: E402


def test_training_and_the_overlay_log_their_parts_for_the_latency_benchmark(caplog):
    image, _ = two_texture_image(64)
    caplog.set_level(logging.DEBUG, logger="segdash.timing")
    start = time.time()
    app = SegdashApp(image=image, image_name="t.png")
    try:
        app.segmenter.set_strokes(scribble_strokes(64))
        assert app.wait_idle(60)
        app._flush()  # the page update the event loop would run
    finally:
        app.close()
    log = "\n".join(f"x segdash.timing DEBUG {r.getMessage()}" for r in caplog.records
                    if r.name == "segdash.timing")
    lines = parse_timing(log)
    train = [d for d in lines if d["what"] == "train"][-1]
    assert {"features", "fit", "predict", "publish"} <= set(train)
    assert train["features"] > 0 and train["fit"] > 0 and start <= train["end"] <= time.time()
    overlay = [d for d in lines if d["what"] == "overlay"][-1]
    # the overlay goes as one palette index a pixel, not RGBA; it follows the results
    # (sent while they are published, or after)
    assert overlay["shape"] == "64x64" and overlay["dtype"] == "uint8"
    assert overlay["end"] >= train["end"] - train["publish"] / 1000 - 0.002
    # the benchmark's split of one stroke: mouse-up just before, drawn just after
    stroke = {"what": "stroke", "end": train["end"] - 0.01}
    got = split(stroke["end"] - 0.02, overlay["end"] + 0.03, [stroke, train, overlay])
    assert abs(got["to server"] - 0.02) < 1e-6 and abs(got["to browser"] - 0.03) < 1e-6
    assert abs(got["fit"] - train["fit"] / 1000) < 1e-9


def test_nothing_is_timed_unless_the_timing_log_is_on(caplog):
    image, _ = two_texture_image(48)
    caplog.set_level(logging.INFO, logger="segdash.timing")
    seg = segdash.Segmenter(image=image)
    seg.set_strokes(scribble_strokes(48))
    assert seg.model is not None
    assert not [r for r in caplog.records if r.name == "segdash.timing"]
