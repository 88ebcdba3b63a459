"""Classes (id, name, colour) and colouring of label images."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

#: Colours given to new classes in turn (colour-blind friendly, Okabe-Ito first).
PALETTE = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
    "#999999", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f",
)
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class ClassInfo:
    """A class users paint: id (1..65535, the value in label images), name and colour."""

    id: int
    name: str
    color: str

    def __post_init__(self) -> None:
        if not 1 <= int(self.id) <= 65535:
            raise ValueError(f"class id must be in 1..65535, got {self.id}")
        if not _HEX.match(str(self.color)):
            raise ValueError(f"class colour must be '#rrggbb', got {self.color!r}")
        object.__setattr__(self, "id", int(self.id))
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "color", str(self.color).lower())

    def to_dict(self) -> dict:
        return asdict(self)


def default_class(class_id: int) -> ClassInfo:
    """Class ``class_id`` named ``"class N"`` with the palette's N-th colour."""
    return ClassInfo(class_id, f"class {class_id}", PALETTE[(class_id - 1) % len(PALETTE)])


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` to ``(r, g, b)`` in 0..255."""
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def colorize(
    labels: np.ndarray, classes: Iterable[ClassInfo], alpha: int = 255
) -> np.ndarray:
    """Colour a label image by class.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(H, W)`` integer class ids; 0 and ids of no listed class stay transparent.
    classes : iterable of ClassInfo
        Colours to use.
    alpha : int
        Opacity 0..255 of coloured pixels.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 4)`` uint8 RGBA.
    """
    labels = np.asarray(labels)
    classes = list(classes)
    top = max([int(labels.max(initial=0))] + [c.id for c in classes])
    lut = np.zeros((top + 1, 4), dtype=np.uint8)
    for c in classes:
        lut[c.id, :3] = hex_to_rgb(c.color)
        lut[c.id, 3] = alpha
    return lut[labels]


def classes_from_dicts(items: Sequence[dict]) -> list[ClassInfo]:
    """ClassInfo objects from ``[{"id":..., "name":..., "color":...}, ...]``."""
    return [ClassInfo(int(d["id"]), str(d.get("name", f"class {d['id']}")),
                      str(d.get("color", default_class(int(d["id"])).color))) for d in items]


def clashes(classes: Sequence[ClassInfo]) -> list[str]:
    """Names and colours shared by several classes, as messages for the user.

    Two classes with one name cannot be told apart in the page, the model file and the
    results; two with one colour look the same in the overlay. Names are compared without
    case and surrounding spaces ("Cell" and "cell " clash).

    Parameters
    ----------
    classes : sequence of ClassInfo

    Returns
    -------
    list of str
        One message per shared name, then per shared colour (e.g. ``'classes 1 and 3 are
        both named "cell"'``); empty when every name and colour is distinct.
    """
    found = []
    for what, key in (("named", lambda c: c.name.strip().casefold()),
                      ("coloured", lambda c: c.color)):
        groups: dict[str, list[ClassInfo]] = {}
        for c in classes:
            groups.setdefault(key(c), []).append(c)
        for same in groups.values():
            if len(same) > 1:
                ids = [str(c.id) for c in same]
                value = same[0].name.strip() if what == "named" else same[0].color
                found.append(f"classes {', '.join(ids[:-1])} and {ids[-1]} are both "
                             f'{what} "{value}"')
    return found
