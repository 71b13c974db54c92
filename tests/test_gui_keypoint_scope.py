"""Keypoints and parts are drawn only for boxes of the categories their heads were trained on
(a person model: no skeleton on a bench), and the Display panel's keypoint score slider
(remembered) hides weak keypoints; saving marks them visible by a fixed rule, not the slider."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QSettings

from hcviewer.annotation.head_scope import DEFAULT_KEYPOINT_THRESHOLD
from hcviewer.app.gui_gc import dispose
from hcviewer.app.main_window import MainWindow
from hcviewer.app.overlays import PART_COLORS, DisplaySettings
from hcviewer.app.settings import AppSettings

pytestmark = pytest.mark.slow

PERSON, BENCH = [20, 10, 90, 110], [100, 40, 155, 100]


def _dataset(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    cv2.imwrite(str(folder / "a.png"), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    annotations = [{"id": i, "image_id": 1, "category_id": i, "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0}
                   for i, (x0, y0, x1, y1) in enumerate((PERSON, BENCH), start=1)]
    path = folder / "boxes.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 160, "height": 120}],
                                "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bench"}]}))
    return path


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    return tmp_path / "settings.ini"


@pytest.fixture
def window(qtbot, tiny_checkpoint, tmp_path, monkeypatch, settings_file):
    monkeypatch.setenv("HCVIEWER_RECOVERY_DIR", str(tmp_path / "recovery"))
    settings = AppSettings(QSettings(str(settings_file), QSettings.Format.IniFormat))
    window = MainWindow(tiny_checkpoint, "cpu", settings=settings, offer_recovery=False)
    window.ask_to_save = False
    qtbot.addWidget(window)
    window.show()
    window.display_panel.show_parts.setChecked(True)
    window.files.open_paths([tmp_path / "a.png"], boxes=_dataset(tmp_path))
    qtbot.waitUntil(lambda: window.state.image is not None and window.state.model_info is not None
                    and len(window.canvas.box_items) == 2, timeout=120000)
    window.segmentation.segment_all()
    qtbot.waitUntil(lambda: len(window.state.views) == 2, timeout=120000)
    yield window
    dispose(window)


def _box_ids(window: MainWindow) -> dict[str, int]:
    return {box.label: box.id for box in window.project.images[0].boxes}


def _inside(points: np.ndarray, box: list[int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return (points[:, 0] >= x0) & (points[:, 0] <= x1) & (points[:, 1] >= y0) & (points[:, 1] <= y1)


def test_keypoints_and_parts_only_on_the_categories_of_their_heads(window):
    ids = _box_ids(window)
    person_points = window.state.views[ids["person"]].keypoints
    window.display_panel.keypoint_score.setValue(0)
    peaks = np.column_stack(window.canvas.result_layer.peaks.getData())
    assert len(peaks) == len(person_points) == 17  # the person's, all of them; none for the bench
    assert np.allclose(np.sort(peaks, axis=0), np.sort(person_points[:, :2], axis=0))
    rgba = window.canvas.result_layer.image.image
    x0, y0, x1, y1 = BENCH
    bench = rgba[y0:y1, x0:x1]
    drawn = bench[..., 3] > 0
    part_colors = {tuple(int(v) for v in c) for c in PART_COLORS[1:]}
    assert not any(tuple(int(v) for v in p) in part_colors for p in bench[drawn][:, :3])  # mask only, no parts
    x0, y0, x1, y1 = PERSON
    person = rgba[y0:y1, x0:x1]
    assert any(tuple(int(v) for v in p) in part_colors for p in person[person[..., 3] > 0][:, :3])


def test_the_selected_bench_shows_no_keypoints_and_no_parts(window, qtbot):
    ids = _box_ids(window)
    window.canvas.select_box(ids["bench"])
    qtbot.waitUntil(lambda: ids["bench"] in window.canvas.overlays, timeout=60000)
    overlay = window.canvas.overlays[ids["bench"]]
    assert overlay.mask_image.isVisible()
    assert not (overlay.peaks.isVisible() or overlay.heatmap_image.isVisible() or overlay.parts_image.isVisible())
    window.canvas.select_box(ids["person"])
    qtbot.waitUntil(lambda: ids["person"] in window.canvas.overlays, timeout=60000)
    assert window.canvas.overlays[ids["person"]].heatmap_image.isVisible()


def _graded_scores(window: MainWindow) -> np.ndarray:
    """The person's keypoint scores set to 0, 1/16, ..., 1 (the random test model scores all ~0)."""
    keypoints = window.state.views[_box_ids(window)["person"]].keypoints
    keypoints[:, 2] = np.linspace(0, 1, len(keypoints))
    return keypoints[:, 2]


