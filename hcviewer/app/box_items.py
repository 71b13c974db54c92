"""A detection box drawn over the image: a pyqtgraph ROI the user can select, move and resize."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal

from hcviewer.app.overlays import ACCEPTED_COLOR, brush_pen

BOX_COLOR = (255, 255, 255)
SELECTED_COLOR = (255, 215, 0)
REJECTED_COLOR = (160, 160, 160)


class BoxItem(pg.ROI):
    """One box. Emits ``selected(box_id)`` on click and ``edited(box_id, xyxy)`` when a move or
    resize ends; the document, not this item, holds the box (the item is redrawn from it)."""

    selected = Signal(int)
    edited = Signal(int, object)

    def __init__(self, box_id: int, xyxy: np.ndarray, label: str) -> None:
        x0, y0, x1, y1 = (float(v) for v in xyxy)
        super().__init__(QPointF(x0, y0), (x1 - x0, y1 - y0), movable=True, rotatable=False,
                         resizable=False, removable=False, pen=brush_pen(BOX_COLOR))
        self.box_id = box_id
        for corner, opposite in (((0, 0), (1, 1)), ((1, 0), (0, 1)), ((0, 1), (1, 0)), ((1, 1), (0, 0))):
            self.addScaleHandle(corner, opposite)
        self.label = pg.TextItem(label, color=BOX_COLOR, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 140))
        self.label.setParentItem(self)
        self.setAcceptedMouseButtons(Qt.MouseButton.LeftButton)
        self.sigClicked.connect(lambda *_: self.selected.emit(self.box_id))
        self.sigRegionChangeStarted.connect(lambda *_: self.selected.emit(self.box_id))
        self.sigRegionChangeFinished.connect(self._finished)
        self._state_key: tuple | None = None
        self.set_state(False, False, label)

    def xyxy(self) -> np.ndarray:
        pos, size = self.pos(), self.size()
        return np.array([pos.x(), pos.y(), pos.x() + size.x(), pos.y() + size.y()], np.float64)

    def set_box(self, xyxy: np.ndarray) -> None:
        """Move without emitting ``edited`` (the document changed, e.g. by undo)."""
        x0, y0, x1, y1 = (float(v) for v in xyxy)
        self.setPos(QPointF(x0, y0), update=False, finish=False)
        self.setSize((x1 - x0, y1 - y0), update=True, finish=False)

    def set_state(self, is_selected: bool, accepted: bool, label: str) -> None:
        key = (is_selected, accepted, label)
        if key == self._state_key:
            return
        self._state_key = key
        color = SELECTED_COLOR if is_selected else ACCEPTED_COLOR if accepted else BOX_COLOR
        self.setPen(brush_pen(color, width=3 if is_selected else 2))
        self.label.setText(label)
        self.label.setColor(color)
        self.setZValue(30 if is_selected else 20)
        for handle in self.getHandles():
            handle.setVisible(is_selected)

    def _finished(self, *_) -> None:
        self.edited.emit(self.box_id, self.xyxy())
