"""Evaluation on ground-truth boxes: the network under each tap subset and the box-only
baselines, scored with the field's metrics, in one table.

Protocol: every non-crowd object with a mask and area >= ``min_area`` (32 x 32 px by default) is
given to each method as its ground-truth box. The network sees the image at its configured
inference size (as the app's predictor does) and its 50 x 50 box heatmaps are pasted back at
full resolution and thresholded at 0.5.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from tqdm import tqdm

from hcviewer.data.records import AnnotatedDataset, ImageRecord, ObjectAnnotation
from hcviewer.data.targets import part_targets
from hcviewer.fileio import write_text_atomic
from hcviewer.modeling.hypercolumn import HypercolumnModel
from hcviewer.modeling.postprocess import heatmaps_to_keypoints, paste_masks_in_image
from hcviewer.modeling.preprocess import resize_for_model
from hcviewer.train.baselines import BASELINES
from hcviewer.train.metrics import coco_keypoint_ap, coco_segm_ap, mask_iou, part_mean_iou, pck


@dataclass
class MethodScores:
    name: str
    taps: list[str] | None  # None for a baseline
    mask_iou: float
    segm_ap: dict[str, float]
    pck: float | None = None
    keypoint_ap: dict[str, float] | None = None
    part_miou: float | None = None
    ious: list[float] = field(default_factory=list, repr=False)


@dataclass
class EvaluationReport:
    data: str
    num_images: int
    num_objects: int
    min_area: float
    seconds: float
    methods: list[MethodScores]

    def method(self, name: str) -> MethodScores:
        return next(m for m in self.methods if m.name == name)

    def to_json(self, with_ious: bool = False) -> dict:
        out = asdict(self)
        if not with_ious:
            for m in out["methods"]:
                m.pop("ious")
        return out

    def markdown(self) -> str:
        """The comparison table (one row per tap subset / baseline)."""
        lines = [f"Data: {self.data}; {self.num_objects} objects (area >= {self.min_area:.0f} px) in "
                 f"{self.num_images} images, ground-truth boxes.", "",
                 "| method | taps | mask IoU | APr@0.5 | APr@0.7 | AP (COCO) | PCK@0.1 | keypoint AP | part mIoU |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for m in self.methods:
            kap = m.keypoint_ap["AP"] if m.keypoint_ap else None
            lines.append(f"| {m.name} | {', '.join(m.taps) if m.taps else '-'} | {m.mask_iou:.3f} | "
                         f"{m.segm_ap['AP50']:.3f} | {m.segm_ap['AP70']:.3f} | {m.segm_ap['AP']:.3f} | "
                         f"{_fmt(m.pck)} | {_fmt(kap)} | {_fmt(m.part_miou)} |")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def standard_subsets(taps: tuple[str, ...], all_subsets: bool = False) -> list[tuple[str, ...]]:
    """The paper's comparison: all taps, the top tap alone, and each tap left out (or every
    non-empty subset when ``all_subsets``)."""
    if all_subsets:
        return [s for r in range(len(taps), 0, -1) for s in itertools.combinations(taps, r)]
    subsets = [taps, taps[-1:]]
    if len(taps) > 2:
        subsets += [tuple(t for t in taps if t != left_out) for left_out in taps]
    return list(dict.fromkeys(subsets))


def subset_name(subset: tuple[str, ...], taps: tuple[str, ...]) -> str:
    if subset == taps:
        return "all taps"
    if len(subset) == 1:
        return "top alone" if subset == taps[-1:] else f"{subset[0]} alone"
    if len(subset) == len(taps) - 1:
        return f"without {next(t for t in taps if t not in subset)}"
    return "+".join(subset)


def evaluation_objects(record: ImageRecord, min_area: float) -> list[ObjectAnnotation]:
    objects = []
    for obj in record.objects:
        if obj.iscrowd or obj.mask is None:
            continue
        w, h = obj.box[2] - obj.box[0], obj.box[3] - obj.box[1]
        if w * h >= min_area:
            objects.append(obj)
    return objects


@torch.inference_mode()
def predict_subsets(model: HypercolumnModel, rgb: np.ndarray, boxes: np.ndarray, subsets: list[tuple[str, ...]],
                    device: torch.device) -> dict[tuple[str, ...], dict[str, torch.Tensor]]:
    """Run the trunk once, then the heads under each subset -> {subset: {task: logits [N, C, S, S]}}."""
    config = model.config
    small, scale = resize_for_model(rgb, config.max_image_side)
    image = torch.from_numpy(small).permute(2, 0, 1).float().div(255)
    image = (image - torch.tensor(config.mean).view(3, 1, 1)) / torch.tensor(config.std).view(3, 1, 1)
    features = model.forward_trunk(image[None].to(device))
    rois = torch.zeros(len(boxes), 5, device=device)
    rois[:, 1:] = torch.from_numpy(boxes).to(device) * scale
    return {subset: {k: v.float().cpu() for k, v in model.forward_boxes(features, rois, taps=subset).logits.items()}
            for subset in subsets}


class _Collector:
    """Accumulates one method's per-object results and COCO detections."""

    def __init__(self, name: str, taps: tuple[str, ...] | None) -> None:
        self.name, self.taps = name, taps
        self.ious: list[float] = []
        self.detections: list[dict] = []
        self.keypoint_detections: list[dict] = []
        self.pred_keypoints: list[np.ndarray] = []
        self.part_pred: list[np.ndarray] = []

    def add_mask(self, image_id: int, mask: np.ndarray, probability: np.ndarray | None, gt: np.ndarray,
                 box: np.ndarray) -> None:
        self.ious.append(mask_iou(mask, gt))
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        score = float(probability[mask].mean()) if probability is not None and mask.any() else 1.0
        x0, y0, x1, y1 = (float(v) for v in box)
        self.detections.append({"image_id": image_id, "category_id": 1, "segmentation": rle, "score": score,
                                "bbox": [x0, y0, x1 - x0, y1 - y0]})


