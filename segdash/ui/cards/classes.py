"""The Classes card: the class to paint, and adding, renaming, recolouring, removing classes."""

from __future__ import annotations

from functools import partial
from typing import Any

import panel as pn
import param

from ..display import text_color
from .base import Card, CardContext


class ClassesCard(Card):
    """The classes: one button each (click to paint it), add, rename, recolour, remove."""

    title = "Classes"
    watches = ("classes",)

    active_class = param.Integer(default=1, doc="Class the next stroke paints.")

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.buttons = pn.FlexBox(sizing_mode="stretch_width")
        self.add_button = pn.widgets.Button(label="Add class")
        self.add_button.on_click(self._add_class)
        self.name_input = pn.widgets.TextInput(label="Name of the selected class")
        self.name_input.param.watch(self._rename_class, "value")
        self.color_input = pn.widgets.ColorPicker(label="Colour")
        self.color_input.param.watch(self._recolor_class, "value")
        self.remove_button = pn.widgets.Button(label="Remove class", color="danger",
                                               variant="outline")
        self.remove_button.on_click(self._remove_class)

    def controls(self) -> list[Any]:
        return [self.buttons, pn.Row(self.add_button, self.remove_button), self.name_input,
                self.color_input]

    def active_color(self) -> str:
        """Colour of the selected class (black if it is gone)."""
        try:
            return self.segmenter.class_info(self.active_class).color
        except ValueError:
            return "#000000"

    def refresh(self, names: set[str]) -> None:
        classes = self.segmenter.classes
        if self.active_class not in {c.id for c in classes} and classes:
            self.active_class = classes[0].id
        self._show_classes()

    def _show_classes(self) -> None:
        buttons = []
        for c in self.segmenter.classes:
            active = c.id == self.active_class
            css = (f":host .bk-btn {{ background: {c.color} !important; "
                   f"color: {text_color(c.color)} !important; "
                   f"border: 3px solid {'#222' if active else 'transparent'} !important; "
                   f"font-weight: {'bold' if active else 'normal'}; }}")
            button = pn.widgets.Button(
                label=c.name, stylesheets=[css], margin=(4, 4),
                css_classes=["segdash-class", "active"] if active else ["segdash-class"])
            button.on_click(partial(self._select_class, c.id))
            buttons.append(button)
        self.buttons.objects = buttons
        info = next((c for c in self.segmenter.classes if c.id == self.active_class), None)
        with self._quiet():
            self.name_input.value = info.name if info else ""
            self.color_input.value = info.color if info else "#000000"
        self.remove_button.disabled = len(self.segmenter.classes) <= 1

    def _select_class(self, class_id: int, event: Any = None) -> None:
        self.active_class = class_id
        self._show_classes()

    def _add_class(self, event: Any = None) -> None:
        info = self.segmenter.add_class()
        self._select_class(info.id)

    def _remove_class(self, event: Any = None) -> None:
        if len(self.segmenter.classes) <= 1:
            self.context.report("keep at least one class")
            return
        self.segmenter.remove_class(self.active_class)

    def _rename_class(self, event: Any) -> None:
        if self._updating or not event.new.strip():
            return
        self.segmenter.rename_class(self.active_class, event.new.strip())

    def _recolor_class(self, event: Any) -> None:
        if self._updating:
            return
        try:
            self.segmenter.recolor_class(self.active_class, event.new)
        except ValueError as exc:
            self.context.report(str(exc))
