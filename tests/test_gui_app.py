"""The whole app offscreen: real window, real worker thread, a tiny random checkpoint and small
generated images with a COCO box file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPointF, QSettings, Qt
from PySide6.QtTest import QTest

from hcviewer.app.main_window import MainWindow
from hcviewer.app.settings import AppSettings

pytestmark = pytest.mark.slow

BOXES = {"a.png": [[40, 20, 120, 100], [10, 60, 50, 110]], "b.png": [[20, 20, 100, 90]]}


def _write_dataset(folder: Path) -> Path:
    """Two 160x120 images and a COCO file whose annotations carry polygon masks (ground truth)."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, (name, boxes) in enumerate(BOXES.items(), start=1):
        image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / name), image)
        images.append({"id": image_id, "file_name": name, "width": 160, "height": 120})
        for x0, y0, x1, y1 in boxes:
            polygon = [x0 + 5, y0 + 5, x1 - 5, y0 + 5, x1 - 5, y1 - 5, x0 + 5, y1 - 5]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                "segmentation": [polygon], "iscrowd": 0})
    path = folder / "boxes.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))
    return path


def _wait(qtbot, condition, timeout_ms: int = 60000) -> None:
    qtbot.waitUntil(lambda: bool(condition()), timeout=timeout_ms)


@pytest.fixture
def make_window(qtbot, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HCVIEWER_RECOVERY_DIR", str(tmp_path / "recovery"))
    windows = []

    def make(checkpoint=tiny_checkpoint) -> MainWindow:
        settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        window = MainWindow(checkpoint, "cpu", settings=settings, offer_recovery=False)
        window.ask_to_save = False
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()


@pytest.fixture
def window(make_window, qtbot, tmp_path):
    boxes = _write_dataset(tmp_path)
    window = make_window()
    window.open_paths([tmp_path / "a.png", tmp_path / "b.png"], boxes=boxes)
    _wait(qtbot, lambda: window.image is not None and window.model_info is not None and len(window.box_items) == 2)
    return window


def _click_box(qtbot, window: MainWindow, box_id: int) -> None:
    item = window.box_items[box_id]
    x0, y0, x1, y1 = item.xyxy()
    scene = window.view.viewbox.mapViewToScene(QPointF((x0 + x1) / 2, (y0 + y1) / 2))
    QTest.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     window.view.mapFromScene(scene))


def _shown_mask(window: MainWindow, box_id: int) -> np.ndarray:
    """The alpha channel of the mask overlay drawn for a box."""
    overlay = window.overlays[box_id]
    assert overlay.mask_image.isVisible()
    return overlay.mask_image.image[..., 3].copy()


def _segment_first_box(qtbot, window: MainWindow) -> int:
    box_id = sorted(window.box_items)[0]
    _click_box(qtbot, window, box_id)
    _wait(qtbot, lambda: box_id in window.views and box_id in window.overlays)
    return box_id


def test_window_is_usable_before_the_model_has_loaded(make_window, qtbot):
    start = time.perf_counter()
    window = make_window()
    assert window.isVisible() and window.model_info is None
    assert time.perf_counter() - start < 5.0  # torch loads in the worker meanwhile
    assert "loading" in window.device_label.text()
    _wait(qtbot, lambda: window.model_info is not None)
    assert window.device_label.text() == "Device: " + window.model_info.device
    assert [b.text() for b in window.layers.boxes.values()] == ["s4", "s8", "s16", "top"]


def test_clicking_a_box_shows_its_mask_and_the_probe(window, qtbot):
    box_id = _segment_first_box(qtbot, window)
    assert window.selected_id == box_id
    alpha = _shown_mask(window, box_id)
    assert alpha.max() > 0 and alpha.min() == 0  # some pixels in, some out (random model)
    assert "last prediction" in window.timing_label.text()
    x0, y0, x1, y1 = window.box_items[box_id].xyxy()
    window._hovered((x0 + x1) / 2, (y0 + y1) / 2)
    assert set(window.probe.values) == {"s4", "s8", "s16", "top", "bias", "logit"}
    assert 0 < window.probe.probability < 1


def test_toggling_a_tap_changes_the_overlay_without_rerunning_the_trunk(window, qtbot):
    box_id = _segment_first_box(qtbot, window)
    before = _shown_mask(window, box_id)
    trunk_runs = []
    window.model.worker.imageReady.connect(lambda *a: trunk_runs.append(a))
    window.layers.boxes["s4"].setChecked(False)
    _wait(qtbot, lambda: window.views[box_id].taps == ("s8", "s16", "top"))
    assert not np.array_equal(_shown_mask(window, box_id), before)
    assert trunk_runs == []


def test_compare_view_shows_every_subset_with_iou(window, qtbot):
    _segment_first_box(qtbot, window)
    window.open_compare()
    panel = window.compare_window.panel
    _wait(qtbot, lambda: len(panel.titles) == 6)
    assert panel.titles["all taps"].startswith("all taps  IoU ")
    assert set(panel.titles) == {"all taps", "top alone", "without s4", "without s8", "without s16", "without top"}


def test_accept_save_and_reload_the_annotation(window, qtbot, make_window, tmp_path):
    box_id = _segment_first_box(qtbot, window)
    window.accept_selected()
    accepted = next(b for b in window.current_document().boxes if b.id == box_id).mask.copy()
    assert accepted.any()
    window.undo()
    assert next(b for b in window.current_document().boxes if b.id == box_id).mask is None
    window.redo()
    assert window._save_to(tmp_path / "annotation.json")

    reopened = make_window()
    reopened.open_annotation(tmp_path / "annotation.json")
    _wait(qtbot, lambda: reopened.image is not None and reopened.box_items)
    masks = [b.mask for b in reopened.current_document().boxes if b.mask is not None]
    assert len(masks) == 1 and np.array_equal(masks[0], accepted)


def test_brush_adds_to_the_mask_and_undo_takes_it_back(window, qtbot):
    from hcviewer.app.image_view import Mode

    box_id = _segment_first_box(qtbot, window)
    window.accept_selected()
    before = next(b for b in window.current_document().boxes if b.id == box_id).mask.copy()
    window.set_mode(Mode.BRUSH_ADD)
    window.view.brush_radius = 4
    window._stroke_started()
    for x in range(130, 150, 2):
        window._stroke_point(x, 10)
    window._stroke_finished()
    after = next(b for b in window.current_document().boxes if b.id == box_id).mask
    # radius 4 along y = 10 from x = 130 to 148: rows 7-13 are inside the brush at every x there
    assert after[7:14, 130:149].all() and not before[7:14, 130:149].any()
    window.undo()
    assert np.array_equal(next(b for b in window.current_document().boxes if b.id == box_id).mask, before)


def test_a_corrupt_image_and_a_malformed_box_file_give_messages(make_window, qtbot, tmp_path):
    window = make_window()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    window.open_paths([corrupt])
    _wait(qtbot, lambda: window.messages)
    assert "corrupt.png" in window.messages[-1]
    malformed = tmp_path / "boxes.json"
    malformed.write_text('{"images": [{"id": 1}], "annotations": [')
    window.open_boxes(malformed)
    assert len(window.messages) == 2 and "boxes.json" in window.messages[-1]
    assert window.isVisible()


def test_closing_the_window_while_the_worker_runs(window, qtbot):
    window.segment_all_images()
    window.segment_all()
    window.close()  # must not hang or crash; the worker thread is stopped
    assert not window.model.thread.isRunning()
