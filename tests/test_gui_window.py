"""The window around the work (issue 9): Help > Keyboard shortcuts, menu toggles that show their
state, the Save dialog's start, the compare window's place, the probe's hint, the right panel
without clipping, counts in words, and the first window size on a small or high-DPI screen."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt, QTimer
from PySide6.QtWidgets import QApplication, QCheckBox, QDockWidget, QFileDialog, QLabel, QScrollArea

from test_gui_app import _segment_first_box, _wait, _write_dataset, make_window, window  # noqa: F401

pytestmark = pytest.mark.slow


def _menu(window, title: str):
    return next(a.menu() for a in window.menuBar().actions() if a.text() == title)


def _action(window, title: str, text: str):
    return next(a for a in _menu(window, title).actions() if a.text() == text)


def test_help_lists_every_shortcut_in_one_table(make_window, qtbot):
    window = make_window()
    _action(window, "&Help", "Keyboard shortcuts").trigger()
    dialog = window.shortcuts_dialog
    _wait(qtbot, dialog.isVisible, 5000)
    table = dialog.table
    rows = {(table.item(r, 1).text(), table.item(r, 2).text()) for r in range(table.rowCount())}
    assert {("A", "Accept result"), ("Ctrl+S", "Save annotation"), ("C", "Set class of box…"),
            ("PgDown", "Next image"), ("1", "Show figure-ground mask"), ("Wheel", "Zoom"), ("Ctrl+Z", "Undo")} <= rows


def test_view_toggles_are_checkable_and_follow_the_display_panel(make_window, qtbot):
    window = make_window()
    panel = window.display_panel
    action = _action(window, "&View", "Show ground truth")
    assert action.isCheckable() and action.isChecked() == panel.show_gt.isChecked() is False
    panel.show_gt.setChecked(True)
    assert action.isChecked()
    action.trigger()
    assert not panel.show_gt.isChecked() and not window.display.show_gt


def test_save_as_starts_beside_the_images_with_a_proposed_name(window, qtbot, tmp_path):
    seen = {}

    def look_and_cancel() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, QFileDialog):
            QTimer.singleShot(20, look_and_cancel)
            return
        seen["files"] = dialog.selectedFiles()
        dialog.reject()

    QTimer.singleShot(0, look_and_cancel)
    assert not window.saving.save_annotation_as()
    assert seen["files"] == [str(tmp_path / f"{tmp_path.name}-annotation.json")]


def test_compare_window_opens_over_the_main_window(window, qtbot):
    _segment_first_box(qtbot, window)
    window.resize(450, 450)
    window.move(340, 340)  # away from where a new window opens by default
    window.segmentation.open_compare()
    compare = window.segmentation.compare_window
    _wait(qtbot, compare.isVisible, 5000)
    assert window.frameGeometry().contains(compare.frameGeometry().center())


def test_escape_closes_the_compare_window(window, qtbot):
    _segment_first_box(qtbot, window)
    window.segmentation.open_compare()
    compare = window.segmentation.compare_window
    _wait(qtbot, compare.isVisible, 5000)
    compare.activateWindow()  # as a user's click on it: the main window's shortcuts then do not apply
    _wait(qtbot, lambda: QApplication.activeWindow() is compare, 5000)
    qtbot.keyClick(compare, Qt.Key.Key_Escape)
    _wait(qtbot, lambda: not compare.isVisible(), 5000)


def test_the_probe_shows_a_hint_not_empty_axes_until_a_pixel_is_probed(window, qtbot):
    probe = window.probe
    assert not probe.plot.isVisible() and "click a box" in probe.title.text()
    box_id = _segment_first_box(qtbot, window)
    x0, y0, x1, y1 = window.canvas.box_items[box_id].xyxy()
    window.canvas.probe_at((x0 + x1) / 2, (y0 + y1) / 2)
    assert probe.plot.isVisible()
    window.canvas.probe_left()
    assert not probe.plot.isVisible()


def test_the_right_panel_shows_its_texts_whole_at_its_narrowest(window, qtbot):
    scroll = next(w for w in window.findChildren(QScrollArea) if w.widget().findChildren(QCheckBox))
    dock = scroll.parentWidget()
    while not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    window.resizeDocks([dock], [1], Qt.Orientation.Horizontal)  # as narrow as it goes
    qtbot.wait(50)
    viewport, side = scroll.viewport(), scroll.widget()
    texts = [w for w in side.findChildren(QLabel) + side.findChildren(QCheckBox) if w.isVisible() and w.text()]

    def needed(w) -> int:  # a wrapping label takes the width it is given; others their text's
        return w.width() if isinstance(w, QLabel) and w.wordWrap() else w.sizeHint().width()

    cut = [w.text() for w in texts
           if w.width() < needed(w) or w.mapTo(viewport, QPoint(needed(w), 0)).x() > viewport.width()]
    assert cut == []


def test_counts_are_in_words(window, qtbot):
    rows = [window.file_model.data(window.file_model.index(i)) for i in range(2)]
    assert rows == ["a.png  —  2 boxes", "b.png  —  1 box"]


def test_the_first_window_fits_the_available_screen(make_window, qtbot):
    window = make_window()
    available = window.screen().availableGeometry()
    assert available.contains(window.frameGeometry())
