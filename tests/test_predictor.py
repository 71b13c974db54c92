"""The feature-caching predictor: one trunk run per image, any boxes and taps from the cache."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_person_config
from hcviewer.inference import HypercolumnPredictor, InputError, check_boxes, choose_device, paste_masks
from hcviewer.modeling import build_hypercolumn, heatmaps_to_keypoints
from hcviewer.inference import predictor as predictor_module

BOXES = np.array([[40.0, 20.0, 120.0, 100.0], [-10.0, 5.0, 60.0, 130.0], [100.0, 60.0, 101.0, 60.5]], np.float32)


@pytest.fixture
def predictor(tiny_checkpoint: Path) -> HypercolumnPredictor:
    return HypercolumnPredictor.from_checkpoint(tiny_checkpoint, device="cpu")


@contextmanager
def count_trunk_runs():
    """Counts forward calls of RGB-input convolutions: every trunk run starts with exactly
    one, and nothing per box takes RGB input."""
    runs = []

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            runs.append(inputs[0].shape)

    handle = nn.modules.module.register_module_forward_hook(hook)
    try:
        yield runs
    finally:
        handle.remove()


def reference_logits(predictor: HypercolumnPredictor, image: np.ndarray, boxes: np.ndarray, taps=None):
    """The model's own training-path forward on the same normalised image, boxes in image px."""
    config = predictor.config
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    tensor = (tensor - torch.tensor(config.mean).view(3, 1, 1)) / torch.tensor(config.std).view(3, 1, 1)
    rois = torch.cat([torch.zeros(len(boxes), 1), torch.from_numpy(boxes)], dim=1)
    with torch.no_grad():
        return predictor.model([tensor], rois, taps=taps)


@pytest.mark.parametrize("mirror", [True, False])
def test_trunk_runs_once_per_image_and_boxes_come_from_the_cache(tiny_checkpoint, rgb_image, mirror) -> None:
    predictor = HypercolumnPredictor.from_checkpoint(tiny_checkpoint, device="cpu", mirror=mirror)
    per_image = 2 if mirror else 1  # the image, and its mirror image when answers are averaged
    with count_trunk_runs() as runs:
        predictor.set_image(rgb_image)
        assert len(runs) == per_image
        first = predictor.predict(BOXES)
        moved = predictor.predict(BOXES[:2] + 5.0)
        subset = predictor.predict(BOXES, taps=("s8", "top"), contributions=True)
        again = predictor.predict(BOXES)
        assert len(runs) == per_image
        predictor.set_image(rgb_image[::-1].copy())
        assert len(runs) == 2 * per_image
    np.testing.assert_array_equal(first.figure_ground, again.figure_ground)
    assert not np.allclose(moved.figure_ground, first.figure_ground[:2])
    assert subset.taps == ("s8", "top")
    assert set(subset.contributions["keypoints"]) == {"s8", "top"}
    assert not np.allclose(subset.logits["keypoints"], first.logits["keypoints"])


def test_predictions_equal_the_models_own_forward(tiny_checkpoint, rgb_image) -> None:
    """Without mirror averaging (tests/test_mirror.py) the answers are the training path's."""
    predictor = HypercolumnPredictor.from_checkpoint(tiny_checkpoint, device="cpu", mirror=False)
    predictor.set_image(rgb_image)
    prediction = predictor.predict(BOXES)
    expected = reference_logits(predictor, rgb_image, BOXES)
    for task in predictor.tasks:
        np.testing.assert_allclose(prediction.logits[task], expected[task].numpy(), rtol=1e-4, atol=1e-4)
    subset = predictor.predict(BOXES, taps=("s4", "top"))
    expected = reference_logits(predictor, rgb_image, BOXES, taps=("s4", "top"))
    np.testing.assert_allclose(subset.logits["parts"], expected["parts"].numpy(), rtol=1e-4, atol=1e-4)


