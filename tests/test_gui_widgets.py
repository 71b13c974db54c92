"""The app's widgets on their own, driven offscreen with real mouse events."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest

from hcviewer.app.box_items import BoxItem
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


def _drag(view: ImageView, start: QPoint, end: QPoint) -> None:
    viewport = view.viewport()
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, start)
    for t in np.linspace(0, 1, 6)[1:]:
        QTest.mouseMove(viewport, start + (end - start) * float(t))
        QTest.qWait(25)  # pyqtgraph's scene drops move events that come faster than its frame rate
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, end)


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


def test_moving_a_box_item_reports_its_new_coordinates(qtbot, view):
    item = BoxItem(7, np.array([50.0, 50.0, 150.0, 120.0]), "person 0.90")
    view.viewbox.addItem(item)
    with qtbot.waitSignal(item.edited, timeout=2000) as blocker:
        _drag(view, _widget_point(view, 100, 60), _widget_point(view, 140, 90))
    box_id, xyxy = blocker.args
    assert box_id == 7
    np.testing.assert_allclose(xyxy, [90, 80, 190, 150], atol=3)


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
