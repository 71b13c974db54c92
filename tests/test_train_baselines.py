"""Baselines: exact box and ellipse masks, GrabCut on a synthetic disc; the mean-pose keypoint
floor and the keypoint grid's ceiling, alone and as rows of the evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hcviewer.categories import COCO_PERSON_KEYPOINTS
from hcviewer.data.synthetic import make_synthetic_dataset
from hcviewer.train.baselines import (BASELINES, COCO_PERSON_MEAN_POSE, KEYPOINT_BASELINES, box_filled, grabcut,
                                      grid_ceiling_keypoints, inscribed_ellipse, mean_pose, mean_pose_keypoints)
from hcviewer.train.evaluate import evaluate
from hcviewer.train.metrics import mask_iou


def disc_scene(h: int = 120, w: int = 160, centre: tuple[float, float] = (80, 60), radius: float = 30,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright noisy disc on a dark noisy background -> (rgb uint8, disc mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    disc = (xx + 0.5 - centre[0]) ** 2 + (yy + 0.5 - centre[1]) ** 2 <= radius ** 2
    image = np.where(disc[..., None], rng.normal(190, 20, (h, w, 3)), rng.normal(50, 20, (h, w, 3)))
    return image.clip(0, 255).astype(np.uint8), disc


def test_registry_names_the_three_baselines() -> None:
    assert BASELINES == {"box": box_filled, "ellipse": inscribed_ellipse, "grabcut": grabcut}


def test_box_filled_covers_pixels_whose_centres_are_inside() -> None:
    image = np.zeros((10, 12, 3), np.uint8)
    mask = box_filled(image, (2.5, 1.0, 5.5, 3.4))  # columns 2..4, rows 1..2
    expected = np.zeros((10, 12), bool)
    expected[1:3, 2:5] = True
    assert mask.dtype == bool and (mask == expected).all()
    assert box_filled(image, (-4, -4, 100, 100)).all()
    assert not box_filled(image, (20, 20, 30, 30)).any()


def test_inscribed_ellipse_is_about_pi_over_4_of_the_box_and_inside_it() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    box = (20, 30, 220, 130)  # 200 x 100
    mask = inscribed_ellipse(image, box)
    assert mask.sum() / (200 * 100) == pytest.approx(math.pi / 4, abs=0.01)
    assert not (mask & ~box_filled(image, box)).any()
    assert mask[80, 120]  # the centre
    assert not mask[30, 20] and not mask[129, 219]  # the corners


def test_grabcut_segments_a_disc_from_its_box_and_is_deterministic() -> None:
    image, disc = disc_scene()
    box = (46, 26, 114, 94)  # the disc's box with a 4 px slack
    mask = grabcut(image, box)
    assert mask_iou(mask, disc) > 0.8
    assert mask_iou(mask, disc) > mask_iou(inscribed_ellipse(image, box), disc) - 0.05
    assert (grabcut(image, box) == mask).all()
    assert not (mask & ~box_filled(image, box)).any()


def test_grabcut_on_a_large_image_works_on_a_downscaled_crop() -> None:
    image, disc = disc_scene(h=600, w=800, centre=(400, 300), radius=200, seed=1)
    mask = grabcut(image, (190, 90, 610, 510))
    assert mask.shape == disc.shape
    assert mask_iou(mask, disc) > 0.8


@pytest.mark.parametrize("box", [(0, 0, 160, 120), (-10, -10, 114, 94), (40, 20, 200, 140)])
def test_grabcut_handles_boxes_touching_or_beyond_the_border(box: tuple[float, ...]) -> None:
    image, disc = disc_scene()
    mask = grabcut(image, box)
    assert not (mask & ~box_filled(image, box)).any()
    assert mask_iou(mask, disc) > 0.8


def test_grabcut_falls_back_to_the_box_for_tiny_boxes_and_accepts_grey_images() -> None:
    image, _ = disc_scene()
    box = (10, 10, 13, 40)  # 3 px wide
    assert (grabcut(image, box) == box_filled(image, box)).all()
    grey = image[..., 0]
    assert grabcut(grey, (46, 26, 114, 94)).shape == grey.shape
    with pytest.raises(ValueError, match="8-bit"):
        grabcut(image.astype(np.float32), box)


def test_mean_pose_averages_each_joint_over_the_boxes_that_label_it() -> None:
    boxes = np.array([[0, 0, 100, 200], [50, 50, 60, 70]], float)
    keypoints = np.array([[[10, 20, 2], [50, 100, 1], [0, 0, 0]],
                          [[55, 60, 2], [99, 99, 0], [0, 0, 0]]], float)  # v = 0: not labelled, not counted
    pose = mean_pose(keypoints, boxes)
    np.testing.assert_allclose(pose[:2], [[0.3, 0.3], [0.5, 0.5]])
    assert np.isnan(pose[2]).all()  # no box labels the third joint


def test_mean_pose_baseline_stretches_the_coco_pose_to_each_box() -> None:
    boxes = np.array([[10, 20, 110, 220], [0, 0, 50, 25]], float)
    keypoints = mean_pose_keypoints(boxes, np.zeros((2, 17, 3)))
    assert keypoints.shape == (2, 17, 3)
    np.testing.assert_allclose(keypoints[0, :, 0], 10 + 100 * COCO_PERSON_MEAN_POSE[:, 0])
    np.testing.assert_allclose(keypoints[1, :, 1], 25 * COCO_PERSON_MEAN_POSE[:, 1])
    labelled = np.concatenate([keypoints[..., :2], np.full((2, 17, 1), 2.0)], -1)
    np.testing.assert_allclose(mean_pose(labelled, boxes), COCO_PERSON_MEAN_POSE)  # read back as stretched
    with pytest.raises(ValueError, match="17 person keypoints"):
        mean_pose_keypoints(boxes, np.zeros((2, 14, 3)))


def test_the_coco_mean_pose_is_a_person_facing_the_camera() -> None:
    pose = dict(zip(COCO_PERSON_KEYPOINTS, COCO_PERSON_MEAN_POSE))
    assert ((COCO_PERSON_MEAN_POSE > 0) & (COCO_PERSON_MEAN_POSE < 1)).all()
    heights = [pose[n][1] for n in ("left_eye", "nose", "left_shoulder", "left_hip", "left_knee", "left_ankle")]
    assert heights == sorted(heights)  # head down to feet
    for joint in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
        assert pose[f"left_{joint}"][0] > pose[f"right_{joint}"][0], joint  # the person's left, the image's right


def test_grid_ceiling_is_the_ground_truth_to_half_a_cell() -> None:
    rng = np.random.default_rng(0)
    boxes = np.array([[10, 20, 110, 220], [0, 0, 37, 53]], float)
    size = boxes[:, None, 2:] - boxes[:, None, :2]
    inside = boxes[:, None, :2] + rng.uniform(0, 1, (2, 17, 2)) * size
    ground_truth = np.concatenate([inside, np.full((2, 17, 1), 2.0)], -1)
    ceiling = grid_ceiling_keypoints(boxes, ground_truth, size=50)
    cell = size / 50
    assert (np.abs(ceiling[..., :2] - inside) <= cell / 2 + 1e-4).all()
    # Exactly the cell centres: one-hot training targets decode to them.
    centres = boxes[:, None, :2] + (np.floor((inside - boxes[:, None, :2]) / cell) + 0.5) * cell
    np.testing.assert_allclose(ceiling[..., :2], centres, atol=1e-4)


def test_grid_ceiling_puts_a_keypoint_outside_its_box_at_the_nearest_cell() -> None:
    boxes = np.array([[0, 0, 100, 100]], float)
    ground_truth = np.zeros((1, 17, 3))
    ground_truth[0, :, 2] = 2
    ground_truth[0, 0, :2] = (150, 50.5)  # right of the box
    ground_truth[0, 1, :2] = (-20, -30)  # above and left
    ceiling = grid_ceiling_keypoints(boxes, ground_truth, size=50)
    np.testing.assert_allclose(ceiling[0, 0, :2], (99, 51), atol=1e-4)
    np.testing.assert_allclose(ceiling[0, 1, :2], (1, 1), atol=1e-4)


def test_keypoint_baselines_are_rows_of_the_evaluation_scored_as_the_network() -> None:
    dataset = make_synthetic_dataset(4, seed=3)
    report = evaluate(None, dataset, baselines=("box", "mean-pose", "grid-ceiling"), min_area=64, progress=False)
    box, mean, ceiling = (report.method(n) for n in ("box", "mean-pose", "grid-ceiling"))
    assert report.num_keypoint_objects > 0
    assert box.pck is None and not math.isnan(box.mask_iou)  # a mask baseline gives no keypoints
    for row in (mean, ceiling):  # keypoint baselines give no masks: empty columns, not zeros
        assert math.isnan(row.mask_iou) and all(math.isnan(v) for v in row.segm_ap.values())
    assert ceiling.pck > 0.95 and ceiling.keypoint_ap["AP"] > 0.8
    assert 0 < mean.pck < ceiling.pck and mean.keypoint_ap["AP"] < ceiling.keypoint_ap["AP"]
    assert "| mean-pose | - | - |" in report.markdown()
    assert set(KEYPOINT_BASELINES) == {"mean-pose", "grid-ceiling"}


def test_an_unknown_baseline_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown baseline mean_pose; choose from box, ellipse, grabcut, mean-pose"):
        evaluate(None, make_synthetic_dataset(1, seed=0), baselines=("mean_pose",), progress=False)
