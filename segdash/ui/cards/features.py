"""The Features and Classifier cards: registry choices, each with its settings widgets."""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from ... import registry
from ...errors import SegdashError
from ..display import html_text
from ..settings import settings_panel
from .base import Card, CardContext


class _SettingsCard(Card):
    """A registry choice and, below it, the settings widgets of what is chosen."""

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.settings = pn.Column(sizing_mode="stretch_width")
        # One panel per settings object: the Segmenter keeps the objects across selections,
        # and a new panel would add watchers to them each time.
        self._panels: dict[str, pn.Column] = {}

    def _settings_object(self, name: str) -> param.Parameterized:
        raise NotImplementedError

    def _panel(self, name: str) -> pn.Column:
        if name not in self._panels:
            self._panels[name] = settings_panel(self._settings_object(name), title=name)
        return self._panels[name]

    def _show_settings(self, names: list[str]) -> None:
        panels = []
        for name in names:
            try:
                panels.append(self._panel(name))
            except SegdashError as exc:
                self.context.report(str(exc))
        self.settings.objects = panels


class FeaturesCard(_SettingsCard):
    """The feature extractors used side by side, each with its settings."""

    title = "Features"
    watches = ("features",)
    collapsed = True

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        # The choices' menu renders labels as HTML (Bokeh's Choices.js has allowHTML on):
        # the labels are escaped names, the values the names themselves.
        self.select = pn.widgets.MultiChoice(
            label="Feature extractors",
            options={html_text(n): n for n in registry.features.names()},
            value=list(self.segmenter.features))
        self.select.param.watch(self._on_select, "value")

    def controls(self) -> list[Any]:
        return [self.select, self.settings]

    def _settings_object(self, name: str) -> param.Parameterized:
        return self.segmenter.extractor(name)

    def refresh(self, names: set[str]) -> None:
        self._set_quietly(self.select, list(self.segmenter.features))
        self._show_settings(list(self.segmenter.features))

    def _on_select(self, event: Any) -> None:
        seg = self.segmenter
        if self._updating or list(event.new) == list(seg.features):
            return
        names = list(event.new)
        try:
            if not names:
                raise ValueError("select at least one feature extractor")
            for name in names:
                seg.extractor(name)  # loads the plugin: may fail
        except (SegdashError, ValueError) as exc:
            self.context.report(str(exc))
            self._set_quietly(self.select, list(seg.features))
            return
        seg.features = names


class ClassifierCard(_SettingsCard):
    """The classifier and its hyper-parameters."""

    title = "Classifier"
    watches = ("classifier",)
    collapsed = True

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.select = pn.widgets.Select(label="Classifier", options=registry.classifiers.names(),
                                        value=self.segmenter.classifier)
        self.select.param.watch(self._on_select, "value")

    def controls(self) -> list[Any]:
        return [self.select, self.settings]

    def _settings_object(self, name: str) -> param.Parameterized:
        return self.segmenter.classifier_settings(name)

    def refresh(self, names: set[str]) -> None:
        self._set_quietly(self.select, self.segmenter.classifier)
        self._show_settings([self.segmenter.classifier])

    def _on_select(self, event: Any) -> None:
        seg = self.segmenter
        if self._updating or event.new == seg.classifier:
            return
        try:
            seg.classifier_settings(event.new)  # loads the plugin: may fail
        except SegdashError as exc:
            self.context.report(str(exc))
            self._set_quietly(self.select, seg.classifier)
            return
        seg.classifier = event.new
