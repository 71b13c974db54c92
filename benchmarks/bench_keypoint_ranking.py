"""What limits OKS keypoint AP: the points themselves, or the scores that rank the people?

The bundled checkpoint (or --checkpoint) predicts the 17 keypoints of every person of a COCO
keypoint set (default ../shared/data/coco-val-kp-dev, photos no training run has seen) from the
ground-truth box, as `hcviewer-train eval` does (boxes of at least 32 x 32 px, mirror averaging).
With ground-truth boxes every person has one answer, so AP depends only on how far each answer's
object keypoint similarity (OKS) goes and on the order the scores put the people in. The table
gives COCO's OKS AP with the model's scores (the mean of the joints' scores, as `eval` scores),
with the people ranked by their true OKS (the most any per-person score could give), and the
share of people whose OKS reaches each threshold. Run from the repository root:

    .venv/bin/python benchmarks/bench_keypoint_ranking.py [--checkpoint FILE] [--data DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench_keypoint_visibility import DATA, REPO, predicted_people, read_keypoint_file

from hcviewer.inference import HypercolumnPredictor
from hcviewer.train.metrics import COCO_KEYPOINT_SIGMAS, coco_keypoint_ap

MIN_BOX_AREA = 32 * 32  # as `hcviewer-train eval --min-area`


def people_and_points(predictor: HypercolumnPredictor, data: Path) -> tuple[dict, list[dict]]:
    """The scored people as a COCO ground truth, and one detection per person (its box, its 17
    points and the model's score)."""
    coco = read_keypoint_file(data)
    people, detections = [], []
    for ann, points, _ in predicted_people(predictor, data, coco, MIN_BOX_AREA):
        flat = np.concatenate([points[:, :2], np.ones((len(points), 1))], 1).reshape(-1).tolist()
        people.append(ann)
        detections.append({"image_id": ann["image_id"], "category_id": 1, "bbox": ann["bbox"], "keypoints": flat,
                           "score": float(points[:, 2].mean())})
    photos = {ann["image_id"] for ann in people}
    truth = {"images": [i for i in coco["images"] if i["id"] in photos], "categories": coco["categories"],
             "annotations": people}
    return truth, detections


def object_keypoint_similarity(detection: dict, person: dict) -> float:
    """COCO's OKS of one answer against its person (labelled joints only)."""
    truth = np.asarray(person["keypoints"], np.float64).reshape(-1, 3)
    points = np.asarray(detection["keypoints"], np.float64).reshape(-1, 3)
    labelled = truth[:, 2] > 0
    squared = ((points[:, :2] - truth[:, :2]) ** 2).sum(1)
    error = squared / (2 * COCO_KEYPOINT_SIGMAS) ** 2 / (person["area"] + np.spacing(1)) / 2
    return float(np.exp(-error[labelled]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "models" / "hcviewer-person-mobilenet_v2.safetensors"))
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    truth, detections = people_and_points(HypercolumnPredictor.from_checkpoint(args.checkpoint, device="cpu"),
                                          args.data)
    similarity = np.array([object_keypoint_similarity(d, p) for d, p in zip(detections, truth["annotations"])])
    ranked_by_truth = [{**d, "score": s} for d, s in zip(detections, similarity)]
    print(f"{len(detections)} people in {len(truth['images'])} photos\n")
    print("| people ranked by | OKS AP | AP@0.5 | AP@0.75 |\n|---|---:|---:|---:|")
    for name, answers in (("the model's scores", detections), ("their true OKS", ranked_by_truth)):
        ap = coco_keypoint_ap(truth, answers)
        print(f"| {name} | {ap['AP']:.3f} | {ap['AP50']:.3f} | {ap['AP75']:.3f} |")
    print("\n| OKS at least | share of people |\n|---:|---:|")
    for threshold in (0.5, 0.75, 0.9):
        print(f"| {threshold:.2f} | {(similarity >= threshold).mean():.2f} |")


if __name__ == "__main__":
    main()
