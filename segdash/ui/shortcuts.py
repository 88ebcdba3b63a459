"""Keyboard shortcuts, the help that lists them, and the first-use hint over the canvas.

:data:`SHORTCUTS` is the one table of keys: the browser's key handler (:class:`KeyHandler`,
a small script listening on the page's document), the help shown by *Shortcuts (?)*
(:func:`markdown_table`) and the table in docs/dashboard.md (a test compares them) are all
made from it. Keys typed in a text field (a class name) are the field's, never shortcuts.
Panning (Space held, or H) happens in the browser alone, so that it follows the key at once;
every other action is sent to the server, which changes the session as the matching button
would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import panel as pn
import param
from panel.custom import JSComponent

from ..segmenter import Segmenter
from .cards import Cards
from .display import markdown_text


@dataclass(frozen=True)
class Shortcut:
    """Keys doing one thing.

    Attributes
    ----------
    keys : tuple of str
        As written for users: ``"Ctrl+Z"``, ``"Ctrl+Shift+Z"``, ``"1"``, ``"Space"``, ``"["``
        (Ctrl is Cmd on macOS). Letters are matched whatever their case.
    action : str
        What the key handler does (:meth:`Guide.handle`; ``pan_hold`` and ``pan`` are done
        in the browser, ``delete`` is the freehand tool's own).
    description : str
        What users read in the help.
    """

    keys: tuple[str, ...]
    action: str
    description: str

    @property
    def keys_text(self) -> str:
        """The keys as the help writes them (a run of digits as ``1 – 9``)."""
        if len(self.keys) > 3:
            return f"{self.keys[0]} – {self.keys[-1]}"
        return " or ".join(self.keys)


#: Every keyboard shortcut of the dashboard, in the order the help lists them.
SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut(("Ctrl+Z",), "undo",
             "undo the last edit: a stroke, an erasure, a deleted stroke, Clear, Add or "
             "Remove class"),
    Shortcut(("Ctrl+Shift+Z", "Ctrl+Y"), "redo", "redo what was undone"),
    Shortcut(tuple("123456789"), "class",
             "paint with the 1st to 9th class (in the Classes card's order)"),
    Shortcut(("E",), "eraser", "eraser on/off: strokes remove the labels under them"),
    Shortcut(("F",), "fill", "fill tool on/off: a lasso painted inside with the class"),
    Shortcut(("[",), "thinner", "thinner brush"),
    Shortcut(("]",), "wider", "wider brush"),
    Shortcut(("Space",), "pan_hold", "pan with the mouse while held"),
    Shortcut(("H",), "pan", "pan tool on/off (off: drag paints)"),
    Shortcut(("O",), "overlay", "overlay on/off"),
    Shortcut(("U",), "uncertainty", "switch the overlay between segmentation and uncertainty"),
    Shortcut(("Backspace",), "delete",
             "delete the stroke selected by clicking it (undo brings it back)"),
    Shortcut(("?",), "help", "show or hide this list"),
)
#: Actions the browser does itself (the key handler sends them nowhere).
BROWSER_ACTIONS = frozenset({"pan_hold", "pan", "delete"})


def key_combo(keys: str) -> str:
    """The key handler's name of a key as written in :data:`SHORTCUTS`: lower case,
    modifiers first (``"Ctrl+Shift+Z"`` -> ``"ctrl+shift+z"``, ``"Space"`` -> ``"space"``)."""
    return keys.lower()


def key_map() -> dict[str, list[Any]]:
    """What the browser's key handler matches: ``{combo: [action, argument]}`` (the
    argument is the digit of the class keys, else None). ``delete`` is left out: the
    freehand tool handles Backspace."""
    out: dict[str, list[Any]] = {}
    for s in SHORTCUTS:
        if s.action == "delete":
            continue
        for k in s.keys:
            out[key_combo(k)] = [s.action, k if s.action == "class" else None]
    return out


def markdown_table() -> str:
    """The shortcuts as a Markdown table (the help, and docs/dashboard.md's table)."""
    rows = ["| keys | does |", "| --- | --- |"]
    rows += [f"| {markdown_text(s.keys_text)} | {markdown_text(s.description)} |"
             for s in SHORTCUTS]
    return "\n".join(rows)


# The browser side: one listener on the document for the page's lifetime. Keys typed in a
# text field are left to it; Ctrl+1.. and other combinations not in the map to the browser.
_KEYS_JS = """
const TEXT_TYPES = new Set(["text", "search", "email", "url", "tel", "password", "number"]);

function typing(ev) {
  const t = ev.composedPath()[0];
  if (t == null || t.tagName == null) { return false; }
  const tag = t.tagName.toUpperCase();
  if (tag === "TEXTAREA" || tag === "SELECT" || t.isContentEditable) { return true; }
  return tag === "INPUT" && TEXT_TYPES.has((t.type || "text").toLowerCase());
}

function combo(ev) {
  const key = ev.key === " " ? "space" : String(ev.key).toLowerCase();
  const mods = [];
  if (ev.ctrlKey || ev.metaKey) { mods.push("ctrl"); }
  if (ev.altKey) { mods.push("alt"); }
  // Shift is part of a letter's combination; for "?" it only makes the character.
  if (ev.shiftKey && /^[a-z]$/.test(key)) { mods.push("shift"); }
  return [...mods, key].join("+");
}

function drawingTools() {
  const plot = Bokeh.index.query_one((v) => v.model.toolbar != null
    && v.model.toolbar.tools.some((t) => t.type === "FreehandDrawTool"));
  if (plot == null) { return null; }
  const tools = plot.model.toolbar.tools;
  return {pan: tools.find((t) => t.type === "PanTool"),
          draw: tools.find((t) => t.type === "FreehandDrawTool")};
}

function setPan(on) {
  const tools = drawingTools();
  if (tools == null || tools.pan == null || tools.draw == null) { return; }
  const pan = on == null ? !tools.pan.active : on;
  (pan ? tools.pan : tools.draw).active = true;
}

export function render({ model, el }) {
  let held = false;
  const down = (ev) => {
    if (typing(ev)) { return; }
    const hit = model.keymap[combo(ev)];
    if (hit == null) { return; }
    ev.preventDefault();
    const [action, arg] = hit;
    if (action === "pan_hold") {
      if (!held) { held = true; setPan(true); }
    } else if (action === "pan") {
      if (!ev.repeat) { setPan(null); }
    } else {
      model.send_msg({action: action, arg: arg});
    }
  };
  const up = (ev) => {
    if (ev.key === " " && held) {
      held = false;
      ev.preventDefault();
      setPan(false);
    }
  };
  document.addEventListener("keydown", down);
  document.addEventListener("keyup", up);
  model.on("remove", () => {
    document.removeEventListener("keydown", down);
    document.removeEventListener("keyup", up);
  });
  el.className = "segdash-keys";
}
"""


_POPOVER_CSS = """
:host { position: absolute !important; z-index: 1000; background: white;
        box-shadow: 0 2px 10px rgba(0, 0, 0, 0.35); border-radius: 4px; padding: 4px 8px; }
"""


class KeyHandler(JSComponent):
    """The page's key listener: sends the action of each shortcut pressed (see
    :func:`key_map`) to ``on_key(action, argument)``, run on the page's thread."""

    keymap = param.Dict(default={}, doc="{combo: [action, argument]} (see key_map).")

    _esm = _KEYS_JS

    def __init__(self, on_key: Callable[[str, Any], Any], **params: Any) -> None:
        params.setdefault("keymap", key_map())
        super().__init__(**params)
        self._on_key = on_key

    def _handle_msg(self, data: Any) -> None:
        if isinstance(data, dict) and isinstance(data.get("action"), str):
            self._on_key(data["action"], data.get("arg"))


class Guide:
    """One page's keyboard shortcuts, their help and the first-use hint.

    Parameters
    ----------
    segmenter : Segmenter
        The session: undo and redo act on it.
    cards : Cards
        The sidebar: the class, tool, width and overlay keys act on its cards, as their
        widgets would.
    """

    #: Segmenter parameters the hint shows (see :meth:`refresh`).
    watches = ("strokes", "classes")

    def __init__(self, segmenter: Segmenter, cards: Cards) -> None:
        self.segmenter = segmenter
        self.cards = cards
        strokes, results = cards.strokes, cards.results
        self._actions: dict[str, Callable[[Any], Any]] = {
            "undo": lambda _: segmenter.undo(),
            "redo": lambda _: segmenter.redo(),
            "class": lambda digit: cards.classes.select_nth(int(digit)),
            "eraser": lambda _: strokes.toggle_tool("eraser"),
            "fill": lambda _: strokes.toggle_tool("fill"),
            "thinner": lambda _: strokes.step_width(-1),
            "wider": lambda _: strokes.step_width(+1),
            "overlay": lambda _: setattr(results, "show_overlay", not results.show_overlay),
            "uncertainty": lambda _: setattr(
                results, "view",
                "uncertainty" if results.view == "segmentation" else "segmentation"),
            "help": lambda _: setattr(self.help_button, "value", not self.help_button.value),
        }
        self.keys = KeyHandler(self.handle, width=0, height=0, margin=0)
        self.help_button = pn.widgets.Toggle(label="Shortcuts (?)", width=130,
                                             css_classes=["segdash-help-button"])
        # a popover: floats over the canvas instead of pushing it down
        self.help = pn.pane.Markdown(markdown_table(), visible=False,
                                     css_classes=["segdash-shortcuts"], margin=(0, 10),
                                     stylesheets=[_POPOVER_CSS])
        self.help_button.param.watch(self._show_help, "value")
        self.hint = pn.pane.Markdown("", css_classes=["segdash-hint"], margin=(0, 10),
                                     sizing_mode="stretch_width")
        #: The first stroke was painted: the hint is gone for this page.
        self.hint_done = bool(segmenter.strokes)
        cards.classes.param.watch(self._on_brush, "active_class")
        strokes.param.watch(self._on_brush, "tool")
        self._show_hint()

    def panel(self) -> pn.Column:
        """The hint and the help button, the help (folded) and the key listener."""
        return pn.Column(pn.Row(self.hint, self.help_button, sizing_mode="stretch_width"),
                         self.help, self.keys, sizing_mode="stretch_width", margin=0)

    def handle(self, action: str, arg: Any = None) -> None:
        """Do what shortcut ``action`` does (``arg``: the digit of a class key)."""
        do = self._actions.get(action)
        if do is not None:
            do(arg)

    def refresh(self, names: set[str]) -> None:
        """Show the Segmenter parameters ``names`` (of :attr:`watches`) as they are now."""
        if "strokes" in names and self.segmenter.strokes:
            self.hint_done = True
        self._show_hint()

    def _on_brush(self, *events: Any) -> None:
        self._show_hint()

    def _show_help(self, event: Any) -> None:
        self.help.visible = bool(event.new)

    def _show_hint(self) -> None:
        if self.hint_done:
            # gone, its line kept: the canvas must not move under the mouse. The text is
            # blanked too (one line, as the hint is in a window of usual width): a change of
            # ``styles`` alone did not reach the browser after the image had been changed
            self.hint.styles = {"visibility": "hidden"}
            self.hint.object = "&nbsp;"
            return
        tool = self.cards.strokes.tool
        try:
            name = self.segmenter.class_info(self.cards.classes.active_class).name
        except ValueError:
            name = ""
        doing = {"eraser": "erase labels",
                 "fill": f'draw a lasso to fill with "{markdown_text(name)}"'}.get(
            tool, f'paint "{markdown_text(name)}"')
        self.hint.object = (f"**Drag on the image to {doing}.** Keys 1 – 9 choose a class, "
                            "E the eraser, F the fill tool; ? lists every shortcut.")
