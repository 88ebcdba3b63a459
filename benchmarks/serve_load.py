"""Load and soak of a served dashboard (a benchmark, not a test).

Starts ``segdash serve`` on a free loopback port and drives it with Chromium (Playwright's
async API, one browser, one context per session):

1. **load**: ``--sessions`` (default 10) sessions at once each upload a ``--size``² RGB PNG
   (default 1024) and paint two classes; it reports, per session, the seconds from the
   second stroke's mouse-up to the overlay covering the image, and meanwhile probes the
   server's event loop: a HEAD of a static file every 50 ms, whose latency is how long
   the loop was busy with something else (the longest is the worst block);
2. **soak**: opens and closes ``--cycles`` (default 30) sessions one after another and
   reports the server's resident memory before and after (sessions freed by Bokeh's
   unused-session check, 1 s here).

Usage::

    .venv/bin/python benchmarks/serve_load.py                 # 10 sessions, 1024², 30 cycles
    .venv/bin/python benchmarks/serve_load.py --sessions 4 --size 512 --cycles 10
    .venv/bin/python benchmarks/serve_load.py --timing --cycles 5   # what holds the loop
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.browser.conftest import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.browser.pages import BRUSH_JS, FRAME_JS, OVERLAY_JS  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int, log: Path, debug_loop: bool = False,
          timing: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "segdash.cli", "serve", "--port", str(port), "--address",
           "127.0.0.1", "--unused-session-lifetime", "1000", "--check-unused-sessions", "1000"]
    env = dict(os.environ)
    if debug_loop:  # asyncio logs every callback holding the loop > 100 ms, and where from
        env["PYTHONASYNCIODEBUG"] = "1"
    if timing:  # segdash logs page updates holding the loop > 50 ms, and each overlay's parts
        env["SEGDASH_TIMING"] = "1"
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            env=env)
    url = f"http://127.0.0.1:{port}/static/js/bokeh.min.js"
    for _ in range(300):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


class LoopProbe(threading.Thread):
    """HEAD a static file every 50 ms; the latencies (s) show how long the loop was busy."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.latencies, self.stop = url + "static/js/bokeh.min.js", [], False

    def run(self) -> None:
        while not self.stop:
            t = time.perf_counter()
            try:
                req = urllib.request.Request(self.url, method="HEAD")
                with urllib.request.urlopen(req, timeout=30):
                    pass
            except OSError:
                pass
            self.latencies.append(time.perf_counter() - t)
            time.sleep(0.05)


def test_image(size: int, seed: int) -> bytes:
    """An RGB PNG: a bright disc on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    img = np.where(disc[..., None], 200, 60) + rng.integers(0, 40, (size, size, 3))
    out = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


async def drag(page, frame: dict, pixels, size: int) -> None:
    def at(c, r):
        x, y = c + 0.5, size - r - 0.5
        return (frame["x"] + (x - frame["x0"]) / (frame["x1"] - frame["x0"]) * frame["w"],
                frame["y"] + (frame["y1"] - y) / (frame["y1"] - frame["y0"]) * frame["h"])
    await page.mouse.move(*at(*pixels[0]))
    await page.mouse.down()
    for p in pixels[1:]:
        await page.mouse.move(*at(*p), steps=8)
    await page.mouse.up()


async def one_session(browser, url: str, size: int, png: bytes) -> dict:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    t0 = time.monotonic()
    await page.goto(url, timeout=600_000)
    await page.wait_for_function(f"({FRAME_JS})() !== null", timeout=600_000)
    await page.wait_for_function(f"({BRUSH_JS})() != null", timeout=120_000)
    opened = time.monotonic() - t0
    await page.locator(".segdash-upload-image input[type=file]").set_input_files(
        {"name": "load.png", "mimeType": "image/png", "buffer": png})
    await page.get_by_text(f"load.png: {size}x{size}").wait_for(timeout=120_000)
    await page.wait_for_function(
        f"(() => {{ const f = ({FRAME_JS})(); return f && f.x1 >= {size}; }})()",
        timeout=120_000)
    frame = await page.evaluate(FRAME_JS)
    m = size // 16
    await drag(page, frame, [(m, m), (size - m, m), (size - m, 3 * m)], size)
    await page.locator(".segdash-class button", has_text="class 2").click()
    await page.wait_for_function(f"({BRUSH_JS})().stroke_class === 2", timeout=300_000)
    await drag(page, frame, [(size // 2 - m, size // 2), (size // 2 + m, size // 2)], size)
    released = time.monotonic()
    step = max(1, -(-size // 1600))
    shown = (-(-size // step)) ** 2
    try:
        await page.wait_for_function(f"(({OVERLAY_JS})() || {{}}).opaque === {shown}",
                                     timeout=120_000)
        overlay = time.monotonic() - released
    except Exception:  # report what the page says instead of the timeout
        status = await page.locator(".segdash-status pre").all_inner_texts()
        errors = await page.locator(".segdash-error").all_inner_texts()
        print(f"  a session got no overlay: status {status}, errors {errors}")
        overlay = float("nan")
    await context.close()
    return {"open_s": opened, "overlay_s": overlay}


async def load(url: str, sessions: int, size: int) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        pngs = [test_image(size, i) for i in range(sessions)]
        results = await asyncio.gather(*(one_session(browser, url, size, png) for png in pngs))
        await browser.close()
    return list(results)


async def soak(url: str, cycles: int) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        for _ in range(cycles):
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(url, timeout=600_000)
            await page.wait_for_function(f"({FRAME_JS})() !== null", timeout=120_000)
            await context.close()
        await browser.close()


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def slow_callbacks(log: Path, top: int = 12) -> None:
    """The callbacks asyncio's debug mode reported holding the loop, longest first."""
    import re

    found = re.findall(r"Executing (.+?) took ([0-9.]+) seconds", log.read_text())
    found.sort(key=lambda f: -float(f[1]))
    print(f"callbacks holding the event loop > 100 ms: {len(found)}")
    for what, seconds in found[:top]:
        print(f"  {float(seconds):6.2f} s  {what[:160]}")


