"""``segdash serve FOLDER``: a project of three images in Chromium. Paint on one, switch,
paint on another, one model uses both; reloading the page and restarting the server bring
every stroke back; a stack's frames are painted and stepped through."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import tifffile
from PIL import Image

from segdash.project import Project

from .conftest import start_server, stop_server
from .pages import (
    _JS_LIB,
    BLUE,
    ORANGE,
    STROKES_JS,
    HeldSocket,
    choose_class,
    download,
    open_app,
    paint,
    plot,
    strokes,
    wait_overlay_colours,
    wait_plot_of,
    wait_status,
)

SIZE = (120, 160)  # rows, columns


def scene(offset: int, seed: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Class 1 on the left half, class 2 (50 grey levels brighter) on the right; ``offset``
    brightens both: a model trained on a dark scene alone calls a bright scene's left half
    class 2."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 4, size) + 60 + offset
    img[:, size[1] // 2:] += 50
    return np.clip(img, 0, 255).astype(np.uint8)


# Fraction of the overlay's pixels showing the right class: orange on the left half,
# blue on the right half.
ACCURACY_JS = """([orange, blue]) => {""" + _JS_LIB + """
  const v = overlayView();
  if (v == null) return null;
  const {img, packed} = overlayPixels(v);
  const [h, w] = img.shape;
  const hex = (p) => '#' + [p & 0xff, (p >> 8) & 0xff, (p >> 16) & 0xff]
    .map((x) => x.toString(16).padStart(2, '0')).join('');
  let right = 0;
  for (let i = 0; i < packed.length; i++) {
    const want = (i % w) < w / 2 ? orange : blue;
    if ((packed[i] >>> 24) !== 0 && hex(packed[i]) === want) right += 1;
  }
  return right / packed.length;
}"""


def accuracy(page) -> float | None:
    return page.evaluate(ACCURACY_JS, [ORANGE, BLUE])


def wait_accuracy(page, low: float, high: float = 1.01, timeout: float = 60_000) -> float:
    page.wait_for_function(
        f"(() => {{ const a = ({ACCURACY_JS})({json.dumps([ORANGE, BLUE])});"
        f" return a !== null && a >= {low} && a < {high}; }})()", timeout=timeout)
    return accuracy(page)


def paint_both(page, size: tuple[int, int] = SIZE) -> None:
    """Class 1 in the left half, class 2 in the right half of an image of ``size``."""
    h, w = size

    def at(*fractions: tuple[float, float]) -> list[tuple[int, int]]:
        return [(round(fx * w), round(fy * h)) for fx, fy in fractions]

    choose_class(page, "class 1", 1)
    paint(page, at((1 / 16, 1 / 4), (3 / 8, 1 / 4), (3 / 8, 3 / 4)), h)
    choose_class(page, "class 2", 2)
    paint(page, at((5 / 8, 1 / 4), (15 / 16, 1 / 4), (15 / 16, 3 / 4)), h)


def wait_strokes(page, n: int) -> None:
    page.wait_for_function(f"(({STROKES_JS})() || []).length === {n}", timeout=30_000)


def entry(page, name: str):
    return page.locator(".segdash-project-image button", has_text=name)


def switch_to(page, name: str) -> None:
    entry(page, name).click()
    wait_status(page, f"opened {name}")


@pytest.fixture
def folder(tmp_path):
    for i, (offset, seed) in enumerate([(0, 1), (90, 2), (90, 3)]):
        Image.fromarray(scene(offset, seed)).save(tmp_path / f"scene{i}.png")
    return tmp_path


def test_a_model_trained_on_two_images_of_a_folder_survives_reload_and_restart(
        page, folder, console):
    proc, url = start_server(str(folder), log_path=folder / "serve.log")
    try:
        open_app(page, url)
        page.locator(".segdash-project-info", has_text="3 image(s)").wait_for()
        paint_both(page)
        wait_status(page, r"trained random_forest on the painted pixels of 1 image")
        assert wait_accuracy(page, 0.9) > 0.9

        switch_to(page, "scene1.png")
        assert strokes(page) == []
        # the model of image 1 alone mislabels the brighter image 2
        assert wait_accuracy(page, 0.0, 0.8) < 0.8
        paint_both(page)
        wait_status(page, r"of 2 image\(s\)")
        assert wait_accuracy(page, 0.9) > 0.9

        switch_to(page, "scene2.png")  # never painted: labelled by the model of both
        assert wait_accuracy(page, 0.9) > 0.9
        entry(page, "scene0.png: 160x120, 2 stroke(s)").wait_for()
        entry(page, "scene1.png: 160x120, 2 stroke(s)").wait_for()

        saved = Project.load(folder / "segdash-project.json")
        assert [len(saved.strokes(i)) for i in range(3)] == [2, 2, 0]

        page.reload()
        open_app(page, url)
        entry(page, "scene1.png: 160x120, 2 stroke(s)").wait_for()
        wait_strokes(page, 2)  # scene0, the first image, with its strokes
        switch_to(page, "scene1.png")
        wait_strokes(page, 2)
    finally:
        stop_server(proc)

    proc, url = start_server(str(folder), log_path=folder / "serve2.log")
    try:
        open_app(page, url)
        entry(page, "scene0.png: 160x120, 2 stroke(s)").wait_for()
        entry(page, "scene1.png: 160x120, 2 stroke(s)").wait_for()
        wait_strokes(page, 2)
        switch_to(page, "scene2.png")
        assert wait_accuracy(page, 0.9) > 0.9

        # Apply to project: progress in the page, labels for every image
        page.locator(".segdash-apply button", has_text="Apply to project").click()
        page.locator("progress.segdash-apply-progress").wait_for(state="visible", timeout=30_000)
        page.locator(".segdash-apply-info pre", has_text="3 image(s) segmented").wait_for(
            timeout=120_000)
        zipped = download(page, "Results (zip)", folder)
        with zipfile.ZipFile(zipped) as zf:
            names = sorted(zf.namelist())
            labels = {n: np.asarray(Image.open(io.BytesIO(zf.read(n))))
                      for n in names if n.endswith("_labels.png")}
        assert sorted(labels) == [f"scene{i}_labels.png" for i in range(3)]
        right = np.zeros(SIZE, np.uint8) + 1
        right[:, SIZE[1] // 2:] = 2
        assert all((lab == right).mean() > 0.9 for lab in labels.values())
    finally:
        stop_server(proc)
    assert [e for e in console if "Failed to load resource" not in e[1]
            and "fonts.googleapis" not in e[2]] == []


TALL = (200, 90)  # rows, columns: another size and aspect than SIZE


def test_an_image_of_another_size_is_shown_in_the_same_figure_with_its_own_strokes(
        page, tmp_path, console):
    """Switching project images keeps the Bokeh figure (no new plot to build on the
    server's event loop), and everything in it follows the new image: picture, overlay,
    ranges, reset, strokes and their coordinates; a stroke drawn on the previous image
    after the server switched is not applied to the new one."""
    Image.fromarray(scene(0, 1)).save(tmp_path / "a_wide.png")
    Image.fromarray(scene(0, 4, TALL)).save(tmp_path / "b_tall.png")
    socket = HeldSocket(page)
    proc, url = start_server(str(tmp_path), log_path=tmp_path / "serve.log")
    try:
        open_app(page, url)
        first = wait_plot_of(page, *SIZE)
        paint_both(page)
        wait_status(page, r"trained random_forest on the painted pixels of 1 image")
        assert wait_accuracy(page, 0.9) > 0.9

        switch_to(page, "b_tall.png")
        tall = wait_plot_of(page, *TALL)  # picture and overlay over 90 x 200
        assert tall["id"] == first["id"]  # the same figure
        assert tall["base"]["shape"] == [200, 90] and tall["overlay"]["shape"] == [200, 90]
        wait_strokes(page, 0)
        assert strokes(page) == []
        # the whole new image in view, with square pixels, and the reset tool returns to it
        (x0, x1, *x_reset), (y0, y1, *y_reset) = (plot(page)[k] for k in ("x_range",
                                                                           "y_range"))
        fw, fh = tall["frame"]
        assert x0 <= 0 and x1 >= 90 and y0 <= 0 and y1 >= 200
        assert (x1 - x0) / fw == pytest.approx((y1 - y0) / fh, rel=0.02)
        assert min(x1 - x0 - 90, y1 - y0 - 200) == pytest.approx(0, abs=0.5)
        assert (x_reset, y_reset) == ([0, 90], [0, 200])
        assert wait_accuracy(page, 0.9) > 0.9  # labelled by the wide image's model

        paint_both(page, TALL)
        wait_status(page, r"of 2 image\(s\)")
        assert wait_accuracy(page, 0.9) > 0.9
        assert plot(page)["base"]["dh"] == 200  # overlay updates leave the picture as it is
        entry(page, "b_tall.png: 90x200, 2 stroke(s)").wait_for()
        entry(page, "a_wide.png: 160x120, 2 stroke(s)").wait_for()
        painted = Project.load(tmp_path / "segdash-project.json").strokes(1)
        # in the tall image's pixels (rows counted from its own top)
        assert max(painted[1].xs) == pytest.approx(90 * 15 / 16, abs=2)
        assert (min(painted[1].ys), max(painted[1].ys)) == (
            pytest.approx(50, abs=2), pytest.approx(150, abs=2))

        switch_to(page, "a_wide.png")
        back = wait_plot_of(page, *SIZE)
        assert back["id"] == first["id"]
        wait_strokes(page, 2)
        assert wait_accuracy(page, 0.9) > 0.9

        # A stroke drawn on the wide image after the server has switched to the tall one
        # (its answer held back, as a loaded server's is) belongs to neither.
        socket.hold()
        entry(page, "b_tall.png").click()
        socket.wait_held_text(page, "opened b_tall.png")  # the server has switched
        paint(page, [(20, 60), (140, 60)], SIZE[0])
        page.wait_for_timeout(1000)  # the stroke reaches the server
        socket.release()
        wait_plot_of(page, *TALL)
        wait_strokes(page, 2)  # the tall image's own
        page.wait_for_timeout(1000)
        entry(page, "b_tall.png: 90x200, 2 stroke(s)").wait_for()
        saved = Project.load(tmp_path / "segdash-project.json")
        assert [len(saved.strokes(i)) for i in range(2)] == [2, 2]
    finally:
        stop_server(proc)
    assert [e for e in console if "Failed to load resource" not in e[1]
            and "fonts.googleapis" not in e[2]] == []


def test_stack_frames_are_painted_and_stepped_through(page, tmp_path, console):
    frames = np.stack([scene(o, s) for o, s in [(0, 1), (90, 2), (90, 3)]])
    tifffile.imwrite(tmp_path / "stack.tif", frames, photometric="minisblack",
                     metadata={"axes": "TYX"})
    proc, url = start_server(str(tmp_path / "stack.tif"), "--project",
                             str(tmp_path / "segdash-project.json"),
                             log_path=tmp_path / "serve.log")
    try:
        open_app(page, url)
        entry(page, "stack.tif: 160x120, 3 frames, 0 stroke(s)").wait_for()
        paint_both(page)
        wait_status(page, "trained")
        handle = page.locator(".segdash-frame .noUi-handle")
        handle.focus()
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        wait_status(page, r"frame 3 of 3")
        wait_strokes(page, 0)
        paint_both(page)
        wait_status(page, r"of 2 image\(s\)/frame\(s\)")
        handle.focus()
        page.keyboard.press("ArrowLeft")
        wait_status(page, r"frame 2 of 3")
        assert wait_accuracy(page, 0.9) > 0.9  # frame 2 never painted
        entry(page, "stack.tif: 160x120, 3 frames, 4 stroke(s)").wait_for()
    finally:
        stop_server(proc)
    assert Project.load(tmp_path / "segdash-project.json").painted() == [(0, 0), (0, 2)]


def test_a_slide_in_the_folder_is_painted_tile_by_tile_beside_a_small_image(
        page, tmp_path, console):
    from segdash.io.write import write_pyramid_tiff

    h, w = 2304, 2048  # over the "large" limit: read tile by tile, never whole
    xx = np.arange(w)[None, :].repeat(h, 0)
    full = np.where(xx < w // 2, 70, 180).astype(np.uint8)
    full = full + np.random.default_rng(0).integers(0, 10, (h, w), dtype=np.uint8)

    def tile_of(level, y0, y1, x0, x1):
        f = 2 ** level
        return full[y0 * f:y1 * f:f, x0 * f:x1 * f:f, None]

    write_pyramid_tiff(tmp_path / "slide.ome.tif", (h, w, 1), np.uint8, tile_of, tile=256)
    Image.fromarray(scene(0, 1)).save(tmp_path / "scene0.png")
    proc, url = start_server(str(tmp_path), log_path=tmp_path / "serve.log")
    try:
        open_app(page, url)
        entry(page, f"slide.ome.tif: {w}x{h}, 0 stroke(s)").wait_for()
        switch_to(page, "slide.ome.tif")
        wait_status(page, r"read tile by tile, working at 1/2")
        choose_class(page, "class 1", 1)
        paint(page, [(200, 600), (800, 620), (800, 1400)], h)
        choose_class(page, "class 2", 2)
        paint(page, [(1200, 600), (1800, 620), (1800, 1400)], h)
        wait_status(page, r"trained random_forest on the painted pixels of 1 image\(s\)"
                          r"/frame\(s\) at 1/2 resolution")
        shown = wait_overlay_colours(page, 2)
        assert sorted(shown["colours"]) == sorted([ORANGE, BLUE])
        entry(page, f"slide.ome.tif: {w}x{h}, 2 stroke(s)").wait_for()
        # the small image is labelled by the slide's model (at the project's resolution)
        switch_to(page, "scene0.png")
        wait_overlay_colours(page, 1)
    finally:
        stop_server(proc)
    saved = Project.load(tmp_path / "segdash-project.json")
    assert saved.working_resolution() == 2 and len(saved.strokes(1)) == 2
    assert max(saved.strokes(1)[1].xs) == pytest.approx(1800, abs=40)  # full-res pixels
    assert [e for e in console if "Failed to load resource" not in e[1]
            and "fonts.googleapis" not in e[2]] == []
