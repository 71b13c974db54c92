"""Give the photos gathered by ``gather_coco_keypoint_people.py`` COCO's own instance masks where
a COCO train2017 instance annotation file for them was found (maintainers only; never committed).

    python scripts/attach_coco_instances.py --dataset DIR --instances JSON [JSON ...]

``DIR`` is the gatherer's output (``DIR/annotations/person_keypoints_train2017.json``: people with
keypoints, no masks). Each ``--instances`` file is a COCO instance file holding a subset of COCO's
train2017 annotations (some repositories ship one beside their photos). A photo of ``DIR`` that
one of them covers gets all the annotations they hold for it, masks included: every object of the
categories each file labels, crowds as COCO marks them. A gathered person whose box matches one of
those people (box IoU >= 0.9; COCO's keypoint and instance files share the boxes) lends that person
its keypoints; a gathered person without such a match stays as it was (keypoints, no mask), and so
do the photos no file covers. Writes ``DIR/annotations/train2017.json`` (COCO JSON, the categories
of the instance files with the person's keypoint names and skeleton) for
``hcviewer-train ... --coco DIR/annotations/train2017.json --images DIR/train2017``.

Checks that refuse (one message naming the file): an instance file whose size for a photo differs
from the photo's, and one annotation id that two files give different boxes or masks (a sign that
one of them is not COCO's own).

The current set (2026-12-06): 266 of coco-more's 338 photos, 2,381 annotations with masks, 776 of
its 981 people matched, none left unmatched on a covered photo. The files, from the snapshots the
gatherer's docstring names (extract each with
``git --git-dir=/work/.mirror/OWNER+NAME/repo archive HEAD PATH | tar -x -O > FILE``):

    Morgott-The-Omen-King/gpu_benchmark  mmdetection/data/coco/annotations/instances_train2017.json
                                         (80 categories; 47 of the photos)
    qsj-github/demo                      datasets/coco/annotations/person_keypoints_train2017.json
                                         (people only, with masks; 130 of the photos)
    mchoccie/DeepDataMiningLearning      data/annotations/instances_train2017.json
                                         (person, bicycle, car, motorcycle; 90 of the photos)

``enginbozaba/tiny_coco``'s ``annotations/instances_train2017.json`` covers none of them. Not
taken yet: photos that ship with such a file but have no person with keypoints, so the gatherer
skips them (53 in gpu_benchmark, 27 in DeepDataMiningLearning, counted over the ~170 snapshots
fetched by 2026-12-06; every other instance file there covers no new train2017 photo).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PERSON_ID = 1
SAME_PERSON_IOU = 0.9


def box_iou(a: list[float], b: list[float]) -> float:
    """IoU of two COCO boxes [x, y, w, h]."""
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    overlap = max(width, 0.0) * max(height, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - overlap
    return overlap / union if union > 0 else 0.0


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"{path}: cannot be read as JSON ({error}); pass a COCO annotation file")


def covering_annotations(instance_files: list[Path], images: dict[int, dict]) -> tuple[dict[int, dict], list[dict]]:
    """The instance files' annotations of ``images`` by annotation id, and their categories."""
    found: dict[int, dict] = {}
    categories: dict[int, dict] = {}
    for path in instance_files:
        coco = read_json(path)
        for image in coco.get("images", []):
            ours = images.get(image["id"])
            if ours and (ours["width"], ours["height"]) != (image["width"], image["height"]):
                raise SystemExit(f"{path}: image {image['id']} is {image['width']} x {image['height']}, the photo "
                                 f"{ours['width']} x {ours['height']}; pass COCO's own train2017 instance file")
        for annotation in coco.get("annotations", []):
            if annotation["image_id"] not in images:
                continue
            known = found.get(annotation["id"])
            if known and (known["bbox"], known["segmentation"]) != (annotation["bbox"], annotation["segmentation"]):
                raise SystemExit(f"{path}: annotation {annotation['id']} differs from another file's; pass COCO's "
                                 f"own train2017 instance files")
            found[annotation["id"]] = dict(annotation)
        categories.update((category["id"], category) for category in coco.get("categories", []))
    return found, [categories[i] for i in sorted(categories)]


def lend_keypoints(person: dict, candidates: list[dict]) -> bool:
    """Give ``person``'s keypoints to the candidate with its box; False when none has it."""
    best = max(candidates, key=lambda c: box_iou(c["bbox"], person["bbox"]), default=None)
    if best is None or box_iou(best["bbox"], person["bbox"]) < SAME_PERSON_IOU:
        return False
    if not best.get("keypoints"):
        best["keypoints"], best["num_keypoints"] = person["keypoints"], person["num_keypoints"]
    return True


def merge(people: list[dict], found: dict[int, dict]) -> tuple[list[dict], dict[str, int]]:
    """Annotations of every photo: the found ones where a file covers it, else the gathered people."""
    covered = {annotation["image_id"] for annotation in found.values()}
    merged = list(found.values())
    counts = {"photos with masks": len(covered), "masks": len(merged), "people matched": 0, "people unmatched": 0}
    for person in people:
        if person["image_id"] in covered:
            candidates = [a for a in found.values() if a["image_id"] == person["image_id"]
                          and a["category_id"] == PERSON_ID and not a["iscrowd"]]
            matched = lend_keypoints(person, candidates)
            counts["people matched" if matched else "people unmatched"] += 1
            if matched:
                continue
        merged.append(person)
    return sorted(merged, key=lambda a: (a["image_id"], a["id"])), counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, required=True, metavar="DIR", help="the gatherer's output folder")
    parser.add_argument("--instances", type=Path, nargs="+", required=True, metavar="JSON",
                        help="COCO train2017 instance (or person keypoint) files holding some of the photos")
    args = parser.parse_args(argv)
    keypoint_file = args.dataset / "annotations" / "person_keypoints_train2017.json"
    gathered = read_json(keypoint_file)
    images = {image["id"]: image for image in gathered["images"]}
    found, categories = covering_annotations(args.instances, images)
    person = next(c for c in gathered["categories"] if c["id"] == PERSON_ID)
    by_id = {c["id"]: c for c in categories}
    by_id[PERSON_ID] = dict(by_id.get(PERSON_ID, person), keypoints=person["keypoints"], skeleton=person["skeleton"])
    annotations, counts = merge(gathered["annotations"], found)
    info = dict(gathered.get("info", {}), description="COCO 2017 train photos found in public GitHub repositories, "
                "with COCO's instance masks where found and person keypoints; scripts/attach_coco_instances.py")
    out = args.dataset / "annotations" / "train2017.json"
    out.write_text(json.dumps({"info": info, "licenses": [], "images": gathered["images"],
                               "annotations": annotations,
                               "categories": [by_id[i] for i in sorted(by_id)]}))
    print(f"{out}: " + ", ".join(f"{n} {what}" for what, n in counts.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
