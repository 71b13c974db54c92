"""Help > Keyboard shortcuts: every menu command with its key in one table, and the mouse."""

from __future__ import annotations

from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QHeaderView, QMenuBar, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

COMMAND = "command"  # an action's fixed name, where its text changes (Undo paint mask)
MOUSE = (  # what the canvas does with the mouse (no menu command to read it from)
    ("Canvas", "Wheel", "Zoom"),
    ("Canvas", "Drag (select mode)", "Pan, also inside a box"),
    ("Canvas", "Alt+drag a box", "Move the box"),
    ("Canvas", "Drag the top square", "Move the selected box"),
    ("Canvas", "Drag a corner", "Resize the selected box"),
    ("Canvas", "Click a box", "Select and segment it (again after Reject)"),
    ("Canvas", "Shift+click / Ctrl+click in the selected box", "Click to correct: mark object / background"),
    ("Canvas", "Drag (draw mode, D)", "Draw a new box"),
    ("Canvas", "Drag (brush, B / E)", "Paint on / erase from the mask"),
    ("Canvas", "Drag a vertex / an edge (polygon, P)", "Move the vertex / add one there; the mask follows"),
    ("Canvas", "Right-click a vertex (polygon, P)", "Delete it (Del: the selected vertex)"),
    ("Canvas", "Double-click an edge (polygon, P)", "Add a vertex on it"),
)


def shortcut_rows(menu_bar: QMenuBar) -> list[tuple[str, str, str]]:
    """(menu, key, command) for every menu command that has a key, in menu order."""
    rows = []
    for menu_action in menu_bar.actions():
        menu = menu_action.menu()
        if menu is None:
            continue
        for action in _commands(menu.actions()):
            if not action.shortcut().isEmpty():
                command = action.property(COMMAND) or action.text()  # Undo, not "Undo paint mask"
                rows.append((menu.title().replace("&", ""), action.shortcut().toString(), command.replace("&", "")))
    return rows


def _commands(actions: list[QAction]) -> list[QAction]:
    found = []
    for action in actions:
        if action.menu() is not None:
            found += _commands(action.menu().actions())
        elif not action.isSeparator():
            found.append(action)
    return found


class ShortcutsDialog(QDialog):
    """The table; built when opened, so it shows the shortcuts as they are."""

    def __init__(self, menu_bar: QMenuBar, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = shortcut_rows(menu_bar) + list(MOUSE)
        self.table = QTableWidget(len(rows), 3)
        self.table.setHorizontalHeaderLabels(["Where", "Key", "Command"])
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(560, 640)
