"""Plugins in the dashboard (no browser): the example plugins are in the dropdowns and work
end to end; a broken plugin distribution is listed on the page while the rest works."""

from __future__ import annotations

import json

import pytest

from segdash import registry

from .conftest import two_texture_image
from .test_plugins import (
    BROKEN_ENTRY_POINTS,
    BROKEN_MODULES,
    make_distribution,
    needs_examples,
    run_python,
)

pytest.importorskip("panel")


def strokes(app):
    from segdash.ui.canvas import CLASS_COL, COLOR_COL, WIDTH_COL
    from segdash.ui.display import image_to_data

    h = app.segmenter.image.shape[0]
    colors = {c.id: c.color for c in app.segmenter.classes}
    data = {"xs": [], "ys": [], CLASS_COL: [], COLOR_COL: [], WIDTH_COL: []}
    for xs, ys, label in (([6, 120, 120], [6, 6, 120], 1), ([50, 78], [64, 64], 2)):
        px, py = image_to_data(xs, ys, h)
        for key, value in (("xs", px), ("ys", py), (CLASS_COL, label),
                           (COLOR_COL, colors[label]), (WIDTH_COL, 3.0)):
            data[key].append(value)
    return data


@needs_examples
def test_example_plugins_are_in_the_dropdowns_and_train_end_to_end():
    from segdash.ui import SegdashApp

    image, truth = two_texture_image(128)
    app = SegdashApp(image=image, image_name="texture.png")
    try:
        features, classifier = app.cards.features, app.cards.classifier
        assert "texture" in features.select.options
        assert "lightgbm" in classifier.select.options
        assert not app.plugin_alert.visible

        features.select.value = ["basic", "texture"]
        classifier.select.value = "lightgbm"
        assert app.segmenter.features == ["basic", "texture"]
        assert app.segmenter.classifier == "lightgbm"
        titles = [p.objects[0].object for p in features.settings.objects]
        assert titles == ["**basic** settings", "**texture** settings"]
        texture_widgets = features.settings.objects[1].objects[-1].parameters
        assert {"local_std", "orientation", "lbp", "lbp_window"} <= set(texture_widgets)
        assert "num_leaves" in classifier.settings.objects[0].objects[-1].parameters

        app.canvas.on_draw(strokes(app))
        assert app.wait_idle(120)
        model = app.segmenter.model
        assert model is not None, app.errors
        assert model.stack.names == ["basic", "texture"]
        assert model.classifier == "lightgbm"
        seg = app.segmenter.segmentation
        assert (seg == truth).mean() > 0.9  # texture features separate the two textures
    finally:
        app.close()


def test_broken_plugin_distribution_is_listed_on_the_page(tmp_path):
    site = make_distribution(tmp_path / "site", "segdash-broken-example", "0.1",
                             BROKEN_MODULES, BROKEN_ENTRY_POINTS)
    result = run_python("""
        import json, numpy as np
        from segdash.ui import SegdashApp
        rng = np.random.default_rng(0)
        image = (rng.random((64, 64)) * 255).astype(np.uint8)
        app = SegdashApp(image=image)
        # The alert's Markdown source escapes names (shown as text); compare unescaped.
        alert = app.plugin_alert.object.replace("\\\\", "")
        out = {"visible": app.plugin_alert.visible, "alert": alert,
               "options": list(app.cards.features.select.options)}
        app.cards.features.select.value = ["basic", "wrong_shape"]
        out["after_choosing_broken"] = list(app.segmenter.features)
        out["message"] = app.errors[-1] if app.errors else ""
        app.close()
        print(json.dumps(out))
    """, path=site, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["visible"] is True
    assert "'raising'" in out["alert"] and "libbroken.so.1" in out["alert"]
    assert "segdash-broken-example 0.1" in out["alert"]
    assert "'wrong_shape'" in out["alert"] and "returned shape" in out["alert"]
    assert "basic" in out["options"]
    assert out["after_choosing_broken"] == ["basic"]
    assert "wrong_shape" in out["message"]


def test_registries_are_unchanged_by_the_dashboard_tests():
    assert "wrong_shape" not in registry.features.names()
