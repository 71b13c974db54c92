"""Time the exact evaluation orders of every head and tap, next to the cost model's choice.

``HypercolumnHead.evaluation_order`` picks ``scores`` or ``pixels`` from a cost model in
multiply-adds; this script measures what each order really costs for the bundled model's
layout (all three tasks, 5x5 grid, 50x50 output) and flags where the model picks the slower
one. Use it to re-fit ``UPSAMPLE_COST`` and ``BMM_OVERHEAD`` in hcviewer/modeling/heads.py.
The heads that evaluate a tap per pixel do so together, in the ``pixels`` or the ``columns``
order (``heads.per_pixel_order``): the last columns time both for those heads (features from
the cut at the tap's size, as the predictor has them) and name the one picked.

    .venv/bin/python benchmarks/calibrate_heads.py [--boxes 4] [--backbones mobilenet_v2 vgg16]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from typing import Callable

import torch

from hcviewer.modeling import BACKBONES, build_person_model
from hcviewer.modeling.box_features import column_major_features, pixel_major_features
from hcviewer.modeling.heads import contributions_by_columns, contributions_by_pixels, per_pixel_order


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def random_rois(count: int, height: int, width: int) -> torch.Tensor:
    """[count, 5] boxes between a tenth and two thirds of the image side."""
    generator = torch.Generator().manual_seed(0)
    size = torch.rand(count, 2, generator=generator) * 0.55 + 0.1
    corner = torch.rand(count, 2, generator=generator) * (1 - size)
    scale = torch.tensor([width, height])
    x0y0, x1y1 = corner * scale, (corner + size) * scale
    return torch.cat([torch.zeros(count, 1), x0y0, x1y1], dim=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "vgg16", "alexnet"], choices=sorted(BACKBONES))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print("| backbone | tap | R | Cin | upsampling features (ms) | scores / pixels per task (ms) "
          "| plan picked | its ms | fastest plan | its ms | per-pixel heads: pixels / columns (ms) | picked |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- | ---: | --- | ---: | --- | --- |")
    for backbone in args.backbones:
        model = build_person_model(backbone, grid_size=5, parts=("head", "torso", "legs")).eval()
        rois = random_rois(args.boxes, 480, 640)
        with torch.inference_mode():
            box_features = model.box_tap_features(model.forward_trunk(torch.randn(1, 3, 480, 640)), rois, model.taps)
            for tap, features in box_features.items():
                print(calibration_row(model, backbone, tap, features, args.repeats))
    return 0


def calibration_row(model, backbone: str, tap: str, features: torch.Tensor, repeats: int) -> str:
    """One tap: each head's time in both orders, the plan the cost model picks in a real call
    (widest head first, upsampled features shared) and the fastest of all plans."""
    s = model.config.output_size
    upsample_ms = median_ms(lambda: pixel_major_features(features, s), repeats)
    per_pixel = pixel_major_features(features, s)
    times = {}
    for task, head in model.heads.items():
        times[task] = {
            "scores": median_ms(lambda: head.contribution_by_scores(tap, features, None), repeats),
            "pixels": median_ms(lambda: contributions_by_pixels([head], tap, per_pixel), repeats),
        }
    picked, upsampled = {}, False
    for task in sorted(model.heads, key=lambda t: -model.heads[t].task_channels):
        picked[task] = model.heads[task].evaluation_order(tap, features.shape[-1], upsampled, shared_matmul=upsampled)
        upsampled = upsampled or picked[task] == "pixels"

    def plan_ms(plan: dict[str, str]) -> float:
        shared = upsample_ms if "pixels" in plan.values() else 0.0
        return shared + sum(times[task][order] for task, order in plan.items())

    plans = [dict(zip(times, orders)) for orders in itertools.product(("scores", "pixels"), repeat=len(times))]
    fastest = min(plans, key=plan_ms)
    per_task = ", ".join(f"{t} {v['scores']:.2f} / {v['pixels']:.2f}" for t, v in times.items())

    def describe(plan: dict[str, str]) -> str:
        return ", ".join(f"{t} {plan[t]}" for t in times)

    grouped = [model.heads[task] for task in times if picked[task] == "pixels"]
    if grouped and features.shape[-1] > 1:
        by_pixels = median_ms(lambda: contributions_by_pixels(grouped, tap, pixel_major_features(features, s)), repeats)
        by_columns = median_ms(lambda: contributions_by_columns(grouped, tap, [column_major_features(features, s)]),
                               repeats)
        family = f"{by_pixels:.2f} / {by_columns:.2f} | {per_pixel_order(grouped, tap, features.shape[-1])}"
    else:
        family = "- | -"
    return (f"| {backbone} | {tap} | {features.shape[-1]} | {features.shape[1]} | {upsample_ms:.2f} | {per_task} | "
            f"{describe(picked)} | {plan_ms(picked):.2f} | {describe(fastest)} | {plan_ms(fastest):.2f} | {family} |")


if __name__ == "__main__":
    sys.exit(main())
