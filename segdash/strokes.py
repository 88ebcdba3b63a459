"""Painted strokes and their rasterisation into a label mask.

A stroke is a polyline of (x, y) points in image pixel coordinates, x = column and y = row
counted from the top (numpy and PIL convention: integer coordinates are pixel centres), with
a class id and a width in image pixels. Class id :data:`ERASER` (0, "unlabelled") makes an
eraser stroke: it removes the labels of earlier strokes under it. A stroke with ``fill``
set is a lasso: the polygon its points enclose is painted too (a fill-region tool).
:func:`rasterize_strokes` is the one function from strokes to a label mask.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

#: Largest class id a stroke may carry (label masks are uint16).
MAX_CLASS_ID = 65535
#: Annotation files larger than this are refused (bytes).
MAX_ANNOTATION_BYTES = 50_000_000
#: The class id of eraser strokes: they paint "unlabelled".
ERASER = 0
#: Version of the annotations document this segdash writes (2: eraser strokes, label 0,
#: and filled strokes, ``fill``); versions 1 and 2 are read.
ANNOTATIONS_VERSION = 2


@dataclass(frozen=True)
class Stroke:
    """One freehand stroke.

    Attributes
    ----------
    xs, ys : tuple of float
        Point coordinates in image pixels (x = column, y = row from the top).
    label : int
        Class id painted, 1..65535, or :data:`ERASER` (0) for an eraser stroke.
    width : float
        Brush width in image pixels.
    fill : bool
        Also paint the polygon the points enclose (a lasso), not only the line.
    """

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    label: int
    width: float = 5.0
    fill: bool = False

    def __post_init__(self) -> None:
        xs = tuple(float(v) for v in self.xs)
        ys = tuple(float(v) for v in self.ys)
        if len(xs) != len(ys):
            raise ValueError(f"a stroke needs as many x as y ({len(xs)} != {len(ys)})")
        label = int(self.label)
        if not 0 <= label <= MAX_CLASS_ID:
            raise ValueError(f"stroke class id must be in 0..{MAX_CLASS_ID} (0 erases), "
                             f"got {self.label}")
        width = float(self.width)
        if not np.isfinite(width) or width <= 0:
            raise ValueError(f"stroke width must be a positive number, got {self.width}")
        object.__setattr__(self, "xs", xs)
        object.__setattr__(self, "ys", ys)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "width", width)
        if not isinstance(self.fill, bool | np.bool_):
            raise ValueError(f"stroke fill must be true or false, got {self.fill!r}")
        object.__setattr__(self, "fill", bool(self.fill))

    @property
    def erases(self) -> bool:
        """An eraser stroke (class id :data:`ERASER`)."""
        return self.label == ERASER

    def to_dict(self) -> dict[str, Any]:
        """The stroke as stored in annotations and project files (format version 2)."""
        return {"x": list(self.xs), "y": list(self.ys), "label": self.label,
                "width": self.width, "fill": self.fill}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stroke:
        """A stroke from :meth:`to_dict`'s dict; ``width`` (default 5) and ``fill``
        (default false: version 1 files have neither eraser nor fill) may be absent.

        Raises
        ------
        ValueError
            A key is missing or a value is malformed.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a stroke is an object, got {type(d).__name__}")
        try:
            return cls(tuple(d["x"]), tuple(d["y"]), d["label"], d.get("width", 5.0),
                       d.get("fill", False))
        except KeyError as exc:
            raise ValueError(f"a stroke needs {exc}") from None
        except TypeError as exc:
            raise ValueError(str(exc)) from None


def _finite_points(stroke: Stroke) -> list[tuple[float, float]]:
    return [(x, y) for x, y in zip(stroke.xs, stroke.ys, strict=True)
            if np.isfinite(x) and np.isfinite(y)]