def slow_updates(log: Path, top: int = 12) -> None:
    """The page updates segdash logged as holding the loop (``SEGDASH_TIMING``), longest
    first, and the overlays' parts."""
    import re

    text = log.read_text()
    found = re.findall(r"page update took=([0-9.]+) ms cards=([0-9.]+) canvas=([0-9.]+) "
                       r"names=(\S+)(?: slowest=(\w*):([0-9.]+))?", text)
    found.sort(key=lambda f: -float(f[0]))
    print(f"page updates holding the event loop > 50 ms: {len(found)}")
    for took, cards, canvas, names, card, card_ms in found[:top]:
        slowest = f", slowest {card} {float(card_ms):.0f}" if card else ""
        print(f"  {float(took):7.0f} ms (cards {float(cards):.0f}{slowest}, canvas "
              f"{float(canvas):.0f})  {names[:100]}")
    shown = re.findall(r"new image in the figure base=([0-9.]+) overlay=([0-9.]+) "
                       r"rest=([0-9.]+) message=([0-9.]+)", text)
    for parts in shown:  # Canvas._show_in_figure: a new image in the figure on the page
        base, overlay, rest, message = map(float, parts)
        print(f"  new image in the same figure: picture {base:.0f}, overlay {overlay:.0f}, "
              f"ranges+strokes {rest:.0f}, message {message:.0f} ms")
    sends = [float(v) for v in re.findall(r"overlay build=[0-9.]+ send=([0-9.]+)", text)]
    if sends:
        print(f"overlay updates: {len(sends)}, HoloViews/Bokeh update median "
              f"{statistics.median(sends):.0f} ms, max {max(sends):.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--debug-loop", action="store_true",
                        help="run the server in asyncio debug mode and list the callbacks "
                             "that held its event loop longest")
    parser.add_argument("--timing", action="store_true",
                        help="run the server with SEGDASH_TIMING=1 and list the page updates "
                             "that held its event loop longest")
    args = parser.parse_args()
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"segdash-serve-load-{port}.log"
    proc = start(port, log, args.debug_loop, args.timing)
    url = f"http://127.0.0.1:{port}/"
    try:
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        probe = LoopProbe(url)
        probe.start()
        t = time.monotonic()
        results = asyncio.run(load(url, args.sessions, args.size))
        probe.stop = True
        probe.join()
        overlays = sorted(r["overlay_s"] for r in results if r["overlay_s"] == r["overlay_s"])
        print(f"{args.sessions} sessions at once, {args.size}² RGB upload + two strokes "
              f"({time.monotonic() - t:.1f} s in all, load {os.getloadavg()[0]:.2f}):")
        print("  page open s: " + ", ".join(f"{r['open_s']:.1f}" for r in results))
        print("  stroke -> overlay s (sorted): " + ", ".join(f"{s:.1f}" for s in overlays)
              + f" ({len(results) - len(overlays)} sessions without overlay)")
        lat = sorted(probe.latencies)
        print(f"  event loop probe ({len(lat)} HEADs): median {statistics.median(lat)*1e3:.0f} "
              f"ms, p95 {lat[int(0.95 * (len(lat) - 1))]*1e3:.0f} ms, "
              f"max {lat[-1]*1e3:.0f} ms")
        time.sleep(5)  # the load sessions end
        before = rss_mb(proc.pid)
        asyncio.run(soak(url, args.cycles))
        time.sleep(6)  # closed tabs noticed and their sessions destroyed
        after = rss_mb(proc.pid)
        print(f"soak: {args.cycles} sessions opened and closed: server RSS {before:.0f} MB "
              f"-> {after:.0f} MB ({after - before:+.0f} MB)")
        if args.debug_loop:
            slow_callbacks(log)
        if args.timing:
            slow_updates(log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


if __name__ == "__main__":
    main()
