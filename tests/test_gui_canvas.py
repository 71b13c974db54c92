"""The canvas in the real window (issue 22): moving a box is deliberate, a click after Reject
segments again, box numbers kept across save and reopen and drawn at each box, Tab between
boxes, the class picker, 1:1 zoom."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QRectF, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from test_gui_app import _click_box, _segment_first_box, _wait, _write_dataset, make_window, window  # noqa: F401
from test_gui_widgets import _drag, _widget_point

pytestmark = pytest.mark.slow


def _box(window, box_id: int):
    return next(b for b in window.current_document().boxes if b.id == box_id)


def _centre(window, box_id: int):
    x0, y0, x1, y1 = _box(window, box_id).xyxy
    return _widget_point(window.view, (x0 + x1) / 2, (y0 + y1) / 2)


def test_a_plain_drag_inside_a_box_leaves_it_and_its_mask_and_alt_drag_moves_it_in_one_step(window, qtbot):
    box_id = _segment_first_box(qtbot, window)
    window.annotation.accept_selected()
    accepted, view = _box(window, box_id), window.state.views[box_id]
    start = _centre(window, box_id)
    _drag(window.view, start, start + (_widget_point(window.view, 30, 20) - _widget_point(window.view, 0, 0)))
    QTest.qWait(100)
    assert _box(window, box_id) is accepted  # the same box, the same mask: nothing was edited
    assert window.state.views[box_id] is view and window.project.history.undo_name() == "accept"

    _drag(window.view, _centre(window, box_id), _centre(window, box_id) + _widget_point(window.view, 20, 10)
          - _widget_point(window.view, 0, 0), Qt.KeyboardModifier.AltModifier)
    _wait(qtbot, lambda: _box(window, box_id) is not accepted, 5000)
    assert _box(window, box_id).xyxy[0] == pytest.approx(accepted.xyxy[0] + 20, abs=3)
    assert window.project.history.undo_name() == "move box"
    window.annotation.undo()
    assert _box(window, box_id) is accepted


def test_a_click_on_the_selected_box_after_reject_segments_it_again(window, qtbot):
    box_id = _segment_first_box(qtbot, window)
    window.annotation.reject_selected()
    assert window.state.selected_id == box_id and box_id not in window.state.views
    _click_box(qtbot, window, box_id)
    _wait(qtbot, lambda: box_id in window.state.views and box_id in window.canvas.overlays, 30000)
    assert window.accept_button.isEnabled()


def test_box_numbers_are_drawn_at_each_box_and_kept_through_save_and_reopen(window, qtbot, make_window, tmp_path):
    first, second = sorted(window.canvas.box_items)
    added = window.project.add_box(0, [60.0, 10.0, 150.0, 60.0], "dog")
    window.project.delete_box(0, first)  # numbers with a gap, and an accepted box after pending ones
    window.canvas.select_box(added)
    _wait(qtbot, lambda: added in window.state.views, 30000)
    window.annotation.accept_selected()
    assert window.canvas.box_items[added].label.toPlainText() == f"#{added} dog"
    assert window.canvas.box_items[second].label.toPlainText() == f"#{second} person"
    numbers = {b.id: b.label for d in window.project.images for b in d.boxes}
    assert window.saving.save_to(tmp_path / "annotation.json")

    reopened = make_window()
    reopened.saving.open_annotation(tmp_path / "annotation.json")
    _wait(qtbot, lambda: reopened.state.image is not None and len(reopened.canvas.box_items) == 2)
    assert {b.id: b.label for d in reopened.project.images for b in d.boxes} == numbers
    assert reopened.canvas.box_items[added].label.toPlainText() == f"#{added} dog"
    legend = reopened.display_panel.accepted_legend  # the legend names the number the canvas shows
    assert f"dog box {added}" in [legend.item(r).text() for r in range(legend.count())]
    new = reopened.project.add_box(0, [5.0, 5.0, 30.0, 30.0], "cat")
    assert new == max(numbers) + 1  # a new box never takes a kept number


def test_tab_and_shift_tab_walk_the_boxes_by_number_round_the_end_while_the_canvas_has_the_focus(window, qtbot):
    third = window.project.add_box(0, [100.0, 60.0, 150.0, 110.0], "dog")
    _wait(qtbot, lambda: len(window.canvas.box_items) == 3)
    numbers = sorted(window.canvas.box_items)
    window.activateWindow()
    window.view.setFocus()
    _wait(qtbot, lambda: QApplication.focusWidget() is window.view, 5000)
    picked = []
    for key, modifier in [(Qt.Key.Key_Tab, Qt.KeyboardModifier.NoModifier)] * 4 + \
                         [(Qt.Key.Key_Backtab, Qt.KeyboardModifier.ShiftModifier)] * 2:
        QTest.keyClick(window.view, key, modifier)
        picked.append(window.state.selected_id)
    assert picked == [numbers[0], numbers[1], third, numbers[0], third, numbers[1]]
    _wait(qtbot, lambda: numbers[1] in window.state.views, 30000)  # a box reached by Tab is segmented

    window.file_list.setFocus()  # elsewhere Tab moves the focus, not the selection
    _wait(qtbot, lambda: QApplication.focusWidget() is window.file_list, 5000)
    QTest.keyClick(window.file_list, Qt.Key.Key_Tab)
    assert window.state.selected_id == numbers[1]


def test_tab_to_a_box_out_of_sight_pans_to_it_at_the_same_zoom(window, qtbot):
    viewbox = window.view.viewbox
    viewbox.setRange(QRectF(0, 0, 16, 12), padding=0)  # the top-left corner, far in
    scale = viewbox.viewPixelSize()
    window.canvas.select_next(1)
    x0, y0, x1, y1 = _box(window, window.state.selected_id).xyxy
    centre = viewbox.viewRect().center()
    assert centre.x() == pytest.approx((x0 + x1) / 2, abs=1) and centre.y() == pytest.approx((y0 + y1) / 2, abs=1)
    assert viewbox.viewPixelSize() == pytest.approx(scale)
    window.view.fit()
    shown = viewbox.viewRect()
    window.canvas.select_next(1)  # a box wholly in view: the view stays
    assert viewbox.viewRect() == shown


def test_the_class_picker_at_the_box_filters_and_enter_sets_the_class(window, qtbot):
    box_id = sorted(window.canvas.box_items)[0]
    window.canvas.select_box(box_id)
    QTest.keyClick(window, Qt.Key.Key_C)
    picker = window.annotation.class_picker
    _wait(qtbot, picker.isVisible, 5000)
    assert picker.visible_names() == ["person"] and QApplication.focusWidget() is picker.filter
    QTest.keyClicks(picker.filter, "kite")
    QTest.keyClick(picker.filter, Qt.Key.Key_Return)
    assert _box(window, box_id).label == "kite" and not picker.isVisible()
    assert window.annotation.class_names() == ["person", "kite"]


def test_zoom_1_to_1_is_in_the_view_menu_and_the_shortcuts(window, qtbot):
    from hcviewer.app.shortcuts_dialog import shortcut_rows

    assert ("View", "Ctrl+1", "Zoom 1:1 (actual pixels)") in shortcut_rows(window.menuBar())
    assert ("Edit", "Tab", "Select next box") in shortcut_rows(window.menuBar())
    QTest.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    assert window.view.viewbox.viewPixelSize()[0] == pytest.approx(1 / window.view.devicePixelRatioF())
