"""Edit polygon mode (P): the selected accepted mask's boundaries as polygons with vertex handles.

Drag a vertex to move it, press on an edge and drag to add a vertex there, right-click a vertex
(or click it and press Del) to delete it; double-click an edge to add a vertex on it without
changing the mask. The mask follows when the mouse is released (``polygons.apply_edit``), as ONE
undoable ``Project.paint`` step, so save, autosave, recovery and undo treat it as a brush edit.
Entering the mode changes nothing: the polygons are traced from the mask and kept here only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, Qt

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


MODE_HELP = "Edit polygon: drag a vertex, or an edge to add one; right-click a vertex to delete it. Enter or Esc when done."

class VertexLayer(pg.ScatterPlotItem):
    """Every vertex as a square of constant screen size, in ONE item (an item per vertex took
    0.4 s per thousand to make). Dragging a vertex moves it; a click selects it; a right-click
    deletes it. Presses away from the vertices pass on (to an edge, or to pan)."""

    def __init__(self, editor: "PolygonEditor") -> None:
        super().__init__(size=HANDLE_PX, symbol="s", pen=pg.mkPen((0, 0, 0), width=1),
                         brush=pg.mkBrush(255, 255, 255))
        self.editor = editor
        self.setZValue(POLYGON_Z + 1)
        self._dragged: tuple[int, int] | None = None

    def hoverEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph naming
        if not ev.isExit() and self.editor.vertex_at(ev.scenePos()) is not None:
            ev.acceptDrags(Qt.MouseButton.LeftButton)
            ev.acceptClicks(Qt.MouseButton.LeftButton)
            ev.acceptClicks(Qt.MouseButton.RightButton)

    def mouseClickEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph naming
        vertex = self.editor.vertex_at(ev.scenePos())
        if vertex is None:
            ev.ignore()
            return
        ev.accept()
        if ev.button() == Qt.MouseButton.RightButton:
            self.editor.delete_vertex(*vertex)
        else:
            self.editor.select_vertex(*vertex)

    def mouseDragEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph naming
        if ev.isStart() and ev.button() == Qt.MouseButton.LeftButton:
            self._dragged = self.editor.vertex_at(ev.buttonDownScenePos())
        if self._dragged is None or ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        self.editor.drag_vertex(*self._dragged, self.editor.image_point(ev.scenePos()), ev.isStart(), ev.isFinish())
        if ev.isFinish():
            self._dragged = None


class EdgeCurve(pg.PlotCurveItem):
    """The outlines of the parts (or of the holes, dashed), in one item. Pressing near an edge
    and dragging adds a vertex there, moved with the pointer; double-clicking adds one on it."""

    def __init__(self, editor: "PolygonEditor", holes: bool) -> None:
        super().__init__(pen=brush_pen(OUTLINE_COLOR, width=2, dashed=holes), connect="finite")
        self.setClickable(True, width=EDGE_PX)
        self.editor = editor
        self._vertex: tuple[int, int] | None = None  # the vertex a drag that began here moves
        self.setZValue(POLYGON_Z)

    def set_rings(self, rings: list[np.ndarray]) -> None:
        """Closed rings, NaN between them."""
        gap = np.full((1, 2), np.nan)
        points = np.concatenate([np.vstack([r, r[:1], gap]) for r in rings]) if rings else np.zeros((0, 2))
        self.setData(points[:, 0], points[:, 1])

    def shape(self):  # only presses near an edge reach it, not those inside a polygon
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
            self.editor.add_vertex_on_edge(self.editor.image_point(ev.scenePos()))

    def mouseDragEvent(self, ev) -> None:  # noqa: N802 - pyqtgraph naming
        if ev.button() != Qt.MouseButton.LeftButton or (ev.isStart() and not self._near(ev.buttonDownPos())):
            ev.ignore()
            return
        ev.accept()
        if ev.isStart():
            # a vertex the pointer has not moved over since it appeared (a double-click made it)
            # is not the hovered item yet: the press is still the vertex's
            self._vertex = self.editor.vertex_at(ev.buttonDownScenePos())
        point = self.editor.image_point(ev.scenePos())
        if self._vertex is not None:
            self.editor.drag_vertex(*self._vertex, point, ev.isStart(), ev.isFinish())
        else:
            self.editor.drag_edge(self.editor.image_point(ev.buttonDownScenePos()), point, ev.isStart(), ev.isFinish())


class PolygonEditor(QObject):
    """The polygons of the selected accepted mask while the mode is on: traced from the mask,
    drawn as two ``EdgeCurve`` and one ``VertexLayer``, edited and written back."""

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
        self._edge_vertex = (0, 0)  # the vertex a drag from an edge added
        self.outlines = EdgeCurve(self, holes=False)
        self.hole_outlines = EdgeCurve(self, holes=True)
        self.vertices = VertexLayer(self)
        self.marker = pg.ScatterPlotItem(size=HANDLE_PX, symbol="s", pen=pg.mkPen((0, 0, 0), width=1),
                                         brush=pg.mkBrush(*SELECTED_COLOR))  # the selected vertex
        self.marker.setZValue(POLYGON_Z + 2)
        self.marker.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.marker.mouseClickEvent = lambda ev: ev.ignore()  # clicks reach the vertex layer under it
        for item in (self.outlines, self.hole_outlines, self.vertices, self.marker):
            item.setVisible(False)
            self.viewbox.addItem(item, ignoreBounds=True)
        window.state.subscribe(lambda _what: self.refresh())
        window.view.scene().sigMouseMoved.connect(self._pointer_moved)

    # ------------------------------------------------------------------------------ mode
    def can_edit(self) -> bool:
        box = self.window.canvas.selected_box()
        return box is not None and box.accepted

    def set_active(self, active: bool) -> None:
        """The mode was entered or left (``AnnotationController.set_mode``)."""
        self.active = active
        self.window.finish_polygon_action.setEnabled(active)
        status = self.window.statusBar()
        if active:
            status.showMessage(MODE_HELP, 10000)
        else:
            if status.currentMessage() == MODE_HELP:  # the help would outlive the mode it explains
                status.clearMessage()
            self._known.clear()
            self._box_id, self.selected, self.polygons = None, None, ()
        for item in (self.outlines, self.hole_outlines, self.vertices, self.marker):
            item.setVisible(active)
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
            self._box_id, self.selected, self.polygons = box.id, None, polygons
            self._draw()

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

    # ------------------------------------------------------------------------------ drawing
    def _draw(self) -> None:
        self.outlines.set_rings([r.points for r in self.polygons if not r.is_hole])
        self.hole_outlines.set_rings([r.points for r in self.polygons if r.is_hole])
        points = self.all_points()
        self.vertices.setData(pos=points)
        self.marker.setData(pos=points[[self._flat(*self.selected)]] if self.selected else np.zeros((0, 2)))

    def all_points(self) -> np.ndarray:
        """[N, 2] every ring's vertices, ring after ring."""
        return np.concatenate([r.points for r in self.polygons]) if self.polygons else np.zeros((0, 2))

    def _flat(self, ring: int, index: int) -> int:
        return sum(len(r.points) for r in self.polygons[:ring]) + index

    def vertex_at(self, scene_pos: QPointF) -> tuple[int, int] | None:
        """(ring, index) of the vertex whose handle is at a scene position, None when none is."""
        points = self.all_points()
        if not len(points):
            return None
        point = self.viewbox.mapSceneToView(scene_pos)
        pixel_w, pixel_h = self.viewbox.viewPixelSize()  # image px per screen pixel
        screen = np.maximum(np.abs(points[:, 0] - point.x()) / pixel_w, np.abs(points[:, 1] - point.y()) / pixel_h)
        nearest = int(np.argmin(screen))
        if screen[nearest] > HANDLE_PX / 2 + 1:
            return None
        ends = np.cumsum([len(r.points) for r in self.polygons])
        ring = int(np.searchsorted(ends, nearest, side="right"))
        return ring, nearest - (int(ends[ring - 1]) if ring else 0)

    def _pointer_moved(self, scene_pos: QPointF) -> None:
        """The pointer shows what a press would do: move a vertex, add one on an edge, or pan."""
        if not self.active or self._before_drag is not None:
            return
        near_edge = any(c.mouseShape().contains(c.mapFromScene(scene_pos)) for c in (self.outlines, self.hole_outlines))
        shape = (Qt.CursorShape.SizeAllCursor if self.vertex_at(scene_pos) is not None else
                 Qt.CursorShape.CrossCursor if near_edge else Qt.CursorShape.ArrowCursor)
        viewport = self.window.view.viewport()
        if viewport.cursor().shape() != shape:
            viewport.setCursor(shape)

    def image_point(self, scene_pos: QPointF) -> np.ndarray:
        """The image point (x, y) at a scene position, kept on the image."""
        point = self.viewbox.mapSceneToView(scene_pos)
        height, width = self.window.state.image.shape[:2]
        return np.array([np.clip(point.x(), 0, width), np.clip(point.y(), 0, height)])

    # ------------------------------------------------------------------------------ edits
    def select_vertex(self, ring: int, index: int) -> None:
        self.selected = (ring, index)
        self._draw()

    def drag_vertex(self, ring: int, index: int, point: np.ndarray, start: bool, finish: bool,
                    name: str = "move vertex") -> None:
        """Move a vertex with the pointer; the mask follows when the drag ends."""
        if start:
            self._before_drag = self.polygons
            self.selected = (ring, index)
        if self._before_drag is None:
            return  # the drag began before the polygons were redrawn (an undo meanwhile)
        self.polygons = move_vertex(self.polygons, ring, index, point)
        self._draw()
        if finish:
            before, self._before_drag = self._before_drag, None
            self._commit(before, name)

    def drag_edge(self, pressed: np.ndarray, point: np.ndarray, start: bool, finish: bool) -> None:
        """A drag from an edge: a vertex added where it was pressed, moved with the pointer."""
        if start:
            ring, index, on_edge, _ = nearest_edge(self.polygons, pressed)
            self._before_drag = self.polygons
            self.polygons = insert_vertex(self.polygons, ring, index, on_edge)
            self._edge_vertex = (ring, index)
        self.drag_vertex(*self._edge_vertex, point, False, finish, "add vertex")

    def add_vertex_on_edge(self, point: np.ndarray) -> None:
        """Double-click: a vertex on the edge, ready to drag; the mask is unchanged (no undo step)."""
        ring, index, on_edge, _ = nearest_edge(self.polygons, point)
        self.polygons = insert_vertex(self.polygons, ring, index, on_edge)
        self.select_vertex(ring, index)
        box = self.window.canvas.selected_box()
        self._remember(box.mask_rle, self.polygons)  # the polygons of the mask as it is
        self.window.statusBar().showMessage("Vertex added: drag it to reshape the mask.", 5000)

    def delete_vertex(self, ring: int, index: int) -> None:
        if len(self.polygons[ring].points) <= MIN_VERTICES:
            self.window.statusBar().showMessage(f"A polygon keeps at least {MIN_VERTICES} vertices.", 5000)
            return
        before = self.polygons
        self.polygons, self.selected = delete_vertex(before, ring, index), None
        self._draw()
        self._commit(before, "delete vertex")

    def delete_selected(self) -> None:
        """Del: delete the selected vertex."""
        if self.selected is None:
            self.window.statusBar().showMessage("Click a vertex to select it, then press Del to delete it.", 5000)
            return
        self.delete_vertex(*self.selected)

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
