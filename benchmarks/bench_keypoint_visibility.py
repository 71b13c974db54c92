"""The saved keypoint rule: how many points saved as visible (v = 2) at each score threshold are right.

The bundled checkpoint (or --checkpoint) predicts the 17 keypoints of every person of a COCO
keypoint set (default ../shared/data/coco-val-kp-dev, photos no training run has seen) from the
ground-truth box. A point is saved as visible when its score reaches the threshold; it is right
when COCO labels it (v > 0) and it lies within 0.1 of the box's long side of COCO's point.
Precision: right points among those saved; recall: right points saved among all right points.
Run from the repository root:

    .venv/bin/python benchmarks/bench_keypoint_visibility.py [--checkpoint FILE] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from hcviewer.imageio import read_image
from hcviewer.inference import HypercolumnPredictor

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "coco-val-kp-dev"
THRESHOLDS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2)
NEAR = 0.1  # of the box's long side


def predicted_people(predictor: HypercolumnPredictor, data: Path, coco: dict,
                     min_box_area: float = 0.0) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """(annotation, predicted points [J, 3], box x0 y0 x1 y1) of each person of ``coco`` (the
    keypoint file of ``data``) that has labelled keypoints, is no crowd and whose box covers at
    least ``min_box_area`` px; each photo's people are predicted together from their boxes."""
    files = {image["id"]: image["file_name"] for image in coco["images"]}
    people: dict[int, list[dict]] = {}
    for ann in coco["annotations"]:
        if ann.get("num_keypoints", 0) > 0 and not ann.get("iscrowd") and ann["bbox"][2] * ann["bbox"][3] >= min_box_area:
            people.setdefault(ann["image_id"], []).append(ann)
    for image_id, anns in people.items():
        predictor.set_image(read_image(data / "val2017" / files[image_id]).rgb)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float64)
        prediction = predictor.predict(boxes, categories=["person"] * len(anns), tasks=("keypoints",))
        yield from zip(anns, prediction.keypoints, boxes)


def read_keypoint_file(data: Path) -> dict:
    """The COCO keypoint file of a set laid out as coco-val-kp-dev."""
    return json.loads((data / "annotations" / "person_keypoints_val2017.json").read_text())


def point_rows(predictor: HypercolumnPredictor, data: Path) -> np.ndarray:
    """[points, 3]: predicted score, COCO's v, distance to COCO's point over the box's long side."""
    rows = []
    for ann, points, box in predicted_people(predictor, data, read_keypoint_file(data)):
        truth = np.array(ann["keypoints"], np.float64).reshape(-1, 3)
        side = max(box[2] - box[0], box[3] - box[1])
        distance = np.where(truth[:, 2] > 0, np.hypot(*(points[:, :2] - truth[:, :2]).T) / side, np.inf)
        rows += zip(points[:, 2], truth[:, 2], distance)
    return np.array(rows, np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "models" / "hcviewer-person-mobilenet_v2.safetensors"))
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    rows = point_rows(HypercolumnPredictor.from_checkpoint(args.checkpoint, device="cpu"), args.data)
    score, labelled, distance = rows.T
    right = (labelled > 0) & (distance < NEAR)
    print(f"{len(rows)} points, {int((labelled > 0).sum())} labelled by COCO, {int(right.sum())} of them placed "
          f"within {NEAR} of the box's long side\n")
    print("| saved visible at score >= | points saved | precision | recall | F1 |\n|---:|---:|---:|---:|---:|")
    for threshold in THRESHOLDS:
        saved = score >= threshold
        hits = int((saved & right).sum())
        precision, recall = hits / max(int(saved.sum()), 1), hits / max(int(right.sum()), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        print(f"| {threshold:.3f} | {int(saved.sum())} | {precision:.3f} | {recall:.3f} | {f1:.3f} |")


if __name__ == "__main__":
    main()
