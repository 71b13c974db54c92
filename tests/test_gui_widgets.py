"""The app's widgets on their own, driven offscreen with real mouse events."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from hcviewer.app.box_items import BoxItem
from hcviewer.app.class_picker import ClassPicker
from hcviewer.app.compare_view import ComparePanel
from hcviewer.app.image_view import ImageView, Mode
from hcviewer.app.layers_panel import LayersPanel
from hcviewer.app.probe import ProbeWidget
from hcviewer.app.settings import AppSettings


@pytest.fixture
def view(qtbot):
    view = ImageView()
    view.resize(400, 300)
    qtbot.addWidget(view)
    view.show()
    view.set_image(np.zeros((300, 400, 3), np.uint8))
    qtbot.waitExposed(view)
    return view


def _widget_point(view: ImageView, x: float, y: float) -> QPoint:
    scene = view.viewbox.mapViewToScene(QPointF(x, y))
    return view.mapFromScene(scene)


def _drag(view: ImageView, start: QPoint, end: QPoint,
          modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier) -> None:
    """A left drag as the mouse makes it, with ``modifiers`` held throughout (QTest's moves carry none)."""
    viewport = view.viewport()
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, modifiers, start)
    for t in np.linspace(0, 1, 6)[1:]:
        point = QPointF(start + (end - start) * float(t))
        QApplication.sendEvent(viewport, QMouseEvent(QEvent.Type.MouseMove, point, viewport.mapToGlobal(point),
                                                     Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton, modifiers))
        QTest.qWait(25)  # pyqtgraph's scene drops move events that come faster than its frame rate
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, modifiers, end)


def test_dragging_in_draw_mode_draws_a_box_in_image_coordinates(qtbot, view):
    view.set_mode(Mode.DRAW)
    with qtbot.waitSignal(view.viewbox.boxDrawn, timeout=2000) as blocker:
        _drag(view, _widget_point(view, 100, 50), _widget_point(view, 250, 200))
    x0, y0, x1, y1 = blocker.args[0]
    assert x0 == pytest.approx(100, abs=3) and y0 == pytest.approx(50, abs=3)
    assert x1 == pytest.approx(250, abs=3) and y1 == pytest.approx(200, abs=3)


def test_dragging_in_select_mode_pans_instead_of_drawing(qtbot, view):
    before = view.viewbox.viewRange()
    with qtbot.assertNotEmitted(view.viewbox.boxDrawn):
        _drag(view, _widget_point(view, 100, 50), _widget_point(view, 250, 200))
    assert view.viewbox.viewRange() != before


def test_brush_mode_reports_a_stroke(qtbot, view):
    view.set_mode(Mode.BRUSH_ADD)
    points = []
    view.viewbox.strokePoint.connect(lambda x, y: points.append((x, y)))
    with qtbot.waitSignal(view.viewbox.strokeFinished, timeout=2000):
        _drag(view, _widget_point(view, 100, 100), _widget_point(view, 200, 100))
    assert points[0][0] == pytest.approx(100, abs=3) and points[-1][0] == pytest.approx(200, abs=3)


def _box_item(view: ImageView, selected: bool = True) -> BoxItem:
    item = BoxItem(7, np.array([50.0, 50.0, 150.0, 120.0]), "#7 person 0.90")
    item.set_state(selected, None, "#7 person 0.90")
    view.viewbox.addItem(item)
    return item


def test_alt_drag_inside_a_box_item_moves_it_and_reports_its_new_coordinates(qtbot, view):
    item = _box_item(view)
    with qtbot.waitSignal(item.edited, timeout=2000) as blocker:
        _drag(view, _widget_point(view, 100, 80), _widget_point(view, 140, 110), Qt.KeyboardModifier.AltModifier)
    box_id, xyxy = blocker.args
    assert box_id == 7
    np.testing.assert_allclose(xyxy, [90, 80, 190, 150], atol=3)


def test_a_plain_drag_inside_a_box_pans_the_view_and_leaves_the_box(qtbot, view):
    item = _box_item(view)
    before = view.viewbox.viewRange()
    with qtbot.assertNotEmitted(item.edited), qtbot.assertNotEmitted(item.selected):
        _drag(view, _widget_point(view, 100, 80), _widget_point(view, 140, 110))
    np.testing.assert_array_equal(item.xyxy(), [50, 50, 150, 120])
    assert view.viewbox.viewRange() != before


