"""Images uploaded into a project are decoded only in the sandboxed child, never in the
server process: when they are added, when another frame of a stack is shown, when the
session switches back to them, for thumbnails and for training across images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

import segdash.io.read as read_module
from segdash import Segmenter
from segdash.errors import ImageError
from segdash.project import UPLOADS, Project


def _scene(offset: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(0, 4, (48, 48)) + 60 + offset
    img[:, 24:] += 50
    return np.clip(img, 0, 255).astype(np.uint8)


def _session(tmp_path: Path, memory_limit: int | None = None) -> Segmenter:
    """A session on a project of one operator image (read in this process, allowed)."""
    own = tmp_path / "own.png"
    if not own.exists():
        Image.fromarray(_scene(0, 1)).save(own)
    seg = Segmenter()
    seg.extractor("basic").sigma_max = 2.0
    seg.memory_limit = memory_limit
    seg.open_project(Project.open(tmp_path / "segdash-project.json", [own]))
    return seg


@pytest.fixture
def no_decoding_of_uploads_here(monkeypatch):
    """Record every in-process decoder call on a file of the uploads folder (PNG/JPEG
    through read_image, TIFF through tifffile) and count sandboxed decodes."""
    forbidden: list[str] = []
    isolated: list[str] = []

    def watch(arg) -> None:
        if isinstance(arg, str | Path) and UPLOADS in Path(arg).parts:
            forbidden.append(str(arg))

    as_bytes = read_module._as_bytes
    monkeypatch.setattr(read_module, "_as_bytes",
                        lambda source, *a, **k: (watch(source), as_bytes(source, *a, **k))[1])
    real_tiff = tifffile.TiffFile

    class WatchedTiff(real_tiff):
        def __init__(self, arg, *a, **k):
            watch(arg)
            super().__init__(arg, *a, **k)

    monkeypatch.setattr(tifffile, "TiffFile", WatchedTiff)
    memmap = tifffile.memmap
    monkeypatch.setattr(tifffile, "memmap",
                        lambda arg, *a, **k: (watch(arg), memmap(arg, *a, **k))[1])
    read_module._open_tiff.cache_clear()
    run = read_module.run_isolated

    def counted(func, payload, *a, **k):
        isolated.append(func)
        return run(func, payload, *a, **k)

    monkeypatch.setattr(read_module, "run_isolated", counted)
    return forbidden, isolated


def test_an_image_uploaded_into_a_project_is_only_ever_decoded_in_the_sandbox(
        tmp_path, no_decoding_of_uploads_here):
    forbidden, isolated = no_decoding_of_uploads_here
    received = tmp_path / "received"  # a session's private folder
    received.mkdir()
    seg = _session(tmp_path)
    Image.fromarray(_scene(90, 2)).save(received / "a.part", format="PNG")
    stack = np.stack([_scene(10 * i, 3 + i) for i in range(3)])
    tifffile.imwrite(received / "b.part", stack, photometric="minisblack")

    seg.open_upload(received / "a.part", "scan.png", received)
    seg.open_upload(received / "b.part", "stack.tif", received)
    project = seg.project
    assert [img.frames for img in project.images] == [1, 1, 3]
    assert all(UPLOADS in project.path_of(i).parts for i in (1, 2))
    seg.select(2, frame=2)  # a later frame of the stack
    np.testing.assert_array_equal(seg.image, stack[2])
    seg.add_stroke([4, 20], [10, 10], 1, width=4)
    seg.add_stroke([28, 44], [10, 10], 2, width=4)
    seg.select(1)  # switching images: re-read, and trained with the stack's frame
    seg.add_stroke([4, 20], [30, 30], 1, width=4)
    seg.add_stroke([28, 44], [30, 30], 2, width=4)
    seg.select(2, frame=0)  # the painted frames are read again for training
    assert seg.model is not None and seg.segmentation is not None
    assert seg.thumbnail(1) and seg.thumbnail(2)
    seg.select(0)  # the operator's own image: read here, as before
    assert forbidden == [], f"uploads decoded in the server process: {forbidden}"
    assert len(isolated) >= 8, isolated  # 2 checks, 3 adds' reads, 4 selects, 2 thumbnails


def test_an_upload_too_large_for_the_sessions_budget_is_refused_when_read_again(tmp_path):
    """A 4000x4000 PNG of 16 kB (16 MB decoded; a slide, worked on tile by tile) added by a
    session without a budget: a session whose budget is 5 MB gets a message when it opens
    it, decoded in the child (in this process it would have been decoded whatever the
    budget), and stays where it was."""
    received = tmp_path / "received"
    received.mkdir()
    Image.fromarray(np.zeros((4000, 4000), np.uint8)).save(received / "x.part", format="PNG")
    assert (received / "x.part").stat().st_size < 100_000
    first = _session(tmp_path)
    first.open_upload(received / "x.part", "big.png", received)
    assert len(first.project.images) == 2
    second = _session(tmp_path, memory_limit=5_000_000)
    assert second.image_name == "own.png"
    with pytest.raises(ImageError, match=r"big\.png: decoding needs more memory than the "
                                         r"limit of 0\.005 GB"):
        second.select(1)
    assert second.image_name == "own.png" and second.current == 0


def test_a_large_upload_in_a_project_is_worked_on_tile_by_tile_from_the_sandboxs_pixels(
        tmp_path, no_decoding_of_uploads_here):
    forbidden, isolated = no_decoding_of_uploads_here
    received = tmp_path / "received"
    received.mkdir()
    seg = _session(tmp_path)
    slide = np.tile(_scene(40, 5), (44, 44))  # 2112x2112: over 2048², a slide
    Image.fromarray(slide).save(received / "s.part", format="PNG")
    seg.open_upload(received / "s.part", "slide.png", received)
    assert seg.project.is_tiled(1) and seg.current == 1
    np.testing.assert_array_equal(np.asarray(seg.project.pyramid(1).at(1)[:48, :48]),
                                  slide[:48, :48, None])
    assert seg.thumbnail(1)
    seg.select(0)
    assert forbidden == [], f"uploads decoded in the server process: {forbidden}"
    assert isolated


def test_image_bytes_given_to_the_python_api_are_decoded_only_in_the_sandbox(
        tmp_path, monkeypatch):
    """``Segmenter.open_file(bytes)`` and ``Project.add_upload(bytes)`` take the sandboxed
    path of a file received on disk: no decoder runs on the bytes in this process."""
    in_process: list[object] = []
    isolated: list[object] = []
    as_bytes = read_module._as_bytes
    monkeypatch.setattr(read_module, "_as_bytes", lambda source, *a, **k: (
        in_process.append(type(source)), as_bytes(source, *a, **k))[1])
    run = read_module.run_isolated
    monkeypatch.setattr(read_module, "run_isolated", lambda func, payload, *a, **k: (
        isolated.append(func), run(func, payload, *a, **k))[1])
    img = _scene(0, 3)
    buf = tmp_path / "scan.png"
    Image.fromarray(img).save(buf)
    data = buf.read_bytes()

    seg = Segmenter()
    seg.open_file(data, "scan.png")
    assert np.array_equal(seg.image, img) and seg.image_name == "scan.png"
    (tmp_path / "p").mkdir()
    project = Project.open(tmp_path / "p" / "segdash-project.json", [])
    entry = project.add_upload(data, "scan.png")
    assert np.array_equal(project.read(entry), img)
    assert in_process == [] and len(isolated) >= 3
    with pytest.raises(ImageError, match="notes.txt"):
        seg.open_file(b"hello, not an image", "notes.txt")
    assert np.array_equal(seg.image, img)  # the open image is kept
