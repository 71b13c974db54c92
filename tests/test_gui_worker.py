"""The model worker thread (real checkpoint, real QThread) and the pure drawing helpers."""

from __future__ import annotations

import numpy as np
import pytest

from hcviewer.app.compare_view import standard_subsets
from hcviewer.app.overlays import heatmap_rgba, mask_rgba, outline_xy, parts_rgba
from hcviewer.app.probe import sample_box_map
from hcviewer.app.worker import BoxRequest, CompareRequest, ModelService


@pytest.fixture
def service(qtbot, tiny_checkpoint):
    service = ModelService()
    with qtbot.waitSignal(service.worker.modelLoaded, timeout=60000) as blocker:
        service.load(str(tiny_checkpoint), "cpu")
    service.info = blocker.args[0]
    yield service
    assert service.shutdown()


BOXES = np.array([[40.0, 20.0, 120.0, 100.0], [10.0, 10.0, 60.0, 50.0]])


def test_loaded_model_names_taps_and_device(service):
    info = service.info
    assert info.taps == ("s4", "s8", "s16", "top")
    assert set(info.tasks) == {"figure_ground", "parts", "keypoints"}
    assert info.device.startswith("CPU") and info.device_warning is None


@pytest.mark.parametrize("mirror", [True, False])
def test_the_worker_answers_as_a_predictor_with_or_without_the_mirror(qtbot, tiny_checkpoint, rgb_image, mirror):
    from hcviewer.inference import HypercolumnPredictor

    service = ModelService()
    try:
        with qtbot.waitSignal(service.worker.modelLoaded, timeout=60000):
            service.load(str(tiny_checkpoint), "cpu", mirror)
        service.show_image("a", rgb_image)
        with qtbot.waitSignal(service.worker.predicted, timeout=30000) as answer:
            service.predict(BoxRequest("a", [0, 1], BOXES))
    finally:
        assert service.shutdown()
    expected = HypercolumnPredictor.from_checkpoint(tiny_checkpoint, "cpu", mirror)
    expected.set_image(rgb_image)
    np.testing.assert_allclose(answer.args[0].prediction.figure_ground, expected.predict(BOXES).figure_ground,
                               atol=1e-5)


def test_trunk_runs_once_per_image_and_boxes_are_answered_from_the_cache(qtbot, service, rgb_image):
    service.show_image("a", rgb_image)
    with qtbot.waitSignal(service.worker.predicted, timeout=30000) as first:
        service.predict(BoxRequest("a", [0, 1], BOXES))
    with qtbot.waitSignal(service.worker.predicted, timeout=30000) as second:
        service.predict(BoxRequest("a", [0], BOXES[:1], taps=("top",), contributions=True))
    assert first.args[0].prediction.figure_ground.shape == (2, 24, 24)
    assert second.args[0].trunk_seconds == 0.0  # features were cached by the first image set
    assert set(second.args[0].prediction.contributions["figure_ground"]) == {"top"}


def test_requests_for_an_image_no_longer_shown_are_dropped(qtbot, service, rgb_image):
    service.show_image("a", rgb_image)
    service.show_image("b", rgb_image[::-1].copy())
    with qtbot.assertNotEmitted(service.worker.predicted, wait=500):
        service.predict(BoxRequest("a", [0], BOXES[:1]))
    with qtbot.waitSignal(service.worker.predicted, timeout=30000) as blocker:
        service.predict(BoxRequest("b", [0], BOXES[:1]))
    assert blocker.args[0].request.image_key == "b"


def test_an_error_in_the_worker_becomes_a_message_and_the_worker_goes_on(qtbot, service, rgb_image):
    service.show_image("a", rgb_image)
    with qtbot.waitSignal(service.worker.failed, timeout=30000) as blocker:
        service.predict(BoxRequest("a", [0], np.array([[50.0, 50.0, 40.0, 60.0]])))  # x1 < x0
    assert "box 0" in blocker.args[0]
    with qtbot.waitSignal(service.worker.predicted, timeout=30000):
        service.predict(BoxRequest("a", [0], BOXES[:1]))


def test_compare_subsets_equal_predictions_with_those_taps(qtbot, service, rgb_image):
    service.show_image("a", rgb_image)
    subsets = standard_subsets(service.info.taps, custom=("s8", "top"))
    assert list(subsets) == ["all taps", "top alone", "without s4", "without s8", "without s16",
                             "without top", "custom: s8+top"]
    gt = np.zeros(rgb_image.shape[:2], bool)
    gt[30:90, 50:110] = True
    with qtbot.waitSignal(service.worker.compared, timeout=30000) as compared:
        service.compare(CompareRequest("a", 0, BOXES[0], subsets, gt_mask=gt))
    with qtbot.waitSignal(service.worker.predicted, timeout=30000) as direct:
        service.predict(BoxRequest("a", [0], BOXES[:1], taps=("s8", "top")))
    result = compared.args[0]
    np.testing.assert_allclose(result.masks["custom: s8+top"], direct.args[0].prediction.figure_ground[0], atol=1e-4)
    assert all(0.0 <= v <= 1.0 for v in result.iou.values())
    assert not np.allclose(result.masks["all taps"], result.masks["top alone"])


def test_probe_samples_cell_centres_exactly_and_nothing_outside_the_box():
    box_map = np.arange(16, dtype=np.float32).reshape(4, 4)
    box = np.array([10.0, 20.0, 50.0, 60.0])  # 10 px per cell
    assert sample_box_map(box_map, box, 10 + 25, 20 + 15) == pytest.approx(box_map[1, 2])
    assert sample_box_map(box_map, box, 30, 40) == pytest.approx(box_map[1:3, 1:3].mean())
    assert sample_box_map(box_map, box, 5, 40) is None


def test_overlay_arrays():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 5:20] = True
    rgba = mask_rgba(mask, (1, 2, 3), 0.5)
    assert rgba[7, 7].tolist() == [1, 2, 3, 128] and rgba[0, 0, 3] == 0
    xs, ys = outline_xy(mask, np.array([100.0, 200.0, 130.0, 220.0]))
    assert np.nanmin(xs) == 105.5 and np.nanmax(xs) == 119.5 and np.nanmin(ys) == 205.5
    parts = np.zeros((3, 4, 4), np.float32)
    parts[0, :2] = 1
    parts[2, 2:] = 1
    drawn = parts_rgba(parts, 1.0)
    assert drawn[0, 0, 3] == 0 and drawn[3, 0, 3] == 255
    heat = heatmap_rgba(np.stack([np.eye(4), np.zeros((4, 4))]).astype(np.float32), 1.0)
    assert heat[1, 1, 3] == 255 and heat[0, 1, 3] == 0
