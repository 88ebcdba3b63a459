"""One interactive session's state: image, classes, strokes, settings and results.

:class:`Segmenter` is a :class:`param.Parameterized` with no dashboard import: the dashboard
renders it and watches its output parameters; tests and notebooks drive it directly.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import param

from . import registry
from .classes import ClassInfo, classes_from_dicts, default_class
from .codes import channel_range
from .contract import hook, image_channels, prepare_image, settings_of
from .errors import ImageError, ProjectError, SegdashError
from .history import EditHistory
from .importance import DEFAULT_KEEP, Importance, feature_importance, useful_settings
from .io.naming import result_name
from .io.pyramid import Pyramid, default_downsample, is_large, pyramid_of
from .io.read import read_untrusted, received_file
from .io.render import DisplaySettings, overlay_rgb, value_bounds
from .io.write import encode, proba_bytes, write_labels, write_png
from .model import (
    SegmentationModel,
    check_labels,
    fit,
    model_from_bytes,
    painted_rows,
    shared_quantizer,
)
from .ondemand import ByteCache, TiledImage, scale_strokes
from .postprocess import smoothing_halo
from .project import PaintedRows, Project, train_project
from .stack import FeatureStack
from .strokes import ERASER, Stroke, rasterize_strokes, strokes_from_json, strokes_to_json
from .treewalk import compile_trees, predict_proba_codes

#: Where an update's time goes (debug level: ``SEGDASH_TIMING=1 segdash serve`` shows it;
#: benchmarks/latency_browser.py reads it).
timing_log = logging.getLogger("segdash.timing")
#: Default bytes of a large image's tile cache (``segdash serve --cache-gb``).
DEFAULT_CACHE_BYTES = 1_000_000_000
#: Most tiles one view of a large image computes (zoom in, or work coarser, for more).
MAX_VIEW_TILES = 48
#: Images of at least this many pixels show a preview after each stroke: the model's
#: prediction at every PREVIEW_STRIDE-th pixel, shown at once, then the exact result.
PREVIEW_MIN_PIXELS = 1024 * 1024
PREVIEW_STRIDE = 2
#: Largest label image the dashboard downloads (beyond: ``segdash apply``).
MAX_LABEL_DOWNLOAD_PIXELS = 2**30
#: Seconds between announcements of a large image's newly predicted tiles (each one
#: re-renders the overlay of the view), so that a view fills progressively but not tile
#: by tile when tiles come fast.
FILL_REPORT_SECONDS = 0.3


@dataclass(frozen=True)
class EditState:
    """What undo and redo restore (a state of :class:`~segdash.history.EditHistory`).

    Attributes
    ----------
    strokes : tuple of Stroke
        The strokes of the image (and frame) on screen.
    classes : tuple of ClassInfo, or None
        The classes, recorded by edits that add or remove one (None: the edit left them
        alone). Restoring brings back the classes of these ids, each as it is named and
        coloured now when it still exists (a rename made since is kept).
    elsewhere : tuple of (image index, frame, strokes)
        Strokes of other project frames the edit changed (removing a class removes its
        strokes everywhere).
    """

    strokes: tuple[Stroke, ...]
    classes: tuple[ClassInfo, ...] | None = None
    elsewhere: tuple[tuple[int, int, tuple[Stroke, ...]], ...] = ()


def need_two_classes(painted: Iterable[int], classes: Sequence[ClassInfo]) -> str:
    """The status when fewer than two classes are painted, naming what is painted and what
    is not (``painted: "class 2"`` could otherwise be read as "two classes painted").

    Parameters
    ----------
    painted : iterable of int
        Class ids painted somewhere (0, unlabelled, is ignored).
    classes : sequence of ClassInfo
        The session's classes (names the ids).
    """
    ids = sorted({int(i) for i in painted} - {ERASER})
    names = {c.id: c.name for c in classes}
    done = ", ".join(f'"{names.get(i, f"class {i}")}"' for i in ids) or "nothing"
    todo = ", ".join(f'"{c.name}"' for c in classes if c.id not in ids)
    return (f"paint at least two classes to train; painted: {done}"
            + (f"; not painted yet: {todo}" if todo else ""))


class Segmenter(param.Parameterized):
    """Interactive segmentation of one image, or of a project of many.

    Inputs are the image, classes, strokes and the selected feature extractors and
    classifier with their settings. Outputs are parameters others can watch: ``labels``
    (painted mask), ``segmentation``, ``probabilities``, ``uncertainty``, ``model``,
    ``status`` and ``error``. Features are cached per image and feature settings: a new
    stroke retrains without recomputing them.

    With a :class:`~segdash.project.Project` (:meth:`open_project`), ``image`` and
    ``strokes`` are those of the current image and frame (:meth:`select` switches); every
    change is saved to the project file; training uses the painted pixels of every image
    and frame (:func:`~segdash.project.train_project`), keeping only their codes, while the
    image on screen alone holds its full features.
    """

    image = param.Array(default=None, doc="(H, W) or (H, W, C) image being segmented.")
    image_name = param.String(default="image", doc="File name of the image (names results).")
    classes = param.List(default=[], item_type=ClassInfo, doc="Classes users paint.")
    strokes = param.List(default=[], item_type=Stroke, doc="Strokes, in painting order.")
    features = param.List(default=["basic"], item_type=str,
                          doc="Selected feature extractor names (features concatenated).")
    classifier = param.String(default="random_forest", doc="Selected classifier name.")
    live_update = param.Boolean(default=True, doc="Retrain after every change.")
    preview = param.Boolean(default=False,
                            doc="On images of a megapixel or more, show a preview at every "
                                "other pixel first, then the exact result.")

    labels = param.Array(default=None, doc="(H, W) uint16 painted mask, 0 = unlabelled.")
    segmentation = param.Array(default=None, doc="(H, W) predicted class ids.")
    probabilities = param.Array(default=None, doc="(H, W, K) float32 in model.classes_ order.")
    uncertainty = param.Array(default=None, doc="(H, W) float32, 1 - max probability.")
    model = param.ClassSelector(class_=SegmentationModel, default=None,
                                doc="The last trained (or applied) model.")
    status = param.String(default="", doc="What happened last, for the user.")
    error = param.String(default="", doc="The last user error, empty when none.")
    busy = param.Boolean(default=False, doc="Training or predicting is in progress.")
    feature_computations = param.Integer(default=0, doc="Times features were computed.")
    project = param.ClassSelector(class_=Project, default=None,
                                  doc="The open project (None: one image, nothing saved).")
    current = param.Integer(default=0, doc="Index of the project image on screen.")
    frame = param.Integer(default=0, doc="Frame of the current image (stacks).")
    project_changes = param.Integer(default=0,
                                    doc="Counts changes to the project's images and strokes.")
    source = param.ClassSelector(class_=Pyramid, default=None,
                                 doc="A large image read lazily, tile by tile (``image`` is "
                                     "then None); see :meth:`open_pyramid`.")
    downsample = param.Integer(default=1, bounds=(1, 1024),
                               doc="Working resolution of a large image: features, training "
                                   "and results at 1/downsample of its pixels.")
    tiles_done = param.Integer(default=0,
                               doc="Counts tiles of a large image's results computed.")
    display = param.ClassSelector(class_=DisplaySettings, default=None,
                                  doc="How the open image is shown (range, channels): "
                                      "display only, never the features; see "
                                      ":meth:`set_display`.")

    def __init__(self, image: Any = None, **params: Any) -> None:
        params.setdefault("classes", [default_class(1), default_class(2)])
        super().__init__(**params)
        self._lock = threading.RLock()
        self._generation = 0
        #: Undo/redo of stroke and class edits (:class:`EditState`); one image's.
        self.history: EditHistory[EditState] = EditHistory()
        self._cache_key: tuple | None = None
        self._cache: np.ndarray | None = None
        self._image_token = 0
        self._extractors: dict[str, param.Parameterized] = {}
        #: How live retraining runs: called with a zero-argument function. The default runs
        #: it at once; the dashboard hands it to a worker thread.
        self.run_training: Callable[[Callable[[], Any]], Any] = lambda job: job()
        self._classifiers: dict[str, param.Parameterized] = {}
        self._rows = PaintedRows(DEFAULT_CACHE_BYTES)
        self._quantizer_cache: tuple[tuple, Any] | None = None
        self._syncing = False
        #: Why the project could not be saved (shown until a save succeeds).
        self._save_problem = ""
        #: Bytes this session may use for one image's features and results (None: no
        #: limit); checked before features are computed (:func:`check_memory`).
        self.memory_limit: int | None = None
        #: How filling the view of a large image runs (like :attr:`run_training`, its own
        #: queue key so that it never replaces a training).
        self.run_view: Callable[[Callable[[], Any]], Any] = lambda job: job()
        #: Bytes the tile cache of a large image may hold (features, painted rows, results).
        self.cache_limit: int = DEFAULT_CACHE_BYTES
        #: Most tiles computed for one view of a large image (zoom in for more).
        self.max_view_tiles: int = MAX_VIEW_TILES
        self._tiled: TiledImage | None = None
        self._tiled_quantizer: Any = None
        self._view: tuple[float, float, float, float] | None = None
        self._view_token = 0
        self._tile_cache: ByteCache | None = None
        self._tiled_channels = 0
        self._tiled_downsample = 1
        self._tiled_sample: np.ndarray | None = None
        self._result_key = 0
        self._bounds: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None
        #: Feature settings before "keep only the useful features" (None: not used).
        self._before_useful: dict[str, dict[str, Any]] | None = None
        _warm_up_once()
        if image is not None:
            self.set_image(image)

    # -- settings objects -------------------------------------------------------------

    def extractor(self, name: str) -> param.Parameterized:
        """The settings object of feature extractor ``name`` (kept across selections)."""
        if name not in self._extractors:
            obj = registry.features.get(name)()
            obj.param.watch(self._on_settings, [p for p in obj.param if p != "name"])
            self._extractors[name] = obj
        return self._extractors[name]

    def classifier_settings(self, name: str | None = None) -> param.Parameterized:
        """The settings object of classifier ``name`` (default: the selected one)."""
        name = name or self.classifier
        if name not in self._classifiers:
            obj = registry.classifiers.get(name)()
            obj.param.watch(self._on_settings, [p for p in obj.param if p != "name"])
            self._classifiers[name] = obj
        return self._classifiers[name]

    def feature_stack(self) -> FeatureStack:
        """The selected extractors with their current settings."""
        return FeatureStack.from_objects([(n, self.extractor(n)) for n in self.features])

    def _on_settings(self, *events: Any) -> None:
        self._save_settings()
        self._retrain_if_live()

    @param.depends("features", "classifier", watch=True)
    def _on_selection(self) -> None:
        try:
            for name in self.features:
                self.extractor(name)
            self.classifier_settings()
        except SegdashError as exc:
            self.error = str(exc)
            return
        self._save_settings()
        self._retrain_if_live()

    @param.depends("classes", watch=True)
    def _on_classes(self) -> None:
        if self.project is not None and not self._syncing:
            self.project.classes = list(self.classes)
            self._save_project()

    @param.depends("live_update", watch=True)
    def _on_live(self) -> None:
        self._retrain_if_live()

    # -- image ------------------------------------------------------------------------

    def set_image(self, image: Any, name: str | None = None) -> None:
        """Open a new image: strokes, results and cached features are cleared.

        Parameters
        ----------
        image : array_like
            ``(H, W)`` or ``(H, W, C)``, any integer or float dtype.
        name : str, optional
            Its file name (results are named after it); default ``"image"``.

        Raises
        ------
        ImageError
            Not an image (see :func:`segdash.contract.image_channels`).
        """
        arr = np.asarray(image)
        channels = image_channels(arr)
        self._reset(image=arr, image_name=name or "image", project=None, current=0, frame=0,
                    labels=np.zeros(arr.shape[:2], np.uint16), error="",
                    status=f"opened a {arr.shape[1]}x{arr.shape[0]} image")
        if self.model is not None and self.model.n_channels == channels:
            self.apply_model(self.model)

    def open_file(self, data: bytes, filename: str) -> None:
        """Open an image from a file's bytes (an upload); errors name ``filename``.

        The bytes are decoded as an upload received on disk is (:meth:`open_upload`): in a
        sandboxed child, never in this process.

        Raises
        ------
        ImageError
            Not a readable PNG, JPEG or TIFF image, or too large for the limits.
        """
        with received_file(data) as received:
            self.open_upload(received, filename, received.parent)

    def _open_decoded(self, image: np.ndarray, name: str) -> None:
        """Open a decoded upload: whole, or tile by tile at a working resolution when it
        is large (as ``segdash serve`` opens a large file), so that a big upload is worked
        on rather than refused by the session's memory budget."""
        if is_large(image.shape):
            self.open_pyramid(pyramid_of(image, name), name)
        else:
            self.set_image(image, name)

    def open_upload(self, path: str | Path, filename: str, workdir: str | Path) -> None:
        """Open an uploaded image file (received on disk), decoded outside this process.

        The decoder runs in a sandboxed child (:func:`segdash.io.read.read_untrusted`,
        with this session's memory budget as its memory limit) and writes the pixels to a
        file in ``workdir`` that the session maps: the image is not held in memory whole,
        and a file that crashes or exhausts the decoder only costs the child. In a project,
        the file is stored in the project's uploads folder and added (checked the same way).

        Parameters
        ----------
        path : path
            The received file.
        filename : str
            Its name on the user's machine (names the image and its results).
        workdir : path
            A private folder for the decoded pixels (a session's upload folder).

        Raises
        ------
        ImageError
            Not a readable image, or too large for the limits (the message names
            ``filename``).
        """
        path = Path(path)
        if self.project is not None and self.project.file is not None:
            entry = self.project.add_upload(path, filename, memory_bytes=self.memory_limit)
            self.project_changes += 1
            self.select(self.project.images.index(entry))
            return
        fd, name = tempfile.mkstemp(suffix=".npy", dir=workdir)
        os.close(fd)
        target = Path(name)
        try:
            image = read_untrusted(path, target, filename, memory_bytes=self.memory_limit)
        finally:
            # Mapped pixels stay readable after the unlink; the disk space is freed when
            # the image is dropped (a new image, or the session's end).
            target.unlink(missing_ok=True)
        self._open_decoded(image, filename)

    # -- projects ---------------------------------------------------------------------

    def open_project(self, project: Project, index: int = 0) -> None:
        """Work on ``project``: its classes and settings become the session's, and image
        ``index`` is opened with its strokes.

        Raises
        ------
        ProjectError
            The project has no image, or its settings name an extractor or classifier
            setting that does not exist.
        """
        if not project.images:
            raise ProjectError("the project has no image: add one first")
        self._syncing = True
        try:
            self._reset(image=None, labels=None, model=None, project=None)
            self._rows = PaintedRows(self.cache_limit)
            self._save_problem = ""
            self.classes = list(project.classes) or [default_class(1), default_class(2)]
            try:
                for name in project.features:
                    self.extractor(name).param.update(**project.feature_params.get(name, {}))
                self.classifier_settings(project.classifier).param.update(
                    **project.classifier_params)
            except (SegdashError, ValueError, TypeError) as exc:
                raise ProjectError(f"project settings: {exc}") from exc
            with param.parameterized.discard_events(self):
                self.features = list(project.features)
                self.classifier = project.classifier
            self.project = project
            # uploads in the project are decoded in a child limited to this session's budget
            project.decode_memory_bytes = self.memory_limit
        finally:
            self._syncing = False
        # settings the file does not give (a new project) are the session's: record them
        self._save_settings(only_if_changed=True)
        first = next((i for i, img in enumerate(project.images) if not img.problem), index)
        self.select(index if not project.images[index].problem else first)
        self.status = (project.notice or
                       f"opened a project of {len(project.images)} image(s)")

    def select(self, index: int, frame: int = 0) -> None:
        """Show image ``index`` (frame ``frame``) of the project with its strokes; the
        current model's prediction is shown on it.

        Raises
        ------
        ProjectError
            The image changed on disk (fingerprint) or is missing: the session stays on
            the image it was on.
        ImageError
            It no longer reads as an image.
        """
        project = self.project
        if project is None:
            raise ValueError("open a project first")
        if not 0 <= index < len(project.images):
            raise ValueError(f"no image {index} in the project")
        entry = project.images[index]
        if not 0 <= frame < entry.frames:
            raise ValueError(f"{entry.name} has no frame {frame}")
        if project.is_tiled(entry):
            self._select_tiled(index)
            return
        arr = project.read(entry, frame)
        model = self.model
        display = entry.display if entry.display is not None else DisplaySettings.auto(arr)
        self._reset(image=arr, image_name=entry.name, current=index, frame=frame,
                    display=display, downsample=1,
                    labels=np.zeros(arr.shape[:2], np.uint16), error=self._save_problem,
                    status=f"opened {entry.name}" + (
                        f", frame {frame + 1} of {entry.frames}" if entry.frames > 1 else ""))
        strokes = project.strokes(entry, frame)
        with self._lock:
            self.param.update(strokes=strokes, labels=rasterize_strokes(strokes, arr.shape))
        if model is not None and model.n_channels == image_channels(arr):
            self._predict_current(model)
        elif self._painted_classes() >= 2:
            self._retrain_if_live()

    def _select_tiled(self, index: int) -> None:
        """Show project image ``index`` read tile by tile (a slide, or any image at a coarse
        working resolution): only the tiles in view and under strokes are computed."""
        project = self.project
        entry = project.images[index]
        pyramid = project.pyramid(entry)
        tiled = self._rows.tiled_image(project, index)
        d = project.working_resolution()
        model = self.model
        display = entry.display if entry.display is not None else DisplaySettings.auto(
            pyramid.sample())
        h, w = pyramid.shape[:2]
        self._reset(image=None, source=pyramid, tiled=tiled, downsample=d,
                    image_name=entry.name, current=index, frame=0, display=display,
                    labels=None, error=self._save_problem,
                    status=f"opened {entry.name} ({w}x{h}, read tile by tile"
                           + (f", working at 1/{d})" if d > 1 else ")"))
        with self._lock:
            self._result_key += 1  # no tile of this image shows an older model
            self.strokes = project.strokes(entry, 0)
        if model is not None and model.n_channels == self._tiled_channels:
            with self._lock:
                self._publish_tiled(model, self.status)
            self.run_view(partial(self._fill_view, model))
        elif self._painted_classes() >= 2:
            self._retrain_if_live()

    def thumbnail(self, index: int, side: int = 64) -> bytes:
        """A small PNG of project image ``index`` (frame 0), at most ``side`` pixels wide
        and high, shown as the dashboard shows images (:mod:`segdash.io.render`).

        Raises
        ------
        ProjectError
            The image changed on disk or is missing.
        """
        arr = self.project.sample(index)
        step = max(1, int(np.ceil(max(arr.shape[:2]) / side)))
        display = self.project.images[index].display or DisplaySettings.auto(arr)
        return encode(write_png, display.rgb(arr[::step, ::step]))

    # -- display ----------------------------------------------------------------------

    def set_display(self, display: DisplaySettings | None) -> None:
        """Show the open image another way (range, channels); in a project it is saved
        with the image. Only the display changes: features and results stay.

        Parameters
        ----------
        display : DisplaySettings or None
            None: the default rule (:meth:`DisplaySettings.auto`), keeping the channels
            shown.

        Raises
        ------
        ValueError
            No image open, or settings for another channel count.
        """
        shown = self.image if self.image is not None else (
            self.source.sample() if self.source is not None else None)
        if shown is None:
            raise ValueError("open an image first")
        if display is None:
            display = DisplaySettings.auto(
                shown, self.display.channels if self.display is not None else None)
        if display.n_channels != image_channels(shown):
            raise ValueError(f"display settings for {display.n_channels} channel(s) on an "
                             f"image of {image_channels(shown)}")
        if display == self.display:
            return
        self.display = display
        project = self.project
        if project is not None and self.image is not None:
            project.images[self.current].display = display
            self._save_project()

    def display_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Each channel's smallest and largest value (grid sample): the extent of the
        display range sliders. ``(C,)`` float64 each.

        Raises
        ------
        ValueError
            No image open.
        """
        with self._lock:
            token, cached = self._bounds if self._bounds is not None else (None, None)
            if token == self._image_token and cached is not None:
                return cached
            current = self._image_token
        shown = self.image if self.image is not None else (
            self.source.sample() if self.source is not None else None)
        if shown is None:
            raise ValueError("open an image first")
        bounds = value_bounds(shown)
        with self._lock:
            self._bounds = (current, bounds)
        return bounds

    def remove_image(self, index: int) -> None:
        """Remove image ``index`` and its strokes from the project (the file stays on disk),
        then show its neighbour and retrain on the strokes left.

        Raises
        ------
        ValueError
            No project, no such image, or it is the project's only image.
        ProjectError
            The project file cannot be saved.
        """
        project = self.project
        if project is None:
            raise ValueError("open a project first")
        if not 0 <= index < len(project.images):
            raise ValueError(f"no image {index} in the project")
        if len(project.images) == 1:
            raise ValueError("a project keeps at least one image: add another first")
        gone = project.images[index]
        project.remove_image(index)
        self._rows.forget(lambda path, frame: path != gone.path)
        self.project_changes += 1
        if index < self.current:
            shown = self.current - 1
        elif index == self.current:
            shown = min(index, len(project.images) - 1)
        else:
            shown = self.current
        # the undo history names images by position: it restarts with the image shown
        self.select(shown)
        self.status = (f"removed {gone.name} and its {gone.stroke_count} stroke(s) from the "
                       "project (the file stays)")
        if self._painted_classes() >= 2:
            self._retrain_if_live()
        else:
            self.param.update(model=None, segmentation=None, probabilities=None,
                              uncertainty=None)

    def project_json(self) -> tuple[str, bytes]:
        """The project file's name and content, as saved."""
        if self.project is None:
            raise ValueError("no project is open")
        name = self.project.file.name if self.project.file is not None else "project.json"
        return name, self.project.to_json().encode()

    def load_project_json(self, data: bytes) -> None:
        """Replace the open project's images, strokes, classes and settings with those of an
        uploaded project file (its images must be in this project's folder); saved at once.

        Raises
        ------
        ProjectError
            Malformed or too large, naming images outside the folder, or no image.
        """
        current = self.project
        if current is None:
            raise ValueError("serve a folder or a project to upload a project file")
        new = Project.from_json(data, current.file, current.root)
        for img in new.images:
            new.check(img)
        new.revision = current.revision
        new.save()
        self.open_project(new)
        self.project_changes += 1

    def _painted_labels(self) -> np.ndarray:
        if self.project is None:
            found = {s.label for s in self.strokes}
        else:
            found = {s.label for img in self.project.images
                     for ss in img.strokes.values() for s in ss}
        return np.array(sorted(found - {ERASER}), np.int64)

    def _painted_classes(self) -> int:
        return int(self._painted_labels().size)

    def _predict_current(self, model: SegmentationModel) -> None:
        """Show ``model``'s prediction on the current image (features made with the
        project's quantizer when it is the model's)."""
        def job() -> None:
            with self._lock:
                generation = self._generation
            try:
                codes = self.feature_codes()
                q = self._quantizer_of(codes)
                if q is not None and _same_quantizer(q, model.quantizer):
                    proba = model.predict_proba_codes(codes)
                else:
                    proba = model.predict_proba(self.image)
            except (SegdashError, ValueError) as exc:
                self.error = str(exc)
                return
            with self._lock:
                if generation == self._generation:
                    self._publish(model, proba, f"{self.status}; shown with the current model")
        self.run_training(job)

    def _save_project(self) -> None:
        """Save the project file; a failure (another writer, a full disk) is shown in
        :attr:`error`, the session's work stays in memory."""
        if self.project is None:
            return
        notice = self.project.notice
        try:
            self.project.save()
        except ProjectError as exc:
            self._save_problem = self.error = str(exc)
            return
        if self._save_problem:
            self._save_problem = self.error = ""
        if self.project.notice != notice:
            self.status = self.project.notice

    def _save_settings(self, only_if_changed: bool = False) -> None:
        project = self.project
        if project is None or self._syncing:
            return
        try:
            now = (list(self.features), {n: settings_of(self.extractor(n))
                                         for n in self.features},
                   self.classifier, settings_of(self.classifier_settings()))
        except SegdashError as exc:
            self.error = str(exc)
            return
        before = (project.features, project.feature_params, project.classifier,
                  project.classifier_params)
        if only_if_changed and now == before:
            return
        (project.features, project.feature_params, project.classifier,
         project.classifier_params) = now
        self._save_project()

    def release(self) -> None:
        """Drop the image, strokes, cached features, results and model (a session ended).

        A training still running when this is called discards its result. A project's
        file keeps everything.
        """
        self._rows = PaintedRows(self.cache_limit)
        self._reset(image=None, labels=None, model=None, project=None, status="closed")

    def _reset(self, **updates: Any) -> None:
        """Forget strokes, redo history, cached features and results (training in flight
        included), then apply ``updates``."""
        updates.setdefault("source", None)
        tiled = updates.pop("tiled", None)  # a project's tiled image (see select)
        if "display" not in updates:
            shown = updates.get("image")
            if shown is None and updates["source"] is not None:
                shown = updates["source"].sample()
            updates["display"] = None if shown is None else DisplaySettings.auto(shown)
        with self._lock:
            self._generation += 1
            self._image_token += 1
            self._cache_key = self._cache = None
            self.history.clear()
            self._tiled = self._tiled_quantizer = self._view = None
            if self._tile_cache is not None:
                self._tile_cache.clear()
            self._tiled_channels = 0
            if updates["source"] is not None:
                self._open_tiled(updates["source"], updates.get("downsample", self.downsample),
                                 tiled)
            self.param.update(strokes=[], segmentation=None, probabilities=None,
                              uncertainty=None, **updates)


    # -- large images -----------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int, ...] | None:
        """``(H, W[, C])`` of the open image, in memory or read lazily (None: none open)."""
        if self.image is not None:
            return tuple(self.image.shape)
        if self.source is not None:
            return tuple(self.source.shape)
        return None

    def open_pyramid(self, pyramid: Pyramid, name: str | None = None,
                     downsample: int | None = None) -> None:
        """Open a large image read lazily: features, training and results are computed
        tile by tile, only where strokes and the view (:meth:`set_view`) need them.

        Parameters
        ----------
        pyramid : Pyramid
            The image (:func:`segdash.io.pyramid.open_pyramid`).
        name : str, optional
            Its name (default the pyramid's).
        downsample : int, optional
            Working resolution (default :func:`~segdash.io.pyramid.default_downsample`).

        Raises
        ------
        ImageError
            Not an image segdash can work on (channels).
        """
        image_channels(pyramid.sample(64 * 64))
        d = default_downsample(pyramid.shape) if downsample is None else int(downsample)
        h, w = pyramid.shape[:2]
        self._reset(image=None, source=pyramid, image_name=name or pyramid.name, project=None,
                    current=0, frame=0, labels=None, error="", downsample=d,
                    status=f"opened a {w}x{h} image (read tile by tile, working at 1/{d})")

    def _open_tiled(self, source: Pyramid, downsample: int,
                    tiled: TiledImage | None = None) -> None:
        self._image_token += 1
        if tiled is None:
            if self._tile_cache is None or self._tile_cache.limit != self.cache_limit:
                self._tile_cache = ByteCache(self.cache_limit)
            self._tile_cache.clear()
            tiled = TiledImage(source.at(downsample), self._tile_cache,
                               token=(self._image_token, int(downsample)))
        else:
            # a project's image: its codes stay in the project's cache (PaintedRows), where
            # training across images put them; results of other models are dropped
            tiled.forget_results()
        self._tiled = tiled
        self._tiled_downsample = int(downsample)
        self._tiled_quantizer = None
        sample = prepare_image(source.sample())
        self._tiled_sample = sample
        self._tiled_channels = image_channels(sample)

    @param.depends("downsample", watch=True)
    def _on_downsample(self) -> None:
        project = self.project
        if project is not None:
            if self.downsample == project.working_resolution():
                return
            self._set_project_resolution(project, self.downsample)
            return
        source = self.source
        if source is None:
            return
        with self._lock:
            if self._tiled is not None and self._tiled_downsample == self.downsample:
                return
            self._generation += 1
            self._open_tiled(source, self.downsample)
        self.param.update(model=None, tiles_done=self.tiles_done + 1,
                          status=f"working at 1/{self.downsample} of the image's resolution")
        self._retrain_if_live()

    def _set_project_resolution(self, project: Project, downsample: int) -> None:
        """Work on every image of the project at 1/``downsample``: saved with the project,
        and the image on screen opened again at that resolution."""
        if downsample > 1 and any(img.frames > 1 for img in project.images):
            with param.parameterized.discard_events(self):
                self.downsample = project.working_resolution()
            self.error = ("a working resolution coarser than 1 needs a project of single "
                          "images: this one holds stacks (several frames), worked on at full "
                          "resolution")
            return
        project.downsample = int(downsample)
        self._save_project()
        self.project_changes += 1
        self.select(self.current, self.frame)

    def _quantizer_tiled(self, stack: FeatureStack) -> Any:
        """The quantizer of a large image's codes: its channel range estimated on a coarse
        pyramid level (:meth:`Pyramid.sample`), the whole image never being read."""
        key = (self._image_token, stack.key())
        cached = self._tiled_quantizer
        if cached is not None and cached[0] == key:
            return cached[1]
        sample = self._tiled_sample
        low, span = channel_range(sample)
        q = shared_quantizer(stack, low, span, sample)
        self._tiled_quantizer = (key, q)
        return q

    def set_view(self, y0: float, y1: float, x0: float, x1: float) -> None:
        """The region on screen, in full-resolution pixels (rows ``y0..y1`` from the top,
        columns ``x0..x1``): a large image's results fill it, nearest tiles first; a
        previous fill still running stops."""
        with self._lock:
            self._view = (float(y0), float(y1), float(x0), float(x1))
            self._view_token += 1
            model = self.model
        if self.source is not None and model is not None:
            self.run_view(partial(self._fill_view, model))

    def _view_tiles(self) -> list[tuple[int, int]]:
        tiled, d = self._tiled, self._tiled_downsample
        h, w = self.source.shape[:2]
        y0, y1, x0, x1 = self._view or (0, h, 0, w)
        return tiled.grid.tiles_in(max(y0, 0) / d, min(y1, h) / d, max(x0, 0) / d,
                                   min(x1, w) / d)

    def _fill_view(self, model: SegmentationModel) -> int:
        """Predict the tiles in view not yet predicted with ``model``, nearest to the view's
        centre first; stops when the view, the strokes or the model change. Returns the
        tiles computed."""
        with self._lock:
            token, generation, tiled = self._view_token, self._generation, self._tiled
            if tiled is None or self.model is not model:
                return 0
            key = self._result_key
            tiles = self._view_tiles()
        todo = [t for t in tiles if tiled.result(t, model, key) is None]
        if len(todo) > self.max_view_tiles:
            self.status = (f"{len(todo)} tiles in view: the overlay fills the "
                           f"{self.max_view_tiles} nearest the centre; zoom in, or work at a "
                           "coarser resolution, for the rest")
            todo = todo[:self.max_view_tiles]
        done = shown = 0
        last = time.monotonic()
        for t in todo:
            with self._lock:
                if (self._view_token != token or self._generation != generation
                        or self.model is not model):
                    break  # superseded: the new view or model fills itself
            try:
                tiled.predict(t, model, key)
            except (SegdashError, ValueError) as exc:
                self.error = str(exc)
                break
            done += 1
            # Each announcement re-renders the view's overlay in the browser: announce
            # finished tiles at most every FILL_REPORT_SECONDS (a 640² view spanning four
            # tiles was re-sent four times: 0.71 s stroke-to-overlay against 0.23 s for a
            # whole 1024² image with the same compute).
            if time.monotonic() - last >= FILL_REPORT_SECONDS:
                self.tiles_done += done - shown
                shown, last = done, time.monotonic()
        if done > shown:
            self.tiles_done += done - shown
        return done

    def _train_tiled(self) -> SegmentationModel | None:
        with self._lock:
            generation = self._generation = self._generation + 1
            strokes, tiled, d = list(self.strokes), self._tiled, self._tiled_downsample
        if tiled is None:
            return None
        stack = self.feature_stack()
        if self.project is not None:
            return self._train_tiled_project(generation, stack)
        self.busy = True
        try:
            quantizer = self._quantizer_tiled(stack)
            # the codes the prediction will read (grown by the smoothing's ring): once a tile
            ring = smoothing_halo(hook(self.classifier_settings(), "smoothing") or 0.0)
            X, y = tiled.painted_rows(scale_strokes(strokes, d), stack, quantizer, ring)
            ids = _present(y)
            if ids.size < 2:
                self.param.update(error="", status=need_two_classes(ids, self.classes))
                return None
            self.status = (f"training {self.classifier} on {y.size} painted pixels of "
                           f"{ids.size} classes…")
            model = SegmentationModel.train_rows(
                X, y, stack, quantizer, self.classifier, settings_of(self.classifier_settings()),
                self._tiled_channels, self.classes)
            model.downsample = d
        except (SegdashError, ValueError) as exc:
            return self._tiled_training_failed(generation, exc)
        finally:
            self.busy = False
        return self._end_tiled_training(generation, model, f"{y.size} painted pixels")

    def _train_tiled_project(self, generation: int, stack: FeatureStack
                             ) -> SegmentationModel | None:
        """Train across the project's images with a tiled image on screen: the painted
        tiles of tiled images, whole small ones (:func:`~segdash.project.train_project`)."""
        project = self.project
        ids = self._painted_labels()
        if ids.size < 2:
            self.param.update(error=self._save_problem, status=need_two_classes(ids, self.classes))
            return None
        what = f"the painted pixels of {len(project.painted())} image(s)/frame(s)"
        self.param.update(busy=True, status=f"training {self.classifier} on {what} of "
                                            f"{ids.size} classes…")
        try:
            ring = smoothing_halo(hook(self.classifier_settings(), "smoothing") or 0.0)
            model = train_project(project, self._rows, stack,
                                  settings_of(self.classifier_settings()),
                                  quantizer=self._project_quantizer(stack), ring=ring)
            model.classes = [self._class_or(c) for c in model.classes]
        except (SegdashError, ValueError) as exc:
            return self._tiled_training_failed(generation, exc)
        finally:
            self.busy = False
        return self._end_tiled_training(generation, model, what)

    def _tiled_training_failed(self, generation: int, exc: Exception) -> None:
        with self._lock:
            if generation == self._generation:
                self.param.update(error=str(exc), status="training failed")

    def _end_tiled_training(self, generation: int, model: SegmentationModel,
                            what: str) -> SegmentationModel | None:
        """Show a large image's new model trained on ``what`` and fill the view with it,
        unless a newer change superseded it (None then)."""
        d = self._tiled_downsample
        with self._lock:
            if generation != self._generation:
                return None
            self._publish_tiled(model, f"trained {self.classifier} on {what}"
                                       + (f" at 1/{d} resolution" if d > 1 else ""))
        self._fill_view(model)
        return model

    def _publish_tiled(self, model: SegmentationModel, status: str) -> None:
        self._result_key += 1
        if self._tiled is not None:
            # the previous model's tiles stay on screen until the new ones replace them
            self._tiled.forget_results(keep=(self._result_key - 1,))
        self.param.update(model=model, error=self._save_problem, status=status)

    def _apply_tiled(self, model: SegmentationModel) -> None:
        if model.n_channels != self._tiled_channels:
            model.check_image(self._tiled_sample)
        with self._lock:
            self._generation += 1
        theirs = {c.id: c for c in model.classes}
        merged = [theirs.pop(c.id, c) for c in self.classes]
        if merged != self.classes or theirs:
            self.classes = sorted([*merged, *theirs.values()], key=lambda c: c.id)
        if model.downsample != self.downsample:
            self.downsample = model.downsample
        with self._lock:
            self._publish_tiled(model, f"applied a model ({model.classifier}, "
                                       f"{len(model.classes_)} classes)")
        self._fill_view(model)

    def view_result(self, y0: float, y1: float, x0: float, x1: float, out_h: int, out_w: int,
                    which: str = "labels") -> np.ndarray | None:
        """A large image's results over a region, as computed so far, at display size.

        Parameters
        ----------
        y0, y1, x0, x1 : float
            The region in full-resolution pixels (rows from the top, columns).
        out_h, out_w : int
            Display pixels; each shows the result at its centre.
        which : str
            ``"labels"`` (class ids, 0 where not computed) or ``"uncertainty"`` (float32,
            NaN where not computed).

        Returns
        -------
        numpy.ndarray or None
            ``(out_h, out_w)``; None without a model.
        """
        with self._lock:
            tiled, model, key, d = self._tiled, self.model, self._result_key, self._tiled_downsample
        if tiled is None or model is None:
            return None
        h, w = tiled.shape[:2]
        rows = ((y0 + (np.arange(out_h) + 0.5) * (y1 - y0) / out_h) / d).astype(np.int64)
        cols = ((x0 + (np.arange(out_w) + 0.5) * (x1 - x0) / out_w) / d).astype(np.int64)
        rows, cols = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
        # tiles the current model has not reached yet show the previous model's results
        return tiled.mosaic(rows, cols, (key, key - 1), 0 if which == "labels" else 1)

    def _tiled_result_file(self, kind: str) -> tuple[str, bytes]:
        model = self.model
        if model is None:
            raise ValueError("train a model first (paint at least two classes)")
        if kind == "model":
            return result_name(self.image_name, kind), model.to_bytes()
        if kind == "overlay":
            raise ValueError("an overlay of a large image is made by `segdash apply --overlay` "
                             "with the downloaded model")
        if kind == "proba":
            raise ValueError("the probabilities of a large image are written by `segdash apply "
                             "--proba` with the downloaded model")
        if kind != "labels":
            raise ValueError(f"unknown result {kind!r}: labels, overlay, proba, model or "
                             "annotations")
        with self._lock:
            tiled, key, d = self._tiled, self._result_key, self._tiled_downsample
        h, w = self.source.shape[:2]
        if h * w > MAX_LABEL_DOWNLOAD_PIXELS:
            raise ValueError(f"labels of a {w}x{h} image are too large to download: use "
                             "`segdash apply` with the downloaded model")
        work = np.zeros(tiled.shape[:2], model.label_dtype)
        gy, gx = tiled.grid.shape
        for ty in range(gy):
            for tx in range(gx):
                y0, y1, x0, x1 = tiled.grid.bounds(ty, tx)
                work[y0:y1, x0:x1] = tiled.predict((ty, tx), model, key)[0]
        labels = upsample_labels(work, d, (h, w))
        return result_name(self.image_name, kind, labels.dtype), encode(write_labels, labels)

    # -- classes ----------------------------------------------------------------------

    def class_info(self, class_id: int) -> ClassInfo:
        for c in self.classes:
            if c.id == class_id:
                return c
        raise ValueError(f"no class with id {class_id}")

    def add_class(self, name: str | None = None, color: str | None = None) -> ClassInfo:
        """Add a class with the next free id; default name and colour from the palette
        (undoable)."""
        new_id = max([c.id for c in self.classes], default=0) + 1
        base = default_class(new_id)
        info = ClassInfo(new_id, name or base.name, color or base.color)
        self._record(classes=True)
        self.classes = [*self.classes, info]
        return info

    def remove_class(self, class_id: int) -> None:
        """Remove a class and its strokes, on every image of a project (undoable: undo
        brings back the class and its strokes)."""
        self.class_info(class_id)
        elsewhere = []
        if self.project is not None:
            for i, img in enumerate(self.project.images):
                for f in list(img.strokes):
                    if (i, f) != (self.current, self.frame) and any(
                            s.label == class_id for s in img.strokes[f]):
                        elsewhere.append((i, f))
        self._record(classes=True, frames=elsewhere)
        for i, f in elsewhere:
            img = self.project.images[i]
            self.project.set_strokes(img, f, [s for s in img.strokes[f]
                                              if s.label != class_id], save=False)
        self.classes = [c for c in self.classes if c.id != class_id]
        self._set_strokes([s for s in self.strokes if s.label != class_id])

    def rename_class(self, class_id: int, name: str) -> None:
        self._replace_class(class_id, name=name)

    def recolor_class(self, class_id: int, color: str) -> None:
        self._replace_class(class_id, color=color)

    def _replace_class(self, class_id: int, **changes: Any) -> None:
        old = self.class_info(class_id)
        new = ClassInfo(class_id, changes.get("name", old.name), changes.get("color", old.color))
        self.classes = [new if c.id == class_id else c for c in self.classes]
        if self.model is not None:
            self.model.classes = [new if c.id == class_id else c for c in self.model.classes]

    # -- strokes ----------------------------------------------------------------------

    def add_stroke(
        self, xs: Sequence[float], ys: Sequence[float], label: int, width: float = 5.0,
        fill: bool = False,
    ) -> Stroke:
        """Paint a stroke (x = column, y = row from the top, in image pixels); undoable.

        Parameters
        ----------
        xs, ys : sequence of float
            Its points.
        label : int
            A class id, or :data:`~segdash.strokes.ERASER` (0) to erase.
        width : float
            Brush width in image pixels.
        fill : bool
            Also paint the polygon the points enclose (a lasso).

        Raises
        ------
        ValueError
            No image is open, the class does not exist, or the stroke is malformed.
        """
        if self.image_shape is None:
            raise ValueError("open an image before painting")
        if int(label) != ERASER:
            self.class_info(int(label))
        stroke = Stroke(tuple(xs), tuple(ys), int(label), width, bool(fill))
        self._record()
        self._set_strokes([*self.strokes, stroke])
        return stroke

    def undo(self) -> bool:
        """Go back to the state before the last edit (a stroke, an erasure, a deletion,
        *Clear*, *Add class* or *Remove class*); returns whether there was one."""
        before = self.history.peek_undo()
        if before is None:
            return False
        self.history.undo(self._snapshot(before))
        self._restore(before)
        return True

    def redo(self) -> bool:
        """Make again the last undone edit; returns whether there was one."""
        after = self.history.peek_redo()
        if after is None:
            return False
        self.history.redo(self._snapshot(after))
        self._restore(after)
        return True

    @property
    def can_undo(self) -> bool:
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.history.can_redo

    def clear(self) -> None:
        """Remove every stroke of the image on screen, and the results (undoable)."""
        self._record()
        self._set_strokes([])

    def set_strokes(self, strokes: Sequence[Stroke]) -> None:
        """Replace all strokes (restored annotations, strokes deleted in the browser):
        one undoable edit. Classes the strokes name that do not exist are added."""
        known = {c.id for c in self.classes} | {ERASER}
        missing = sorted({s.label for s in strokes} - known)
        self._record(classes=bool(missing))
        if missing:
            self.classes = [*self.classes, *(default_class(i) for i in missing)]
        self._set_strokes(list(strokes))

    def _snapshot(self, like: EditState | None = None, classes: bool = False,
                  frames: Iterable[tuple[int, int]] = ()) -> EditState:
        """The state now, holding what ``like`` holds (or the classes and ``frames``)."""
        if like is not None:
            classes = like.classes is not None
            frames = [(i, f) for i, f, _ in like.elsewhere]
        project = self.project
        return EditState(
            strokes=tuple(self.strokes),
            classes=tuple(self.classes) if classes else None,
            elsewhere=tuple((i, f, tuple(project.strokes(i, f))) for i, f in frames)
            if project is not None else ())

    def _record(self, classes: bool = False, frames: Iterable[tuple[int, int]] = ()) -> None:
        """An edit is about to be made: remember the state it changes."""
        self.history.record(self._snapshot(classes=classes, frames=frames))

    def _restore(self, state: EditState) -> None:
        if state.classes is not None:
            now = {c.id: c for c in self.classes}
            classes = [now.get(c.id, c) for c in state.classes]
            if classes != self.classes:
                self.classes = classes
        if self.project is not None:
            for i, f, strokes in state.elsewhere:
                self.project.set_strokes(i, f, list(strokes), save=False)
        self._set_strokes(list(state.strokes))

    def _set_strokes(self, strokes: list[Stroke]) -> None:
        shape = self.image.shape if self.image is not None else (0, 0)
        with self._lock:
            self._generation += 1
            # a large image has no whole painted mask: its tiles are painted when trained
            labels = None if self.source is not None else rasterize_strokes(strokes, shape)
            self.param.update(strokes=strokes, labels=labels)
        if self.project is not None:
            self.project.set_strokes(self.current, self.frame, strokes, save=False)
            self._save_project()
            self.project_changes += 1
        self._retrain_if_live()

    def strokes_json(self) -> str:
        """The annotations (strokes and classes) as JSON."""
        return strokes_to_json(
            self.strokes,
            classes=[c.to_dict() for c in self.classes],
            image_shape=list(self.image_shape) if self.image_shape is not None else None,
        )

    def load_strokes_json(self, data: str | bytes) -> int:
        """Restore annotations written by :meth:`strokes_json`; returns the stroke count.

        Raises
        ------
        ValueError
            Malformed file, or annotations made on an image of another size.
        """
        strokes, extra = strokes_from_json(data)
        shape = extra.get("image_shape")
        mine = self.image_shape
        if shape and mine is not None and list(shape[:2]) != list(mine[:2]):
            raise ValueError(
                f"these annotations were painted on a {shape[1]}x{shape[0]} image; the open "
                f"image is {mine[1]}x{mine[0]}"
            )
        classes = classes_from_dicts(extra["classes"]) if extra.get("classes") else None
        known = {c.id for c in classes or self.classes} | {ERASER}
        missing = sorted({s.label for s in strokes} - known)
        self._record(classes=True)  # one edit: undo restores the classes and strokes before
        if classes is not None or missing:
            self.classes = [*(classes or self.classes), *(default_class(i) for i in missing)]
        self._set_strokes(list(strokes))
        return len(strokes)

    # -- training and prediction ------------------------------------------------------

    def _retrain_if_live(self) -> None:
        if self.live_update and self.image_shape is not None:
            self.run_training(self.train)

    def feature_codes(self) -> np.ndarray:
        """Feature codes of the image under the current settings, from the cache when possible.

        Returns
        -------
        numpy.ndarray
            ``(H, W, F)`` uint8 codes (see :meth:`FeatureStack.codes`): a quarter of the
            float32 features' memory, and what the built-in classifiers predict from fastest.
        """
        stack = self.feature_stack()
        shared = self._project_quantizer(stack)
        key = (self._image_token, stack.key(), None if shared is None else id(shared))
        with self._lock:
            if self._cache_key == key and self._cache is not None:
                return self._cache[0]
        check_memory(self.image, stack, len(self.classes), self.memory_limit)
        codes, quantizer = stack.codes(self.image, shared)
        with self._lock:
            self._cache_key, self._cache = key, (codes, quantizer)
            self.feature_computations += 1
        return codes

    def _project_quantizer(self, stack: FeatureStack) -> Any:
        """The project's quantizer for ``stack`` (None without a project), cached while the
        images and feature settings stay the same."""
        project = self.project
        if project is None:
            return None
        key = (stack.key(), tuple((i.path, i.low, i.span) for i in project.images))
        cached = self._quantizer_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        q = project.quantizer(stack)
        self._quantizer_cache = (key, q)
        return q

    def _quantizer_of(self, codes: np.ndarray) -> Any:
        """The quantizer that made cached ``codes`` (None if the cache moved on)."""
        with self._lock:
            if self._cache is not None and self._cache[0] is codes:
                return self._cache[1]
        return None

    def train(self) -> SegmentationModel | None:
        """Train on the strokes and segment the image.

        User errors (nothing open, fewer than two classes painted, a broken plugin) are
        reported in :attr:`error` rather than raised. A call overtaken by a newer change
        (another stroke, another setting) discards its result.

        Returns
        -------
        SegmentationModel or None
            The new model, or None when nothing was trained.
        """
        if self.source is not None:
            return self._train_tiled()
        with self._lock:
            generation = self._generation = self._generation + 1
            image, labels = self.image, self.labels
            # which frame the codes below belong to: read with the image, not after the
            # (slow) features, or a switch meanwhile files one frame's codes under another
            current, frame = self.current, self.frame
        if image is None:
            self.error = "open an image first"
            return None
        try:
            ids = self._painted_labels() if self.project is not None else _present(labels)
            if ids.size < 2:
                raise ValueError(need_two_classes(ids, self.classes))
            if self.project is None:
                check_labels(image.shape, labels)
        except ValueError as exc:
            self.param.update(error=self._save_problem, status=str(exc), segmentation=None,
                              probabilities=None, uncertainty=None)
            return None
        what = (f"{int(np.count_nonzero(labels))} painted pixels" if self.project is None
                else f"the painted pixels of {len(self.project.painted())} image(s)/frame(s)")
        # what is happening, in place of the last result's line (a first training with
        # features to compute can take seconds)
        self.param.update(busy=True, status=f"training {self.classifier} on {what} of "
                                            f"{ids.size} classes…")
        clock = [time.perf_counter()]  # start, features, fit, predict
        try:
            codes = self.feature_codes()
            clock.append(time.perf_counter())
            quantizer = self._quantizer_of(codes)
            with self._lock:
                moved = self.image is not image or (self.current, self.frame) != (current, frame)
            if quantizer is None or moved:
                return None  # the image or the feature settings changed meanwhile
            if self.project is None:
                model = SegmentationModel.train(
                    codes, labels, self.feature_stack(), quantizer, self.classifier,
                    settings_of(self.classifier_settings()), image_channels(image),
                    self.classes,
                )
                painted = int(np.count_nonzero(labels))
            else:
                model = train_project(
                    self.project, self._rows, self.feature_stack(),
                    settings_of(self.classifier_settings()),
                    current=(current, frame, codes), quantizer=quantizer,
                    ring=smoothing_halo(hook(self.classifier_settings(), "smoothing") or 0.0),
                )
                model.classes = [self._class_or(c) for c in model.classes]
                painted = None
            clock.append(time.perf_counter())
            if self.preview and codes.shape[0] * codes.shape[1] >= PREVIEW_MIN_PIXELS:
                self._publish_preview(model, codes, generation)
            proba = model.predict_proba_codes(codes)
            clock.append(time.perf_counter())
        except (SegdashError, ValueError) as exc:
            with self._lock:
                if generation == self._generation:
                    self.param.update(error=str(exc), status="training failed")
            return None
        except BaseException as exc:
            if isinstance(exc, Exception | KeyboardInterrupt):
                raise  # a bug is raised as it is; Ctrl-C in a notebook still stops
            # SystemExit (a plugin calling sys.exit) or another BaseException: the session
            # must not die of it, nor the thread that runs it.
            with self._lock:
                if generation == self._generation:
                    self.param.update(error=stopped_message(self, exc),
                                      status="training failed")
            return None
        finally:
            self.busy = False
        with self._lock:
            if generation != self._generation:
                return None  # superseded: a newer request will publish its own result
            what = (f"{painted} painted pixels" if painted is not None else
                    f"the painted pixels of {len(self.project.painted())} image(s)/frame(s)")
            self._publish(model, proba, f"trained {self.classifier} on {what}")
        if timing_log.isEnabledFor(logging.DEBUG):
            ends = [*clock[1:], time.perf_counter()]
            ms = [1000 * (b - a) for a, b in zip(clock, ends, strict=True)]
            timing_log.debug("train features=%.1f fit=%.1f predict=%.1f publish=%.1f ms "
                             "end=%.3f", *ms, time.time())
        return model

    def _class_or(self, info: ClassInfo) -> ClassInfo:
        for c in self.classes:
            if c.id == info.id:
                return c
        return info

    def abandon_training(self) -> None:
        """A training that cannot be stopped (a hung plugin) was left running elsewhere:
        whatever it returns is discarded, and the session no longer shows it as busy."""
        with self._lock:
            self._generation += 1
        self.param.update(busy=False, status="training abandoned")

    def _publish_preview(self, model: SegmentationModel, codes: np.ndarray,
                         generation: int) -> None:
        """Show ``model``'s prediction at every :data:`PREVIEW_STRIDE`-th pixel, enlarged
        (nearest), while the exact one is computed; nothing if a newer change came."""
        t = time.perf_counter()
        small = model.predict_proba_preview(codes, PREVIEW_STRIDE)
        labels, uncertainty = model.labels_and_uncertainty(small)
        shape = codes.shape[:2]
        results = {"segmentation": upsample_labels(labels, PREVIEW_STRIDE, shape),
                   "uncertainty": upsample_labels(uncertainty, PREVIEW_STRIDE, shape),
                   "probabilities": upsample_labels(small, PREVIEW_STRIDE, shape)}
        with self._lock:
            if generation != self._generation:
                return
            self.param.update(model=model, error=self._save_problem,
                              status="preview (every other pixel); the exact result follows",
                              **results)
        if timing_log.isEnabledFor(logging.DEBUG):
            timing_log.debug("preview predict=%.1f ms end=%.3f",
                             1000 * (time.perf_counter() - t), time.time())

    def _publish(self, model: SegmentationModel, proba: np.ndarray, status: str) -> None:
        segmentation, uncertainty = model.labels_and_uncertainty(proba)
        self.param.update(
            model=model,
            probabilities=proba,
            segmentation=segmentation,
            uncertainty=uncertainty,
            error=self._save_problem,
            status=status,
        )

    def apply_model(self, model: SegmentationModel) -> None:
        """Segment the open image with a given (e.g. uploaded) model.

        The model's classes bring their names and colours: classes of the same id are
        renamed and recoloured, missing ones added.

        Raises
        ------
        ImageError
            The model was trained on images with another channel count.
        """
        if self.source is not None:
            self._apply_tiled(model)
            return
        if self.image is None:
            raise ValueError("open an image before applying a model")
        model.check_image(self.image)
        check_memory(self.image, model.stack, len(model.classes_), self.memory_limit)
        with self._lock:
            self._generation += 1
        theirs = {c.id: c for c in model.classes}
        merged = [theirs.pop(c.id, c) for c in self.classes]
        if merged != self.classes or theirs:
            self.classes = sorted([*merged, *theirs.values()], key=lambda c: c.id)
        proba = model.predict_proba(self.image)
        self._publish(model, proba, f"applied a model ({model.classifier}, "
                      f"{len(model.classes_)} classes)")


    def apply_model_file(self, data: bytes) -> SegmentationModel:
        """Load a model file's bytes (an upload, executing nothing in them) and apply it.

        Raises
        ------
        ModelFileError
            Refused or damaged file, or a plugin it needs is missing.
        ImageError
            The model was trained on images with another channel count.
        """
        model = model_from_bytes(data)
        self.apply_model(model)
        return model

    # -- feature importance -----------------------------------------------------------

    def feature_importance(self) -> Importance | None:
        """Importance of the current model's features by family and scale
        (:func:`segdash.importance.feature_importance`); None without a model.

        A permutation importance (estimators without ``feature_importances_``) is measured
        on the painted pixels of the image on screen, from its cached codes.

        Raises
        ------
        ValueError
            The importance cannot be measured (a permutation with no codes at hand, or the
            feature settings changed since the model was trained).
        """
        model = self.model
        if model is None:
            return None
        with self._lock:
            cache, labels = self._cache, self.labels
        X = y = None
        if (cache is not None and labels is not None and cache[1] is model.quantizer
                and cache[0].shape[:2] == labels.shape):
            X, y = painted_rows(cache[0], labels)
        return feature_importance(model, X, y)

    def keep_useful_features(self, keep: float = DEFAULT_KEEP) -> dict[str, dict[str, Any]]:
        """Retrain with only the feature families and scales the current model relies on
        (:func:`segdash.importance.useful_settings`); :meth:`restore_features` goes back.

        Returns
        -------
        dict
            The new settings, ``{extractor name: {setting: value}}``.

        Raises
        ------
        ValueError
            No model yet, or its importance cannot be measured.
        """
        model = self.model
        if model is None:
            raise ValueError("train a model first: importance comes from a trained model")
        importance = self.feature_importance()
        settings = useful_settings(importance, model.stack, keep)
        if self._before_useful is None:
            self._before_useful = {n: settings_of(self.extractor(n)) for n in settings}
        self._set_feature_settings(settings)
        return settings

    @property
    def can_restore_features(self) -> bool:
        """:meth:`keep_useful_features` changed the settings and they were not restored."""
        return self._before_useful is not None

    def restore_features(self) -> None:
        """The feature settings from before :meth:`keep_useful_features` (then retrains)."""
        before, self._before_useful = self._before_useful, None
        self._set_feature_settings(before or {})

    def _set_feature_settings(self, settings: dict[str, dict[str, Any]]) -> None:
        """Set extractors' settings and retrain (live update retrains by itself)."""
        for name, values in settings.items():
            self.extractor(name).param.update(**values)  # one event per extractor
        if settings and not self.live_update and self.image_shape is not None:
            self.run_training(self.train)

    # -- result files -----------------------------------------------------------------

    def result_file(self, kind: str) -> tuple[str, bytes]:
        """A result as a file: ``(file name, content)``, named after :attr:`image_name`.

        Parameters
        ----------
        kind : str
            ``"labels"`` (PNG, or 16-bit TIFF for ids over 255), ``"overlay"`` (class
            colours blended over the image as shown (:attr:`display`), PNG; the file
            ``segdash apply --overlay`` writes), ``"proba"`` (float32 TIFF, ``(H, W, K)``
            in ``model.classes_`` order; the file ``segdash apply --proba`` writes),
            ``"model"`` (.skops) or ``"annotations"`` (strokes and classes, JSON).

        Raises
        ------
        ValueError
            Nothing to save yet (no segmentation or model), or an unknown kind.
        """
        if kind == "annotations":
            return (result_name(self.image_name, kind), self.strokes_json().encode())
        if self.source is not None:
            return self._tiled_result_file(kind)
        model, segmentation = self.model, self.segmentation
        if model is None or segmentation is None or self.image is None:
            raise ValueError("train a model first (paint at least two classes)")
        name = result_name(self.image_name, kind, segmentation.dtype)
        if kind == "labels":
            return name, encode(write_labels, segmentation)
        if kind == "overlay":
            display = self.display or DisplaySettings.auto(self.image)
            rgb = overlay_rgb(self.image, segmentation, self.classes, np.array(display.low),
                              np.array(display.high), display.channels)
            return name, encode(write_png, rgb)
        if kind == "proba":
            if self.probabilities is None:
                raise ValueError("train a model first (paint at least two classes)")
            return name, proba_bytes(self.probabilities)
        if kind == "model":
            return name, model.to_bytes()
        raise ValueError(f"unknown result {kind!r}: labels, overlay, proba, model or "
                         "annotations")


