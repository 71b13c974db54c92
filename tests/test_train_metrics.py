"""Metrics on hand-made cases whose answers are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from hcviewer.train.metrics import (box_mask_iou, box_region, coco_keypoint_ap, coco_segm_ap, mask_iou,
                                    part_mean_iou, pck)


def square(top: int, left: int, size: int = 10, shape: tuple[int, int] = (40, 40)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:top + size, left:left + size] = True
    return mask


# --- mask IoU ---------------------------------------------------------------------------------

def test_mask_iou_of_overlapping_squares_is_the_exact_fraction() -> None:
    # Two 10 x 10 squares offset by (3, 4): intersection 7 * 6 = 42, union 200 - 42 = 158.
    assert mask_iou(square(0, 0), square(3, 4)) == pytest.approx(42 / 158, abs=1e-12)


def test_mask_iou_identical_disjoint_and_empty() -> None:
    assert mask_iou(square(5, 5), square(5, 5)) == 1.0
    assert mask_iou(square(0, 0), square(20, 20)) == 0.0
    empty = np.zeros((40, 40), bool)
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(empty, square(0, 0)) == 0.0


def test_mask_iou_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        mask_iou(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_box_region_uses_pixel_centres() -> None:
    # Pixel c is inside when x0 <= c + 0.5 < x1: x in [2.5, 5.5) holds centres 2.5, 3.5, 4.5.
    rows, cols = box_region((2.5, 0.0, 5.5, 1.0), (10, 10))
    assert (cols.start, cols.stop) == (2, 5)
    assert (rows.start, rows.stop) == (0, 1)
    # A centre exactly on x1 is outside; on x0 inside.
    rows, cols = box_region((2.0, 2.0, 4.5, 4.5), (10, 10))
    assert (cols.start, cols.stop) == (2, 4)
    # Clipped to the image.
    rows, cols = box_region((-5, -5, 50, 50), (10, 12))
    assert (rows.start, rows.stop, cols.start, cols.stop) == (0, 10, 0, 12)
    with pytest.raises(ValueError, match="non-finite"):
        box_region((0, 0, float("nan"), 3), (10, 10))


def test_box_mask_iou_ignores_pixels_outside_the_box() -> None:
    gt = square(0, 0, size=20)
    pred = square(0, 0, size=10)
    # Inside box [0, 10) x [0, 10) both masks are full; outside, gt's extra 300 px do not count.
    assert box_mask_iou(pred, gt, (0, 0, 10, 10)) == 1.0
    # Box [0, 20) x [0, 10): prediction 100 px of gt's 200.
    assert box_mask_iou(pred, gt, (0, 0, 20, 10)) == pytest.approx(0.5)
    assert math.isnan(box_mask_iou(pred, gt, (50, 50, 60, 60)))


# --- PCK --------------------------------------------------------------------------------------

def test_pck_counts_keypoints_within_alpha_of_the_box_size() -> None:
    # Box 100 x 50 -> threshold 0.1 * 100 = 10 px.
    boxes = np.array([[0, 0, 100, 50]], float)
    gt = np.array([[[50, 20, 2], [50, 20, 1], [50, 20, 2], [50, 20, 0]]], float)
    pred = np.array([[[56, 28],        # distance 10 exactly (6, 8): correct
                      [50, 30.001],    # just beyond 10: wrong
                      [50, 20],        # exact: correct
                      [0, 0]]], float)  # unlabelled: not counted
    assert pck(pred, gt, boxes) == pytest.approx(2 / 3)
    assert pck(pred, gt, boxes, alpha=0.2) == pytest.approx(1.0)


def test_pck_uses_each_objects_own_box() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 200, 100]], float)
    gt = np.array([[[5, 5, 2]], [[5, 5, 2]]], float)
    pred = np.array([[[9, 5]], [[9, 5]]], float)  # 4 px off: > 1 px for the small box, < 20 for the big
    assert pck(pred, gt, boxes) == pytest.approx(0.5)


def test_pck_is_nan_without_labelled_keypoints_and_checks_shapes() -> None:
    gt = np.zeros((2, 3, 3))
    assert math.isnan(pck(np.zeros((2, 3, 2)), gt, np.ones((2, 4))))
    with pytest.raises(ValueError, match="expected pred"):
        pck(np.zeros((2, 3, 2)), np.zeros((2, 4, 3)), np.ones((2, 4)))


# --- part mean IoU ----------------------------------------------------------------------------

def test_part_mean_iou_from_a_hand_made_confusion() -> None:
    # Two objects of 1 x 4 labels; classes 0 (background), 1, 2, 3 (3 absent everywhere).
    gt = [np.array([[0, 0, 1, 1]]), np.array([[2, 2, 1, -1]])]
    pred = [np.array([[0, 1, 1, 1]]), np.array([[2, 0, 1, 3]])]  # the -1 pixel is ignored
    result = part_mean_iou(pred, gt, num_classes=4)
    assert result["confusion"] == [[1, 1, 0, 0],
                                   [0, 3, 0, 0],
                                   [1, 0, 1, 0],
                                   [0, 0, 0, 0]]
    # IoU: class 0: 1 / (2 + 2 - 1) = 1/3; class 1: 3 / (3 + 4 - 3) = 3/4; class 2: 1 / (2 + 1 - 1) = 1/2.
    iou = result["per_class_iou"]
    assert iou[:3] == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert math.isnan(iou[3])
    assert result["mean_iou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert result["mean_iou_no_background"] == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_part_mean_iou_perfect_and_errors() -> None:
    labels = [np.array([[0, 1], [2, 2]])]
    assert part_mean_iou(labels, labels, 3)["mean_iou"] == 1.0
    with pytest.raises(ValueError, match="predicted labels"):
        part_mean_iou([np.array([[0, 5], [2, 2]])], labels, 3)
    with pytest.raises(ValueError, match="object 0"):
        part_mean_iou([np.zeros((3, 3), int)], labels, 3)


# --- COCO segmentation AP ---------------------------------------------------------------------

def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def segm_gt(masks: list[np.ndarray]) -> dict:
    h, w = masks[0].shape
    return {"images": [{"id": 1, "width": w, "height": h}],
            "categories": [{"id": 1, "name": "object"}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": rle(m),
                             "area": float(m.sum()), "bbox": [0, 0, 1, 1]} for i, m in enumerate(masks, 1)]}


def detection(mask: np.ndarray, score: float = 0.9) -> dict:
    return {"image_id": 1, "category_id": 1, "segmentation": rle(mask), "score": score}


def test_segm_ap_of_perfect_detections_is_one() -> None:
    masks = [square(0, 0), square(20, 20, size=15)]
    ap = coco_segm_ap(segm_gt(masks), [detection(m) for m in masks])
    assert ap == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP70": 1.0, "AP75": 1.0})


def test_segm_ap_of_a_detection_at_iou_0_6_passes_0_5_and_fails_0_7() -> None:
    gt = square(0, 0)
    pred = np.zeros_like(gt)
    pred[0:10, 0:6] = True  # 60 of the 100 gt pixels, nothing else: IoU 0.6
    assert mask_iou(pred, gt) == pytest.approx(0.6)
    ap = coco_segm_ap(segm_gt([gt]), [detection(pred)])
    assert ap["AP50"] == pytest.approx(1.0)
    assert ap["AP70"] == 0.0
    assert ap["AP75"] == 0.0


def test_segm_ap_without_detections_or_ground_truth() -> None:
    gt = segm_gt([square(0, 0)])
    assert coco_segm_ap(gt, []) == {"AP": 0.0, "AP50": 0.0, "AP70": 0.0, "AP75": 0.0}
    empty_gt = {**gt, "annotations": []}
    assert all(math.isnan(v) for v in coco_segm_ap(empty_gt, [detection(square(0, 0))]).values())


def test_segm_ap_leaves_its_inputs_unchanged_and_fills_missing_fields() -> None:
    masks = [square(0, 0)]
    gt = segm_gt(masks)
    for ann in gt["annotations"]:
        del ann["area"], ann["iscrowd"]
    dets = [detection(masks[0])]
    before = repr(gt), repr(dets)
    assert coco_segm_ap(gt, dets)["AP"] == pytest.approx(1.0)
    assert (repr(gt), repr(dets)) == before


def test_segm_ap_keeps_more_than_100_detections_per_image() -> None:
    # 121 objects in one image, all found: COCO's default cap of 100 would miss 21.
    masks = [square(4 * (i // 11), 4 * (i % 11), size=3, shape=(44, 44)) for i in range(121)]
    assert coco_segm_ap(segm_gt(masks), [detection(m) for m in masks])["AP50"] == pytest.approx(1.0)


def test_segm_ap_refuses_detections_on_unknown_images() -> None:
    masks = [square(0, 0)]
    with pytest.raises(ValueError, match="image ids"):
        coco_segm_ap(segm_gt(masks), [{**detection(masks[0]), "image_id": 7}])


# --- COCO keypoint AP -------------------------------------------------------------------------

def keypoint_gt(people: list[np.ndarray]) -> dict:
    return {"images": [{"id": 1, "width": 200, "height": 200}],
            "categories": [{"id": 1, "name": "person", "keypoints": [f"k{j}" for j in range(len(people[0]))]}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 60.0 * 60.0,
                             "bbox": [20, 20, 60, 60], "keypoints": kp.reshape(-1).tolist(),
                             "num_keypoints": int((kp[:, 2] > 0).sum())} for i, kp in enumerate(people, 1)]}


def keypoint_detection(xy: np.ndarray) -> dict:
    flat = np.concatenate([xy, np.ones((len(xy), 1))], 1).reshape(-1).tolist()
    return {"image_id": 1, "category_id": 1, "keypoints": flat, "score": 0.8}


@pytest.mark.parametrize("joints", [17, 5])  # COCO's sigmas, and the generic ones for other skeletons
def test_keypoint_ap_perfect_is_one_and_far_off_is_zero(joints: int) -> None:
    rng = np.random.default_rng(joints)
    xy = rng.uniform(30, 70, size=(joints, 2))
    person = np.concatenate([xy, np.full((joints, 1), 2.0)], 1)
    gt = keypoint_gt([person])
    assert coco_keypoint_ap(gt, [keypoint_detection(xy)]) == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0})
    wrong = coco_keypoint_ap(gt, [keypoint_detection(xy + 60.0)])
    assert wrong == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}


def test_keypoint_ap_checks_given_sigmas() -> None:
    person = np.array([[40, 40, 2], [50, 50, 2]], float)
    gt = keypoint_gt([person])
    assert coco_keypoint_ap(gt, [keypoint_detection(person[:, :2])], sigmas=[0.1, 0.1])["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sigmas"):
        coco_keypoint_ap(gt, [keypoint_detection(person[:, :2])], sigmas=[0.1])
