"""A bounded undo/redo history of whole states (the edits of one painting session).

Pure Python: the session (:class:`~segdash.segmenter.Segmenter`) decides what a state holds
(its strokes, and for class edits its classes); this module only keeps them in order. Every
edit records the state *before* it; undo hands back that state and keeps the state it
replaces for redo, so undo and redo restore whole states and never guess which stroke an
edit touched.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

#: Edits kept for undo (the oldest is dropped beyond this).
HISTORY_LIMIT = 200

State = TypeVar("State")


class EditHistory(Generic[State]):
    """Undo and redo over states of any kind.

    Parameters
    ----------
    limit : int
        Most states kept for undo; older ones are forgotten.
    """

    def __init__(self, limit: int = HISTORY_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"an edit history keeps at least one state, got {limit}")
        self._past: deque[State] = deque(maxlen=int(limit))
        self._future: list[State] = []

    def record(self, before: State) -> None:
        """An edit is made: ``before`` is the state it changes. The redo states are dropped
        (a new edit starts a new branch)."""
        self._past.append(before)
        self._future.clear()

    def undo(self, now: State) -> State | None:
        """The state before the last edit (None when there is none); ``now`` is kept for
        :meth:`redo`."""
        if not self._past:
            return None
        self._future.append(now)
        return self._past.pop()

    def redo(self, now: State) -> State | None:
        """The state the last undo left (None when there is none); ``now`` is kept for
        :meth:`undo`."""
        if not self._future:
            return None
        self._past.append(now)
        return self._future.pop()

    def peek_undo(self) -> State | None:
        """The state :meth:`undo` would return, without undoing."""
        return self._past[-1] if self._past else None

    def peek_redo(self) -> State | None:
        """The state :meth:`redo` would return, without redoing."""
        return self._future[-1] if self._future else None

    def clear(self) -> None:
        """Forget every state (another image: its edits are not this one's)."""
        self._past.clear()
        self._future.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._past)

    @property
    def can_redo(self) -> bool:
        return bool(self._future)

    def __len__(self) -> int:
        return len(self._past)
