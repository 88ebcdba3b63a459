"""The Project card: the project's images to switch between, a stack's frame slider, the
project file (saved after every change) to download or upload."""

from __future__ import annotations

import io
from functools import partial
from pathlib import Path
from typing import Any

import panel as pn

from ...errors import SegdashError
from ..display import markdown_text
from .base import Card, CardContext, note, read_upload


class ProjectCard(Card):
    """The images of the open project (name, size, strokes, thumbnail), the frame of a
    stack, and the project file. Hidden when a single image is open without a project."""

    title = "Project"
    watches = ("project", "project_changes", "current", "frame", "image", "status")
    project_only = True

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        self.info = pn.pane.Markdown("", margin=(0, 10), css_classes=["segdash-project-info"])
        self.images = pn.Column(sizing_mode="stretch_width",
                                css_classes=["segdash-project-images"])
        self.frame_slider = pn.widgets.IntSlider(label="Frame", start=1, end=2, value=1,
                                                 visible=False,
                                                 css_classes=["segdash-frame"])
        self.frame_slider.param.watch(self._on_frame, "value")
        #: Removing the image on screen: asked once more, since its strokes go with it.
        self.remove_button = pn.widgets.Button(label="Remove this image…", variant="outline",
                                               sizing_mode="stretch_width",
                                               css_classes=["segdash-remove-image"])
        self.remove_button.on_click(self._on_remove)
        self.confirm_text = pn.pane.Markdown("", margin=(0, 10))
        self.confirm_button = pn.widgets.Button(label="Remove", color="danger",
                                                css_classes=["segdash-remove-confirm"])
        self.confirm_button.on_click(self._on_confirm_remove)
        self.keep_button = pn.widgets.Button(label="Keep it", css_classes=["segdash-remove-keep"])
        self.keep_button.on_click(self._on_keep)
        self.confirm = pn.Column(self.confirm_text, pn.Row(self.confirm_button, self.keep_button),
                                 visible=False, sizing_mode="stretch_width",
                                 css_classes=["segdash-remove-ask"])
        self._removing: int | None = None
        self.download = pn.widgets.FileDownload(label="Project file (JSON)",
                                                filename="segdash-project.json",
                                                callback=self._project_file)
        self.upload = self._upload_widget("project", [".json"], self._load_project,
                                          whole=True)
        self._thumbs: dict[tuple[str, str], bytes] = {}
        self._paths: tuple = ()
        self._entries: list[tuple[Any, pn.widgets.Button]] = []

    def controls(self) -> list[Any]:
        return [self.info, self.images, self.frame_slider, self.remove_button, self.confirm,
                self.download,
                note("Restore a project file (.json):"), self.upload]

    # -- showing ----------------------------------------------------------------------

    def refresh(self, names: set[str]) -> None:
        seg = self.segmenter
        project = seg.project
        self._show_if_project()
        if project is None:
            self.images.objects, self._entries, self._paths = [], [], ()
            self.frame_slider.visible = False
            return
        saved = f"saved to `{markdown_text(str(project.file))}` (revision {project.revision})"
        self.info.object = (f"**{len(project.images)} image(s)**, {saved}"
                            + (f"\n\n{markdown_text(project.notice)}" if project.notice else ""))
        paths = tuple((img.path, img.fingerprint, bool(img.problem)) for img in project.images)
        if paths != self._paths:
            # other images: new entries (buttons are otherwise updated in place, so that a
            # click landing while the page refreshes is not lost)
            self._paths = paths
            self._entries = [self._entry(i, img) for i, img in enumerate(project.images)]
            self.images.objects = [e[0] for e in self._entries]
        for i, (img, (_, button)) in enumerate(zip(project.images, self._entries,
                                                    strict=True)):
            current = i == seg.current
            button.param.update(label=self._label(img),
                                color="primary" if current else "default",
                                css_classes=["segdash-project-image"]
                                + (["active"] if current else []))
        entry = project.images[seg.current] if seg.current < len(project.images) else None
        self.remove_button.disabled = len(project.images) < 2
        if self._removing is not None and self._removing != seg.current:
            self._on_keep(None)  # asked about another image than the one now shown
        stack = entry is not None and entry.frames > 1
        with self._quiet():
            self.frame_slider.visible = stack
            if stack:
                self.frame_slider.param.update(end=entry.frames, value=seg.frame + 1)

    @staticmethod
    def _label(img: Any) -> str:
        h, w, _ = img.shape
        frames = f", {img.frames} frames" if img.frames > 1 else ""
        return f"{img.name}: {w}x{h}{frames}, {img.stroke_count} stroke(s)"

    def _entry(self, index: int, img: Any) -> tuple[Any, pn.widgets.Button]:
        button = pn.widgets.Button(label=self._label(img), disabled=bool(img.problem),
                                   sizing_mode="stretch_width",
                                   css_classes=["segdash-project-image"])
        button.on_click(partial(self._on_select, index))
        thumb = pn.pane.PNG(self._thumbs.get((img.path, img.fingerprint)), width=48,
                            height=48, margin=(2, 4))
        if (img.path, img.fingerprint) not in self._thumbs and not img.problem:
            self.context.worker.submit(partial(self._make_thumb, index, img, thumb))
        row = pn.Row(thumb, button, sizing_mode="stretch_width", margin=(0, 0))
        if img.problem:
            row = pn.Column(row, pn.pane.Markdown(markdown_text(img.problem), margin=(0, 10)),
                            sizing_mode="stretch_width")
        return row, button

    def _make_thumb(self, index: int, img: Any, pane: pn.pane.PNG) -> None:
        try:
            data = self.segmenter.thumbnail(index)
        except (SegdashError, ValueError):
            return  # the entry says what is wrong
        self._thumbs[(img.path, img.fingerprint)] = data
        self.context.on_ui(partial(setattr, pane, "object", data))

    # -- user actions ------------------------------------------------------------------

    def _on_select(self, index: int, event: Any) -> None:
        self.context.clear_error()
        self.context.worker.submit(partial(self.segmenter.select, index), key="select")

    def _on_remove(self, event: Any) -> None:
        seg = self.segmenter
        img = seg.project.images[seg.current]
        self._removing = seg.current
        self.confirm_text.object = (
            f"Remove **{markdown_text(img.name)}** and its {img.stroke_count} stroke(s) from "
            "the project? The file stays on disk; the strokes cannot be brought back.")
        self.confirm.visible = True

    def _on_keep(self, event: Any) -> None:
        self._removing = None
        self.confirm.visible = False

    def _on_confirm_remove(self, event: Any) -> None:
        index = self._removing
        self._on_keep(event)
        if index is None:
            return
        self.context.clear_error()
        self.context.worker.submit(partial(self.segmenter.remove_image, index), key="select",
                                   what="removing the image")

    def _on_frame(self, event: Any) -> None:
        if self._updating or event.new is None:
            return
        seg = self.segmenter
        self.context.clear_error()
        self.context.worker.submit(partial(seg.select, seg.current, int(event.new) - 1),
                                   key="select")

    def _project_file(self) -> io.BytesIO:
        try:
            name, data = self.segmenter.project_json()
        except ValueError as exc:
            self.context.report(str(exc))
            raise
        self.download.filename = name
        return io.BytesIO(data)

    def _load_project(self, path: Path, filename: str) -> None:
        self.segmenter.load_project_json(read_upload(path))
        self.segmenter.status = f"restored the project from {filename}"
