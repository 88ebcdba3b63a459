import numpy as np
import pytest
from scipy import ndimage as ndi

from segdash.contract import image_channels, prepare_image
from segdash.errors import ImageError
from segdash.features.basic import BasicFeatures, sigmas
from segdash.stack import FeatureStack


def test_default_scales_are_powers_of_two_from_half_to_sixteen():
    np.testing.assert_allclose(BasicFeatures().sigmas, [0.5, 1, 2, 4, 8, 16])
    np.testing.assert_allclose(sigmas(1, 16, num_sigma=3), [1, 4, 16])


def test_grey_image_gives_float32_features_with_names():
    img = np.random.default_rng(0).integers(0, 255, (30, 40), dtype=np.uint8)
    ext = BasicFeatures()
    out = ext(img)
    names = ext.feature_names(1)
    # 6 scales x 4 of skimage's families, and 5 scales (up to texture_sigma_max 8) x 6
    # texture features
    assert out.shape == (30, 40, 6 * 4 + 5 * 5) and out.dtype == np.float32
    assert len(names) == out.shape[2]
    assert names[:9] == ["ch0 sigma=0.5 intensity", "ch0 sigma=0.5 edges",
                         "ch0 sigma=0.5 texture max", "ch0 sigma=0.5 texture min",
                         "ch0 sigma=0.5 laplacian", "ch0 sigma=0.5 deviation",
                         "ch0 sigma=0.5 structure max", "ch0 sigma=0.5 structure min",
                         "ch0 sigma=0.5 coherence"]
    assert "ch0 sigma=2 edges" in names and "ch0 sigma=8 coherence" in names
    assert "ch0 sigma=16 coherence" not in names and "ch0 sigma=16 texture min" in names


def test_rgb_features_are_per_channel(rgb_image):
    ext = BasicFeatures(sigma_min=1, sigma_max=4, texture_channels="each")
    out = ext(rgb_image)
    assert out.shape == (40, 48, 3 * 3 * 9)
    names = ext.feature_names(3)
    assert names[3 * 9].startswith("ch1 sigma=1 ")
    # channel 1's first feature is the smoothed green channel alone
    green_only = ext(rgb_image[:, :, 1])
    np.testing.assert_array_equal(out[:, :, 27:54], green_only)


def test_texture_families_of_a_colour_image_are_computed_once_on_the_channel_mean(rgb_image):
    ext = BasicFeatures(sigma_min=1, sigma_max=4)
    out = ext(rgb_image)
    names = ext.feature_names(3)
    assert len(names) == out.shape[2] == 3 * 3 * 4 + 3 * 5
    assert names[36:41] == ["mean sigma=1 laplacian", "mean sigma=1 deviation",
                            "mean sigma=1 structure max", "mean sigma=1 structure min",
                            "mean sigma=1 coherence"]
    mean = rgb_image.astype(np.float32) / 255
    mean = (mean[:, :, 0] + mean[:, :, 1] + mean[:, :, 2]) * np.float32(1 / 3)
    grey = BasicFeatures(sigma_min=1, sigma_max=4, intensity=False, edges=False,
                         texture=False)(mean)
    np.testing.assert_allclose(out[:, :, 36:], grey, atol=1e-6)
    # channel by channel, only skimage's families are left
    assert all(n.split()[-1] in ("intensity", "edges", "max", "min") for n in names[:36])


@pytest.mark.parametrize("family", ["intensity", "edges", "texture", "laplacian",
                                    "deviation", "structure"])
def test_each_family_can_be_switched_on_alone(rgb_image, family):
    families = ["intensity", "edges", "texture", "laplacian", "deviation", "structure"]
    ext = BasicFeatures(sigma_min=1, sigma_max=2, **{f: f == family for f in families})
    out = ext(rgb_image)
    names = ext.feature_names(3)
    assert out.shape[2] == len(names) > 0
    expected = {"intensity": ["intensity"], "edges": ["edges"],
                "texture": ["texture max", "texture min"], "laplacian": ["laplacian"],
                "deviation": ["deviation"],
                "structure": ["structure max", "structure min", "coherence"]}[family]
    assert {n.split(" ", 2)[2] for n in names} == set(expected)
    q = ext.quantizer(np.zeros(3), np.ones(3))
    np.testing.assert_array_equal(ext.compute_codes(prepare_image(rgb_image), q),
                                  q(out))


