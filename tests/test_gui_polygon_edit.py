"""Edit polygon mode (issue 22 item 11) in the real window, with real mouse events: entering it
changes nothing; dragging a vertex, dragging an edge (a new vertex) and deleting a vertex each
change the mask as ONE undo step; Ctrl+Z gives back the exact mask; a save keeps the edit."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from hcviewer.annotation.annotation_file import decode_mask
from hcviewer.annotation.annotation_reader import read_annotation
from hcviewer.app.image_view import Mode
from test_gui_app import (  # noqa: F401
    _saved_and_reopened_masks, _segment_first_box, _wait, _write_dataset, make_window, window,
)
from test_gui_widgets import _widget_point

pytestmark = pytest.mark.slow

# The accepted mask: image pixels x 50..99, y 40..79, a rectangle whose corners are the pixels'
# centres (50.5, 40.5) .. (99.5, 79.5).
X0, Y0, X1, Y1 = 50, 40, 100, 80


def _box(window):
    return next(b for b in window.current_document().boxes if b.id == window.state.selected_id)


@pytest.fixture
def editing(window, qtbot):
    """The window with the first box's mask accepted as the rectangle, in Edit polygon mode (P)."""
    box_id = _segment_first_box(qtbot, window)
    mask = np.zeros((120, 160), bool)
    mask[Y0:Y1, X0:X1] = True
    window.project.accept(0, box_id, mask)
    window.activateWindow()
    QTest.keyClick(window, Qt.Key.Key_P)
    assert window.view.viewbox.mode == Mode.POLYGON
    return window


def _vertices(window) -> list[list[tuple[float, float]]]:
    """Each ring's vertices as drawn (the vertex layer's points), ring after ring."""
    editor = window.annotation.polygons
    x, y = editor.vertices.getData()
    drawn, rings = list(zip(np.round(x, 1).tolist(), np.round(y, 1).tolist())), []
    for ring in editor.polygons:
        rings.append(drawn[:len(ring.points)])
        drawn = drawn[len(ring.points):]
    return rings if editor.vertices.isVisible() else []


def _point(window, x: float, y: float) -> QPoint:
    return _widget_point(window.view, x, y)