def test_the_keypoint_slider_hides_weak_points_and_is_remembered(window, settings_file):
    scores = _graded_scores(window)
    for value in (0, 30, 100):
        window.display_panel.keypoint_score.setValue(value)
        shown = window.canvas.result_layer.peaks.getData()[0]
        assert len(shown) == int((scores >= value / 100).sum())
    assert window.display_panel.keypoint_score_label.text() == "keypoint score ≥ 1.00"
    window.display_panel.keypoint_score.setValue(30)
    again = DisplaySettings()
    AppSettings(QSettings(str(settings_file), QSettings.Format.IniFormat)).load_display(again)
    assert again.keypoint_min_score == pytest.approx(0.3)


def _saved_by_label(path: Path) -> dict[str, dict]:
    saved = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in saved["categories"]}
    return {names[a["category_id"]]: a for a in saved["annotations"]}


def test_saved_keypoints_do_not_follow_the_display_slider(window, tmp_path):
    """At *Min. keypoint score* 0.00 every point was saved visible; the rule is now fixed."""
    ids = _box_ids(window)
    scores = _graded_scores(window)
    for box_id in ids.values():
        window.project.accept(0, box_id, np.ones((120, 160), bool))
    saved = {}
    for value in (0, 90):
        window.display_panel.keypoint_score.setValue(value)
        window.saving.save_to(tmp_path / f"at{value}.json")
        saved[value] = _saved_by_label(tmp_path / f"at{value}.json")
    assert "keypoints" not in saved[0]["bench"]
    person = {value: {k: saved[value]["person"][k] for k in ("keypoints", "num_keypoints", "keypoint_scores")}
              for value in saved}
    assert person[0] == person[90]
    visible = np.array(person[0]["keypoints"][2::3])
    assert np.array_equal(visible == 2, scores >= DEFAULT_KEYPOINT_THRESHOLD)
    assert person[0]["num_keypoints"] == int((scores >= DEFAULT_KEYPOINT_THRESHOLD).sum()) < len(scores)
    np.testing.assert_allclose(person[0]["keypoint_scores"], scores, atol=1e-4)


def test_no_person_keypoints_are_saved_for_a_plane_or_an_unclassed_box(window, tmp_path):
    """A person model's keypoints on a box labelled ``object`` (drawn before any class was chosen)
    or ``airplane`` were saved as a person's 17 points."""
    person = _box_ids(window)["person"]
    view = window.state.views[person]
    window.project.accept(0, person, np.ones((120, 160), bool))
    for label in ("object", "airplane"):
        box_id = window.project.add_box(0, np.array(PERSON, np.float64), label)
        window.project.set_result(0, box_id, view.figure_ground, view.keypoints)
        window.project.accept(0, box_id, np.ones((120, 160), bool))
    window.saving.save_to(tmp_path / "out.json")
    saved = _saved_by_label(tmp_path / "out.json")
    assert "keypoints" not in saved["object"] and "keypoints" not in saved["airplane"]
    assert "num_keypoints" not in saved["object"] and "keypoints" in saved["person"]
