"""Evaluation on ground-truth boxes: the network under each tap subset and the box-only
baselines, scored with the field's metrics, in one table per data set.

Protocol: every non-crowd object whose box covers at least ``min_area`` pixels (32 x 32 by
default) is given to each method as its ground-truth box, and is scored on the labels it has:
its mask (mask IoU, APr, COCO mask AP; the baselines too), its keypoints (PCK@0.1 and OKS
keypoint AP; an object without a mask takes its box area as the OKS scale) and its part labels
(per-part IoU from one confusion matrix over the pixels of the boxes). The network sees the
image at its configured inference size (as the app's predictor does); its 50 x 50 box heatmaps
are pasted back at full resolution, masks thresholded at 0.5 and part labels taken as the most
likely part per pixel.

The keypoint baselines (``mean-pose``, ``grid-ceiling``) give keypoints only: their mask columns are
empty.

Several data sets are scored on their own and together (``evaluate_sets``): a COCO validation
set, held-out part-labelled photos and keypoint-only photos each get their own figures.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from tqdm import tqdm

from hcviewer.data.records import AnnotatedDataset, ImageRecord, ObjectAnnotation
from hcviewer.fileio import write_text_atomic
from hcviewer.modeling.hypercolumn import HypercolumnModel, inference_copy
from hcviewer.paste import paste_heatmap, paste_masks_in_image
from hcviewer.modeling.keypoints import heatmaps_to_keypoints
from hcviewer.modeling.mirror import forward_boxes_with_mirror, with_mirror_image
from hcviewer.modeling.preprocess import model_input
from hcviewer.refine import refine_probability
from hcviewer.train.baselines import BASELINES, KEYPOINT_BASELINES
from hcviewer.train.metrics import (box_region, coco_keypoint_ap, coco_segm_ap, mask_iou, part_confusion,
                                    part_scores, pck)


@dataclass
class MethodScores:
    """``part_miou`` is the mean IoU over the part classes (background left out); ``part_iou``
    gives every class's IoU by name, background included."""

    name: str
    taps: list[str] | None  # None for a baseline
    mask_iou: float
    segm_ap: dict[str, float]
    pck: float | None = None
    keypoint_ap: dict[str, float] | None = None
    part_miou: float | None = None
    part_iou: dict[str, float] | None = None
    ious: list[float] = field(default_factory=list, repr=False)


