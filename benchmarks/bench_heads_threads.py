"""How many threads the predictor's heads should use: ``predict`` time per box count, with the
heads narrowed to one thread (their two largest products widened back to every thread: the
predictor's choice under passive waiting), narrowed with nothing widened, and on every thread.

The variants run interleaved photo by photo and round by round (the order rotating), in one
process, under this process's OpenMP waiting: run it as the app runs (passive waiting, the
default here, as ``hcviewer.threads`` sets it) or with the trainer's short spin
(``GOMP_SPINCOUNT=1000``). Random boxes of 10-40 % x 20-40 % of each photo, fixed seed; the
person model's layout with all three tasks, random weights.

    .venv/bin/python benchmarks/bench_heads_threads.py
    GOMP_SPINCOUNT=1000 .venv/bin/python benchmarks/bench_heads_threads.py --boxes 4 16
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_predictor import DEFAULT_DATA, load_coco_samples, load_skimage_samples  # noqa: E402

VARIANTS = ("one thread, large products widened", "one thread", "every thread")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from hcviewer.threads import apply_thread_policy, waits_passively

    policy = apply_thread_policy(None)  # before torch loads, as the app does
    import numpy as np
    import torch

    import hcviewer.modeling.backbones as backbones_module
    import hcviewer.modeling.heads as heads_module
    from hcviewer.inference import HypercolumnPredictor
    from hcviewer.modeling import build_person_model
    from hcviewer.threads import narrowed_threads, widened_threads

    if (args.data / "annotations" / "instances_train2017.json").is_file():
        samples = load_coco_samples(args.data, args.images)
    else:
        samples = load_skimage_samples(args.images)
    predictor = HypercolumnPredictor(build_person_model("mobilenet_v2", grid_size=5, parts=("head", "torso", "legs")),
                                     device="cpu")

    def use(variant: str) -> None:
        widen = widened_threads if variant == VARIANTS[0] else contextlib.nullcontext
        heads_module.widened_threads = backbones_module.widened_threads = widen
        # The predictor narrows only under passive waiting; here each variant sets it alike.
        predictor._heads_threads = contextlib.nullcontext if variant == VARIANTS[2] else lambda: narrowed_threads(1)

    rng = np.random.default_rng(0)
    print(f"{policy.describe()}; OpenMP waiting {'passive' if waits_passively() else 'with spinning'}; "
          f"{len(samples)} photos x {args.rounds} rounds; medians (min-max) of predict, ms")
    print("| boxes | " + " | ".join(VARIANTS) + " |")
    print("| ---: |" + " ---: |" * len(VARIANTS))
    for count in args.boxes:
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        step = 0
        for _ in range(args.rounds):
            for sample in samples:
                h, w = sample.image.shape[:2]
                corner = rng.uniform(0, 0.6, (count, 2)) * (w, h)
                size = np.stack([rng.uniform(0.1, 0.4, count) * w, rng.uniform(0.2, 0.4, count) * h], 1)
                boxes = np.concatenate([corner, corner + size], 1).astype(np.float32)
                predictor.set_image(sample.image)
                for variant in VARIANTS[step % 3:] + VARIANTS[:step % 3]:
                    use(variant)
                    predictor.predict(boxes)  # the trunk's and the other variants' traces out of the caches
                    start = time.perf_counter()
                    predictor.predict(boxes)
                    times[variant].append((time.perf_counter() - start) * 1000)
                step += 1
        cells = [f"{statistics.median(t):.1f} ({min(t):.1f}-{max(t):.1f})" for t in times.values()]
        print(f"| {count} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
