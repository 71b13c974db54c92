"""The side panels and the window's feedback (issue 22, found under a real X server): the wheel
scrolls the panel past its sliders, the out-of-image warning leaves Del to the window, long work
shows a busy sign, a large JPEG is shown from a reduced decode, and the smaller defects (outline
colours, the part legend, Open annotation's folder, the layers hint after a failed load, the
"selected box only" display)."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QGuiApplication, QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QDockWidget, QFileDialog, QMessageBox, QScrollArea

from hcviewer.app import busy, image_loader
from test_gui_app import _wait, _write_dataset, make_window, window  # noqa: F401

pytestmark = pytest.mark.slow


def _menu_action(window, title: str, text: str):
    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == title)
    return next(a for a in menu.actions() if a.text() == text)


def _side_scroll(window) -> QScrollArea:
    return next(w for w in window.findChildren(QScrollArea) if w.widget() is window.display_panel.parentWidget())


def _wheel(widget, steps: int = -1) -> None:
    """A mouse wheel turned ``steps`` notches over the middle of ``widget`` (negative: down)."""
    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0), QPoint(0, 120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_the_wheel_over_a_panel_slider_scrolls_the_panel_and_leaves_the_value(window, qtbot):
    window.resize(1000, 420)  # the panel is taller than its dock: it scrolls
    scroll, slider = _side_scroll(window), window.display_panel.opacity
    _wait(qtbot, lambda: scroll.verticalScrollBar().maximum() > 0, 5000)
    scroll.ensureWidgetVisible(slider)
    scroll.verticalScrollBar().setValue(0)
    slider.clearFocus()
    before, opacity = slider.value(), window.display.opacity
    _wheel(slider)
    assert slider.value() == before and window.display.opacity == opacity
    assert scroll.verticalScrollBar().value() > 0  # the panel scrolled instead
    slider.setFocus()  # clicked or tabbed to: then the wheel is the slider's
    _wheel(slider)
    assert slider.value() != before


def test_the_out_of_image_warning_leaves_del_to_the_window(window, qtbot):
    outside = window.project.add_box(0, np.array([200.0, 130.0, 260.0, 170.0]), "bench")
    _wait(qtbot, lambda: len(window.canvas.box_items) == 3, 5000)
    window.activateWindow()
    _wait(qtbot, lambda: QApplication.activeWindow() is window, 5000)
    window.canvas.select_box(outside)
    assert "lies entirely outside" in window.messages[-1]
    qtbot.wait(100)  # a window shown meanwhile would be active now
    # Del where the keyboard is, as a user's key press: at once, with no message box to dismiss first
    QTest.keyClick(QApplication.focusWidget() or QApplication.activeWindow(), Qt.Key.Key_Delete)
    assert outside not in {b.id for b in window.current_document().boxes}
    assert QApplication.activeWindow() is window
    assert not [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
    assert window.notice.isVisible() and "(Del)" in window.notice.label.text()  # said in the panel instead


@pytest.fixture
def hold(monkeypatch):
    """``hold(owner, name)``: ``owner.name`` made to wait (in whichever thread calls it) until the
    returned event is set; all are set before the windows close (set up after them: torn down first)."""
    events = []

    def make(owner, name: str) -> threading.Event:
        release, real = threading.Event(), getattr(owner, name)

        def held(*args, **kwargs):
            assert release.wait(60)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, held)
        events.append(release)
        return release

    yield make
    for event in events:
        event.set()


def _busy_cursor() -> bool:
    cursor = QGuiApplication.overrideCursor()
    return cursor is not None and cursor.shape() == Qt.CursorShape.BusyCursor


def test_decoding_and_computing_features_show_a_busy_sign_that_clears(make_window, hold, qtbot, tmp_path,
                                                                       monkeypatch):
    from hcviewer.inference import HypercolumnPredictor

    monkeypatch.setattr(busy, "BUSY_DELAY_MS", 0)
    decoding = hold(image_loader, "read_image")
    features = hold(HypercolumnPredictor, "set_image")
    boxes = _write_dataset(tmp_path)
    window = make_window()
    _wait(qtbot, lambda: window.state.model_info is not None)
    window.files.open_paths([tmp_path / "a.png"], boxes=boxes)
    _wait(qtbot, lambda: window.busy.text() == "Decoding photo…", 5000)
    assert window.busy.bar.isVisible() and window.busy.bar.maximum() == 0 and _busy_cursor()
    decoding.set()
    _wait(qtbot, lambda: window.busy.text() == "Computing image features…")
    assert _busy_cursor()
    features.set()
    _wait(qtbot, lambda: not window.busy.shown)
    assert not window.busy.bar.isVisible() and QGuiApplication.overrideCursor() is None


def test_a_large_jpeg_is_shown_from_a_reduced_decode_and_boxes_stay_in_its_pixels(make_window, hold, qtbot,
                                                                                   tmp_path, monkeypatch):
    monkeypatch.setattr(image_loader, "DISPLAY_MAX_SIDE", 150)  # as 4096 for a 12000 x 9000 photo
    height, width, box = 480, 640, [300, 200, 600, 440]
    rng = np.random.default_rng(1)
    cv2.imwrite(str(tmp_path / "large.jpg"), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    (tmp_path / "boxes.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "large.jpg", "height": height, "width": width}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}],
        "categories": [{"id": 1, "name": "person"}]}))
    whole = hold(image_loader, "read_image")  # the whole decode, for the model
    window = make_window()
    window.files.open_paths([tmp_path / "large.jpg"], boxes=tmp_path / "boxes.json")
    item = window.view.image_item
    _wait(qtbot, lambda: item.image is not None, 10000)  # the picture, before the whole photo is decoded
    assert item.image.shape[:2] == (112, 150) and window.state.image is None  # libjpeg at 1/4 (160 x 120), then 150 wide
    extent = item.mapRectToParent(item.boundingRect())
    assert (extent.width(), extent.height()) == (width, height)
    whole.set()
    _wait(qtbot, lambda: window.state.image is not None and window.state.model_info is not None
          and len(window.canvas.box_items) == 1)
    assert window.state.image.shape[:2] == (height, width) and item.image.shape[:2] == (112, 150)
    [box_id] = window.canvas.box_items
    np.testing.assert_allclose(window.canvas.box_items[box_id].xyxy(), box)
    window.canvas.select_box(box_id)
    _wait(qtbot, lambda: box_id in window.state.views)
    np.testing.assert_allclose(window.state.views[box_id].box, box)  # the model answered in the photo's pixels


def test_box_outlines_take_the_class_colours_at_once(window, qtbot):
    window.segmentation.segment_all()
    _wait(qtbot, lambda: len(window.state.views) == 2)
    window.annotation.accept_all()
    boxes = window.current_document().boxes
    colour_by = window.display_panel.color_by
    window.state.select(None)

    def drawn(box) -> tuple:
        return window.canvas.box_items[box.id].pen.color().getRgb()[:3]

    assert [drawn(b) for b in boxes] == [window.canvas.accepted_color(b) for b in boxes]
    colour_by.setCurrentIndex(1 - colour_by.currentIndex())  # per object <-> per class
    expected = [window.canvas.accepted_color(b) for b in boxes]
    assert [drawn(b) for b in boxes] == expected and len(set(expected)) == 1  # one class, one colour


def test_the_part_legend_shows_whole_names_at_the_narrowest_panel(make_window, qtbot):
    window = make_window()
    _wait(qtbot, lambda: window.state.model_info is not None)
    dock = next(d for d in window.findChildren(QDockWidget) if d.widget() is _side_scroll(window))
    window.resizeDocks([dock], [1], Qt.Orientation.Horizontal)  # as narrow as it goes
    longest = "a part name far longer than any panel is wide, which wraps onto a second line"
    window.display_panel.set_parts(("hair", "accessories and bags", longest))
    legend = window.display_panel.legend
    qtbot.wait(50)
    assert [legend.item(i).toolTip() for i in range(3)] == ["hair", "accessories and bags", longest]
    one_line, bags = legend.visualItemRect(legend.item(0)), legend.visualItemRect(legend.item(1))
    text_width = legend.fontMetrics().horizontalAdvance("accessories and bags") + legend.iconSize().width()
    assert bags.width() > text_width and bags.right() < legend.viewport().width()  # whole, not "accessories and ba…"
    assert legend.visualItemRect(legend.item(2)).height() > one_line.height()  # wrapped, not cut


def test_open_annotation_starts_in_the_shown_images_folder(window, qtbot, tmp_path, monkeypatch):
    started_in = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda parent, title, folder, *a: started_in.append(folder)
                        or ("", ""))
    window.saving.open_annotation_dialog()
    window.files.open_boxes_dialog()
    assert started_in == [str(tmp_path), str(tmp_path)]


def test_the_layers_panel_says_why_the_model_did_not_load(make_window, qtbot, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    window = make_window(checkpoint=broken)
    _wait(qtbot, lambda: window.messages)
    hint = window.layers._hint.text()
    assert "Loading" not in hint and hint.startswith("Could not load the model") and "broken.safetensors" in hint
    assert "No model: File > Open model" in hint


def test_selected_box_only_draws_the_overlays_of_the_selected_box_alone(window, qtbot):
    window.display_panel.show_gt.setChecked(True)
    window.segmentation.segment_all()
    _wait(qtbot, lambda: len(window.state.views) == 2)
    first, second = sorted(window.canvas.box_items)
    window.canvas.select_box(first)
    _wait(qtbot, lambda: first in window.canvas.overlays)
    both_gt = len(window.canvas.gt_curve.getData()[0])
    assert window.canvas.result_layer.image.isVisible()  # the other box's result
    _menu_action(window, "&View", "Show selected box only").trigger()
    assert window.display.selected_only and window.display_panel.selected_only.isChecked()
    assert not window.canvas.result_layer.image.isVisible()
    assert window.canvas.overlays[first].outline.isVisible()  # the selected box's own overlay stays
    assert 0 < len(window.canvas.gt_curve.getData()[0]) < both_gt  # its ground truth alone
    window.annotation.accept_selected()
    assert window.canvas.annotation_item.isVisible()
    window.canvas.select_box(second)  # another box selected: the first's accepted mask is not drawn
    assert not window.canvas.annotation_item.isVisible()
    assert second in window.canvas.box_items and first in window.canvas.box_items  # both boxes stay clickable
