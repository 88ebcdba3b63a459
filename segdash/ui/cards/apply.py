"""The Apply card: *Apply to project* with progress, cancel, browsable results and a zip."""

from __future__ import annotations

import io
import os
from functools import partial
from pathlib import Path
from typing import Any

import panel as pn

from ..display import html_text
from ..project_apply import ApplyRun
from .base import Card, CardContext

#: Largest overlay file shown in the card (bigger ones, a slide's, are in the zip only).
MAX_PREVIEW_BYTES = 16_000_000


class ApplyCard(Card):
    """Run the current model over every image of the project (the batch engine in a child
    process, on the Dask cluster given by ``segdash serve --scheduler``)."""

    title = "Apply to project"
    watches = ("model", "project")
    project_only = True

    def __init__(self, context: CardContext, scheduler: str | None = None,
                 **params: Any) -> None:
        super().__init__(context, **params)
        self.scheduler = scheduler
        self.run: ApplyRun | None = None
        self.start_button = pn.widgets.Button(label="Apply to project", color="primary",
                                              disabled=True, css_classes=["segdash-apply"])
        self.start_button.on_click(self._on_start)
        self.cancel_button = pn.widgets.Button(label="Cancel", disabled=True,
                                               css_classes=["segdash-apply-cancel"])
        self.cancel_button.on_click(self._on_cancel)
        self.progress = pn.indicators.Progress(value=0, max=1000, visible=False,
                                               sizing_mode="stretch_width",
                                               css_classes=["segdash-apply-progress"])
        self.info = pn.pane.Str("", css_classes=["segdash-apply-info"])
        self.result_select = pn.widgets.Select(label="Result", options=[], visible=False,
                                               css_classes=["segdash-apply-result"])
        self.result_select.param.watch(self._on_result, "value")
        self.preview = pn.pane.PNG(None, width=300, visible=False)
        self.download = pn.widgets.FileDownload(label="Results (zip)", filename="results.zip",
                                                callback=self._zip, disabled=True)

    def controls(self) -> list[Any]:
        return [pn.Row(self.start_button, self.cancel_button), self.progress, self.info,
                self.result_select, self.preview, self.download]

    def refresh(self, names: set[str]) -> None:
        seg = self.segmenter
        self._show_if_project()
        running = self.run is not None and self.run.state == "running"
        self.start_button.disabled = seg.model is None or seg.project is None or running

    # -- running ----------------------------------------------------------------------

    def _on_start(self, event: Any) -> None:
        seg = self.segmenter
        if seg.project is None or seg.model is None:
            return
        self.context.clear_error()
        if self.run is not None:
            self.run.close()
        _, model = seg.result_file("model")
        inputs = [seg.project.path_of(img) for img in seg.project.images]
        self.run = ApplyRun(model, inputs, self.scheduler,
                            on_change=lambda: self.context.on_ui(self._show))
        self._show()

    def _on_cancel(self, event: Any) -> None:
        if self.run is not None:
            self.run.cancel()

    def _show(self) -> None:
        run = self.run
        if run is None:
            return
        running = run.state == "running"
        self.progress.visible = True
        self.progress.value = int(run.fraction * 1000) if running or run.state != "done" \
            else 1000
        self.cancel_button.disabled = not running
        self.start_button.disabled = running or self.segmenter.model is None
        images = f"{run.images[0]}/{run.images[1]} image(s)" if run.images[1] else ""
        # Panel's Str pane renders HTML: the message names files and images
        self.info.object = html_text(f"running: {images}" if running else run.message)
        overlays = {p.name: str(p) for p in run.files() if p.name.endswith("_overlay.png")}
        if list(overlays) != list(self.result_select.options):
            self.result_select.options = overlays
        self.result_select.visible = self.preview.visible = bool(overlays)
        self.download.disabled = not run.files()

    def _on_result(self, event: Any) -> None:
        if event.new:
            self.context.worker.submit(partial(self._load_preview, event.new))

    def _load_preview(self, path: str) -> None:
        size = os.path.getsize(path)
        if size > MAX_PREVIEW_BYTES:
            # a slide's overlay: hundreds of MB the page would hold to show 300 pixels
            self.context.on_ui(partial(self.preview.param.update, object=None))
            self.context.on_ui(partial(setattr, self.info, "object", html_text(
                f"{Path(path).name} ({size / 1e6:.0f} MB) is too large to preview here: "
                "it is in the zip")))
            return
        with open(path, "rb") as fh:
            data = fh.read()
        self.context.on_ui(partial(setattr, self.preview, "object", data))

    def _zip(self) -> io.BytesIO:
        if self.run is None:
            raise ValueError("apply the model first")
        return io.BytesIO(self.run.zip_bytes())

    def close(self) -> None:
        """Stop a run and delete its results (the session ended)."""
        if self.run is not None:
            self.run.close()
            self.run = None
