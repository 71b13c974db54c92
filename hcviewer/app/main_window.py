"""The main window: views over the project document (napari-style). The window lays out the
widgets and composes the controllers that give them behaviour (``hcviewer.app.controllers``):
opening files, saving, segmenting, annotating and drawing; they share one ``ViewerState``. Model
work goes to the worker thread; images are decoded in the loader thread. Nothing here imports
torch: the window is up before the model has loaded."""

from __future__ import annotations

import argparse
import os
import sys

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QApplication, QDockWidget, QHBoxLayout, QLabel, QListView, QMainWindow, QMessageBox, QProgressBar,
    QPushButton, QScrollArea, QVBoxLayout, QWidget,
)

from hcviewer.annotation.document import ImageDocument, Project
from hcviewer.app.busy import BusyIndicator
from hcviewer.app.controllers.annotation import AnnotationController
from hcviewer.app.controllers.canvas import CanvasController
from hcviewer.app.controllers.clicks import ClickController
from hcviewer.app.controllers.exporting import ExportController
from hcviewer.app.controllers.files import FileController
from hcviewer.app.controllers.saving import SavingController
from hcviewer.app.controllers.segmentation import SegmentationController
from hcviewer.app.defaults import DEFAULT_CHECKPOINT
from hcviewer.app.file_list import FileListModel
from hcviewer.app.gui_gc import dispose, install_gui_gc
from hcviewer.app.image_loader import ImageLoaderService, readable
from hcviewer.app.image_view import ImageView
from hcviewer.app.interrupt import quit_on_interrupt
from hcviewer.app.layers_panel import DisplayPanel, LayersPanel, Notice, scroll_past_value_widgets
from hcviewer.app.menus import build_menus
from hcviewer.app.overlays import DisplaySettings
from hcviewer.app.probe import ProbeWidget
from hcviewer.app.settings import AppSettings
from hcviewer.app.viewer_state import ViewerState
from hcviewer.app.worker import ModelService


DEFAULT_SIZE = (1400, 900)  # the first window size where the screen has room
SCREEN_SHARE = 0.9  # at most this share of the available screen, on a first start


