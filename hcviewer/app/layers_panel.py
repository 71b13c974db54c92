"""Side panels: the checkpoint's taps (layers feeding the hypercolumn) and the display controls
(tasks shown, opacity, mask threshold, detection score threshold, part legend, accepted
objects' colours and legend), and the wheel guard of their scrolling panel."""

from __future__ import annotations

import textwrap

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPixmap, QIcon
from PySide6.QtWidgets import (
    QAbstractSlider, QAbstractSpinBox, QApplication, QCheckBox, QComboBox, QFormLayout, QFrame, QGroupBox,
    QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QScrollArea, QSlider, QToolButton,
    QVBoxLayout, QWidget,
)

from hcviewer.app.overlays import COLOR_BY, DisplaySettings, part_color


MAX_HINT = 160  # characters of a load error shown in the panel


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

    def model_loading(self, name: str) -> None:
        self._hint.setText(f"Loading the model {name}…")

    def model_failed(self, message: str) -> None:
        """The load error, shortened (the message box has it whole); a model loaded before keeps
        its layers here."""
        reason = textwrap.shorten(message, MAX_HINT, placeholder="…")
        self._hint.setText(f"{reason}\nStill using the model loaded before." if self.boxes else
                           f"{reason}\nNo model: File > Open model… opens another.")

    def no_model(self) -> None:
        self._hint.setText("No model: boxes and annotation only. File > Open model… opens one.")

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


NOTICE_MS = 30000  # a notice stays this long unless closed or replaced


class Notice(QFrame):
    """A warning inside the panel: unlike a message box it takes neither the keyboard focus nor
    the window's shortcuts, so the Del it suggests works at once (issue 22)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("Notice { background: #fff3cd; border: 1px solid #d39e00; } QLabel { color: #533f03; }")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 4, 2, 4)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setToolTip("Close this notice")
        close.setAutoRaise(True)
        close.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        close.clicked.connect(self.hide)
        layout.addWidget(self.label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.hide()

    def show_text(self, text: str) -> None:
        self.label.setText(text)
        self.show()
        self._timer.start(NOTICE_MS)


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
        self.selected_only = self._task_box(form, "Selected box only", "selected_only")
        self.selected_only.setToolTip("Draw masks, parts, keypoints and ground truth for the selected box alone "
                                      "(crowded photos); the other boxes stay clickable")
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
        self.legend = _legend_list("Part colours")
        form.addRow(QLabel("Parts"))  # the list on a row of its own: the names get the panel's width
        form.addRow(self.legend)
        self.color_by = QComboBox()
        self.color_by.addItems([f"per {choice}" for choice in COLOR_BY])
        self.color_by.setCurrentIndex(COLOR_BY.index(settings.color_by))
        self.color_by.setToolTip("Accepted masks: one colour per object, or per class")
        self.color_by.currentIndexChanged.connect(lambda i: self._set("color_by", COLOR_BY[i]))
        form.addRow("Accepted colours", self.color_by)
        self.accepted_legend = _legend_list("The accepted objects of this image in their colours")
        form.addRow(QLabel("Accepted"))
        form.addRow(self.accepted_legend)
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
            _add_entry(self.legend, name, part_color(i, self.settings.part_colors))
        _fit_height(self.legend)

    def set_accepted_legend(self, entries: list[tuple[str, tuple[int, int, int]]]) -> None:
        """(text, colour) of each accepted object or class shown."""
        if entries == self._accepted_entries:
            return  # unchanged: no flicker on every redraw
        self._accepted_entries = entries
        self.accepted_legend.clear()
        for text, color in entries:
            _add_entry(self.accepted_legend, text, color)
        _fit_height(self.accepted_legend)

    def set_tasks(self, tasks: tuple[str, ...]) -> None:
        self.show_mask.setEnabled("figure_ground" in tasks)
        self.show_parts.setEnabled("parts" in tasks)
        self.show_keypoints.setEnabled("keypoints" in tasks)


LEGEND_MAX_HEIGHT = 170  # a longer legend scrolls


def _legend_list(tooltip: str) -> QListWidget:
    """A colour legend whose long names wrap instead of being cut ("accessories and ba…")."""
    legend = QListWidget()
    legend.setToolTip(tooltip)
    legend.setWordWrap(True)
    legend.setTextElideMode(Qt.TextElideMode.ElideNone)
    _fit_height(legend)
    return legend


def _add_entry(legend: QListWidget, text: str, color: tuple[int, int, int]) -> None:
    item = QListWidgetItem(_swatch(color), text)
    item.setToolTip(text)  # the whole name, also where the list is narrow
    legend.addItem(item)


def _fit_height(legend: QListWidget) -> None:
    """As tall as its entries (at least one line, at most ``LEGEND_MAX_HEIGHT``): no empty rows
    pushing the rest of the panel down."""
    rows = sum(legend.sizeHintForRow(i) for i in range(legend.count())) or legend.fontMetrics().height()
    legend.setFixedHeight(min(LEGEND_MAX_HEIGHT, rows + 2 * legend.frameWidth() + 4))


def _swatch(color: tuple[int, int, int]) -> QIcon:
    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(*color))
    return QIcon(pixmap)


class _WheelScrollsPanel(QObject):
    """A wheel turned over a slider, spin box or combo box that has no keyboard focus scrolls the
    panel instead: scrolling through the panel changed the opacity under the pointer (issue 22)."""

    def __init__(self, scroll: QScrollArea) -> None:
        super().__init__(scroll)
        self.scroll = scroll

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt naming
        if event.type() == QEvent.Type.Wheel and not watched.hasFocus():
            QApplication.sendEvent(self.scroll.verticalScrollBar(), event)
            return True
        return False


def scroll_past_value_widgets(scroll: QScrollArea) -> None:
    """The panel's value widgets take the wheel only once clicked or tabbed to (focused)."""
    guard = _WheelScrollsPanel(scroll)
    for kind in (QAbstractSlider, QAbstractSpinBox, QComboBox):
        for widget in scroll.widget().findChildren(kind):
            widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # not focused by the wheel itself
            widget.installEventFilter(guard)
