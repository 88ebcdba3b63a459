"""``segdash serve FOLDER --basic-auth``: each logged-in user works in a project of their own,
and names from the folder (an image file named like an HTML tag) show as text.

Two users log in to the same served project folder through Panel's login page: what one
paints is saved to their own project file, and the other neither sees it nor finds it in
their file; the first user finds it again after a reload. The first user's project lists an
image whose file name is an ``<img onerror=...>`` tag, applies the model to the project and
picks that image's result: the name shows literally everywhere and no script runs.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from segdash.project import Project

from .conftest import start_server, stop_server
from .pages import choose_class, open_app, paint, strokes, wait_status
from .test_untrusted_text import INJECTED, payload

PASSWORD = "lab-password-1"
HOSTILE = payload("xss_project_image") + ".png"


def log_in(page, url: str, user: str) -> None:
    page.goto(url)
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("input[name=password]").press("Enter")
    page.wait_for_url(url + "**")
    open_app(page, url)


def scene(seed: int) -> np.ndarray:
    img = np.random.default_rng(seed).normal(60, 4, (60, 80))
    img[:, 40:] += 80
    return np.clip(img, 0, 255).astype(np.uint8)


def test_logged_in_users_each_have_their_own_project_and_names_show_as_text(
        browser, tmp_path, console):
    folder = tmp_path / "lab"
    folder.mkdir()
    Image.fromarray(scene(1)).save(folder / "a_scan.png")
    Image.fromarray(scene(2)).save(folder / HOSTILE)
    proc, url = start_server(str(folder), "--basic-auth", PASSWORD, "--cookie-secret",
                             "cookie-secret-for-tests", log_path=tmp_path / "serve.log")
    contexts = []
    try:
        pages = {}
        for user in ("alice", "bob b"):
            contexts.append(browser.new_context(viewport={"width": 1400, "height": 1000}))
            pages[user] = contexts[-1].new_page()
            log_in(pages[user], url, user)
        alice, bob = pages["alice"], pages["bob b"]
        files = sorted(folder.glob("segdash-project.user-*.json"))
        assert [f.name.split("-")[2] for f in files] == ["alice", "bob_b"]
        alice_file, bob_file = files
        # the hostile name is listed as text in the Project card
        alice.locator(".segdash-project-image button",
                      has_text=f"{HOSTILE}: 80x60").wait_for(timeout=30_000)

        choose_class(alice, "class 1", 1)
        paint(alice, [(5, 10), (30, 10), (30, 50)], 60)
        choose_class(alice, "class 2", 2)
        paint(alice, [(50, 10), (75, 10), (75, 50)], 60)
        wait_status(alice, r"trained random_forest", timeout=120_000)
        for _ in range(100):  # saved after every change
            if Project.load(alice_file, folder).images[0].stroke_count == 2:
                break
            alice.wait_for_timeout(100)
        assert Project.load(alice_file, folder).images[0].stroke_count == 2
        assert Project.load(bob_file, folder).images[0].stroke_count == 0
        shared = json.loads((folder / "segdash-project.json").read_text())
        assert all(not img.get("strokes") for img in shared["images"])

        bob.reload()
        open_app(bob, url)
        assert strokes(bob) == []
        alice.reload()
        open_app(alice, url)
        assert len(strokes(alice)) == 2

        # Apply to project: the results are named after the images, shown as text
        wait_status(alice, r"trained random_forest", timeout=120_000)
        alice.locator(".segdash-apply button", has_text="Apply to project").click()
        alice.locator(".segdash-apply-info pre", has_text="2 image(s) segmented").wait_for(
            timeout=180_000)
        result = HOSTILE.removesuffix(".png") + "_overlay.png"
        options = alice.locator(".segdash-apply-result select option")
        options.first.wait_for(state="attached", timeout=30_000)
        assert result in options.all_inner_texts()
        assert alice.evaluate("() => window.xss_project_image") is None
        assert alice.locator(INJECTED).count() == 0
    finally:
        for context in contexts:
            context.close()
        stop_server(proc)
