"""Side panels: the checkpoint's taps (layers feeding the hypercolumn) and the display controls
(tasks shown, opacity, mask threshold, detection score threshold, part legend, accepted
objects' colours and legend)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QPixmap, QIcon
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
    QPushButton, QSlider, QVBoxLayout, QWidget,
)

from hcviewer.app.overlays import COLOR_BY, DisplaySettings, part_color


class LayersPanel(QGroupBox):
    """One checkbox per tap; ``tapsChanged`` carries the checked taps in checkpoint order."""

    tapsChanged = Signal(tuple)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Layers (hypercolumn taps)", parent)
        self._layout = QVBoxLayout(self)
        self._hint = QLabel("Loading the model…")
        self._hint.setWordWrap(True)
        self._layout.addWidget(self._hint)
        self.boxes: dict[str, QCheckBox] = {}
        buttons = QHBoxLayout()
        self.all_button = QPushButton("All")
        self.all_button.clicked.connect(lambda: self.set_checked(tuple(self.boxes)))
        self.compare_button = QPushButton("Compare…")
        self.compare_button.setToolTip("Show the selected box under several tap subsets (Ctrl+K)")
        buttons.addWidget(self.all_button)
        buttons.addWidget(self.compare_button)
        self._layout.addLayout(buttons)

    def set_taps(self, taps: tuple[str, ...]) -> None:
        for box in self.boxes.values():
            self._layout.removeWidget(box)
            box.deleteLater()
        self.boxes = {}
        self._hint.setText("Uncheck a layer to see the prediction without it.")
        for i, tap in enumerate(taps):
            box = QCheckBox(tap)
            box.setChecked(True)
            box.toggled.connect(self._changed)
            self.boxes[tap] = box
            self._layout.insertWidget(1 + i, box)

    def checked(self) -> tuple[str, ...]:
        return tuple(tap for tap, box in self.boxes.items() if box.isChecked())

    def set_checked(self, taps: tuple[str, ...]) -> None:
        for tap, box in self.boxes.items():
            box.blockSignals(True)
            box.setChecked(tap in taps)
            box.blockSignals(False)
        self._changed()

    def _changed(self) -> None:
        checked = self.checked()
        if not checked:  # at least one tap: the head needs some input
            sender = self.sender()
            if isinstance(sender, QCheckBox):
                sender.blockSignals(True)
                sender.setChecked(True)
                sender.blockSignals(False)
            return
        self.tapsChanged.emit(checked)


def _slider(lo: int, hi: int, value: int) -> QSlider:
    slider = QSlider(Qt.Orientation.Horizontal)
    slider.setRange(lo, hi)
    slider.setValue(value)
    return slider


class DisplayPanel(QGroupBox):
    """Edits a ``DisplaySettings`` in place; ``changed`` asks for a redraw,
    ``scoreThresholdChanged`` for re-filtering the boxes."""

    changed = Signal()
    scoreThresholdChanged = Signal(float)

    def __init__(self, settings: DisplaySettings, parent: QWidget | None = None) -> None:
        super().__init__("Display", parent)
        self.settings = settings
        form = QFormLayout(self)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # a narrow panel puts labels above
        self.show_mask = self._task_box(form, "Figure-ground mask", "show_mask")
        self.show_parts = self._task_box(form, "Parts", "show_parts")
        self.show_keypoints = self._task_box(form, "Keypoints", "show_keypoints")
        self.show_gt = self._task_box(form, "Ground truth", "show_gt")
        self.opacity = _slider(0, 100, round(settings.opacity * 100))
        self.opacity.valueChanged.connect(lambda v: self._set("opacity", v / 100))
        form.addRow("Opacity", self.opacity)
        self.threshold = _slider(1, 99, round(settings.threshold * 100))
        self.threshold.valueChanged.connect(lambda v: self._set("threshold", v / 100))
        self.threshold_label = QLabel()
        form.addRow("Mask threshold", self.threshold)
        form.addRow("", self.threshold_label)
        self.refine_edges = self._task_box(form, "Refine edges", "refine_edges")
        self.refine_edges.setToolTip("Snap masks to the image's edges (guided filter, about 1 ms a box); "
                                     "applies to the boxes segmented from now on")
        self.score = _slider(0, 100, 0)
        self.score.setToolTip("Hide detections scoring below this")
        self.score_label = QLabel()
        self.score.valueChanged.connect(self._score_changed)
        form.addRow("Min. box score", self.score)
        form.addRow("", self.score_label)
        self.keypoint_score = _slider(0, 100, round(settings.keypoint_min_score * 100))
        self.keypoint_score.setToolTip("Hide keypoints scoring below this (they are saved as not labelled, v=0)")
        self.keypoint_score.valueChanged.connect(lambda v: self._set("keypoint_min_score", v / 100))
        self.keypoint_score_label = QLabel()
        form.addRow("Min. keypoint score", self.keypoint_score)
        form.addRow("", self.keypoint_score_label)
        self.legend = QListWidget()
        self.legend.setMaximumHeight(120)
        self.legend.setToolTip("Part colours")
        form.addRow("Parts", self.legend)
        self.color_by = QComboBox()
        self.color_by.addItems([f"per {choice}" for choice in COLOR_BY])
        self.color_by.setCurrentIndex(COLOR_BY.index(settings.color_by))
        self.color_by.setToolTip("Accepted masks: one colour per object, or per class")
        self.color_by.currentIndexChanged.connect(lambda i: self._set("color_by", COLOR_BY[i]))
        form.addRow("Accepted colours", self.color_by)
        self.accepted_legend = QListWidget()
        self.accepted_legend.setMaximumHeight(120)
        self.accepted_legend.setToolTip("The accepted objects of this image in their colours")
        form.addRow("Accepted", self.accepted_legend)
        self._accepted_entries: list[tuple[str, tuple[int, int, int]]] | None = None
        self._update_labels()

    def _task_box(self, form: QFormLayout, text: str, attribute: str) -> QCheckBox:
        box = QCheckBox(text)
        box.setChecked(getattr(self.settings, attribute))
        box.toggled.connect(lambda on: self._set(attribute, on))
        form.addRow(box)
        return box

    def _set(self, attribute: str, value) -> None:
        setattr(self.settings, attribute, value)
        self._update_labels()
        self.changed.emit()

    def _score_changed(self, value: int) -> None:
        self._update_labels()
        self.scoreThresholdChanged.emit(value / 100)

    def _update_labels(self) -> None:
        self.threshold_label.setText(f"p ≥ {self.settings.threshold:.2f}")
        self.score_label.setText(f"score ≥ {self.score.value() / 100:.2f}")
        self.keypoint_score_label.setText(f"keypoint score ≥ {self.settings.keypoint_min_score:.2f}")

    def set_parts(self, part_names: tuple[str, ...], part_colors: tuple[tuple[int, int, int], ...] = ()) -> None:
        """The loaded checkpoint's parts, drawn (and listed) in its colours, else the app's palette."""
        self.settings.part_colors = tuple(tuple(int(v) for v in color) for color in part_colors)
        self.legend.clear()
        self.show_parts.setEnabled(bool(part_names))
        for i, name in enumerate(part_names, start=1):
            self.legend.addItem(QListWidgetItem(_swatch(part_color(i, self.settings.part_colors)), name))

    def set_accepted_legend(self, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
        """(text, colour) of each accepted object or class shown."""
        if entries == self._accepted_entries:
            return  # unchanged: no flicker on every redraw
        self._accepted_entries = entries
        self.accepted_legend.clear()
        for text, color in entries:
            self.accepted_legend.addItem(QListWidgetItem(_swatch(color), text))

    def set_tasks(self, tasks: tuple[str, ...]) -> None:
        self.show_mask.setEnabled("figure_ground" in tasks)
        self.show_parts.setEnabled("parts" in tasks)
        self.show_keypoints.setEnabled("keypoints" in tasks)


def _swatch(color: tuple[int, int, int]) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(*color))
    return QIcon(pixmap)
