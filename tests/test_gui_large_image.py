"""Large photos stay responsive: the window shows a reduced copy made in the loader thread
over the photo's full pixel extent, draws accepted masks and ground truth from crops, and makes
large masks (accept, brush) in the background, applying them when ready. The thresholds are
lowered here so that a small test image takes the large-photo paths."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QSettings

from hcviewer.app import controllers, image_loader, mask_jobs
from hcviewer.app.gui_gc import dispose
from hcviewer.app.image_view import Mode
from hcviewer.app.main_window import MainWindow
from hcviewer.app.settings import AppSettings

pytestmark = pytest.mark.slow

H, W = 240, 320
BOX = [40, 30, 220, 200]


@pytest.fixture
def window(qtbot, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HCVIEWER_RECOVERY_DIR", str(tmp_path / "recovery"))
    monkeypatch.setattr(image_loader, "DISPLAY_MAX_SIDE", 100)  # shown reduced, as a 12000 x 9000 photo is
    from hcviewer.app.controllers import annotation as annotation_controller

    monkeypatch.setattr(annotation_controller, "SYNC_PIXELS", 100)  # every mask made in the background
    monkeypatch.setattr(controllers.canvas, "DISPLAY_MAX_SIDE", 100)
    rng = np.random.default_rng(3)
    cv2.imwrite(str(tmp_path / "big.png"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    x0, y0, x1, y1 = BOX
    (tmp_path / "boxes.json").write_text(json.dumps({
        "images": [{"id": 5, "file_name": "big.png", "height": H, "width": W}],
        "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0,
                         "segmentation": [[x0 + 10, y0 + 10, x1 - 10, y0 + 10, x1 - 10, y1 - 10, x0 + 10, y1 - 10]]}],
        "categories": [{"id": 1, "name": "person"}]}))
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(tiny_checkpoint, "cpu", settings=settings, offer_recovery=False)
    window.ask_to_save = False
    qtbot.addWidget(window)
    window.show()
    window.files.open_paths([tmp_path / "big.png"], boxes=tmp_path / "boxes.json")
    qtbot.waitUntil(lambda: window.state.image is not None and window.state.model_info is not None
                    and len(window.canvas.box_items) == 1, timeout=120000)
    yield window
    dispose(window)


def _box(window: MainWindow):
    return window.project.images[0].boxes[0]


def test_the_photo_is_shown_reduced_over_its_full_extent(window):
    item = window.view.image_item
    assert max(item.image.shape[:2]) == 100 and window.state.image.shape[:2] == (H, W)
    extent = item.mapRectToParent(item.boundingRect())
    assert (extent.width(), extent.height()) == (W, H)


def test_accept_and_brush_are_made_in_the_background_and_undone_as_usual(window, qtbot):
    box_id = _box(window).id
    window.canvas.select_box(box_id)
    qtbot.waitUntil(lambda: box_id in window.state.views, timeout=60000)
    window.display.show_gt = True
    window.canvas.draw_annotation()
    assert len(window.canvas.gt_curve.getData()[0]) > 0  # the ground truth outline, from its crop
    assert "IoU vs ground truth" in window.result_label.text()
    window.annotation.accept_selected()
    window.annotation.accept_selected()  # a second A while the first is being made: nothing more
    qtbot.waitUntil(lambda: _box(window).accepted, timeout=60000)
    accepted = _box(window).mask.copy()
    assert window.project.history.undo_name() == "accept" and window.messages == []
    assert window.canvas.annotation_item.isVisible()

    window.annotation.set_mode(Mode.BRUSH_ADD)
    for row in (5, 15):  # two strokes in a row: the second waits for the first and is painted on it
        window.annotation.stroke_started()
        for x in range(60, 200, 10):
            window.annotation.stroke_point(float(x), float(row))
        window.annotation.stroke_finished()
    qtbot.waitUntil(lambda: _box(window).mask[15, 100] and _box(window).mask[5, 100], timeout=60000)
    assert window.project.history.undo_name() == "paint mask"
    window.annotation.undo()
    window.annotation.undo()
    assert np.array_equal(_box(window).mask, accepted)


def test_a_mask_made_for_a_box_moved_meanwhile_is_dropped(window, qtbot):
    box_id = _box(window).id
    window.canvas.select_box(box_id)
    qtbot.waitUntil(lambda: box_id in window.state.views, timeout=60000)
    window.annotation.accept_selected()
    window.project.move_box(0, box_id, np.array([10.0, 10.0, 100.0, 100.0]))  # before the mask is ready
    qtbot.wait(1000)
    assert not _box(window).accepted and window.project.history.undo_name() == "move box"


def test_the_annotation_of_a_large_photo_saves_as_usual(window, qtbot, tmp_path):
    box_id = _box(window).id
    window.canvas.select_box(box_id)
    qtbot.waitUntil(lambda: box_id in window.state.views, timeout=60000)
    window.annotation.accept_selected()
    qtbot.waitUntil(lambda: _box(window).accepted, timeout=60000)
    window.saving.save_to(tmp_path / "out.json")
    png = next(Path(tmp_path / "out_masks").rglob("*.png"))
    assert np.array_equal(cv2.imread(str(png), cv2.IMREAD_UNCHANGED) > 0, _box(window).mask)
    assert json.loads((tmp_path / "out.json").read_text())["images"][0]["id"] == 5
    assert mask_jobs.SYNC_PIXELS == 1_000_000  # the module's own threshold is untouched


def _accept_first_box(window, qtbot) -> None:
    box_id = _box(window).id
    window.canvas.select_box(box_id)
    qtbot.waitUntil(lambda: box_id in window.state.views, timeout=60000)
    window.annotation.accept_selected()
    qtbot.waitUntil(lambda: _box(window).accepted, timeout=60000)


def _held_writer(monkeypatch, name: str = "write_annotation") -> threading.Event:
    """The saving thread's writer (``write_annotation`` for saves, ``write_recovery`` for
    autosaves), held until the returned event is set; records its thread."""
    from hcviewer.app.controllers import saving

    release, threads = threading.Event(), []

    def write(*args):
        threads.append(threading.current_thread())
        assert release.wait(60)
        return real_write(*args)

    real_write = getattr(saving, name)
    monkeypatch.setattr(saving, name, write)
    release.threads = threads
    return release


def test_save_from_the_menu_is_written_in_the_background_and_edits_made_meanwhile_stay_unsaved(
        window, qtbot, tmp_path, monkeypatch):
    _accept_first_box(window, qtbot)
    window.project.file.path = tmp_path / "out.json"
    release = _held_writer(monkeypatch)
    save = next(a for a in window.menuBar().actions()[0].menu().actions() if a.text() == "Save annotation")
    save.trigger()  # returns while the writer is held: the window goes on
    assert window.saving.saving and "Saving out.json" in window.statusBar().currentMessage()
    window.project.add_box(0, np.array([5.0, 5.0, 50.0, 50.0]), "person")  # an edit after the snapshot
    release.set()
    qtbot.waitUntil(lambda: not window.saving.saving, timeout=60000)
    assert release.threads[0] is not threading.main_thread()
    saved = json.loads((tmp_path / "out.json").read_text())
    assert len(saved["annotations"]) == 1  # the snapshot: the accepted object, not the later box
    assert window.project.file.modified and window.messages == []  # the box drawn meanwhile is not saved yet
    assert "Saved 1 objects" in window.statusBar().currentMessage()


def test_a_background_save_that_fails_says_so_and_keeps_the_edits(window, qtbot, tmp_path):
    _accept_first_box(window, qtbot)
    (tmp_path / "blocked").write_text("a file where the folder should be")
    window.project.file.path = tmp_path / "blocked" / "out.json"
    window.saving.save_annotation(wait=False)
    qtbot.waitUntil(lambda: not window.saving.saving, timeout=60000)
    assert window.project.file.modified and len(window.messages) == 1 and "out.json" in window.messages[0]


def test_closing_while_a_save_is_written_waits_for_it(window, qtbot, tmp_path, monkeypatch):
    _accept_first_box(window, qtbot)
    release = _held_writer(monkeypatch)
    window.saving.save_to(tmp_path / "out.json", wait=False)
    window.ask_to_save = True  # would ask if the save were not waited for
    threading.Timer(0.5, release.set).start()
    assert window.saving.confirm_close()  # nothing to ask: the save finished first
    assert not window.project.file.modified and (tmp_path / "out.json").is_file()


def test_ground_truth_is_decoded_in_the_loader_thread_before_the_photo_is_shown(window, qtbot, monkeypatch):
    from hcviewer.annotation import document

    threads = []
    decode = document.crop_from_segmentation

    def recording(*args):
        threads.append(threading.current_thread())
        return decode(*args)

    monkeypatch.setattr(document, "crop_from_segmentation", recording)
    _box(window).gt.forget()  # as when another image was shown in between
    window.files.show_image(0)
    qtbot.waitUntil(lambda: window.state.image is not None, timeout=60000)
    window.display.show_gt = True
    window.canvas.draw_annotation()
    assert len(window.canvas.gt_curve.getData()[0]) > 0
    assert threads and all(t is not threading.main_thread() for t in threads)


def test_the_autosave_is_written_in_the_saving_thread_and_knows_about_later_edits(window, qtbot, monkeypatch):
    _accept_first_box(window, qtbot)
    session = window.project.file._session
    release = _held_writer(monkeypatch, "write_recovery")
    window.saving.autosave()  # returns while the writer is held
    window.saving.autosave()  # the timer again meanwhile: one autosave at a time
    window.project.add_box(0, np.array([5.0, 5.0, 50.0, 50.0]), "person")  # after the snapshot
    release.set()
    qtbot.waitUntil(lambda: session.path.is_file() and not window.saving._autosave_running, timeout=60000)
    assert len(release.threads) == 1 and release.threads[0] is not threading.main_thread()
    assert not session.autosaved  # the box drawn meanwhile is not in the file yet
    window.saving.autosave()
    qtbot.waitUntil(lambda: session.autosaved, timeout=60000)
    saved = json.loads(session.path.read_text())
    assert len(saved["hcviewer"]["pending"]) == 1  # the new box, with the accepted object in annotations
