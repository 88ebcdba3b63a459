"""segdash.apply and the tiling under it: tiled results equal whole-image results exactly."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import segdash
from segdash.errors import ImageError
from segdash.features.basic import BasicFeatures
from segdash.tiling import TILE_FEATURE_BYTES, apply, default_tile, min_tile, tile_chunks

from .conftest import scribbles, two_texture_image

da = pytest.importorskip("dask.array")


class _FloatFirst(BasicFeatures):
    """``basic`` without its own codes: the contract's default code_bytes (float32 + codes)."""

    code_bytes = 5



def _tiled(a: np.ndarray, reps: tuple[int, int], trim: tuple[int, int]) -> np.ndarray:
    """A larger test picture: ``a`` repeated, cropped so the size is not a tile multiple."""
    out = np.tile(a, reps + (1,) * (a.ndim - 2))
    return out[:out.shape[0] - trim[0], :out.shape[1] - trim[1]]


@pytest.fixture(scope="module")
def grey_model():
    img, _ = two_texture_image(128)
    return segdash.fit(img, scribbles(128), feature_params={"sigma_min": 1, "sigma_max": 4},
                       classifier_params={"n_estimators": 12})


@pytest.fixture(scope="module")
def tile(grey_model) -> int:
    """The smallest tile the test model allows: the most tile edges per image."""
    return min_tile(grey_model)


