"""The Strokes card: the tool (brush, eraser, fill), brush width, undo, redo, clear."""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from .base import Card, CardContext

#: The painting tools: what a stroke drawn on the image does.
TOOLS = {"brush": "Brush", "eraser": "Eraser", "fill": "Fill"}


class StrokesCard(Card):
    """The tool, the brush width, and undo, redo and clear.

    The brush paints the selected class along the stroke; the eraser removes the labels
    of earlier strokes under it; the fill tool paints the inside of the lasso it draws
    (with its edge) in the selected class. All three make strokes: undone, saved and
    downloaded alike.
    """

    title = "Strokes"
    watches = ("strokes", "classes", "image")

    tool = param.Selector(default="brush", objects=list(TOOLS),
                          doc="What the next stroke does: paint, erase, or fill a lasso.")
    stroke_width = param.Integer(default=5, bounds=(1, 100), softbounds=(1, 50),
                                 doc="Brush width, in image pixels.")

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        seg = self.segmenter
        self.tool_buttons = pn.widgets.RadioButtonGroup.from_param(
            self.param.tool, options={v: k for k, v in TOOLS.items()}, label="Tool",
            color="primary", css_classes=["segdash-tool"])
        self.width_slider = pn.widgets.IntSlider.from_param(
            self.param.stroke_width, label="Stroke width (image pixels)")
        self.undo_button = pn.widgets.Button(label="Undo")
        self.undo_button.on_click(lambda _: seg.undo())
        self.redo_button = pn.widgets.Button(label="Redo")
        self.redo_button.on_click(lambda _: seg.redo())
        self.clear_button = pn.widgets.Button(label="Clear")
        self.clear_button.on_click(lambda _: seg.clear())

    def controls(self) -> list[Any]:
        return [self.tool_buttons, self.width_slider,
                pn.Row(self.undo_button, self.redo_button, self.clear_button)]

    def toggle_tool(self, tool: str) -> None:
        """Choose ``tool``, or go back to the brush if it is already chosen."""
        self.tool = "brush" if self.tool == tool else tool

    def step_width(self, direction: int) -> None:
        """A wider (``direction`` > 0) or thinner brush: a quarter more or less, at least
        one pixel, within the slider's bounds."""
        low, high = self.param.stroke_width.bounds
        w = self.stroke_width
        step = max(1, round(w * 0.25))
        self.stroke_width = min(high, max(low, w + step if direction > 0 else w - step))

    def refresh(self, names: set[str]) -> None:
        seg = self.segmenter
        self.undo_button.disabled = not seg.can_undo
        self.redo_button.disabled = not seg.can_redo
        self.clear_button.disabled = not seg.strokes
