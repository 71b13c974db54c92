"""The compare view: one box under several tap subsets side by side, each titled with its IoU
against the ground-truth mask when the box has one."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from hcviewer.app.overlays import GT_COLOR, MASK_COLOR, mask_rgba, outline_xy, display_shape


def standard_subsets(taps: tuple[str, ...], custom: tuple[str, ...] | None = None) -> dict[str, tuple[str, ...]]:
    """All taps, the top tap alone, each tap left out, and the user's current selection."""
    subsets = {"all taps": tuple(taps)}
    if len(taps) > 1:
        subsets[f"{taps[-1]} alone"] = (taps[-1],)
        for tap in taps:
            subsets[f"without {tap}"] = tuple(t for t in taps if t != tap)
    if custom and tuple(custom) not in subsets.values():
        subsets["custom: " + "+".join(custom)] = tuple(custom)
    return subsets


class ComparePanel(pg.GraphicsLayoutWidget):
    """A grid of small views; each shows the box crop with one subset's mask and outline."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground((40, 40, 40))
        self.titles: dict[str, str] = {}

    def show_result(self, crop: np.ndarray, masks: dict[str, np.ndarray], iou: dict[str, float | None],
                    gt_crop: np.ndarray | None) -> None:
        """crop: the image under the box, uint8 [h, w, 3]; masks: name -> bool [h, w], the mask
        each IoU scores; gt_crop: bool [h, w] ground truth under the box or None."""
        self.clear()
        self.titles = {}
        columns = min(4, max(1, len(masks)))
        local_box = np.array([0.0, 0.0, crop.shape[1], crop.shape[0]])
        for i, (name, mask) in enumerate(masks.items()):
            title = name if iou.get(name) is None else f"{name}  IoU {iou[name]:.2f}"
            self.titles[name] = title
            view = self.addViewBox(row=2 * (i // columns) + 1, col=i % columns, lockAspect=True,
                                   invertY=True, enableMenu=False)
            self.addLabel(title, row=2 * (i // columns), col=i % columns, color="w", size="10pt")
            view.addItem(pg.ImageItem(crop, levels=(0, 255)))
            overlay = pg.ImageItem(mask_rgba(mask, MASK_COLOR, 0.45), levels=(0, 255))
            view.addItem(overlay)
            view.addItem(pg.PlotCurveItem(*outline_xy(mask, local_box), pen=pg.mkPen(MASK_COLOR, width=2),
                                          connect="finite"))
            if gt_crop is not None:
                view.addItem(pg.PlotCurveItem(*outline_xy(gt_crop, local_box),
                                              pen=pg.mkPen(GT_COLOR, width=2, style=Qt.PenStyle.DashLine),
                                              connect="finite"))
            view.setRange(QRectF(0, 0, crop.shape[1], crop.shape[0]), padding=0.02)


class CompareWindow(QWidget):
    """A separate window around ``ComparePanel`` with a refresh button (uses the current
    layer selection as the custom subset)."""

    refreshRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("hcviewer: compare tap subsets")
        self.resize(1000, 620)
        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        self.caption = QLabel("Select a box and press Compare.")
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refreshRequested)
        top.addWidget(self.caption, 1)
        top.addWidget(refresh)
        layout.addLayout(top)
        self.panel = ComparePanel()
        layout.addWidget(self.panel, 1)
        legend = QLabel("<span style='color:#1e90ff'>■</span> prediction (mask threshold from the Display panel)"
                        " &nbsp; <span style='color:#ff8c00'>- -</span> ground truth")
        layout.addWidget(legend)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # Escape closes it, as it closes a dialog
        if event.key() == Qt.Key.Key_Escape:
            self.close()
        else:
            super().keyPressEvent(event)


def place_over(window: QWidget, parent: QWidget) -> None:
    """Centre ``window`` over ``parent`` (inside the screen's available area, smaller if need be)."""
    available = (parent.screen() or window.screen()).availableGeometry()
    window.resize(min(window.width(), available.width()), min(window.height(), available.height()))
    frame = window.frameGeometry()
    frame.moveCenter(parent.frameGeometry().center())
    frame.moveLeft(max(available.left(), min(frame.left(), available.right() - frame.width() + 1)))
    frame.moveTop(max(available.top(), min(frame.top(), available.bottom() - frame.height() + 1)))
    window.move(frame.topLeft())


def crop_box(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The image pixels under a box (clipped to the image), resized to at most the display
    size; returns the crop and its integer (x0, y0, x1, y1)."""
    h, w = image.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    crop = image[y0:y1, x0:x1]
    shape = display_shape(np.array([x0, y0, x1, y1], np.float64))
    if shape != crop.shape[:2]:
        import cv2

        crop = cv2.resize(crop, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop), (x0, y0, x1, y1)
