"""Draw copy-paste training images, to check their targets by eye (not a benchmark; no timing).

Each image is a training photo at training scale with another photo's objects pasted on (as
``hcviewer-train --copy-paste`` makes them, before flips, colour and scale jitter): the target's
remaining objects are outlined in green, the pasted ones in red, each with its box; keypoints
are filled dots when visible (v=2) and hollow rings when hidden (v=1).

    PYTHONPATH=. .venv/bin/python benchmarks/show_copy_paste.py --data ../shared/data/coco-mini-train --out /tmp/cp
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from hcviewer.data.coco import read_coco
from hcviewer.data.copy_paste import copy_paste, object_region
from hcviewer.data.targets import flip_permutation
from hcviewer.data.training import BoxTrainingDataset, PreparedImage, TargetSpec


PASTED = "*"  # appended to the source's category names, to tell pasted objects apart


def draw(image: PreparedImage) -> np.ndarray:
    """BGR picture of ``image``: the target's objects in green, pasted ones in red."""
    canvas = cv2.cvtColor(image.rgb, cv2.COLOR_RGB2BGR)
    for i, category in enumerate(image.categories):
        colour = (0, 0, 255) if category.endswith(PASTED) else (0, 200, 0)
        region = object_region(image, i)
        if region is not None:
            contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(canvas, contours, -1, colour, 1)
        x0, y0, x1, y1 = (int(round(v)) for v in image.boxes[i])
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), colour, 1)
        for x, y, v in image.keypoints[i]:
            if v > 0:
                cv2.circle(canvas, (int(x), int(y)), 3, (255, 255, 0) if v == 2 else (255, 0, 255), -1 if v == 2 else 1)
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a COCO folder with annotations/ and train2017/")
    parser.add_argument("--out", type=Path, default=Path("/tmp/copy_paste"))
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    annotations = args.data / "annotations"
    dataset = read_coco([annotations / "instances_train2017.json", annotations / "person_keypoints_train2017.json"],
                        args.data / "train2017")
    spec = TargetSpec(50, dataset.keypoint_names)
    training = BoxTrainingDataset(dataset, spec, args.image_size)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for n in range(args.count):
        target_index, source_index = rng.choice(len(training), 2, replace=False)
        target, source = training._prepare(int(target_index)), training._prepare(int(source_index))
        source = replace(source, categories=[c + PASTED for c in source.categories])
        pasted = copy_paste(target, source, rng, flip_permutation(spec.keypoint_names))
        count = sum(c.endswith(PASTED) for c in pasted.categories)
        path = args.out / f"copy_paste_{n}.png"
        cv2.imwrite(str(path), np.concatenate([draw(target), draw(pasted)], 1))
        print(f"{path}: {len(target.categories)} objects -> {len(pasted.categories) - count} kept + {count} pasted")


if __name__ == "__main__":
    main()
