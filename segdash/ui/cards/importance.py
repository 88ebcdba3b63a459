"""The Feature importance card: what the trained model relies on, by family and by scale,
and "Keep only the useful features"."""

from __future__ import annotations

from functools import partial
from typing import Any

import holoviews as hv
import panel as pn

from ...importance import Importance
from ..display import markdown_text
from .base import Card, CardContext

#: Size of each bar chart, in screen pixels.
CHART_WIDTH, CHART_HEIGHT = 330, 150


def bars(pairs: list[tuple[str, float]], key: str) -> hv.Bars:
    """A bar chart of ``[(name, share), ...]`` in percent; the names are drawn as axis
    text on the canvas (never HTML)."""
    data = [(name, 100.0 * share) for name, share in pairs]
    return hv.Bars(data, kdims=[key], vdims=["importance (%)"]).opts(
        width=CHART_WIDTH, height=CHART_HEIGHT, xrotation=35, toolbar=None,
        default_tools=["hover"], color="#0072b2", fontsize={"xticks": 8, "yticks": 8,
                                                            "ylabel": 8, "xlabel": 8})


class ImportanceCard(Card):
    """Importance of the trained model's features by family and by scale; a button that
    retrains with only the families and scales that matter, one that goes back."""

    title = "Feature importance"
    watches = ("model",)

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.summary = pn.pane.Markdown("Train a model to see which features it uses.",
                                        css_classes=["segdash-importance-summary"],
                                        margin=(0, 10))
        self.family_chart = pn.pane.HoloViews(None, css_classes=["segdash-importance-family"])
        self.scale_chart = pn.pane.HoloViews(None, css_classes=["segdash-importance-scale"])
        # Hidden until a model exists. Not the panes themselves: setting `visible` on a
        # rendered HoloViews pane fails in Panel 1.9 (its Bokeh stylesheets are re-set
        # as a list of str).
        self.charts = pn.Column(self.family_chart, self.scale_chart, visible=False,
                                sizing_mode="stretch_width")
        self.keep_button = pn.widgets.Button(label="Keep only the useful features",
                                             disabled=True, css_classes=["segdash-keep-useful"])
        self.keep_button.on_click(self._keep_clicked)
        self.restore_button = pn.widgets.Button(label="Use all features again", disabled=True,
                                                variant="outline",
                                                css_classes=["segdash-restore-features"])
        self.restore_button.on_click(self._restore_clicked)
        self._token = 0

    def controls(self) -> list[Any]:
        return [self.summary, self.charts, pn.Row(self.keep_button, self.restore_button)]

    def refresh(self, names: set[str]) -> None:
        seg = self.segmenter
        self._token += 1
        self.restore_button.disabled = not seg.can_restore_features
        if seg.model is None:
            self.keep_button.disabled = True
            return
        # Importance may walk the trees on the painted pixels: off the page's thread.
        self.context.worker.submit(partial(self._measure, self._token), key="importance",
                                   what="feature importance")

    def _measure(self, token: int) -> None:
        try:
            importance = self.segmenter.feature_importance()
        except ValueError as exc:  # settings changed meanwhile: the next model shows
            importance, problem = None, str(exc)
        else:
            problem = ""
        self.context.on_ui(partial(self._show, token, importance, problem))

    def _show(self, token: int, importance: Importance | None, problem: str) -> None:
        if token != self._token:
            return  # a newer model is on its way
        seg = self.segmenter
        self.restore_button.disabled = not seg.can_restore_features
        if importance is None:
            self.keep_button.disabled = True
            if problem:
                self.summary.object = markdown_text(problem)
            return
        self.summary.object = markdown_text(
            f"{importance.n_features} features ({', '.join(importance.extractors)}); "
            f"importance by {importance.method}")
        self.family_chart.object = bars(importance.by_family(), "family")
        self.scale_chart.object = bars(importance.by_scale(), "scale")
        self.charts.visible = True
        self.keep_button.disabled = False

    def _keep_clicked(self, event: Any = None) -> None:
        self.context.clear_error()
        self.keep_button.disabled = True
        self.context.worker.submit(self.segmenter.keep_useful_features, key="importance",
                                   what="keeping the useful features")

    def _restore_clicked(self, event: Any = None) -> None:
        self.context.clear_error()
        self.restore_button.disabled = True
        self.context.worker.submit(self.segmenter.restore_features, key="importance",
                                   what="restoring the features")