def test_families_can_be_switched_off(rgb_image):
    ext = BasicFeatures(intensity=False, texture=False, laplacian=False, deviation=False,
                        structure=False, sigma_min=1, sigma_max=2)
    assert ext(rgb_image).shape[2] == 3 * 2 * 1
    assert all(n.endswith("edges") for n in ext.feature_names(3))


def test_texture_sigma_max_limits_the_scales_of_the_texture_families():
    ext = BasicFeatures(sigma_min=1, sigma_max=16, texture_sigma_max=2)
    names = ext.feature_names(1)
    assert [n for n in names if n.endswith("deviation")] == ["ch0 sigma=1 deviation",
                                                             "ch0 sigma=2 deviation"]
    assert "ch0 sigma=16 texture max" in names
    none = BasicFeatures(sigma_min=1, sigma_max=4, texture_sigma_max=0.5)
    assert len(none.feature_names(3)) == 3 * 3 * 4


def test_deviation_is_the_gaussian_weighted_local_standard_deviation():
    img = np.random.default_rng(1).random((60, 70)).astype(np.float32)
    ext = BasicFeatures(sigma_min=2, sigma_max=2, intensity=False, edges=False,
                        texture=False, laplacian=False, structure=False)
    x = img.astype(np.float64)
    var = (ndi.gaussian_filter(x * x, 2, mode="reflect")
           - ndi.gaussian_filter(x, 2, mode="reflect") ** 2)
    np.testing.assert_allclose(ext(img)[:, :, 0], np.sqrt(var), atol=1e-4)


def test_laplacian_is_the_trace_of_the_hessian():
    img = np.random.default_rng(2).random((50, 50)).astype(np.float32)
    ext = BasicFeatures(sigma_min=2, sigma_max=2, intensity=False, edges=False,
                        deviation=False, structure=False)
    out = ext(img)
    np.testing.assert_allclose(out[:, :, 2], out[:, :, 0] + out[:, :, 1], atol=1e-6)


def test_structure_tensor_sees_stripes_as_coherent_and_noise_as_not():
    yy, xx = np.mgrid[:80, :80]
    stripes = (0.5 + 0.4 * np.sin(xx * 2 * np.pi / 6)).astype(np.float32)
    noise = np.random.default_rng(3).random((80, 80)).astype(np.float32)
    ext = BasicFeatures(sigma_min=4, sigma_max=4, intensity=False, edges=False,
                        texture=False, laplacian=False, deviation=False)
    s_max, s_min, coh = np.moveaxis(ext(stripes)[30:50, 30:50], 2, 0)
    assert (coh > 0.95).all() and (s_min < 0.1 * s_max).all()
    # vertical stripes: all the gradient is along x
    gx = np.gradient(stripes, axis=1)
    assert abs(np.median(s_max) - np.sqrt(np.mean(gx[30:50, 30:50] ** 2))) < 0.05
    n_coh = ext(noise)[30:50, 30:50, 2]
    assert np.median(n_coh) < 0.5
    assert (ext(np.full((40, 40), 0.3, np.float32)) == 0).all()  # flat: no orientation


def test_intensity_matches_gaussian_filter():
    img = np.random.default_rng(0).random((50, 60)).astype(np.float32)
    out = BasicFeatures(sigma_min=2, sigma_max=2, edges=False, texture=False)(img)
    expected = ndi.gaussian_filter(img, 2, mode="reflect")
    np.testing.assert_allclose(out[:, :, 0], expected, atol=1e-5)


def test_texture_eigenvalues_are_ordered_and_detect_a_ridge():
    img = np.zeros((41, 41), np.float32)
    img[:, 20] = 1.0  # a bright vertical line: strongly negative curvature across it
    out = BasicFeatures(sigma_min=2, sigma_max=2, intensity=False, edges=False)(img)
    tmax, tmin = out[:, :, 0], out[:, :, 1]
    assert (tmax >= tmin).all()
    assert tmin[20, 20] < -0.01 and abs(tmax[20, 20]) < abs(tmin[20, 20]) / 10


