"""The preview after a stroke on large images: every other pixel first, the exact result
after it."""

from __future__ import annotations

import numpy as np

import segdash
from segdash.segmenter import PREVIEW_MIN_PIXELS, PREVIEW_STRIDE

from .conftest import scribble_strokes, scribbles, two_texture_image


def test_preview_is_the_prediction_at_every_other_pixel_before_smoothing():
    image, _ = two_texture_image(64)
    model = segdash.fit(image, scribbles(64), classifier_params={"smoothing": 0})
    codes = model.feature_codes(image)
    assert np.allclose(model.predict_proba_preview(codes, 2),
                       model.predict_proba_codes(codes)[::2, ::2], atol=1e-6)


def test_a_large_image_shows_a_preview_then_the_exact_result():
    side = int(np.ceil(np.sqrt(PREVIEW_MIN_PIXELS)))
    image, _ = two_texture_image(side)
    seg = segdash.Segmenter(image=image, preview=True, live_update=False)
    seg.set_strokes(scribble_strokes(side))
    shown = []
    seg.param.watch(lambda e: shown.append((seg.status, e.new)), "segmentation")
    seg.train()
    (status0, preview), (status1, exact) = shown
    assert status0.startswith("preview") and status1.startswith("trained")
    assert preview.shape == exact.shape == (side, side)
    # nearest enlargement of the coarse prediction: 2x2 blocks of one class
    assert np.array_equal(preview[::PREVIEW_STRIDE, ::PREVIEW_STRIDE], preview[1::2, 1::2])
    assert np.mean(preview == exact) > 0.97
    assert np.array_equal(seg.segmentation, exact)


def test_no_preview_by_default_or_on_small_images():
    image, _ = two_texture_image(64)
    for seg in (segdash.Segmenter(image=image, live_update=False),
                segdash.Segmenter(image=image, preview=True, live_update=False)):
        seg.set_strokes(scribble_strokes(64))
        shown = []
        seg.param.watch(lambda e, shown=shown: shown.append(e.new), "segmentation")
        seg.train()
        assert len(shown) == 1
