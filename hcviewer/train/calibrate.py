"""Calibrating the mask threshold: the figure-ground probability at which a mask is cut.

A network trained on soft 50 x 50 targets (the box-cut masks are fractional along the edges) is
not bound to give its best masks at probability 0.5: the bundled model gave COCO photos masks
0.03 IoU better at 0.35-0.4. The threshold is chosen on held-out images and then folded into the
figure-ground bias (``fold_mask_threshold``): sigmoid(z + log((1 - t) / t)) >= 0.5 exactly when
sigmoid(z) >= t, so every consumer of the checkpoint (the app and its Display threshold, ``hcviewer
predict``, ``hcviewer-train eval``) cuts at the calibrated threshold when it cuts at 0.5, and
nothing else about the model changes (the ordering of the probabilities, hence APr's scores and the
keypoint and part heads, stay as they were).

Choice: the threshold with the best mean over the data sets of each set's mean mask IoU, so that a
set with many objects (COCO's crowded scenes) does not outvote a set of other photos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from hcviewer.data.records import AnnotatedDataset
from hcviewer.modeling.hypercolumn import HypercolumnModel
from hcviewer.paste import paste_masks_in_image
from hcviewer.train.evaluate import evaluation_objects, predict_subsets
from hcviewer.train.metrics import mask_iou

DEFAULT_THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


@dataclass
class Calibration:
    """Mean mask IoU of every data set at every candidate threshold."""

    thresholds: tuple[float, ...]
    set_names: list[str]
    objects: list[int]  # objects with a mask per set
    iou: np.ndarray  # [sets, thresholds]

    @property
    def mean_over_sets(self) -> np.ndarray:
        return self.iou.mean(axis=0)

    @property
    def best(self) -> float:
        return self.thresholds[int(np.argmax(self.mean_over_sets))]

    def markdown(self) -> str:
        head = "| threshold | " + " | ".join(f"{n} ({k} objects)" for n, k in zip(self.set_names, self.objects))
        lines = [head + " | mean over sets |", "|---:" * (len(self.set_names) + 2) + "|"]
        for column, threshold in enumerate(self.thresholds):
            cells = [f"{v:.3f}" for v in self.iou[:, column]] + [f"{self.mean_over_sets[column]:.3f}"]
            mark = " (chosen)" if threshold == self.best else ""
            lines.append(f"| {threshold:.2f}{mark} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"threshold": self.best, "rule": "best mean over the sets of each set's mean mask IoU",
                "thresholds": list(self.thresholds), "sets": self.set_names, "objects": self.objects,
                "mask_iou": [[round(float(v), 4) for v in row] for row in self.iou]}


def mask_ious_by_threshold(model: HypercolumnModel, dataset: AnnotatedDataset, thresholds: tuple[float, ...],
                           min_area: float = 32 * 32, device: str | torch.device = "cpu",
                           progress: bool = False, mirror: bool = True) -> np.ndarray:
    """Mask IoU of every object with a mask (ground-truth boxes, all taps, averaged with the mirror
    image when ``mirror``, pasted at full resolution as ``hcviewer-train eval`` does) at every
    threshold: [objects, thresholds]."""
    device = torch.device(device)
    rows = []
    for record in tqdm(dataset.images, desc=f"calibrate {dataset.name}", disable=not progress, unit="image"):
        objects = [o for o in evaluation_objects(record, min_area) if o.mask is not None]
        if not objects:
            continue
        rgb = record.load_rgb()
        size = rgb.shape[:2]
        boxes = np.stack([o.box for o in objects]).astype(np.float32)
        logits = predict_subsets(model, rgb, boxes, [model.taps], device, mirror=mirror)[model.taps]["figure_ground"]
        probabilities = paste_masks_in_image(logits[:, 0].sigmoid(), torch.from_numpy(boxes), size).numpy()
        for obj, probability in zip(objects, probabilities):
            gt = obj.mask.decode(*size).astype(bool)
            rows.append([mask_iou(probability >= t, gt) for t in thresholds])
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(thresholds))


def calibrate_mask_threshold(model: HypercolumnModel, datasets: list[AnnotatedDataset],
                             thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS, min_area: float = 32 * 32,
                             device: str | torch.device = "cpu", progress: bool = False,
                             mirror: bool = True) -> Calibration:
    """Score every threshold on every data set (sets without masked objects are left out)."""
    if "figure_ground" not in model.tasks:
        raise ValueError("the checkpoint has no figure-ground head: there is no mask threshold to calibrate")
    if not thresholds or not all(0.0 < t < 1.0 for t in thresholds):
        raise ValueError(f"thresholds must lie strictly between 0 and 1, got {list(thresholds)}")
    names, counts, means = [], [], []
    for dataset in datasets:
        ious = mask_ious_by_threshold(model, dataset, thresholds, min_area, device, progress, mirror)
        if len(ious):
            names.append(dataset.name)
            counts.append(len(ious))
            means.append(ious.mean(axis=0))
    if not means:
        raise ValueError("no object with a mask in the data: give images with mask annotations")
    return Calibration(tuple(thresholds), names, counts, np.stack(means))


@torch.no_grad()
def fold_mask_threshold(model: HypercolumnModel, threshold: float) -> None:
    """Shift the figure-ground bias so that probability 0.5 of the shifted model is ``threshold``
    of the original (see the module docstring)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"a mask threshold lies strictly between 0 and 1, got {threshold}")
    model.heads["figure_ground"].bias.add_(math.log((1.0 - threshold) / threshold))
