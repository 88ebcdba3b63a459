"""Feature importance in Chromium: the chart of a trained model, and "Keep only the useful
features" retraining with fewer features.

The served coins sample (384x303 grey); one page for the whole sequence.
"""

from __future__ import annotations

import re

from .pages import (
    BARS_JS,
    H,
    W,
    bar_charts,
    mark_overlay,
    open_app,
    paint_two_classes,
    wait_new_overlay,
    wait_overlay,
    wait_status,
)

SUMMARY = ".segdash-importance-summary"


def features_shown(page) -> int:
    """The feature count the importance card states."""
    text = page.locator(SUMMARY).get_by_text(re.compile(r"\d+ features")).inner_text()
    return int(re.search(r"(\d+) features", text).group(1))


def test_importance_chart_and_keeping_the_useful_features(page, server, console):
    open_app(page, server)
    paint_two_classes(page)
    wait_status(page, r"trained random_forest")
    wait_overlay(page, H * W)
    # The chart: bars by family and by scale, named as text, heights summing to 100 %.
    page.wait_for_function("(() => { const v = [...Bokeh.index.query((v) => "
                           "v.model.type === 'GlyphRenderer' && v.model.glyph.type === "
                           "'VBar')]; return v.length >= 2; })()", timeout=30_000)
    family, scale = bar_charts(page)[:2]
    assert {"intensity", "edges", "texture"} <= set(family["names"])
    assert "sigma 0.5" in scale["names"] and "sigma 16" in scale["names"]
    for chart in (family, scale):
        assert chart["n"] == len(chart["names"]) > 1
        assert abs(sum(chart["top"]) - 100) < 0.5
    before = features_shown(page)
    assert before == 49  # the default features of a grey image

    mark_overlay(page)
    page.locator(".segdash-keep-useful button").click()
    page.locator(SUMMARY).get_by_text(re.compile(r"\d+ features")).filter(
        has_not_text=f"{before} features").wait_for(timeout=30_000)
    after = features_shown(page)
    assert 0 < after < before
    wait_new_overlay(page)  # the model retrained with fewer features drew its overlay
    # the charts follow: fewer families or fewer scales (the new plots render after the text)
    page.wait_for_function(
        f"(() => {{ const c = ({BARS_JS})(); return c.length >= 2 && (c[0].names.length < "
        f"{len(family['names'])} || c[1].names.length < {len(scale['names'])}); }})()",
        timeout=30_000)

    # Back to every feature: the same count as before.
    page.locator(".segdash-restore-features button").click()
    page.locator(SUMMARY).get_by_text(f"{before} features").wait_for(timeout=30_000)
    errors = [c for c in console
              if not ("ERR_NAME_NOT_RESOLVED" in c[1] and "fonts.googleapis.com" in c[2])]
    assert errors == []