def _drag(window, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press at image point ``start``, move to ``end`` and release, as a hand does (the pointer
    hovers first: pyqtgraph gives the press to the item the last hover found)."""
    viewport, a, b = window.view.viewport(), _point(window, *start), _point(window, *end)
    QTest.mouseMove(viewport, a)
    QTest.qWait(30)
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, a)
    for t in np.linspace(0, 1, 6)[1:]:
        QTest.mouseMove(viewport, a + (b - a) * float(t))
        QTest.qWait(30)  # pyqtgraph's scene drops move events that come faster than its frame rate
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, b)


def _undo(window) -> None:
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)


def test_entering_the_mode_shows_the_masks_polygon_and_changes_nothing(editing):
    window = editing
    box = _box(window)
    assert sorted(_vertices(window)[0]) == [(50.5, 40.5), (50.5, 79.5), (99.5, 40.5), (99.5, 79.5)]
    edits = window.project.history.edits()
    assert edits[-1].name == "accept"
    assert window.finish_polygon_action.isEnabled()
    viewport = window.view.viewport()
    for (x, y), cursor in (((99.5, 40.5), Qt.CursorShape.SizeAllCursor), ((75.0, 40.5), Qt.CursorShape.CrossCursor),
                           ((75.0, 60.0), Qt.CursorShape.ArrowCursor)):  # a vertex, an edge, inside
        QTest.mouseMove(viewport, _point(window, x, y))
        QTest.qWait(30)
        assert viewport.cursor().shape() == cursor
    assert "Edit polygon" in window.statusBar().currentMessage()
    QTest.keyClick(window, Qt.Key.Key_Return)  # Enter leaves the mode, as Escape does
    assert window.view.viewbox.mode == Mode.SELECT and _vertices(window) == []
    assert window.statusBar().currentMessage() == ""  # the mode's help leaves with it
    QTest.keyClick(window, Qt.Key.Key_P)
    QTest.keyClick(window, Qt.Key.Key_Escape)
    assert window.view.viewbox.mode == Mode.SELECT
    assert _box(window).mask_rle is box.mask_rle and window.project.history.edits() == edits


def test_dragging_a_vertex_moves_the_mask_in_one_undo_step_and_ctrl_z_restores_it_exactly(editing, qtbot):
    window = editing
    before = _box(window).mask.copy()
    edits = len(window.project.history.edits())
    _drag(window, (99.5, 79.5), (109.5, 89.5))  # the bottom-right corner, 10 px down and right
    _wait(qtbot, lambda: window.project.history.undo_name() == "move vertex", 5000)
    after = _box(window).mask
    assert len(window.project.history.edits()) == edits + 1
    assert after[84, 104] and not before[84, 104]  # on the diagonal it was dragged along
    assert np.array_equal(after[Y0:Y1, X0:X1], before[Y0:Y1, X0:X1]) and not after[:, :X0].any()
    corner = next(v for v in _vertices(window)[0] if v[0] > 100)
    assert corner == pytest.approx((109.5, 89.5), abs=1.0)
    assert window.undo_action.text() == "Undo move vertex"
    _undo(window)
    assert np.array_equal(_box(window).mask, before)
    assert sorted(_vertices(window)[0])[-1] == (99.5, 79.5)  # the polygon as it was
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert np.array_equal(_box(window).mask, after)


def test_dragging_an_edge_adds_a_vertex_there_in_one_undo_step(editing, qtbot):
    window = editing
    before = _box(window).mask.copy()
    _drag(window, (99.5, 60.0), (114.5, 60.0))  # the right edge's middle pulled out 15 px
    _wait(qtbot, lambda: window.project.history.undo_name() == "add vertex", 5000)
    assert len(_vertices(window)[0]) == 5
    after = _box(window).mask
    assert after[60, 110] and not after[42, 110] and not before[60, 110]
    _undo(window)
    assert np.array_equal(_box(window).mask, before) and len(_vertices(window)[0]) == 4


def test_deleting_vertices_by_right_click_and_del_each_one_undo_step_down_to_three(editing, qtbot):
    window = editing
    before = _box(window).mask.copy()
    viewport = window.view.viewport()
    corner = _point(window, 99.5, 79.5)
    QTest.mouseMove(viewport, corner)
    QTest.qWait(30)
    QTest.mouseClick(viewport, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, corner)
    _wait(qtbot, lambda: window.project.history.undo_name() == "delete vertex", 5000)
    triangle = _box(window).mask.copy()
    assert len(_vertices(window)[0]) == 3 and not triangle[78, 98] and triangle[41, 51]
    corner = _point(window, 50.5, 40.5)
    QTest.mouseMove(viewport, corner)
    QTest.qWait(30)
    QTest.mouseClick(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, corner)
    assert window.annotation.polygons.selected is not None
    edits = len(window.project.history.edits())
    QTest.keyClick(window, Qt.Key.Key_Delete)  # a triangle keeps its vertices; the box stays too
    assert len(_vertices(window)[0]) == 3 and len(window.project.history.edits()) == edits
    assert "at least 3" in window.statusBar().currentMessage() and len(window.current_document().boxes) == 2
    _undo(window)
    assert np.array_equal(_box(window).mask, before) and len(_vertices(window)[0]) == 4
    window.annotation.polygons.select_vertex(0, 0)
    QTest.keyClick(window, Qt.Key.Key_Delete)
    assert window.project.history.undo_name() == "delete vertex" and len(_vertices(window)[0]) == 3


def test_an_edit_is_autosaved_saved_and_reopened_and_entering_the_mode_is_not(editing, qtbot, make_window, tmp_path):
    window = editing
    QTest.keyClick(window, Qt.Key.Key_Escape)
    assert window.saving.save_to(tmp_path / "before.json")
    QTest.keyClick(window, Qt.Key.Key_P)
    assert window.view.viewbox.mode == Mode.POLYGON
    assert not window.project.file.modified and window.project.file.autosave() is None  # nothing to save
    _drag(window, (50.5, 40.5), (45.5, 30.5))
    _wait(qtbot, lambda: window.project.history.undo_name() == "move vertex", 5000)
    edited = _box(window).mask.copy()
    assert window.project.file.modified
    recovery = read_annotation(window.project.file.autosave())  # what a crash now would give back
    recovered = [o.mask_rle for o in recovery.images[0].objects if o.mask_rle is not None]
    assert len(recovered) == 1 and np.array_equal(decode_mask(recovered[0]), edited)
    masks = _saved_and_reopened_masks(window, make_window, qtbot, tmp_path / "annotation.json")
    assert len(masks) == 1 and np.array_equal(masks[0], edited)


def test_the_mode_needs_an_accepted_mask(window, qtbot):
    _segment_first_box(qtbot, window)
    window.activateWindow()
    QTest.keyClick(window, Qt.Key.Key_P)
    assert window.view.viewbox.mode == Mode.SELECT
    assert "accepted mask" in window.statusBar().currentMessage()


def test_double_clicking_an_edge_adds_a_vertex_to_drag_and_no_undo_step(editing, qtbot):
    window = editing
    edits = window.project.history.edits()
    viewport, edge = window.view.viewport(), _point(window, 75.0, 79.5)  # the bottom edge's middle
    QTest.mouseMove(viewport, edge)
    QTest.qWait(30)
    # what a double-click sends: press, release, double-click, release (QTest's sends the third alone)
    QTest.mouseClick(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, edge)
    QTest.mouseDClick(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, edge)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, edge)
    _wait(qtbot, lambda: len(_vertices(window)[0]) == 5, 5000)
    assert window.project.history.edits() == edits  # the mask is as it was
    added = next(v for v in _vertices(window)[0] if 60 < v[0] < 90)
    assert added == pytest.approx((75.0, 79.5), abs=1.0)
    _drag(window, added, (added[0], 100.5))
    _wait(qtbot, lambda: window.project.history.undo_name() == "move vertex", 5000)
    assert _box(window).mask[95, 75] and not _box(window).mask[95, 55]


def test_another_accepted_box_shows_its_polygon_and_undoing_the_accept_ends_the_mode(editing, qtbot):
    window = editing
    other = max(window.canvas.box_items)
    mask = np.zeros((120, 160), bool)
    mask[70:100, 15:40] = True
    window.project.accept(0, other, mask)
    window.canvas.select_box(other)
    _wait(qtbot, lambda: sorted(_vertices(window)[0]) == [(15.5, 70.5), (15.5, 99.5), (39.5, 70.5), (39.5, 99.5)])
    _undo(window)  # the accept: nothing left to edit
    assert window.view.viewbox.mode == Mode.SELECT and _vertices(window) == []
