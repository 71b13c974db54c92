"""Keypoints and parts belong to the categories their heads were trained on (a person's box gets
a skeleton, a motorcycle's does not), and edge refinement snaps a coarse mask to image edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_person_config
from hcviewer.inference import HypercolumnPredictor, InputError, paste_masks
from hcviewer.modeling.config import HypercolumnConfig
from hcviewer.refine import REFINE_MAX_SIDE, REFINE_METHODS, refine_probability

BOXES = np.array([[40.0, 20.0, 120.0, 100.0], [10.0, 10.0, 70.0, 110.0], [60.0, 30.0, 150.0, 90.0],
                  [0.0, 0.0, 160.0, 120.0], [30.0, 40.0, 90.0, 80.0]], np.float32)


@pytest.fixture
def predictor(tiny_checkpoint: Path, rgb_image: np.ndarray) -> HypercolumnPredictor:
    predictor = HypercolumnPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    predictor.set_image(rgb_image)
    return predictor


def test_keypoints_and_parts_only_for_the_heads_categories(predictor):
    labels = ["person", "motorcycle", None, "object", "Person"]
    result = predictor.predict(BOXES, categories=labels)
    # None: no category named, every head answers; "object" names none: not a person's
    assert result.has_keypoints.tolist() == [True, False, True, False, True]
    assert result.has_parts.tolist() == [True, False, True, False, True]
    motorcycle = result.keypoints[1]
    assert np.isnan(motorcycle[:, :2]).all() and (motorcycle[:, 2] == 0).all()
    assert not result.keypoint_heatmaps[1].any() and not result.parts[1].any()
    people = result.keypoints[result.has_keypoints]
    assert np.isfinite(people).all() and ((people[..., 2] > 0) & (people[..., 2] <= 1)).all()
    # Figure-ground answers every box, whatever its label.
    unlabelled = predictor.predict(BOXES)
    assert np.allclose(result.figure_ground, unlabelled.figure_ground)
    assert unlabelled.has_keypoints.all() and np.allclose(unlabelled.keypoints[0], result.keypoints[0])


def test_categories_must_match_the_boxes(predictor):
    with pytest.raises(InputError, match="categories must name"):
        predictor.predict(BOXES, categories=["person"])


def test_applies_follows_the_checkpoint():
    person = tiny_person_config()
    assert person.applies_to("keypoints", "person") and not person.applies_to("keypoints", "motorcycle")
    assert not person.applies_to("keypoints", "unknown") and person.applies_to("figure_ground", "motorcycle")
    dogs = tiny_person_config(keypoint_categories=("dog",), part_categories=())
    assert dogs.applies_to("keypoints", "dog") and not dogs.applies_to("keypoints", "person")
    assert dogs.applies_to("parts", "motorcycle")  # no categories recorded: every box
    masks_only = tiny_person_config(tasks=("figure_ground",))
    assert not masks_only.applies_to("keypoints", "person") and not masks_only.applies_to("parts", None)


def test_checkpoints_without_categories_answer_people():
    """Checkpoints written before the fields existed were trained on people."""
    header = tiny_person_config().to_dict()
    for key in ("keypoint_categories", "part_categories", "part_colors"):
        header.pop(key)
    config = HypercolumnConfig.from_dict(header)
    assert config.keypoint_categories == ("person",) and config.part_categories == ("person",)
    assert config.part_colors == ()


def test_part_colours_must_fit_the_part_names():
    with pytest.raises(ValueError, match="part_colors"):
        tiny_person_config(part_colors=((255, 0, 0),))
    with pytest.raises(ValueError, match="part_colors"):
        tiny_person_config(part_colors=((255, 0, 0), (0, 255, 0), (0, 0, 300)))


def square_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A bright square on a textured dark image, its box with a margin, the true mask, and a
    coarse probability map over the box: the square blurred and grown by a few cells."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 60, (200, 240, 3), dtype=np.uint8)
    image[60:140, 70:170] = rng.integers(180, 255, (80, 100, 3), dtype=np.uint8)
    truth = np.zeros(image.shape[:2], bool)
    truth[60:140, 70:170] = True
    box = np.array([60.0, 50.0, 180.0, 150.0], np.float32)
    coarse = np.zeros((10, 12), np.float32)
    coarse[1:9, 1:11] = 1.0  # the square on a 10 x 12 grid over the box: blocky edges
    import cv2

    probability = cv2.GaussianBlur(cv2.resize(coarse, (50, 50), interpolation=cv2.INTER_LINEAR), (0, 0), 4)
    probability = np.clip(probability * 1.15, 0, 1)  # a little too big, as a blurred mask is
    return image, box, truth, probability


@pytest.mark.parametrize("method", REFINE_METHODS)
def test_refinement_moves_the_mask_onto_the_image_edges(method):
    from hcviewer.inference.predictor import Prediction

    image, box, truth, probability = square_scene()
    refined = refine_probability(image, box, probability, method)
    assert refined.dtype == np.float32 and max(refined.shape) <= REFINE_MAX_SIDE
    assert refined.min() >= 0 and refined.max() <= 1

    def iou(mask):
        return np.count_nonzero(mask & truth) / np.count_nonzero(mask | truth)

    plain = Prediction(box[None], (), figure_ground=probability[None])
    sharp = Prediction(box[None], (), figure_ground=probability[None], refined=[refined])
    before, after = iou(paste_masks(plain, truth.shape, 0.5)[0]), iou(paste_masks(sharp, truth.shape, 0.5)[0])
    assert after > before + 0.02 and after > 0.9


def test_predict_refines_on_request(predictor, rgb_image):
    plain = predictor.predict(BOXES[:2])
    assert plain.refined is None
    refined = predictor.predict(BOXES[:2], refine=True)
    assert len(refined.refined) == 2 and all(m.ndim == 2 for m in refined.refined)
    masks = paste_masks(refined, rgb_image.shape[:2], 0.5)
    assert masks.shape == (2, *rgb_image.shape[:2]) and not masks[:, :, :5].any()  # nothing outside the boxes
    with pytest.raises(InputError, match="refinement"):
        predictor.predict(BOXES[:1], refine="magic")