def test_texture_families_of_a_crop_equal_the_crop_of_features_exactly():
    rng = np.random.default_rng(8)
    img = rng.random((200, 190, 2)).astype(np.float32)
    for ext in (BasicFeatures(sigma_max=8, intensity=False, edges=False, texture=False),
                BasicFeatures(sigma_max=4, texture_channels="each")):
        h = ext.halo
        full = ext(img)
        crop = ext(img[5:196, 2:187])
        np.testing.assert_array_equal(crop[h:-h, h:-h], full[5 + h:196 - h, 2 + h:187 - h])


def test_halo_covers_the_gaussian_and_derivatives():
    # sigma <= 2: direct Gaussians cut at 4 sigma, plus 2 for the Hessian's differences
    assert BasicFeatures(sigma_max=2).halo == 10
    # larger scales are a cascade of dilated kernels: 8 (sigma 2) + 7 taps at 2, 4, 8 px
    assert BasicFeatures().halo == 8 + 7 * (2 + 4 + 8) + 2
    assert BasicFeatures().halo >= int(4 * 16 + 0.5) + 2


@pytest.mark.parametrize("sigma", [4.0, 8.0, 16.0])
def test_cascaded_large_scales_match_a_direct_gaussian(sigma):
    img = np.random.default_rng(5).random((160, 150)).astype(np.float32)
    ext = BasicFeatures(sigma_min=1, sigma_max=sigma, edges=False, texture=False,
                        texture_sigma_max=0.5)
    expected = ndi.gaussian_filter(img.astype(np.float64), sigma, mode="reflect")
    np.testing.assert_allclose(ext(img)[:, :, -1], expected, atol=2e-5)


def test_default_features_of_a_crop_equal_the_crop_of_features_exactly():
    rng = np.random.default_rng(6)
    img = rng.random((250, 262, 3)).astype(np.float32)
    ext = BasicFeatures()
    h = ext.halo
    full = ext(img)
    crop = ext(img[3:247, 7:259])
    np.testing.assert_array_equal(crop[h:-h, h:-h], full[3 + h:247 - h, 7 + h:259 - h])


def test_codes_equal_quantized_features():
    from segdash.codes import Quantizer

    rng = np.random.default_rng(7)
    img = rng.random((60, 70, 2)).astype(np.float32)
    ext = BasicFeatures(sigma_max=4)
    q = ext.quantizer(np.array([0.1, 0.0]), np.array([0.8, 1.0]))
    assert isinstance(q, Quantizer) and len(q) == len(ext.feature_names(2))
    codes = ext.compute_codes(img, q)
    assert codes.dtype == np.uint8 and codes.shape == (60, 70, len(q))
    np.testing.assert_array_equal(codes, q(ext(img)))
    assert 5 < codes.std() and len(np.unique(codes)) > 200


def test_quantizer_codes_are_monotone_and_clip():
    from segdash.codes import LINEAR, ROOT, SIGNED_ROOT, Quantizer

    v = np.linspace(-2, 2, 4001, dtype=np.float32)
    for kind in (LINEAR, ROOT, SIGNED_ROOT):
        q = Quantizer(np.zeros(1), np.ones(1), np.array([kind]))
        c = q(v[:, None])[:, 0]
        assert (np.diff(c.astype(int)) >= 0).all()
        assert c.max() == 255 and c.min() == (1 if kind == SIGNED_ROOT else 0)
    q = Quantizer(np.zeros(1), np.ones(1), np.array([SIGNED_ROOT]))
    # NaN is coded as a zero value
    assert q(np.array([[0.0], [np.nan], [-5.0]], np.float32))[:, 0].tolist() == [128, 128, 1]


def test_features_of_a_crop_equal_the_crop_of_features_away_from_the_border():
    rng = np.random.default_rng(3)
    img = rng.random((90, 100, 2)).astype(np.float32)
    ext = BasicFeatures(sigma_min=1, sigma_max=4)
    full = ext(img)
    h = ext.halo
    crop = ext(img[10:80, 5:95])
    np.testing.assert_array_equal(crop[h:-h, h:-h], full[10 + h:80 - h, 5 + h:95 - h])


def test_features_at_the_border_equal_a_mirror_padded_image():
    rng = np.random.default_rng(4)
    img = rng.random((40, 50)).astype(np.float32)
    ext = BasicFeatures(sigma_min=1, sigma_max=2)
    h = ext.halo
    padded = np.pad(img, 2 * h, mode="symmetric")
    np.testing.assert_array_equal(ext(padded)[2 * h:-2 * h, 2 * h:-2 * h], ext(img))


