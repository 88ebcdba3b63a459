"""Make docs/project-screenshot.png from a real session on a project of three images.

Run ``.venv/bin/python -m tests.browser.screenshot_project`` from the repository root. It
writes three variants of the IHC sample to a temporary folder (as it is; mirrored and
darker; rotated and brighter), starts ``segdash serve FOLDER``, paints stroma and glands on
the first two with the mouse, switches to the third (never painted) and saves the page.
Not a test.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

from segdash.ui.samples import load_sample

from .conftest import CHROMIUM_ARGS, chromium_path, start_server, stop_server
from .pages import choose_class, open_app, paint, wait_status
from .screenshot import rename

ROOT = Path(__file__).resolve().parents[2]
SIZE = 512
STROMA = [[(150, 272), (240, 292)], [(440, 250), (470, 350), (480, 450)]]
GLAND = [[(30, 60), (70, 110), (100, 150)], [(300, 350), (330, 400), (350, 440)]]


def _variant(img: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(img.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


def _mirror(strokes):
    return [[(SIZE - 1 - c, r) for c, r in s] for s in strokes]


def main(out: Path = ROOT / "docs" / "project-screenshot.png") -> int:
    ihc = load_sample("ihc.jpg")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "slides"
        folder.mkdir()
        Image.fromarray(ihc).save(folder / "slide_a.png")
        Image.fromarray(_variant(np.fliplr(ihc), 0.8, 0)).save(folder / "slide_b.png")
        Image.fromarray(_variant(np.rot90(ihc), 0.9, 20)).save(folder / "slide_c.png")
        proc, url = start_server(str(folder), log_path=Path(tmp) / "serve.log")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium_path(),
                                             args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                open_app(page, url)
                rename(page, "stroma")
                choose_class(page, "class 2", 2)
                rename(page, "gland")
                for name, mirror in (("slide_a.png", False), ("slide_b.png", True)):
                    if name != "slide_a.png":
                        page.locator(".segdash-project-image button", has_text=name).click()
                        wait_status(page, f"opened {name}")
                    choose_class(page, "stroma", 1)
                    for s in _mirror(STROMA) if mirror else STROMA:
                        paint(page, s, SIZE)
                    choose_class(page, "gland", 2)
                    for s in _mirror(GLAND) if mirror else GLAND:
                        paint(page, s, SIZE)
                    wait_status(page, "trained")
                page.locator(".segdash-project-image button", has_text="slide_c.png").click()
                wait_status(page, "shown with the current model")
                page.wait_for_timeout(1500)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out))
                browser.close()
        finally:
            stop_server(proc)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
