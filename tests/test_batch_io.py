"""Inputs and outputs of segdash apply: lazy TIFF planes, input expansion, streaming writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from segdash.errors import ImageError
from segdash.io.sources import expand_inputs, open_source
from segdash.io.write import PngStreamWriter, TiffStreamWriter

pytest.importorskip("dask.array")
RNG = np.random.default_rng(7)


def _bands(a: np.ndarray, heights: list[int]):
    y = 0
    for h in heights:
        yield a[y:y + h]
        y += h
    assert y == a.shape[0]


@pytest.mark.parametrize("channels", [1, 3])
def test_png_stream_writer_writes_what_pillow_reads_back(tmp_path, channels):
    shape = (301, 257) if channels == 1 else (301, 257, 3)
    a = RNG.integers(0, 256, shape, dtype=np.uint8)
    w = PngStreamWriter(tmp_path / "x.png", 257, 301, channels)
    for band in _bands(a, [100, 1, 150, 50]):
        w.write(band)
    w.close()
    with Image.open(tmp_path / "x.png") as im:
        assert im.mode == ("L" if channels == 1 else "RGB")
        np.testing.assert_array_equal(np.asarray(im), a)


def test_png_stream_writer_refuses_to_close_an_incomplete_image(tmp_path):
    w = PngStreamWriter(tmp_path / "x.png", 10, 10, 1)
    w.write(np.zeros((4, 10), np.uint8))
    with pytest.raises(RuntimeError, match="4 rows of 10"):
        w.close()
    w.abort()


@pytest.mark.parametrize(("shape", "stack", "dtype"), [
    ((300, 530), False, np.uint8),            # bands not aligned with 256-pixel TIFF tiles
    ((3, 130, 270), True, np.uint16),         # a stack stays a stack
    ((290, 260, 3), False, np.float32),       # probabilities
    ((2, 70, 90, 3), True, np.float32),
])
def test_tiff_stream_writer_round_trips_bands_of_any_height(tmp_path, shape, stack, dtype):
    a = (RNG.random(shape) * 1000).astype(dtype)
    w = TiffStreamWriter(tmp_path / "x.tif", shape, dtype, stack)
    planes = a if stack else a[None]
    for plane in planes:
        for band in _bands(plane, [97, 200, plane.shape[0] - 297] if plane.shape[0] > 297
                           else [plane.shape[0] // 2, plane.shape[0] - plane.shape[0] // 2]):
            w.write(band)
    w.close()
    back = tifffile.imread(tmp_path / "x.tif")
    assert back.shape == a.shape and back.dtype == a.dtype
    np.testing.assert_array_equal(back, a)
    with tifffile.TiffFile(tmp_path / "x.tif") as tif:
        assert tif.pages[0].is_tiled and tif.pages[0].compression == 8  # zlib


def test_tiff_stream_writer_abort_stops_its_thread(tmp_path):
    w = TiffStreamWriter(tmp_path / "x.tif", (600, 600), np.uint8, False)
    w.write(np.zeros((10, 600), np.uint8))
    w.abort()
    assert not w._thread.is_alive()


def _lazy_equal(path: Path, expected_planes: np.ndarray, region=(slice(5, 61), slice(3, 90))):
    src = open_source(path)
    assert src.frames == len(expected_planes)
    for i, exp in enumerate(expected_planes):
        exp3 = exp if exp.ndim == 3 else exp[:, :, None]
        plane = src.plane(i, ((40, exp.shape[0] - 40), (50, exp.shape[1] - 50), (exp3.shape[2],)))
        assert plane.shape == exp3.shape and plane.dtype == exp3.dtype.newbyteorder("=")
        np.testing.assert_array_equal(plane.compute(), exp3)
        np.testing.assert_array_equal(plane[region].compute(), exp3[region])
    return src


def test_tiled_compressed_tiff_is_read_region_by_region(tmp_path):
    a = RNG.integers(0, 65535, (100, 140, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", a, tile=(32, 32), compression="zlib")
    src = _lazy_equal(tmp_path / "t.tif", a[None])
    assert src.is_lazy and not src.is_stack


def test_uncompressed_big_endian_and_planar_tiffs_are_read(tmp_path):
    a = RNG.random((90, 120)).astype(">f4")
    tifffile.imwrite(tmp_path / "be.tif", a)
    _lazy_equal(tmp_path / "be.tif", a[None])
    rgb = RNG.integers(0, 255, (3, 80, 100), dtype=np.uint8)  # planar RGB ("SYX")
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate")
    _lazy_equal(tmp_path / "planar.tif", np.moveaxis(rgb, 0, -1)[None])


def test_every_page_and_frame_of_stacks_and_time_series_is_a_plane(tmp_path):
    pages = RNG.integers(0, 255, (4, 70, 95), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="minisblack")
    src = _lazy_equal(tmp_path / "pages.tif", pages)
    assert src.is_stack
    series = RNG.integers(0, 4000, (3, 2, 66, 93), dtype=np.uint16)  # T, C, Y, X
    tifffile.imwrite(tmp_path / "tc.tif", series, imagej=True, metadata={"axes": "TCYX"})
    _lazy_equal(tmp_path / "tc.tif", np.moveaxis(series, 1, -1))


def test_png_and_jpeg_are_read_like_the_dashboard_reads_them(tmp_path):
    a = RNG.integers(0, 255, (60, 70, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    src = open_source(tmp_path / "a.png")
    assert not src.is_lazy and src.shape == (60, 70, 3)
    np.testing.assert_array_equal(src.plane(0, ((60,), (35, 35), (3,))).compute(), a)
    Image.fromarray(a).save(tmp_path / "a.jpg")
    assert open_source(tmp_path / "a.jpg").shape == (60, 70, 3)


def test_planning_keeps_no_pixels_of_png_inputs_and_notices_a_changed_file(tmp_path):
    Image.fromarray(RNG.integers(0, 255, (60, 70), dtype=np.uint8)).save(tmp_path / "a.png")
    src = open_source(tmp_path / "a.png")
    assert src.shape == (60, 70, 1)
    assert not any(isinstance(v, np.ndarray) for v in vars(src).values())
    Image.fromarray(RNG.integers(0, 255, (61, 70), dtype=np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ImageError, match="changed"):
        src.plane(0, ((60,), (70,), (1,)))


@pytest.mark.parametrize(("content", "match"), [
    (b"hello, not an image", "not a PNG, JPEG or TIFF"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "cannot decode"),
    (b"II*\x00" + b"\xff" * 20, "cannot decode"),
])
def test_unreadable_inputs_raise_image_error_naming_the_file(tmp_path, content, match):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=match) as info:
        open_source(path)
    assert "broken.png" in str(info.value)


def test_inputs_expand_files_folders_and_globs_once_each(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.png", "a.tif", "notes.txt", "c.JPG"):
        (tmp_path / "d" / name).write_bytes(b"x")
    (tmp_path / "e.tiff").write_bytes(b"x")
    files, errors = expand_inputs([
        str(tmp_path / "d"), str(tmp_path / "*.tiff"), str(tmp_path / "d" / "a.tif"),
        str(tmp_path / "d" / "notes.txt"), str(tmp_path / "missing.png"),
        str(tmp_path / "nothing*.png"),
    ])
    assert [f.name for f in files] == ["a.tif", "b.png", "c.JPG", "e.tiff", "notes.txt"]
    assert [e[0] for e in errors] == [str(tmp_path / "missing.png"),
                                      str(tmp_path / "nothing*.png")]
    assert "no such file" in errors[0][1] and "matches" in errors[1][1]


def test_a_compressed_tiff_region_read_again_is_decoded_once_and_a_rewritten_file_anew(
        tmp_path, monkeypatch):
    import os

    from segdash.io import read

    a = RNG.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, a, tile=(32, 32), compression="zlib", photometric="rgb")
    decodes = []
    real = read._open_tiff

    def counting(*args, **kwargs):
        decodes.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(read, "_open_tiff", counting)
    plane = open_source(path).plane(0, ((48, 48), (48, 48), (3,)))
    region = (slice(10, 90), slice(5, 70))
    for _ in range(2):  # the halos of neighbouring tiles read the same chunks again
        np.testing.assert_array_equal(plane[region].compute(scheduler="sync"), a[region])
    assert len(decodes) == 4  # four chunks, each decoded once
    # the dashboard's planes (slide pyramids) keep nothing: a region is decoded again
    from segdash.io.pyramid import _stamp

    with tifffile.TiffFile(path) as tif:
        layout = read.TiffLayout.of(tif.series[0].axes, tif.series[0].shape, "t.tif")
    dashboard = read.TiffPlane(str(path.resolve()), 0, layout, layout.frame_index(0),
                               np.dtype(np.uint8), _stamp(path))
    for _ in range(2):
        np.testing.assert_array_equal(dashboard[region], a[region])
    assert len(decodes) == 6
    b = 255 - a
    tifffile.imwrite(path, b, tile=(32, 32), compression="zlib", photometric="rgb")
    os.utime(path, ns=(1, 1))  # a new stamp even within the file system's time resolution
    again = open_source(path).plane(0, ((48, 48), (48, 48), (3,)))
    np.testing.assert_array_equal(again[region].compute(scheduler="sync"), b[region])
