"""Large images: lazy pyramids, tiles computed on demand, the session's tiled path."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import tifffile

import segdash
from segdash.errors import ImageError, ModelFileError
from segdash.io.pyramid import (
    DiskCachedPlane,
    area_average,
    default_downsample,
    open_large,
    open_pyramid,
    pyramid_of,
)
from segdash.io.write import write_pyramid_tiff
from segdash.model import model_from_bytes
from segdash.ondemand import ByteCache, TiledImage, TileGrid, read_block, scale_strokes
from segdash.segmenter import Segmenter, upsample_labels
from segdash.strokes import Stroke


def _two_textures(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    left = xx < w // 2
    img = np.where(left, 180, 60 + 120 * ((xx // 3) % 2)).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 20, (h, w), dtype=np.uint8)
    return np.stack([img + noise, img, 255 - img], axis=2)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return _two_textures(300, 420)


@pytest.fixture(scope="module")
def model(image):
    labels = np.zeros(image.shape[:2], np.uint8)
    labels[20:30, 20:180] = 1
    labels[250:260, 240:400] = 2
    return segdash.fit(image, labels, feature_params={"sigma_max": 4}).single_threaded()


def test_tiles_predicted_on_demand_equal_the_whole_image_prediction(image, model):
    whole = model.predict(image)
    tiled = TiledImage(pyramid_of(image).at(1), ByteCache(2**30), tile=128)
    out = np.zeros_like(whole)
    gy, gx = tiled.grid.shape
    assert gy * gx > 4  # border tiles and inner tiles
    for ty in range(gy):
        for tx in range(gx):
            y0, y1, x0, x1 = tiled.grid.bounds(ty, tx)
            out[y0:y1, x0:x1] = tiled.predict((ty, tx), model, "m")[0]
    np.testing.assert_array_equal(out, whole)


def test_read_block_mirrors_at_the_border_like_numpy_symmetric(image):
    block = read_block(image, 0, 10, 410, 420, 5)
    expected = np.pad(image, ((5, 5), (5, 5), (0, 0)), mode="symmetric")[0:20, 410:430]
    np.testing.assert_array_equal(block, expected)


def test_byte_cache_never_holds_more_than_its_limit():
    cache = ByteCache(1000)
    for i in range(50):
        cache.put(i, np.zeros(300, np.uint8), 300)
        assert cache.nbytes <= 1000
    assert cache.get(49) is not None and cache.get(0) is None
    cache.put("huge", None, 5000)
    assert cache.get("huge") is None


def test_tiles_in_a_region_come_nearest_to_its_centre_first():
    grid = TileGrid(1000, 1000, 256)
    tiles = grid.tiles_in(300, 700, 300, 700)
    assert set(tiles) == {(ty, tx) for ty in (1, 2) for tx in (1, 2)}
    far = grid.tiles_in(0, 1000, 0, 1000)
    assert far[0] in {(1, 1), (1, 2), (2, 1), (2, 2)} and len(far) == 16


def test_area_average_is_the_mean_of_each_block_partial_ones_included():
    arr = np.arange(5 * 7, dtype=np.uint16).reshape(5, 7, 1) * 10
    out = area_average(arr, 2)
    assert out.shape == (3, 4, 1)
    assert out[0, 0, 0] == round(np.mean(arr[:2, :2]))
    assert out[2, 3, 0] == arr[4, 6, 0]  # a one-pixel corner block
    assert out[1, 3, 0] == round(np.mean(arr[2:4, 6:7]))


def test_pyramidal_ome_tiff_opens_lazily_with_its_levels(tmp_path):
    full = _two_textures(1100, 900)

    def tile_of(level, y0, y1, x0, x1):
        f = 2 ** level
        return full[y0 * f:y1 * f:f, x0 * f:x1 * f:f]

    path = tmp_path / "slide.ome.tif"
    n = write_pyramid_tiff(path, full.shape, np.uint8, tile_of, tile=256)
    pyr = open_pyramid(path)
    assert pyr.file_levels == n == 4
    assert [lv.shape for lv in pyr.levels][:2] == [(1100, 900, 3), (550, 450, 3)]
    np.testing.assert_array_equal(pyr.region(0, slice(700, 800), slice(10, 300)),
                                  full[700:800, 10:300])
    np.testing.assert_array_equal(pyr.region(1, slice(0, 50), slice(0, 60)),
                                  full[0:100:2, 0:120:2])
    # a working resolution the file has is its level; another is averaged from level 0
    assert pyr.at(2) is pyr.levels[1]
    np.testing.assert_array_equal(np.asarray(pyr.at(3)[0:10, 0:10]),
                                  area_average(full[:30, :30], 3))
    assert pyr.level_for(4.5) == 2 and pyr.level_for(0.3) == 0


def test_a_plain_large_tiff_gets_its_levels_built_once_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDASH_CACHE_DIR", str(tmp_path / "cache"))
    full = _two_textures(1200, 1000)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, full, photometric="rgb")
    pyr = open_large(path, large_pixels=1000 * 1000)
    assert pyr is not None and pyr.file_levels == 1 and len(pyr.levels) == 4
    assert isinstance(pyr.levels[1], DiskCachedPlane)
    level2 = pyr.region(2, slice(0, 300), slice(0, 250))
    np.testing.assert_array_equal(level2, area_average(area_average(full, 2), 2))
    chunks = list((tmp_path / "cache").rglob("*.npy"))
    assert chunks  # kept for the next view
    again = open_pyramid(path).region(2, slice(0, 300), slice(0, 250))
    np.testing.assert_array_equal(again, level2)
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, full[:100, :100], photometric="rgb")
    assert open_large(small) is None  # read whole, as before


def test_ome_zarr_opens_from_its_multiscales_metadata(tmp_path):
    import zarr

    full = _two_textures(200, 160)
    root = tmp_path / "img.ome.zarr"
    group = zarr.open_group(str(root), mode="w", zarr_format=2)
    cyx = np.moveaxis(full, 2, 0)
    group.create_array("0", data=cyx, chunks=(3, 64, 64))
    group.create_array("1", data=cyx[:, ::2, ::2].copy(), chunks=(3, 64, 64))
    group.attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": "c", "type": "channel"},
                                   {"name": "y", "type": "space"},
                                   {"name": "x", "type": "space"}],
        "datasets": [{"path": "0"}, {"path": "1"}]}]
    pyr = open_pyramid(root)
    assert pyr.shape == (200, 160, 3) and pyr.file_levels == 2
    np.testing.assert_array_equal(pyr.region(0, slice(10, 40), slice(5, 50)), full[10:40, 5:50])
    bad = tmp_path / "bad.ome.zarr"
    bad.mkdir()
    (bad / ".zattrs").write_text(json.dumps({"multiscales": [{"datasets": [
        {"path": "../../etc"}]}]}))
    with pytest.raises(ImageError, match="not inside"):
        open_pyramid(bad)


def test_working_resolution_defaults_to_full_for_ordinary_images_coarser_for_slides():
    assert default_downsample((1024, 1024)) == 1
    assert default_downsample((2048, 1500)) == 1
    assert default_downsample((16384, 16384)) == 8
    assert default_downsample((100000, 60000)) == 64


def test_strokes_scale_to_the_working_resolution_pixel_centres():
    s = scale_strokes([Stroke((3.5, 7.5), (0.0, 8.0), 1, 8.0)], 4)[0]
    assert s.xs == (0.5, 1.5) and s.ys == (-0.375, 1.625) and s.width == 2.0
    labels = np.zeros((3, 3), np.uint8)
    labels[1, 2] = 5
    up = upsample_labels(labels, 4, (10, 11))
    assert up.shape == (10, 11) and up[4:8, 8:11].min() == 5 and up[3, 8] == 0


@pytest.fixture
def large_session(image):
    seg = Segmenter()
    seg.cache_limit = 64 * 2**20
    seg.open_pyramid(pyramid_of(np.tile(image, (4, 4, 1)), "big"), downsample=1)
    seg.max_view_tiles = 100
    return seg


def test_training_on_a_large_image_computes_only_the_tiles_under_the_strokes(large_session):
    seg = large_session
    seg.extractor("basic").sigma_max = 4
    assert seg.labels is None and seg.image is None and seg.image_shape == (1200, 1680, 3)
    seg.set_view(0, 300, 0, 400)
    seg.add_stroke([20, 180], [25, 25], 1, 5)
    seg.add_stroke([240, 400], [255, 255], 2, 5)
    assert "trained random_forest" in seg.status, seg.status
    tiled = seg._tiled
    assert tiled.grid.shape == (3, 4)
    assert tiled.computed == 1  # both strokes and the view lie in the first tile
    view = seg.view_result(0, 300, 0, 400, 300, 400)
    whole = seg.model.predict(seg.source.levels[0][:300, :400])
    # the first tile is 400 x 420: its prediction equals the model's on that region
    # wherever the region's own border mirroring does not reach (the halo)
    h = seg.model.halo
    np.testing.assert_array_equal(view[:300 - h, :400 - h], whole[:300 - h, :400 - h])
    # panning elsewhere fills there, superseding nothing that is still needed
    seg.set_view(800, 1100, 1200, 1600)
    assert tiled.computed > 1
    far = seg.view_result(800, 1100, 1200, 1600, 30, 40)
    assert (far > 0).all()
    name, data = seg.result_file("labels")
    assert name.endswith("_labels.png")
    assert seg.model.downsample == 1


def test_a_new_stroke_stops_filling_the_view_of_the_previous_model(large_session):
    seg = large_session
    seg.extractor("basic").sigma_max = 4
    jobs = []
    seg.run_view = jobs.append  # the view is filled later, as by the dashboard's worker
    seg.add_stroke([20, 180], [25, 25], 1, 5)
    seg.add_stroke([240, 400], [255, 255], 2, 5)
    first = seg.model
    seg.set_view(0, 1200, 0, 1680)
    seg.add_stroke([30, 170], [40, 40], 1, 5)  # a new model before the fill ran
    assert seg.model is not first
    assert jobs and jobs[0]() == 0  # the old model's fill stops at once


def test_a_model_trained_at_a_working_resolution_records_it(image):
    seg = Segmenter()
    seg.extractor("basic").sigma_max = 4
    seg.open_pyramid(pyramid_of(np.tile(image, (2, 2, 1)), "big"), downsample=2)
    seg.add_stroke([20, 180], [25, 25], 1, 8)
    seg.add_stroke([240, 400], [255, 255], 2, 8)
    assert seg.model.downsample == 2
    again = model_from_bytes(seg.result_file("model")[1])
    assert again.downsample == 2
    name, data = seg.result_file("labels")
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(data)).size == (840, 600)  # the full image's size


def test_a_model_file_with_a_bad_downsample_is_refused(model):
    from segdash import modelfile

    doc = model.document()
    for bad in (0, -2, 4096, 2.5, True, "8"):
        doc["downsample"] = bad
        with pytest.raises(ModelFileError, match="downsample"):
            model_from_bytes(modelfile.dumps(doc))


def test_apply_at_the_models_working_resolution_writes_full_size_labels_equal_to_the_session(
        tmp_path, image):
    from PIL import Image

    from segdash.cli import main

    big = np.tile(image, (2, 2, 1))  # 600 x 840
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, big, photometric="rgb", tile=(256, 256))
    seg = Segmenter()
    seg.extractor("basic").sigma_max = 4
    seg.open_pyramid(open_pyramid(path), downsample=2)
    seg.add_stroke([20, 180], [25, 25], 1, 8)
    seg.add_stroke([240, 400], [255, 255], 2, 8)
    model_path = tmp_path / "m.skops"
    model_path.write_bytes(seg.result_file("model")[1])
    session = np.asarray(Image.open(io.BytesIO(seg.result_file("labels")[1])))
    assert main(["apply", str(model_path), str(path), "--out", str(tmp_path / "out"),
                 "--quiet", "--workers", "1"]) == 0
    applied = np.asarray(Image.open(tmp_path / "out" / "big_labels.png"))
    assert applied.shape == (600, 840)
    np.testing.assert_array_equal(applied, session)
