"""Masks as COCO RLE on a large photo: ``hcviewer predict``'s encoding (each box pasted and
encoded over its own pixels) against pasting every box into the whole image first.

    .venv/bin/python benchmarks/bench_paste.py            # 4000 x 3000, 16 boxes, 3 rounds

Each variant runs in its own process (for its peak memory, VmHWM), alternating, several rounds;
both must give identical RLE and scores (checked).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def boxes_and_maps(height: int, width: int, count: int):
    import numpy as np

    rng = np.random.default_rng(0)
    sides = rng.uniform(0.05, 0.4, (count, 2)) * [width, height]  # 200-1600 x 150-1200 px
    corners = rng.uniform(0, 1, (count, 2)) * ([width, height] - sides)
    boxes = np.concatenate([corners, corners + sides], 1).astype(np.float32)
    yy, xx = np.mgrid[0:50, 0:50] / 49.0
    blob = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) * 6).astype(np.float32)  # an object-like map
    return boxes, np.stack([blob * rng.uniform(0.8, 1.2) for _ in range(count)]).astype(np.float32)


def run_variant(name: str, height: int, width: int, count: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import numpy as np
    from pycocotools import mask as mask_utils

    from hcviewer.annotation.batch import _encode_masks
    from hcviewer.inference import Prediction, paste_masks

    boxes, maps = boxes_and_maps(height, width, count)
    prediction = Prediction(boxes=boxes, taps=(), figure_ground=maps)
    start = time.perf_counter()
    if name == "box region":
        rles, scores = _encode_masks(prediction, (height, width), 0.5)
    else:  # the whole image per box, 8 boxes at a time (the previous implementation)
        rles, scores = [], []
        for lo in range(0, count, 8):
            part = Prediction(boxes=boxes[lo:lo + 8], taps=(), figure_ground=maps[lo:lo + 8])
            for probs in paste_masks(part, (height, width)):
                mask = probs >= 0.5
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                rles.append({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})
                scores.append(float(probs[mask].mean()) if mask.any() else 0.0)
    seconds = time.perf_counter() - start
    peak_kb = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")))
    print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "rles": rles, "scores": scores}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT")
    parser.add_argument("--boxes", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.variant:
        run_variant(args.variant, height, width, args.boxes)
        return
    results: dict[str, list[dict]] = {}
    variants = ["box region", "whole image"]
    for round_index in range(args.rounds):
        for name in variants if round_index % 2 == 0 else variants[::-1]:
            out = subprocess.run([sys.executable, __file__, "--variant", name, "--size", args.size,
                                  "--boxes", str(args.boxes)], capture_output=True, text=True, check=True).stdout
            results.setdefault(name, []).append(json.loads(out.splitlines()[-1]))
    same = all(r["rles"] == results["whole image"][0]["rles"] and r["scores"] == results["whole image"][0]["scores"]
               for runs in results.values() for r in runs)
    print(f"{width} x {height}, {args.boxes} boxes of 200-1600 x 150-1200 px, {args.rounds} rounds; "
          f"identical RLE and scores: {same}")
    print("| encoding | ms per box (median, min-max) | peak memory of the process (MB) |")
    print("| --- | ---: | ---: |")
    for name, runs in results.items():
        per_box = [r["seconds"] / args.boxes * 1e3 for r in runs]
        print(f"| {name} | {statistics.median(per_box):.1f} ({min(per_box):.1f}-{max(per_box):.1f}) "
              f"| {statistics.median(r['peak_mb'] for r in runs):.0f} |")


if __name__ == "__main__":
    main()
