"""The Strokes card: brush width, undo, redo, clear."""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from .base import Card, CardContext


class StrokesCard(Card):
    """The brush width, and undo, redo and clear."""

    title = "Strokes"
    watches = ("strokes", "classes", "image")

    stroke_width = param.Integer(default=5, bounds=(1, 100), softbounds=(1, 50),
                                 doc="Brush width, in image pixels.")

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        seg = self.segmenter
        self.width_slider = pn.widgets.IntSlider.from_param(
            self.param.stroke_width, label="Stroke width (image pixels)")
        self.undo_button = pn.widgets.Button(label="Undo")
        self.undo_button.on_click(lambda _: seg.undo())
        self.redo_button = pn.widgets.Button(label="Redo")
        self.redo_button.on_click(lambda _: seg.redo())
        self.clear_button = pn.widgets.Button(label="Clear")
        self.clear_button.on_click(lambda _: seg.clear())

    def controls(self) -> list[Any]:
        return [self.width_slider,
                pn.Row(self.undo_button, self.redo_button, self.clear_button)]

    def refresh(self, names: set[str]) -> None:
        seg = self.segmenter
        self.undo_button.disabled = not seg.strokes
        self.redo_button.disabled = not seg.can_redo
        self.clear_button.disabled = not seg.strokes
