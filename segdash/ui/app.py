"""The dashboard: a thin :class:`panel.viewable.Viewer` over one session's :class:`Segmenter`.

Every browser session builds its own :class:`SegdashApp` (and so its own Segmenter, plot and
widgets). Widgets write to the Segmenter; the app watches the Segmenter's outputs and
updates the page. Slow work (features, training, prediction, reading uploads) runs on a
:class:`~segdash.ui.worker.SessionWorker`, never on the server's event loop; what it changes
reaches the page through :meth:`SegdashApp._on_ui`, which schedules page updates on the
Bokeh document's event loop.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import panel as pn
import param
from panel.io.state import set_curdoc

from .. import registry
from ..classes import colorize
from ..errors import SegdashError
from ..io import label_format, read_image, write_labels, write_rgba_png
from ..persist import model_from_bytes
from ..segmenter import Segmenter
from .canvas import Canvas
from .display import text_color
from .samples import DEFAULT_SAMPLE, load_sample, sample_names
from .settings import settings_panel
from .worker import SessionWorker

log = logging.getLogger("segdash.ui")

#: Uploads larger than this are refused on the server (bytes); the browser checks too.
MAX_UPLOAD_BYTES = 200_000_000
_IMAGE_ACCEPT = ".png,.jpg,.jpeg,.tif,.tiff"
_WATCHED = ("image", "classes", "strokes", "segmentation", "uncertainty", "model", "status",
            "error", "busy", "features", "classifier")


def user_message(exc: BaseException) -> str:
    """What to tell the user about ``exc``: segdash's own errors as they are, others named."""
    if isinstance(exc, SegdashError | ValueError):
        return str(exc)
    return f"unexpected error ({type(exc).__name__}): {exc}"


def _label(text: str) -> pn.pane.Markdown:
    return pn.pane.Markdown(text, margin=(0, 10))


