"""The file list: one row per image with its status. A model over the project's image list,
so a folder of thousands of images costs one row each and nothing is read until shown."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

STATUS_COLORS = {
    "error": QColor(200, 40, 40),
    "done": QColor(30, 130, 50),
    "segmented": QColor(30, 100, 200),
}


class FileListModel(QAbstractListModel):
    """Rows come from ``row_count()`` and ``row(i) -> (name, tooltip, status)``; the window
    calls ``refresh`` when the project's list or a status changes."""

    def __init__(self, row_count: Callable[[], int], row: Callable[[int], tuple[str, str, str]]) -> None:
        super().__init__()
        self._row_count = row_count
        self._row = row
        self._rows = 0

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else self._rows

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= self._rows:
            return None
        name, tooltip, status = self._row(index.row())
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{name}  —  {status}" if status else name
        if role == Qt.ItemDataRole.ToolTipRole:
            return tooltip
        if role == Qt.ItemDataRole.ForegroundRole:
            return next((c for key, c in STATUS_COLORS.items() if status.startswith(key)), None)
        return None

    def refresh(self, row: int | None = None) -> None:
        rows = self._row_count()
        if rows != self._rows:
            self.beginResetModel()
            self._rows = rows
            self.endResetModel()
        elif row is not None:
            index = self.index(row)
            self.dataChanged.emit(index, index)
        elif rows:
            self.dataChanged.emit(self.index(0), self.index(rows - 1))
