"""Large uploads through Chromium: streamed to disk in chunks, limited by ``--max-upload-gb``.

One server, started with a 0.25 GB upload limit and its own upload folder: a 212 MB TIFF
(larger than the ~190 MB a whole-file websocket upload reached) opens; a file over the
limit is refused in the browser before any of it is sent, and the session keeps working.
"""

from __future__ import annotations

import os
import time

import numpy as np
import psutil
import pytest
import tifffile

from .conftest import start_server, stop_server
from .pages import open_app, upload, upload_input

LIMIT_GB = 0.25


@pytest.fixture(scope="module")
def upload_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    received = folder / "received"
    received.mkdir()
    proc, url = start_server("--max-upload-gb", str(LIMIT_GB), "--upload-dir", str(received),
                             log_path=folder / "serve.log")
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
