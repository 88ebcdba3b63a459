"""The Results card: live update or Train, and how the overlay is shown."""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from ..canvas import OverlayView
from .base import Card, CardContext


class ResultsCard(Card):
    """Live update or Train, and how the overlay is shown."""

    title = "Results"
    watches = ()  # its widgets are bound to parameters: they follow by themselves

    show_overlay = param.Boolean(default=True, doc="Show the segmentation overlay.")
    opacity = param.Number(default=0.5, bounds=(0.0, 1.0), step=0.05,
                           doc="Opacity of the overlay.")
    view = param.Selector(default="segmentation", objects=["segmentation", "uncertainty"],
                          doc="What the overlay shows.")

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.live_toggle = pn.widgets.Checkbox.from_param(
            self.segmenter.param.live_update, label="Live update (retrain after each change)")
        self.train_button = pn.widgets.Button(label="Train", color="primary")
        self.train_button.on_click(self._train_clicked)
        self.stop_button = pn.widgets.Button(label="Stop", variant="outline",
                                             css_classes=["segdash-stop"])
        self.stop_button.on_click(self._stop_clicked)
        self.overlay_toggle = pn.widgets.Checkbox.from_param(self.param.show_overlay,
                                                              label="Show overlay")
        self.opacity_slider = pn.widgets.FloatSlider.from_param(self.param.opacity,
                                                                label="Overlay opacity")
        self.view_select = pn.widgets.RadioButtonGroup.from_param(self.param.view, label="Show")

    def controls(self) -> list[Any]:
        return [self.live_toggle, pn.Row(self.train_button, self.stop_button),
                self.overlay_toggle, self.opacity_slider,
                self.view_select]

    def overlay_view(self) -> OverlayView:
        """The overlay settings, for the plot."""
        return OverlayView(self.show_overlay, self.opacity, self.view)

    def _train_clicked(self, event: Any = None) -> None:
        self.context.clear_error()
        self.context.worker.submit(self._train_now, key="train")

    def _stop_clicked(self, event: Any = None) -> None:
        # Queued work is dropped; a running job is abandoned (its result discarded).
        if not self.context.worker.cancel():
            self.context.report("nothing is running")

    def _train_now(self) -> None:
        seg = self.segmenter
        if seg.train() is None and not seg.error and seg.status:
            raise ValueError(seg.status)  # e.g. fewer than two classes painted
