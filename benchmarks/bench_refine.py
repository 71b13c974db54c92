"""Edge refinement: mask IoU with and without it, and what it costs per box.

The bundled checkpoint (or --checkpoint) segments every non-crowd ground-truth box of at least
32 x 32 px of a COCO set (default ../shared/data/coco-val-dev, photos no training run has seen)
through the app's predictor; each box's mask is scored unrefined (probability >= 0.5) and
refined by each method of ``hcviewer.refine``. Mask IoU is over the full image against
the ground-truth mask (as ``hcviewer-train eval``); cost is the refinement alone, per box, in
milliseconds (median and mean), with OMP_NUM_THREADS as set by the caller. Run from the
repository root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_refine.py [--limit N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from hcviewer.data.coco import read_coco
from hcviewer.inference import HypercolumnPredictor, Prediction, paste_masks
from hcviewer.refine import REFINE_METHODS, refine_probability

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "coco-val-dev"
CHECKPOINT = REPO / "models" / "hcviewer-person-mobilenet_v2.safetensors"
MIN_AREA = 32 * 32


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--annotations", default=str(DATA / "annotations" / "instances_val2017.json"))
    parser.add_argument("--images", default=str(DATA / "val2017"))
    parser.add_argument("--methods", default=",".join(REFINE_METHODS))
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    methods = args.methods.split(",")
    predictor = HypercolumnPredictor.from_checkpoint(args.checkpoint, "cpu")
    dataset = read_coco(args.annotations, args.images)
    ious: dict[str, list[float]] = {"none": [], **{m: [] for m in methods}}
    person: dict[str, list[float]] = {k: [] for k in ious}
    cost: dict[str, list[float]] = {m: [] for m in methods}
    for record in dataset.images[:args.limit]:
        objects = [o for o in record.objects if o.mask is not None and not o.iscrowd
                   and (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) >= MIN_AREA]
        if not objects:
            continue
        image = record.load_rgb()
        size = image.shape[:2]
        predictor.set_image(image)
        boxes = np.stack([o.box for o in objects])
        prediction = predictor.predict(boxes, tasks=("figure_ground",))
        plain = paste_masks(prediction, size, threshold=0.5)
        for i, obj in enumerate(objects):
            gt = obj.mask.decode(*size)
            scores = {"none": iou(plain[i], gt)}
            for method in methods:
                start = time.perf_counter()
                refined = refine_probability(image, boxes[i], prediction.figure_ground[i], method)
                cost[method].append((time.perf_counter() - start) * 1000)
                one = Prediction(boxes[i:i + 1], prediction.taps, figure_ground=prediction.figure_ground[i:i + 1],
                                 refined=[refined])
                scores[method] = iou(paste_masks(one, size, threshold=0.5)[0], gt)
            for name, value in scores.items():
                ious[name].append(value)
                if obj.category == "person":
                    person[name].append(value)
    report = {
        "data": args.annotations, "checkpoint": args.checkpoint, "boxes": len(ious["none"]),
        "people": len(person["none"]), "machine": platform.processor() or platform.machine(),
        "mask_iou": {k: float(np.mean(v)) for k, v in ious.items()},
        "person_mask_iou": {k: float(np.mean(v)) if v else None for k, v in person.items()},
        "ms_per_box_median": {k: statistics.median(v) for k, v in cost.items()},
        "ms_per_box_mean": {k: float(np.mean(v)) for k, v in cost.items()},
        "ms_per_box_p90": {k: float(np.percentile(v, 90)) for k, v in cost.items()},
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
