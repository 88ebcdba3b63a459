"""Make docs/screenshot.png from a real session, and time the overlay on a 512x512 image.

Run ``.venv/bin/python -m tests.browser.screenshot`` from the repository root. It starts
``segdash serve`` on a free port, opens the IHC sample (512x512 RGB) in Chromium,
renames and paints three classes with the mouse, prints how long each overlay took to appear
after the mouse was released, and saves the page. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from .conftest import CHROMIUM_ARGS, chromium_path, start_server, stop_server
from .pages import OVERLAY_JS, choose_class, open_app, paint

ROOT = Path(__file__).resolve().parents[2]
SIZE = 512
# The overlay's data array is replaced on each update: remember it, then wait for another.
_OVERLAY_WITH_ARRAY_JS = OVERLAY_JS.replace("return {", "return {img: img, ")
_MARK_JS = f"() => {{ window._segdash_mark = ({_OVERLAY_WITH_ARRAY_JS})(); }}"


def _wait_new_overlay(page, opaque: int) -> None:
    page.wait_for_function(
        f"() => {{ const o = ({_OVERLAY_WITH_ARRAY_JS})();"
        f" return o && o.opaque === {opaque} && (!window._segdash_mark"
        " || o.img !== window._segdash_mark.img); }", timeout=60_000)


def timed_stroke(page, pixels, expect_overlay: bool) -> float | None:
    """Paint a stroke; with ``expect_overlay``, seconds from mouse-up to the new overlay."""
    page.evaluate(_MARK_JS)
    paint(page, pixels, SIZE)
    start = time.perf_counter()
    if not expect_overlay:
        return None
    _wait_new_overlay(page, SIZE * SIZE)
    return time.perf_counter() - start


def rename(page, name: str) -> None:
    box = page.get_by_label("Name of the selected class")
    box.fill(name)
    box.press("Enter")
    page.locator(".segdash-class button", has_text=name).wait_for()


def main(out: Path = ROOT / "docs" / "screenshot.png") -> int:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(log_path=Path(tmp) / "serve.log")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium_path(),
                                             args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                open_app(page, url)
                page.locator("select").first.select_option("ihc.jpg")
                page.get_by_text("ihc.jpg: 512x512").wait_for(timeout=60_000)
                page.wait_for_function(
                    "() => { const v = Bokeh.index.query_one((v) => v.frame != null && "
                    "v.canvas_view != null); return v && v.model.x_range.end >= 512"
                    " && v.model.y_range.end >= 512; }")  # one range widened: square pixels
                rename(page, "stroma")
                timed_stroke(page, [(150, 272), (240, 292)], False)
                timed_stroke(page, [(440, 250), (470, 350), (480, 450)], False)
                choose_class(page, "class 2", 2)
                rename(page, "gland")
                first = timed_stroke(page, [(30, 60), (70, 110), (100, 150)], True)
                page.get_by_role("button", name="Add class").click()
                choose_class(page, "class 3", 3)
                rename(page, "lumen")
                third = timed_stroke(page, [(12, 330), (18, 380), (16, 420)], True)
                choose_class(page, "gland", 2)
                more = timed_stroke(page, [(300, 350), (330, 400), (350, 440)], True)
                timed_stroke(page, [(330, 100), (360, 150), (380, 200)], True)
                choose_class(page, "stroma", 1)
                timed_stroke(page, [(200, 390), (215, 440), (230, 490)], True)
                choose_class(page, "lumen", 3)
                timed_stroke(page, [(150, 15), (160, 40), (172, 62)], True)
                page.wait_for_timeout(500)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            stop_server(proc)
    print(f"512x512 RGB (ihc.jpg), mouse-up to overlay in the page: first two-class result "
          f"{first:.2f} s (features computed), adding a third class {third:.2f} s, "
          f"another stroke {more:.2f} s")
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
