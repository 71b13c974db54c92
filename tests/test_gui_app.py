"""The whole app offscreen: real window, real worker thread, a tiny random checkpoint and small
generated images with a COCO box file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QPointF, QSettings, Qt
from PySide6.QtTest import QTest

from hcviewer.app.gui_gc import dispose
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
        dispose(window)  # closed and deleted on the GUI thread now, not by a later collection


@pytest.fixture
def window(make_window, qtbot, tmp_path):
    boxes = _write_dataset(tmp_path)
    window = make_window()
    window.files.open_paths([tmp_path / "a.png", tmp_path / "b.png"], boxes=boxes)
    _wait(qtbot, lambda: window.state.image is not None and window.state.model_info is not None and len(window.canvas.box_items) == 2)
    return window


def _click_box(qtbot, window: MainWindow, box_id: int) -> None:
    item = window.canvas.box_items[box_id]
    x0, y0, x1, y1 = item.xyxy()
    scene = window.view.viewbox.mapViewToScene(QPointF((x0 + x1) / 2, (y0 + y1) / 2))
    QTest.mouseClick(window.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     window.view.mapFromScene(scene))


def _shown_mask(window: MainWindow, box_id: int) -> np.ndarray:
    """The alpha channel of the mask overlay drawn for a box (with the part map off: while it is
    shown, the parts colour the figure instead of the mask's fill)."""
    window.display_panel.show_parts.setChecked(False)
    overlay = window.canvas.overlays[box_id]
    assert overlay.mask_image.isVisible()
    return overlay.mask_image.image[..., 3].copy()


def _segment_first_box(qtbot, window: MainWindow) -> int:
    box_id = sorted(window.canvas.box_items)[0]
    _click_box(qtbot, window, box_id)
    _wait(qtbot, lambda: box_id in window.state.views and box_id in window.canvas.overlays)
    return box_id


def test_window_is_usable_before_the_model_has_loaded(make_window, qtbot, monkeypatch):
    from hcviewer.inference import HypercolumnPredictor

    loaded_in = []
    from_checkpoint = HypercolumnPredictor.from_checkpoint.__func__

    def record_thread(cls, *args, **kwargs):
        loaded_in.append(threading.current_thread())
        return from_checkpoint(cls, *args, **kwargs)

    monkeypatch.setattr(HypercolumnPredictor, "from_checkpoint", classmethod(record_thread))
    window = make_window()
    assert window.isVisible() and window.state.model_info is None
    assert "loading" in window.device_label.text()
    _wait(qtbot, lambda: window.state.model_info is not None)
    assert loaded_in and threading.main_thread() not in loaded_in  # torch loads in the worker meanwhile
    assert window.device_label.text() == "Device: " + window.state.model_info.device
    assert [b.text() for b in window.layers.boxes.values()] == ["s4", "s8", "s16", "top"]


def test_clicking_a_box_shows_its_mask_and_the_probe(window, qtbot):
    box_id = _segment_first_box(qtbot, window)
    assert window.state.selected_id == box_id
    alpha = _shown_mask(window, box_id)
    assert alpha.max() > 0 and alpha.min() == 0  # some pixels in, some out (random model)
    assert "last prediction" in window.timing_label.text()
    x0, y0, x1, y1 = window.canvas.box_items[box_id].xyxy()
    window.canvas.probe_at((x0 + x1) / 2, (y0 + y1) / 2)
    assert set(window.probe.values) == {"s4", "s8", "s16", "top", "bias", "logit"}
    assert 0 < window.probe.probability < 1


def test_toggling_a_tap_changes_the_overlay_without_rerunning_the_trunk(window, qtbot):
    box_id = _segment_first_box(qtbot, window)
    before = _shown_mask(window, box_id)
    trunk_runs = []
    window.model.worker.imageReady.connect(lambda *a: trunk_runs.append(a))
    window.layers.boxes["s4"].setChecked(False)
    _wait(qtbot, lambda: window.state.views[box_id].taps == ("s8", "s16", "top"))
    assert not np.array_equal(_shown_mask(window, box_id), before)
    assert trunk_runs == []


def test_compare_view_shows_every_subset_with_iou(window, qtbot):
    _segment_first_box(qtbot, window)
    window.segmentation.open_compare()
    panel = window.segmentation.compare_window.panel
    _wait(qtbot, lambda: len(panel.titles) == 6)
    assert panel.titles["all taps"].startswith("all taps  IoU ")
    assert set(panel.titles) == {"all taps", "top alone", "without s4", "without s8", "without s16", "without top"}


def test_accept_save_and_reload_the_annotation(window, qtbot, make_window, tmp_path):
    box_id = _segment_first_box(qtbot, window)
    window.annotation.accept_selected()
    accepted = next(b for b in window.current_document().boxes if b.id == box_id).mask.copy()
    assert accepted.any()
    window.annotation.undo()
    assert next(b for b in window.current_document().boxes if b.id == box_id).mask is None
    window.annotation.redo()
    masks = _saved_and_reopened_masks(window, make_window, qtbot, tmp_path / "annotation.json")
    assert len(masks) == 1 and np.array_equal(masks[0], accepted)


def _saved_and_reopened_masks(window: MainWindow, make_window, qtbot, path: Path) -> list[np.ndarray]:
    """The accepted masks of the shown image, as saved to ``path`` and opened in a new window."""
    assert window.saving.save_to(path)
    reopened = make_window()
    reopened.saving.open_annotation(path)
    _wait(qtbot, lambda: reopened.state.image is not None and reopened.canvas.box_items)
    return [b.mask for b in reopened.current_document().boxes if b.mask is not None]


def test_brush_adds_to_the_mask_and_undo_takes_it_back(window, qtbot):
    from hcviewer.app.image_view import Mode

    box_id = _segment_first_box(qtbot, window)
    window.annotation.accept_selected()
    before = next(b for b in window.current_document().boxes if b.id == box_id).mask.copy()
    window.annotation.set_mode(Mode.BRUSH_ADD)
    window.view.brush_radius = 4
    window.annotation.stroke_started()
    for x in range(130, 150, 2):
        window.annotation.stroke_point(x, 10)
    window.annotation.stroke_finished()
    after = next(b for b in window.current_document().boxes if b.id == box_id).mask
    # radius 4 along y = 10 from x = 130 to 148: rows 7-13 are inside the brush at every x there
    assert after[7:14, 130:149].all() and not before[7:14, 130:149].any()
    window.annotation.undo()
    assert np.array_equal(next(b for b in window.current_document().boxes if b.id == box_id).mask, before)


def test_a_corrupt_image_and_a_malformed_box_file_give_messages(make_window, qtbot, tmp_path):
    window = make_window()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    window.files.open_paths([corrupt])
    _wait(qtbot, lambda: window.messages)
    assert "corrupt.png" in window.messages[-1]
    malformed = tmp_path / "boxes.json"
    malformed.write_text('{"images": [{"id": 1}], "annotations": [')
    window.files.open_boxes(malformed)
    assert len(window.messages) == 2 and "boxes.json" in window.messages[-1]
    assert window.isVisible()


def test_closing_the_window_while_the_worker_runs(window, qtbot):
    window.segmentation.segment_all_images()
    window.segmentation.segment_all()
    window.close()  # must not hang or crash; the worker thread is stopped
    assert not window.model.thread.isRunning()


def test_no_argument_opens_the_demo_photos_with_their_boxes(make_window, qtbot):
    window = make_window()
    window.files.open_demo()
    assert [d.path.name for d in window.project.images] == [
        "astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png"]
    _wait(qtbot, lambda: window.state.image is not None and window.canvas.box_items)
    assert window.state.image.shape == (512, 512, 3)
    assert [b.label for b in window.current_document().boxes] == ["person"]
    assert window.settings.recent_files() == []  # the demo is not a recent file


def test_undo_of_a_segmentation_removes_its_overlay_and_redo_brings_it_back(window, qtbot):
    box_id = _segment_first_box(qtbot, window)
    assert window.project.history.undo_name() == "segment box"
    assert window.undo_action.text() == "Undo segment box"
    window.annotation.undo()
    assert box_id not in window.state.views and box_id not in window.canvas.overlays
    window.annotation.redo()
    assert box_id in window.state.views and _shown_mask(window, box_id).max() > 0


def test_ground_truth_iou_is_reported_and_its_outline_shown_on_demand(window, qtbot):
    _segment_first_box(qtbot, window)
    assert "IoU vs ground truth: " in window.result_label.text()
    assert window.canvas.gt_curve.xData is None or len(window.canvas.gt_curve.xData) == 0
    window.display_panel.show_gt.setChecked(True)
    assert len(window.canvas.gt_curve.xData) > 0


def test_the_score_slider_hides_weak_detections(make_window, qtbot, tmp_path):
    _write_dataset(tmp_path)
    (tmp_path / "detections.csv").write_text("image,x0,y0,x1,y1,label,score\n"
                                             "a.png,40,20,120,100,person,0.9\na.png,10,60,50,110,person,0.3\n")
    window = make_window()
    window.files.open_paths([tmp_path / "a.png"], boxes=tmp_path / "detections.csv")
    window.display_panel.score.setValue(0)
    _wait(qtbot, lambda: len(window.canvas.box_items) == 2)
    window.display_panel.score.setValue(50)
    assert len(window.canvas.box_items) == 1
    assert next(iter(window.canvas.box_items.values())).label.toPlainText() == "#1 person 0.90"


def test_segment_all_draws_every_box_in_one_layer_and_accept_all_is_one_undo_step(window, qtbot):
    window.segmentation.segment_all()
    _wait(qtbot, lambda: len(window.state.views) == 2)
    assert window.canvas.overlays == {}  # no box selected: all results are in the composite layer
    layer = window.canvas.result_layer
    assert layer.image.isVisible() and layer.image.image.shape == (120, 160, 4)
    both = layer.image.image[..., 3].copy()
    assert both.any() and len(layer.outline.xData) > 0
    first = sorted(window.canvas.box_items)[0]
    window.canvas.select_box(first)  # the selected box moves to its own overlay, out of the layer
    assert set(window.canvas.overlays) == {first}
    assert not np.array_equal(layer.image.image[..., 3], both)
    window.annotation.accept_all()
    assert all(b.mask is not None for b in window.current_document().boxes)
    assert window.current_document().status == "done: 2 accepted"
    window.annotation.undo()
    assert all(b.mask is None for b in window.current_document().boxes)


def test_segment_all_images_fills_the_file_list_status(window, qtbot):
    window.segmentation.segment_all_images()
    _wait(qtbot, lambda: not window.progress.isVisible(), timeout_ms=60000)
    rows = [window.file_model.data(window.file_model.index(i)) for i in range(2)]
    assert rows == ["a.png  —  segmented 2/2", "b.png  —  segmented 1/1"]
    assert window.project.history.undo_name() == "segment 2 images"


def test_a_failed_save_shows_a_message_and_keeps_the_previous_file(window, qtbot, tmp_path, monkeypatch):
    import os

    box_id = _segment_first_box(qtbot, window)
    window.annotation.accept_selected()
    assert window.saving.save_to(tmp_path / "annotation.json")
    before = (tmp_path / "annotation.json").read_bytes()
    window.annotation.reject_selected()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    assert not window.saving.save_to(tmp_path / "annotation.json")
    assert "annotation.json" in window.messages[-1] and "No space left on device" in window.messages[-1]
    assert (tmp_path / "annotation.json").read_bytes() == before
    assert window.project.file.modified and box_id in window.canvas.box_items


def test_a_folder_of_thousands_of_images_opens_lazily(make_window, qtbot, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    cv2.imwrite(str(folder / "00000.png"), np.zeros((20, 30, 3), np.uint8))
    for i in range(1, 3000):
        (folder / f"{i:05d}.png").touch()  # never read unless shown
    window = make_window()
    window.files.open_paths([folder])
    assert window.file_model.rowCount() == 3000
    _wait(qtbot, lambda: window.state.image is not None)
    # Only the shown image was read: reading any of the empty files would have been an error.
    assert all(d.size is None and d.error is None for d in window.project.images[1:])
    assert window.messages == []
    window.files.show_image(1)
    _wait(qtbot, lambda: window.messages)
    assert "00001.png" in window.messages[-1]
    assert window.file_model.data(window.file_model.index(1)).startswith("00001.png  —  error")


def test_cuda_requested_without_a_gpu_says_so_once(make_window, qtbot, tiny_checkpoint):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: CUDA is used")
    window = make_window()
    window.model.load(str(tiny_checkpoint), "cuda")
    _wait(qtbot, lambda: window.messages)
    assert window.messages == ["CUDA was requested but no usable GPU was found; running on the CPU"]
    assert window.device_label.text().startswith("Device: CPU")


def test_dropping_files_opens_images_and_boxes_and_remembers_them(make_window, qtbot, tmp_path):
    from PySide6.QtCore import QMimeData, QPoint, QUrl
    from PySide6.QtGui import QDropEvent

    boxes = _write_dataset(tmp_path)
    window = make_window()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / "a.png")), QUrl.fromLocalFile(str(boxes))])
    event = QDropEvent(QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    _wait(qtbot, lambda: len(window.canvas.box_items) == 2)
    recent = window.settings.recent_files()
    assert recent[:2] == [str(boxes.resolve()), str((tmp_path / "a.png").resolve())]
    assert [a.text() for a in window.recent_menu.actions()][:2] == recent[:2]


def test_a_crashed_session_is_offered_back(make_window, qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    _write_dataset(tmp_path)
    first = make_window()
    first.files.open_paths([tmp_path / "a.png"])
    _wait(qtbot, lambda: first.state.image is not None)
    first.project.add_box(0, np.array([10, 10, 50, 50]), "person")
    recovery = first.project.file.autosave()
    recovery.rename(recovery.with_name("999999999-1.json"))  # as if that process had died

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    second = make_window()
    second.saving.offer_recovery()
    _wait(qtbot, lambda: second.state.image is not None and len(second.canvas.box_items) == 1)
    assert second.project.file.modified and not list((tmp_path / "recovery").glob("999999999-*"))


def test_run_app_without_paths_opens_the_demo_and_quits_cleanly(qtbot, tiny_checkpoint, tmp_path, monkeypatch):
    import argparse

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from hcviewer.app import main_window

    monkeypatch.setenv("HCVIEWER_RECOVERY_DIR", str(tmp_path / "recovery"))
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    monkeypatch.setattr(main_window, "AppSettings", lambda: settings)
    seen = {}

    def inspect_then_close() -> None:
        window = next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible())
        if window.state.image is None or window.state.model_info is None:
            QTimer.singleShot(50, inspect_then_close)
            return
        seen["images"] = [d.path.name for d in window.project.images]
        seen["device"] = window.device_label.text()
        window.close()  # nothing was annotated: no question asked

    QTimer.singleShot(0, inspect_then_close)
    args = argparse.Namespace(paths=[], boxes=None, checkpoint=str(tiny_checkpoint), device="cpu", mirror=True)
    assert main_window.run_app(args) == 0
    assert seen["images"][0] == "astronaut.png" and len(seen["images"]) == 4
    assert seen["device"].startswith("Device: CPU")


def test_menu_shortcuts_are_shown_and_unique(make_window):
    window = make_window()
    menus = {menu.title().replace("&", ""): menu for menu in window.menuBar().findChildren(type(window.recent_menu))}
    actions = [a for name in ("File", "Edit", "Segment", "View") for a in menus[name].actions()
               if not a.isSeparator() and a.menu() is None]
    keys = [a.shortcut().toString() for a in actions if not a.shortcut().isEmpty()]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    by_text = {a.text(): a.shortcut().toString() for a in actions}
    assert by_text["Save annotation"] == "Ctrl+S" and by_text["Accept result"] == "A"
    assert by_text["Segment all boxes in image"] == "Ctrl+Return" and by_text["Undo"] == "Ctrl+Z"


def test_each_task_is_drawn_and_can_be_hidden(window, qtbot):
    box_id = _segment_first_box(qtbot, window)
    overlay = window.canvas.overlays[box_id]
    panel = window.display_panel
    assert panel.legend.count() == 3  # head, torso, legs with their colours
    assert overlay.heatmap_image.isVisible() and overlay.peaks.isVisible()  # keypoints shown by default
    panel.show_parts.setChecked(True)
    assert overlay.parts_image.isVisible()
    panel.show_mask.setChecked(False)
    panel.show_keypoints.setChecked(False)
    assert not overlay.mask_image.isVisible() and not overlay.outline.isVisible()
    assert not overlay.heatmap_image.isVisible() and not overlay.peaks.isVisible()


def test_display_choices_are_remembered(make_window, qtbot):
    first = make_window()
    first.display_panel.opacity.setValue(80)
    first.display_panel.show_gt.setChecked(True)
    first.close()
    second = make_window()
    assert second.display.opacity == 0.8 and second.display.show_gt
    assert second.display_panel.opacity.value() == 80


def test_a_checkpoint_that_cannot_load_is_a_message(make_window, qtbot, tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    window = make_window(checkpoint=broken)
    _wait(qtbot, lambda: window.messages)
    assert "broken.safetensors" in window.messages[0] and window.device_label.text() == "Model: not loaded"
    assert window.isVisible()


def test_segment_all_images_reports_an_image_it_could_not_read(make_window, qtbot, tmp_path):
    boxes = _write_dataset(tmp_path)
    window = make_window()
    window.files.open_paths([tmp_path / "a.png", tmp_path / "b.png"], boxes=boxes)
    _wait(qtbot, lambda: window.state.image is not None and window.state.model_info is not None)
    (tmp_path / "b.png").write_bytes(b"truncated")
    window.segmentation.segment_all_images()
    _wait(qtbot, lambda: not window.progress.isVisible())
    assert "1 image could not be segmented" in window.messages[-1] and "b.png" in window.messages[-1]
    assert window.file_model.data(window.file_model.index(1)).startswith("b.png  —  error")


def test_opening_an_annotation_replaces_what_is_shown(window, qtbot, tmp_path):
    from hcviewer.annotation.annotation_file import Annotation, SavedImage, SavedObject, write_annotation

    window.files.show_image(1)
    _wait(qtbot, lambda: window.state.image is not None and window.state.image_index == 1 and window.canvas.box_items)
    cv2.imwrite(str(tmp_path / "c.png"), np.zeros((30, 40, 3), np.uint8))
    write_annotation(tmp_path / "other.json", Annotation(
        [SavedImage(tmp_path / "c.png", (30, 40), [SavedObject((2, 2, 20, 20), "person")])], {"person": 1}))
    window.saving.open_annotation(tmp_path / "other.json")
    _wait(qtbot, lambda: window.state.image is not None and window.state.image.shape == (30, 40, 3) and window.canvas.box_items)
    assert window.state.image_index == 0 and window.file_model.rowCount() == 1 and len(window.canvas.box_items) == 1
    assert window.project.file.path == tmp_path / "other.json"


def test_a_box_file_alone_opens_the_images_beside_it(make_window, qtbot, tmp_path):
    boxes = _write_dataset(tmp_path)
    window = make_window()
    window.files.open_boxes(boxes)
    _wait(qtbot, lambda: window.state.image is not None and len(window.canvas.box_items) == 2)
    assert [d.path.name for d in window.project.images] == ["a.png", "b.png"]


def test_hostile_box_and_annotation_files_are_messages_and_the_app_stays_up(make_window, qtbot, tmp_path, make_fifo):
    """A whole number beyond a float escaped open_boxes (at start: exit 134), a FIFO hung the app,
    an annotation with an image id used twice opened with the last image silently winning."""
    window = make_window()
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 60, 3), np.uint8))
    huge = tmp_path / "huge.json"
    huge.write_text('{"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "person"}], '
                    '"annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 1' + "0" * 400 + ', 5]}]}')
    window.files.open_paths([tmp_path / "a.png"], boxes=huge)  # as `hcviewer --boxes huge.json a.png` starts
    assert window.messages[-1].startswith(f"{huge}: not valid JSON") and "beyond a 64-bit float" in window.messages[-1]
    fifo = make_fifo("boxes.json")
    window.files.open_boxes(fifo)
    assert window.messages[-1].startswith(f"{fifo}: cannot be read (it is a FIFO (named pipe)")
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}],
                                 "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    window.saving.open_annotation(twice)
    assert window.messages[-1] == (f"{twice}: images[1]: id 1 is used twice (also by images[0], 'a.png'); "
                                   "give each its own id")
    assert len(window.messages) == 3 and window.isVisible()