class MainWindow(QMainWindow):
    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str = "auto",
                 settings: AppSettings | None = None, offer_recovery: bool = True, mirror: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("hcviewer")
        self.setAcceptDrops(True)
        self.settings = settings or AppSettings()
        self.display = DisplaySettings()
        self.settings.load_display(self.display)
        self.project = Project()
        self.state = ViewerState()
        self.ask_to_save = True  # on close with unsaved edits (tests turn it off)
        self.model = ModelService(self)
        self.loader = ImageLoaderService(self)
        self.messages: list[str] = []  # every message shown to the user (tests read it)
        self.shortcuts_dialog: QWidget | None = None  # Help > Keyboard shortcuts, made when first asked

        self.view = ImageView()
        self.setCentralWidget(self.view)
        self._build_docks()
        self._build_status_bar()
        self.canvas = CanvasController(self)
        self.files = FileController(self)
        self.saving = SavingController(self)
        self.exporting = ExportController(self)
        self.segmentation = SegmentationController(self)
        self.annotation = AnnotationController(self)
        self.clicks = ClickController(self)
        self.busy.watch_model(self.model.worker)
        self.display_panel.changed.connect(self.canvas.display_changed)
        # The boxes' outlines too take the accepted colours at once (after the panel's own handler).
        self.display_panel.color_by.currentIndexChanged.connect(lambda _: self.canvas.sync_boxes())
        self.display_panel.scoreThresholdChanged.connect(lambda _: self.state.changed("score"))
        build_menus(self)
        self._restore_window()
        self.checkpoint = str(checkpoint) if checkpoint else None
        self.device = device  # where models opened later run too
        self.mirror = mirror  # and whether they average with the mirror image
        if self.checkpoint:
            self.segmentation.open_model(self.checkpoint)
        else:
            self.device_label.setText("No checkpoint: boxes and annotation only")
            self.layers.no_model()
        if offer_recovery:
            QTimer.singleShot(0, self.saving.offer_recovery)

    # ------------------------------------------------------------------------------ layout
    def _build_docks(self) -> None:
        self.file_model = FileListModel(lambda: len(self.project.images), lambda row: self.files.file_row(row))
        self.file_list = QListView()
        self.file_list.setModel(self.file_model)
        self.file_list.setUniformItemSizes(True)  # thousands of rows: no per-row size queries
        self.file_list.clicked.connect(lambda index: self.files.show_image(index.row()))
        self._dock("Images", self.file_list, Qt.DockWidgetArea.LeftDockWidgetArea)

        side = QWidget()
        layout = QVBoxLayout(side)
        self.notice = Notice()
        layout.addWidget(self.notice)
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
        layout.addWidget(self.layers)
        self.display_panel = DisplayPanel(self.display)
        layout.addWidget(self.display_panel)
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(side)
        scroll_past_value_widgets(scroll)
        # The panel is never narrower than its contents: nothing is cut or hidden to the right.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(side.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()
                               + 2 * scroll.frameWidth())
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

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.device_label = QLabel()
        self.timing_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(lambda: self.segmentation.cancel_batch())
        status.addPermanentWidget(self.progress)
        status.addPermanentWidget(self.cancel_button)
        status.addPermanentWidget(self.timing_label)
        status.addPermanentWidget(self.device_label)
        self.busy = BusyIndicator(status)

    def _restore_window(self) -> None:
        geometry, state = self.settings.geometry(), self.settings.window_state()
        if geometry is None or not self.restoreGeometry(geometry):
            self._fit_to_screen()
        if state is not None:
            self.restoreState(state)

    def _fit_to_screen(self) -> None:
        """First start: the default size, or less to fit the screen's available area (with a high
        DPI scale factor the screen is smaller in window units), centred on it."""
        available = self.screen().availableGeometry()
        width, height = DEFAULT_SIZE
        self.resize(min(width, round(available.width() * SCREEN_SHARE)),
                    min(height, round(available.height() * SCREEN_SHARE)))
        frame = self.frameGeometry()
        frame.moveCenter(available.center())
        self.move(frame.topLeft())

    # ------------------------------------------------------------------------------ shared
    def show_message(self, text: str, title: str = "hcviewer") -> None:
        """A non-modal message box: the app stays usable and tests never block on it."""
        text = readable(text)  # a file name that is not UTF-8 is shown, not dropped
        self.messages.append(text)
        self.statusBar().showMessage(text, 10000)
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setModal(False)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)  # the keyboard stays with the window
        box.show()

    def show_notice(self, text: str) -> None:
        """A warning in the right panel (and the status bar) that leaves the keyboard focus and the
        shortcuts with the window: for what the user fixes in the window itself."""
        text = readable(text)
        self.messages.append(text)
        self.statusBar().showMessage(text.splitlines()[0], 10000)
        self.notice.show_text(text)

    def current_document(self) -> ImageDocument | None:
        """The shown image's document (None when no image is shown)."""
        index = self.state.image_index
        return None if index is None else self.project.images[index]

    # ------------------------------------------------------------------------------ Qt events
    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt naming
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt naming
        self.files.open_dropped([url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()])
        event.acceptProposedAction()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        if not self.saving.confirm_close():
            event.ignore()
            return
        self.settings.save_window(self.saveGeometry(), self.saveState())
        self.settings.save_display(self.display)
        self.busy.clear()  # the application's cursor is not left busy
        self.segmentation.close_compare()
        self.model.shutdown()
        self.loader.shutdown()
        self.annotation.jobs.shutdown()
        self.clicks.jobs.shutdown()
        self.saving.stop()  # a clean exit removes the recovery file
        super().closeEvent(event)


def run_app(args: argparse.Namespace) -> int:
    """Open the window at once; the checkpoint loads in the worker thread meanwhile.

    ``args``: paths (images or folders), boxes, checkpoint, device, mirror; neither paths nor
    boxes opens the demo."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("hcviewer")
    app.setApplicationName("hcviewer")
    install_gui_gc(app)  # Qt objects die on the GUI thread only (see gui_gc)
    checkpoint = args.checkpoint or (DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.exists() else None)
    window = MainWindow(checkpoint, device=args.device or "auto", mirror=args.mirror)
    window.show()
    quit_on_interrupt(window)  # Ctrl+C in the terminal closes the window as its close button does
    if args.paths:
        window.files.open_paths(args.paths, boxes=args.boxes)
    elif args.boxes:
        window.files.open_boxes(args.boxes)  # with no images open: the images it names, from its folder
    else:
        window.files.open_demo()
    if checkpoint is None:
        window.show_message(f"No checkpoint: {DEFAULT_CHECKPOINT} is missing and --checkpoint was not given. "
                            "Boxes can be drawn and annotated by hand; pass --checkpoint FILE to segment.")
    status = app.exec()
    dispose(window)  # deleted here, on the GUI thread, not in some later collection or at exit
    return status
