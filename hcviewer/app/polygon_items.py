"""Edit polygon mode (P): the selected accepted mask's boundaries as polygons with vertex handles.

Drag a vertex to move it, press on an edge and drag to add a vertex there, right-click a vertex
(or select it and press Del) to delete it; double-click an edge to add a vertex on it without
changing the mask. The mask follows when the mouse is released (``polygons.apply_edit``), as ONE
undoable ``Project.paint`` step, so save, autosave, recovery and undo treat it as a brush edit.
Entering the mode changes nothing: the polygons are traced from the mask and kept here only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, QRectF, Qt

from hcviewer.annotation.annotation_file import encode_mask
from hcviewer.annotation.mask_crops import remember_crop
from hcviewer.annotation.polygons import (
    MIN_VERTICES, Polygons, apply_edit, delete_vertex, insert_vertex, mask_to_polygons, move_vertex, nearest_edge,
)
from hcviewer.app.box_items import SELECTED_COLOR
from hcviewer.app.image_view import Mode
from hcviewer.app.overlays import brush_pen

if TYPE_CHECKING:
    from hcviewer.annotation.document import Box
    from hcviewer.app.main_window import MainWindow

HANDLE_PX = 8  # a vertex handle's side, screen pixels whatever the zoom
EDGE_PX = 8  # how near an edge (screen pixels) a press or double-click takes it
OUTLINE_COLOR = (255, 255, 255)  # not the selected box's yellow: its edges often run along the box
POLYGON_Z = 40  # above the boxes (20, 30): a vertex on a box's corner is the vertex's
KEPT_POLYGONS = 100  # masks whose polygons are remembered (undo shows the polygons edited, not retraced)


class VertexHandle(pg.GraphicsObject):
    """One vertex: a square of constant screen size. Drag moves it; a click selects it; a
    right-click deletes it."""

    def __init__(self, editor: "PolygonEditor", ring: int, index: int) -> None:
        super().__init__()
        self.editor, self.ring, self.index = editor, ring, index
        self.setFlag(self.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setAcceptedMouseButtons(Qt.MouseButton.LeftButton | Qt.MouseButton.RightButton)
        self.setZValue(POLYGON_Z + 1)

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt naming
        half = HANDLE_PX / 2 + 1
        return QRectF(-half, -half, 2 * half, 2 * half)

    def paint(self, painter, *_) -> None:
        selected = self.editor.selected == (self.ring, self.index)
        painter.setPen(pg.mkPen((0, 0, 0), width=1))
        painter.setBrush(pg.mkBrush(SELECTED_COLOR if selected else (255, 255, 255)))
        half = HANDLE_PX / 2
        painter.drawRect(QRectF(-half, -half, 2 * half, 2 * half))

    def hoverEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph naming
        if not ev.isExit():
            ev.acceptDrags(Qt.MouseButton.LeftButton)
            ev.acceptClicks(Qt.MouseButton.LeftButton)
            ev.acceptClicks(Qt.MouseButton.RightButton)

    def mouseClickEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph naming
        ev.accept()
        if ev.button() == Qt.MouseButton.RightButton:
            self.editor.delete_vertex(self.ring, self.index)
        else:
            self.editor.select_vertex(self.ring, self.index)

    def mouseDragEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph naming
        if ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        self.editor.drag_vertex(self.ring, self.index, self.editor.image_point(ev.scenePos()), ev.isStart(),
                                ev.isFinish())


class EdgeCurve(pg.PlotCurveItem):
    """One ring's outline. Pressing near an edge and dragging adds a vertex there (moved with the
    pointer); double-clicking adds one on the edge."""

    def __init__(self, editor: "PolygonEditor", ring: int, hole: bool) -> None:
        super().__init__(pen=brush_pen(OUTLINE_COLOR, width=2, dashed=hole), clickable=True)
        self.setClickable(True, width=EDGE_PX)
        self.editor, self.ring = editor, ring
        self.setZValue(POLYGON_Z)

    def set_points(self, points: np.ndarray) -> None:
        closed = np.vstack([points, points[:1]])
        self.setData(closed[:, 0], closed[:, 1])

    def shape(self):  # only presses near an edge reach it, not those inside the polygon
        return self.mouseShape()

    def _near(self, pos: QPointF) -> bool:
        return self.mouseShape().contains(pos)

    def hoverEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph naming
        if not ev.isExit() and self._near(ev.pos()):
            ev.acceptDrags(Qt.MouseButton.LeftButton)
            ev.acceptClicks(Qt.MouseButton.LeftButton)

    def mouseClickEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph naming
        if ev.button() != Qt.MouseButton.LeftButton or not self._near(ev.pos()):
            ev.ignore()
            return
        ev.accept()
        if ev.double():
            self.editor.add_vertex_on_edge(self.ring, self.editor.image_point(ev.scenePos()))

    def mouseDragEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph naming
        if ev.button() != Qt.MouseButton.LeftButton or (ev.isStart() and not self._near(ev.buttonDownPos())):
            ev.ignore()
            return
        ev.accept()
        start = self.editor.image_point(ev.buttonDownScenePos())
        self.editor.drag_edge(self.ring, start, self.editor.image_point(ev.scenePos()), ev.isStart(), ev.isFinish())


class PolygonEditor(QObject):
    """The polygons of the selected accepted mask while the mode is on: traced from the mask,
    drawn as ``EdgeCurve`` and ``VertexHandle`` items, edited and written back."""

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.window = window
        self.viewbox = window.view.viewbox
        self.active = False
        self.selected: tuple[int, int] | None = None  # (ring, vertex) for Del
        self.polygons: Polygons = ()
        self._box_id: int | None = None
        self._known: OrderedDict[int, tuple[dict, Polygons]] = OrderedDict()  # id(mask_rle) -> (it, polygons)
        self._before_drag: Polygons | None = None  # the polygons when the drag began
        self._edge_vertex = 0  # the vertex a drag from an edge added
        self._curves: list[EdgeCurve] = []
        self._handles: list[list[VertexHandle]] = []
        window.state.subscribe(lambda _what: self.refresh())

    # ------------------------------------------------------------------------------ mode
    def can_edit(self) -> bool:
        box = self.window.canvas.selected_box()
        return box is not None and box.accepted

    def set_active(self, active: bool) -> None:
        """The mode was entered or left (``AnnotationController.set_mode``)."""
        self.active = active
        self.window.finish_polygon_action.setEnabled(active)
        if active:
            self.window.statusBar().showMessage("Edit polygon: drag a vertex, or an edge to add one; right-click a "
                                                "vertex to delete it. Enter or Esc when done.", 10000)
        if not active:
            self._known.clear()
            self._clear()
            self._box_id, self.selected = None, None
        self.refresh()

    def refresh(self) -> None:
        """Show the selected box's polygons as the document has its mask (after an edit, undo,
        redo or another selection); leave the mode when it has no accepted mask."""
        if not self.active or self._before_drag is not None:
            return
        box = self.window.canvas.selected_box()
        if box is None or not box.accepted:
            self.window.statusBar().showMessage("Polygon editing ended: the selected box has no accepted mask.", 5000)
            self.window.annotation.set_mode(Mode.SELECT)
            return
        polygons = self._polygons_of(box)
        if polygons is not self.polygons or box.id != self._box_id:
            self._box_id = box.id
            self.selected = None
            self._show(polygons)

    def _polygons_of(self, box: "Box") -> Polygons:
        known = self._known.get(id(box.mask_rle))
        if known is not None and known[0] is box.mask_rle:
            return known[1]
        polygons = mask_to_polygons(box.mask_crop)
        self._remember(box.mask_rle, polygons)
        return polygons

    def _remember(self, rle: dict, polygons: Polygons) -> None:
        self._known[id(rle)] = (rle, polygons)
        self._known.move_to_end(id(rle))
        while len(self._known) > KEPT_POLYGONS:
            self._known.popitem(last=False)

    # ------------------------------------------------------------------------------ items
    def _clear(self) -> None:
        for item in self._curves + [h for ring in self._handles for h in ring]:
            self.viewbox.removeItem(item)
        self._curves, self._handles, self.polygons = [], [], ()

    def _show(self, polygons: Polygons) -> None:
        self._clear()
        self.polygons = polygons
        for r, ring in enumerate(polygons):
            curve = EdgeCurve(self, r, ring.is_hole)
            curve.set_points(ring.points)
            self.viewbox.addItem(curve, ignoreBounds=True)
            self._curves.append(curve)
            self._handles.append([])
            for i in range(len(ring.points)):
                self._add_handle(r, i)

    def _add_handle(self, ring: int, index: int) -> None:
        handle = VertexHandle(self, ring, index)
        handle.setPos(QPointF(*self.polygons[ring].points[index]))
        self.viewbox.addItem(handle, ignoreBounds=True)
        self._handles[ring].insert(index, handle)
        for i, later in enumerate(self._handles[ring]):
            later.index = i

    def _moved(self, ring: int, index: int) -> None:
        self._curves[ring].set_points(self.polygons[ring].points)
        self._handles[ring][index].setPos(QPointF(*self.polygons[ring].points[index]))

    def image_point(self, scene_pos: QPointF) -> np.ndarray:
        """The image point (x, y) at a scene position, kept on the image."""
        point = self.viewbox.mapSceneToView(scene_pos)
        height, width = self.window.state.image.shape[:2]
        return np.array([np.clip(point.x(), 0, width), np.clip(point.y(), 0, height)])

    # ------------------------------------------------------------------------------ edits
    def select_vertex(self, ring: int, index: int) -> None:
        self.selected = (ring, index)
        for handles in self._handles:
            for handle in handles:
                handle.update()

    def drag_vertex(self, ring: int, index: int, point: np.ndarray, start: bool, finish: bool,
                    name: str = "move vertex") -> None:
        """Move a vertex with the pointer; the mask follows when the drag ends."""
        if start:
            self._before_drag = self.polygons
            self.select_vertex(ring, index)
        if self._before_drag is None:
            return  # the drag began before the polygons were redrawn (an undo meanwhile)
        self.polygons = move_vertex(self.polygons, ring, index, point)
        self._moved(ring, index)
        if finish:
            before, self._before_drag = self._before_drag, None
            self._commit(before, name)

    def drag_edge(self, ring: int, pressed: np.ndarray, point: np.ndarray, start: bool, finish: bool) -> None:
        """A drag from an edge: a vertex added where it was pressed, moved with the pointer."""
        if start:
            index, on_edge, _ = nearest_edge(self.polygons[ring].points, pressed)
            self._before_drag = self.polygons
            self.polygons = insert_vertex(self.polygons, ring, index, on_edge)
            self._add_handle(ring, index)
            self._edge_vertex = index
        self.drag_vertex(ring, self._edge_vertex, point, False, finish, "add vertex")

    def add_vertex_on_edge(self, ring: int, point: np.ndarray) -> None:
        """Double-click: a vertex on the edge, ready to drag; the mask is unchanged (no undo step)."""
        index, on_edge, _ = nearest_edge(self.polygons[ring].points, point)
        self.polygons = insert_vertex(self.polygons, ring, index, on_edge)
        self._add_handle(ring, index)
        self.select_vertex(ring, index)
        box = self.window.canvas.selected_box()
        self._remember(box.mask_rle, self.polygons)  # the polygons of the mask as it is
        self.window.statusBar().showMessage("Vertex added: drag it to reshape the mask.", 5000)

    def delete_vertex(self, ring: int, index: int) -> None:
        if len(self.polygons[ring].points) <= MIN_VERTICES:
            self.window.statusBar().showMessage(f"A polygon keeps at least {MIN_VERTICES} vertices.", 5000)
            return
        before = self.polygons
        self.polygons = delete_vertex(before, ring, index)
        self._show(self.polygons)  # the ring's handles are renumbered
        self._commit(before, "delete vertex")

    def delete_selected(self) -> None:
        """Del: delete the selected vertex."""
        if self.selected is None:
            self.window.statusBar().showMessage("Click a vertex to select it, then press Del to delete it.", 5000)
            return
        ring, index = self.selected
        self.selected = None
        self.delete_vertex(ring, index)

    def _commit(self, before: Polygons, name: str) -> None:
        """Write the edit into the mask as one undo step (none when no pixel changed: the
        polygons are then remembered for the mask as it is)."""
        box = self.window.canvas.selected_box()
        if box is None or not box.accepted:
            return
        edited = apply_edit(box.mask_crop, before, self.polygons)
        rle = box.mask_rle if edited is box.mask_crop else encode_mask(edited)
        if rle == box.mask_rle:
            self._remember(box.mask_rle, self.polygons)
            return
        remember_crop(edited, rle)
        self._remember(rle, self.polygons)
        self.window.project.paint(self.window.state.image_index, box.id, rle, name=name)
