"""Projects: many images, each with its strokes, sharing classes, features and classifier.

A :class:`Project` is the unit of work of the dashboard and of ``segdash train``: a set of
images (files inside the project's folder, uploads stored beside it; a TIFF stack is one
image of several frames), the strokes painted on each frame, the classes, the selected
feature extractors and the classifier with their settings. It lives in a JSON project file
(format in docs/projects.md) written atomically after every change, with a revision counter
that detects a second writer.

One model is trained on the painted pixels of every frame (:func:`train_project`): the
features of all images are coded with one quantizer made from the channel range pooled
over every image of the project (recorded per image in the file), so a model does not
depend on which image is on screen; only the codes of painted pixels are kept per frame
(:class:`PaintedRows`), never every image's features.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .classes import ClassInfo, default_class
from .codes import Quantizer, channel_range
from .contract import image_channels, prepare_image
from .errors import ProjectConflictError, ProjectError
from .io.naming import is_image_name
from .io.pyramid import Pyramid, default_downsample, is_large, open_large, pyramid_of
from .io.read import read_frame as _read_frame
from .io.read import read_frame_untrusted, read_untrusted, received_file, sniff_format
from .io.render import DisplaySettings
from .io.sources import open_source
from .model import (
    SegmentationModel,
    check_classes,
    painted_rows,
    pooled_range,
    shared_quantizer,
)
from .ondemand import ByteCache, TiledImage, scale_strokes
from .stack import FeatureStack
from .strokes import Stroke, rasterize_strokes

#: ``format`` of a project file, and the version of the format this segdash writes
#: (2: strokes may erase, label 0, or fill a lasso, ``fill``); versions 1 and 2 are read.
FORMAT = "segdash-project"
FORMAT_VERSION = 2
#: The project file's name when a folder is served.
DEFAULT_NAME = "segdash-project.json"
#: Folder (beside the project file) that uploads are stored in.
UPLOADS = "segdash-uploads"
#: Largest project file read, in bytes (strokes of a large project take a few MB).
MAX_PROJECT_BYTES = 64_000_000
#: Most images in a project.
MAX_IMAGES = 10_000
#: Bytes of decoded pixels a project (and its training's tiled images) keeps between uses
#: of its tiled images; the least recently used are dropped and read again when needed.
HELD_PIXELS_BYTES = 1_000_000_000
#: Most stroke points in a project, all images and frames together.
MAX_POINTS = 5_000_000
#: Frames whose channel ranges are pooled for a stack's range (evenly spaced).
RANGE_FRAMES = 8
#: Coarsest working resolution a project file may ask for.
MAX_DOWNSAMPLE = 1024


# -- files -----------------------------------------------------------------------------

def fingerprint(path: str | Path) -> str:
    """``"sha256:<hex>"`` of a file's content (what identifies an image in a project).

    Hashed once per process and file state: a file whose size, modification and status
    change times and inode are those it had when this process last hashed it is not read
    again (a folder of slides is not hashed anew by every session that opens its project).
    """
    st = os.stat(path)
    path = str(Path(path).resolve())
    state = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    with _FINGERPRINTS_LOCK:
        known = _FINGERPRINTS.get(path)
    if known is not None and known[0] == state:
        return known[1]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    found = "sha256:" + h.hexdigest()
    # a file changed within the file system's timestamp granularity of the hash could
    # change again with the same times ("racily clean" in git's words): remember only
    # files unchanged for a while
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > 2_000_000_000:
        with _FINGERPRINTS_LOCK:
            if len(_FINGERPRINTS) >= 4 * MAX_IMAGES:
                _FINGERPRINTS.clear()
            _FINGERPRINTS[path] = (state, found)
    return found


_FINGERPRINTS: dict[str, tuple[tuple[int, ...], str]] = {}
_FINGERPRINTS_LOCK = threading.Lock()


def fallback_file(root: str | Path) -> Path:
    """Where the project of a read-only folder ``root`` is saved instead.

    ``$XDG_STATE_HOME/segdash/projects/<hash of the folder's path>/segdash-project.json``
    (``~/.local/state`` when the variable is unset): one place per folder, found again by
    the next ``segdash serve`` of that folder.
    """
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return base / "segdash" / "projects" / key / DEFAULT_NAME


def _is_read_only(exc: OSError) -> bool:
    return isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.EACCES,
                                                             errno.EPERM)


def held_bytes(levels: Sequence[Any]) -> int:
    """What keeping these pyramid levels costs in a :class:`~segdash.ondemand.ByteCache`
    of :data:`HELD_PIXELS_BYTES`: the bytes of the levels held as arrays (a lazy file level
    costs little, counted as 1 MB so that handles are bounded too), at most the whole limit
    (the image used last is always kept, however large)."""
    held = sum(lv.nbytes for lv in levels if isinstance(lv, np.ndarray))
    return min(max(int(held), 1_000_000), HELD_PIXELS_BYTES)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old or the new content, never
    a part: a temporary file in the same folder, flushed to disk, then ``os.replace``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``'s sidecar ``.lock`` file while reading the revision and
    replacing the file (two processes saving at once are serialised)."""
    import fcntl

    with open(path.with_name(path.name + ".lock"), "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_frame(path: Path, frame: int = 0) -> np.ndarray:
    """Frame ``frame`` of an image file, ``(H, W)`` or ``(H, W, C)`` without alpha, read in
    this process (:func:`segdash.io.read.read_frame`): for the operator's own files;
    uploads go through :meth:`Project.read`, decoded in a sandboxed child.

    Raises
    ------
    ImageError
        Not a readable image, or no such frame.
    """
    return _read_frame(path, frame)[0]


# -- the project -----------------------------------------------------------------------

@dataclass
class ProjectImage:
    """One image of a project.

    Attributes
    ----------
    path : str
        Relative to the project's folder, ``/``-separated (never absolute, never outside).
    fingerprint : str
        ``"sha256:<hex>"`` of the file when it was added.
    shape : tuple of int
        ``(H, W, C)`` of each frame (C = 1 for grey, alpha not counted).
    frames : int
        Frames (1 for a single image; pages, planes or time points of a stack).
    low, span : tuple of float
        Channel range (:func:`segdash.codes.channel_range` of the prepared image, pooled over
        up to :data:`RANGE_FRAMES` frames): what the project's quantizer is made from.
    strokes : dict
        ``{frame: [Stroke, ...]}``, frames without strokes absent.
    problem : str
        Why the image cannot be used now (changed or missing on disk), empty when fine.
    display : DisplaySettings or None
        How the user chose to show it (range, channels; every frame alike); None: the
        default rule (:meth:`segdash.io.render.DisplaySettings.auto`).
    """

    path: str
    fingerprint: str
    shape: tuple[int, int, int]
    frames: int
    low: tuple[float, ...]
    span: tuple[float, ...]
    strokes: dict[int, list[Stroke]] = field(default_factory=dict)
    problem: str = ""
    display: DisplaySettings | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def channels(self) -> int:
        return int(self.shape[2])

    @property
    def stroke_count(self) -> int:
        return sum(len(v) for v in self.strokes.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "fingerprint": self.fingerprint,
            "shape": list(self.shape),
            "frames": self.frames,
            "channel_range": {"low": list(self.low), "span": list(self.span)},
            "strokes": {str(f): [s.to_dict() for s in ss]
                        for f, ss in sorted(self.strokes.items()) if ss},
            **({"display": self.display.to_dict()} if self.display is not None else {}),
        }


def _fail(where: str, what: str) -> ProjectError:
    return ProjectError(f"project file: {where}: {what}")


def _parse_image(i: int, d: Any) -> ProjectImage:
    where = f"images[{i}]"
    if not isinstance(d, dict):
        raise _fail(where, "not an object")
    path = d.get("path")
    if not isinstance(path, str) or not path:
        raise _fail(where, "no path")
    fp = d.get("fingerprint")
    if not isinstance(fp, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", fp):
        raise _fail(where, "fingerprint must be 'sha256:' and 64 hex digits")
    shape = d.get("shape")
    if (not isinstance(shape, list) or len(shape) != 3
            or not all(isinstance(n, int) and n > 0 for n in shape)):
        raise _fail(where, "shape must be [height, width, channels] of positive integers")
    frames = d.get("frames", 1)
    if not isinstance(frames, int) or not 1 <= frames <= 1_000_000:
        raise _fail(where, "frames must be a positive integer")
    rng = d.get("channel_range")
    try:
        low = tuple(float(v) for v in rng["low"])
        span = tuple(float(v) for v in rng["span"])
    except (KeyError, TypeError, ValueError):
        raise _fail(where, "channel_range must hold lists 'low' and 'span'") from None
    if (len(low) != shape[2] or len(span) != shape[2]
            or not all(math.isfinite(v) for v in (*low, *span))
            or not all(v > 0 for v in span)):
        raise _fail(where, "channel_range: one finite low and positive span per channel")
    raw = d.get("strokes", {})
    if not isinstance(raw, dict):
        raise _fail(where, "strokes must map frame numbers to lists of strokes")
    strokes: dict[int, list[Stroke]] = {}
    for key, items in raw.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) < frames):
            raise _fail(where, f"strokes of frame {key!r}: no such frame (it has {frames})")
        if not isinstance(items, list):
            raise _fail(where, f"strokes of frame {key}: not a list")
        out = []
        for j, s in enumerate(items):
            try:
                out.append(Stroke.from_dict(s))
            except ValueError as exc:
                raise _fail(where, f"stroke {j} of frame {key} is malformed: {exc}") from None
        if out:
            strokes[int(key)] = out
    display = None
    if d.get("display") is not None:  # absent in files written before it existed
        try:
            display = DisplaySettings.from_dict(d["display"], shape[2])
        except (ValueError, TypeError) as exc:
            raise _fail(where, str(exc)) from None
    return ProjectImage(path, fp, tuple(shape), frames, low, span, strokes, display=display)


