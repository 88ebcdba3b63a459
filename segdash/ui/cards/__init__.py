"""The sidebar: one :class:`panel.viewable.Viewer` per card, in the order they are used.

Each card owns its widgets, writes what users change to the session's
:class:`~segdash.Segmenter`, and shows the Segmenter parameters it lists in
:attr:`Card.watches`: the app calls :meth:`Card.refresh` with those of them that changed,
on the page's thread. Adding a control touches one card. Cards do no file or pixel work:
the Segmenter reads uploads and writes result files; slow calls go to the session's worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

from .apply import ApplyCard
from .base import MAX_UPLOAD_BYTES, Card, CardContext
from .classes import ClassesCard
from .display import DisplayCard
from .features import ClassifierCard, FeaturesCard
from .files import FilesCard
from .image import IMAGE_ACCEPT, ImageCard
from .importance import ImportanceCard
from .project import ProjectCard
from .results import ResultsCard
from .strokes import StrokesCard

__all__ = [
    "IMAGE_ACCEPT",
    "MAX_UPLOAD_BYTES",
    "ApplyCard",
    "Card",
    "CardContext",
    "Cards",
    "ClassesCard",
    "ClassifierCard",
    "DisplayCard",
    "FeaturesCard",
    "FilesCard",
    "ImageCard",
    "ImportanceCard",
    "ProjectCard",
    "ResultsCard",
    "StrokesCard",
]


@dataclass(frozen=True)
class Cards:
    """The sidebar's cards, by name; iterating gives them in sidebar order."""

    project: ProjectCard
    image: ImageCard
    classes: ClassesCard
    strokes: StrokesCard
    display: DisplayCard  # after painting's cards: it is adjusted now and then, not per stroke
    features: FeaturesCard
    classifier: ClassifierCard
    results: ResultsCard
    importance: ImportanceCard
    files: FilesCard
    apply: ApplyCard

    @classmethod
    def build(cls, context: CardContext) -> Cards:
        """Every card of one session."""
        return cls(project=ProjectCard(context), image=ImageCard(context),
                   display=DisplayCard(context), classes=ClassesCard(context),
                   strokes=StrokesCard(context), features=FeaturesCard(context),
                   classifier=ClassifierCard(context), results=ResultsCard(context),
                   importance=ImportanceCard(context),
                   files=FilesCard(context), apply=ApplyCard(context))

    def __iter__(self) -> Iterator[Card]:
        return (getattr(self, f.name) for f in fields(self))

    @property
    def watches(self) -> frozenset[str]:
        """Segmenter parameters some card shows."""
        return frozenset(name for card in self for name in card.watches)