def _present(labels: np.ndarray | None) -> np.ndarray:
    """Class ids (> 0) present in an integer label array, sorted."""
    if labels is None or labels.size == 0:
        return np.zeros(0, np.int64)
    flat = np.asarray(labels).ravel()
    if flat.dtype.kind == "u" and flat.dtype.itemsize <= 2:
        # bincount: a tenth of np.unique's time on a megapixel mask (every stroke)
        return np.flatnonzero(np.bincount(flat)[1:]) + 1
    found = np.unique(flat)
    return found[found > 0].astype(np.int64)


def upsample_labels(labels: np.ndarray, downsample: int, shape: Sequence[int]) -> np.ndarray:
    """Labels (or any ``(h, w, ...)`` per-pixel result) made at working resolution
    ``downsample`` as full-size ``(H, W, ...)`` (nearest: each working pixel covers its
    ``downsample``-square block)."""
    d = int(downsample)
    h, w = int(shape[0]), int(shape[1])
    if d == 1:
        return labels[:h, :w]
    return np.repeat(np.repeat(labels, d, axis=0), d, axis=1)[:h, :w]


def _same_quantizer(a: Any, b: Any) -> bool:
    return (len(a) == len(b) and np.array_equal(a.offset, b.offset)
            and np.array_equal(a.scale, b.scale) and np.array_equal(a.kind, b.kind))
