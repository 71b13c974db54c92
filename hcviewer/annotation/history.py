"""The project's one undo/redo stack. Every edit (boxes added, moved, relabelled or deleted, model
results, accepted or painted masks, rejections, a whole batch) is one ``Edit``: each touched
image's tuple of boxes before and after (boxes are immutable records, so nothing is copied)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_UNDO = 1000  # undo steps kept (each holds its boxes' results and drawings)


@dataclass
class Edit:
    """One undo entry: each touched image's boxes before and after."""

    name: str
    before: dict[int, tuple[Any, ...]]
    after: dict[int, tuple[Any, ...]]
    annotates: bool = True  # False for boxes read from a file and model results: nothing to save yet


class History:
    """Edits done (undo pops them) and undone (redo pops them); the project applies what they hold."""

    def __init__(self) -> None:
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []

    def push(self, edit: Edit, clears_redo: bool = True) -> None:
        """A new edit, the oldest dropped beyond ``MAX_UNDO``. ``clears_redo=False`` for the
        model's results, which may arrive after the user undid something: the user's redo steps
        stay (a redo then drops the result again, which costs a re-run, never an annotation)."""
        self._undo.append(edit)
        del self._undo[:-MAX_UNDO]
        if clears_redo:
            self._redo.clear()

    def undo(self) -> Edit | None:
        """The edit to undo (its ``before`` is to be applied), None when there is none."""
        return self._move(self._undo, self._redo)

    def redo(self) -> Edit | None:
        """The edit to redo (its ``after`` is to be applied), None when there is none."""
        return self._move(self._redo, self._undo)

    @staticmethod
    def _move(source: list[Edit], target: list[Edit]) -> Edit | None:
        if not source:
            return None
        target.append(source.pop())
        return target[-1]

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo_name(self) -> str | None:
        return self._undo[-1].name if self._undo else None

    def redo_name(self) -> str | None:
        return self._redo[-1].name if self._redo else None

    def edits(self) -> list[Edit]:
        """The edits that can be undone, oldest first."""
        return list(self._undo)
