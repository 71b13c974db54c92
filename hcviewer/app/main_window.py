"""The main window: views over the project document (napari-style). Widgets subscribe to the
document and issue its commands; model work goes to the worker thread; images are decoded in
the loader thread. Nothing here imports torch: the window is up before the model has loaded."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication, QDockWidget, QFileDialog, QHBoxLayout, QInputDialog, QLabel, QListView,
    QMainWindow, QMessageBox, QProgressBar, QPushButton, QScrollArea, QVBoxLayout, QWidget,
)

from hcviewer.app.box_items import BoxItem
from hcviewer.app.boxfiles import DEMO_BOXES, BoxFileError, demo_images
from hcviewer.app.cli import DEFAULT_CHECKPOINT
from hcviewer.app.compare_view import CompareWindow, crop_box, standard_subsets
from hcviewer.app.document import Change, ModelResult, Project
from hcviewer.app.file_list import FileListModel
from hcviewer.app.image_loader import ImageLoaderService, is_image_file
from hcviewer.app.image_view import ImageView, Mode
from hcviewer.app.layers_panel import DisplayPanel, LayersPanel
from hcviewer.app.overlays import (
    ACCEPTED_COLOR, GT_COLOR, BoxOverlay, DisplaySettings, brush_pen, full_mask_outline_xy, mask_rgba,
)
from hcviewer.app.probe import ProbeWidget, sample_box_map
from hcviewer.app.result_layer import LayerEntry, ResultLayer, compose
from hcviewer.app.settings import AppSettings
from hcviewer.app.worker import (
    BoxRequest, BoxResult, CompareRequest, ModelInfo, ModelService, box_mask_iou, paste_box_map,
)


AUTOSAVE_MS = 5000  # unsaved edits reach the recovery file within this time


@dataclass
class BoxView:
    """What is drawn for one box: one box's prediction (S x S maps) and the taps it used."""

    box: np.ndarray  # [4] the box the prediction was made for
    taps: tuple[str, ...]
    figure_ground: np.ndarray | None  # [S, S]
    parts: np.ndarray | None  # [P+1, S, S]
    keypoint_heatmaps: np.ndarray | None  # [J, S, S]
    keypoints: np.ndarray | None  # [J, 3]
    contributions: dict[str, np.ndarray]  # tap -> [S, S] figure-ground logit contribution
    bias: float

    @classmethod
    def from_prediction(cls, prediction, i: int) -> "BoxView":
        def pick(array):
            return None if array is None else array[i]

        contributions = {tap: c[i, 0] for tap, c in prediction.contributions.get("figure_ground", {}).items()}
        bias = prediction.bias.get("figure_ground")
        return cls(prediction.boxes[i].astype(np.float64), tuple(prediction.taps), pick(prediction.figure_ground),
                   pick(prediction.parts), pick(prediction.keypoint_heatmaps), pick(prediction.keypoints),
                   contributions, 0.0 if bias is None else float(bias[i, 0]))


