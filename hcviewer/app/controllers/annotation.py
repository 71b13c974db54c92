"""Annotating: accept and reject results, paint accepted masks with the brush, draw, move,
relabel and delete boxes, the pointer mode, and undo/redo of all of it (one document stack)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, Qt
from PySide6.QtWidgets import QInputDialog, QMenu

from hcviewer.app.annotation_io import decode_mask
from hcviewer.app.document import Change
from hcviewer.app.image_view import Mode
from hcviewer.app.overlays import ACCEPTED_COLOR
from hcviewer.app.wording import plural
from hcviewer.app.worker import paste_box_map

if TYPE_CHECKING:
    from hcviewer.app.document import Box
    from hcviewer.app.main_window import MainWindow

ERASE_COLOR = (255, 60, 60)


class AnnotationController(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)  # a QObject of the GUI thread: worker signals reach it queued
        self.window = window
        self.state = window.state
        self.project = window.project
        self._stroke: list[tuple[float, float]] = []
        self._last_label: str | None = None  # the class last set (C): new boxes take it
        self._added_classes: list[str] = []  # New class… this session
        self.class_menu = QMenu(window)
        self.stroke_curve = pg.PlotCurveItem()  # the brush stroke being painted
        self.stroke_curve.setZValue(50)
        canvas = window.view.viewbox
        canvas.addItem(self.stroke_curve, ignoreBounds=True)
        canvas.boxDrawn.connect(self._box_drawn)
        canvas.strokeStarted.connect(self.stroke_started)
        canvas.strokePoint.connect(self.stroke_point)
        canvas.strokeFinished.connect(self.stroke_finished)
        self.project.add_listener(self._document_changed)

    # ------------------------------------------------------------------------------ results
    def _result_mask(self, box_id: int) -> np.ndarray | None:
        """The shown model result for a box as a bool [H, W] image mask."""
        view = self.state.views.get(box_id)
        if view is None or view.figure_ground is None or self.state.image is None:
            return None
        return paste_box_map(view.figure_ground, view.box, self.state.image.shape[:2]) >= self.window.display.threshold

    def can_accept(self) -> bool:
        """A shown result of a box not accepted yet: an accepted (maybe brush-edited) mask is
        never replaced by the model's (Reject starts the box over)."""
        box = self.window.canvas.selected_box()
        view = self.state.views.get(box.id) if box is not None else None
        return box is not None and not box.accepted and view is not None and view.figure_ground is not None

    def accept_selected(self) -> None:
        if self.can_accept():
            self.project.accept(self.state.image_index, self.state.selected_id,
                                self._result_mask(self.state.selected_id))

    def accept_all(self) -> None:
        """Accept every shown, not yet accepted result of this image (one undo step)."""
        boxes = self.window.canvas.visible_boxes()
        masks = {box_id: self._result_mask(box_id) for box_id, box in boxes.items() if box.mask is None}
        self.project.accept_many(self.state.image_index, {i: m for i, m in masks.items() if m is not None})

    def accept_all_images(self) -> None:
        """Accept every result not yet accepted, in every image, without showing them (one undo
        step): the shown image's results as drawn, the others' as Segment all images kept them."""
        count = self.project.accept_all_results(self._kept_result_mask)
        self.window.statusBar().showMessage(f"Accepted {plural(count, 'mask')}", 5000)

    def _kept_result_mask(self, index: int, box: "Box") -> np.ndarray | None:
        """A box's result as a bool [H, W] mask at the display threshold."""
        if index == self.state.image_index and box.id in self.state.views:
            return self._result_mask(box.id)
        result, size = box.result, self.project.images[index].size
        if size is None and result.mask_rle is not None:
            size = tuple(result.mask_rle["size"])
        if result.figure_ground is not None and size is not None:
            return paste_box_map(result.figure_ground, box.xyxy, size) >= self.window.display.threshold
        return None if result.mask_rle is None else decode_mask(result.mask_rle)

    def reject_selected(self) -> None:
        if self.window.canvas.selected_box() is None:
            return
        self.project.reject(self.state.image_index, self.state.selected_id)
        self.window.canvas.drop_result(self.state.selected_id)
        self.window.canvas.sync_boxes()

    # ------------------------------------------------------------------------------ brush
    def _editable_mask(self) -> np.ndarray | None:
        box = self.window.canvas.selected_box()
        if box is None:
            return None
        return box.mask if box.mask is not None else self._result_mask(box.id)

    def stroke_started(self) -> None:
        self._stroke = []
        view = self.window.view
        add = view.viewbox.mode == Mode.BRUSH_ADD
        pen = pg.mkPen((*(ACCEPTED_COLOR if add else ERASE_COLOR), 150), width=2 * view.brush_radius)
        pen.setCosmetic(False)  # width in image pixels, like the brush
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        self.stroke_curve.setPen(pen)
        self.stroke_curve.setVisible(True)

    def stroke_point(self, x: float, y: float) -> None:
        self._stroke.append((x, y))
        points = np.array(self._stroke)
        self.stroke_curve.setData(points[:, 0], points[:, 1])

    def stroke_finished(self) -> None:
        self.stroke_curve.setVisible(False)
        mask = self._editable_mask()
        if mask is None or not self._stroke:
            return
        view = self.window.view
        add = view.viewbox.mode == Mode.BRUSH_ADD
        painted = paint_stroke(mask, self._stroke, view.brush_radius, add=add)
        self._stroke = []
        self.project.paint(self.state.image_index, self.state.selected_id, painted, erased=not add)

    def scale_brush(self, factor: float) -> None:
        view = self.window.view
        view.brush_radius = float(np.clip(view.brush_radius * factor, 1, 500))
        self.window.statusBar().showMessage(f"Brush radius {view.brush_radius:.0f} px", 3000)

    def set_mode(self, mode: Mode) -> None:
        window = self.window
        if mode in (Mode.BRUSH_ADD, Mode.BRUSH_ERASE) and self._editable_mask() is None:
            window.statusBar().showMessage("Select a segmented box to paint its mask.", 5000)
            mode = Mode.SELECT
        for key, action in window.mode_actions.items():
            action.setChecked(key == mode)
        window.view.set_mode(mode)
        for item in window.canvas.box_items.values():
            item.translatable = mode == Mode.SELECT  # boxes stay put while drawing or painting

    # ------------------------------------------------------------------------------ boxes
    def box_edited(self, box_id: int, xyxy: np.ndarray) -> None:
        """A box item was moved or resized with the mouse."""
        document = self.window.current_document()
        box = next((b for b in document.boxes if b.id == box_id), None)
        if box is None or np.allclose(box.xyxy, xyxy):
            return
        self.project.move_box(self.state.image_index, box_id, xyxy)
        if box_id == self.state.selected_id:
            self.window.segmentation.segment_selected()

    def _box_drawn(self, xyxy: np.ndarray) -> None:
        if self.state.image is None:
            return
        h, w = self.state.image.shape[:2]
        xyxy = np.clip(xyxy, 0, [w, h, w, h])
        box_id = self.project.add_box(self.state.image_index, xyxy, self.default_label())
        self.set_mode(Mode.SELECT)
        self.window.canvas.select_box(box_id)

    def delete_selected(self) -> None:
        if self.state.selected_id is not None:
            self.project.delete_box(self.state.image_index, self.state.selected_id)

    def class_names(self) -> list[str]:
        """The classes offered: the open box files' categories, the checkpoint's classes, the
        shown image's labels and those added by the user, in that order, each once."""
        info = self.state.model_info
        document = self.window.current_document()
        names = [*self.project.category_ids, *(info.class_names if info else ()),
                 *(b.label for b in (document.boxes if document else ())), *self._added_classes]
        return list(dict.fromkeys(names))

    def default_label(self) -> str:
        """The class of a new box: the last one set, else the first class offered."""
        return self._last_label or next(iter(self.class_names()), "object")

    def show_class_menu(self) -> None:
        """Set class (C): a menu of the classes at the selected box, and New class…."""
        box = self.window.canvas.selected_box()
        if box is None:
            self.window.statusBar().showMessage("Select a box to set its class.", 5000)
            return
        menu = self.class_menu
        menu.clear()
        for name in self.class_names():
            action = menu.addAction(name)
            action.setCheckable(True)
            action.setChecked(name == box.label)
            action.triggered.connect(lambda _=False, n=name: self.set_label(n))
        menu.addSeparator()
        menu.addAction("New class…").triggered.connect(self._new_class)
        view = self.window.view
        corner = view.mapFromScene(view.viewbox.mapViewToScene(QPointF(float(box.xyxy[0]), float(box.xyxy[1]))))
        menu.popup(view.mapToGlobal(corner))  # not exec(): the window stays responsive

    def _new_class(self) -> None:
        name, ok = QInputDialog.getText(self.window, "New class", "Name of the new class:")
        if ok and name.strip():
            self._added_classes.append(name.strip())
            self.set_label(name.strip())

    def set_label(self, label: str) -> None:
        """Set the selected box's class; new boxes take it too."""
        self._last_label = label
        if self.state.selected_id is not None:
            self.project.set_label(self.state.image_index, self.state.selected_id, label)

    # ------------------------------------------------------------------------------ undo
    def undo(self) -> None:
        self.project.undo()

    def redo(self) -> None:
        self.project.redo()

    def _document_changed(self, change: Change) -> None:
        window, canvas = self.window, self.window.canvas
        if change.kind == "reset":  # another annotation or a recovered one: nothing shown is valid
            window.files.forget_shown_image()
        document, info = window.current_document(), self.state.model_info
        if change.kind in ("undo", "redo") and document is not None and info is not None:
            for box in document.boxes:  # an undone model result disappears from the view too
                view = self.state.views.get(box.id)
                if box.result is None and view is not None and view.taps == info.taps:
                    canvas.drop_result(box.id)
        if change.indices is None:
            window.file_model.refresh()
        for index in change.indices or ():
            window.file_model.refresh(index)
        if change.kind != "images":
            canvas.sync_boxes()
        undo, redo = self.project.undo_name(), self.project.redo_name()
        window.undo_action.setEnabled(undo is not None)
        window.undo_action.setText(f"Undo {undo}" if undo else "Undo")
        window.redo_action.setEnabled(redo is not None)
        window.redo_action.setText(f"Redo {redo}" if redo else "Redo")


def paint_stroke(mask: np.ndarray, points: list[tuple[float, float]], radius: float, add: bool) -> np.ndarray:
    """A copy of bool [H, W] ``mask`` with a round brush of ``radius`` px dragged through
    ``points`` (image coordinates) set (add) or cleared (erase)."""
    canvas = np.ascontiguousarray(mask, dtype=np.uint8)  # a copy; cv2 draws into C-ordered arrays only
    value = 1 if add else 0
    # cv2 draws on pixel centres at integer coordinates; image point (x, y) is pixel (x-0.5, y-0.5).
    pixels = [(round(x - 0.5), round(y - 0.5)) for x, y in points]
    thickness = max(1, round(2 * radius))
    for start, end in zip(pixels, pixels[1:] or pixels):
        cv2.line(canvas, start, end, value, thickness=thickness, lineType=cv2.LINE_8)
    for point in pixels[:1] + pixels[-1:]:
        cv2.circle(canvas, point, max(0, round(radius)), value, thickness=-1)
    return canvas.astype(bool)
