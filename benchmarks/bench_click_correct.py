"""Click to correct against the brush: NoC@85 / NoC@90 on ground-truth boxes of a COCO set.

The interactive-segmentation protocol (Xu et al. 2016; Sofiiuk et al., RITM 2022): the bundled
checkpoint (or --checkpoint) segments each non-crowd ground-truth box of at least 32 x 32 px
(area) through the app's predictor, edge refinement on as in the app, and the proposal is its
mask at 0.5. Then a simulated user clicks, up to --max-clicks times, each click at the centre
(the point farthest from its boundary) of the largest error region: positive in a missed
object region, negative in a false one. After each click the mask is scored (IoU over the image
against the ground-truth mask). NoC@85 (@90): clicks until IoU >= 0.85 (0.90); 0 when the
proposal reaches it already, --max-clicks when never reached.

Methods: each of ``hcviewer.click_correct.CLICK_METHODS`` (a click re-segments the box), and
the brush as the app paints it: one dab of the app's default radius at the same point, adding
(positive) or erasing (negative). Run from the repository root:

    nice .venv/bin/python benchmarks/bench_click_correct.py [--objects 100] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from hcviewer.app.controllers.annotation import paint_stroke
from hcviewer.app.image_view import ImageView
from hcviewer.click_correct import CLICK_METHODS, Click, box_pixels, correct_in_box
from hcviewer.data.coco import read_coco
from hcviewer.inference import HypercolumnPredictor

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "coco-val-dev"
CHECKPOINT = REPO / "models" / "hcviewer-person-mobilenet_v2.safetensors"
MIN_AREA = 32 * 32
TARGETS = (0.85, 0.90)


def brush_radius() -> float:
    """The app's default brush radius, read from the class (no window is made)."""
    import inspect
    import re

    source = inspect.getsource(ImageView.__init__)
    return float(re.search(r"self\.brush_radius = ([0-9.]+)", source).group(1))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def next_click(mask: np.ndarray, gt: np.ndarray) -> Click | None:
    """The protocol's click: the centre of the largest error region (missed -> positive)."""
    best = None
    for positive, error in ((True, gt & ~mask), (False, mask & ~gt)):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(error.astype(np.uint8), connectivity=8)
        if count <= 1:
            continue
        label = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[label, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, positive, labels == label)
    if best is None:
        return None
    _, positive, region = best
    inside = np.pad(region, 1).astype(np.uint8)  # the image border is a boundary too
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, 5)[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return Click(col + 0.5, row + 0.5, positive)


def simulate(method: str, image: np.ndarray, box: np.ndarray, box_map: np.ndarray, start: np.ndarray,
             gt: np.ndarray, max_clicks: int, radius: float) -> tuple[list[float], list[float]]:
    """IoU after 0..max_clicks clicks (stopping early at IoU >= the highest target) and the
    milliseconds each click took."""
    mask, clicks, ious, costs = start.copy(), [], [iou(start, gt)], []
    x0, y0, x1, y1 = box_pixels(box, image.shape[:2])
    while len(clicks) < max_clicks and ious[-1] < max(TARGETS):
        click = next_click(mask, gt)
        if click is None:
            break
        clicks.append(click)
        began = time.perf_counter()
        if method == "brush":
            mask = paint_stroke(mask, [(click.x, click.y)], radius, click.positive)
        elif x0 <= click.x < x1 and y0 <= click.y < y1:  # the app takes clicks inside the box only
            mask = mask.copy()
            mask[y0:y1, x0:x1] = correct_in_box(image, box, box_map, mask[y0:y1, x0:x1], clicks, method)
        costs.append((time.perf_counter() - began) * 1000)
        ious.append(iou(mask, gt))
    return ious, costs


def noc(ious: list[float], target: float, max_clicks: int) -> int:
    return next((k for k, value in enumerate(ious) if value >= target), max_clicks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(CHECKPOINT))
    parser.add_argument("--annotations", default=str(DATA / "annotations" / "instances_val2017.json"))
    parser.add_argument("--images", default=str(DATA / "val2017"))
    parser.add_argument("--methods", default=",".join(("brush", *CLICK_METHODS)))
    parser.add_argument("--objects", type=int, default=100, help="the first N objects (in file order)")
    parser.add_argument("--max-clicks", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    methods, radius = args.methods.split(","), brush_radius()
    predictor = HypercolumnPredictor.from_checkpoint(args.checkpoint, "cpu")
    dataset = read_coco(args.annotations, args.images)
    runs: dict[str, list[tuple[list[float], list[float]]]] = {m: [] for m in methods}
    sizes, count = [], 0
    for record in dataset.images:
        objects = [o for o in record.objects if o.mask is not None and not o.iscrowd
                   and (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) >= MIN_AREA][:args.objects - count]
        if not objects:
            continue
        image = record.load_rgb()
        size = image.shape[:2]
        sizes.append(size)
        predictor.set_image(image)
        boxes = np.stack([o.box for o in objects]).astype(np.float64)
        prediction = predictor.predict(boxes, tasks=("figure_ground",), refine=True)
        for i, obj in enumerate(objects):
            gt = obj.mask.decode(*size)
            start = np.zeros(size, bool)
            x0, y0, x1, y1 = box_pixels(boxes[i], size)
            start[y0:y1, x0:x1] = _proposal(boxes[i], prediction.refined[i], size)
            for method in methods:
                runs[method].append(simulate(method, image, boxes[i], prediction.refined[i], start, gt,
                                             args.max_clicks, radius))
        count += len(objects)
        print(f"{count} objects", flush=True)
        if count >= args.objects:
            break
    report = {"objects": count, "images": len(sizes), "max_clicks": args.max_clicks, "brush_radius": radius,
              "machine": platform.processor() or platform.machine(), "methods": {}}
    for method, results in runs.items():
        costs = [c for _, per_click in results for c in per_click]
        row = {"start_iou": statistics.mean(ious[0] for ious, _ in results),
               "ms_per_click_median": statistics.median(costs) if costs else None,
               "ms_per_click_mean": statistics.mean(costs) if costs else None}
        for target in TARGETS:
            clicks = [noc(ious, target, args.max_clicks) for ious, _ in results]
            row[f"noc@{round(target * 100)}"] = statistics.mean(clicks)
            row[f"reached@{round(target * 100)}"] = sum(max(ious) >= target for ious, _ in results) / len(results)
        report["methods"][method] = row
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def _proposal(box: np.ndarray, box_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The app's proposal over the box's pixels: the refined map pasted, at 0.5."""
    import torch

    from hcviewer.paste import paste_heatmap_region

    return paste_heatmap_region(torch.from_numpy(box_map[None]), box, size)[0][0].numpy() >= 0.5


if __name__ == "__main__":
    main()
