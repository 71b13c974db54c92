"""Segmentation: the model's life in the window (loaded, failed), requests for the selected box,
all boxes of the image or all images (in the worker thread), their answers, the tap subset and
the compare view."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from hcviewer.annotation.document import ModelResult
from hcviewer.annotation.head_scope import HeadScope
from hcviewer.annotation.mask_crops import as_crop, box_map_iou, box_map_pixels, crop_iou
from hcviewer.annotation.wording import plural
from hcviewer.app.compare_view import CompareWindow, crop_box, place_over, standard_subsets
from hcviewer.app.gui_gc import freeze_long_lived, hold_collections, release_collections
from hcviewer.app.image_view import Mode
from hcviewer.app.viewer_state import BoxView
from hcviewer.app.worker import BoxRequest, BoxResult, CompareRequest, ModelInfo
from hcviewer.boxes import box_problem, describe_box

if TYPE_CHECKING:
    from hcviewer.annotation.document import Box
    from hcviewer.app.main_window import MainWindow

MAX_LISTED = 10  # boxes named in one message


class SegmentationController(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)  # a QObject of the GUI thread: worker signals reach it queued
        self.window = window
        self.state = window.state
        self.compare_window: CompareWindow | None = None
        # The result panel's last IoUs by kind ("accepted", "prediction"): (what was scored,
        # threshold, IoU); a large photo's takes tens of ms, and the panel is redrawn at every click.
        self._last_iou: dict[str, tuple[tuple, float, float]] = {}
        self._load_started = time.perf_counter()
        worker = window.model.worker
        worker.modelLoaded.connect(self._model_loaded)
        worker.modelFailed.connect(self._model_failed)
        worker.predicted.connect(self._predicted)
        worker.compared.connect(self._compared)
        worker.failed.connect(window.show_message)
        worker.imageReady.connect(self._image_ready)
        worker.batchProgress.connect(self._batch_progress)
        worker.batchFinished.connect(self._batch_finished)
        window.layers.tapsChanged.connect(self._taps_changed)
        # Connected after the panel's own handler: the display settings hold the new value here.
        window.display_panel.refine_edges.toggled.connect(lambda _: self.segment_selected())

    # ------------------------------------------------------------------------------ model
    def open_model_dialog(self) -> None:
        """File > Open model…: another checkpoint (also after one failed to load)."""
        folder = str(Path(self.window.checkpoint).parent) if self.window.checkpoint else self.window.settings.last_folder()
        path, _ = QFileDialog.getOpenFileName(self.window, "Open model", folder,
                                              "hcviewer checkpoints (*.safetensors);;All files (*)")
        if path:
            self.open_model(path)

    def open_model(self, path: str) -> None:
        """Load the checkpoint ``path`` in the worker; the current model answers until it is ready."""
        self.window.checkpoint = str(path)
        self._load_started = time.perf_counter()
        hold_collections()  # until it has loaded: see gui_gc
        self.window.device_label.setText(f"Model: loading {Path(path).name}…")
        self.window.layers.model_loading(Path(path).name)
        self.window.model.load(str(path), self.window.device, self.window.mirror)

    def _model_loaded(self, info: ModelInfo) -> None:
        freeze_long_lived()  # the model's and torch's objects: no later collection walks them
        window = self.window
        replaced = self.state.model_info is not None
        self.state.model_info = info
        startup = time.perf_counter() - self._load_started
        window.device_label.setText(f"Device: {info.device}")
        window.statusBar().showMessage(f"Model {Path(info.path).name} ready after {startup:.1f} s", 8000)
        if info.device_warning:
            window.show_message(info.device_warning, "Device")
        window.project.keypoint_names, window.project.skeleton = info.keypoint_names, info.skeleton
        window.project.heads = HeadScope.from_config(info)  # whose keypoints and parts are drawn and saved
        window.layers.set_taps(info.taps)
        window.display_panel.set_tasks(info.tasks)
        window.display_panel.set_parts(info.part_names, info.part_colors)
        if replaced:  # what is drawn came from the previous model
            for box_id in list(self.state.views):
                window.canvas.drop_result(box_id)
            self.redraw_results()
        if self.state.selected_id is not None and self.state.selected_id not in self.state.views:
            self.segment_selected()

    def _model_failed(self, message: str) -> None:
        release_collections()
        info = self.state.model_info  # a model loaded before keeps working
        self.window.device_label.setText("Model: not loaded" if info is None else f"Device: {info.device}")
        self.window.layers.model_failed(message)
        self.window.show_message(message, "Model")

    def _image_ready(self, key: str, seconds: float) -> None:
        if key == self.state.image_key:
            self.window.timing_label.setText(f"trunk {seconds * 1000:.0f} ms")

    # ------------------------------------------------------------------------------ requests
    def taps(self) -> tuple[str, ...]:
        """The checked taps (all of the checkpoint's when none is listed yet)."""
        if self.state.model_info is None:
            return ()
        return self.window.layers.checked() or self.state.model_info.taps

    def _ready_for_model(self) -> bool:
        if self.state.image is None:
            return False
        if self.state.model_info is None:
            self.window.statusBar().showMessage("The model is still loading; boxes are segmented when it is ready.", 5000)
            return False
        return True

    def _request(self, boxes: list["Box"], contributions: bool, report: bool = True) -> None:
        """Ask the worker for ``boxes``; those that cannot be segmented (entirely outside the
        image…) are left out and, when ``report``, named in one message."""
        size = self.state.image.shape[:2]
        problems = {b.id: box_problem(b.xyxy, size) for b in boxes}
        bad = [b for b in boxes if problems[b.id] is not None]
        if bad and report:
            lines = [f"{describe_box(b.label, b.xyxy)} {problems[b.id]}: skipped." for b in bad[:MAX_LISTED]]
            self.window.show_notice("\n".join(line[0].upper() + line[1:] for line in lines)
                                    + "\nMove such a box onto the image, or delete it (Del).")
        boxes = [b for b in boxes if problems[b.id] is None]
        if not boxes:
            return
        self.window.model.predict(BoxRequest(
            self.state.image_key, [b.id for b in boxes], np.array([b.xyxy for b in boxes], np.float64),
            taps=self.taps(), categories=self._categories(boxes), contributions=contributions,
            refine=self.window.display.refine_edges))
        self.window.busy.start("segment", "Segmenting…")
        self.window.result_label.setText("Segmenting…")

    def _categories(self, boxes: list["Box"]) -> list[str] | None:
        """The class a class-specific checkpoint uses for each box (its label, else the first class)."""
        info = self.state.model_info
        if info is None or not info.class_specific:
            return None
        return [b.label if b.label in info.class_names else info.class_names[0] for b in boxes]

    def segment_selected(self) -> None:
        box = self.window.canvas.selected_box()
        if box is not None and self._ready_for_model():
            self._request([box], contributions=True)

    def segment_all(self) -> None:
        """Segment all boxes in image (the user asked: boxes that cannot be are named)."""
        boxes = list(self.window.canvas.visible_boxes().values())
        if boxes and self._ready_for_model():
            self._request(boxes, contributions=False)

    def redraw_results(self) -> None:
        """Results of the shown image that the document keeps without box maps (nothing to draw
        them from) are predicted again from the image's cached features; nothing is said."""
        boxes = [b for b in self.window.canvas.visible_boxes().values()
                 if b.result is not None and b.id not in self.state.views]
        if boxes and self._ready_for_model():
            self._request(boxes, contributions=False, report=False)

    def _predicted(self, result: BoxResult) -> None:
        request, state = result.request, self.state
        if request.image_key != state.image_key:
            return  # an answer for an image no longer shown
        boxes = self.window.canvas.visible_boxes()
        all_taps = state.model_info is not None and tuple(request.taps or ()) == state.model_info.taps
        results, views = {}, {}
        for i, box_id in enumerate(request.box_ids):
            box = boxes.get(box_id)
            if box is None or not np.allclose(box.xyxy, request.boxes[i]):
                continue  # deleted or moved since the request: a newer request follows
            view = BoxView.from_prediction(result.prediction, i)
            if view.contributions or box_id not in state.views or state.views[box_id].taps != view.taps:
                views[box_id] = view
            if all_taps:
                results[box_id] = ModelResult(figure_ground=view.figure_ground, keypoints=view.keypoints, view=view)
        seconds = result.prediction.seconds + result.trunk_seconds
        self.window.timing_label.setText(f"last prediction {seconds * 1000:.0f} ms ({plural(len(request.box_ids), 'box')})")
        with state.changes():  # drawn once, for all boxes
            state.show_views(views)
            if results:
                self.window.project.set_results(state.image_index, results)

    def _taps_changed(self, taps: tuple[str, ...]) -> None:
        """Re-render the selected box with this tap subset from the cached features."""
        self.segment_selected()
        if self.compare_window is not None and self.compare_window.isVisible():
            self.refresh_compare()

    # ------------------------------------------------------------------------------ compare
    def open_compare(self) -> None:
        if self.compare_window is None:
            self.compare_window = CompareWindow(self.window)
            self.compare_window.refreshRequested.connect(self.refresh_compare)
            place_over(self.compare_window, self.window)
        self.compare_window.show()
        self.compare_window.raise_()
        self.refresh_compare()

    def refresh_compare(self) -> None:
        box = self.window.canvas.selected_box()
        if box is None or not self._ready_for_model():
            self.compare_window.caption.setText("Select a box first (and wait for the model to load).")
            return
        taps, checked = self.state.model_info.taps, self.taps()
        subsets = standard_subsets(taps, custom=checked if checked != taps else None)
        self.compare_window.caption.setText(f"{box.label} box {box.id}: computing {len(subsets)} subsets…")
        display = self.window.display  # the subsets are cut and scored as the result panel's mask
        self.window.model.compare(CompareRequest(
            self.state.image_key, box.id, np.array(box.xyxy, np.float64), subsets, gt_mask=box.gt_crop,
            category=(self._categories([box]) or [None])[0], threshold=display.threshold,
            refine=display.refine_edges))

    def _compared(self, result) -> None:
        request, image = result.request, self.state.image
        if request.image_key != self.state.image_key or self.compare_window is None or image is None:
            return
        crop, (x0, y0, x1, y1) = crop_box(image, request.box)  # the visible part of the box
        xs = x0 + ((np.arange(crop.shape[1]) + 0.5) * (x1 - x0) / max(1, crop.shape[1])).astype(np.int64)
        ys = y0 + ((np.arange(crop.shape[0]) + 0.5) * (y1 - y0) / max(1, crop.shape[0])).astype(np.int64)
        masks = {name: box_map_pixels(box_map, request.box, request.threshold, xs, ys, image.shape[:2])
                 for name, box_map in result.masks.items()}  # the pixels scored: Accept's mask
        gt_crop = None
        if request.gt_mask is not None:
            gt = as_crop(request.gt_mask).region(x0, y0, x1, y1).astype(np.uint8)
            gt_crop = cv2.resize(gt, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        self.compare_window.panel.show_result(crop, masks, result.iou, gt_crop)
        gt_note = (f"IoU against the ground-truth mask at mask threshold {request.threshold:.2f}"
                   f"{', edges refined' if request.refine else ''}, as the result panel scores it"
                   if request.gt_mask is not None else "no ground truth for this box")
        self.compare_window.caption.setText(
            f"Box {request.box_id}: {len(result.masks)} tap subsets from cached features in "
            f"{result.seconds * 1000:.0f} ms; {gt_note}")

    # ------------------------------------------------------------------------------ ground truth
    def ground_truth_iou_text(self, box: "Box", view: BoxView | None) -> str:
        """The result panel's IoU line, naming each mask it scores: the accepted one (brush edits
        included; toggling taps does not change it) and the shown prediction as Accept would keep
        it (display threshold, edges refined as shown): ``box_map_iou``, as Compare scores its
        subsets. Empty without ground truth."""
        gt = box.gt_crop
        if gt is None:
            return ""
        scores = []
        if box.accepted:
            iou = self._remembered_iou("accepted", (box.mask_rle, gt), 0.0, lambda: crop_iou(box.mask_crop, gt))
            scores.append(f"accepted mask {iou:.2f}")
        if view is not None and view.figure_ground is not None:
            threshold = self.window.display.threshold
            iou = self._remembered_iou("prediction", (view.figure_ground, view.box, gt), threshold,
                                       lambda: box_map_iou(view.figure_ground, view.box, threshold, gt))
            scores.append(f"{'shown' if box.accepted else 'this'} prediction {iou:.2f} (taps {'+'.join(view.taps)}, "
                          f"threshold {threshold:.2f})")
        return "IoU vs ground truth: " + "; ".join(scores) if scores else ""

    def _remembered_iou(self, kind: str, scored: tuple, threshold: float, compute) -> float:
        last = self._last_iou.get(kind)
        if last is None or last[1] != threshold or any(a is not b for a, b in zip(last[0], scored)):
            last = (scored, threshold, compute())
            self._last_iou[kind] = last
        return last[2]

    def close_compare(self) -> None:
        if self.compare_window is not None:
            self.compare_window.close()

    # ------------------------------------------------------------------------------ batch
    def segment_all_images(self) -> None:
        window = self.window
        if self.state.model_info is None:
            window.show_message("The model is still loading; try again when the status bar names the device.")
            return
        items = window.project.batch_items(min_score=window.display_panel.score.value() / 100)
        if not items:
            window.show_message("No image has boxes to segment; open a box file first.")
            return
        window.progress.setRange(0, len(items))
        window.progress.setValue(0)
        window.progress.setVisible(True)
        window.cancel_button.setVisible(True)
        window.model.predict_all(items, refine=window.display.refine_edges)

    def cancel_batch(self) -> None:
        """Escape: cancels a running batch, else leaves the draw or brush mode."""
        window = self.window
        if window.progress.isVisible():
            window.model.cancel()
            window.statusBar().showMessage("Cancelling after the current image…", 5000)
        elif window.view.viewbox.mode != Mode.SELECT:
            window.annotation.set_mode(Mode.SELECT)

    def _batch_progress(self, done: int, total: int) -> None:
        self.window.progress.setRange(0, total)
        self.window.progress.setValue(done)

    def _batch_finished(self, batch) -> None:
        window = self.window
        window.progress.setVisible(False)
        window.cancel_button.setVisible(False)
        count = window.project.apply_batch_results(batch.results)
        verb = "Cancelled after" if batch.cancelled else "Segmented"
        window.statusBar().showMessage(f"{verb} {plural(count, 'image')} in {batch.seconds:.1f} s", 10000)
        errors = [r.error for r in batch.results if r.error is not None]
        if errors:
            window.show_message(f"{plural(len(errors), 'image')} could not be segmented; first: {errors[0]}",
                                "Segment all images")
        skipped = [f"{Path(r.image_path).name}: {box.describe()}" for r in batch.results for box in r.skipped]
        if skipped:
            window.show_notice(f"{plural(len(skipped), 'box')} skipped (move such a box onto its image or delete it):\n"
                               + "\n".join(skipped[:MAX_LISTED]) + ("\n…" if len(skipped) > MAX_LISTED else ""))
        if self.state.image is not None:
            self.redraw_results()
