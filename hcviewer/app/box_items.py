"""A detection box drawn over the image: a pyqtgraph ROI the user can select, move and resize.

Moving is deliberate (issue 22): a plain drag inside a box pans the view like a drag anywhere
else, so a click that slips never moves the box (and re-segments it). The selected box moves by
its move handle (the square on its top edge) or by Alt+drag anywhere inside it; its corner
handles resize it."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor
from pyqtgraph.graphicsItems.ROI import Handle

from hcviewer.app.overlays import brush_pen

BOX_COLOR = (255, 255, 255)
SELECTED_COLOR = (255, 215, 0)
REJECTED_COLOR = (160, 160, 160)
MOVE_MODIFIER = Qt.KeyboardModifier.AltModifier  # Ctrl and Shift clicks inside a box are left free
HANDLE_RADIUS = 6  # screen pixels: easy to grab
MOVE_HANDLE_RADIUS = 8
HANDLE_FILL = QColor(0, 0, 0, 160)


class BoxItem(pg.ROI):
    """One box. Emits ``selected(box_id)`` on click and ``edited(box_id, xyxy)`` when a move or
    resize ends; the document, not this item, holds the box (the item is redrawn from it)."""

    selected = Signal(int)
    edited = Signal(int, object)
    corrected = Signal(int, float, float, bool)  # box id, image x, y, object (Shift) or not (Ctrl+click)

    def __init__(self, box_id: int, xyxy: np.ndarray, label: str) -> None:
        x0, y0, x1, y1 = (float(v) for v in xyxy)
        super().__init__(QPointF(x0, y0), (x1 - x0, y1 - y0), movable=True, rotatable=False,
                         resizable=False, removable=False, pen=brush_pen(BOX_COLOR))
        self.box_id = box_id
        for corner, opposite in (((0, 0), (1, 1)), ((1, 0), (0, 1)), ((0, 1), (1, 0)), ((1, 1), (0, 0))):
            diagonal = corner in ((0, 0), (1, 1))
            self.addScaleHandle(corner, opposite, item=self._handle(
                "s", HANDLE_RADIUS, Qt.CursorShape.SizeFDiagCursor if diagonal else Qt.CursorShape.SizeBDiagCursor))
        # on the top edge: not over the object, where clicks go
        self.move_handle = self.addTranslateHandle((0.5, 0), item=self._handle(
            "t", MOVE_HANDLE_RADIUS, Qt.CursorShape.SizeAllCursor))
        self.mouseDragHandler.translateModifier = MOVE_MODIFIER
        self.label = pg.TextItem(label, color=BOX_COLOR, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 180))  # readable on a bright photo
        self.label.setParentItem(self)
        self.setAcceptedMouseButtons(Qt.MouseButton.LeftButton)
        self.sigClicked.connect(self._clicked)
        self.sigRegionChangeStarted.connect(lambda *_: self.selected.emit(self.box_id))
        self.sigRegionChangeFinished.connect(self._finished)
        self._state_key: tuple | None = None
        self.set_state(False, None, label)

    def _handle(self, kind: str, radius: float, cursor: Qt.CursorShape) -> "FilledHandle":
        handle = FilledHandle(radius, typ=kind, pen=brush_pen(SELECTED_COLOR, width=2),
                              hoverPen=brush_pen(BOX_COLOR, width=2), parent=self)
        handle.setCursor(cursor)
        return handle

    def xyxy(self) -> np.ndarray:
        pos, size = self.pos(), self.size()
        return np.array([pos.x(), pos.y(), pos.x() + size.x(), pos.y() + size.y()], np.float64)

    def set_box(self, xyxy: np.ndarray) -> None:
        """Move without emitting ``edited`` (the document changed, e.g. by undo)."""
        x0, y0, x1, y1 = (float(v) for v in xyxy)
        self.setPos(QPointF(x0, y0), update=False, finish=False)
        self.setSize((x1 - x0, y1 - y0), update=True, finish=False)

    def set_state(self, is_selected: bool, accepted_color: tuple[int, int, int] | None, label: str) -> None:
        """Selected: yellow with handles; accepted: its mask's colour; else white."""
        key = (is_selected, accepted_color, label)
        if key == self._state_key:
            return
        self._state_key = key
        color = SELECTED_COLOR if is_selected else accepted_color or BOX_COLOR
        self.setPen(brush_pen(color, width=3 if is_selected else 2))
        self.label.setText(label)
        # white text: dark mask colours are unreadable on the label's dark fill
        self.label.setColor(SELECTED_COLOR if is_selected else BOX_COLOR)
        self.setZValue(30 if is_selected else 20)
        for handle in self.getHandles():
            handle.setVisible(is_selected)

    def label_rect(self) -> tuple[float, float, float, float]:
        """Where the label sits unshifted: (x, y, width, height) in the scene's (screen) pixels."""
        corner = self.mapToScene(QPointF(0, 0))
        size = self.label.sceneBoundingRect().size()  # the label ignores zoom: its size is in pixels
        return corner.x(), corner.y() - size.height(), size.width(), size.height()

    def shift_label(self, pixels: float, pixel_height: float) -> None:
        """Move the label down by ``pixels`` screen pixels (``pixel_height``: image px per pixel)."""
        self.label.setPos(0, pixels * pixel_height)

    def _clicked(self, _roi, event) -> None:
        """A click selects the box; Shift+click (Ctrl+click) on it marks object (background)."""
        modifiers = event.modifiers()
        if modifiers & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier):
            point = self.mapToParent(event.pos())  # the parent's coordinates are image pixels
            self.corrected.emit(self.box_id, point.x(), point.y(), not modifiers & Qt.KeyboardModifier.ControlModifier)
        else:
            self.selected.emit(self.box_id)

    def hoverEvent(self, ev) -> None:  # noqa: N802 - Qt naming
        """Claims clicks only. pyqtgraph's ROI also claims the drag under the pointer, and a
        claimed drag goes to no other item: the plain drag inside the box could not pan."""
        self.setMouseHover(not ev.isExit() and ev.acceptClicks(Qt.MouseButton.LeftButton))

    def _finished(self, *_) -> None:
        self.edited.emit(self.box_id, self.xyxy())


class FilledHandle(Handle):
    """A handle filled dark inside its outline: seen on a bright photo as on a dark one."""

    def paint(self, painter, option, widget) -> None:
        painter.setBrush(HANDLE_FILL)
        super().paint(painter, option, widget)


def stack_labels(rects: list[tuple[float, float, float, float]]) -> list[float]:
    """Downward shifts that keep box labels from covering each other. ``rects``: each label's
    (x, y, width, height) where it would sit (screen pixels, y down), in drawing order; a label
    that would overlap one placed before it moves down by whole label heights."""
    placed: list[tuple[float, float, float, float]] = []
    shifts = []
    for x, y, w, h in rects:
        shift = 0.0
        while any(_overlap((x, y + shift, w, h), other) for other in placed):
            shift += h
        placed.append((x, y + shift, w, h))
        shifts.append(shift)
    return shifts


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
