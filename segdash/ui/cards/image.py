"""The Image card: a bundled sample or an uploaded image, and what is open."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import panel as pn

from ...io.naming import IMAGE_SUFFIXES
from ...io.pyramid import is_large
from ..display import markdown_text
from ..samples import load_sample, sample_names
from .base import Card, CardContext, limit_note, note

#: Working resolutions offered for a large image: label -> downsample factor.
RESOLUTIONS = {"full" if d == 1 else f"1/{d}": d for d in (1, 2, 4, 8, 16, 32, 64, 128, 256)}
#: What the image upload offers to choose: the endings segdash reads images from.
IMAGE_ACCEPT = ",".join(IMAGE_SUFFIXES)


class ImageCard(Card):
    """Choose a bundled sample or upload an image; what is open."""

    title = "Image"
    watches = ("image", "source", "image_name", "project", "downsample", "project_changes")

    def __init__(self, context: CardContext, **params: Any) -> None:
        super().__init__(context, **params)
        samples = sample_names()
        name = self.segmenter.image_name
        self.sample_select = pn.widgets.Select(
            label="Sample image", options={"(choose a sample)": "", **{n: n for n in samples}},
            value=name if name in samples else "")
        self.sample_select.param.watch(self._on_sample, "value")
        self.upload = self._upload_widget("image", list(IMAGE_SUFFIXES), self._open_upload)
        self.info = pn.pane.Markdown("", margin=(0, 10))
        #: Working resolution of a large image (features, training, results).
        self.resolution = pn.widgets.Select(
            label="Working resolution", options=RESOLUTIONS, value=1, visible=False,
            css_classes=["segdash-resolution"])
        self.resolution.param.watch(self._on_resolution, "value")

    def controls(self) -> list[Any]:
        return [self.sample_select,
                note(f"Or upload PNG, JPEG or TIFF ({limit_note(self.context)}):"),
                self.upload, self.info, self.resolution]

    def refresh(self, names: set[str]) -> None:
        seg = self.segmenter
        # in a project, an upload joins the project; a sample would leave it
        self.sample_select.visible = seg.project is None
        img = seg.image
        project = seg.project
        # in a project the working resolution is the project's (every image): offered on
        # any of its images once one is large
        self.resolution.visible = seg.source is not None or (
            project is not None and any(is_large(i.shape) for i in project.images))
        self.resolution.name = ("Working resolution (every image of the project)"
                                if project is not None else "Working resolution")
        if self.resolution.visible:
            self._set_quietly(self.resolution, seg.downsample)
        if img is None and seg.source is not None:
            h, w, c = seg.source.shape
            self.info.object = (f"**{markdown_text(seg.image_name)}**: {w}x{h}, {c} "
                                f"channel(s), {seg.source.dtype}, read tile by tile "
                                f"({len(seg.source.levels)} pyramid levels)")
            return
        if img is None:
            self.info.object = ""
            return
        channels = 1 if img.ndim == 2 else img.shape[2]
        self.info.object = (f"**{markdown_text(seg.image_name)}**: {img.shape[1]}x"
                            f"{img.shape[0]}, {channels} channel(s), {img.dtype}")

    def _on_resolution(self, event: Any) -> None:
        if self._updating or event.new == self.segmenter.downsample:
            return
        self.context.worker.submit(partial(setattr, self.segmenter, "downsample", event.new))

    def _on_sample(self, event: Any) -> None:
        if self._updating or not event.new:
            return
        self.context.clear_error()
        self.context.worker.submit(partial(self._open_sample, event.new))

    def _open_sample(self, name: str) -> None:
        self.segmenter.set_image(load_sample(name), name)

    def _open_upload(self, path: Path, filename: str) -> None:
        self.segmenter.open_upload(path, filename, self.context.uploads.path)
        self.context.on_ui(partial(self._set_quietly, self.sample_select, ""))