class MainWindow(QMainWindow):
    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str = "auto",
                 settings: AppSettings | None = None, offer_recovery: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("hcviewer")
        self.resize(1400, 900)
        self.setAcceptDrops(True)
        self.settings = settings or AppSettings()
        self.display = DisplaySettings()
        self.settings.load_display(self.display)
        self.project = Project()
        self.project.add_listener(self._document_changed)
        self.ask_to_save = True  # on close with unsaved edits (tests turn it off)
        self.model = ModelService(self)
        self.loader = ImageLoaderService(self)
        self.model_info: ModelInfo | None = None
        self.image: np.ndarray | None = None  # RGB uint8 [H, W, 3] of the shown image
        self.image_index: int | None = None
        self.image_key = ""  # changes on every (re)load: answers for an old key are stale
        self.box_items: dict[int, BoxItem] = {}
        self.overlays: dict[int, BoxOverlay] = {}  # the selected box's (the others: result_layer)
        self.views: dict[int, BoxView] = {}  # model results drawn per box id
        self.selected_id: int | None = None
        self.messages: list[str] = []  # every message shown to the user (tests read it)
        self._stroke: list[tuple[float, float]] = []
        self._load_started = time.perf_counter()
        self.compare_window: CompareWindow | None = None
        self._autosave_failed = False

        self._build_view()
        self._build_docks()
        self._build_actions()
        self._build_status_bar()
        self._connect_worker()
        self._restore_window()
        self.checkpoint = str(checkpoint) if checkpoint else None
        if self.checkpoint:
            self.model.load(self.checkpoint, device)
            self.device_label.setText("Model: loading…")
        else:
            self.device_label.setText("No checkpoint: boxes and annotation only")
        if offer_recovery:
            QTimer.singleShot(0, self.offer_recovery)
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setInterval(AUTOSAVE_MS)
        self.autosave_timer.timeout.connect(self._autosave)
        self.autosave_timer.start()

    # ------------------------------------------------------------------------------ layout
    def _build_view(self) -> None:
        self.view = ImageView()
        self.setCentralWidget(self.view)
        canvas = self.view.viewbox
        canvas.boxDrawn.connect(self._box_drawn)
        canvas.strokeStarted.connect(self._stroke_started)
        canvas.strokePoint.connect(self._stroke_point)
        canvas.strokeFinished.connect(self._stroke_finished)
        self.view.hovered.connect(self._hovered)
        self.view.left.connect(self._probe_left)
        self.annotation_item = pg.ImageItem()  # accepted masks, one RGBA layer over the image
        self.annotation_item.setZValue(5)
        self.gt_curve = pg.PlotCurveItem(pen=brush_pen(GT_COLOR, width=2, dashed=True), connect="finite")
        self.stroke_curve = pg.PlotCurveItem()
        self.probe_marker = pg.ScatterPlotItem(symbol="+", size=16, pen=pg.mkPen("w", width=2), brush=None)
        for item in (self.annotation_item, self.gt_curve, self.stroke_curve, self.probe_marker):
            canvas.addItem(item, ignoreBounds=True)
        self.stroke_curve.setZValue(50)
        self.probe_marker.setZValue(60)
        self.result_layer = ResultLayer(canvas)

    def _build_docks(self) -> None:
        self.file_model = FileListModel(lambda: len(self.project.images), self._file_row)
        self.file_list = QListView()
        self.file_list.setModel(self.file_model)
        self.file_list.setUniformItemSizes(True)  # thousands of rows: no per-row size queries
        self.file_list.clicked.connect(lambda index: self.show_image(index.row()))
        self._dock("Images", self.file_list, Qt.DockWidgetArea.LeftDockWidgetArea)

        side = QWidget()
        layout = QVBoxLayout(side)
        self.result_label = QLabel("Click a box to segment it.")
        self.result_label.setWordWrap(True)
        layout.addWidget(self.result_label)
        buttons = QHBoxLayout()
        self.accept_button = QPushButton("Accept (A)")
        self.reject_button = QPushButton("Reject (R)")
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.reject_button)
        layout.addLayout(buttons)
        self.layers = LayersPanel()
        self.layers.tapsChanged.connect(self._taps_changed)
        layout.addWidget(self.layers)
        self.display_panel = DisplayPanel(self.display)
        self.display_panel.changed.connect(self._display_changed)
        self.display_panel.scoreThresholdChanged.connect(lambda _: self._sync_boxes())
        layout.addWidget(self.display_panel)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(side)
        scroll.setMinimumWidth(270)
        self._dock("Result and layers", scroll, Qt.DockWidgetArea.RightDockWidgetArea)
        self.probe = ProbeWidget()
        self.probe_dock = self._dock("Probe", self.probe, Qt.DockWidgetArea.RightDockWidgetArea)
        self.resizeDocks([self.probe_dock], [300], Qt.Orientation.Vertical)
        self.resizeDocks([self.file_list.parentWidget(), self.probe_dock], [220, 330], Qt.Orientation.Horizontal)

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, menu, text: str, slot, shortcut: str | QKeySequence.StandardKey | None = None,
                checkable: bool = False) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_actions(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self._action(file, "Open images…", self.open_images_dialog, QKeySequence.StandardKey.Open)
        self._action(file, "Open folder…", self.open_folder_dialog, "Ctrl+Shift+O")
        self._action(file, "Open boxes…", self.open_boxes_dialog, "Ctrl+B")
        self.recent_menu = file.addMenu("Open recent")
        self._fill_recent_menu()
        file.addSeparator()
        self._action(file, "Open annotation…", self.open_annotation_dialog, "Ctrl+Shift+A")
        self._action(file, "Save annotation", self.save_annotation, QKeySequence.StandardKey.Save)
        self._action(file, "Save annotation as…", self.save_annotation_as, "Ctrl+Shift+S")
        file.addSeparator()
        self._action(file, "Quit", self.close, QKeySequence.StandardKey.Quit)

        edit = bar.addMenu("&Edit")
        self.undo_action = self._action(edit, "Undo", self.undo, QKeySequence.StandardKey.Undo)
        self.redo_action = self._action(edit, "Redo", self.redo, "Ctrl+Shift+Z")
        edit.addSeparator()
        self._action(edit, "Set class of box…", self.set_class_dialog, "C")
        self._action(edit, "Delete box", self.delete_selected, QKeySequence.StandardKey.Delete)
        edit.addSeparator()
        self.mode_actions = {
            Mode.SELECT: self._action(edit, "Select / move boxes", lambda: self.set_mode(Mode.SELECT), "V", True),
            Mode.DRAW: self._action(edit, "Draw a new box", lambda: self.set_mode(Mode.DRAW), "D", True),
            Mode.BRUSH_ADD: self._action(edit, "Brush: add to mask", lambda: self.set_mode(Mode.BRUSH_ADD), "B", True),
            Mode.BRUSH_ERASE: self._action(edit, "Brush: erase from mask", lambda: self.set_mode(Mode.BRUSH_ERASE), "E", True),
        }
        self._action(edit, "Larger brush", lambda: self._scale_brush(1.25), "]")
        self._action(edit, "Smaller brush", lambda: self._scale_brush(0.8), "[")
        self.mode_actions[Mode.SELECT].setChecked(True)

        segment = bar.addMenu("&Segment")
        self._action(segment, "Segment selected box", self.segment_selected, "Space")
        self._action(segment, "Segment all boxes in image", self.segment_all, "Ctrl+Return")
        self._action(segment, "Segment all images", self.segment_all_images, "Ctrl+Shift+Return")
        self._action(segment, "Cancel", self.cancel_batch, "Escape")
        segment.addSeparator()
        self.accept_action = self._action(segment, "Accept result", self.accept_selected, "A")
        self.reject_action = self._action(segment, "Reject result", self.reject_selected, "R")
        self._action(segment, "Accept all results in image", self.accept_all, "Shift+A")
        self.accept_button.clicked.connect(self.accept_selected)
        self.reject_button.clicked.connect(self.reject_selected)
        segment.addSeparator()
        self._action(segment, "Compare tap subsets…", self.open_compare, "Ctrl+K")
        self.layers.compare_button.clicked.connect(self.open_compare)

        view = bar.addMenu("&View")
        self._action(view, "Fit image", self.view.fit, "F")
        self._action(view, "Next image", lambda: self._step_image(1), QKeySequence.StandardKey.MoveToNextPage)
        self._action(view, "Previous image", lambda: self._step_image(-1), QKeySequence.StandardKey.MoveToPreviousPage)
        view.addSeparator()
        for key, (text, box) in enumerate((("Figure-ground mask", self.display_panel.show_mask),
                                           ("Parts", self.display_panel.show_parts),
                                           ("Keypoints", self.display_panel.show_keypoints),
                                           ("Ground truth", self.display_panel.show_gt)), start=1):
            self._action(view, f"Show {text.lower()}", box.toggle, str(key))
        view.addSeparator()
        for dock in self.findChildren(QDockWidget):
            view.addAction(dock.toggleViewAction())

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.device_label = QLabel()
        self.timing_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(self.cancel_batch)
        status.addPermanentWidget(self.progress)
        status.addPermanentWidget(self.cancel_button)
        status.addPermanentWidget(self.timing_label)
        status.addPermanentWidget(self.device_label)

    def _connect_worker(self) -> None:
        worker = self.model.worker
        worker.modelLoaded.connect(self._model_loaded)
        worker.modelFailed.connect(self._model_failed)
        worker.predicted.connect(self._predicted)
        worker.compared.connect(self._compared)
        worker.failed.connect(self.show_message)
        worker.imageReady.connect(self._image_ready)
        worker.batchProgress.connect(self._batch_progress)
        worker.batchFinished.connect(self._batch_finished)
        self.loader.loader.loaded.connect(self._image_loaded)
        self.loader.loader.failed.connect(self._image_failed)

    def _restore_window(self) -> None:
        geometry, state = self.settings.geometry(), self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    # ------------------------------------------------------------------------------ messages
    def show_message(self, text: str, title: str = "hcviewer") -> None:
        """A non-modal message box: the app stays usable and tests never block on it."""
        self.messages.append(text)
        self.statusBar().showMessage(text, 10000)
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setModal(False)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.show()

    # ------------------------------------------------------------------------------ model
    def _model_loaded(self, info: ModelInfo) -> None:
        self.model_info = info
        startup = time.perf_counter() - self._load_started
        self.device_label.setText(f"Device: {info.device}")
        self.statusBar().showMessage(f"Model {Path(info.path).name} ready after {startup:.1f} s", 8000)
        if info.device_warning:
            self.show_message(info.device_warning, "Device")
        self.project.keypoint_names, self.project.skeleton = info.keypoint_names, info.skeleton
        self.layers.set_taps(info.taps)
        self.display_panel.set_tasks(info.tasks)
        self.display_panel.set_parts(info.part_names)
        if self.selected_id is not None and self.selected_id not in self.views:
            self.segment_selected()

    def _model_failed(self, message: str) -> None:
        self.device_label.setText("Model: not loaded")
        self.show_message(message, "Checkpoint")

    def _image_ready(self, key: str, seconds: float) -> None:
        if key == self.image_key:
            self.timing_label.setText(f"trunk {seconds * 1000:.0f} ms")

    # ------------------------------------------------------------------------------ opening
    def open_demo(self) -> None:
        """The scikit-image sample photos with the bundled demo boxes."""
        images = [p for p in demo_images() if p.exists()]
        if not images:
            self.show_message("The demo photos (scikit-image's data folder) are missing; open images with "
                              "File > Open images, or reinstall scikit-image.")
            return
        self.open_paths(images, boxes=DEMO_BOXES, remember=False)

    def open_paths(self, paths: list[str | os.PathLike], boxes: str | os.PathLike | None = None,
                   remember: bool = True) -> None:
        """Image files and folders (listed lazily: nothing is read until shown)."""
        files: list[Path] = []
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                files += sorted(p for p in path.iterdir() if is_image_file(p))
            elif path.exists():
                files.append(path)
            else:
                self.show_message(f"{path} does not exist; check the path.")
        if files:
            first = self.project.add_images(files)
            for raw in paths if remember else ():
                self._remember_recent(str(raw))
            if boxes is not None:
                self.open_boxes(boxes, remember=remember)
            self.show_image(first)
        elif boxes is not None:
            self.open_boxes(boxes, remember=remember)

    def open_boxes(self, path: str | os.PathLike, remember: bool = True) -> None:
        """Add a box file's boxes to the open images (with none open: the images it names)."""
        opened_images = bool(self.project.images)
        try:
            added = self.project.load_boxes(path)
        except (BoxFileError, OSError, ValueError) as exc:
            self.show_message(str(exc), "Box file")
            return
        if remember:
            self._remember_recent(str(path))
        self.statusBar().showMessage(f"{added} boxes from {Path(path).name}", 8000)
        if not opened_images and self.project.images:
            self.show_image(0)

    def open_images_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open images", self.settings.last_folder(),
                                                "Images (*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp)")
        if files:
            self.settings.set_last_folder(str(Path(files[0]).parent))
            self.open_paths(files)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images", self.settings.last_folder())
        if folder:
            self.settings.set_last_folder(folder)
            self.open_paths([folder])

    def open_boxes_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open boxes", self.settings.last_folder(),
                                              "Boxes (*.json *.xml *.csv)")
        if path:
            self.open_boxes(path)

    def _open_recent(self, path: str) -> None:
        if path.lower().endswith((".json", ".xml", ".csv")):
            self.open_boxes(path)
        else:
            self.open_paths([path])

    def _remember_recent(self, path: str) -> None:
        self.settings.add_recent(str(Path(path).resolve()))
        self._fill_recent_menu()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_files()
        for path in recent:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _=False, p=path: self._open_recent(p))
        self.recent_menu.setEnabled(bool(recent))

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt naming
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt naming
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        box_files = [p for p in paths if p.lower().endswith((".json", ".xml", ".csv"))]
        images = [p for p in paths if p not in box_files]
        self.open_paths(images, boxes=box_files[0] if box_files else None)
        event.acceptProposedAction()

    # ------------------------------------------------------------------------------ images
    def _file_row(self, row: int) -> tuple[str, str, str]:
        image = self.project.images[row]
        return Path(image.path).name, str(image.path), image.status

    def _step_image(self, step: int) -> None:
        if self.project.images:
            current = -1 if self.image_index is None else self.image_index
            self.show_image(min(max(current + step, 0), len(self.project.images) - 1))

    def show_image(self, index: int) -> None:
        """Show image ``index``: decoded in the loader thread; its boxes appear at once."""
        if not 0 <= index < len(self.project.images):
            return
        self._forget_shown_image()
        self.image_index = index
        self.image_key = f"{index}:{time.monotonic_ns()}"
        self.file_list.setCurrentIndex(self.file_model.index(index))
        image = self.project.images[index]
        self.setWindowTitle(f"hcviewer — {Path(image.path).name}")
        self.loader.load(self.image_key, str(image.path))

    def _forget_shown_image(self) -> None:
        self.image_index = None
        self.image_key = ""  # answers still on their way are for no image now
        self.model.forget_image()
        self.image = None
        self.view.set_image(None)
        self._clear_results()
        self.selected_id = None

    def _image_loaded(self, key: str, rgb: np.ndarray) -> None:
        if key != self.image_key:
            return
        self.image = rgb
        self.view.set_image(rgb)
        self.project.image_loaded(self.image_index, rgb.shape[:2])
        self.model.show_image(key, rgb)
        self._sync_boxes()
        if any(b.result is not None for b in self.current_document().boxes):
            self.segment_all()  # results of "segment all images": redrawn from this image's features

    def _image_failed(self, key: str, message: str) -> None:
        if key != self.image_key:
            return
        self.project.image_failed(self.image_index, message)
        self.file_model.refresh(self.image_index)
        self.show_message(message, "Image")

    def current_document(self):
        return None if self.image_index is None else self.project.images[self.image_index]

    # ------------------------------------------------------------------------------ boxes
    def _visible_boxes(self) -> dict[int, object]:
        document = self.current_document()
        if document is None or self.image is None:
            return {}
        min_score = self.display_panel.score.value() / 100
        return {box.id: box for box in document.boxes if box.score is None or box.score >= min_score}

    def _sync_boxes(self) -> None:
        """Make the drawn boxes and overlays match the document (after any change)."""
        boxes = self._visible_boxes()
        for box_id in [i for i in self.box_items if i not in boxes]:
            self.view.viewbox.removeItem(self.box_items.pop(box_id))
            self._drop_result(box_id)
        for box_id, box in boxes.items():
            item = self.box_items.get(box_id)
            if item is None:
                item = BoxItem(box_id, box.xyxy, "")
                item.selected.connect(self.select_box)
                item.edited.connect(self._box_edited)
                self.view.viewbox.addItem(item)
                self.box_items[box_id] = item
            elif not np.allclose(item.xyxy(), box.xyxy):
                item.set_box(box.xyxy)
                self._drop_result(box_id)  # the box moved (undo/redo): its result is stale
            item.set_state(box_id == self.selected_id, box.mask is not None, self._box_label(box))
        for box_id, box in boxes.items():
            if box_id not in self.views and box.result is not None and box.result.view is not None:
                self.views[box_id] = box.result.view  # redo (or undo of a move) brings a result back
        if self.selected_id not in boxes:
            self.selected_id = None
        self._draw_annotation()
        self._draw_results()
        self._update_result_panel()
        if self.image_index is not None:
            self.file_model.refresh(self.image_index)

    @staticmethod
    def _box_label(box) -> str:
        score = "" if box.score is None else f" {box.score:.2f}"
        return f"{box.label}{score}"

    def select_box(self, box_id: int) -> None:
        if box_id == self.selected_id:
            return
        self.selected_id = box_id
        self._sync_boxes()
        view = self.views.get(box_id)
        if view is None or view.taps != self._taps() or not view.contributions:
            self.segment_selected()  # "segment all" results lack the probe's per-tap contributions

    def _box_edited(self, box_id: int, xyxy: np.ndarray) -> None:
        document = self.current_document()
        box = next((b for b in document.boxes if b.id == box_id), None)
        if box is None or np.allclose(box.xyxy, xyxy):
            return
        self.project.move_box(self.image_index, box_id, xyxy)
        if box_id == self.selected_id:
            self.segment_selected()

    def _box_drawn(self, xyxy: np.ndarray) -> None:
        if self.image is None:
            return
        h, w = self.image.shape[:2]
        xyxy = np.clip(xyxy, 0, [w, h, w, h])
        label = self.model_info.class_names[0] if self.model_info else "object"
        box_id = self.project.add_box(self.image_index, xyxy, label)
        self.set_mode(Mode.SELECT)
        self.select_box(box_id)

    def delete_selected(self) -> None:
        if self.selected_id is not None:
            self.project.delete_box(self.image_index, self.selected_id)

    def set_class_dialog(self) -> None:
        if self.selected_id is None:
            return
        names = list(self.model_info.class_names) if self.model_info else []
        box = next(b for b in self.current_document().boxes if b.id == self.selected_id)
        if box.label not in names:
            names.insert(0, box.label)
        label, ok = QInputDialog.getItem(self, "Class", "Class of the box:", names, names.index(box.label), True)
        if ok and label.strip():
            self.project.set_label(self.image_index, self.selected_id, label.strip())

    def set_mode(self, mode: Mode) -> None:
        if mode in (Mode.BRUSH_ADD, Mode.BRUSH_ERASE) and self._editable_mask() is None:
            self.statusBar().showMessage("Select a segmented box to paint its mask.", 5000)
            mode = Mode.SELECT
        for key, action in self.mode_actions.items():
            action.setChecked(key == mode)
        self.view.set_mode(mode)
        for item in self.box_items.values():
            item.translatable = mode == Mode.SELECT  # boxes stay put while drawing or painting

    def _scale_brush(self, factor: float) -> None:
        self.view.brush_radius = float(np.clip(self.view.brush_radius * factor, 1, 500))
        self.statusBar().showMessage(f"Brush radius {self.view.brush_radius:.0f} px", 3000)

    # ------------------------------------------------------------------------------ segmenting
    def _taps(self) -> tuple[str, ...]:
        if self.model_info is None:
            return ()
        return self.layers.checked() or self.model_info.taps

    def _ready_for_model(self) -> bool:
        if self.image is None:
            return False
        if self.model_info is None:
            self.statusBar().showMessage("The model is still loading; boxes are segmented when it is ready.", 5000)
            return False
        return True

    def _request(self, boxes: list, contributions: bool) -> None:
        self.model.predict(BoxRequest(
            self.image_key, [b.id for b in boxes], np.array([b.xyxy for b in boxes], np.float64),
            taps=self._taps(), class_index=self._class_index(boxes), contributions=contributions))
        self.result_label.setText("Segmenting…")

    def _class_index(self, boxes: list) -> list[int] | None:
        if self.model_info is None or not self.model_info.class_specific:
            return None
        names = self.model_info.class_names
        return [names.index(b.label) if b.label in names else 0 for b in boxes]

    def segment_selected(self) -> None:
        box = self._selected_box()
        if box is not None and self._ready_for_model():
            self._request([box], contributions=True)

    def segment_all(self) -> None:
        boxes = list(self._visible_boxes().values())
        if boxes and self._ready_for_model():
            self._request(boxes, contributions=False)

    def _predicted(self, result: BoxResult) -> None:
        request = result.request
        if request.image_key != self.image_key:
            return  # an answer for an image no longer shown
        boxes = self._visible_boxes()
        all_taps = self.model_info is not None and tuple(request.taps or ()) == self.model_info.taps
        results = {}
        for i, box_id in enumerate(request.box_ids):
            box = boxes.get(box_id)
            if box is None or not np.allclose(box.xyxy, request.boxes[i]):
                continue  # deleted or moved since the request: a newer request follows
            view = BoxView.from_prediction(result.prediction, i)
            if view.contributions or box_id not in self.views or self.views[box_id].taps != view.taps:
                self.views[box_id] = view
            if all_taps:
                results[box_id] = ModelResult(figure_ground=view.figure_ground, keypoints=view.keypoints, view=view)
        seconds = result.prediction.seconds + result.trunk_seconds
        self.timing_label.setText(f"last prediction {seconds * 1000:.0f} ms ({len(request.box_ids)} boxes)")
        if results:
            self.project.set_results(self.image_index, results)  # its listener redraws, once for all boxes
        else:
            self._sync_boxes()

    def _drop_result(self, box_id: int) -> None:
        self.views.pop(box_id, None)
        overlay = self.overlays.pop(box_id, None)
        if overlay is not None:
            overlay.remove()

    def _clear_results(self) -> None:
        for box_id in list(self.box_items):
            self.view.viewbox.removeItem(self.box_items.pop(box_id))
        for box_id in list(self.views) + list(self.overlays):
            self._drop_result(box_id)
        self.annotation_item.clear()
        self.result_layer.clear()
        self.gt_curve.setData([], [])
        self._probe_left()

    def _draw_results(self) -> None:
        """The selected box's result in its own overlay (with its keypoint heatmap); every other
        box's in the one composite layer (a few items however many boxes: repaints stay short)."""
        skeleton = self.model_info.skeleton if self.model_info else ()
        selected = self.views.get(self.selected_id) if self.selected_id is not None else None
        for box_id in [i for i in self.overlays if selected is None or i != self.selected_id]:
            self.overlays.pop(box_id).remove()
        if selected is not None:
            overlay = self.overlays.get(self.selected_id)
            if overlay is None:
                overlay = self.overlays[self.selected_id] = BoxOverlay(self.view.viewbox)
            overlay.show(selected.box, selected.figure_ground, selected.parts, selected.keypoint_heatmaps,
                         selected.keypoints, skeleton, self.display)
        self._draw_result_layer(skeleton)

    def _draw_result_layer(self, skeleton: tuple[tuple[int, int], ...]) -> None:
        boxes = self._visible_boxes()
        entries, key = [], [self.image_key, self.display.key(), skeleton]
        for box_id, view in self.views.items():
            if box_id == self.selected_id or box_id not in boxes:
                continue
            # An accepted mask is drawn by the annotation layer; the model's mask would hide edits.
            accepted = boxes[box_id].accepted
            entries.append(LayerEntry(view.box, None if accepted else view.figure_ground,
                                      None if accepted else view.parts, view.keypoints))
            key.append((box_id, id(view), accepted))
        if tuple(key) == self.result_layer.key:
            return  # drawn already
        if not entries or self.image is None:
            self.result_layer.clear()
            return
        shape = self.image.shape[:2]
        self.result_layer.show(compose(entries, shape, skeleton, self.display), shape)
        self.result_layer.key = tuple(key)

    def _draw_annotation(self) -> None:
        """Accepted masks (the annotation) in green; ground truth outlines when asked for."""
        boxes = self._visible_boxes().values()
        masks = [b.mask for b in boxes if b.mask is not None]
        if masks and self.image is not None:
            union = np.logical_or.reduce(masks)
            self.annotation_item.setImage(mask_rgba(union, ACCEPTED_COLOR, self.display.opacity), levels=(0, 255))
            self.annotation_item.setVisible(True)
        else:
            self.annotation_item.setVisible(False)
        gts = [b.gt_mask for b in boxes if b.gt_mask is not None] if self.display.show_gt else []
        if gts:
            self.gt_curve.setData(*full_mask_outline_xy(np.logical_or.reduce(gts)))
        else:
            self.gt_curve.setData([], [])

    def _display_changed(self) -> None:
        self.settings.save_display(self.display)
        self._draw_annotation()
        self._draw_results()

    def _taps_changed(self, taps: tuple[str, ...]) -> None:
        """Re-render the selected box with this tap subset from the cached features."""
        self.segment_selected()
        if self.compare_window is not None and self.compare_window.isVisible():
            self.refresh_compare()

    def _selected_box(self):
        return self._visible_boxes().get(self.selected_id) if self.selected_id is not None else None

    def _update_result_panel(self) -> None:
        box = self._selected_box()
        view = self.views.get(self.selected_id) if box is not None else None
        self.accept_button.setEnabled(view is not None and view.figure_ground is not None)
        self.reject_button.setEnabled(box is not None and (view is not None or box.mask is not None))
        if box is None:
            self.result_label.setText("Click a box to segment it; D draws a new box.")
            return
        state = "accepted" if box.mask is not None else "segmented" if view is not None else "not segmented"
        taps = "" if view is None else f" — taps {'+'.join(view.taps)}"
        area = f", mask {int(box.mask.sum())} px" if box.mask is not None else ""
        iou = ""
        if box.gt_mask is not None and view is not None and view.figure_ground is not None:
            iou = f"<br>IoU vs ground truth: {box_mask_iou(view.figure_ground, view.box, box.gt_mask, self.display.threshold):.2f}"
        self.result_label.setText(f"<b>{box.label}</b> box {box.id}: {state}{taps}{area}{iou}")

    # ------------------------------------------------------------------------------ editing
    def _result_mask(self, box_id: int) -> np.ndarray | None:
        """The shown model result for a box as a bool [H, W] image mask."""
        view = self.views.get(box_id)
        if view is None or view.figure_ground is None or self.image is None:
            return None
        return paste_box_map(view.figure_ground, view.box, self.image.shape[:2]) >= self.display.threshold

    def accept_selected(self) -> None:
        mask = self._result_mask(self.selected_id) if self.selected_id is not None else None
        if mask is not None:
            self.project.accept(self.image_index, self.selected_id, mask)

    def accept_all(self) -> None:
        """Accept every shown, not yet accepted result of this image (one undo step)."""
        boxes = self._visible_boxes()
        masks = {box_id: self._result_mask(box_id) for box_id, box in boxes.items() if box.mask is None}
        self.project.accept_many(self.image_index, {i: m for i, m in masks.items() if m is not None})

    def reject_selected(self) -> None:
        if self._selected_box() is None:
            return
        self.project.reject(self.image_index, self.selected_id)
        self._drop_result(self.selected_id)
        self._sync_boxes()

    def _editable_mask(self) -> np.ndarray | None:
        box = self._selected_box()
        if box is None:
            return None
        return box.mask if box.mask is not None else self._result_mask(box.id)

    def _stroke_started(self) -> None:
        self._stroke = []
        add = self.view.viewbox.mode == Mode.BRUSH_ADD
        pen = pg.mkPen((*(ACCEPTED_COLOR if add else (255, 60, 60)), 150), width=2 * self.view.brush_radius)
        pen.setCosmetic(False)  # width in image pixels, like the brush
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
        self.stroke_curve.setPen(pen)
        self.stroke_curve.setVisible(True)

    def _stroke_point(self, x: float, y: float) -> None:
        self._stroke.append((x, y))
        points = np.array(self._stroke)
        self.stroke_curve.setData(points[:, 0], points[:, 1])

    def _stroke_finished(self) -> None:
        self.stroke_curve.setVisible(False)
        mask = self._editable_mask()
        if mask is None or not self._stroke:
            return
        painted = paint_stroke(mask, self._stroke, self.view.brush_radius,
                               add=self.view.viewbox.mode == Mode.BRUSH_ADD)
        self._stroke = []
        self.project.accept(self.image_index, self.selected_id, painted)

    def undo(self) -> None:
        self.project.undo()

    def redo(self) -> None:
        self.project.redo()

    def _document_changed(self, change: Change) -> None:
        if change.kind == "reset":  # another annotation or a recovered one: nothing shown is valid
            self._forget_shown_image()
        document = self.current_document()
        if change.kind in ("undo", "redo") and document is not None and self.model_info is not None:
            for box in document.boxes:  # an undone model result disappears from the view too
                view = self.views.get(box.id)
                if box.result is None and view is not None and view.taps == self.model_info.taps:
                    self._drop_result(box.id)
        if change.indices is None:
            self.file_model.refresh()
        for index in change.indices or ():
            self.file_model.refresh(index)
        if change.kind != "images":
            self._sync_boxes()
        undo, redo = self.project.undo_name(), self.project.redo_name()
        self.undo_action.setEnabled(undo is not None)
        self.undo_action.setText(f"Undo {undo}" if undo else "Undo")
        self.redo_action.setEnabled(redo is not None)
        self.redo_action.setText(f"Redo {redo}" if redo else "Redo")

    # ------------------------------------------------------------------------------ inspecting
    def open_compare(self) -> None:
        if self.compare_window is None:
            self.compare_window = CompareWindow(self)
            self.compare_window.refreshRequested.connect(self.refresh_compare)
        self.compare_window.show()
        self.compare_window.raise_()
        self.refresh_compare()

    def refresh_compare(self) -> None:
        box = self._selected_box()
        if box is None or not self._ready_for_model():
            self.compare_window.caption.setText("Select a box first (and wait for the model to load).")
            return
        _, clipped = crop_box(self.image, box.xyxy)  # compare over the visible part of the box
        taps = self.model_info.taps
        checked = self._taps()
        subsets = standard_subsets(taps, custom=checked if checked != taps else None)
        self.compare_window.caption.setText(f"{box.label} box {box.id}: computing {len(subsets)} subsets…")
        self.model.compare(CompareRequest(self.image_key, box.id, np.array(clipped, np.float64), subsets,
                                          gt_mask=box.gt_mask, class_index=(self._class_index([box]) or [None])[0]))

    def _compared(self, result) -> None:
        request = result.request
        if request.image_key != self.image_key or self.compare_window is None or self.image is None:
            return
        crop, clipped = crop_box(self.image, request.box)
        gt_crop = None
        if request.gt_mask is not None:
            x0, y0, x1, y1 = clipped
            gt = request.gt_mask[y0:y1, x0:x1].astype(np.uint8)
            gt_crop = cv2.resize(gt, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        self.compare_window.panel.show_result(crop, request.box, result.masks, result.iou,
                                              self.display.threshold, gt_crop)
        gt_note = "IoU against the ground-truth mask" if request.gt_mask is not None else "no ground truth for this box"
        self.compare_window.caption.setText(
            f"Box {request.box_id}: {len(result.masks)} tap subsets from cached features in "
            f"{result.seconds * 1000:.0f} ms; {gt_note}")

    def _hovered(self, x: float, y: float) -> None:
        view = self.views.get(self.selected_id) if self.selected_id is not None else None
        if view is None or not view.contributions:
            return
        values = {tap: sample_box_map(c, view.box, x, y) for tap, c in view.contributions.items()}
        if any(v is None for v in values.values()):
            self._probe_left()
            self.probe.clear("Probe: move the pointer inside the selected box")
            return
        self.probe_marker.setData([x], [y])  # the probed pixel (also seen in screenshots)
        self.probe.show_pixel(values, view.bias, view.taps, f"at ({x:.0f}, {y:.0f})")

    def _probe_left(self) -> None:
        self.probe_marker.setData([], [])
        self.probe.clear()

    # ------------------------------------------------------------------------------ batch
    def segment_all_images(self) -> None:
        if self.model_info is None:
            self.show_message("The model is still loading; try again when the status bar names the device.")
            return
        items = self.project.batch_items(min_score=self.display_panel.score.value() / 100)
        if not items:
            self.show_message("No image has boxes to segment; open a box file first.")
            return
        self.progress.setRange(0, len(items))
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.model.predict_all(items)

    def cancel_batch(self) -> None:
        if self.progress.isVisible():
            self.model.cancel()
            self.statusBar().showMessage("Cancelling after the current image…", 5000)
        elif self.view.viewbox.mode != Mode.SELECT:
            self.set_mode(Mode.SELECT)

    def _batch_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _batch_finished(self, batch) -> None:
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        count = self.project.apply_batch_results(batch.results)
        verb = "Cancelled after" if batch.cancelled else "Segmented"
        self.statusBar().showMessage(f"{verb} {count} images in {batch.seconds:.1f} s", 10000)
        errors = [r.error for r in batch.results if r.error is not None]
        if errors:
            self.show_message(f"{len(errors)} images could not be segmented; first: {errors[0]}", "Segment all images")
        if self.image is not None and any(b.result is not None for b in self.current_document().boxes):
            self.segment_all()

    # ------------------------------------------------------------------------------ saving
    def save_annotation(self) -> bool:
        path = self.project.annotation_path
        return self._save_to(path) if path else self.save_annotation_as()

    def save_annotation_as(self) -> bool:
        path, _ = QFileDialog.getSaveFileName(self, "Save annotation", self.settings.last_folder(),
                                              "COCO annotation (*.json)")
        return bool(path) and self._save_to(path)

    def _save_to(self, path: str | os.PathLike) -> bool:
        try:
            written = self.project.save_annotation(path)
        except OSError as exc:  # AnnotationWriteError names the file and keeps the previous one
            self.show_message(str(exc), "Save")
            return False
        self._remember_recent(str(path))
        self.statusBar().showMessage(f"Saved {written}", 8000)
        return True

    def open_annotation_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open annotation", self.settings.last_folder(),
                                              "COCO annotation (*.json)")
        if path:
            self.open_annotation(path)

    def open_annotation(self, path: str | os.PathLike) -> None:
        try:
            self.project.load_annotation(path)
        except (BoxFileError, OSError, ValueError) as exc:
            self.show_message(str(exc), "Annotation")
            return
        self.file_model.refresh()
        if self.project.images:
            self.show_image(0)

    def _autosave(self) -> None:
        try:
            self.project.autosave()
        except OSError as exc:
            if not self._autosave_failed:  # said once, not every few seconds
                self._autosave_failed = True
                self.show_message(f"Autosave failed: {exc}", "Autosave")

    def offer_recovery(self) -> None:
        """After a crash the autosave file is still there: offer to restore it."""
        recovery = self.project.recovery_file()
        if recovery is None:
            return
        answer = QMessageBox.question(
            self, "Recover unsaved work",
            f"hcviewer did not close cleanly last time. Restore the unsaved annotation from {recovery}?")
        if answer == QMessageBox.StandardButton.Yes:
            try:
                self.project.recover(recovery)
            except (OSError, ValueError) as exc:
                self.show_message(str(exc), "Recover")
                return
            if self.project.images:
                self.show_image(0)
        else:
            self.project.discard_recovery(recovery)

    def _confirm_close(self) -> bool:
        """Unsaved edits: save, discard or stay (the recovery file is deleted on a clean exit)."""
        if not (self.ask_to_save and self.project.modified):
            return True
        buttons = QMessageBox.StandardButton
        answer = QMessageBox.question(self, "Unsaved annotation", "Save the annotation before closing?",
                                      buttons.Save | buttons.Discard | buttons.Cancel, buttons.Save)
        if answer == buttons.Save:
            return self.save_annotation()
        return answer == buttons.Discard

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        if not self._confirm_close():
            event.ignore()
            return
        self.autosave_timer.stop()
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.save_display(self.display)
        if self.compare_window is not None:
            self.compare_window.close()
        self.model.shutdown()
        self.loader.shutdown()
        self.project.close()  # a clean exit removes the recovery file
        super().closeEvent(event)


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


def run_app(args: argparse.Namespace) -> int:
    """Open the window at once; the checkpoint loads in the worker thread meanwhile.

    ``args``: paths (images or folders), boxes, checkpoint, device; neither paths nor boxes
    opens the demo."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("hcviewer")
    app.setApplicationName("hcviewer")
    checkpoint = args.checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.exists() else None)
    window = MainWindow(checkpoint, device=args.device or "auto")
    window.show()
    if args.paths:
        window.open_paths(args.paths, boxes=args.boxes)
    elif args.boxes:
        window.open_boxes(args.boxes)  # with no images open: the images it names, from its folder
    else:
        window.open_demo()
    if checkpoint is None:
        window.show_message(f"No checkpoint: {DEFAULT_CHECKPOINT} is missing and --checkpoint was not given. "
                            "Boxes can be drawn and annotated by hand; pass --checkpoint FILE to segment.")
    return app.exec()