def test_the_selected_box_moves_by_its_move_handle_and_resizes_by_a_corner(qtbot, view):
    item = _box_item(view)
    assert item.move_handle.isVisible()
    with qtbot.waitSignal(item.edited, timeout=2000) as blocker:
        _drag(view, _widget_point(view, 100, 50), _widget_point(view, 120, 70))  # the square on the top edge
    np.testing.assert_allclose(blocker.args[1], [70, 70, 170, 140], atol=3)
    with qtbot.waitSignal(item.edited, timeout=2000) as blocker:
        _drag(view, _widget_point(view, 170, 140), _widget_point(view, 190, 150))  # the bottom-right corner
    np.testing.assert_allclose(blocker.args[1], [70, 70, 190, 150], atol=3)
    item.set_state(False, None, "#7 person 0.90")
    assert not item.move_handle.isVisible()  # a box not selected has no handles to catch a drag


def test_a_click_inside_a_box_item_selects_it(qtbot, view):
    item = _box_item(view, selected=False)
    with qtbot.waitSignal(item.selected, timeout=2000) as blocker:
        QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                         _widget_point(view, 100, 80))
    assert blocker.args == [7]


def test_zoom_1_to_1_shows_one_image_pixel_per_screen_pixel_about_the_centre(qtbot, view):
    view.viewbox.setRange(QRectF(100, 50, 200, 150), padding=0)
    centre = view.viewbox.viewRect().center()
    view.zoom_actual_pixels()
    width, height = view.viewbox.viewPixelSize()
    assert width == pytest.approx(1 / view.devicePixelRatioF()) and height == pytest.approx(width)
    assert view.viewbox.viewRect().center().x() == pytest.approx(centre.x())
    assert view.viewbox.viewRect().center().y() == pytest.approx(centre.y())


COCO_LIKE = ["person", "bicycle", "car", "motorcycle", "bus", "train", "truck", "boat", "traffic light",
             "bench", "bird", "cat", "dog", "horse", "sheep", "cow"] + [f"class {i}" for i in range(65)]


@pytest.fixture
def picker(qtbot):
    picker = ClassPicker()
    qtbot.addWidget(picker)
    picker.popup(COCO_LIKE, "dog", QPoint(10, 10))
    qtbot.waitExposed(picker)
    return picker


def test_the_class_picker_narrows_the_81_classes_as_one_types_and_enter_picks(qtbot, picker):
    assert len(picker.visible_names()) == 81 and picker.list.currentItem().text() == "dog"
    QTest.keyClicks(picker.filter, "TR")  # any case, anywhere in the name
    assert picker.visible_names() == ["train", "truck", "traffic light", 'New class "TR"']
    assert picker.list.currentItem().text() == "train"  # Enter now would pick the first match
    QTest.keyClick(picker.filter, Qt.Key.Key_Down)  # moves in the list while the typing goes on
    with qtbot.waitSignal(picker.picked, timeout=2000) as blocker:
        QTest.keyClick(picker.filter, Qt.Key.Key_Return)
    assert blocker.args == ["truck"] and not picker.isVisible()


def test_the_class_picker_offers_a_typed_name_that_is_no_class_as_a_new_one(qtbot, picker):
    QTest.keyClicks(picker.filter, "kite")
    assert picker.visible_names() == ['New class "kite"']
    with qtbot.waitSignal(picker.picked, timeout=2000) as blocker:
        QTest.keyClick(picker.filter, Qt.Key.Key_Return)
    assert blocker.args == ["kite"]


def test_layers_panel_emits_checked_taps_and_keeps_at_least_one(qtbot):
    panel = LayersPanel()
    qtbot.addWidget(panel)
    panel.set_taps(("s4", "s8", "top"))
    with qtbot.waitSignal(panel.tapsChanged) as blocker:
        panel.boxes["s8"].setChecked(False)
    assert blocker.args[0] == ("s4", "top")
    panel.boxes["s4"].setChecked(False)
    panel.boxes["top"].setChecked(False)  # the last one: refused
    assert panel.checked() == ("top",)


