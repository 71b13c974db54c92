"""How many boxes ``HypercolumnPredictor.predict`` should send through the heads at once
(``batch_size``): heads time for many boxes on one photo, chunk sizes interleaved round by round.

    .venv/bin/python benchmarks/bench_heads_chunk.py                 # bundled checkpoint, 256 boxes
    .venv/bin/python benchmarks/bench_heads_chunk.py --boxes 64 --rounds 5

Boxes: random boxes of 5-60 % of each side of a 480 x 640 photo (scikit-image's astronaut,
resized), fixed seed; all tasks of the checkpoint; 1 torch thread unless --threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "models/hcviewer-person-mobilenet_v2.safetensors"))
    parser.add_argument("--boxes", type=int, default=256)
    parser.add_argument("--chunks", default="4,8,16,32,64,128,256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    import cv2
    import numpy as np
    import torch
    from skimage import data

    from hcviewer.inference import HypercolumnPredictor

    torch.set_num_threads(args.threads)
    image = cv2.resize(data.astronaut(), (640, 480))
    rng = np.random.default_rng(0)
    size = rng.uniform(0.05, 0.6, (args.boxes, 2)) * [640, 480]
    corner = rng.uniform(0, 1, (args.boxes, 2)) * ([640, 480] - size)
    boxes = np.concatenate([corner, corner + size], 1)
    predictor = HypercolumnPredictor.from_checkpoint(args.checkpoint, device="cpu")
    predictor.set_image(image)
    chunks = [int(c) for c in args.chunks.split(",")]
    predictor.predict(boxes[:8])  # warm-up
    times: dict[int, list[float]] = {c: [] for c in chunks}
    for round_index in range(args.rounds):
        for chunk in chunks if round_index % 2 == 0 else chunks[::-1]:
            start = time.perf_counter()
            predictor.predict(boxes, batch_size=chunk)
            times[chunk].append(time.perf_counter() - start)
    print(f"{args.boxes} boxes, tasks {list(predictor.tasks)}, {args.threads} thread(s), {args.rounds} rounds")
    print("| boxes per chunk | ms for all boxes (median, min-max) | ms per box |")
    print("| ---: | ---: | ---: |")
    for chunk, values in times.items():
        median = statistics.median(values) * 1e3
        print(f"| {chunk} | {median:.0f} ({min(values) * 1e3:.0f}-{max(values) * 1e3:.0f}) | {median / args.boxes:.2f} |")


if __name__ == "__main__":
    main()