class Project:
    """A project: images with their strokes, classes, feature and classifier settings.

    Parameters
    ----------
    file : path or None
        The project file; None keeps the project in memory (nothing saved).
    root : path, optional
        The folder image paths are relative to and must stay inside; default the project
        file's folder. Given by whoever opens the project (the command line), never by the
        file.

    Attributes
    ----------
    images : list of ProjectImage
    classes : list of ClassInfo
    features : list of str
        Selected feature extractors; ``feature_params`` ``{name: {setting: value}}``.
    classifier : str
        Selected classifier; ``classifier_params`` its settings.
    downsample : int or None
        Working resolution chosen for every image (None: :meth:`working_resolution`'s
        default).
    revision : int
        The file's revision this project was read at or last wrote.
    notice : str
        Something the user should be told (the fallback location of a read-only folder).
    """

    def __init__(self, file: str | Path | None, root: str | Path | None = None) -> None:
        self.file = Path(file).absolute() if file is not None else None
        if root is None:
            if self.file is None:
                raise ValueError("a project without a file needs a root folder")
            root = self.file.parent
        self.root = Path(root).resolve()
        self.images: list[ProjectImage] = []
        self.classes: list[ClassInfo] = [default_class(1), default_class(2)]
        self.features: list[str] = ["basic"]
        self.feature_params: dict[str, dict[str, Any]] = {}
        self.classifier = "random_forest"
        self.classifier_params: dict[str, Any] = {}
        self.downsample: int | None = None
        self.revision = 0
        self.notice = ""
        # Tiled images between uses, least recently used dropped (opened again when
        # needed): a slide is a lazy handle, but a small image tiled at a coarse working
        # resolution holds its pixels, and a project may hold thousands.
        self._pyramids = ByteCache(HELD_PIXELS_BYTES)
        #: Memory (bytes) the sandboxed decoder of an upload may use (None: the default of
        #: :func:`segdash.io.read.read_untrusted`); a session sets its memory budget here.
        self.decode_memory_bytes: int | None = None

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(
        cls, file: str | Path, paths: Sequence[str | Path] = (), root: str | Path | None = None
    ) -> Project:
        """The project in ``file`` (or in the fallback location of a read-only folder),
        or a new one; image files in ``paths`` not in it yet are added (in order).

        Raises
        ------
        ProjectError
            The file exists and is malformed, too large, or names a path outside ``root``;
            a path is outside ``root``.
        ImageError
            A path is not a readable image.
        """
        file = Path(file).absolute()
        root = Path(root) if root is not None else file.parent
        fallback = fallback_file(root)
        if file.exists():
            project = cls.load(file, root)
        elif fallback.exists():
            project = cls.load(fallback, root)
            project.notice = (f"{root} is read-only: this project is saved to {fallback}")
        else:
            project = cls(file, root)
        known = {img.path for img in project.images}
        added = False
        for p in paths:
            rel = project.relative(p)
            if rel not in known:
                project.add_image(p, save=False)
                known.add(rel)
                added = True
        if added or not project.file.exists():
            project.save()
        return project

    @classmethod
    def load(cls, file: str | Path, root: str | Path | None = None) -> Project:
        """Read a project file (images are checked against their fingerprints: see
        :attr:`ProjectImage.problem`).

        Raises
        ------
        ProjectError
            Unreadable, too large, not JSON, not a segdash project, malformed, too many
            images or stroke points, or an image path outside the project's folder.
        """
        file = Path(file).absolute()
        try:
            size = file.stat().st_size
            if size > MAX_PROJECT_BYTES:
                raise ProjectError(
                    f"{file.name}: project file of {size} bytes exceeds the limit of "
                    f"{MAX_PROJECT_BYTES} bytes"
                )
            data = file.read_bytes()
        except OSError as exc:
            raise ProjectError(f"cannot read {file}: {exc.strerror or exc}") from exc
        project = cls.from_json(data, file, root)
        for img in project.images:
            project.check(img)
        return project

    @classmethod
    def from_json(
        cls, data: str | bytes, file: str | Path | None, root: str | Path | None = None
    ) -> Project:
        """A project from a project file's content (images not checked on disk).

        Raises
        ------
        ProjectError
            As :meth:`load`.
        """
        if len(data) > MAX_PROJECT_BYTES:
            raise ProjectError(
                f"project file of {len(data)} bytes exceeds the limit of {MAX_PROJECT_BYTES}"
            )
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ProjectError(f"project file is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ProjectError(f"not a segdash project file (missing format: {FORMAT})")
        version = doc.get("version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ProjectError(
                f"project file of format version {version!r}: this segdash reads versions "
                f"1 to {FORMAT_VERSION} (upgrade segdash)"
            )
        project = cls(file, root)
        rev = doc.get("revision", 0)
        if not isinstance(rev, int) or rev < 0:
            raise _fail("revision", "must be a non-negative integer")
        project.revision = rev
        raw_images = doc.get("images", [])
        if not isinstance(raw_images, list):
            raise _fail("images", "not a list")
        if len(raw_images) > MAX_IMAGES:
            raise _fail("images", f"{len(raw_images)} images exceed the limit of {MAX_IMAGES}")
        images = [_parse_image(i, d) for i, d in enumerate(raw_images)]
        points = sum(len(s.xs) for img in images for ss in img.strokes.values() for s in ss)
        if points > MAX_POINTS:
            raise _fail("strokes", f"{points} stroke points exceed the limit of {MAX_POINTS}")
        seen: set[str] = set()
        for i, img in enumerate(images):
            img.path = project.relative(project.root / img.path, f"images[{i}]")
            if img.path in seen:
                raise _fail(f"images[{i}]", f"{img.path} is listed twice")
            seen.add(img.path)
        channels = {img.channels for img in images}
        if len(channels) > 1:
            raise _fail("images", f"images of different channel counts {sorted(channels)}")
        project.images = images
        try:
            project.classes = [ClassInfo(int(c["id"]), str(c["name"]), str(c["color"]))
                               for c in doc.get("classes", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise _fail("classes", f"each needs id, name and colour ({exc})") from None
        if len({c.id for c in project.classes}) != len(project.classes):
            raise _fail("classes", "two classes share an id")
        feats = doc.get("features", {})
        names = feats.get("names") if isinstance(feats, dict) else None
        params = feats.get("params", {}) if isinstance(feats, dict) else None
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) for n in names)
                or not isinstance(params, dict)
                or not all(isinstance(v, dict) for v in params.values())):
            raise _fail("features", "needs 'names' (a list of extractor names) and 'params' "
                        "({name: {setting: value}})")
        project.features, project.feature_params = names, params
        clf = doc.get("classifier", {})
        if (not isinstance(clf, dict) or not isinstance(clf.get("name"), str)
                or not isinstance(clf.get("params", {}), dict)):
            raise _fail("classifier", "needs 'name' and 'params' ({setting: value})")
        project.classifier, project.classifier_params = clf["name"], clf.get("params", {})
        d = doc.get("working_resolution")
        if d is not None and (not isinstance(d, int) or isinstance(d, bool)
                              or not 1 <= d <= MAX_DOWNSAMPLE):
            raise _fail("working_resolution",
                        f"must be a downsample factor from 1 to {MAX_DOWNSAMPLE}")
        project.downsample = d
        return project

    # -- paths and images ---------------------------------------------------------------

    def relative(self, path: str | Path, where: str = "") -> str:
        """``path`` relative to the project's folder, ``/``-separated.

        Raises
        ------
        ProjectError
            ``path`` is (or resolves, through ``..`` or a link, to) a place outside the
            project's folder.
        """
        p = Path(path)
        resolved = (p if p.is_absolute() else self.root / p).resolve()
        if not resolved.is_relative_to(self.root) or resolved == self.root:
            label = f"{where}: " if where else ""
            raise ProjectError(
                f"project file: {label}{path} is outside the project's folder {self.root}: "
                "a project names only images inside its folder"
            )
        return resolved.relative_to(self.root).as_posix()

    def path_of(self, image: ProjectImage | int) -> Path:
        """The file of an image (checked to be inside the project's folder)."""
        img = self.image(image)
        return self.root / self.relative(self.root / img.path)

    def image(self, image: ProjectImage | int) -> ProjectImage:
        return self.images[image] if isinstance(image, int) else image

    def index(self, path: str) -> int:
        """Position of the image at relative ``path``; ValueError when absent."""
        for i, img in enumerate(self.images):
            if img.path == path:
                return i
        raise ValueError(f"no image {path} in the project")

    def check(self, image: ProjectImage | int) -> str:
        """Compare an image's file with its fingerprint; sets and returns its
        :attr:`~ProjectImage.problem` (empty when the file is unchanged)."""
        img = self.image(image)
        path = self.root / img.path
        try:
            found = fingerprint(path)
        except OSError as exc:
            img.problem = f"{img.path}: cannot read the image ({exc.strerror or exc})"
            return img.problem
        if found != img.fingerprint:
            self._pyramids.drop(lambda key: key != img.path)
            img.problem = (
                f"{img.path} changed on disk since it was added to the project (its content "
                f"fingerprint differs): its {img.stroke_count} stroke(s) may no longer fit; "
                "restore the file, or remove the image from the project and add it again"
            )
        else:
            img.problem = ""
        return img.problem

    def add_image(self, path: str | Path, save: bool = True,
                  memory_bytes: int | None = None) -> ProjectImage:
        """Add an image file inside the project's folder (the last entry); returns it, or
        the entry it already has. A file in the uploads folder is decoded in a sandboxed
        child only (:meth:`read`), ``memory_bytes`` its memory limit.

        Raises
        ------
        ProjectError
            Outside the folder, too many images, or another channel count than the others.
        ImageError
            Not a readable image.
        """
        rel = self.relative(path)
        for img in self.images:
            if img.path == rel:
                return img
        if len(self.images) >= MAX_IMAGES:
            raise ProjectError(f"a project holds at most {MAX_IMAGES} images")
        file = self.root / rel
        fp = fingerprint(file)
        first = None
        if self.is_upload(file):  # never decoded here: the child reports the frames too
            first, frames = self._read_upload(file, 0, memory_bytes)
            large = pyramid_of(first, file.name) if frames == 1 and is_large(first.shape) \
                else None
        else:
            frames = open_source(file).frames
            large = open_large(file) if frames == 1 else None
        if large is not None:
            # a slide: its shape from the file, its range from a coarse level (never whole)
            sample = large.sample()
            shape = (*large.shape[:2], image_channels(sample))
            ranges = [channel_range(prepare_image(sample))]
            self._pyramids.put(rel, large, held_bytes(large.levels))
        else:
            picks = sorted({round(k * (frames - 1) / max(RANGE_FRAMES - 1, 1))
                            for k in range(min(frames, RANGE_FRAMES))})
            ranges, shape = [], None
            for f in picks:
                arr = first if f == 0 and first is not None else self._read_file(
                    file, f, memory_bytes)
                shape = (arr.shape[0], arr.shape[1], image_channels(arr))
                ranges.append(channel_range(prepare_image(arr)))
                del arr
        del first
        if self.images and shape[2] != self.images[0].channels:
            raise ProjectError(
                f"{rel} has {shape[2]} channel(s), the project's images "
                f"{self.images[0].channels}: one project holds images of one kind"
            )
        low, span = pooled_range(ranges)
        img = ProjectImage(rel, fp, shape, frames, tuple(map(float, low)),
                           tuple(map(float, span)))
        self.images.append(img)
        if save:
            self.save()
        return img

    def add_upload(self, data: bytes | Path, filename: str,
                   memory_bytes: int | None = None) -> ProjectImage:
        """Store an uploaded image in the project's ``segdash-uploads`` folder and add it.

        The file is decoded first (a file that is not an image is refused before anything
        is stored) and named after its content's fingerprint and a sanitised ``filename``.
        An upload received on disk (a path) is decoded in a sandboxed child
        (:func:`segdash.io.read.read_untrusted`, ``memory_bytes`` its memory limit), so a
        hostile file costs the child only; the stored copy is the same bytes (its
        fingerprint is checked whenever it is read again).

        Raises
        ------
        ImageError
            Not a readable image.
        ProjectError
            The folder cannot be written.
        """
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).name).strip("._") or "image"
        if isinstance(data, Path):
            return self._add_upload_file(data, name, memory_bytes)
        with received_file(data) as received:
            return self._add_upload_file(received, name, memory_bytes)

    def _add_upload_file(self, path: Path, name: str, memory_bytes: int | None
                         ) -> ProjectImage:
        check = path.with_name(path.name + ".check.npy")
        try:
            read_untrusted(path, check, name, memory_bytes=memory_bytes)  # checked, dropped
        finally:
            check.unlink(missing_ok=True)
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(0)
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if not is_image_name(name):
            name += {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}[sniff_format(head)]
        folder = self.root / UPLOADS
        target = folder / f"{digest.hexdigest()[:12]}-{name}"
        try:
            folder.mkdir(exist_ok=True)
            if not target.exists():
                part = target.with_name(f".{target.name}.{os.getpid()}.part")
                try:
                    shutil.copyfile(path, part)
                    os.replace(part, target)
                finally:
                    part.unlink(missing_ok=True)
        except OSError as exc:
            raise ProjectError(
                f"cannot store the upload {name} in {folder}: {exc.strerror or exc}"
            ) from exc
        return self.add_image(target, memory_bytes=memory_bytes)

    def remove_image(self, image: ProjectImage | int) -> None:
        """Remove an image and its strokes from the project (the file stays)."""
        img = self.image(image)
        self.images = [i for i in self.images if i is not img]
        self.save()

    def read(self, image: ProjectImage | int, frame: int = 0) -> np.ndarray:
        """Pixels of one frame, ``(H, W)`` or ``(H, W, C)``.

        Raises
        ------
        ProjectError
            The file changed since it was added (fingerprint) or is missing.
        ImageError
            It no longer reads as an image.
        """
        img = self._unchanged(image)
        return self._read_file(self.path_of(img), frame)

    def _unchanged(self, image: ProjectImage | int) -> ProjectImage:
        """The entry, once its file is checked against its fingerprint (ProjectError when
        it changed or is missing)."""
        img = self.image(image)
        if self.check(img):
            raise ProjectError(img.problem)
        return img

    def is_upload(self, path: str | Path) -> bool:
        """Whether ``path`` is in the project's uploads folder (a file someone uploaded:
        only ever decoded in a sandboxed child, never in this process)."""
        return (self.root / UPLOADS) in Path(path).resolve().parents

    def _read_file(self, path: Path, frame: int, memory_bytes: int | None = None
                   ) -> np.ndarray:
        if self.is_upload(path):
            return self._read_upload(path, frame, memory_bytes)[0]
        return read_frame(path, frame)

    def _read_upload(self, path: Path, frame: int, memory_bytes: int | None = None
                     ) -> tuple[np.ndarray, int]:
        """A frame of an upload and its frame count, decoded by
        :func:`segdash.io.read.read_frame_untrusted` into a temporary ``.npy`` that is
        mapped and unlinked at once (its pages stay readable until the array is dropped)."""
        fd, name = tempfile.mkstemp(suffix=".npy", prefix="segdash-decoded-")
        os.close(fd)
        try:
            return read_frame_untrusted(path, name, frame, path.name,
                                        memory_bytes=memory_bytes or self.decode_memory_bytes)
        finally:
            Path(name).unlink(missing_ok=True)

    # -- working resolution and large images ---------------------------------------------

    def working_resolution(self) -> int:
        """The downsample factor every image is worked on at: :attr:`downsample` when
        chosen, else the default of the project's largest image
        (:func:`~segdash.io.pyramid.default_downsample`): 1 for a project of ordinary
        images, coarser when it holds a slide."""
        if any(img.frames > 1 for img in self.images):
            return 1  # stacks are read frame by frame, whole (see is_tiled)
        if self.downsample is not None:
            return int(self.downsample)
        large = [img.shape for img in self.images if is_large(img.shape)]
        if not large:
            return 1
        return default_downsample(max(large, key=lambda s: s[0] * s[1]))

    def is_tiled(self, image: ProjectImage | int) -> bool:
        """Whether an image is worked on tile by tile (:meth:`pyramid`): a large single
        image, or any single image when the working resolution is coarser than 1. Stacks
        (several frames) are read frame by frame, whole."""
        img = self.image(image)
        return img.frames == 1 and (is_large(img.shape) or self.working_resolution() > 1)

    def pyramid(self, image: ProjectImage | int) -> Pyramid:
        """A tiled image as a lazy :class:`~segdash.io.pyramid.Pyramid`: a pyramidal or
        large TIFF read region by region, a smaller file read whole.

        Raises
        ------
        ProjectError
            The file changed since it was added (fingerprint) or is missing.
        ImageError
            It no longer reads as an image.
        """
        img = self._unchanged(image)
        found = self._pyramids.get(img.path)
        if found is None:
            path = self.path_of(img)
            if self.is_upload(path):  # decoded in the sandbox, its pixels mapped
                found = pyramid_of(self._read_upload(path, 0)[0], img.name)
            else:
                found = open_large(path) or pyramid_of(read_frame(path), img.name)
            self._pyramids.put(img.path, found, held_bytes(found.levels))
        return found

    def sample(self, image: ProjectImage | int) -> np.ndarray:
        """An image whole, or a tiled one from a coarse pyramid level (what ranges and
        thumbnails are estimated on)."""
        if self.is_tiled(image):
            return self.pyramid(image).sample()
        return self.read(image, 0)

    # -- strokes ------------------------------------------------------------------------

    def strokes(self, image: ProjectImage | int, frame: int = 0) -> list[Stroke]:
        return list(self.image(image).strokes.get(int(frame), []))

    def set_strokes(self, image: ProjectImage | int, frame: int, strokes: Sequence[Stroke],
                    save: bool = True) -> None:
        """Replace one frame's strokes (and save, by default)."""
        img = self.image(image)
        if not 0 <= frame < img.frames:
            raise ValueError(f"{img.name} has no frame {frame}")
        if strokes:
            img.strokes[int(frame)] = list(strokes)
        else:
            img.strokes.pop(int(frame), None)
        if save:
            self.save()

    def labels(self, image: ProjectImage | int, frame: int = 0) -> np.ndarray:
        """``(H, W)`` uint16 painted mask of one frame."""
        img = self.image(image)
        return rasterize_strokes(self.strokes(img, frame), img.shape[:2])

    def painted(self) -> list[tuple[int, int]]:
        """``(image index, frame)`` of every frame with strokes, in project order."""
        return [(i, f) for i, img in enumerate(self.images) for f in sorted(img.strokes)
                if img.strokes[f]]

    # -- settings -----------------------------------------------------------------------

    def feature_stack(self) -> FeatureStack:
        """The selected extractors with the project's settings."""
        params = {n: self.feature_params.get(n, {}) for n in self.features}
        return FeatureStack(self.features, params if len(self.features) > 1
                            else params[self.features[0]])

    def channel_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The channel range pooled over every image (what the quantizer is made from)."""
        return pooled_range([(np.array(i.low), np.array(i.span)) for i in self.images])

    def quantizer(self, stack: FeatureStack) -> Quantizer:
        """The codes every image's features are stored as (see the module's docstring)."""
        low, span = self.channel_range()
        return shared_quantizer(stack, low, span, lambda: self.sample(0))

    # -- the file -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "revision": self.revision,
            "classes": [c.to_dict() for c in self.classes],
            "features": {"names": list(self.features),
                         "params": {n: dict(v) for n, v in self.feature_params.items()}},
            "classifier": {"name": self.classifier, "params": dict(self.classifier_params)},
            "images": [img.to_dict() for img in self.images],
            **({"working_resolution": self.downsample} if self.downsample is not None
               else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self) -> None:
        """Write the project file atomically, one revision on.

        A read-only folder moves the file to :func:`fallback_file` once (and says so in
        :attr:`notice`).

        Raises
        ------
        ProjectConflictError
            Another session saved the file since this one read or wrote it: nothing is
            written (this session's changes stay in memory; :meth:`reload` takes theirs).
        ProjectError
            The file cannot be written anywhere.
        """
        if self.file is None:
            return
        try:
            self._save_to(self.file)
        except OSError as exc:
            if not _is_read_only(exc):
                raise ProjectError(f"cannot save {self.file}: {exc.strerror or exc}") from exc
            fallback = fallback_file(self.root)
            if self.file == fallback:
                raise ProjectError(f"cannot save {self.file}: {exc.strerror or exc}") from exc
            try:
                fallback.parent.mkdir(parents=True, exist_ok=True)
                self._save_to(fallback)
            except OSError as exc2:
                raise ProjectError(
                    f"cannot save the project: {self.file.parent} is read-only and "
                    f"{fallback.parent} failed too ({exc2.strerror or exc2})"
                ) from exc2
            self.notice = (f"{self.file.parent} is read-only: this project is saved to "
                           f"{fallback}")
            self.file = fallback

    def _save_to(self, file: Path) -> None:
        with _locked(file):
            on_disk = _revision_of(file)
            if on_disk is not None and on_disk != self.revision:
                raise ProjectConflictError(
                    f"{file.name} was saved by another session (revision {on_disk}; this "
                    f"session last saw revision {self.revision}): nothing was written. "
                    "Reload the project to continue with the other session's work, or save "
                    "this session's project under another name"
                )
            self.revision += 1
            try:
                write_atomic(file, self.to_json().encode())
            except BaseException:
                self.revision -= 1
                raise

    def reload(self) -> Project:
        """The project as its file holds it now (e.g. after a conflict)."""
        return Project.load(self.file, self.root)


def _revision_of(file: Path) -> int | None:
    """The revision of the project file on disk, None when there is none (or it is not a
    readable project file: then it is overwritten)."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(data)
        rev = doc.get("revision") if isinstance(doc, dict) else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return rev if isinstance(rev, int) else None


# -- training across images -------------------------------------------------------------

class PaintedRows:
    """The feature codes of painted pixels, per image and frame, kept between trainings.

    Entries are keyed by image path and frame and remember the strokes, feature settings
    and quantizer they were computed for; anything else changed recomputes them.

    Images the project works on tile by tile (:meth:`Project.is_tiled`: slides, or every
    image at a coarse working resolution) have a :class:`~segdash.ondemand.TiledImage`
    instead: only the tiles under their strokes are read and computed, and the codes stay
    in :attr:`cache` (bounded in bytes), where the session's overlay of the same image
    finds them.

    Parameters
    ----------
    cache_bytes : int
        Bytes the tiles' codes and painted rows may hold, all tiled images together.
    """

    def __init__(self, cache_bytes: int = 1_000_000_000) -> None:
        self._rows: dict[tuple[str, int], tuple[tuple, np.ndarray, np.ndarray]] = {}
        self.cache = ByteCache(int(cache_bytes))
        # one per file content and working resolution, the least recently used dropped
        # (made again from the project's pyramid: their codes stay in the cache)
        self._tiled = ByteCache(HELD_PIXELS_BYTES)

    def tiled_image(self, project: Project, index: int) -> TiledImage:
        """The tiled image of project image ``index`` at the project's working resolution
        (one per file content and resolution, sharing :attr:`cache`)."""
        img = project.images[index]
        d = project.working_resolution()
        key = (img.path, img.fingerprint, d)
        found = self._tiled.get(key)
        if found is None:
            found = TiledImage(project.pyramid(img).at(d), self.cache, token=key)
            self._tiled.put(key, found, held_bytes([found.level]))
        return found

    def get(
        self, project: Project, index: int, frame: int, stack: FeatureStack,
        quantizer: Quantizer, codes: np.ndarray | None = None, ring: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` of one frame's painted pixels: ``(N, F)`` uint8 and ``(N,)``.

        ``codes`` are the frame's full ``(H, W, F)`` codes when at hand (the image on
        screen); otherwise the frame is read and its features computed once. ``ring``: a
        tiled image's codes are taken from its tiles grown by ``ring`` pixels, those its
        prediction reads (:meth:`~segdash.ondemand.TiledImage.painted_rows`).
        """
        img = project.images[index]
        strokes = tuple(project.strokes(img, frame))
        if project.is_tiled(img):
            # the tiled image keeps its painted rows per tile in the cache itself
            scaled = scale_strokes(strokes, project.working_resolution())
            return self.tiled_image(project, index).painted_rows(scaled, stack, quantizer,
                                                                  ring)
        key = (img.fingerprint, strokes, stack.key(), _quantizer_key(quantizer))
        hit = self._rows.get((img.path, frame))
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        labels = rasterize_strokes(strokes, img.shape[:2])
        if codes is None:
            codes = stack.codes(project.read(img, frame), quantizer)[0]
        X, y = painted_rows(codes, labels)
        X = X.copy()
        self._rows[(img.path, frame)] = (key, X, y)
        return X, y

    def forget(self, keep: Callable[[str, int], bool]) -> None:
        """Drop the entries ``keep(path, frame)`` is False for."""
        self._rows = {k: v for k, v in self._rows.items() if keep(*k)}
        gone: list[tuple] = []

        def kept(key: tuple) -> bool:
            if keep(key[0], 0):
                return True
            gone.append(key)
            return False

        self._tiled.drop(kept)
        self.cache.drop(lambda key: not (len(key) > 1 and key[1] in gone))

    @property
    def nbytes(self) -> int:
        return (sum(x.nbytes + y.nbytes for _, x, y in self._rows.values())
                + self.cache.nbytes)


def _quantizer_key(q: Quantizer) -> bytes:
    return q.offset.tobytes() + q.scale.tobytes() + q.kind.tobytes()


def train_project(
    project: Project,
    rows: PaintedRows | None = None,
    stack: FeatureStack | None = None,
    classifier_params: Mapping[str, Any] | None = None,
    current: tuple[int, int, np.ndarray] | None = None,
    quantizer: Quantizer | None = None,
    ring: int = 0,
) -> SegmentationModel:
    """Train the project's model on the painted pixels of every image and frame.

    The one training of a project: the dashboard calls it with its cache and the codes of
    the frame on screen, ``segdash train`` without; both give the same model.

    Parameters
    ----------
    project : Project
    rows : PaintedRows, optional
        Cached painted rows (a new cache by default).
    stack : FeatureStack, optional
        Default ``project.feature_stack()``.
    classifier_params : mapping, optional
        Default ``project.classifier_params``.
    current : (image index, frame, codes), optional
        The full ``(H, W, F)`` codes of one frame, made with ``quantizer``.
    quantizer : Quantizer, optional
        Default ``project.quantizer(stack)``.
    ring : int
        Pixels around tiled images' tiles their codes are computed with (what the
        session's prediction reads: see :meth:`PaintedRows.get`); no effect on the model.

    Raises
    ------
    ValueError
        Fewer than two classes painted; a painted image changed on disk (ProjectError).
    """
    rows = rows if rows is not None else PaintedRows()
    stack = stack or project.feature_stack()
    quantizer = quantizer or project.quantizer(stack)
    params = project.classifier_params if classifier_params is None else classifier_params
    Xs, ys = [], []
    for i, f in project.painted():
        codes = current[2] if current is not None and current[:2] == (i, f) else None
        X, y = rows.get(project, i, f, stack, quantizer, codes, ring)
        Xs.append(X)
        ys.append(y)
    if not Xs:
        check_classes(np.zeros(0, np.int64))
    model = SegmentationModel.train_rows(
        np.concatenate(Xs), np.concatenate(ys), stack, quantizer, project.classifier,
        params, project.images[0].channels, project.classes,
    )
    # applied at the resolution it was trained at (`segdash apply` reads it)
    model.downsample = project.working_resolution()
    return model


def folder_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder`` (by name: PNG, JPEG, TIFF), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_name(p))


def project_inputs(
    items: Sequence[str], root: str | Path | None = None,
) -> tuple[list[str], list[tuple[str, str]]]:
    """``segdash apply``'s inputs with each project file replaced by its images' paths.

    Parameters
    ----------
    items : sequence of str
        Files, folders and globs; a file ending in ``.json`` is read as a project file.
    root : path, optional
        The folder of the projects' images (default: each project file's folder).

    Returns
    -------
    items : list of str
        The other items as given, project files expanded in their images' order.
    errors : list of (str, str)
        Project files that could not be read, and why.
    """
    out: list[str] = []
    errors: list[tuple[str, str]] = []
    for item in items:
        path = Path(item)
        if path.suffix.lower() != ".json" or not path.is_file():
            out.append(item)
            continue
        try:
            project = Project.load(path, root)
        except ProjectError as exc:
            errors.append((item, str(exc)))
            continue
        if not project.images:
            errors.append((item, "the project has no image"))
        out.extend(str(project.root / img.path) for img in project.images)
    return out, errors


def locate(
    items: Sequence[str | Path], project: str | Path | None = None,
) -> tuple[Path, Path, list[Path]]:
    """Where the project of ``segdash serve ITEMS... [--project FILE]`` lives.

    Parameters
    ----------
    items : sequence of path
        Image files and folders (a folder's images, by name, not recursive).
    project : path, optional
        The project file; by default ``segdash-project.json`` in the folder holding all
        the items (the one folder given, or the images' common folder).

    Returns
    -------
    file : Path
        The project file.
    root : Path
        The folder image paths are relative to: the project file's folder.
    paths : list of Path
        The image files named, in order.

    Raises
    ------
    ProjectError
        An item does not exist, a folder holds no image, or nothing names a project.
    """
    paths: list[Path] = []
    folders: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = folder_images(p)
            if not found:
                raise ProjectError(f"{p} holds no PNG, JPEG or TIFF image")
            paths += found
            folders.append(p.resolve())
        elif p.is_file():
            paths.append(p)
            folders.append(p.resolve().parent)
        else:
            raise ProjectError(f"{p}: no such file or folder")
    if project is not None:
        file = Path(project).absolute()
    elif folders:
        file = Path(os.path.commonpath([str(f) for f in folders])) / DEFAULT_NAME
    else:
        raise ProjectError("name a folder, images or a project file")
    return file, file.parent.resolve(), paths
