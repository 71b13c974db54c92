"""How well the polygon editor's simplified polygons follow real masks: for each object of a COCO
file, IoU(mask, rasterised polygons) and the number of vertices, with the editor's choice of tolerance
(auto: ``TOLERANCES``, see ``mask_to_polygons``) and at fixed ones; and how
long tracing (mask -> polygons) and one vertex edit (``apply_edit``) take; then the same times,
and the edit's RLE encoding, for one large photo's object: a synthetic 12000 x 9000 ellipse with
a thousand holes.

    .venv/bin/python benchmarks/bench_polygons.py [--coco ANN.json] [--tolerances 0.5 1 1.5 2]

Masks: ``../shared/data/coco-val-dev`` (its instance masks, crowd regions left out) by default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from hcviewer.annotation.annotation_file import encode_mask
from hcviewer.annotation.mask_crops import MaskCrop, crop_from_segmentation, crop_mask
from hcviewer.annotation.polygons import apply_edit, mask_to_polygons, move_vertex, polygons_mask

DEFAULT_COCO = Path(__file__).resolve().parents[1] / "../shared/data/coco-val-dev/annotations/instances_val2017.json"


def iou(a: MaskCrop, b: MaskCrop) -> float:
    boxes = [c.xyxy for c in (a, b) if c.mask.size]
    x0, y0 = min(x[0] for x in boxes), min(x[1] for x in boxes)
    x1, y1 = max(x[2] for x in boxes), max(x[3] for x in boxes)
    ra, rb = a.region(x0, y0, x1, y1), b.region(x0, y0, x1, y1)
    return np.count_nonzero(ra & rb) / max(1, np.count_nonzero(ra | rb))


def masks(path: Path) -> list[MaskCrop]:
    data = json.loads(path.read_text())
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    crops = [crop_from_segmentation(a["segmentation"], *sizes[a["image_id"]])
             for a in data["annotations"] if not a.get("iscrowd")]
    return [c for c in crops if c.mask.any()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, default=DEFAULT_COCO)
    parser.add_argument("--tolerances", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0])
    args = parser.parse_args()
    crops = masks(args.coco)
    print(f"{len(crops)} masks from {args.coco}")
    print("tolerance (px) | IoU mean | IoU median | IoU 5th pct | IoU min | objects < 0.95 | vertices median | max")
    for tolerance in [None, *args.tolerances]:
        ious, vertices = [], []
        for crop in crops:
            polygons = mask_to_polygons(crop, tolerance)
            ious.append(iou(crop, polygons_mask(polygons, crop.image_size)) if polygons else 0.0)
            vertices.append(sum(len(r.points) for r in polygons))
        print(f"{tolerance or 'auto'} | {np.mean(ious):.4f} | {np.median(ious):.4f} | {np.percentile(ious, 5):.4f} | "
              f"{min(ious):.4f} | {sum(i < 0.95 for i in ious)} | {int(np.median(vertices))} | {max(vertices)}")
    trace, edit = [], []
    for crop in crops:
        start = time.perf_counter()
        polygons = mask_to_polygons(crop)
        trace.append(time.perf_counter() - start)
        if polygons:
            moved = move_vertex(polygons, 0, 0, polygons[0].points[0] + 5)
            start = time.perf_counter()
            apply_edit(crop, polygons, moved)
            edit.append(time.perf_counter() - start)
    print(f"trace median {1e3 * statistics.median(trace):.2f} ms, max {1e3 * max(trace):.1f} ms; "
          f"one vertex edit median {1e3 * statistics.median(edit):.2f} ms, max {1e3 * max(edit):.1f} ms")

    large_photo()


def large_photo(height: int = 9000, width: int = 12000) -> None:
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 1, -1)
    noise = np.random.default_rng(0).random((height // 50, width // 50)).astype(np.float32)
    crop = crop_mask(mask.astype(bool) & ~(cv2.resize(noise, (width, height)) > 0.6))
    start = time.perf_counter()
    polygons = mask_to_polygons(crop)
    traced = time.perf_counter()
    edited = apply_edit(crop, polygons, move_vertex(polygons, 0, 0, polygons[0].points[0] + 50))
    applied = time.perf_counter()
    encode_mask(edited)
    encoded = time.perf_counter()
    print(f"{width} x {height} object, {len(polygons)} boundaries, {sum(len(r.points) for r in polygons)} vertices: "
          f"trace {traced - start:.2f} s, one vertex edit {applied - traced:.2f} s, encoding it {encoded - applied:.2f} s")


if __name__ == "__main__":
    main()
