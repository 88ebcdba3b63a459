"""The Files card: result downloads, and a model or annotations to upload."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from typing import Any

import panel as pn

from .base import Card, CardContext, note, read_upload


class FilesCard(Card):
    """Downloads of the results and the annotations; a model or annotations to upload."""

    title = "Files"
    watches = ("segmentation", "model", "source")

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.download_labels = self._download("labels", "Label image", "labels.png")
        self.download_overlay = self._download("overlay", "Coloured overlay (PNG)",
                                               "overlay.png")
        self.download_proba = self._download("proba", "Probabilities (TIFF)", "proba.tif")
        self.download_model = self._download("model", "Model (.skops)", "model.skops")
        self.download_annotations = self._download("annotations", "Annotations (JSON)",
                                                   "annotations.json", disabled=False)
        # any type: browsers report no MIME type for .skops (the content is checked)
        self.model_upload = self._upload_widget("model", [], self._apply_model, whole=True)
        self.annotations_upload = self._upload_widget("annotations", [".json"],
                                                      self._load_annotations, whole=True)

    def controls(self) -> list[Any]:
        return [self.download_labels, self.download_overlay, self.download_proba,
                self.download_model,
                self.download_annotations,
                note("Apply a model (.skops):"), self.model_upload,
                note("Restore annotations (.json):"), self.annotations_upload]

    def refresh(self, names: set[str]) -> None:
        seg = self.segmenter
        ready = seg.segmentation is not None
        # a large image's labels are computed tile by tile when downloaded; its overlay is
        # `segdash apply --overlay`'s
        large = seg.source is not None
        self.download_labels.disabled = not (ready or (large and seg.model is not None))
        self.download_overlay.disabled = not ready or large
        self.download_proba.disabled = not ready or large
        self.download_model.disabled = seg.model is None

    def _download(self, kind: str, label: str, filename: str,
                  disabled: bool = True) -> pn.widgets.FileDownload:
        widget = pn.widgets.FileDownload(filename=filename, label=label, disabled=disabled)
        widget.callback = partial(self._result_file, kind, widget)
        return widget

    def _result_file(self, kind: str, widget: pn.widgets.FileDownload) -> io.BytesIO:
        try:
            filename, data = self.segmenter.result_file(kind)
        except ValueError as exc:
            self.context.report(str(exc))
            raise
        widget.filename = filename
        return io.BytesIO(data)

    def _apply_model(self, path: Path, filename: str) -> None:
        self.segmenter.apply_model_file(read_upload(path))

    def _load_annotations(self, path: Path, filename: str) -> None:
        n = self.segmenter.load_strokes_json(read_upload(path))
        self.segmenter.status = f"restored {n} strokes from {filename}"