class SegdashApp(pn.viewable.Viewer):
    """The segdash dashboard for one browser session.

    Parameters
    ----------
    image : numpy.ndarray, optional
        Image to open; default: the bundled sample :data:`DEFAULT_SAMPLE`.
    image_name : str, optional
        Its name, used for download file names.
    """

    active_class = param.Integer(default=1, doc="Class the next stroke paints.")
    stroke_width = param.Integer(default=5, bounds=(1, 100), softbounds=(1, 50),
                                 doc="Brush width, in image pixels.")
    show_overlay = param.Boolean(default=True, doc="Show the segmentation overlay.")
    opacity = param.Number(default=0.5, bounds=(0.0, 1.0), step=0.05,
                           doc="Opacity of the overlay.")
    view = param.Selector(default="segmentation", objects=["segmentation", "uncertainty"],
                          doc="What the overlay shows.")

    def __init__(self, image: np.ndarray | None = None, image_name: str | None = None,
                 **params: Any) -> None:
        super().__init__(**params)
        if image is None:
            image, image_name = load_sample(DEFAULT_SAMPLE), DEFAULT_SAMPLE
        self.image_name = image_name or "image"
        self._doc = pn.state.curdoc
        self._closed = False
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._scheduled = False
        self._updating = False
        #: The latest messages shown to the user (for tests and scripts).
        self.errors: deque[str] = deque(maxlen=100)
        self._panels: dict[tuple[str, str], pn.Column] = {}

        self.segmenter = Segmenter(image=image)
        self.worker = SessionWorker(on_error=self._job_failed,
                                    on_busy=partial(self._request, "busy"))
        self.segmenter.run_training = partial(self.worker.submit, key="train")
        self.canvas = Canvas(self.segmenter, self._brush, self.report)
        self._build_widgets()
        self.segmenter.param.watch(self._on_state, list(_WATCHED))
        self._pending.update(_WATCHED)
        self._flush()  # the first page is complete before it is sent

    # -- layout -----------------------------------------------------------------------

    def _build_widgets(self) -> None:
        seg = self.segmenter
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False,
                                   sizing_mode="stretch_width", css_classes=["segdash-error"])
        for reg in (registry.features, registry.classifiers):
            reg.load_all()  # failures are recorded in reg.errors, shown below
        plugin_errors = [str(e) for reg in (registry.features, registry.classifiers)
                         for e in reg.errors]
        self.plugin_alert = pn.pane.Alert(
            "**Plugins that failed to load:**\n\n" + "\n".join(f"- {e}" for e in plugin_errors),
            alert_type="warning", visible=bool(plugin_errors), sizing_mode="stretch_width",
            css_classes=["segdash-plugin-errors"])
        self.spinner = pn.indicators.LoadingSpinner(value=False, size=24,
                                                    css_classes=["segdash-busy"])
        self.status = pn.pane.Str("", css_classes=["segdash-status"])

        # Image
        samples = sample_names()
        self.sample_select = pn.widgets.Select(
            label="Sample image", options={"(choose a sample)": "", **{n: n for n in samples}},
            value=self.image_name if self.image_name in samples else "")
        self.sample_select.param.watch(self._on_sample, "value")
        self.image_upload = pn.widgets.FileInput(accept=_IMAGE_ACCEPT, multiple=False)
        self.image_upload.param.watch(partial(self._on_upload, self._open_upload), "value")
        self.image_info = pn.pane.Markdown("", margin=(0, 10))

        # Classes
        self.class_buttons = pn.FlexBox(sizing_mode="stretch_width")
        self.add_class_button = pn.widgets.Button(label="Add class")
        self.add_class_button.on_click(self._add_class)
        self.class_name = pn.widgets.TextInput(label="Name of the selected class")
        self.class_name.param.watch(self._rename_class, "value")
        self.class_color = pn.widgets.ColorPicker(label="Colour")
        self.class_color.param.watch(self._recolor_class, "value")
        self.remove_class_button = pn.widgets.Button(label="Remove class",
                                                     color="danger", variant="outline")
        self.remove_class_button.on_click(self._remove_class)

        # Strokes
        self.width_slider = pn.widgets.IntSlider.from_param(
            self.param.stroke_width, label="Stroke width (image pixels)")
        self.undo_button = pn.widgets.Button(label="Undo")
        self.undo_button.on_click(lambda _: self.segmenter.undo())
        self.redo_button = pn.widgets.Button(label="Redo")
        self.redo_button.on_click(lambda _: self.segmenter.redo())
        self.clear_button = pn.widgets.Button(label="Clear")
        self.clear_button.on_click(lambda _: self.segmenter.clear())

        # Features and classifier
        self.features_select = pn.widgets.MultiChoice(
            label="Feature extractors", options=registry.features.names(), value=list(seg.features))
        self.features_select.param.watch(self._on_features, "value")
        self.feature_settings = pn.Column(sizing_mode="stretch_width")
        self.classifier_select = pn.widgets.Select(
            label="Classifier", options=registry.classifiers.names(), value=seg.classifier)
        self.classifier_select.param.watch(self._on_classifier, "value")
        self.classifier_settings = pn.Column(sizing_mode="stretch_width")

        # Results
        self.live_toggle = pn.widgets.Checkbox.from_param(
            seg.param.live_update, label="Live update (retrain after each change)")
        self.train_button = pn.widgets.Button(label="Train", color="primary")
        self.train_button.on_click(self._train_clicked)
        self.overlay_toggle = pn.widgets.Checkbox.from_param(self.param.show_overlay,
                                                              label="Show overlay")
        self.opacity_slider = pn.widgets.FloatSlider.from_param(self.param.opacity,
                                                                label="Overlay opacity")
        self.view_select = pn.widgets.RadioButtonGroup.from_param(self.param.view, label="Show")

        # Files
        self.download_labels = pn.widgets.FileDownload(
            callback=self._labels_file, filename="labels.png", label="Label image",
            disabled=True)
        self.download_overlay = pn.widgets.FileDownload(
            callback=self._overlay_file, filename="overlay.png", label="Coloured overlay (PNG)",
            disabled=True)
        self.download_model = pn.widgets.FileDownload(
            callback=self._model_file, filename="model.skops", label="Model (.skops)",
            disabled=True)
        self.download_strokes = pn.widgets.FileDownload(
            callback=self._strokes_file, filename="annotations.json",
            label="Annotations (JSON)")
        self.model_upload = pn.widgets.FileInput(accept=".skops")
        self.model_upload.param.watch(partial(self._on_upload, self._apply_model), "value")
        self.strokes_upload = pn.widgets.FileInput(accept=".json")
        self.strokes_upload.param.watch(partial(self._on_upload, self._load_strokes), "value")

        self._settings_panels()

    def sidebar(self) -> list[Any]:
        """The controls, in the order they are used."""
        card = partial(pn.Card, sizing_mode="stretch_width", margin=(5, 0))
        return [
            card(self.sample_select, _label("Or upload PNG, JPEG or TIFF:"), self.image_upload,
                 self.image_info, title="Image"),
            card(self.class_buttons, pn.Row(self.add_class_button, self.remove_class_button),
                 self.class_name, self.class_color, title="Classes"),
            card(self.width_slider, pn.Row(self.undo_button, self.redo_button, self.clear_button),
                 title="Strokes"),
            card(self.features_select, self.feature_settings, title="Features"),
            card(self.classifier_select, self.classifier_settings, title="Classifier"),
            card(self.live_toggle, self.train_button, self.overlay_toggle, self.opacity_slider,
                 self.view_select, title="Results"),
            card(self.download_labels, self.download_overlay, self.download_model,
                 self.download_strokes,
                 _label("Apply a model (.skops):"), self.model_upload,
                 _label("Restore annotations (.json):"), self.strokes_upload, title="Files"),
        ]

    def main(self) -> list[Any]:
        """Messages, the busy indicator and status, and the plot."""
        return [self.plugin_alert, self.alert, pn.Row(self.spinner, self.status),
                self.canvas.pane]

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(pn.Column(*self.sidebar(), width=380), pn.Column(*self.main()))

    def template(self) -> pn.template.FastListTemplate:
        """The full page: a FastListTemplate titled segdash."""
        return pn.template.FastListTemplate(
            title="segdash", sidebar=self.sidebar(), main=self.main(), sidebar_width=390,
            main_layout=None, accent="#0072b2", theme_toggle=False)

    # -- from worker threads to the page ----------------------------------------------

    def _on_ui(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` where it may touch the page: now if this thread holds the
        document, else on the document's event loop."""
        doc = self._doc
        if doc is None or doc.session_context is None:
            callback()
            return
        with set_curdoc(doc):
            pn.state.execute(callback)

    def _on_state(self, *events: param.parameterized.Event) -> None:
        self._request(*(e.name for e in events))

    def _request(self, *names: str) -> None:
        """Ask for the page parts depending on ``names`` to be refreshed (coalesced)."""
        with self._pending_lock:
            self._pending.update(names)
            if self._scheduled:
                return
            self._scheduled = True
        self._on_ui(self._flush)

    def _flush(self) -> None:
        with self._pending_lock:
            names, self._pending = self._pending, set()
            self._scheduled = False
        if self._closed or not names:
            return
        seg = self.segmenter
        self._updating = True
        try:
            if "image" in names:
                self.canvas.rebuild()
                self._show_image_info()
            if names & {"classes"}:
                if self.active_class not in {c.id for c in seg.classes} and seg.classes:
                    self.active_class = seg.classes[0].id
                self._show_classes()
                self.canvas.set_brush()
            if names & {"strokes", "classes"} and "image" not in names:
                self.canvas.sync_strokes()
            if names & {"strokes", "classes", "image"}:
                self.undo_button.disabled = not seg.strokes
                self.redo_button.disabled = not seg.can_redo
                self.clear_button.disabled = not seg.strokes
            if names & {"segmentation", "uncertainty", "classes", "model", "image"}:
                self.canvas.update_overlay()
                ready = seg.segmentation is not None
                self.download_labels.disabled = self.download_overlay.disabled = not ready
                self.download_model.disabled = seg.model is None
                if "segmentation" in names and ready and not seg.error:
                    self._clear_error()  # a new result: the last error is history
            if names & {"features", "classifier"}:
                self.features_select.value = list(seg.features)
                self.classifier_select.value = seg.classifier
                self._settings_panels()
            if "busy" in names or "status" in names:
                self.spinner.value = bool(seg.busy or self.worker.busy)
                self.status.object = seg.status
            if "error" in names and seg.error:
                self._show_error(seg.error)
        finally:
            self._updating = False

    # -- messages ---------------------------------------------------------------------

    def report(self, message: str) -> None:
        """Show a user error in the page (from any thread)."""
        self._on_ui(partial(self._show_error, message))

    def _show_error(self, message: str) -> None:
        self.errors.append(message)
        self.alert.object = message
        self.alert.visible = True
        notifications = pn.state.notifications
        if notifications is not None:
            notifications.error(message, duration=8000)

    def _clear_error(self) -> None:
        self.alert.visible = False

    def _job_failed(self, exc: BaseException) -> None:
        if not isinstance(exc, SegdashError | ValueError):
            log.error("job failed", exc_info=exc)
        self.report(user_message(exc))

    def _show_image_info(self) -> None:
        img = self.segmenter.image
        if img is None:
            self.image_info.object = ""
            return
        channels = 1 if img.ndim == 2 else img.shape[2]
        self.image_info.object = (f"**{self.image_name}**: {img.shape[1]}x{img.shape[0]}, "
                                  f"{channels} channel(s), {img.dtype}")

    # -- classes ----------------------------------------------------------------------

    def _brush(self) -> tuple[int, str, float]:
        seg = self.segmenter
        try:
            color = seg.class_info(self.active_class).color
        except ValueError:
            color = "#000000"
        return self.active_class, color, float(self.stroke_width)

    def _show_classes(self) -> None:
        buttons = []
        for c in self.segmenter.classes:
            active = c.id == self.active_class
            css = (f":host .bk-btn {{ background: {c.color} !important; "
                   f"color: {text_color(c.color)} !important; "
                   f"border: 3px solid {'#222' if active else 'transparent'} !important; "
                   f"font-weight: {'bold' if active else 'normal'}; }}")
            classes = ["segdash-class", "active"] if active else ["segdash-class"]
            button = pn.widgets.Button(label=c.name, stylesheets=[css], margin=(4, 4),
                                       css_classes=classes)
            button.on_click(partial(self._select_class, c.id))
            buttons.append(button)
        self.class_buttons.objects = buttons
        info = next((c for c in self.segmenter.classes if c.id == self.active_class), None)
        self.class_name.value = info.name if info else ""
        self.class_color.value = info.color if info else "#000000"
        self.remove_class_button.disabled = len(self.segmenter.classes) <= 1

    def _select_class(self, class_id: int, event: Any = None) -> None:
        self.active_class = class_id
        self._updating = True
        try:
            self._show_classes()
        finally:
            self._updating = False
        self.canvas.set_brush()

    @param.depends("stroke_width", watch=True)
    def _on_width(self) -> None:
        self.canvas.set_brush()

    def _add_class(self, event: Any = None) -> None:
        info = self.segmenter.add_class()
        self._select_class(info.id)

    def _remove_class(self, event: Any = None) -> None:
        if len(self.segmenter.classes) <= 1:
            self.report("keep at least one class")
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
            self.report(str(exc))

    # -- overlay settings -------------------------------------------------------------

    @param.depends("show_overlay", "opacity", "view", watch=True)
    def _on_overlay_settings(self) -> None:
        self.canvas.show_overlay = self.show_overlay
        self.canvas.opacity = self.opacity
        self.canvas.view = self.view
        self.canvas.update_overlay()

    # -- features and classifier ------------------------------------------------------

    def _settings_panel(self, kind: str, name: str) -> pn.Column:
        # One panel per settings object: the Segmenter keeps the objects across selections,
        # and a new panel would add watchers to them each time.
        key = (kind, name)
        if key not in self._panels:
            seg = self.segmenter
            obj = seg.extractor(name) if kind == "features" else seg.classifier_settings(name)
            self._panels[key] = settings_panel(obj, title=name)
        return self._panels[key]

    def _settings_panels(self) -> None:
        seg = self.segmenter
        panels = []
        for name in seg.features:
            try:
                panels.append(self._settings_panel("features", name))
            except SegdashError as exc:
                self.report(str(exc))
        self.feature_settings.objects = panels
        try:
            self.classifier_settings.objects = [
                self._settings_panel("classifier", seg.classifier)]
        except SegdashError as exc:
            self.report(str(exc))

    def _on_features(self, event: Any) -> None:
        if self._updating or list(event.new) == list(self.segmenter.features):
            return
        names = list(event.new)
        try:
            if not names:
                raise ValueError("select at least one feature extractor")
            for name in names:
                self.segmenter.extractor(name)  # loads the plugin: may fail
        except (SegdashError, ValueError) as exc:
            self.report(str(exc))
            self._revert(self.features_select, list(self.segmenter.features))
            return
        self.segmenter.features = names

    def _on_classifier(self, event: Any) -> None:
        if self._updating or event.new == self.segmenter.classifier:
            return
        try:
            self.segmenter.classifier_settings(event.new)  # loads the plugin: may fail
        except SegdashError as exc:
            self.report(str(exc))
            self._revert(self.classifier_select, self.segmenter.classifier)
            return
        self.segmenter.classifier = event.new

    def _revert(self, widget: Any, value: Any) -> None:
        self._updating = True
        try:
            widget.value = value
        finally:
            self._updating = False

    # -- jobs -------------------------------------------------------------------------

    def _train_clicked(self, event: Any = None) -> None:
        self._clear_error()
        self.worker.submit(self._train_now, key="train")

    def _train_now(self) -> None:
        seg = self.segmenter
        if seg.train() is None and not seg.error and seg.status:
            raise ValueError(seg.status)  # e.g. fewer than two classes painted

    def _on_sample(self, event: Any) -> None:
        if self._updating or not event.new:
            return
        self._clear_error()
        self.worker.submit(partial(self._open_sample, event.new))

    def _open_sample(self, name: str) -> None:
        image = load_sample(name)
        self.image_name = name
        self.segmenter.set_image(image)

    def _on_upload(self, handler: Callable[[bytes, str], Any], event: Any) -> None:
        data = event.new
        if not data:
            return
        widget = event.obj
        filename = str(getattr(widget, "filename", None) or "upload")
        widget.clear()  # the same file can be chosen again...
        widget.param.update(value=None, filename=None)  # ...and the widget keeps no copy
        self._clear_error()
        if len(data) > MAX_UPLOAD_BYTES:
            self.report(f"{filename}: file too large ({len(data)} bytes; the limit is "
                        f"{MAX_UPLOAD_BYTES} bytes)")
            return
        self.worker.submit(partial(handler, bytes(data), filename))

    def _open_upload(self, data: bytes, filename: str) -> None:
        try:
            image = read_image(data)
        except SegdashError as exc:
            raise SegdashError(str(exc).replace("upload:", f"{filename}:", 1)) from exc
        self.image_name = filename
        self.segmenter.set_image(image)
        self._on_ui(partial(self._revert, self.sample_select, ""))

    def _apply_model(self, data: bytes, filename: str) -> None:
        model = model_from_bytes(data)
        self.segmenter.apply_model(model)

    def _load_strokes(self, data: bytes, filename: str) -> None:
        n = self.segmenter.load_strokes_json(data)
        self.segmenter.status = f"restored {n} strokes from {filename}"

    # -- downloads --------------------------------------------------------------------

    @property
    def _stem(self) -> str:
        return Path(self.image_name).stem or "image"

    def _labels_file(self) -> io.BytesIO:
        labels = self._need("segmentation")
        self.download_labels.filename = (
            f"{self._stem}_labels.{'png' if label_format(labels) == 'PNG' else 'tif'}")
        buf = io.BytesIO()
        write_labels(labels, buf)
        buf.seek(0)
        return buf

    def _overlay_file(self) -> io.BytesIO:
        labels = self._need("segmentation")
        self.download_overlay.filename = f"{self._stem}_overlay.png"
        buf = io.BytesIO()
        write_rgba_png(colorize(labels, self.segmenter.classes), buf)
        buf.seek(0)
        return buf

    def _model_file(self) -> io.BytesIO:
        model = self._need("model")
        self.download_model.filename = f"{self._stem}_model.skops"
        return io.BytesIO(model.to_bytes())

    def _strokes_file(self) -> io.BytesIO:
        self.download_strokes.filename = f"{self._stem}_annotations.json"
        return io.BytesIO(self.segmenter.strokes_json().encode())

    def _need(self, name: str) -> Any:
        value = getattr(self.segmenter, name)
        if value is None:
            message = "train a model first (paint at least two classes)"
            self.report(message)
            raise ValueError(message)
        return value

    # -- lifetime ---------------------------------------------------------------------

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until queued jobs have run (for scripts and tests); False on timeout."""
        return self.worker.wait_idle(timeout)

    def close(self) -> None:
        """Free the session's memory: stop jobs, drop the image, features and results."""
        if self._closed:
            return  # Bokeh may report a session's end more than once
        self._closed = True
        log.info("session closed: releasing %s", self.image_name)
        self.worker.close()
        self.segmenter.run_training = lambda job: None
        self.segmenter.release()
        self.canvas.pane.object = None
