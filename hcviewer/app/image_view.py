"""The image canvas: a pyqtgraph view (pan with the mouse, zoom with the wheel) holding the
image, the boxes, the prediction overlay and the annotation masks. Pointer modes: select (click
boxes; drag pans), draw (drag a new box), brush (paint add / erase) and polygon (drags pan; the
polygon's own items take the drags on its vertices and edges)."""

from __future__ import annotations

from enum import Enum

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal

from hcviewer.app.overlays import brush_pen

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)


class Mode(Enum):
    SELECT = "select"
    DRAW = "draw"
    BRUSH_ADD = "brush_add"
    BRUSH_ERASE = "brush_erase"
    POLYGON = "polygon"  # edit the selected accepted mask's polygon (app/polygon_items.py)


class CanvasViewBox(pg.ViewBox):
    """A ViewBox whose left drag draws a box or a brush stroke in the draw and brush modes."""

    boxDrawn = Signal(object)  # np.ndarray [4] x0, y0, x1, y1 image px
    strokeStarted = Signal()
    strokePoint = Signal(float, float)  # image px
    strokeFinished = Signal()

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.mode = Mode.SELECT
        self._band_item = pg.QtWidgets.QGraphicsRectItem()
        self._band_item.setPen(brush_pen((255, 215, 0), width=2, dashed=True))
        self._band_item.setZValue(100)
        self._band_item.setVisible(False)
        self.addItem(self._band_item, ignoreBounds=True)

    def mouseDragEvent(self, ev, axis=None) -> None:  # noqa: N802 - Qt naming
        if ev.button() != Qt.MouseButton.LeftButton or self.mode in (Mode.SELECT, Mode.POLYGON):
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        start, here = self.mapSceneToView(ev.buttonDownScenePos()), self.mapSceneToView(ev.scenePos())
        if self.mode == Mode.DRAW:
            rect = QRectF(start, here).normalized()
            self._band_item.setRect(rect)
            self._band_item.setVisible(not ev.isFinish())
            if ev.isFinish() and rect.width() >= 2 and rect.height() >= 2:
                self.boxDrawn.emit(np.array([rect.left(), rect.top(), rect.right(), rect.bottom()]))
            return
        if ev.isStart():
            self.strokeStarted.emit()
            self.strokePoint.emit(start.x(), start.y())
        self.strokePoint.emit(here.x(), here.y())
        if ev.isFinish():
            self.strokeFinished.emit()


class ImageView(pg.GraphicsView):
    """Shows one RGB image, in image pixel coordinates whatever the resolution it is drawn at."""

    hovered = Signal(float, float)  # image px under the pointer
    left = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent, background=(40, 40, 40))
        self.viewbox = CanvasViewBox()
        self.setCentralItem(self.viewbox)
        self.image_item = pg.ImageItem()  # no autoDownsample: it averaged the whole image at every zoom
        self.image_item.setZValue(0)
        self.viewbox.addItem(self.image_item)
        self.brush_cursor = pg.QtWidgets.QGraphicsEllipseItem()
        self.brush_cursor.setPen(brush_pen((255, 255, 255), width=1))
        self.brush_cursor.setZValue(200)
        self.brush_cursor.setVisible(False)
        self.viewbox.addItem(self.brush_cursor, ignoreBounds=True)
        self.brush_radius = 8.0
        self.image_shape: tuple[int, int] | None = None
        self.scene().sigMouseMoved.connect(self._mouse_moved)
        self.scene().sigItemRemoved.connect(self._forget_stale_hover)
        self.setAcceptDrops(False)  # drops go to the main window

    def set_image(self, rgb: np.ndarray | None, image_shape: tuple[int, int] | None = None) -> None:
        """Show ``rgb`` [h, w, 3] over an image of ``image_shape`` (height, width; default its
        own): a reduced copy of a large photo covers the photo's full pixel extent."""
        if rgb is None:
            self.image_item.clear()
            self.image_shape = None
            return
        self.image_item.setImage(rgb, autoLevels=False)  # no levels: uint8 RGB is drawn as is, not rescaled
        self.image_shape = tuple(image_shape or rgb.shape[:2])
        height, width = self.image_shape
        self.image_item.setRect(QRectF(0, 0, width, height))
        self.fit()

    def fit(self) -> None:
        if self.image_shape is not None:
            h, w = self.image_shape
            self.viewbox.setRange(QRectF(0, 0, w, h), padding=0.02)

    def zoom_actual_pixels(self) -> None:
        """1:1: one image pixel per screen pixel (device pixels on a high-DPI screen), about the
        centre of what is shown."""
        if self.image_shape is None:
            return
        centre = self.viewbox.viewRect().center()
        scale = self.devicePixelRatioF()  # logical pixels are this many screen pixels
        width, height = self.viewbox.width() * scale, self.viewbox.height() * scale
        self.viewbox.setRange(QRectF(centre.x() - width / 2, centre.y() - height / 2, width, height), padding=0)

    def set_mode(self, mode: Mode) -> None:
        self.viewbox.mode = mode
        self.brush_cursor.setVisible(False)
        brush = mode in (Mode.BRUSH_ADD, Mode.BRUSH_ERASE)
        self.viewport().setCursor(Qt.CursorShape.CrossCursor if mode == Mode.DRAW else
                                  Qt.CursorShape.BlankCursor if brush else Qt.CursorShape.ArrowCursor)

    def _forget_stale_hover(self, _removed) -> None:
        """pyqtgraph sends a click to the item its last hover event found under the pointer and
        hovers again only when the pointer moves: once that item is gone (another image shown),
        the click would go to it. Forgetting that hover makes the click look under the pointer."""
        scene = self.scene()
        hover = scene.lastHoverEvent  # pyqtgraph's GraphicsScene state
        if hover is None:
            return
        found = (*hover.clickItems().values(), *hover.dragItems().values())
        if any(item.scene() is not scene for item in found):
            scene.lastHoverEvent = None

    def _mouse_moved(self, scene_pos: QPointF) -> None:
        if self.image_shape is None or not self.viewbox.sceneBoundingRect().contains(scene_pos):
            self.left.emit()
            return
        point = self.viewbox.mapSceneToView(scene_pos)
        if self.viewbox.mode in (Mode.BRUSH_ADD, Mode.BRUSH_ERASE):
            r = self.brush_radius
            self.brush_cursor.setRect(QRectF(point.x() - r, point.y() - r, 2 * r, 2 * r))
            self.brush_cursor.setVisible(True)
        self.hovered.emit(point.x(), point.y())
