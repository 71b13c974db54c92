"""Overlays and display: keeps what the canvas draws (box items, the selected box's overlay,
the composite result layer, accepted masks, ground-truth outlines, the probe) in step with the
project document and the viewer state, and fills the result panel."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QRectF

from hcviewer.annotation.head_scope import HeadScope
from hcviewer.annotation.mask_crops import MaskCrop, compose_crops, rle_area
from hcviewer.app.box_items import BoxItem, stack_labels
from hcviewer.app.image_loader import DISPLAY_MAX_SIDE
from hcviewer.app.overlays import (
    GT_COLOR, BoxOverlay, annotation_color, brush_pen, crop_outline_xy,
)
from hcviewer.app.probe import sample_box_map
from hcviewer.app.result_layer import LayerEntry, ResultLayer, compose
from hcviewer.app.viewer_state import stored_view

if TYPE_CHECKING:
    from hcviewer.annotation.document import Box
    from hcviewer.app.main_window import MainWindow
    from hcviewer.app.viewer_state import BoxView

ANNOTATION_Z = 18  # accepted masks above the model's results (8-15), below the boxes (20+)


class CanvasController(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)  # a QObject of the GUI thread: worker signals reach it queued
        self.window = window
        self.state = window.state
        self.display = window.display
        canvas = window.view.viewbox
        self.box_items: dict[int, BoxItem] = {}
        self.overlays: dict[int, BoxOverlay] = {}  # the selected box's (the others: result_layer)
        self.annotation_item = pg.ImageItem()  # accepted masks, one RGBA layer over the image
        self.annotation_item.setZValue(ANNOTATION_Z)
        self.gt_curve = pg.PlotCurveItem(pen=brush_pen(GT_COLOR, width=2, dashed=True), connect="finite")
        self.probe_marker = pg.ScatterPlotItem(symbol="+", size=16, pen=pg.mkPen("w", width=2), brush=None)
        for item in (self.annotation_item, self.gt_curve, self.probe_marker):
            canvas.addItem(item, ignoreBounds=True)
        self.probe_marker.setZValue(60)
        self.result_layer = ResultLayer(canvas)
        # What the accepted layer shows (crops, colours, opacity): redrawn only when it changes,
        # not at every click (a large photo's: tens of ms).
        self._annotation_drawn: tuple | None = None
        canvas.sigRangeChanged.connect(lambda *_: self.stack_labels())  # label sizes are in screen pixels
        window.view.hovered.connect(self.probe_at)
        window.view.left.connect(self.probe_left)
        self.state.subscribe(self._state_changed)

    # ------------------------------------------------------------------------------ boxes
    def visible_boxes(self) -> dict[int, "Box"]:
        """The shown image's boxes that pass the score slider, by id."""
        document = self.window.current_document()
        if document is None or self.state.image is None:
            return {}
        min_score = self.window.display_panel.score.value() / 100
        return {box.id: box for box in document.boxes if box.score is None or box.score >= min_score}

    def selected_box(self) -> "Box | None":
        return self.visible_boxes().get(self.state.selected_id) if self.state.selected_id is not None else None

    def _state_changed(self, what: frozenset[str]) -> None:
        if what == {"selection"}:
            self._selection_changed()  # the boxes, their results and the annotation are as drawn
        else:
            self.sync_boxes()

    def _selection_changed(self) -> None:
        boxes = self.visible_boxes()
        for box_id, item in self.box_items.items():
            box = boxes.get(box_id)
            if box is not None:
                item.set_state(box_id == self.state.selected_id, self.accepted_color(box) if box.accepted else None,
                               box_label(box))
        if self.display.selected_only:
            self.draw_annotation()  # the newly selected box's accepted mask and ground truth
        self.draw_results()
        self.update_result_panel()

    def sync_boxes(self) -> None:
        """Make the drawn boxes and overlays match the document and the view state (after any
        change but a selection)."""
        boxes = self.visible_boxes()
        viewbox = self.window.view.viewbox
        for box_id in [i for i in self.box_items if i not in boxes]:
            viewbox.removeItem(self.box_items.pop(box_id))
            self.drop_result(box_id)
        for box_id, box in boxes.items():
            item = self.box_items.get(box_id)
            if item is None:
                item = BoxItem(box_id, box.xyxy, "")
                item.selected.connect(self.select_box)
                item.corrected.connect(self.window.clicks.click)
                item.edited.connect(self.window.annotation.box_edited)
                viewbox.addItem(item)
                self.box_items[box_id] = item
            elif not np.allclose(item.xyxy(), box.xyxy):
                item.set_box(box.xyxy)
                self.drop_result(box_id)  # the box moved (undo/redo): its result is stale
            item.set_state(box_id == self.state.selected_id, self.accepted_color(box) if box.accepted else None,
                           box_label(box))
        taps = self.state.model_info.taps if self.state.model_info else ()
        for box_id, box in boxes.items():
            if box_id not in self.state.views and box.result is not None:
                # a result kept in the document: redo, undo of a move, revisiting the image
                view = stored_view(box.xyxy, taps, box.result)
                if view is not None:
                    self.state.views[box_id] = view
        if self.state.selected_id not in boxes:
            self.state.selected_id = None
        self.stack_labels()
        self.draw_annotation()
        self.draw_results()
        self.update_result_panel()
        if self.state.image_index is not None:
            self.window.file_model.refresh(self.state.image_index)

    def stack_labels(self) -> None:
        """Labels of boxes with nearby top-left corners are stacked, not drawn over each other."""
        items = sorted(self.box_items.values(), key=lambda item: item.box_id)
        pixel_height = self.window.view.viewbox.viewPixelSize()[1]
        for item, shift in zip(items, stack_labels([item.label_rect() for item in items])):
            item.shift_label(shift, pixel_height)

    def select_box(self, box_id: int) -> None:
        """Select and segment a box (a click, Tab). A click on the selected box does nothing,
        unless its result was rejected: then the click asks for a proposal again."""
        view = self.state.views.get(box_id)
        if box_id == self.state.selected_id:
            box = self.visible_boxes().get(box_id)
            if box is None or not box.rejected or view is not None:
                return
        self.state.select(box_id)
        segmentation = self.window.segmentation
        if view is None or view.taps != segmentation.taps() or not view.contributions:
            segmentation.segment_selected()  # "segment all" results lack the probe's per-tap contributions

    def select_next(self, step: int) -> None:
        """Tab / Shift+Tab: select the next (``step`` 1) or previous (-1) shown box by number,
        round the end; the first or the last when none is selected."""
        numbers = sorted(self.visible_boxes())
        if not numbers:
            return
        if self.state.selected_id in numbers:
            at = (numbers.index(self.state.selected_id) + step) % len(numbers)
        else:
            at = 0 if step > 0 else -1
        self.select_box(numbers[at])
        self._bring_into_view(self.visible_boxes()[numbers[at]].xyxy)

    def _bring_into_view(self, xyxy: np.ndarray) -> None:
        """Pan (at the same zoom) to centre a box that is not wholly in view: Tab at 1:1 zoom."""
        viewbox = self.window.view.viewbox
        shown, (x0, y0, x1, y1) = viewbox.viewRect(), (float(v) for v in xyxy)
        if not shown.contains(QRectF(x0, y0, x1 - x0, y1 - y0)):
            centre = shown.center()
            viewbox.translateBy(((x0 + x1) / 2 - centre.x(), (y0 + y1) / 2 - centre.y()))

    # ------------------------------------------------------------------------------ results
    def drop_result(self, box_id: int) -> None:
        self.state.views.pop(box_id, None)
        overlay = self.overlays.pop(box_id, None)
        if overlay is not None:
            overlay.remove()

    def clear_results(self) -> None:
        """Nothing drawn: before another image is shown."""
        for box_id in list(self.box_items):
            self.window.view.viewbox.removeItem(self.box_items.pop(box_id))
        for box_id in list(self.state.views) + list(self.overlays):
            self.drop_result(box_id)
        self.annotation_item.clear()
        self._annotation_drawn = None
        self.result_layer.clear()
        self.gt_curve.setData([], [])
        self.probe_left()

    def draw_results(self) -> None:
        """The selected box's result in its own overlay (with its keypoint heatmap); every other
        box's in the one composite layer (a few items however many boxes: repaints stay short)."""
        info, selected_id = self.state.model_info, self.state.selected_id
        skeleton = info.skeleton if info else ()
        selected = self.state.views.get(selected_id) if selected_id is not None else None
        for box_id in [i for i in self.overlays if selected is None or i != selected_id]:
            self.overlays.pop(box_id).remove()
        if selected is not None:
            overlay = self.overlays.get(selected_id)
            if overlay is None:
                overlay = self.overlays[selected_id] = BoxOverlay(self.window.view.viewbox)
            box = self.visible_boxes().get(selected_id)
            parts, heatmaps, keypoints = head_outputs(selected, box.label if box else "", self.window.project.heads)
            # an accepted mask is drawn in its colour: the model's result only as its outline
            overlay.show(selected.box, selected.figure_ground, parts, heatmaps, keypoints, skeleton, self.display,
                         mask_fill=not (box is not None and box.accepted))
        self._draw_result_layer(skeleton)

    def _draw_result_layer(self, skeleton: tuple[tuple[int, int], ...]) -> None:
        boxes, heads = self.visible_boxes(), self.window.project.heads
        entries, key = [], [self.state.image_key, self.display.key(), skeleton, heads]
        for box_id, view in self.state.views.items():
            if box_id == self.state.selected_id or box_id not in boxes or self.display.selected_only:
                continue
            # An accepted mask is drawn by the annotation layer; the model's mask would hide edits.
            accepted, label = boxes[box_id].accepted, boxes[box_id].label
            parts, _, keypoints = head_outputs(view, label, heads)
            entries.append(LayerEntry(view.box, None if accepted else view.figure_ground,
                                      None if accepted else parts, keypoints))
            key.append((box_id, id(view), accepted, label))
        if tuple(key) == self.result_layer.key:
            return  # drawn already
        if not entries or self.state.image is None:
            self.result_layer.clear()
            return
        shape = self.state.image.shape[:2]
        self.result_layer.show(compose(entries, shape, skeleton, self.display), shape)
        self.result_layer.key = tuple(key)

    def accepted_color(self, box: "Box") -> tuple[int, int, int]:
        """An accepted object's colour: its own, or its class's (Display > Accepted colours)."""
        if self.display.color_by == "class":
            category = self.window.project.category_ids.get(box.label)
            return annotation_color(category if isinstance(category, int) else zlib.crc32(box.label.encode()))
        return annotation_color(box.id)

    def draw_annotation(self) -> None:
        """Accepted masks (the annotation) over the model's results, each in its colour, with
        their legend; ground truth outlines when asked for."""
        boxes = self.visible_boxes().values()
        if self.display.selected_only:  # View > Show selected box only
            boxes = [b for b in boxes if b.id == self.state.selected_id]
        accepted = [b for b in boxes if b.accepted]
        colors = [self.accepted_color(b) for b in accepted]
        crops = tuple(b.mask_crop for b in accepted)
        if (crops, tuple(colors), self.display.opacity) != self._annotation_drawn:
            self._draw_accepted(crops, colors)
        if self.display.color_by == "class":
            legend = list(dict(zip((b.label for b in accepted), colors)).items())
        else:
            legend = [(f"{b.label} box {b.id}", color) for b, color in zip(accepted, colors)]
        self.window.display_panel.set_accepted_legend(legend)
        gts = [b.gt_crop for b in boxes if b.gt_crop is not None] if self.display.show_gt else []
        outlines = [crop_outline_xy(crop, DISPLAY_MAX_SIDE) for crop in gts]
        self.gt_curve.setData(np.concatenate([x for x, _ in outlines] or [np.zeros(0)]),
                              np.concatenate([y for _, y in outlines] or [np.zeros(0)]))

    def _draw_accepted(self, crops: tuple[MaskCrop, ...], colors: list[tuple[int, int, int]]) -> None:
        """The accepted masks as one layer, from their crops at the shown image's resolution."""
        drawn = compose_crops(list(crops), colors, self.display.opacity, DISPLAY_MAX_SIDE) if crops else None
        if drawn is not None:
            rgba, (x0, y0, x1, y1) = drawn
            self.annotation_item.setImage(rgba, autoLevels=False)  # no levels: uint8 drawn as is, not rescaled
            self.annotation_item.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
            self.annotation_item.setVisible(True)
        else:
            self.annotation_item.setVisible(False)
        self._annotation_drawn = (crops, tuple(colors), self.display.opacity)

    def display_changed(self) -> None:
        self.window.settings.save_display(self.display)
        self.draw_annotation()
        self.draw_results()

    def update_result_panel(self) -> None:
        window, box = self.window, self.selected_box()
        view = self.state.views.get(self.state.selected_id) if box is not None else None
        can_accept = window.annotation.can_accept()
        window.accept_button.setEnabled(can_accept)
        window.accept_action.setEnabled(can_accept)
        window.reject_button.setEnabled(box is not None and (view is not None or box.accepted))
        if box is None:
            window.result_label.setText("Click a box to segment it; D draws a new box.")
            return
        state = "accepted" if box.accepted else "segmented" if view is not None else "not segmented"
        taps = "" if view is None else f" — taps {'+'.join(view.taps)}"
        area = f", mask {rle_area(box.mask_rle)} px" if box.accepted else ""
        iou = window.segmentation.ground_truth_iou_text(box, view)
        window.result_label.setText(f"<b>{box.label}</b> box {box.id}: {state}{taps}{area}{iou and '<br>' + iou}")

    # ------------------------------------------------------------------------------ probe
    def probe_at(self, x: float, y: float) -> None:
        """Per-tap contributions of the selected box's result at image point (x, y)."""
        view = self.state.views.get(self.state.selected_id) if self.state.selected_id is not None else None
        if view is None or not view.contributions:
            return
        values = {tap: sample_box_map(c, view.box, x, y) for tap, c in view.contributions.items()}
        if any(v is None for v in values.values()):
            self.probe_left()
            self.window.probe.clear("Probe: move the pointer inside the selected box")
            return
        self.probe_marker.setData([x], [y])  # the probed pixel (also seen in screenshots)
        self.window.probe.show_pixel(values, view.bias, view.taps, f"at ({x:.0f}, {y:.0f})")

    def probe_left(self) -> None:
        self.probe_marker.setData([], [])
        self.window.probe.clear()


def box_label(box: "Box") -> str:
    """The text drawn at a box: its number (as the legend and the result panel name it, kept
    in the saved file), class and detector score."""
    score = "" if box.score is None else f" {box.score:.2f}"
    return f"#{box.id} {box.label}{score}"


def head_outputs(view: "BoxView", label: str, heads: HeadScope) -> tuple[np.ndarray | None, ...]:
    """(parts [P+1, S, S], keypoint heatmaps [J, S, S], keypoints [J, 3]) of a box's result,
    each None when its head was not trained on the box's class (no skeleton on a bench)."""
    keypoints = heads.keypoints_apply(label)
    return (view.parts if heads.parts_apply(label) else None,
            view.keypoint_heatmaps if keypoints else None, view.keypoints if keypoints else None)