@pytest.fixture(scope="module")
def grey_image(tile):
    img, _ = two_texture_image(128, seed=5)
    h, w = 4 * tile - 9, 6 * tile - 13  # 4 x 6 tiles, sizes not a multiple of the tile
    return _tiled(img, (-(-h // 128), -(-w // 128)), (0, 0))[:h, :w]


@pytest.fixture(scope="module")
def rgb_model_and_image():
    img, _ = two_texture_image(96, seed=1)
    rgb = np.dstack([img, img[::-1], 255 - img]).astype(np.uint16) * 257
    lab = scribbles(96)
    lab[40:44, 10:20] = 3
    model = segdash.fit(rgb, lab, feature_params={"sigma_min": 1, "sigma_max": 4},
                        classifier_params={"n_estimators": 8})
    h, w = 3 * min_tile(model) - 3, 3 * min_tile(model) - 7  # 3 x 3 tiles, uint16 RGB
    return model, _tiled(rgb, (-(-h // 96), -(-w // 96)), (0, 0))[:h, :w]


def test_dask_reflect_boundary_is_numpy_symmetric_padding():
    # The exactness of tiles at the image border rests on this: Dask's "reflect" repeats
    # the edge pixel (a b c | c b a), which is numpy's "symmetric", the padding the feature
    # extractors use, and not numpy's "reflect" (a b c | b a).
    x = np.arange(17 * 19).reshape(17, 19)
    d = da.from_array(x, chunks=(6, 7))
    padded = da.overlap.overlap(d, depth={0: 5, 1: 5}, boundary={0: "reflect", 1: "reflect"})
    first = np.asarray(padded.blocks[0, 0])
    np.testing.assert_array_equal(first, np.pad(x, 5, mode="symmetric")[:6 + 10, :7 + 10])
    assert not np.array_equal(first, np.pad(x, 5, mode="reflect")[:16, :17])


def test_features_of_a_tile_with_its_halo_equal_the_whole_image_features(grey_model,
                                                                         grey_image, tile):
    # Pinpoints the feature extractor: if this fails, segdash/features no longer give a
    # tile (extended by `halo` pixels, mirror-padded at the border) the same features as
    # the whole image, and tiled prediction cannot be exact whatever the tiling does.
    stack, h = grey_model.stack, grey_model.halo
    full = stack(grey_image)
    padded = np.pad(grey_image, h, mode="symmetric")
    rows, cols = tile_chunks(grey_image.shape[0], tile), tile_chunks(grey_image.shape[1], tile)
    y0 = 0
    for th in rows:
        x0 = 0
        for tw in cols:
            ext = padded[y0:y0 + th + 2 * h, x0:x0 + tw + 2 * h]
            got = stack(ext)[h:h + th, h:h + tw]
            bad = np.argwhere(got != full[y0:y0 + th, x0:x0 + tw])
            assert bad.size == 0, (
                f"features of tile at ({y0}, {x0}) differ from the whole image's at "
                f"{len(bad)} values, first at tile pixel {bad[0][:2]} feature "
                f"{stack.feature_names(1)[bad[0][2]]!r}: the feature extractor is no longer "
                "exact under tiling (crop-equals-crop)"
            )
            x0 += tw
        y0 += th


def test_tiled_labels_and_probabilities_equal_the_whole_image_exactly(grey_model,
                                                                      grey_image, tile):
    rows = tile_chunks(grey_image.shape[0], tile)
    cols = tile_chunks(grey_image.shape[1], tile)
    assert len(rows) >= 4 and len(cols) >= 5  # a few tiles wide, tile edges inside
    proba = apply(grey_model, grey_image, tile=tile, proba=True)
    expected = grey_model.predict_proba(grey_image)
    assert proba.dtype == np.float32 and proba.shape == expected.shape
    np.testing.assert_array_equal(proba, expected)
    labels = apply(grey_model, grey_image, tile=tile)
    assert labels.dtype == grey_model.label_dtype
    np.testing.assert_array_equal(labels, grey_model.predict(grey_image))
    # the picture is not trivial: both classes are found, along tile edges too
    assert set(np.unique(labels)) == {1, 2}
    assert len(np.unique(labels[rows[0] - 2:rows[0] + 2])) == 2


def test_tiled_equals_whole_image_for_a_16_bit_rgb_image_with_three_classes(
        rgb_model_and_image):
    model, image = rgb_model_and_image
    got = apply(model, image, tile=min_tile(model), proba=True)
    np.testing.assert_array_equal(got, model.predict_proba(image))
    assert got.shape[2] == 3


def test_tiled_equals_whole_image_with_default_feature_settings():
    # The default extractor (sigma up to 16, the widest halo): image borders reflect deepest.
    img, _ = two_texture_image(128, seed=3)
    model = segdash.fit(img, scribbles(128), classifier_params={"n_estimators": 5})
    tile = min_tile(model)
    assert model.halo >= 64
    reps = (-(-2 * tile // 128) + 1, -(-3 * tile // 128) + 1)
    big = _tiled(img, reps, (5, 11))  # at least 2 x 3 tiles
    assert len(tile_chunks(big.shape[0], tile)) >= 2 and len(tile_chunks(big.shape[1], tile)) >= 3
    np.testing.assert_array_equal(apply(model, big, tile=tile, proba=True),
                                  model.predict_proba(big))


def test_an_image_thinner_than_the_halo_is_tiled_along_its_length_only(grey_model,
                                                                       grey_image, tile):
    strip = grey_image[:11]
    np.testing.assert_array_equal(apply(grey_model, strip, tile=tile, proba=True),
                                  grey_model.predict_proba(strip))


def test_dask_input_gives_a_lazy_dask_array_equal_to_the_numpy_result(grey_model,
                                                                      grey_image, tile):
    lazy = da.from_array(grey_image, chunks=(50, 70))  # chunks unlike the tiles
    out = segdash.apply(grey_model, lazy, tile=tile)
    assert isinstance(out, da.Array)
    assert out.shape == grey_image.shape and out.dtype == grey_model.label_dtype
    assert out.numblocks == (4, 6)
    np.testing.assert_array_equal(out.compute(), grey_model.predict(grey_image))


def test_numpy_input_gives_numpy_and_default_tile_works(grey_model, grey_image):
    out = segdash.apply(grey_model, grey_image)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, grey_model.predict(grey_image))


def test_tile_smaller_than_twice_the_halo_is_refused(grey_model, grey_image):
    smallest = min_tile(grey_model)
    assert smallest == 2 * grey_model.halo
    with pytest.raises(ValueError, match=f"at least {smallest} pixels"):
        apply(grey_model, grey_image, tile=smallest - 1)
    apply(grey_model, grey_image[:80, :80], tile=smallest)
    assert smallest >= 16


def test_another_channel_count_is_refused(grey_model, rgb_model_and_image):
    _, rgb = rgb_model_and_image
    with pytest.raises(ImageError, match="1 channel"):
        apply(grey_model, rgb)
    with pytest.raises(ImageError, match="1 channel"):
        apply(grey_model, da.from_array(rgb))


def test_tile_chunks_are_near_equal_and_cover_the_axis():
    assert tile_chunks(100, 64) == (50, 50)
    assert tile_chunks(129, 64) == (43, 43, 43)
    assert tile_chunks(64, 64) == (64,)
    assert tile_chunks(5, 64) == (5,)
    for size in range(1, 400, 7):
        chunks = tile_chunks(size, 40)
        assert sum(chunks) == size and max(chunks) <= 40
        assert len(chunks) == 1 or min(chunks) >= 20


def test_default_tile_keeps_the_features_of_a_tile_within_the_budget(grey_model,
                                                                    rgb_model_and_image):
    rgb_model, _ = rgb_model_and_image
    big_model = segdash.fit(np.zeros((8, 8, 3), np.uint8) + np.arange(8)[:, None, None],
                            np.repeat([[1], [2]], 4, axis=0).repeat(8, axis=1),
                            classifier_params={"n_estimators": 2})
    for model in (grey_model, rgb_model, big_model):
        tile = default_tile(model)
        n_feat = len(model.feature_names)
        assert tile % 256 == 0 and tile >= min_tile(model)
        per_pixel = n_feat * model.code_bytes
        assert (tile + 2 * model.halo) ** 2 * per_pixel <= TILE_FEATURE_BYTES
    # extractors that need float features before their codes get smaller tiles than
    # `basic`, which writes codes directly (its declared code_bytes hook)
    float_model = copy.copy(big_model)
    float_model.stack = copy.copy(big_model.stack)
    float_model.stack.extractors = [(n, _FloatFirst(**e.param.values()))
                                    for n, e in big_model.stack.extractors]
    assert big_model.code_bytes < float_model.code_bytes == 5
    assert default_tile(float_model) <= default_tile(big_model)


def test_single_threaded_model_shares_the_trees_and_leaves_the_model_unchanged():
    img, _ = two_texture_image(64)
    model = segdash.fit(img, scribbles(64), classifier_params={"n_estimators": 3})
    assert model.estimator.n_jobs == -1
    single = model.single_threaded()
    assert single.estimator.n_jobs == 1 and model.estimator.n_jobs == -1
    assert single.estimator.estimators_ is model.estimator.estimators_
    np.testing.assert_array_equal(single.predict(img), model.predict(img))


def test_import_segdash_does_not_import_dask_until_apply_is_used():
    import subprocess
    import sys

    code = ("import segdash, sys; assert 'dask' not in sys.modules; f = segdash.apply; "
            "assert callable(f) and f.__module__ == 'segdash.tiling'")
    subprocess.run([sys.executable, "-c", code], check=True)