def test_outputs_are_probabilities_with_keypoints_in_image_pixels(predictor, rgb_image) -> None:
    predictor.set_image(rgb_image)
    p = predictor.predict(BOXES, contributions=True)
    n, s = len(BOXES), predictor.config.output_size
    assert len(p) == n and p.boxes.dtype == np.float32
    assert p.figure_ground.shape == (n, s, s)
    assert ((p.figure_ground > 0) & (p.figure_ground < 1)).all()
    np.testing.assert_allclose(p.parts.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p.keypoint_heatmaps.sum((2, 3)), 1.0, rtol=1e-5)
    expected = heatmaps_to_keypoints(torch.from_numpy(p.logits["keypoints"]), torch.from_numpy(BOXES))
    np.testing.assert_allclose(p.keypoints, expected.numpy(), rtol=1e-5, atol=1e-4)
    assert (p.keypoints[..., 0] >= BOXES[:, None, 0]).all() and (p.keypoints[..., 0] <= BOXES[:, None, 2]).all()
    for task, per_tap in p.contributions.items():
        total = p.bias[task][:, :, None, None] + sum(per_tap.values())
        np.testing.assert_allclose(total, p.logits[task], rtol=1e-4, atol=1e-5)
    assert p.seconds > 0


def test_tasks_can_be_chosen_and_empty_box_lists_work(predictor, rgb_image) -> None:
    predictor.set_image(rgb_image)
    p = predictor.predict(BOXES, tasks=["figure_ground"])
    assert set(p.logits) == {"figure_ground"} and p.keypoints is None and p.parts is None
    empty = predictor.predict(np.zeros((0, 4)), contributions=True)
    assert empty.figure_ground.shape == (0, 24, 24) and empty.keypoints.shape == (0, 17, 3)
    assert empty.contributions["parts"]["s4"].shape == (0, 4, 24, 24)


def test_batching_does_not_change_results(predictor, rgb_image, monkeypatch) -> None:
    predictor.set_image(rgb_image)
    whole = predictor.predict(BOXES)
    monkeypatch.setattr(predictor_module, "HEADS_CHUNK", 2)
    batched = predictor.predict(BOXES)
    for task in predictor.tasks:
        np.testing.assert_allclose(batched.logits[task], whole.logits[task], rtol=1e-5, atol=1e-6)


def test_large_images_are_resized_and_boxes_follow(rgb_image) -> None:
    """An image larger than max_image_side is shrunk; boxes stay in its own pixels. A 2x
    nearest enlargement shrunk back by INTER_AREA is the original, so the answers match."""
    torch.manual_seed(0)
    model = build_hypercolumn(tiny_person_config(max_image_side=160))
    with torch.no_grad():
        for conv in model.heads["keypoints"].classifiers.values():
            conv.weight.normal_(std=0.2)
    predictor = HypercolumnPredictor(model, device="cpu")
    predictor.set_image(rgb_image)  # 120 x 160: no resize
    expected = predictor.predict(BOXES)
    big = np.repeat(np.repeat(rgb_image, 2, axis=0), 2, axis=1)  # 240 x 320
    predictor.set_image(big)
    assert predictor.image_size == (240, 320)
    actual = predictor.predict(BOXES * 2)
    np.testing.assert_allclose(actual.logits["keypoints"], expected.logits["keypoints"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(actual.keypoints[..., :2], expected.keypoints[..., :2] * 2, rtol=1e-4, atol=1e-2)


def test_the_predictor_leaves_its_model_unchanged(rgb_image) -> None:
    """The predictor folds batch norm into its own inference copy; the model it was given (which
    may still be training) keeps its layers and weights."""
    torch.manual_seed(0)
    model = build_hypercolumn(tiny_person_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = HypercolumnPredictor(model, device="cpu")
    predictor.set_image(rgb_image)
    predictor.predict(BOXES)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) and model.training


def test_paste_masks_into_the_image(predictor, rgb_image) -> None:
    predictor.set_image(rgb_image)
    p = predictor.predict(BOXES)
    probs = paste_masks(p, rgb_image.shape[:2])
    assert probs.shape == (3, 120, 160) and probs.dtype == np.float32
    assert probs[0, :20].max() == 0 and probs[0, 20:100, 40:120].min() > 0
    masks = paste_masks(p, rgb_image.shape[:2], threshold=0.5)
    assert masks.dtype == bool
    np.testing.assert_array_equal(masks, probs >= 0.5)
    with pytest.raises(InputError, match="no figure-ground"):
        paste_masks(predictor.predict(BOXES, tasks=["parts"]), rgb_image.shape[:2])


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, words",
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 0, 3), np.uint8), "empty"),
        (np.zeros((10, 10), np.uint8), "RGB"),
        (np.zeros((10, 10, 4), np.uint8), "RGB"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        ([[[0, 0, 0]]], "numpy array"),
    ],
)
def test_bad_images_are_rejected(predictor, image, words: str) -> None:
    with pytest.raises(InputError, match=words):
        predictor.set_image(image)