@dataclass
class EvaluationReport:
    """One data set's scores, or several sets' scores together with each set's own in ``sets``.
    ``num_objects`` counts the objects scored for masks; keypoint and part objects are counted
    apart (an object may be in several counts)."""

    data: str
    num_images: int
    num_objects: int
    min_area: float
    seconds: float
    methods: list[MethodScores]
    num_keypoint_objects: int = 0
    num_part_objects: int = 0
    sets: list["EvaluationReport"] = field(default_factory=list)

    def method(self, name: str) -> MethodScores:
        return next(m for m in self.methods if m.name == name)

    def to_json(self, with_ious: bool = False) -> dict:
        out = asdict(self)
        if not with_ious:
            for report in (out, *out["sets"]):
                for m in report["methods"]:
                    m.pop("ious")
        return out

    def markdown(self) -> str:
        """The comparison table (one row per tap subset / baseline) and the per-part IoU, then
        the same for each set when there are several."""
        lines = [f"Data: {self.data}; {self.num_objects} objects with masks, {self.num_keypoint_objects} with "
                 f"keypoints, {self.num_part_objects} with parts (box area >= {self.min_area:.0f} px) in "
                 f"{self.num_images} images, ground-truth boxes.", "",
                 "| method | taps | mask IoU | APr@0.5 | APr@0.7 | AP (COCO) | PCK@0.1 | keypoint AP | part mIoU |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for m in self.methods:
            kap = m.keypoint_ap["AP"] if m.keypoint_ap else None
            lines.append(f"| {m.name} | {', '.join(m.taps) if m.taps else '-'} | {_fmt(m.mask_iou)} | "
                         f"{_fmt(m.segm_ap['AP50'])} | {_fmt(m.segm_ap['AP70'])} | {_fmt(m.segm_ap['AP'])} | "
                         f"{_fmt(m.pck)} | {_fmt(kap)} | {_fmt(m.part_miou)} |")
        with_parts = [m for m in self.methods if m.part_iou]
        if with_parts:
            names = list(with_parts[0].part_iou)
            lines += ["", "Part IoU (part mIoU is the mean over the parts, background left out):", "",
                      f"| method | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
            lines += [f"| {m.name} | {' | '.join(_fmt(m.part_iou[n]) for n in names)} |" for m in with_parts]
        for part in self.sets:
            lines += ["", f"### {part.data}", "", part.markdown()]
        return "\n".join(lines)


SEGM_AP_KEYS = ("AP", "AP50", "AP70", "AP75")  # coco_segm_ap's; nan for a method that gives no masks


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


def has_keypoints(obj: ObjectAnnotation) -> bool:
    return obj.keypoints is not None and bool((obj.keypoints[:, 2] > 0).any())


def evaluation_objects(record: ImageRecord, min_area: float) -> list[ObjectAnnotation]:
    """The image's non-crowd objects of box area >= ``min_area`` with a mask, keypoints or parts."""
    objects = []
    for obj in record.objects:
        if obj.iscrowd or (obj.mask is None and obj.parts is None and not has_keypoints(obj)):
            continue
        w, h = obj.box[2] - obj.box[0], obj.box[3] - obj.box[1]
        if w * h >= min_area:
            objects.append(obj)
    return objects


@torch.inference_mode()
def predict_subsets(model: HypercolumnModel, rgb: np.ndarray, boxes: np.ndarray, subsets: list[tuple[str, ...]],
                    device: torch.device, classifiers: dict[str, torch.Tensor] | None = None, mirror: bool = True
                    ) -> dict[tuple[str, ...], dict[str, torch.Tensor]]:
    """Run the trunk once, then the heads under each subset -> {subset: {task: logits [N, C, S, S]}};
    ``mirror``: averaged with the mirror image's, as the predictor answers by default. Fastest
    with an ``inference_copy`` and its ``pixel_classifiers``, as the predictor has them."""
    config = model.config
    image, scale = model_input(rgb, config.max_image_side, config.mean, config.std, device)
    features = model.backbone(with_mirror_image(image) if mirror else [image])
    rois = torch.zeros(len(boxes), 5, device=device)
    rois[:, 1:] = torch.from_numpy(boxes).to(device) * scale
    answers = {}
    for subset in subsets:
        if mirror:
            outputs = forward_boxes_with_mirror(model, features, rois, image.shape[-1], taps=subset,
                                                classifiers=classifiers)
        else:
            outputs = model.forward_boxes(features, rois, taps=subset, classifiers=classifiers)
        answers[subset] = {k: v.float().cpu() for k, v in outputs.logits.items()}
    return answers


class _Collector:
    """Accumulates one method's per-object results: masks as COCO detections, keypoints, and
    the part confusion matrix."""

    def __init__(self, name: str, taps: tuple[str, ...] | None, num_part_classes: int,
                 refine: str | None = None) -> None:
        self.name, self.taps, self.refine = name, taps, refine
        self.ious: list[float] = []
        self.detections: list[dict] = []
        self.keypoint_detections: list[dict] = []
        self.pred_keypoints: list[np.ndarray] = []  # [J, 3] per keypoint object, in its order
        self.part_confusion = np.zeros((num_part_classes, num_part_classes), np.int64)

    def add_mask(self, image_id: int, mask: np.ndarray, probability: np.ndarray | None, gt: np.ndarray,
                 box: np.ndarray) -> None:
        self.ious.append(mask_iou(mask, gt))
        score = float(probability[mask].mean()) if probability is not None and mask.any() else 1.0
        self.detections.append({"image_id": image_id, "category_id": 1, "segmentation": _rle(mask), "score": score,
                                "bbox": _xywh(box)})

    def add_keypoints(self, image_id: int, keypoints: np.ndarray, box: np.ndarray) -> None:
        """keypoints [J, 3] (x, y, score) in image pixels."""
        self.pred_keypoints.append(keypoints)
        flat = np.concatenate([keypoints[:, :2], np.ones((len(keypoints), 1))], 1).reshape(-1).tolist()
        self.keypoint_detections.append({"image_id": image_id, "category_id": 1, "bbox": _xywh(box),
                                         "keypoints": flat, "score": float(keypoints[:, 2].mean())})

    @classmethod
    def merged(cls, collectors: list["_Collector"]) -> "_Collector":
        """One collector holding the results of several (image ids are unique across them)."""
        first = collectors[0]
        out = cls(first.name, first.taps, len(first.part_confusion), first.refine)
        for c in collectors:
            _accumulate(out, c, ("ious", "detections", "keypoint_detections", "pred_keypoints", "part_confusion"))
        return out


def _accumulate(total: object, part: object, names: tuple[str, ...]) -> None:
    """total.name += part.name for each name (lists are concatenated, counts added)."""
    for name in names:
        setattr(total, name, getattr(total, name) + getattr(part, name))


class _Results:
    """The ground truth of the scored objects and every method's collector, for one set (or
    several merged)."""

    def __init__(self, name: str, methods: list[tuple[str, tuple[str, ...] | None, str | None]],
                 num_part_classes: int) -> None:
        self.name = name
        self.images: list[dict] = []
        self.mask_annotations: list[dict] = []
        self.keypoint_annotations: list[dict] = []
        self.gt_keypoints: list[np.ndarray] = []  # [J, 3] per keypoint object
        self.keypoint_boxes: list[np.ndarray] = []
        self.num_part_objects = 0
        self.collectors = [_Collector(n, taps, num_part_classes, refine) for n, taps, refine in methods]

    @classmethod
    def merged(cls, name: str, parts: list["_Results"]) -> "_Results":
        out = cls(name, [], 0)
        for p in parts:
            _accumulate(out, p, ("images", "mask_annotations", "keypoint_annotations", "gt_keypoints",
                                 "keypoint_boxes", "num_part_objects"))
        # Annotation ids must stay unique once the sets are one ground truth.
        out.mask_annotations = [{**a, "id": i} for i, a in enumerate(out.mask_annotations, 1)]
        out.keypoint_annotations = [{**a, "id": i} for i, a in enumerate(out.keypoint_annotations, 1)]
        out.collectors = [_Collector.merged(list(cs)) for cs in zip(*(p.collectors for p in parts))]
        return out

    def add_ground_truth(self, image_id: int, objects: list[ObjectAnnotation], masks: list[np.ndarray | None],
                         size: tuple[int, int]) -> None:
        self.images.append({"id": image_id, "width": size[1], "height": size[0]})
        for obj, mask in zip(objects, masks):
            base = {"image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": _xywh(obj.box)}
            box_area = float((obj.box[2] - obj.box[0]) * (obj.box[3] - obj.box[1]))
            if mask is not None:
                self.mask_annotations.append({**base, "id": len(self.mask_annotations) + 1,
                                              "segmentation": _rle(mask), "area": float(mask.sum())})
            if has_keypoints(obj):
                self.keypoint_annotations.append({
                    **base, "id": len(self.keypoint_annotations) + 1, "keypoints": obj.keypoints.reshape(-1).tolist(),
                    "num_keypoints": int((obj.keypoints[:, 2] > 0).sum()),
                    "area": float(mask.sum()) if mask is not None else box_area})
                self.gt_keypoints.append(obj.keypoints)
                self.keypoint_boxes.append(obj.box)
            self.num_part_objects += obj.parts is not None

    def summarise(self, keypoint_names: tuple[str, ...], skeleton: tuple, part_names: tuple[str, ...],
                  min_area: float, seconds: float) -> EvaluationReport:
        category = {"id": 1, "name": "object", "keypoints": list(keypoint_names),
                    "skeleton": [[a + 1, b + 1] for a, b in skeleton]}
        mask_gt = {"images": self.images, "annotations": self.mask_annotations, "categories": [category]}
        keypoint_gt = {"images": self.images, "annotations": self.keypoint_annotations, "categories": [category]}
        methods = [self._scores(c, mask_gt, keypoint_gt, part_names) for c in self.collectors]
        return EvaluationReport(self.name, len(self.images), len(self.mask_annotations), min_area, seconds, methods,
                                len(self.keypoint_annotations), self.num_part_objects)

    def _scores(self, c: _Collector, mask_gt: dict, keypoint_gt: dict, part_names: tuple[str, ...]) -> MethodScores:
        segm_ap = coco_segm_ap(mask_gt, c.detections) if c.detections else dict.fromkeys(SEGM_AP_KEYS, math.nan)
        scores = MethodScores(c.name, list(c.taps) if c.taps else None,
                              float(np.mean(c.ious)) if c.ious else float("nan"), segm_ap, ious=c.ious)
        if c.pred_keypoints:
            scores.pck = pck(np.stack([k[:, :2] for k in c.pred_keypoints]), np.stack(self.gt_keypoints),
                             np.stack(self.keypoint_boxes))
            scores.keypoint_ap = coco_keypoint_ap(keypoint_gt, c.keypoint_detections)
        if c.part_confusion.sum():
            result = part_scores(c.part_confusion)
            scores.part_miou = result["mean_iou_no_background"]
            scores.part_iou = dict(zip(("background", *part_names), result["per_class_iou"]))
        return scores


def evaluate(model: HypercolumnModel | None, dataset: AnnotatedDataset, subsets: list[tuple[str, ...]] | None = None,
             baselines: tuple[str, ...] = tuple(BASELINES), min_area: float = 32 * 32,
             device: str | torch.device = "cpu", threshold: float = 0.5, progress: bool = True,
             mirror: bool = True) -> EvaluationReport:
    """Score the model under each tap subset and each named baseline on ``dataset``'s gt boxes."""
    return evaluate_sets(model, [dataset], subsets, baselines, min_area, device, threshold, progress=progress,
                         mirror=mirror)


def evaluate_sets(model: HypercolumnModel | None, datasets: list[AnnotatedDataset],
                  subsets: list[tuple[str, ...]] | None = None, baselines: tuple[str, ...] = tuple(BASELINES),
                  min_area: float = 32 * 32, device: str | torch.device = "cpu", threshold: float = 0.5,
                  refine: str | None = None, progress: bool = True, mirror: bool = True) -> EvaluationReport:
    """Score every set on its own and all together: the report's methods are the scores over all
    sets, and ``sets`` holds each set's report when there are several. ``refine`` (a method of
    ``hcviewer.refine``) adds a row: all taps with the masks edge-refined. ``mirror``: the
    network's answers averaged with the mirror image's, as the predictor gives them."""
    start = time.perf_counter()
    _check_baselines(baselines)
    device = torch.device(device)
    classifiers = None
    if model is not None:
        model = inference_copy(model).to(device)
        classifiers = model.pixel_classifiers()
        subsets = subsets or standard_subsets(model.taps)
    else:
        subsets = []
    methods = [(subset_name(s, model.taps), s, None) for s in subsets]
    if refine and model is not None:
        methods.append((f"all taps, {refine} refinement", model.taps, refine))
    methods += [(name, None, None) for name in baselines]
    part_names = model.config.part_names if model is not None else ()
    image_ids = itertools.count(1)  # unique across sets, so that their results can be merged
    per_set, reports = [], []
    for dataset in datasets:
        set_start = time.perf_counter()
        results = _Results(dataset.name, methods, len(part_names) + 1)
        for record in tqdm(dataset.images, desc=f"evaluate {dataset.name}", disable=not progress, unit="image"):
            objects = evaluation_objects(record, min_area)
            if objects:
                _score_image(model, record, objects, next(image_ids), results, device, threshold, classifiers,
                             mirror)
        per_set.append(results)
        reports.append(results.summarise(dataset.keypoint_names, dataset.skeleton, part_names, min_area,
                                         time.perf_counter() - set_start))
    if len(datasets) == 1:
        return reports[0]
    first = next((d for d in datasets if d.keypoint_names), datasets[0])
    merged = _Results.merged("+".join(d.name for d in datasets), per_set)
    report = merged.summarise(first.keypoint_names, first.skeleton, part_names, min_area,
                              time.perf_counter() - start)
    report.sets = reports
    return report


def _check_baselines(baselines: tuple[str, ...]) -> None:
    unknown = [b for b in baselines if b not in BASELINES and b not in KEYPOINT_BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline {', '.join(unknown)}; choose from "
                         f"{', '.join([*BASELINES, *KEYPOINT_BASELINES])} (comma-separated) or none")


def _score_image(model: HypercolumnModel | None, record: ImageRecord, objects: list[ObjectAnnotation],
                 image_id: int, results: _Results, device: torch.device, threshold: float,
                 classifiers: dict[str, torch.Tensor] | None, mirror: bool) -> None:
    rgb = record.load_rgb()
    size = rgb.shape[:2]
    boxes = np.stack([o.box for o in objects]).astype(np.float32)
    gt_masks = [o.mask.decode(*size).astype(bool) if o.mask is not None else None for o in objects]
    results.add_ground_truth(image_id, objects, gt_masks, size)
    with_mask = [i for i, m in enumerate(gt_masks) if m is not None]
    with_keypoints = [i for i, o in enumerate(objects) if has_keypoints(o)]
    network = [c for c in results.collectors if c.taps is not None]
    if model is not None:
        outputs = predict_subsets(model, rgb, boxes, list(dict.fromkeys(c.taps for c in network)), device, classifiers,
                                  mirror)
        with_parts = [i for i, o in enumerate(objects) if o.parts is not None]
        gt_parts = {i: objects[i].parts.decode(*size) for i in with_parts} if "parts" in model.tasks else {}
        for collector in network:
            logits = outputs[collector.taps]
            if "figure_ground" in logits and with_mask:
                probabilities = _pasted_masks(logits["figure_ground"][with_mask, 0].sigmoid(), boxes[with_mask], rgb,
                                              collector.refine)
                for prob, i in zip(probabilities, with_mask):
                    collector.add_mask(image_id, prob >= threshold, prob, gt_masks[i], boxes[i])
            if collector.refine:
                continue  # keypoints and parts are those of the unrefined row
            if "keypoints" in logits and with_keypoints:
                keypoints = heatmaps_to_keypoints(logits["keypoints"][with_keypoints],
                                                  torch.from_numpy(boxes[with_keypoints]),
                                                  absent=model.config.keypoint_absent).numpy()
                for kp, i in zip(keypoints, with_keypoints):
                    collector.add_keypoints(image_id, kp, boxes[i])
            for i, gt in gt_parts.items():
                collector.part_confusion += _part_confusion(logits["parts"][i], boxes[i], gt)
    for collector in results.collectors:
        if collector.name in KEYPOINT_BASELINES and collector.taps is None and with_keypoints:
            keypoints = KEYPOINT_BASELINES[collector.name](boxes[with_keypoints],
                                                           np.stack([objects[i].keypoints for i in with_keypoints]))
            for kp, i in zip(keypoints, with_keypoints):
                collector.add_keypoints(image_id, kp, boxes[i])
        if collector.name not in BASELINES or collector.taps is not None:
            continue
        for i in with_mask:
            collector.add_mask(image_id, BASELINES[collector.name](rgb, boxes[i]), None, gt_masks[i], boxes[i])


def _pasted_masks(probabilities: torch.Tensor, boxes: np.ndarray, rgb: np.ndarray, refine: str | None) -> np.ndarray:
    """Box probabilities [N, S, S] -> [N, H, W] in the image, edge-refined with ``refine``."""
    size = rgb.shape[:2]
    if not refine:
        return paste_masks_in_image(probabilities, torch.from_numpy(boxes), size).numpy()
    return np.stack([paste_heatmap(torch.from_numpy(refine_probability(rgb, box, prob.numpy(), refine))[None],
                                   torch.from_numpy(box), size)[0].numpy() for prob, box in zip(probabilities, boxes)])


def _part_confusion(logits: torch.Tensor, box: np.ndarray, gt_labels: np.ndarray) -> np.ndarray:
    """logits [P+1, S, S] of one box, its image's gt labels [H, W] -> [P+1, P+1] pixel counts
    over the box: the most likely part of the pasted probabilities against the ground truth."""
    rows, cols = box_region(box, gt_labels.shape)
    probabilities = paste_heatmap(logits.softmax(0), torch.from_numpy(box), gt_labels.shape)
    return part_confusion(probabilities[:, rows, cols].argmax(0).numpy(), gt_labels[rows, cols], logits.shape[0])


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _xywh(box: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def validation_metrics(model: HypercolumnModel, dataset: AnnotatedDataset) -> dict[str, float]:
    """The trainer's per-epoch scores with all taps, no baselines: mean mask IoU, PCK@0.1 and the
    part mean IoU (nan for what the data does not label)."""
    device = next(model.parameters()).device
    # without the mirror image: half the trunk time each epoch; the scores only rank the epochs
    scores = evaluate(model, dataset, [model.taps], baselines=(), device=device, progress=False,
                      mirror=False).methods[0]
    return {"mask_iou": scores.mask_iou, "pck": _number(scores.pck), "part_miou": _number(scores.part_miou)}


def _number(value: float | None) -> float:
    return float("nan") if value is None or math.isnan(value) else float(value)


def write_report(report: EvaluationReport, path: str | Path) -> None:
    write_text_atomic(Path(path), json.dumps(report.to_json(), indent=2))
