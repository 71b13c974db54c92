"""Annotating in the real window (issue 9): accepting never throws away brush edits, accepted
masks in their own colours with a legend, box labels that do not pile up, the class menu."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

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
    assert _box(window, box_id).accepted and window.project.undo_name() == "accept"
    _paint(window, [(x, 10) for x in range(130, 150, 2)])
    edited = _box(window, box_id).mask.copy()
    assert window.project.undo_name() == "paint mask" and window.undo_action.text() == "Undo paint mask"
    assert not window.accept_button.isEnabled() and not window.accept_action.isEnabled()
    QTest.keyClick(window, Qt.Key.Key_A)  # nothing new to accept: the edit stays
    window.annotation.accept_selected()
    assert np.array_equal(_box(window, box_id).mask, edited)
    _paint(window, [(135, 10)], add=False)
    assert window.project.undo_name() == "erase from mask"
