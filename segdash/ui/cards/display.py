"""The Display card: brightness and contrast (each channel's display range) and the
channels shown. Display only: features and results never change with it."""

from __future__ import annotations

from typing import Any

import numpy as np
import panel as pn

from ...io.render import DisplaySettings
from .base import Card, CardContext, note

#: The channel choice showing the first three channels together (red, green[, blue]).
COMPOSITE = "all"


class DisplayCard(Card):
    """Each channel's display range (slider, *Auto*), and which channel is shown."""

    title = "Display"
    watches = ("display", "image", "source")

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.channel_select = pn.widgets.Select(label="Channels shown", options={},
                                                visible=False,
                                                css_classes=["segdash-display-channels"])
        self.channel_select.param.watch(self._on_channels, "value")
        self.sliders = pn.Column(sizing_mode="stretch_width")
        self.auto_button = pn.widgets.Button(label="Auto (0.5-99.5 %)", variant="outline",
                                             css_classes=["segdash-display-auto"])
        self.auto_button.on_click(self._on_auto)
        self._for: tuple | None = None  # the image the sliders were made for

    def controls(self) -> list[Any]:
        return [note("What the image looks like (never what is computed)."),
                self.channel_select, self.sliders, self.auto_button]

    def refresh(self, names: set[str]) -> None:
        seg = self.segmenter
        display = seg.display
        if display is None:
            self.sliders.objects, self._for = [], None
            self.channel_select.visible = False
            return
        shape = seg.image_shape
        key = (id(seg.image), id(seg.source), shape)
        if key != self._for or len(self.sliders.objects) != display.n_channels:
            self._build(display)
            self._for = key
        with self._quiet():
            for k, slider in enumerate(self.sliders.objects):
                low, high = display.low[k], display.high[k]
                slider.start, slider.end = min(slider.start, low), max(slider.end, high)
                slider.value = (low, high)
                slider.visible = k in display.channels
            self.channel_select.value = _choice(display)

    def _build(self, display: DisplaySettings) -> None:
        c = display.n_channels
        bounds_low, bounds_high = self.segmenter.display_bounds()
        seg = self.segmenter
        dtype = seg.image.dtype if seg.image is not None else seg.source.dtype
        integer = np.issubdtype(dtype, np.integer)
        sliders = []
        for k in range(c):
            lo, hi = float(bounds_low[k]), float(bounds_high[k])
            lo, hi = min(lo, display.low[k]), max(hi, display.high[k])
            step = 1.0 if integer and hi - lo >= 50 else (hi - lo) / 500
            slider = pn.widgets.RangeSlider(
                label=f"Range, channel {k + 1}" if c > 1 else "Range", start=lo, end=hi,
                value=(display.low[k], display.high[k]), step=step,
                sizing_mode="stretch_width", css_classes=[f"segdash-display-range-{k + 1}"])
            slider.param.watch(lambda e, k=k: self._on_range(k, e), "value_throttled")
            sliders.append(slider)
        self.sliders.objects = sliders
        options = {f"channel {k + 1}": str(k) for k in range(c)}
        if c > 1:
            composite = "red, green" if c == 2 else "red, green, blue: channels 1-3"
            options = {f"all ({composite})": COMPOSITE, **options}
        with self._quiet():
            self.channel_select.options = options
        self.channel_select.visible = c > 1

    def _on_range(self, channel: int, event: Any) -> None:
        seg = self.segmenter
        if self._updating or seg.display is None or event.new is None:
            return
        low, high = (float(v) for v in event.new)
        if high <= low:
            high = low + max(abs(low) * 1e-6, 1e-6)
        self._apply(seg.display.with_range(channel, low, high))

    def _on_channels(self, event: Any) -> None:
        seg = self.segmenter
        if self._updating or seg.display is None or event.new is None:
            return
        c = seg.display.n_channels
        channels = tuple(range(min(c, 3))) if event.new == COMPOSITE else (int(event.new),)
        self._apply(seg.display.with_channels(channels))

    def _on_auto(self, event: Any = None) -> None:
        self._apply(None)

    def _apply(self, display: DisplaySettings | None) -> None:
        try:
            self.segmenter.set_display(display)
        except ValueError as exc:
            self.context.report(str(exc))


def _choice(display: DisplaySettings) -> str:
    if len(display.channels) == 1 and display.n_channels > 1:
        return str(display.channels[0])
    return COMPOSITE
