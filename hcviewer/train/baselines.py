"""Baselines scored beside the network: what a method without it gets on the same boxes.

Masks (``BASELINES``): ``(image_rgb [H, W, 3] uint8, box_xyxy) -> bool mask [H, W]``. A pixel (r, c)
is inside box (x0, y0, x1, y1) when its centre (c + 0.5, r + 0.5) satisfies x0 <= c + 0.5 < x1 and
y0 <= r + 0.5 < y1 (``hcviewer.paste.box_pixel_range``); every mask is empty outside the box.

Keypoints (``KEYPOINT_BASELINES``): ``(boxes [N, 4] xyxy, ground truth [N, J, 3]) -> [N, J, 3]``
(x, y, score) in image pixels. ``mean-pose`` is the floor (the average COCO training pose
stretched to each box, no network, the ground truth unread); ``grid-ceiling`` the most the
keypoint head's S x S grid allows (the ground truth encoded as the head's training targets, then
decoded as its predictions are).
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

import torch

from hcviewer.categories import COCO_PERSON_KEYPOINTS
from hcviewer.data.targets import keypoint_targets
from hcviewer.modeling.keypoints import heatmaps_to_keypoints
from hcviewer.refine import padded_crop
from hcviewer.train.metrics import box_region

GRABCUT_MAX_SIDE = 256  # GrabCut runs on the box crop downscaled to this long side, for speed
GRABCUT_MIN_BOX = 4  # narrower boxes leave GrabCut too few pixels; they get the filled box


def box_filled(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Every pixel of the box is foreground."""
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[box_region(box, image.shape)] = True
    return mask