def stopped_message(segmenter: Segmenter, exc: BaseException) -> str:
    """What to tell the user when a plugin stopped training with a BaseException that is
    not an Exception (``sys.exit()`` in a plugin, ``SystemExit``)."""
    return (f"training stopped: {type(exc).__name__}({exc}) was raised while training "
            f"{segmenter.classifier} on the features {', '.join(segmenter.features)} "
            "(a plugin may have called sys.exit); choose another classifier or feature "
            "extractor")


def session_bytes(shape: Sequence[int], stack: FeatureStack, n_classes: int) -> int:
    """Estimated peak bytes of a session segmenting an image of ``shape``.

    Per pixel: F features at the stack's peak ``code_bytes`` each while their uint8 codes
    are made, the float32 prepared image (4 bytes a channel), K float32 class probabilities
    with the copies smoothing and labelling take (12 bytes a class), and the painted mask,
    segmentation, uncertainty and overlay (16 bytes). On a 2048x2048 RGB image with the
    default features (97: with the texture families) and two classes this gives 1.85 GB;
    the measured peak of such a session is 1.44 GB (docs/performance.md): the estimate errs
    on the safe side.

    Parameters
    ----------
    shape : sequence of int
        ``(H, W)`` or ``(H, W, C)``.
    stack : FeatureStack
        The feature extractors and their settings.
    n_classes : int
        Classes K.
    """
    channels = int(shape[2]) if len(shape) > 2 else 1
    pixels = int(shape[0]) * int(shape[1])
    n_features = len(stack.feature_names(channels))
    per_pixel = n_features * stack.code_bytes + 4 * channels + 12 * max(n_classes, 2) + 16
    return pixels * per_pixel


