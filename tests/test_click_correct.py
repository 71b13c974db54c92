"""Click to correct (hcviewer.click_correct) on synthetic photos: a positive click in a region
the model missed adds it, a negative click in a false region removes it, and nothing far from
the click changes."""

from __future__ import annotations

import numpy as np
import pytest

from hcviewer.click_correct import CLICK_METHODS, Click, box_pixels, correct_in_box, correct_mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def scene(height: int = 120, width: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy dark photo with a bright object (a rectangle): (image [h, w, 3] uint8, object bool)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(50, 8, (height, width, 3))
    obj = np.zeros((height, width), bool)
    obj[height // 5:height * 4 // 5, width // 5:width * 4 // 5] = True
    image[obj] = rng.normal(200, 8, (obj.sum(), 3))
    return image.clip(0, 255).astype(np.uint8), obj


def missed_right_part(obj: np.ndarray, part: float = 0.5) -> np.ndarray:
    """The model's probabilities: sure of the object but its right ``part``, sure that is background."""
    probability = np.where(obj, 0.95, 0.03).astype(np.float32)
    cols = np.flatnonzero(obj.any(axis=0))
    probability[:, round(cols[-1] - part * (cols[-1] - cols[0])):] = 0.03
    return probability


@pytest.mark.parametrize("method", CLICK_METHODS)
@pytest.mark.parametrize("size", [(120, 160), (480, 640)])  # a box smaller than the work crop, and one larger
def test_a_positive_click_in_a_missed_region_adds_it(method: str, size: tuple[int, int]) -> None:
    image, obj = scene(*size)
    probability = missed_right_part(obj)
    mask = probability >= 0.5
    rows, cols = np.flatnonzero(obj.any(axis=1)), np.flatnonzero(obj.any(axis=0))
    click = Click(cols[-1] - (cols[-1] - cols[0]) / 4, (rows[0] + rows[-1]) / 2, True)  # in the missed half
    corrected = correct_mask(image, probability, mask, [click], method)
    assert iou(mask, obj) < 0.6
    assert iou(corrected, obj) > 0.9
    assert corrected[mask].mean() > 0.99  # what was right stays


def test_a_negative_click_removes_a_false_region_and_nothing_far_from_it() -> None:
    """(GrabCut keeps it: the object's colour model, learnt from the mask, has its colours.)"""
    image, obj = scene()
    false_near, false_far = np.zeros_like(obj), np.zeros_like(obj)
    false_near[2:20, 2:20] = True  # background the model took for object, top-left
    false_far[100:118, 140:158] = True  # and bottom-right: not clicked
    image[false_near] = (120, 60, 160)  # a purple thing in the background
    image[false_far] = (60, 160, 120)  # and a green one
    probability = np.where(obj | false_near | false_far, 0.8, 0.05).astype(np.float32)
    mask = probability >= 0.5
    corrected = correct_mask(image, probability, mask, [Click(11, 11, False)])
    assert not corrected[false_near].any()
    assert corrected[false_far].all()  # far from the click: untouched
    assert iou(corrected & ~false_far, obj) > 0.95


@pytest.mark.parametrize("method", CLICK_METHODS)
def test_every_click_keeps_its_label_and_no_click_changes_nothing(method: str) -> None:
    image, obj = scene()
    probability = np.where(obj, 0.99, 0.01).astype(np.float32)
    mask = probability >= 0.5
    assert np.array_equal(correct_mask(image, probability, mask, [], method), mask)
    clicks = [Click(80.5, 60.5, False), Click(5.5, 5.5, True)]  # against a confident model
    corrected = correct_mask(image, probability, mask, clicks, method)
    assert not corrected[60, 80] and corrected[5, 5]


def test_without_a_model_the_mask_is_the_prior() -> None:
    image, obj = scene()
    mask = missed_right_part(obj) >= 0.5
    corrected = correct_mask(image, None, mask, [Click(110, 60, True)])
    assert iou(corrected, obj) > iou(mask, obj) + 0.3


def test_correct_in_box_reads_the_box_of_the_image_and_the_model_map_over_it() -> None:
    image, obj = scene(200, 240)
    box = np.array([30.0, 20.0, 210.0, 180.0])  # around the object, in image pixels
    x0, y0, x1, y1 = box_pixels(box, image.shape[:2])
    box_map = missed_right_part(obj, 0.3)[y0:y1, x0:x1]  # a box map at the box's own resolution
    mask = box_map >= 0.5
    corrected = correct_in_box(image, box, box_map, mask, [Click(170.5, 100.5, True)])
    assert corrected.shape == (y1 - y0, x1 - x0)
    assert iou(corrected, obj[y0:y1, x0:x1]) > 0.9


def test_an_unknown_method_is_refused_by_name() -> None:
    image, obj = scene()
    with pytest.raises(ValueError, match="unknown click correction 'magic'; use one of bump, grabcut"):
        correct_mask(image, None, obj, [Click(1, 1, True)], "magic")
