"""Annotating in the real window (issue 9): accepting never throws away brush edits, accepted
masks in their own colours with a legend, box labels that do not pile up, the class menu."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from hcviewer.app.image_view import Mode
from test_gui_app import _click_box, _segment_first_box, _wait, _write_dataset, make_window, window  # noqa: F401

pytestmark = pytest.mark.slow


def _box(window, box_id: int):
    return next(b for b in window.current_document().boxes if b.id == box_id)


def _paint(window, points: list[tuple[float, float]], radius: float = 4, add: bool = True) -> None:
    window.annotation.set_mode(Mode.BRUSH_ADD if add else Mode.BRUSH_ERASE)
    window.view.brush_radius = radius
    window.annotation.stroke_started()
    for x, y in points:
        window.annotation.stroke_point(x, y)
    window.annotation.stroke_finished()


def test_accept_on_a_brush_edited_mask_keeps_the_edit(window, qtbot):
    box_id = _segment_first_box(qtbot, window)
    QTest.keyClick(window, Qt.Key.Key_A)
    assert _box(window, box_id).accepted and window.project.history.undo_name() == "accept"
    _paint(window, [(x, 10) for x in range(130, 150, 2)])
    edited = _box(window, box_id).mask.copy()
    assert window.project.history.undo_name() == "paint mask" and window.undo_action.text() == "Undo paint mask"
    assert not window.accept_button.isEnabled() and not window.accept_action.isEnabled()
    QTest.keyClick(window, Qt.Key.Key_A)  # nothing new to accept: the edit stays
    window.annotation.accept_selected()
    assert np.array_equal(_box(window, box_id).mask, edited)
    _paint(window, [(135, 10)], add=False)
    assert window.project.history.undo_name() == "erase from mask"


def _accepted_colors(window) -> dict[int, tuple[int, ...]]:
    """The colour drawn at the middle of each accepted box's mask, by box id (the layer covers
    the accepted masks' extent, from its top-left corner; small images are drawn at full size)."""
    item = window.canvas.annotation_item
    corner = item.mapRectToParent(item.boundingRect()).topLeft()
    rgba, left, top = item.image, round(corner.x()), round(corner.y())
    colors = {}
    for box in window.current_document().boxes:
        if box.accepted:
            ys, xs = np.nonzero(box.mask)
            colors[box.id] = tuple(int(v) for v in rgba[ys[len(ys) // 2] - top, xs[len(xs) // 2] - left, :3])
    return colors


def test_accepted_masks_are_drawn_over_the_model_in_a_colour_per_object_or_class_with_a_legend(window, qtbot):
    window.segmentation.segment_all()
    _wait(qtbot, lambda: len(window.state.views) == 2)
    first, second = sorted(window.canvas.box_items)
    window.canvas.select_box(first)
    _wait(qtbot, lambda: first in window.canvas.overlays and window.state.views[first].contributions)
    window.annotation.accept_all()
    overlay = window.canvas.overlays[first]
    assert window.canvas.annotation_item.zValue() > max(item.zValue() for item in overlay.items)
    colors = _accepted_colors(window)
    assert colors[first] != colors[second]
    legend = window.display_panel.accepted_legend
    assert overlay.outline.isVisible() and not overlay.mask_image.isVisible()  # the model's mask: outline only
    assert [legend.item(i).text() for i in range(legend.count())] == [f"person box {first}", f"person box {second}"]
    window.display_panel.color_by.setCurrentIndex(1)  # per class: both are people
    colors = _accepted_colors(window)
    assert colors[first] == colors[second]
    assert [legend.item(i).text() for i in range(legend.count())] == ["person"]


def test_labels_of_boxes_with_the_same_corner_do_not_cover_each_other(window, qtbot):
    window.project.add_box(0, np.array([41.0, 21.0, 90.0, 70.0]), "dog")
    _wait(qtbot, lambda: len(window.canvas.box_items) == 3)
    rects = [item.label.sceneBoundingRect() for item in window.canvas.box_items.values()]
    overlapping = [(a, b) for i, a in enumerate(rects) for b in rects[i + 1:] if a.intersects(b)]
    assert not overlapping


def _pick_class(qtbot, window, typed: str) -> None:
    """C, then type in the class picker's filter and press Enter, as the user does."""
    QTest.keyClick(window, Qt.Key.Key_C)
    picker = window.annotation.class_picker
    _wait(qtbot, picker.isVisible, 5000)
    QTest.keyClicks(picker.filter, typed)
    QTest.keyClick(picker.filter, Qt.Key.Key_Return)
    _wait(qtbot, lambda: not picker.isVisible(), 5000)


def test_the_class_menu_offers_the_box_files_and_the_checkpoints_classes_and_new_ones(window, qtbot, tmp_path):
    from test_gui_widgets import _drag, _widget_point

    (tmp_path / "more.csv").write_text("image,x0,y0,x1,y1,label\nb.png,5,5,50,50,bench\n")
    window.files.open_boxes(tmp_path / "more.csv")
    first = sorted(window.canvas.box_items)[0]
    window.canvas.select_box(first)
    QTest.keyClick(window, Qt.Key.Key_C)
    picker = window.annotation.class_picker
    _wait(qtbot, picker.isVisible, 5000)
    assert picker.visible_names() == ["person", "bench"]  # box files' and checkpoint's
    QTest.keyClick(picker.filter, Qt.Key.Key_Escape)
    _wait(qtbot, lambda: not picker.isVisible(), 5000)
    window.activateWindow()
    _pick_class(qtbot, window, "be")
    assert _box(window, first).label == "bench"

    window.activateWindow()
    _pick_class(qtbot, window, "kite")
    assert _box(window, first).label == "kite"
    assert window.annotation.class_names() == ["person", "bench", "kite"]

    window.activateWindow()  # the picker has closed (offscreen, nothing gives the focus back)
    _wait(qtbot, lambda: QApplication.activeWindow() is window, 5000)
    QTest.keyClick(window, Qt.Key.Key_D)  # a new box takes the class last used
    _drag(window.view, _widget_point(window.view, 100, 60), _widget_point(window.view, 150, 110))
    _wait(qtbot, lambda: len(window.canvas.box_items) == 3, 5000)
    new = max(window.canvas.box_items)
    assert _box(window, new).label == "kite"


def test_a_box_drawn_before_any_class_is_chosen_asks_for_its_class(window, qtbot):
    """It took the first class offered (a COCO file's ``person``) or ``object``, silently: a plane
    was saved with a person's keypoints."""
    from test_gui_widgets import _drag, _widget_point

    picker = window.annotation.class_picker

    def draw(x0: float, y0: float) -> int:
        count = len(window.canvas.box_items)
        QTest.keyClick(window, Qt.Key.Key_D)
        _drag(window.view, _widget_point(window.view, x0, y0), _widget_point(window.view, x0 + 40, y0 + 40))
        _wait(qtbot, lambda: len(window.canvas.box_items) == count + 1, 5000)
        return max(window.canvas.box_items)

    first = draw(100, 20)
    _wait(qtbot, picker.isVisible, 5000)  # the class is asked at once
    assert _box(window, first).label == "object" and window.state.selected_id == first
    QTest.keyClick(picker.filter, Qt.Key.Key_Escape)  # dismissed: the box names no class
    assert _box(window, first).label == "object"
    window.activateWindow()
    _wait(qtbot, lambda: QApplication.activeWindow() is window, 5000)
    second = draw(110, 60)
    _wait(qtbot, picker.isVisible, 5000)  # still no class chosen: asked again
    QTest.keyClicks(picker.filter, "pers")
    QTest.keyClick(picker.filter, Qt.Key.Key_Return)
    assert _box(window, second).label == "person"
    window.activateWindow()
    _wait(qtbot, lambda: QApplication.activeWindow() is window and not picker.isVisible(), 5000)
    third = draw(5, 5)
    assert _box(window, third).label == "person" and not picker.isVisible()  # the class chosen last
