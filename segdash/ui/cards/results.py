"""The Results card: live update or Train, and what the overlay shows (with its legend)."""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from ..canvas import OverlayView
from ..display import UNCERTAINTY_COLOR, html_text, legend_html
from .base import Card, CardContext


class ResultsCard(Card):
    """Live update or Train; the overlay: shown or not, opacity, and which result."""

    title = "Results"
    watches = ("model", "classes")  # the classes a probability can be shown of

    show_overlay = param.Boolean(default=True, doc="Show the overlay.")
    opacity = param.Number(default=0.5, bounds=(0.0, 1.0), step=0.05,
                           doc="Opacity of the overlay.")
    view = param.Selector(default="segmentation",
                          objects=["segmentation", "uncertainty", "probability"],
                          doc="What the overlay shows: the class of each pixel, how unsure "
                              "the model is (1 - highest probability), or one class's "
                              "probability.")
    probability_class = param.Integer(default=None, allow_None=True,
                                      doc="Class id whose probability the overlay shows.")

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.live_toggle = pn.widgets.Checkbox.from_param(
            self.segmenter.param.live_update, label="Live update (retrain after each change)")
        self.train_button = pn.widgets.Button(label="Train", color="primary")
        self.train_button.on_click(self._train_clicked)
        self.overlay_toggle = pn.widgets.Checkbox.from_param(self.param.show_overlay,
                                                              label="Show overlay")
        self.opacity_slider = pn.widgets.FloatSlider.from_param(
            self.param.opacity, label="Overlay opacity", css_classes=["segdash-opacity"])
        # the selected view is the highlighted button
        self.view_select = pn.widgets.RadioButtonGroup.from_param(
            self.param.view, label="Show", color="primary", variant="outline",
            css_classes=["segdash-view"], sizing_mode="stretch_width")
        # options' labels render as HTML: class names are escaped, the values are ids
        self.class_select = pn.widgets.Select(label="Probability of class", options={},
                                              visible=False,
                                              css_classes=["segdash-probability-class"])
        self.class_select.param.watch(self._on_class, "value")
        #: The overlay's colour bar, shown over the plot for the uncertainty and
        #: probability views.
        self.legend = pn.pane.HTML("", visible=False, css_classes=["segdash-legend"],
                                   margin=(0, 10))
        self.param.watch(self._show_legend, ["view", "opacity", "probability_class",
                                             "show_overlay"])

    def controls(self) -> list[Any]:
        return [self.live_toggle, self.train_button, self.overlay_toggle,
                self.opacity_slider, self.view_select, self.class_select]

    def refresh(self, names: set[str]) -> None:
        model = self.segmenter.model
        ids = [] if model is None else [int(c) for c in model.classes_]
        names_of = {c.id: c.name for c in self.segmenter.classes}
        options = {html_text(names_of.get(i, f"class {i}")): i for i in ids}
        with self._quiet():
            self.class_select.options = options
            if self.probability_class not in ids:
                self.class_select.value = ids[-1] if ids else None
        if self.probability_class not in ids:
            self.probability_class = ids[-1] if ids else None
        self._show_legend()

    def overlay_view(self) -> OverlayView:
        """The overlay settings, for the plot."""
        return OverlayView(self.show_overlay, self.opacity, self.view, self.probability_class)

    def _on_class(self, event: Any) -> None:
        if not self._updating:
            self.probability_class = event.new

    def _show_legend(self, *events: Any) -> None:
        self.class_select.visible = self.view == "probability"
        if not self.show_overlay or self.view == "segmentation":
            self.legend.visible = False
            return
        if self.view == "uncertainty":
            label, color = "uncertain", UNCERTAINTY_COLOR
        else:
            info = next((c for c in self.segmenter.classes
                         if c.id == self.probability_class), None)
            if info is None:
                self.legend.visible = False
                return
            label, color = f"probability of {info.name}", info.color
        self.legend.object = legend_html(label, color, self.opacity)
        self.legend.visible = True

    def _train_clicked(self, event: Any = None) -> None:
        self.context.clear_error()
        self.context.worker.submit(self._train_now, key="train")

    def _train_now(self) -> None:
        seg = self.segmenter
        if seg.train() is None and not seg.error and seg.status:
            raise ValueError(seg.status)  # e.g. fewer than two classes painted
