"""Set class (C): a popup list of the classes with a filter line. Typing narrows the list (a
checkpoint's 81 COCO classes do not fit a menu one can read); Up / Down move in it, Enter picks,
Escape closes. A typed name that is no class is offered as a new class."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, Signal
from PySide6.QtWidgets import QApplication, QFrame, QLineEdit, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

NEW_CLASS = Qt.ItemDataRole.UserRole  # set on the "New class" entry: its name


class ClassPicker(QFrame):
    """``picked(name)`` when a class is chosen; ``name`` may be a new one (not in the list)."""

    picked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Popup)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Type to filter; Enter picks")
        self.filter.setClearButtonEnabled(True)
        self.list = QListWidget()
        self.list.setUniformItemSizes(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addWidget(self.filter)
        layout.addWidget(self.list)
        self.filter.textChanged.connect(self._narrow)
        self.filter.returnPressed.connect(self._pick_current)
        self.filter.installEventFilter(self)  # Up / Down move in the list while typing
        self.list.itemClicked.connect(self._pick)
        self.list.itemActivated.connect(self._pick)
        self._names: list[str] = []

    def popup(self, names: list[str], current: str, at: QPoint) -> None:
        """Show ``names`` (``current`` checked and highlighted) with the top-left corner at
        global ``at``, the filter empty and focused."""
        self._names = list(names)
        self.list.clear()
        for name in self._names:
            item = QListWidgetItem(name, self.list)
            item.setCheckState(Qt.CheckState.Checked if name == current else Qt.CheckState.Unchecked)
            if name == current:
                self.list.setCurrentItem(item)
        self.filter.clear()
        row = self.list.sizeHintForRow(0) if self._names else 20
        self.list.setFixedHeight(min(12, max(len(self._names), 1) + 1) * row + 4)
        self.resize(max(220, self.list.sizeHintForColumn(0) + 40), self.sizeHint().height())
        self.move(at)
        self.show()
        self.filter.setFocus()

    def visible_names(self) -> list[str]:
        """The entries the filter leaves, in order (a new class's entry reads 'New class "x"')."""
        return [self.list.item(r).text() for r in range(self.list.count()) if not self.list.item(r).isHidden()]

    def _narrow(self, text: str) -> None:
        typed = text.strip()
        last = self.list.count() - 1
        if last >= 0 and self.list.item(last).data(NEW_CLASS) is not None:
            self.list.takeItem(last)  # the last typed text's: made again below
        for row in range(self.list.count()):
            self.list.item(row).setHidden(typed.lower() not in self.list.item(row).text().lower())
        if typed and typed.lower() not in (name.lower() for name in self._names):
            item = QListWidgetItem(f'New class "{typed}"', self.list)
            item.setData(NEW_CLASS, typed)
        current = self.list.currentItem()
        if current is None or current.isHidden():
            shown = [self.list.item(r) for r in range(self.list.count()) if not self.list.item(r).isHidden()]
            self.list.setCurrentItem(shown[0] if shown else None)

    def _pick_current(self) -> None:
        item = self.list.currentItem()
        if item is not None and not item.isHidden():
            self._pick(item)

    def _pick(self, item: QListWidgetItem) -> None:
        name = item.data(NEW_CLASS) or item.text()
        self.hide()
        self.picked.emit(name)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt naming
        if event.type() == QEvent.Type.KeyPress and event.key() in (Qt.Key.Key_Up, Qt.Key.Key_Down,
                                                                    Qt.Key.Key_PageUp, Qt.Key.Key_PageDown):
            QApplication.sendEvent(self.list, event)  # the list moves its current row past hidden ones
            return True
        return False
