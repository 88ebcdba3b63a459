"""Large and hostile uploads through Chromium against a real ``segdash serve``.

One server, started with a 0.25 GB upload limit, a 0.7 GB session memory budget and its own
upload folder: a 212 MB TIFF (larger than the ~190 MB a whole-file websocket upload
reached) streams to disk in chunks and opens; a file over the limit is refused in the
browser before any of it is sent, and the session keeps working; a decompression bomb
(a 0.7 MB PNG of 15000x15000 RGB pixels) exhausts only the sandboxed decoder, and a model
file that aborts LightGBM's parser only the sandboxed loader: the user gets a message each
time, and the server and a bystander session carry on; an empty file is said to be empty.
"""

from __future__ import annotations

import os
import struct
import time
import urllib.request
import zlib

import numpy as np
import psutil
import pytest
import tifffile

from .conftest import start_server, stop_server
from .pages import (
    H,
    W,
    error_text,
    open_app,
    paint_two_classes,
    upload,
    upload_input,
    wait_overlay,
    wait_status,
)

LIMIT_GB = 0.25


@pytest.fixture(scope="module")
def upload_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    received = folder / "received"
    received.mkdir()
    proc, url = start_server("--max-upload-gb", str(LIMIT_GB), "--upload-dir", str(received),
                             "--session-memory-gb", "0.7", log_path=folder / "serve.log")
    proc.received = received
    proc.folder = folder
    yield proc, url
    stop_server(proc)
    assert list(received.iterdir()) == [], "session upload folders were left behind"


def sent_bytes(page) -> list[int]:
    """Bytes the page sends over its websockets from now on (a running total in a list)."""
    total = [0]

    def on_socket(ws):
        ws.on("framesent", lambda payload: total.__setitem__(0, total[0] + len(payload)))
    page.on("websocket", on_socket)
    return total


def test_an_upload_larger_than_the_old_websocket_limit_streams_to_disk_and_opens(
        page, upload_server, console):
    proc, url = upload_server
    h, w = 8400, 8400
    image = np.empty((h, w, 3), np.uint8)
    image[:] = (np.arange(w, dtype=np.uint32) % 251).astype(np.uint8)[None, :, None]
    image[: h // 2, :, 1] = 200
    path = proc.folder / "big.tif"
    tifffile.imwrite(path, image)  # uncompressed: 212 MB
    size = path.stat().st_size
    assert 200e6 < size < LIMIT_GB * 1e9
    del image
    server = psutil.Process(proc.pid)
    open_app(page, url)
    rss_before = server.memory_info().rss
    t = time.monotonic()
    upload(page, ".tif", path)
    page.get_by_text(f"big.tif: {w}x{h}, 3 channel(s), uint8").wait_for(timeout=240_000)
    seconds = time.monotonic() - t
    rss_after = server.memory_info().rss
    print(f"212 MB TIFF upload opened in {seconds:.1f} s (load {os.getloadavg()[0]:.1f}); "
          f"server RSS {rss_before / 1e6:.0f} -> {rss_after / 1e6:.0f} MB")
    assert page.locator(".segdash-error").is_hidden()
    # what arrived was unlinked once decoded: the session folder holds nothing
    sessions = list(proc.received.iterdir())
    assert len(sessions) == 1 and list(sessions[0].iterdir()) == []


def test_a_file_over_the_limit_is_refused_before_it_is_sent_and_the_session_goes_on(
        page, upload_server, tmp_path, console):
    proc, url = upload_server
    open_app(page, url)
    sent = sent_bytes(page)
    huge = tmp_path / "huge.tif"
    with open(huge, "wb") as fh:  # sparse: 300 MB on paper, nothing on disk
        fh.truncate(300_000_000)
    page.wait_for_timeout(500)
    sent[0] = 0
    upload(page, ".tif", huge)
    status = page.locator(".segdash-upload-image .filepond--file-status")
    status.get_by_text("File is too large", exact=True).wait_for(timeout=30_000)
    status.get_by_text("Maximum file size is 250 MB", exact=True).wait_for(timeout=30_000)
    page.wait_for_timeout(2000)
    assert sent[0] < 100_000, f"{sent[0]} bytes were sent for a refused file"
    assert not any(p.suffix == ".part" for d in proc.received.iterdir() for p in d.iterdir())
    # the same widget takes the next file
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.full((60, 80), 7, np.uint16))
    upload_input(page, "image").set_input_files(str(small))
    page.get_by_text("small.tif: 80x60, 1 channel(s), uint16").wait_for(timeout=60_000)


def png_bomb(path, width: int, height: int) -> None:
    """An RGB PNG of black pixels written row by row (never held decoded here)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * width)  # filter byte 0, then black pixels
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        fh.write(chunk(b"IDAT", body))
        fh.write(chunk(b"IEND", b""))


def crashing_model_file() -> bytes:
    """A LightGBM model file whose booster string aborts LightGBM's parser (SIGABRT)."""
    pytest.importorskip("segdash_lightgbm")
    from tests.test_modelfile_hostile import _edit_schema, _lightgbm_model

    return _edit_schema(_lightgbm_model().to_bytes(),
                        lambda schema: schema.replace("num_leaves=", "num_leaves=7000000", 1))


def test_a_decompression_bomb_or_a_crashing_model_costs_only_its_child_and_a_bystander_goes_on(
        page, upload_server, tmp_path, console):
    proc, url = upload_server
    bystander = page.context.browser.new_context(viewport={"width": 1400, "height": 1000})
    other = bystander.new_page()
    try:
        open_app(other, url)
        open_app(page, url)
        bomb = tmp_path / "bomb.png"
        png_bomb(bomb, 15000, 15000)  # 675 MB of pixels, 0.9 GB as Pillow holds them
        assert bomb.stat().st_size < 1_000_000
        upload(page, ".png", bomb)
        message = error_text(page, r"bomb\.png", timeout=120_000)
        assert "decoding needs more memory than the limit of 0.7 GB" in message
        # a model file whose LightGBM booster aborts its loader (SIGABRT in-process)
        upload(page, ".skops", {"name": "corrupt.skops", "mimeType": "application/octet-stream",
                                "buffer": crashing_model_file()})
        assert "aborted (SIGABRT" in error_text(page, r"SIGABRT", timeout=120_000)
        assert proc.poll() is None  # the server is alive...
        probe = urllib.request.Request(url + "static/js/bokeh.min.js", method="HEAD")
        with urllib.request.urlopen(probe, timeout=10) as response:
            assert response.status == 200
        # ...and so is every session: the bystander paints and gets its overlay
        paint_two_classes(other)
        wait_status(other, r"trained random_forest", timeout=120_000)
        assert wait_overlay(other, H * W, timeout=60_000)["shape"] == [H, W]
        # the uploader's own session carries on too
        small = tmp_path / "after.png"
        png_bomb(small, 40, 30)
        upload(page, ".png", small)
        page.get_by_text("after.png: 40x30, 3 channel(s), uint8").wait_for(timeout=60_000)
        # an empty file is said to be empty (it was once silently ignored)
        upload(page, ".png", {"name": "zero.png", "mimeType": "image/png", "buffer": b""})
        assert "zero.png: the file is empty (0 bytes)" in error_text(page, r"zero\.png")
    finally:
        bystander.close()