def inscribed_ellipse(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The axis-aligned ellipse inscribed in the box (pixel centres inside it), about pi/4 of the box."""
    mask = np.zeros(image.shape[:2], dtype=bool)
    rows, cols = box_region(box, image.shape)
    x0, y0, x1, y1 = (float(v) for v in box)
    if rows.start == rows.stop or cols.start == cols.stop:
        return mask
    u = (np.arange(cols.start, cols.stop) + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2)
    v = (np.arange(rows.start, rows.stop) + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)
    mask[rows, cols] = v[:, None] ** 2 + u[None, :] ** 2 <= 1.0
    return mask


def grabcut(image: np.ndarray, box: Sequence[float], iterations: int = 5) -> np.ndarray:
    """OpenCV GrabCut initialised with the box (outside: background, inside: probably foreground).

    Runs on a crop around the box with a margin of background (the image edge replicated where
    the box touches the border, so there is always background to model), downscaled so its long
    side is at most GRABCUT_MAX_SIDE; the result is upscaled back. Deterministic (fixed OpenCV RNG
    seed). Boxes under GRABCUT_MIN_BOX pixels wide or high get ``box_filled``.

    The result is GrabCut's own, with no fallback: on tight ground-truth boxes in cluttered photos
    it often labels the whole box background (about a third of COCO people, the same with OpenCV
    4.10 and 5.0, and on the full uncropped image), which the scores should show.
    """
    rgb = _as_rgb_uint8(image)
    rows, cols = box_region(box, rgb.shape)
    box_h, box_w = rows.stop - rows.start, cols.stop - cols.start
    if min(box_h, box_w) < GRABCUT_MIN_BOX:
        return box_filled(rgb, box)
    margin = max(8, round(0.1 * max(box_h, box_w)))
    crop = padded_crop(rgb, rows.start - margin, rows.stop + margin, cols.start - margin, cols.stop + margin)
    scale = min(1.0, GRABCUT_MAX_SIDE / max(crop.shape[:2]))
    small = cv2.resize(crop, _scaled_size(crop.shape, scale), interpolation=cv2.INTER_AREA) if scale < 1 else crop
    sy, sx = small.shape[0] / crop.shape[0], small.shape[1] / crop.shape[1]
    left, top = int(np.floor(margin * sx)), int(np.floor(margin * sy))
    rect = (left, top, max(1, int(np.ceil((margin + box_w) * sx)) - left),
            max(1, int(np.ceil((margin + box_h) * sy)) - top))
    labels = np.zeros(small.shape[:2], np.uint8)
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(small), labels, rect, np.zeros((1, 65)), np.zeros((1, 65)),
                iterations, cv2.GC_INIT_WITH_RECT)
    foreground = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.float32)
    if scale < 1:
        foreground = cv2.resize(foreground, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    mask[rows, cols] = foreground[margin:margin + box_h, margin:margin + box_w] >= 0.5
    return mask


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image, got dtype {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise ValueError(f"expected an [H, W, 3] RGB image, got shape {image.shape}")


def _scaled_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    return max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale))


BASELINES: dict[str, Callable[[np.ndarray, Sequence[float]], np.ndarray]] = {
    "box": box_filled,
    "ellipse": inscribed_ellipse,
    "grabcut": grabcut,
}


# The mean COCO person pose as fractions of the box, (x - x0) / width, (y - y0) / height, in
# COCO_PERSON_KEYPOINTS order: ``mean_pose`` over the 432 people with keypoints of the COCO train
# sets in ../shared/data (coco-mini-train, coco-extra-train), each joint over the people labelling it.
COCO_PERSON_MEAN_POSE = np.array([
    (0.522, 0.196), (0.527, 0.163), (0.504, 0.163), (0.557, 0.167), (0.461, 0.175),  # nose, eyes, ears
    (0.599, 0.300), (0.427, 0.301), (0.629, 0.453), (0.381, 0.465), (0.584, 0.484), (0.421, 0.487),  # arms
    (0.551, 0.602), (0.452, 0.608), (0.525, 0.693), (0.451, 0.695), (0.515, 0.895), (0.444, 0.897),  # legs
])
KEYPOINT_GRID_SIZE = 50  # the keypoint head's S x S output (HypercolumnConfig.output_size)


def mean_pose(keypoints: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """keypoints [N, J, 3] (x, y, v), boxes [N, 4] xyxy -> [J, 2]: each joint's mean position as
    fractions of its box over the objects that label it (v > 0); nan for a joint none labels."""
    keypoints, boxes = np.asarray(keypoints, float), np.asarray(boxes, float)
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], -1)[:, None]  # [N, 1, 2]
    fractions = (keypoints[..., :2] - boxes[:, None, :2]) / size
    labelled = (keypoints[..., 2] > 0)[..., None]
    with np.errstate(invalid="ignore"):
        return np.where(labelled, fractions, 0).sum(0) / labelled.sum(0)


def mean_pose_keypoints(boxes: np.ndarray, ground_truth: np.ndarray) -> np.ndarray:
    """``COCO_PERSON_MEAN_POSE`` stretched to each box (score 1); ``ground_truth`` only gives the
    joint count, which must be COCO's 17."""
    if ground_truth.shape[1] != len(COCO_PERSON_KEYPOINTS):
        raise ValueError(f"the mean-pose baseline knows COCO's {len(COCO_PERSON_KEYPOINTS)} person keypoints; "
                         f"the data has {ground_truth.shape[1]}")
    boxes = np.asarray(boxes, float)
    xy = boxes[:, None, :2] + COCO_PERSON_MEAN_POSE[None] * (boxes[:, None, 2:] - boxes[:, None, :2])
    return np.concatenate([xy, np.ones((*xy.shape[:2], 1))], -1)


def grid_ceiling_keypoints(boxes: np.ndarray, ground_truth: np.ndarray,
                           size: int = KEYPOINT_GRID_SIZE) -> np.ndarray:
    """The ground truth as a perfect keypoint head would give it: each keypoint's training target
    (its cell of the box's ``size`` x ``size`` grid, ``data.targets.keypoint_targets``) as a peak
    in otherwise flat logits, decoded by ``modeling.keypoints.heatmaps_to_keypoints``. A keypoint
    outside its box has no target; the best the head can say is the nearest cell, which it gets."""
    boxes_t = torch.as_tensor(np.asarray(boxes, np.float32))
    gt = torch.as_tensor(np.asarray(ground_truth, np.float32))
    n, j = gt.shape[:2]
    cells = keypoint_targets(gt, boxes_t, torch.arange(n), size)
    scale = size / (boxes_t[:, 2:] - boxes_t[:, :2]).clamp(min=1e-6)  # [N, 2] cells per pixel
    nearest = ((gt[..., :2] - boxes_t[:, None, :2]) * scale[:, None]).floor().long().clamp(0, size - 1)
    cells = torch.where(cells >= 0, cells, nearest[..., 1] * size + nearest[..., 0])
    logits = torch.zeros(n, j, size * size)
    logits.scatter_(2, cells[..., None], 10.0)
    return heatmaps_to_keypoints(logits.view(n, j, size, size), boxes_t).numpy()


KEYPOINT_BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean-pose": mean_pose_keypoints,
    "grid-ceiling": grid_ceiling_keypoints,
}