def test_probe_bars_add_up_to_the_logit(qtbot):
    probe = ProbeWidget()
    qtbot.addWidget(probe)
    probe.show_pixel({"s4": 1.5, "s8": -0.5, "top": 2.0}, bias=-1.0, active=("s4", "top"), where="here")
    assert probe.values["logit"] == pytest.approx(2.5)  # s8 is unchecked: not counted
    assert probe.probability == pytest.approx(1 / (1 + np.exp(-2.5)))
    assert "0.92" in probe.title.text()


def test_compare_panel_titles_carry_iou(qtbot):
    panel = ComparePanel()
    qtbot.addWidget(panel)
    crop = np.zeros((40, 30, 3), np.uint8)
    masks = {"all taps": np.ones((40, 30), bool), "top alone": np.zeros((40, 30), bool)}
    panel.show_result(crop, masks, {"all taps": 0.75, "top alone": None}, np.ones((40, 30), bool))
    assert panel.titles == {"all taps": "all taps  IoU 0.75", "top alone": "top alone"}


def test_settings_remember_recent_files_most_recent_first(tmp_path):
    from PySide6.QtCore import QSettings

    settings = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    for name in ("a", "b", "a", "c"):
        settings.add_recent(name)
    assert settings.recent_files() == ["c", "a", "b"]


def test_thousands_of_event_rounds_with_a_python_item_model_do_not_abort(tmp_path):
    """PySide6 6.12.0 on Python 3.11 drops a reference to None per such round; without
    ``hcviewer.app.qt_compat`` the interpreter aborts (none_dealloc) after a few thousand."""
    script = tmp_path / "rounds.py"
    script.write_text(
        "import sys\n"
        "import hcviewer.app\n"
        "from PySide6.QtWidgets import QApplication, QListView\n"
        "from hcviewer.app.file_list import FileListModel\n"
        "app = QApplication([])\n"
        "model = FileListModel(lambda: 3, lambda i: (f'f{i}', 'tip', ''))\n"
        "view = QListView(); view.setModel(model); view.show(); model.refresh()\n"
        "for _ in range(8000):\n"
        "    model.refresh(0); app.processEvents()\n"
        "print('survived')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "survived" in done.stdout


def test_a_box_overlay_shows_parts_instead_of_the_mask_fill_with_the_mask_outline_kept(qtbot, view):
    from hcviewer.app.overlays import BoxOverlay, DisplaySettings

    overlay = BoxOverlay(view.viewbox)
    box, figure_ground = np.array([10.0, 10.0, 110.0, 110.0]), np.zeros((8, 8))
    figure_ground[2:6, 2:6] = 1.0
    parts = np.zeros((3, 8, 8))
    parts[0] = 1.0
    parts[1, 2:4, 2:6] = parts[2, 4:6, 2:6] = 2.0  # two parts over the figure
    settings = DisplaySettings()
    assert settings.show_parts  # on by default: the demo shows the part colour map
    overlay.show(box, figure_ground, parts, None, None, (), settings)
    assert overlay.parts_image.isVisible() and overlay.outline.isVisible()
    assert not overlay.mask_image.isVisible()  # its fill would tint every part's colour
    settings.show_parts = False
    overlay.show(box, figure_ground, parts, None, None, (), settings)
    assert overlay.mask_image.isVisible() and not overlay.parts_image.isVisible()
    overlay.remove()


def test_part_legend_lists_the_checkpoints_colours_and_the_drawing_uses_them(qtbot):
    from hcviewer.app.layers_panel import DisplayPanel
    from hcviewer.app.overlays import DisplaySettings, parts_rgba

    settings = DisplaySettings()
    panel = DisplayPanel(settings)
    qtbot.addWidget(panel)
    panel.set_parts(("hair", "skin"), ((140, 70, 20), (255, 190, 140)))
    swatch = panel.legend.item(1).icon().pixmap(8, 8).toImage().pixelColor(4, 4)
    assert (swatch.red(), swatch.green(), swatch.blue()) == (255, 190, 140)
    probs = np.zeros((3, 2, 2))
    probs[2] = 1.0
    assert parts_rgba(probs, 0.5, settings.part_colors)[0, 0, :3].tolist() == [255, 190, 140]
    panel.set_parts(("hair",))  # a checkpoint without colours: the app's palette again
    assert settings.part_colors == ()
