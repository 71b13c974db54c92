"""Annotating: accept and reject results, paint accepted masks with the brush, draw, move,
relabel and delete boxes, the pointer mode, and undo/redo of all of it (one document stack)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, Qt

from hcviewer.annotation.document import Change
from hcviewer.annotation.mask_crops import MaskCrop, box_map_crop, crop_from_rle, crop_mask, remember_crop
from hcviewer.annotation.wording import plural
from hcviewer.app.class_picker import ClassPicker
from hcviewer.app.image_view import Mode
from hcviewer.app.mask_jobs import SYNC_PIXELS, MaskJobs, encoded_crop
from hcviewer.app.overlays import ACCEPTED_COLOR
from hcviewer.app.polygon_items import PolygonEditor

if TYPE_CHECKING:
    from hcviewer.annotation.document import Box
    from hcviewer.app.main_window import MainWindow

ERASE_COLOR = (255, 60, 60)


class AnnotationController(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)  # a QObject of the GUI thread: worker signals reach it queued
        self.window = window
        self.state = window.state
        self.project = window.project
        self._stroke: list[tuple[float, float]] = []
        self.jobs = MaskJobs(self)  # large masks are made in the background
        self.jobs.failed = window.show_message
        self._busy: set[int] = set()  # boxes being accepted in the background
        self._queued_strokes: dict[int, list] = {}  # box id -> strokes to paint after the one painting
        self._last_label: str | None = None  # the class last set (C): new boxes take it
        self._added_classes: list[str] = []  # new names typed in the class picker this session
        self.class_picker = ClassPicker(window)
        self.class_picker.picked.connect(self._class_picked)
        self.stroke_curve = pg.PlotCurveItem()  # the brush stroke being painted
        self.stroke_curve.setZValue(50)
        canvas = window.view.viewbox
        canvas.addItem(self.stroke_curve, ignoreBounds=True)
        canvas.boxDrawn.connect(self._box_drawn)
        canvas.strokeStarted.connect(self.stroke_started)
        canvas.strokePoint.connect(self.stroke_point)
        canvas.strokeFinished.connect(self.stroke_finished)
        self.project.add_listener(self._document_changed)
        self.polygons = PolygonEditor(window)  # Edit polygon mode (P)

    # ------------------------------------------------------------------------------ results
    def _result_mask(self, box_id: int) -> MaskCrop | None:
        """The shown model result for a box as a mask (the crop of its box: a large photo's
        full-image mask took seconds to make and encode)."""
        view = self.state.views.get(box_id)
        if view is None or view.figure_ground is None or self.state.image is None:
            return None
        return box_map_crop(view.figure_ground, view.box, self.state.image.shape[:2], self.window.display.threshold)

    def can_accept(self) -> bool:
        """A shown result of a box not accepted yet: an accepted (maybe brush-edited) mask is
        never replaced by the model's (Reject starts the box over)."""
        box = self.window.canvas.selected_box()
        view = self.state.views.get(box.id) if box is not None else None
        return (box is not None and not box.accepted and box.id not in self._busy and view is not None
                and view.figure_ground is not None)

    def accept_selected(self) -> None:
        if not self.can_accept():
            return
        box_id, key = self.state.selected_id, self.state.image_key
        view = self.state.views[box_id]
        if _box_pixels(view.box) <= SYNC_PIXELS:
            self.project.accept(self.state.image_index, box_id, self._result_mask(box_id))
            return
        # A large photo's box: its mask is drawn and encoded in the mask thread.
        size, threshold, figure_ground, box = self.state.image.shape[:2], self.window.display.threshold, \
            view.figure_ground, np.array(view.box)
        self._busy.add(box_id)
        self.window.statusBar().showMessage("Accepting the mask…", 3000)
        self.jobs.submit(lambda: encoded_crop(box_map_crop(figure_ground, box, size, threshold)),
                         lambda made: self._accept_made(key, box_id, view, made))

    def _accept_made(self, key: str, box_id: int, view, made: tuple[MaskCrop, dict]) -> None:
        """A mask made in the background: the box is accepted if it is still as it was."""
        self._busy.discard(box_id)
        box = self.window.canvas.visible_boxes().get(box_id) if key == self.state.image_key else None
        if box is not None and not box.accepted and np.allclose(box.xyxy, view.box) and box.result is not None:
            remember_crop(*made)
            self.project.accept(self.state.image_index, box_id, made[1])

    def accept_all(self) -> None:
        """Accept every shown, not yet accepted result of this image (one undo step)."""
        boxes = self.window.canvas.visible_boxes()
        masks = {box_id: self._result_mask(box_id) for box_id, box in boxes.items() if not box.accepted}
        self.project.accept_many(self.state.image_index, {i: m for i, m in masks.items() if m is not None})

    def accept_all_images(self) -> None:
        """Accept every result not yet accepted, in every image, without showing them (one undo
        step): the shown image's results as drawn, the others' as Segment all images kept them."""
        count = self.project.accept_all_results(self._kept_result_mask)
        self.window.statusBar().showMessage(f"Accepted {plural(count, 'mask')}", 5000)

    def _kept_result_mask(self, index: int, box: "Box") -> MaskCrop | np.ndarray | None:
        """A box's result as a mask (a crop, or bool [H, W]) at the display threshold."""
        if index == self.state.image_index and box.id in self.state.views:
            return self._result_mask(box.id)
        result, size = box.result, self.project.images[index].size
        if size is None and result.mask_rle is not None:
            size = tuple(result.mask_rle["size"])
        if result.figure_ground is not None and size is not None:
            return box_map_crop(result.figure_ground, box.xyxy, size, self.window.display.threshold)
        return None if result.mask_rle is None else crop_from_rle(result.mask_rle)

    def reject_selected(self) -> None:
        if self.window.canvas.selected_box() is None:
            return
        self.window.canvas.drop_result(self.state.selected_id)  # before the change is drawn
        self.project.reject(self.state.image_index, self.state.selected_id)

    # ------------------------------------------------------------------------------ brush
    def editable_mask(self) -> MaskCrop | None:
        """The selected box's mask as the brush and clicks edit it: the accepted one, else its result's."""
        box = self.window.canvas.selected_box()
        if box is None or (box.id in self._busy and not box.accepted):  # being accepted in the background
            return None
        return box.mask_crop if box.accepted else self._result_mask(box.id)

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
        mask = self.editable_mask()
        if mask is None or not self._stroke:
            return
        view = self.window.view
        stroke = (self._stroke, view.brush_radius, view.viewbox.mode == Mode.BRUSH_ADD)
        self._stroke = []
        box_id = self.state.selected_id
        if box_id in self._queued_strokes:  # a stroke of this box is being painted in the background
            self._queued_strokes[box_id].append(stroke)
        elif mask.mask.size <= SYNC_PIXELS:
            self.project.paint(self.state.image_index, box_id, paint_crop(mask, *stroke), erased=not stroke[2])
        else:
            self._queued_strokes[box_id] = [stroke]
            self._paint_later(box_id, mask)

    def _paint_later(self, box_id: int, mask: MaskCrop) -> None:
        """Paint the box's queued strokes on ``mask`` in the mask thread (a large photo's mask)."""
        strokes, key = self._queued_strokes[box_id], self.state.image_key
        self._queued_strokes[box_id] = []
        before = self.window.canvas.visible_boxes()[box_id].mask_rle

        def paint() -> tuple[MaskCrop, dict]:
            painted = mask
            for points, radius, add in strokes:
                painted = paint_crop(painted, points, radius, add)
            return encoded_crop(painted)

        self.jobs.submit(paint, lambda made: self._paint_made(key, box_id, before, made, erased=not strokes[-1][2]))

    def _paint_made(self, key: str, box_id: int, before: dict | None, made: tuple[MaskCrop, dict],
                    erased: bool) -> None:
        """Painted strokes made in the background: applied if the box's mask is still the one
        they were painted on; strokes made meanwhile are painted next, on the result."""
        box = self.window.canvas.visible_boxes().get(box_id) if key == self.state.image_key else None
        queued = self._queued_strokes.pop(box_id, [])
        if box is None or box.mask_rle is not before:
            return  # undone, moved or another image shown meanwhile: the strokes are dropped
        remember_crop(*made)
        self.project.paint(self.state.image_index, box_id, made[1], erased=erased)
        if queued:
            self._queued_strokes[box_id] = queued
            self._paint_later(box_id, made[0])

    def scale_brush(self, factor: float) -> None:
        view = self.window.view
        view.brush_radius = float(np.clip(view.brush_radius * factor, 1, 500))
        self.window.statusBar().showMessage(f"Brush radius {view.brush_radius:.0f} px", 3000)

    def set_mode(self, mode: Mode) -> None:
        window = self.window
        if mode in (Mode.BRUSH_ADD, Mode.BRUSH_ERASE) and self.editable_mask() is None:
            window.statusBar().showMessage("Select a segmented box to paint its mask.", 5000)
            mode = Mode.SELECT
        if mode == Mode.POLYGON and not self.polygons.can_edit():
            window.statusBar().showMessage("Select a box with an accepted mask to edit its polygon.", 5000)
            mode = Mode.SELECT
        for key, action in window.mode_actions.items():
            action.setChecked(key == mode)
        window.view.set_mode(mode)
        for item in window.canvas.box_items.values():
            item.translatable = mode == Mode.SELECT  # boxes stay put while drawing or painting
        self.polygons.set_active(mode == Mode.POLYGON)

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
        if self._last_label is None:  # no class chosen yet: the user picks one at once (Escape keeps "object")
            self.show_class_menu()

    def delete_selected(self) -> None:
        if self.window.view.viewbox.mode == Mode.POLYGON:  # Del deletes the selected vertex
            self.polygons.delete_selected()
        elif self.state.selected_id is not None:
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
        """The class of a new box: the last one the user set, else ``object``, which names no
        class: no head trained on people gives it keypoints or parts (``categories.head_applies``).
        Not the first class offered: a COCO box file's is ``person``, and a plane drawn before
        any class was chosen was saved as a person."""
        return self._last_label or "object"

    def show_class_menu(self) -> None:
        """Set class (C): the class picker (type to filter, or a new name) at the selected box."""
        box = self.window.canvas.selected_box()
        if box is None:
            self.window.statusBar().showMessage("Select a box to set its class.", 5000)
            return
        view = self.window.view
        corner = view.mapFromScene(view.viewbox.mapViewToScene(QPointF(float(box.xyxy[0]), float(box.xyxy[1]))))
        self.class_picker.popup(self.class_names(), box.label, view.mapToGlobal(corner))

    def _class_picked(self, name: str) -> None:
        if name not in self.class_names():
            self._added_classes.append(name)
        self.set_label(name)

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
            self.state.changed("document")
        undo, redo = self.project.history.undo_name(), self.project.history.redo_name()
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


def _box_pixels(box: np.ndarray) -> float:
    return float(box[2] - box[0]) * float(box[3] - box[1])


def paint_crop(crop: MaskCrop, points: list[tuple[float, float]], radius: float, add: bool) -> MaskCrop:
    """``paint_stroke`` over just the region the mask and the stroke cover (never a large
    photo's whole image): the same pixels, as a crop."""
    height, width = crop.image_size
    reach = radius + 2
    xs, ys = [x for x, _ in points], [y for _, y in points]
    cx0, cy0, cx1, cy1 = crop.xyxy if crop.mask.size else (width, height, 0, 0)
    x0, y0 = max(0, min(cx0, int(np.floor(min(xs) - reach)))), max(0, min(cy0, int(np.floor(min(ys) - reach))))
    x1, y1 = min(width, max(cx1, int(np.ceil(max(xs) + reach)))), min(height, max(cy1, int(np.ceil(max(ys) + reach))))
    if x1 <= x0 or y1 <= y0:
        return crop
    painted = paint_stroke(crop.region(x0, y0, x1, y1), [(x - x0, y - y0) for x, y in points], radius, add)
    return crop_mask(painted, x0, y0, crop.image_size)
