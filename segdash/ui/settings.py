"""Widgets for a settings object (feature extractor or classifier), from its param parameters.

Every parameter but ``name`` becomes a widget (:class:`panel.Param` picks the kind); sliders
report only when released, so dragging one does not queue a retraining per pixel, and
numbers that may be None get a number box (empty = None). A pair
of numeric parameters ``<x>_min`` and ``<x>_max`` becomes one range slider (for ``basic``:
the sigma range).
"""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from .display import markdown_text


def range_pairs(obj: param.Parameterized) -> list[str]:
    """Bases ``x`` for which ``obj`` has numeric parameters ``x_min`` and ``x_max``."""
    names = set(obj.param) - {"name"}
    out = []
    for p in sorted(names):
        if not p.endswith("_min"):
            continue
        base = p[: -len("_min")]
        lo = obj.param[p]
        hi = obj.param[f"{base}_max"] if f"{base}_max" in names else None
        if (hi is not None and isinstance(lo, param.Number) and isinstance(hi, param.Number)
                and not lo.allow_None and not hi.allow_None):
            out.append(base)
    return out


def _limits(p: param.Number) -> tuple[float, float]:
    soft = p.softbounds or (None, None)
    hard = p.bounds or (None, None)
    lo = soft[0] if soft[0] is not None else hard[0]
    hi = soft[1] if soft[1] is not None else hard[1]
    return (0.0 if lo is None else float(lo)), (100.0 if hi is None else float(hi))


def range_widget(obj: param.Parameterized, base: str) -> pn.widgets.EditableRangeSlider:
    """A range slider editing ``obj.<base>_min`` and ``obj.<base>_max`` together."""
    p_lo, p_hi = obj.param[f"{base}_min"], obj.param[f"{base}_max"]
    start, end = _limits(p_lo)
    integer = isinstance(p_lo, param.Integer)
    widget = pn.widgets.EditableRangeSlider(
        label=base.replace("_", " ").capitalize() + " range",
        start=start, end=max(end, _limits(p_hi)[1]),
        value=(getattr(obj, f"{base}_min"), getattr(obj, f"{base}_max")),
        step=1 if integer else 0.1, sizing_mode="stretch_width",
        fixed_start=p_lo.bounds[0] if p_lo.bounds else None,
        fixed_end=p_hi.bounds[1] if p_hi.bounds else None,
    )

    def to_obj(event: Any) -> None:
        lo, hi = event.new
        if (lo, hi) != (getattr(obj, f"{base}_min"), getattr(obj, f"{base}_max")):
            obj.param.update({f"{base}_min": lo, f"{base}_max": hi})  # one change, one retrain

    def to_widget(*events: Any) -> None:
        widget.value = (getattr(obj, f"{base}_min"), getattr(obj, f"{base}_max"))

    widget.param.watch(to_obj, "value_throttled")
    obj.param.watch(to_widget, [f"{base}_min", f"{base}_max"])
    return widget


def _widget_spec(p: param.Number) -> dict[str, Any]:
    if p.allow_None:
        # Sliders cannot hold None ("unlimited", "default"): a number box can be left empty.
        kind = pn.widgets.IntInput if isinstance(p, param.Integer) else pn.widgets.FloatInput
        lo, hi = p.bounds or (None, None)
        return {"type": kind, "start": lo, "end": hi, "placeholder": "None"}
    return {"throttled": True}


def settings_panel(obj: param.Parameterized, title: str) -> pn.Column:
    """Widgets editing ``obj``'s parameters in place, under a ``title``."""
    pairs = range_pairs(obj)
    paired = {f"{b}_{end}" for b in pairs for end in ("min", "max")}
    plain = [p for p in obj.param if p != "name" and p not in paired]
    widgets = {p: _widget_spec(obj.param[p]) for p in plain
               if isinstance(obj.param[p], param.Number)}
    parts: list[Any] = [range_widget(obj, b) for b in pairs]
    if plain:
        parts.append(pn.Param(obj, parameters=plain, widgets=widgets, show_name=False,
                              sizing_mode="stretch_width", margin=0))
    heading = pn.pane.Markdown(f"**{markdown_text(title)}** settings", margin=(0, 10))
    return pn.Column(heading, *parts,
                     sizing_mode="stretch_width", css_classes=["segdash-settings"])