@pytest.mark.parametrize(
    ("dtype", "scale"), [(np.uint8, 255), (np.uint16, 65535), (np.float32, 1), (np.float64, 1)]
)
def test_images_are_scaled_by_dtype_not_content(dtype, scale):
    img = (np.arange(12).reshape(3, 4) * 2).astype(dtype)
    out = prepare_image(img)
    assert out.shape == (3, 4, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, :, 0], img.astype(np.float64) / scale, rtol=1e-6)


def test_same_picture_in_uint8_and_uint16_gives_the_same_features():
    img8 = np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)
    img16 = img8.astype(np.uint16) * 257
    np.testing.assert_allclose(BasicFeatures()(img8), BasicFeatures()(img16), atol=1e-5)


def test_rgba_alpha_is_dropped(rgb_image):
    rgba = np.dstack([rgb_image, np.full(rgb_image.shape[:2], 7, np.uint8)])
    assert image_channels(rgba) == 3
    np.testing.assert_array_equal(BasicFeatures()(rgba), BasicFeatures()(rgb_image))


def test_many_channel_images_are_accepted():
    img = np.random.default_rng(0).random((16, 16, 5)).astype(np.float32)
    assert image_channels(img) == 5
    assert BasicFeatures(sigma_min=1, sigma_max=1)(img).shape == (16, 16, 5 * 4 + 5)


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((2, 2, 2, 2)), np.zeros((0, 4))])
def test_bad_image_shapes_raise_image_error(bad):
    with pytest.raises(ImageError):
        prepare_image(bad)


def test_stack_concatenates_and_prefixes_names(rgb_image):
    stack = FeatureStack(["basic"], {"sigma_max": 2})
    assert stack.settings["basic"]["sigma_max"] == 2
    assert stack(rgb_image).shape[2] == len(stack.feature_names(3))


def test_stack_rejects_unknown_settings_listing_valid_ones():
    with pytest.raises(ValueError, match="has no setting.*sigma_max"):
        FeatureStack("basic", {"sigma_maxx": 3})


class _NoInnerHook(BasicFeatures):
    """``basic`` as a plugin without ``compute_codes_inner``: the contract's default."""

    compute_codes_inner = property(lambda self: _raise_attribute())


def _raise_attribute():
    raise AttributeError("compute_codes_inner")


@pytest.mark.parametrize("context", [(0, 0), (0, 60), (60, 0), (60, 75)])
def test_codes_of_a_tile_with_context_equal_the_crop_of_the_whole_image_codes(context):
    from segdash.contract import hook

    rng = np.random.default_rng(9)
    img = rng.random((260, 280, 3)).astype(np.float32)
    stack = FeatureStack("basic", {"sigma_max": 8})
    whole, q = stack.codes(img)
    assert stack.halo <= 60
    # a tile with `context` pixels of its neighbours around it; an axis without context
    # is whole
    cy, cx = context
    y0, y1 = (70, 190) if cy else (0, 260)
    x0, x1 = (90, 200) if cx else (0, 280)
    block = img[y0 - cy:y1 + cy, x0 - cx:x1 + cx]
    codes, _ = stack.codes(block, q, context=context)
    expected = whole[y0:y1, x0:x1]
    np.testing.assert_array_equal(codes, expected)
    # the contract's default (plugins without the hook) gives the same codes
    plain = _NoInnerHook(sigma_max=8)
    assert not hasattr(plain, "compute_codes_inner")
    inner = hook(plain, "compute_codes_inner")(prepare_image(block), q, context)
    np.testing.assert_array_equal(inner, expected)


def test_context_smaller_than_the_halo_is_refused():
    stack = FeatureStack("basic", {"sigma_max": 4})
    img = np.zeros((80, 80), np.float32)
    _, q = stack.codes(img)
    with pytest.raises(ValueError, match="less than the features' halo"):
        stack.codes(img, q, context=(stack.halo - 1, 0))
    with pytest.raises(ValueError, match="need the model's quantizer"):
        stack.codes(img, context=(stack.halo, stack.halo))
