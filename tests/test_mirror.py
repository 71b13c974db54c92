"""Mirror averaging: the predictor's answer for a box is the mean of its answer on the image and,
flipped back with left and right keypoints swapped, on the mirror image; evaluation and
calibration score the same answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hcviewer.data.synthetic import make_synthetic_dataset
from hcviewer.inference import HypercolumnPredictor
from hcviewer.modeling.checkpoint import load_checkpoint
from hcviewer.modeling.mirror import flip_permutation
from hcviewer.train.calibrate import mask_ious_by_threshold
from hcviewer.train.evaluate import predict_subsets

# inside the 256 x 192 image: no resizing, so the mirror image's input is the input's mirror
BOXES = np.array([[30.0, 20.0, 150.0, 170.0], [100.0, 50.0, 250.0, 120.0]], np.float32)
WIDTH = 256


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, size=(192, WIDTH, 3), dtype=np.uint8)
    rgb[40:160, 40:120] = (220, 40, 40)  # an object left of centre: the image is not its own mirror
    return rgb


def _mirrored(boxes: np.ndarray) -> np.ndarray:
    return np.stack([WIDTH - boxes[:, 2], boxes[:, 1], WIDTH - boxes[:, 0], boxes[:, 3]], axis=1)


def test_an_answer_is_its_mirror_images_answer_flipped_back(tiny_checkpoint: Path, image: np.ndarray) -> None:
    predictor = HypercolumnPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    predictor.set_image(image)
    here = predictor.predict(BOXES, contributions=True)
    predictor.set_image(np.ascontiguousarray(image[:, ::-1]))
    there = predictor.predict(_mirrored(BOXES), contributions=True)

    order = flip_permutation(predictor.config.keypoint_names)
    assert order[5:7] == [6, 5]  # left and right shoulders swap
    np.testing.assert_allclose(here.figure_ground, there.figure_ground[..., ::-1], atol=1e-5)
    np.testing.assert_allclose(here.parts, there.parts[..., ::-1], atol=1e-5)
    np.testing.assert_allclose(here.keypoint_heatmaps, there.keypoint_heatmaps[:, order, :, ::-1], atol=1e-5)
    # the averaged parts still add up to the averaged logits
    for task, logits in here.logits.items():
        total = here.bias[task][:, :, None, None] + sum(here.contributions[task].values())
        np.testing.assert_allclose(logits, total, atol=1e-4)


def test_the_answer_is_the_mean_of_the_image_and_the_mirror(tiny_checkpoint: Path, image: np.ndarray) -> None:
    plain = HypercolumnPredictor.from_checkpoint(tiny_checkpoint, device="cpu", mirror=False)
    plain.set_image(image)
    own = plain.predict(BOXES).logits["figure_ground"]
    plain.set_image(np.ascontiguousarray(image[:, ::-1]))
    mirror = plain.predict(_mirrored(BOXES)).logits["figure_ground"][..., ::-1]
    assert np.abs(own - mirror).max() > 1e-3  # the two views differ, so averaging does something

    averaged = HypercolumnPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    averaged.set_image(image)
    np.testing.assert_allclose(averaged.predict(BOXES).logits["figure_ground"], (own + mirror) / 2, atol=1e-5)


def test_evaluation_and_calibration_score_the_predictors_answers(tiny_checkpoint: Path, image: np.ndarray) -> None:
    model, _ = load_checkpoint(tiny_checkpoint)
    model.eval()
    for mirror in (True, False):
        predictor = HypercolumnPredictor(model, "cpu", mirror=mirror)
        predictor.set_image(image)
        with torch.inference_mode():
            scored = predict_subsets(model, image, BOXES, [model.taps], torch.device("cpu"), mirror=mirror)
        for task, logits in scored[model.taps].items():
            np.testing.assert_allclose(logits.numpy(), predictor.predict(BOXES).logits[task], atol=1e-4)

    data = make_synthetic_dataset(3, seed=0)
    averaged, plain = (mask_ious_by_threshold(model, data, (0.3, 0.5), mirror=m) for m in (True, False))
    assert averaged.shape == plain.shape and not np.allclose(averaged, plain)
