"""``segdash serve IMAGE``: the page opens the given image (here a 16-bit TIFF)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from .conftest import start_server, stop_server
from .pages import choose_class, open_app, paint, wait_overlay, wait_status


@pytest.fixture(scope="module")
def tiff_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_image")
    yy, xx = np.mgrid[:120, :200]
    image = np.where((yy - 60) ** 2 + (xx - 100) ** 2 < 35**2, 40000, 9000).astype(np.uint16)
    image += np.random.default_rng(0).integers(0, 3000, image.shape, dtype=np.uint16)
    path = folder / "disc16.tif"
    tifffile.imwrite(path, image)
    proc, url = start_server(str(path), log_path=folder / "serve.log")
    yield url
    stop_server(proc)


def test_serve_opens_the_image_given_on_the_command_line(page, tiff_server, console):
    open_app(page, tiff_server)
    page.get_by_text("disc16.tif: 200x120, 1 channel(s), uint16").wait_for()
    paint(page, [(5, 5), (195, 5), (195, 115)], 120)
    choose_class(page, "class 2", 2)
    paint(page, [(90, 60), (110, 60)], 120)
    wait_status(page, r"trained random_forest")
    assert wait_overlay(page, 120 * 200)["shape"] == [120, 200]