def rasterize_strokes(strokes: Iterable[Stroke], shape: Sequence[int]) -> np.ndarray:
    """Paint strokes into a label mask.

    Parameters
    ----------
    strokes : iterable of Stroke
        In painting order: later strokes paint over earlier ones, eraser strokes
        (:data:`ERASER`) write 0 (unlabelled). A ``fill`` stroke of three or more distinct
        points also paints the polygon they enclose. Strokes with no finite point are
        ignored; NaN points inside a stroke are dropped.
    shape : (H, W) or (H, W, C)
        Shape of the image the strokes were drawn on (only H and W are used).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint16, 0 where unlabelled, else the class id of the last stroke covering
        the pixel. Points outside the image are clipped by drawing; a one-point stroke is a
        dot of the stroke's width.
    """
    h, w = int(shape[0]), int(shape[1])
    canvas = Image.new("I", (w, h), 0)  # 32-bit: room for any class id
    draw = ImageDraw.Draw(canvas)
    for stroke in strokes:
        pts = _finite_points(stroke)
        if not pts:
            continue
        width = max(1, int(round(stroke.width)))
        if stroke.fill and len(set(pts)) >= 3:
            draw.polygon(pts, fill=stroke.label)  # the line below adds the brush's edge
        if len(pts) == 1 or all(p == pts[0] for p in pts):
            x, y = pts[0]
            r = stroke.width / 2
            if r <= 0.5:
                draw.point((round(x), round(y)), fill=stroke.label)
            else:
                draw.ellipse((x - r + 0.5, y - r + 0.5, x + r - 0.5, y + r - 0.5),
                             fill=stroke.label)
        else:
            draw.line(pts, fill=stroke.label, width=width, joint="curve")
            if width > 2:  # round caps, as a brush would paint
                r = stroke.width / 2
                for x, y in (pts[0], pts[-1]):
                    draw.ellipse((x - r + 0.5, y - r + 0.5, x + r - 0.5, y + r - 0.5),
                                 fill=stroke.label)
    return np.asarray(canvas, dtype=np.int32).astype(np.uint16)


def strokes_to_json(strokes: Iterable[Stroke], **extra: Any) -> str:
    """Strokes as a JSON document ``{"format": "segdash-annotations", "strokes": [...]}``.

    ``extra`` keys (e.g. ``classes``, ``image_shape``) are stored alongside.
    """
    doc = {"format": "segdash-annotations", "version": ANNOTATIONS_VERSION, **extra,
           "strokes": [s.to_dict() for s in strokes]}
    return json.dumps(doc)


def strokes_from_json(data: str | bytes) -> tuple[list[Stroke], dict[str, Any]]:
    """Read strokes written by :func:`strokes_to_json`.

    Returns
    -------
    strokes : list of Stroke
    extra : dict
        The document's other keys (``classes``, ``image_shape`` when present).

    Raises
    ------
    ValueError
        Not JSON, not a segdash annotations document, a newer version than
        :data:`ANNOTATIONS_VERSION`, or a malformed stroke (the message gives the stroke's
        index).
    """
    if len(data) > MAX_ANNOTATION_BYTES:
        raise ValueError(f"annotation file too large ({len(data)} bytes)")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"annotations are not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != "segdash-annotations":
        raise ValueError("not a segdash annotations file (missing format: segdash-annotations)")
    version = doc.get("version", 1)
    if not isinstance(version, int) or not 1 <= version <= ANNOTATIONS_VERSION:
        raise ValueError(f"annotations of format version {version!r}: this segdash reads "
                         f"versions 1 to {ANNOTATIONS_VERSION} (upgrade segdash)")
    raw = doc.get("strokes")
    if not isinstance(raw, list):
        raise ValueError("annotations file has no list of strokes")
    strokes = []
    for i, s in enumerate(raw):
        try:
            strokes.append(Stroke.from_dict(s))
        except ValueError as exc:
            raise ValueError(f"stroke {i} in annotations is malformed: {exc}") from exc
    extra = {k: v for k, v in doc.items() if k not in ("format", "version", "strokes")}
    return strokes, extra