def evaluate(model: HypercolumnModel | None, dataset: AnnotatedDataset, subsets: list[tuple[str, ...]] | None = None,
             baselines: tuple[str, ...] = tuple(BASELINES), min_area: float = 32 * 32,
             device: str | torch.device = "cpu", threshold: float = 0.5, progress: bool = True) -> EvaluationReport:
    """Score the model under each tap subset and each named baseline on ``dataset``'s gt boxes."""
    start = time.perf_counter()
    device = torch.device(device)
    if model is not None:
        model = model.to(device).eval()
        subsets = subsets or standard_subsets(model.taps)
    else:
        subsets = []
    methods = [_Collector(subset_name(s, model.taps), s) for s in subsets]
    methods += [_Collector(name, None) for name in baselines]
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "object", "keypoints":
                                                             list(dataset.keypoint_names),
                                                             "skeleton": [[a + 1, b + 1] for a, b in dataset.skeleton]}]}
    gt_keypoints, gt_boxes, gt_parts = [], [], []
    images_used = 0
    for image_id, record in enumerate(tqdm(dataset.images, desc="evaluate", disable=not progress, unit="image"), 1):
        objects = evaluation_objects(record, min_area)
        if not objects:
            continue
        images_used += 1
        rgb = record.load_rgb()
        h, w = rgb.shape[:2]
        gt["images"].append({"id": image_id, "width": w, "height": h})
        boxes = np.stack([o.box for o in objects]).astype(np.float32)
        gt_masks = [o.mask.decode(h, w).astype(bool) for o in objects]
        for obj, mask in zip(objects, gt_masks):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            x0, y0, x1, y1 = (float(v) for v in obj.box)
            ann = {"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                   "segmentation": rle, "area": float(mask.sum()), "bbox": [x0, y0, x1 - x0, y1 - y0]}
            if obj.keypoints is not None:
                ann["keypoints"] = obj.keypoints.reshape(-1).tolist()
                ann["num_keypoints"] = int((obj.keypoints[:, 2] > 0).sum())
            gt["annotations"].append(ann)
            gt_keypoints.append(obj.keypoints)
            gt_boxes.append(obj.box)
            gt_parts.append(_box_parts(obj, h, w, model.config.output_size) if model is not None and obj.parts else None)
        if model is not None:
            outputs = predict_subsets(model, rgb, boxes, subsets, device)
            for collector, subset in zip(methods, subsets):
                _score_network(collector, outputs[subset], image_id, boxes, gt_masks, (h, w), threshold)
        for collector in methods[len(subsets):]:
            for box, gt_mask in zip(boxes, gt_masks):
                collector.add_mask(image_id, BASELINES[collector.name](rgb, box), None, gt_mask, box)
    scores = [_summarise(c, gt, gt_keypoints, gt_boxes, gt_parts, model) for c in methods]
    return EvaluationReport(dataset.name, images_used, len(gt["annotations"]), min_area,
                            time.perf_counter() - start, scores)


def _box_parts(obj: ObjectAnnotation, h: int, w: int, size: int) -> np.ndarray:
    labels = torch.from_numpy(obj.parts.decode(h, w).astype(np.int64))[None]
    return part_targets(labels, torch.from_numpy(obj.box[None].astype(np.float32)), torch.zeros(1, dtype=torch.long),
                        size)[0].numpy()


def _score_network(collector: _Collector, logits: dict[str, torch.Tensor], image_id: int, boxes: np.ndarray,
                   gt_masks: list[np.ndarray], image_size: tuple[int, int], threshold: float) -> None:
    box_tensor = torch.from_numpy(boxes)
    if "figure_ground" in logits:
        probabilities = paste_masks_in_image(logits["figure_ground"][:, 0].sigmoid(), box_tensor, image_size)
        for prob, box, gt_mask in zip(probabilities.numpy(), boxes, gt_masks):
            collector.add_mask(image_id, prob >= threshold, prob, gt_mask, box)
    if "keypoints" in logits:
        keypoints = heatmaps_to_keypoints(logits["keypoints"], box_tensor).numpy()
        collector.pred_keypoints.extend(keypoints)
        for kp, det in zip(keypoints, collector.detections[-len(boxes):]):
            flat = np.concatenate([kp[:, :2], np.ones((len(kp), 1))], 1).reshape(-1).tolist()
            collector.keypoint_detections.append({**{k: det[k] for k in ("image_id", "category_id", "bbox")},
                                                  "keypoints": flat, "score": float(kp[:, 2].mean())})
    if "parts" in logits:
        collector.part_pred.extend(logits["parts"].argmax(1).numpy())


def _summarise(c: _Collector, gt: dict, gt_keypoints: list, gt_boxes: list, gt_parts: list,
               model: HypercolumnModel | None) -> MethodScores:
    scores = MethodScores(c.name, list(c.taps) if c.taps else None, float(np.mean(c.ious)) if c.ious else float("nan"),
                          coco_segm_ap(gt, c.detections), ious=c.ious)
    labelled = [i for i, kp in enumerate(gt_keypoints) if kp is not None and (kp[:, 2] > 0).any()]
    if c.pred_keypoints and labelled:
        pred = np.stack([c.pred_keypoints[i][:, :2] for i in labelled])
        scores.pck = float(pck(pred, np.stack([gt_keypoints[i] for i in labelled]),
                               np.stack([gt_boxes[i] for i in labelled])))
        keypoint_gt = {**gt, "annotations": [a for a in gt["annotations"] if a.get("num_keypoints", 0) > 0]}
        ids = {a["id"] for a in keypoint_gt["annotations"]}
        detections = [d for d, a in zip(c.keypoint_detections, gt["annotations"]) if a["id"] in ids]
        scores.keypoint_ap = coco_keypoint_ap(keypoint_gt, detections)
    with_parts = [i for i, p in enumerate(gt_parts) if p is not None]
    if c.part_pred and with_parts and model is not None:
        result = part_mean_iou([c.part_pred[i] for i in with_parts], [gt_parts[i] for i in with_parts],
                               len(model.config.part_names) + 1)
        scores.part_miou = float(result["mean_iou"])
    return scores


def validation_mask_iou(model: HypercolumnModel, dataset: AnnotatedDataset) -> float:
    """The trainer's per-epoch score: mean mask IoU with all taps, no baselines."""
    device = next(model.parameters()).device
    report = evaluate(model, dataset, [model.taps], baselines=(), device=device, progress=False)
    return report.methods[0].mask_iou


def write_report(report: EvaluationReport, path: str | Path) -> None:
    write_text_atomic(Path(path), json.dumps(report.to_json(), indent=2))
