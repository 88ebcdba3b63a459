"""The Classes card: the class to paint, and adding, renaming, recolouring, removing classes.

A class just added has an empty name field (its default name is the placeholder), emptied
in the browser at the click and focused: the server's answer to the click carries the same
empty value, so it cannot overwrite a name typed meanwhile (it once made "class 3rim" of a
name typed right after *Add class*). Names and colours that several classes share are
flagged while they are typed.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import panel as pn
import param

from ...classes import ClassInfo, clashes
from ..display import markdown_text, text_color
from .base import Card, CardContext

# Runs in the browser at the click on Add class, before the server hears of it.
_NEW_NAME_JS = """
name.value = "";
const view = Bokeh.index.query_one((v) => v.model === name);
if (view != null && view.input_el != null) {
  view.input_el.value = "";
  view.input_el.focus();
}
"""


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
        self.name_input = pn.widgets.TextInput(label="Name of the selected class",
                                               css_classes=["segdash-class-name"])
        self.name_input.param.watch(self._rename_class, "value")
        self.name_input.param.watch(self._typing, "value_input")
        self.add_button.js_on_click(args={"name": self.name_input}, code=_NEW_NAME_JS)
        #: The class just added, while its name field is left empty for typing.
        self._fresh: int | None = None
        self.clash_note = pn.pane.Alert("", alert_type="warning", visible=False,
                                        css_classes=["segdash-class-clash"], margin=(0, 10))
        self.color_input = pn.widgets.ColorPicker(label="Colour")
        self.color_input.param.watch(self._recolor_class, "value")
        self.remove_button = pn.widgets.Button(label="Remove class", color="danger",
                                               variant="outline")
        self.remove_button.on_click(self._remove_class)

    def controls(self) -> list[Any]:
        return [self.buttons, pn.Row(self.add_button, self.remove_button), self.name_input,
                self.color_input, self.clash_note]

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
            self.name_input.placeholder = info.name if info else ""
            fresh = info is not None and info.id == self._fresh
            self.name_input.value = "" if fresh or info is None else info.name
            self.color_input.value = info.color if info else "#000000"
        self.remove_button.disabled = len(self.segmenter.classes) <= 1
        self._show_clashes(self.segmenter.classes)

    def _show_clashes(self, classes: list[ClassInfo]) -> None:
        found = clashes(classes)
        self.clash_note.object = "  \n".join(f"⚠ {markdown_text(m)}" for m in found)
        self.clash_note.visible = bool(found)

    def _typing(self, event: Any) -> None:
        """Flag a name shared with another class while it is typed (before Enter)."""
        if self._updating:
            return
        typed = str(event.new or "").strip()
        classes = [ClassInfo(c.id, typed, c.color) if c.id == self.active_class and typed
                   else c for c in self.segmenter.classes]
        self._show_clashes(classes)

    def select_nth(self, n: int) -> None:
        """Paint with the ``n``-th class (1-based, in the card's order), if there is one."""
        classes = self.segmenter.classes
        if 1 <= n <= len(classes):
            self._select_class(classes[n - 1].id)

    def _select_class(self, class_id: int, event: Any = None) -> None:
        if class_id != self._fresh:
            self._fresh = None
        self.active_class = class_id
        self._show_classes()

    def _add_class(self, event: Any = None) -> None:
        info = self.segmenter.add_class()
        self._fresh = info.id
        self._select_class(info.id)

    def _remove_class(self, event: Any = None) -> None:
        if len(self.segmenter.classes) <= 1:
            self.context.report("keep at least one class")
            return
        self.segmenter.remove_class(self.active_class)

    def _rename_class(self, event: Any) -> None:
        if self._updating or not event.new.strip():
            return
        self._fresh = None
        self.segmenter.rename_class(self.active_class, event.new.strip())

    def _recolor_class(self, event: Any) -> None:
        if self._updating:
            return
        try:
            self.segmenter.recolor_class(self.active_class, event.new)
        except ValueError as exc:
            self.context.report(str(exc))