def test_predict_before_set_image(predictor) -> None:
    with pytest.raises(InputError, match="set_image"):
        predictor.predict(BOXES)
    predictor.set_image(np.zeros((20, 20, 3), np.uint8))
    predictor.reset_image()
    assert not predictor.is_image_set and predictor.image_size is None
    with pytest.raises(InputError, match="set_image"):
        predictor.predict(BOXES)


@pytest.mark.parametrize(
    "bad_box, words",
    [
        ([10.0, np.nan, 50.0, 60.0], "box 1 has a NaN"),
        ([10.0, 10.0, np.inf, 60.0], "box 1 has a NaN or infinite"),
        ([30.0, 10.0, 30.0, 60.0], "box 1 has zero or negative size"),
        ([30.0, 10.0, 50.0, 5.0], "box 1 has zero or negative size"),
        ([170.0, 10.0, 200.0, 60.0], "box 1 lies entirely outside the 160x120 image"),
        ([-50.0, 10.0, 0.0, 60.0], "box 1 lies entirely outside"),
        ([10.0, 120.0, 50.0, 160.0], "box 1 lies entirely outside"),
    ],
)
def test_bad_boxes_are_rejected_with_their_index(predictor, rgb_image, bad_box, words: str) -> None:
    predictor.set_image(rgb_image)
    with pytest.raises(InputError, match=words):
        predictor.predict([[0.0, 0.0, 20.0, 20.0], bad_box])


def test_box_array_shape_is_checked() -> None:
    with pytest.raises(InputError, match=r"\[N, 4\]"):
        check_boxes(np.zeros((2, 3)), (10, 10))
    np.testing.assert_array_equal(check_boxes([1, 2, 3, 4], (10, 10)), [[1, 2, 3, 4]])


def test_unknown_taps_and_missing_tasks(predictor, rgb_image, tmp_path) -> None:
    predictor.set_image(rgb_image)
    with pytest.raises(InputError, match="unknown taps.*fc7"):
        predictor.predict(BOXES, taps=["fc7"])
    with pytest.raises(InputError, match="at least one tap"):
        predictor.predict(BOXES, taps=[])
    fg_only = HypercolumnPredictor(build_hypercolumn(tiny_person_config(tasks=("figure_ground",))), device="cpu")
    fg_only.set_image(rgb_image)
    with pytest.raises(InputError, match="no \\['keypoints'\\] head"):
        fg_only.predict(BOXES, tasks=["keypoints"])


def test_class_specific_checkpoint_needs_each_boxs_known_category(rgb_image) -> None:
    model = build_hypercolumn(tiny_person_config(class_names=("person", "horse"), class_specific=True))
    predictor = HypercolumnPredictor(model, device="cpu")
    predictor.set_image(rgb_image)
    with pytest.raises(InputError, match="class-specific"):
        predictor.predict(BOXES)
    with pytest.raises(InputError, match="\\['cat'\\] are not among the checkpoint's classes"):
        predictor.predict(BOXES, categories=["person", "cat", "horse"])
    with pytest.raises(InputError, match="categories must name 3 boxes"):
        predictor.predict(BOXES, categories=["person", "horse"])
    assert predictor.predict(BOXES, categories=["person", "horse", "horse"]).figure_ground.shape == (3, 24, 24)


def test_device_choice() -> None:
    assert choose_device("cpu").device == torch.device("cpu")
    auto = choose_device("auto")
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        fallback = choose_device("cuda")
        assert fallback.device == torch.device("cpu") and "no usable GPU" in fallback.warning
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        choose_device("tpu")


def test_model_built_under_inference_mode(rgb_image) -> None:
    """An app may load its checkpoint inside torch.inference_mode(); the predictor must cope."""
    with torch.inference_mode():
        model = build_hypercolumn(tiny_person_config(tasks=("figure_ground",)))
        predictor = HypercolumnPredictor(model, device="cpu")
        predictor.set_image(rgb_image)
        inside = predictor.predict(BOXES).figure_ground
    predictor.set_image(rgb_image)
    np.testing.assert_array_equal(predictor.predict(BOXES).figure_ground, inside)
