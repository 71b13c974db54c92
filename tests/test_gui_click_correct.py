"""Click to correct in the real window: Shift+click (object) and Ctrl+click (background) inside
the selected box re-segment its mask off the GUI thread, each one undo step, drawn as dots."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from hcviewer.annotation.mask_crops import crop_mask
from hcviewer.app.controllers import clicks as clicks_module
from hcviewer.app.controllers.clicks import NEGATIVE_COLOR, POSITIVE_COLOR, corrected_crop
from hcviewer.click_correct import Click
from test_gui_app import _segment_first_box, _wait, make_window, window  # noqa: F401
from test_gui_widgets import _widget_point

pytestmark = pytest.mark.slow


def _box(window, box_id: int):
    return next(b for b in window.current_document().boxes if b.id == box_id)


def _click(window, x: float, y: float, modifier: Qt.KeyboardModifier) -> None:
    QTest.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, modifier, _widget_point(window.view, x, y))


def _dots(window) -> list[tuple[int, int, tuple[int, int, int]]]:
    """The click dots drawn: (x, y rounded to pixels: clicks land on screen pixels, fill colour)."""
    points = window.clicks.dots.points()
    return [(round(p.pos().x()), round(p.pos().y()), p.brush().color().getRgb()[:3]) for p in points]


def test_shift_and_ctrl_clicks_correct_the_mask_one_undo_step_each(window, qtbot, monkeypatch):
    threads, unchanged = [], []
    correct = clicks_module.correct_in_box

    def recorded(image, box, box_map, mask, clicks):
        threads.append(threading.current_thread())
        return mask if unchanged else correct(image, box, box_map, mask, clicks)

    monkeypatch.setattr(clicks_module, "correct_in_box", recorded)
    box_id = _segment_first_box(qtbot, window)
    history = window.project.history
    _click(window, 100.5, 40.5, Qt.KeyboardModifier.ShiftModifier)
    _wait(qtbot, lambda: history.undo_name() == "click to add")
    added = _box(window, box_id)
    assert added.accepted and added.mask[40, 100]  # the proposal, corrected, is the annotation now
    assert window.undo_action.text() == "Undo click to add"
    assert _dots(window) == [(100, 40, POSITIVE_COLOR)]
    unchanged.append(True)  # a click that changes nothing: no step to undo, no dot
    _click(window, 90.5, 40.5, Qt.KeyboardModifier.ShiftModifier)
    _wait(qtbot, lambda: "changes nothing" in window.statusBar().currentMessage())
    assert _box(window, box_id).mask_rle is added.mask_rle and _dots(window) == [(100, 40, POSITIVE_COLOR)]
    unchanged.clear()
    _click(window, 60.5, 80.5, Qt.KeyboardModifier.ControlModifier)
    _wait(qtbot, lambda: history.undo_name() == "click to remove")
    assert not _box(window, box_id).mask[80, 60] and _box(window, box_id).mask[40, 100]
    assert _dots(window) == [(100, 40, POSITIVE_COLOR), (60, 80, NEGATIVE_COLOR)]
    assert threads and threading.main_thread() not in threads  # corrected in the mask thread
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert _box(window, box_id).mask_rle is added.mask_rle  # the last click's effect is gone
    assert _dots(window) == [(100, 40, POSITIVE_COLOR)]  # and its dot
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not _box(window, box_id).accepted and _dots(window) == []
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.ControlModifier)
    assert _box(window, box_id).mask_rle is added.mask_rle and len(_dots(window)) == 1  # redo brings both back


def test_a_failed_correction_is_said_and_the_next_click_works(window, qtbot, monkeypatch):
    correct = clicks_module.correct_in_box

    def failing(*args):
        raise ValueError("no memory left")

    monkeypatch.setattr(clicks_module, "correct_in_box", failing)
    box_id = _segment_first_box(qtbot, window)
    _click(window, 100.5, 40.5, Qt.KeyboardModifier.ShiftModifier)
    _wait(qtbot, lambda: any("no memory left" in m for m in window.messages))
    assert not _box(window, box_id).accepted and _dots(window) == []
    monkeypatch.setattr(clicks_module, "correct_in_box", correct)
    _click(window, 100.5, 40.5, Qt.KeyboardModifier.ShiftModifier)
    _wait(qtbot, lambda: window.project.history.undo_name() == "click to add")


def test_a_modified_click_on_another_box_only_selects_it(window, qtbot):
    first = _segment_first_box(qtbot, window)
    second = sorted(window.canvas.box_items)[1]
    _click(window, 20.5, 105.5, Qt.KeyboardModifier.ShiftModifier)  # inside the second box only
    _wait(qtbot, lambda: window.state.selected_id == second)
    assert not _box(window, first).accepted and not _box(window, second).accepted
    assert window.project.history.undo_name() != "click to add"


def test_a_correction_keeps_the_mask_outside_the_box():
    image = np.full((60, 80, 3), 40, np.uint8)
    image[10:50, 20:60] = 220
    painted = np.zeros((60, 80), bool)
    painted[12:48, 22:40] = True
    painted[2:6, 70:78] = True  # a brush stroke past the box's edge
    box = np.array([18.0, 8.0, 62.0, 52.0])
    corrected = corrected_crop(image, box, None, crop_mask(painted), (Click(50.5, 30.5, True),)).full()
    assert corrected[2:6, 70:78].all()
    assert corrected[12:48, 22:58].mean() > 0.9


def test_closing_the_window_stops_the_correction_thread(window):
    window.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        window.clicks.jobs._pool.submit(print)  # the pool takes no more work: its thread ends