def check_memory(image: np.ndarray, stack: FeatureStack, n_classes: int,
                 limit: int | None) -> None:
    """Refuse an image whose features would not fit in ``limit`` bytes.

    Raises
    ------
    ImageError
        The estimate (:func:`session_bytes`) exceeds ``limit``; the message says by how
        much and what to do instead.
    """
    if limit is None:
        return
    need = session_bytes(image.shape, stack, n_classes)
    if need > limit:
        raise ImageError(
            f"this image ({image.shape[1]}x{image.shape[0]}) needs ~{_size(need)} of "
            f"features; the limit of a session on this server is {_size(limit)}: use "
            "a working resolution (a downsampled copy of the image, or fewer feature scales) "
            "or `segdash apply` (tiled, any size)")


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def warm_up() -> None:
    """Compile (or load from numba's cache) the feature and tree-walk kernels on a tiny
    problem, so that the first real segmentation does not wait for them."""
    from sklearn.ensemble import ExtraTreesClassifier

    rng = np.random.default_rng(0)
    for shape in ((24, 24), (24, 24, 3)):
        img = rng.random(shape).astype(np.float32)
        labels = np.zeros(shape[:2], np.uint8)
        labels[2:4] = 1
        labels[20:22] = 2
        for name in ("random_forest", "gradient_boosting"):
            fit(img, labels, feature_params={"sigma_max": 4},
                classifier=name).predict_proba(img)
    X = rng.integers(0, 256, (64, 3)).astype(np.uint8)
    deep = ExtraTreesClassifier(2, random_state=0).fit(X, np.arange(64) % 2)
    if not compile_trees(deep).complete:
        predict_proba_codes(deep, X)


_WARMING: threading.Thread | None = None


def _warm_up_once() -> None:
    """Load segdash's compiled kernels in the background when the first session starts
    (a few seconds the first time, 15 s if numba must compile them), so that the first
    stroke does not wait for them."""
    global _WARMING
    if _WARMING is None:
        def job() -> None:
            try:
                warm_up()
            except Exception:  # noqa: BLE001 - only a head start; real use reports errors
                pass

        _WARMING = threading.Thread(target=job, name="segdash-warm-up", daemon=True)
        _WARMING.start()
