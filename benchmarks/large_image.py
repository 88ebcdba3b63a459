"""A 16384² slide in the browser, side by side with a 1024² image (a benchmark, not a test).

Writes a 16384 x 16384 RGB pyramidal OME-TIFF (:mod:`benchmarks.slide`, a few seconds),
serves it with ``segdash serve SLIDE --cache-gb G`` and drives Chromium through Playwright:

1. **first view**: seconds from opening the page to the plot drawn, for the server's first
   session (imports, compiled kernels loading) and for a second one (what a user of a
   running server waits);
2. **stroke to overlay**, zoomed in at full resolution (working resolution "full", a
   640-pixel view): seconds from a stroke's mouse-up to the last overlay update of the
   view (the overlay then covers the view), over ``--strokes`` strokes; the same on a
   1024² crop of the slide served as a PNG (today's whole-image session);
3. **panning**: ``--pans`` views at random places of the slide at full resolution, each
   waited for until its overlay is complete, with the server's resident memory sampled
   every 0.2 s throughout (compare with ``--cache-gb``).

Usage::

    .venv/bin/python benchmarks/large_image.py                 # 16384², 7 strokes, 12 pans
    .venv/bin/python benchmarks/large_image.py --side 8192 --pans 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.slide import SQUARE, slide_tile, write_slide  # noqa: E402
from tests.browser.conftest import (  # noqa: E402
    CHROMIUM_ARGS,
    chromium_path,
    start_server,
    stop_server,
)
from tests.browser.pages import (  # noqa: E402
    _JS_LIB,
    BRUSH_JS,
    FRAME_JS,
    draw,
    frame,
    wait_status,
)

# Record the browser time of every overlay update and of every mouse-up.
WATCH_JS = """() => {""" + _JS_LIB + """
  window.__ovl = window.__ovl || [];
  if (!window.__up_hooked) {
    document.addEventListener('pointerup', () => { window.__up = performance.now(); }, true);
    window.__up_hooked = true;
  }
  const ds = overlayView().model.data_source;
  if (ds.__watched) return;
  ds.__watched = true;
  ds.change.connect(() => window.__ovl.push(performance.now()));
  ds.properties.data.change.connect(() => window.__ovl.push(performance.now()));
}"""

VIEW_JS = """([x0, x1, y0, y1]) => {
  const v = Bokeh.index.query_one((v) => v.frame != null && v.canvas_view != null);
  v.model.x_range.setv({start: x0, end: x1});
  v.model.y_range.setv({start: y0, end: y1});
  window.__up = performance.now();
  v.trigger_ranges_update_event();
}"""


class RssSampler(threading.Thread):
    """The peak resident memory of a process, sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self.every)

    def now(self) -> int:
        return self.proc.memory_info().rss


