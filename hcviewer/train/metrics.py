"""The field's metrics for ground-truth-box evaluation: mask IoU, PCK, part mean IoU and the COCO
average precisions (segmentation APr and keypoint OKS AP, via pycocotools).

Box pixel convention (shared with ``hcviewer.paste.box_pixel_range`` and the
baselines): box (x0, y0, x1, y1) is in continuous pixel coordinates and pixel (r, c), whose centre
is (c + 0.5, r + 0.5), is inside the box when x0 <= c + 0.5 < x1 and y0 <= r + 0.5 < y1.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hcviewer.paste import box_pixel_range

# COCOeval's default keypoint sigmas are for COCO's 17 person keypoints; other skeletons get the
# mean of those per joint (a generic "typical joint" tolerance) unless the caller gives sigmas.
COCO_KEYPOINT_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                                 1.07, 1.07, .87, .87, .89, .89]) / 10.0


def box_region(box_xyxy: Sequence[float], image_shape: tuple[int, ...]) -> tuple[slice, slice]:
    """(rows, cols) slices of the pixels whose centres lie in the box, clipped to the image."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise ValueError(f"box {box_xyxy!r} has a non-finite coordinate; give finite x0, y0, x1, y1")
    c0, c1 = box_pixel_range(x0, x1, image_shape[1])
    r0, r1 = box_pixel_range(y0, y1, image_shape[0])
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape; 1.0 when both are empty."""
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    pred, gt = pred.astype(bool), gt.astype(bool)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def box_mask_iou(pred_full: np.ndarray, gt_full: np.ndarray, box_xyxy: Sequence[float]) -> float:
    """Mask IoU counting only the pixels inside the (ground-truth) box.

    The network's figure-ground output is an S x S grid over the box, so it cannot say anything
    outside it; scoring inside the box measures the figure-ground quality alone, neither
    penalising the prediction for ground truth that spills out of the box nor depending on the
    rest of the image. Both masks are full-image [H, W]; nan when the box covers no pixel.
    """
    if pred_full.shape != gt_full.shape:
        raise ValueError(f"mask shapes differ: prediction {pred_full.shape}, ground truth {gt_full.shape}")
    rows, cols = box_region(box_xyxy, pred_full.shape)
    if rows.start == rows.stop or cols.start == cols.stop:
        return float("nan")
    return mask_iou(pred_full[rows, cols], gt_full[rows, cols])


def pck(pred_xy: np.ndarray, gt: np.ndarray, boxes_xyxy: np.ndarray, alpha: float = 0.1) -> float:
    """Percentage of correct keypoints: the fraction of labelled (v > 0) ground-truth keypoints
    whose prediction lies within ``alpha * max(box width, box height)`` (distance <= threshold).

    pred_xy [N, J, 2], gt [N, J, 3] (x, y, v), boxes_xyxy [N, 4]; nan when nothing is labelled.
    """
    pred_xy, gt, boxes = np.asarray(pred_xy, float), np.asarray(gt, float), np.asarray(boxes_xyxy, float)
    if pred_xy.ndim != 3 or pred_xy.shape[2] != 2 or gt.shape != (*pred_xy.shape[:2], 3) \
            or boxes.shape != (pred_xy.shape[0], 4):
        raise ValueError(f"expected pred [N, J, 2], gt [N, J, 3], boxes [N, 4]; got {pred_xy.shape}, "
                         f"{gt.shape}, {boxes.shape}")
    labelled = gt[..., 2] > 0
    if not labelled.any():
        return float("nan")
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    distance = np.linalg.norm(pred_xy - gt[..., :2], axis=-1)
    correct = distance <= alpha * size[:, None]
    return float(np.count_nonzero(correct & labelled) / np.count_nonzero(labelled))


def part_mean_iou(pred_labels: list[np.ndarray], gt_labels: list[np.ndarray], num_classes: int) -> dict:
    """Part labelling IoU from one confusion matrix accumulated over all objects.

    Labels are integers in [0, num_classes) with 0 = background; ground-truth pixels outside
    that range (e.g. -1 = unlabelled) are ignored. Returns ``part_scores`` of the summed
    ``part_confusion`` of every object.
    """
    if len(pred_labels) != len(gt_labels):
        raise ValueError(f"{len(pred_labels)} predictions for {len(gt_labels)} ground-truth label maps")
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for index, (pred, gt) in enumerate(zip(pred_labels, gt_labels)):
        try:
            confusion += part_confusion(pred, gt, num_classes)
        except ValueError as exc:
            raise ValueError(f"object {index}: {exc}") from None
    return part_scores(confusion)


def part_confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C] pixel counts of one object's label maps (rows ground truth, columns prediction);
    ground-truth pixels outside [0, num_classes) are ignored."""
    pred, gt = np.asarray(pred).astype(np.int64), np.asarray(gt).astype(np.int64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth {gt.shape}")
    valid = (gt >= 0) & (gt < num_classes)
    if pred[valid].size and (pred[valid].min() < 0 or pred[valid].max() >= num_classes):
        raise ValueError(f"predicted labels must lie in [0, {num_classes})")
    return np.bincount(gt[valid] * num_classes + pred[valid], minlength=num_classes ** 2).reshape(num_classes,
                                                                                                   num_classes)


def part_scores(confusion: np.ndarray) -> dict:
    """IoU figures of a [C, C] confusion matrix (rows ground truth, columns prediction, 0 = background):
      confusion               [C][C] pixel counts
      per_class_iou           [C] IoU per class, nan for a class in neither ground truth nor prediction
      mean_iou                mean over classes present (in ground truth or prediction), background included
      mean_iou_no_background  the same without class 0 (the mean over the part classes)
    """
    confusion = np.asarray(confusion, np.int64)
    intersection = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(union > 0, intersection / union, np.nan)
    return {
        "confusion": confusion.tolist(),
        "per_class_iou": per_class.tolist(),
        "mean_iou": _nanmean(per_class),
        "mean_iou_no_background": _nanmean(per_class[1:]),
    }


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


def coco_segm_ap(gt_coco: dict, detections: list[dict]) -> dict:
    """Mask average precision (COCOeval, iouType "segm"): {"AP" (0.5:0.95), "AP50", "AP70", "AP75"}.

    AP50 and AP70 are the SDS paper's APr at mask IoU 0.5 and 0.7. No detections -> 0.0 (every
    object missed); no ground truth -> nan.
    """
    return _coco_ap(gt_coco, detections, "segm", {"AP": None, "AP50": 0.5, "AP70": 0.7, "AP75": 0.75})


def coco_keypoint_ap(gt_coco: dict, detections: list[dict], sigmas: Sequence[float] | None = None) -> dict:
    """Keypoint average precision by object keypoint similarity (COCOeval, iouType "keypoints"):
    {"AP" (OKS 0.5:0.95), "AP50", "AP75"}. ``sigmas`` per joint defaults to COCO's for 17 joints
    and to their mean for other skeletons."""
    return _coco_ap(gt_coco, detections, "keypoints", {"AP": None, "AP50": 0.5, "AP75": 0.75}, sigmas)


def _coco_ap(gt_coco: dict, detections: list[dict], iou_type: str, thresholds: dict[str, float | None],
             sigmas: Sequence[float] | None = None) -> dict:
    gt = _coco_from_dict(gt_coco)
    if not gt.getAnnIds():
        return {name: float("nan") for name in thresholds}
    if not detections:
        return {name: 0.0 for name in thresholds}
    unknown = {d["image_id"] for d in detections} - set(gt.getImgIds())
    if unknown:
        raise ValueError(f"detections refer to image ids {sorted(unknown)[:5]} that the ground truth lacks")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        results = gt.loadRes(copy.deepcopy(detections))  # loadRes adds fields to the dicts it gets
        evaluator = COCOeval(gt, results, iouType=iou_type)
        if iou_type == "keypoints":
            evaluator.params.kpt_oks_sigmas = _keypoint_sigmas(gt, sigmas)
        evaluator.params.maxDets = _max_detections(evaluator.params.maxDets, detections)
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [T, R, K] at area "all", most detections
    iou_thresholds = evaluator.params.iouThrs
    return {name: _mean_precision(precision if t is None else precision[np.isclose(iou_thresholds, t)])
            for name, t in thresholds.items()}


def _max_detections(defaults: list[int], detections: list[dict]) -> list[int]:
    """COCO caps detections per image (100 masks, 20 people); with one detection per ground-truth
    box none should be dropped, so the top cap is raised to the most detections in one image."""
    per_image = np.bincount(np.unique([d["image_id"] for d in detections], return_inverse=True)[1])
    return sorted(defaults[:-1] + [max(defaults[-1], int(per_image.max()))])


def _mean_precision(precision: np.ndarray) -> float:
    valid = precision[precision > -1]  # -1: no ground truth for that setting
    return float(valid.mean()) if valid.size else float("nan")


def _keypoint_sigmas(gt: COCO, sigmas: Sequence[float] | None) -> np.ndarray:
    joints = next((len(a["keypoints"]) // 3 for a in gt.dataset["annotations"] if "keypoints" in a), 0)
    if sigmas is not None:
        if len(sigmas) != joints:
            raise ValueError(f"{len(sigmas)} keypoint sigmas for {joints} keypoints per object")
        return np.asarray(sigmas, float)
    if joints == len(COCO_KEYPOINT_SIGMAS):
        return COCO_KEYPOINT_SIGMAS
    return np.full(joints, COCO_KEYPOINT_SIGMAS.mean())


def _coco_from_dict(gt_coco: dict) -> COCO:
    """An in-memory COCO index over a deep copy of ``gt_coco`` (COCOeval converts segmentations in
    place), with the fields COCOeval needs filled in: id, iscrowd, area, num_keypoints."""
    dataset = copy.deepcopy(gt_coco)
    dataset.setdefault("categories", [])
    images = {img["id"]: img for img in dataset.setdefault("images", [])}
    for index, ann in enumerate(dataset.setdefault("annotations", []), 1):
        ann.setdefault("id", index)
        ann.setdefault("iscrowd", 0)
        if "keypoints" in ann:
            ann.setdefault("num_keypoints", int(np.count_nonzero(np.asarray(ann["keypoints"])[2::3] > 0)))
        if "area" not in ann:
            ann["area"] = _annotation_area(ann, images.get(ann["image_id"]))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def _annotation_area(ann: dict, image: dict | None) -> float:
    segmentation = ann.get("segmentation")
    if segmentation and image is not None:
        h, w = image["height"], image["width"]
        if isinstance(segmentation, list):  # polygons
            segmentation = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
        elif isinstance(segmentation["counts"], list):  # uncompressed RLE
            segmentation = mask_utils.frPyObjects(segmentation, h, w)
        return float(mask_utils.area(segmentation))
    if "bbox" in ann:
        return float(ann["bbox"][2] * ann["bbox"][3])
    raise ValueError(f"annotation {ann['id']} has no area, segmentation or bbox")
