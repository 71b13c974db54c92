"""The numbers hcviewer/data/lsp.py uses to make LSPet people look like COCO people.

1. Box margins: over COCO train people (not crowd) with at least 10 labelled keypoints, the
   ground-truth box beyond the extent of their labelled limb joints (the 12 COCO joints LSPet
   also has: shoulders, elbows, wrists, hips, knees, ankles), as fractions of that extent's width
   (left, right) and height (top, bottom). Medians -> ``BOX_MARGINS``.
2. Size: the median box height of those people with their photo's long side at the predictor's
   640 px; with --lsp, the median height of LSPet's derived boxes at the file's size, and their
   ratio -> ``SCALE``.

Run from the repository root:

    .venv/bin/python benchmarks/measure_keypoint_box_margins.py [--coco-root DIR ...] [--lsp ROOT]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hcviewer.data.coco import read_coco
from hcviewer.data.lsp import COCO_LIMB_JOINTS, read_lsp

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
COCO_ROOTS = (DATA / "coco-mini-train", DATA / "coco-extra-train")
MIN_KEYPOINTS = 10
IMAGE_SIZE = 640  # the predictor's long side


def coco_people(root: Path) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(box xyxy, keypoints [17, 3], photo long side) of each usable person of a COCO train folder."""
    dataset = read_coco(root / "annotations" / "person_keypoints_train2017.json", root / "train2017", ("person",))
    people = []
    for image in dataset.images:
        for obj in image.objects:
            if obj.iscrowd or obj.keypoints is None or (obj.keypoints[:, 2] > 0).sum() < MIN_KEYPOINTS:
                continue
            people.append((obj.box, obj.keypoints, max(image.width, image.height)))
    return people


def margins(box: np.ndarray, keypoints: np.ndarray) -> np.ndarray | None:
    """(left, right, top, bottom) of the box beyond the limb joints' extent, or None when the
    extent is flat."""
    limbs = keypoints[list(COCO_LIMB_JOINTS)]
    points = limbs[limbs[:, 2] > 0, :2]
    if len(points) < 2:
        return None
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return np.array([(x0 - box[0]) / (x1 - x0), (box[2] - x1) / (x1 - x0),
                     (y0 - box[1]) / (y1 - y0), (box[3] - y1) / (y1 - y0)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--coco-root", action="append", type=Path, default=None,
                        help="COCO train folder(s) with annotations/person_keypoints_train2017.json")
    parser.add_argument("--lsp", type=Path, default=None, help="LSPet folder: also measure its boxes and the scale")
    args = parser.parse_args()
    people = [p for root in args.coco_root or COCO_ROOTS for p in coco_people(root)]
    rows = np.array([m for box, kp, _ in people if (m := margins(box, kp)) is not None])
    print(f"{len(rows)} COCO people with >= {MIN_KEYPOINTS} labelled keypoints (of {len(people)})")
    for name, column in zip(("left", "right", "top", "bottom"), rows.T):
        q25, q50, q75 = np.percentile(column, (25, 50, 75))
        print(f"  {name:6s} margin: median {q50:.3f} (quartiles {q25:.3f}, {q75:.3f}) of the joint extent")
    heights = np.array([(box[3] - box[1]) * IMAGE_SIZE / long_side for box, _, long_side in people])
    coco_height = float(np.median(heights))
    print(f"COCO box height at {IMAGE_SIZE} px: median {coco_height:.0f} px "
          f"(quartiles {np.percentile(heights, 25):.0f}, {np.percentile(heights, 75):.0f})")
    if args.lsp:
        lsp = read_lsp(args.lsp, scale=1.0)
        lsp_heights = np.array([o.box[3] - o.box[1] for im in lsp.images for o in im.objects])
        long_sides = np.array([max(im.width, im.height) for im in lsp.images])
        lsp_height = float(np.median(lsp_heights))
        print(f"LSPet derived box height: median {lsp_height:.0f} px over {len(lsp_heights)} people; "
              f"photo long side median {np.median(long_sides):.0f} px")
        print(f"scale = {coco_height:.0f} / {lsp_height:.0f} = {coco_height / lsp_height:.2f}; "
              f"enlarged long side median {np.median(long_sides) * coco_height / lsp_height:.0f} px, "
              f"{np.mean(long_sides * coco_height / lsp_height > IMAGE_SIZE):.0%} over {IMAGE_SIZE}")


if __name__ == "__main__":
    main()