def quiet_latency(page, quiet: float = 1.5, timeout: float = 120.0) -> float:
    """Seconds from the last mouse-up (or view change) to the last overlay update after it,
    once no update has come for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up, last, now = page.evaluate(
            "() => [window.__up || 0, (window.__ovl || []).slice(-1)[0] || 0, "
            "performance.now()]")
        if last > up and now - last > quiet * 1000:
            return (last - up) / 1000
        time.sleep(0.2)
    raise TimeoutError("the overlay did not settle")


def settle(page, quiet: float = 1.5, timeout: float = 120.0) -> None:
    """Wait until no overlay update has come for ``quiet`` seconds (there may be none)."""
    deadline = time.monotonic() + timeout
    start = page.evaluate("() => performance.now()")
    while time.monotonic() < deadline:
        last, now = page.evaluate(
            "() => [(window.__ovl || []).slice(-1)[0] || 0, performance.now()]")
        if now - max(last, start) > quiet * 1000:
            return
        time.sleep(0.2)
    raise TimeoutError("the overlay did not settle")


def open_page(browser, url: str) -> tuple[object, float]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    t0 = time.monotonic()
    page.goto(url)
    page.wait_for_function(f"({FRAME_JS})() !== null", timeout=120_000)
    page.wait_for_function(f"({BRUSH_JS})() != null", timeout=120_000)
    return page, time.monotonic() - t0


def choose(page, name: str, class_id: int) -> None:
    page.locator(".segdash-class button", has_text=name).click()
    page.wait_for_function(f"({BRUSH_JS})().stroke_class === {class_id}", timeout=10_000)


def stroke_latencies(page, height: int, smooth: tuple[int, int], striped: tuple[int, int],
                     n: int) -> list[float]:
    """Paint two classes near ``smooth`` and ``striped`` (column, row), then ``n`` more
    strokes alternating between them; the stroke-to-overlay seconds of those ``n``."""
    f = frame(page)

    def stroke(at: tuple[int, int], k: int) -> None:
        c, r = at
        pts = [(c + 4 * k, r + 6 * k), (c + 4 * k + 40, r + 6 * k + 5)]
        draw(page, [f.at(x, y, height) for x, y in pts])

    choose(page, "class 1", 1)
    stroke(smooth, 0)
    choose(page, "class 2", 2)
    stroke(striped, 0)
    wait_status(page, r"trained", timeout=180_000)
    page.evaluate(WATCH_JS)
    settle(page)  # a small image's overlay may be complete already: no update need come
    out = []
    for k in range(1, n + 1):
        cls = 1 + k % 2
        choose(page, f"class {cls}", cls)
        stroke(smooth if cls == 1 else striped, k)
        out.append(quiet_latency(page))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--cache-gb", type=float, default=1.0)
    parser.add_argument("--strokes", type=int, default=7)
    parser.add_argument("--pans", type=int, default=12)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="segdash-large-"))
    print(f"load before: {os.getloadavg()[0]:.1f} (2 cores)")
    t0 = time.monotonic()
    slide = write_slide(folder / "slide.ome.tif", args.side)
    print(f"wrote a {args.side}² RGB pyramidal OME-TIFF in {time.monotonic() - t0:.1f} s "
          f"({slide.stat().st_size / 1e6:.0f} MB)")
    crop = slide_tile(0, 3 * SQUARE + 512, 4 * SQUARE + 512, 3 * SQUARE + 512,
                      4 * SQUARE + 512)
    small = folder / "crop1024.png"
    Image.fromarray(crop).save(small)

    results: dict[str, object] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        proc, url = start_server(str(slide), "--cache-gb", str(args.cache_gb),
                                 log_path=folder / "serve.log")
        rss = RssSampler(proc.pid)
        rss.start()
        try:
            first, cold = open_page(browser, url)
            page, warm = open_page(browser, url)
            first.close()
            results["first view, first session (s)"] = cold
            results["first view, next session (s)"] = warm
            page.locator(".segdash-resolution select").select_option(label="full")
            # the working-resolution change is announced, then at once replaced by the
            # training's own status (live update): either shows that it took effect
            wait_status(page, r"working at 1/1 |paint at least two classes")
            c = r = 4 * SQUARE  # the corner of four squares: both textures in view
            page.evaluate(VIEW_JS, [c - 320, c + 320, args.side - r - 320, args.side - r + 320])
            page.wait_for_function(
                "(() => { const v = Bokeh.index.query_one((v) => v.frame != null && "
                "v.canvas_view != null); return v.model.x_range.end - v.model.x_range.start"
                " < 1400; })()")  # the responsive plot widens one range: square pixels
            time.sleep(1.0)
            lat = stroke_latencies(page, args.side, (c - 250, r - 250), (c + 60, r - 250),
                                   args.strokes)
            results["stroke -> viewport overlay, slide, p50 (s)"] = statistics.median(lat)
            results["  all (s)"] = " ".join(f"{v:.2f}" for v in lat)
            after_strokes = rss.now()
            rng = np.random.default_rng(0)
            pan_times = []
            for _ in range(args.pans):
                cx, cy = (int(v) for v in rng.integers(400, args.side - 400, 2))
                page.evaluate(VIEW_JS, [cx - 320, cx + 320, args.side - cy - 320,
                                        args.side - cy + 320])
                pan_times.append(quiet_latency(page))
            results["pan -> viewport overlay, p50 (s)"] = statistics.median(pan_times)
            results["server RSS after strokes (GB)"] = after_strokes / 1e9
            results["server RSS peak, whole session (GB)"] = rss.peak / 1e9
            results["cache limit (GB)"] = args.cache_gb
        finally:
            rss.stop.set()
            stop_server(proc)

        proc, url = start_server(str(small), log_path=folder / "serve-small.log")
        try:
            first, _ = open_page(browser, url)
            page, warm = open_page(browser, url)
            first.close()
            results["first view, 1024² PNG, next session (s)"] = warm
            lat_small = stroke_latencies(page, 1024, (300, 300), (600, 300), args.strokes)
            results["stroke -> overlay, 1024² PNG, p50 (s)"] = statistics.median(lat_small)
            results["  all (s) "] = " ".join(f"{v:.2f}" for v in lat_small)
        finally:
            stop_server(proc)
        browser.close()
    ratio = (results["stroke -> viewport overlay, slide, p50 (s)"]
             / results["stroke -> overlay, 1024² PNG, p50 (s)"])
    results["slide / 1024² latency ratio"] = ratio
    print(f"load after: {os.getloadavg()[0]:.1f}")
    for k, v in results.items():
        print(f"{k:45s} {v:.2f}" if isinstance(v, float) else f"{k:45s} {v}")


if __name__ == "__main__":
    main()
