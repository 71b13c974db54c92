"""Gather COCO train2017 photos from fetched GitHub snapshots and write a COCO person-keypoint
file for them from COCO's own train2017 keypoint ground truth (maintainers only; the photos and
labels are never committed).

    python scripts/gather_coco_keypoint_people.py --labels LABELS/labels/train2017 \\
        --mirror GITDIR [GITDIR ...] --exclude IMAGES [IMAGES ...] --out DIR

Writes ``DIR/train2017/%012d.jpg`` (the JPEG bytes as found, unchanged),
``DIR/annotations/person_keypoints_train2017.json`` (COCO keypoint JSON: ``images``, the person
category with COCO's 17 keypoint names and skeleton, one annotation per label line with ``bbox``
and ``keypoints`` in pixels, ``num_keypoints``, ``area`` = box area, since COCO's own area is the
mask's, ``iscrowd`` 0, ``id`` = image id * 100 + line number; no masks) and ``DIR/sources.tsv``
(COCO id, repository, git dir, commit, path of each photo). Read it for training with
``hcviewer-train ... --coco DIR/annotations/person_keypoints_train2017.json --images DIR/train2017``;
only the people COCO labels with keypoints are annotated, so use it for the keypoint head.
``scripts/attach_coco_instances.py`` then adds COCO's own masks to the photos whose source
repositories ship COCO instance annotations.

Which photos are taken: every blob in the ``HEAD`` tree of each ``--mirror`` named ``%012d.jpg``
(or ``.jpeg``; 2014 names such as ``COCO_train2014_%012d.jpg`` are not read: in the captioning and
VQA repositories searched, codewithminer/ImageCaptioning and ManaviAgrawal/VQA, they were 256 x 256
and 224 x 224 thumbnails) whose id has a label file in ``--labels``
(COCO train2017 people with keypoints: a val2017 or test photo never has one), whose id is in no
``--exclude`` folder and not taken from an earlier mirror (the first mirror wins), that decodes as
a JPEG without an EXIF rotation (COCO's coordinates are the stored pixels; hcviewer turns rotated
photos upright) and whose long side is within ``--long-side`` (480 to 640 px, COCO's own sizes: a
guard against resized copies). What is skipped is counted, per mirror, on stdout.

Labels: COCO train2017 person keypoints in YOLO-pose form, ``labels/train2017/%012d.txt`` of
``Jar-17/yolov7_for_baseball``: one line per person, ``0 cx cy w h`` then 17 x ``x y v``, all
normalised to the image size (v as COCO: 0 not labelled, 1 hidden, 2 visible).

The current set (338 photos, 981 people, 2026-12-06) came from these repositories, in this
order (HEAD commit, folder):

    qsj-github/demo                      fb556ebc36fe  datasets/coco/images/train2017/
    yuanyl00/miniCOCO                    21200bd174da  COCO/train2017/
    mchoccie/DeepDataMiningLearning      13136af80a7d  data/images/
    Morgott-The-Omen-King/gpu_benchmark  2d904e2026b9  mmdetection/data/coco/train2017/
    zhengsipeng/rlt_system               5352f5c71b77  data/coco/train2017/
    enginbozaba/tiny_coco                44ee1df5a4f5  images/val2017/ (train2017 photos, despite the name)
    TWSFar/FCOS                          536b9a29d5d2  data/COCO/samples/

Avoid ``minto5z/coco_yolo``: it holds val2017 photos under a train2017 folder (none of its 2,693
photos has a train2017 label file, so the script takes none; do not loosen that check).

Where no more photos are: ``hai4h/cnn-edge-detection`` holds about 20,000 train2017 photos
under ``train2017/``, but its snapshot (1.6 GB) is over the fetch tool's 500 MiB, as is
``zhang-yi-fei/MScoco`` (3.3 GB); ``tikitong/minicoco`` (``data/images/``) and
``Obmutescence/COCO-MINI`` (``train2017/``) hold only photos already in the set or in the
``--exclude`` folders; some 60 more, named like mini/tiny/small COCO, COCO
dataset, COCO keypoints or human pose estimation (``lightweight-human-pose-estimation`` forks
among them), hold no train2017 photo with keypoint labels. The file index (``find_files``) lists
each distinct photo under one repository only, so a photo's path there does not show the other
repositories holding it.

Steps a maintainer runs (``fetch`` is the session's fetch tool, which puts the newest snapshot of
``github:OWNER/NAME`` under ``/work/.mirror/OWNER+NAME/repo``, a bare git dir or a folder holding
``.git``; ``--mirror`` takes either):

    1. fetch github:Jar-17/yolov7_for_baseball (commit 3b2e46c436e3 gave the current set), then
       extract its labels (56,599 files, 149,813 people; git may say that paper/yolov7.pdf is an
       invalid object: the snapshot leaves that large file out, which does no harm):
       mkdir -p LABELS && git -C /work/.mirror/Jar-17+yolov7_for_baseball/repo \\
           archive HEAD labels/train2017 | tar -x -C LABELS
    2. fetch each of the seven repositories above.
    3. M=/work/.mirror
       python scripts/gather_coco_keypoint_people.py --labels LABELS/labels/train2017 \\
           --mirror $M/qsj-github+demo/repo $M/yuanyl00+miniCOCO/repo \\
               $M/mchoccie+DeepDataMiningLearning/repo $M/Morgott-The-Omen-King+gpu_benchmark/repo \\
               $M/zhengsipeng+rlt_system/repo $M/enginbozaba+tiny_coco/repo $M/TWSFar+FCOS/repo \\
           --exclude ../shared/data/coco-mini-train/train2017 ../shared/data/coco-extra-train/train2017 \\
           --out DIR
       (on the snapshots above this gives the current set exactly, checked again on 2026-12-06:
       the same photo bytes, images, annotations, categories and sources; later snapshots may hold
       more or fewer photos)

The photos keep their Flickr licences and COCO's annotations are CC BY 4.0: research and tests
only; never commit or ship them.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from hcviewer.categories import COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON

COCO_NAME = re.compile(r"(\d{12})\.jpe?g", re.IGNORECASE)  # a photo under its COCO file name
ID_IN_NAME = re.compile(r"(\d{12})")  # a COCO id anywhere in an excluded folder's file names
PERSON_ID = 1
VALUES_PER_LINE = 5 + 3 * len(COCO_PERSON_KEYPOINTS)
MAX_PEOPLE_PER_IMAGE = 100  # annotation id = image id * 100 + line number stays unique
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Candidate:
    coco_id: int
    blob: str
    path: str  # in the repository


@dataclass(frozen=True)
class Mirror:
    git_dir: Path
    repository: str  # owner/name where the git dir lies in a fetched OWNER+NAME folder
    commit: str


def git(git_dir: Path, *args: str) -> bytes:
    """Run git on ``git_dir``; SystemExit naming the dir when it fails."""
    done = subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True)
    if done.returncode:
        raise SystemExit(f"{git_dir}: git {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}; "
                         f"pass a git dir (a fetched snapshot's .../OWNER+NAME/repo or a clone)")
    return done.stdout


def open_mirror(path: Path) -> Mirror:
    git_dir = path / ".git" if (path / ".git").is_dir() else path
    commit = git(git_dir, "rev-parse", "--verify", "HEAD^{commit}").decode().strip()
    fetched = path.parent.name if path.name == "repo" else ""  # fetched: OWNER+NAME/repo
    repository = fetched.replace("+", "/", 1) if "+" in fetched else str(path)
    return Mirror(git_dir, repository, commit)


def candidates(mirror: Mirror) -> list[Candidate]:
    """The blobs of HEAD named like a COCO photo, in ``git ls-tree`` order."""
    found = []
    for line in git(mirror.git_dir, "ls-tree", "-r", "-z", mirror.commit).split(b"\0"):
        if not line:
            continue
        meta, path = line.decode(errors="surrogateescape").split("\t", 1)
        kind, blob = meta.split()[1:3]
        match = COCO_NAME.fullmatch(path.rpartition("/")[2])
        if kind == "blob" and match:
            found.append(Candidate(int(match.group(1)), blob, path))
    return found


def excluded_ids(folders: list[Path]) -> set[int]:
    ids = set()
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"{folder}: --exclude folder not found; pass image folders whose ids must not be taken")
        ids.update(int(m.group(1)) for f in folder.iterdir() if (m := ID_IN_NAME.search(f.name)))
    return ids


def id_refusal(coco_id: int, taken: dict, exclude: set[int], labels: Path) -> str | None:
    """Why the photo ``coco_id`` is not wanted, or None."""
    if coco_id in taken:
        return "taken"
    if coco_id in exclude:
        return "excluded"
    return None if (labels / f"{coco_id:012d}.txt").is_file() else "no label file"


def photo_size(data: bytes, long_side: tuple[int, int]) -> tuple[int, int] | str:
    """(width, height) of a whole, unrotated JPEG of COCO's size, or why it is refused."""
    if not data.startswith(b"\xff\xd8"):
        return "not a JPEG"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rotated = image.getexif().get(EXIF_ORIENTATION, 1) != 1
            size = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return "not a JPEG"
    if rotated:
        return "EXIF rotation"
    return size if long_side[0] <= max(size) <= long_side[1] else "long side out of range"


def person_annotation(label_file: Path, line_number: int, line: str, image: dict) -> dict:
    """One YOLO-pose line as a COCO person annotation in the pixels of ``image``."""
    values = line.split()
    try:
        numbers = [float(v) for v in values[1:]]
    except ValueError:
        numbers = []
    if len(values) != VALUES_PER_LINE or values[0] != "0" or len(numbers) != VALUES_PER_LINE - 1:
        raise SystemExit(f"{label_file}: line {line_number + 1} is not class 0 and {VALUES_PER_LINE - 1} numbers "
                         f"(cx cy w h, then x y v per keypoint); pass YOLO-pose person labels")
    width, height = image["width"], image["height"]
    cx, cy, box_w, box_h = numbers[:4]
    bbox = [round(v, 2) for v in ((cx - box_w / 2) * width, (cy - box_h / 2) * height, box_w * width, box_h * height)]
    keypoints: list[float | int] = []
    for x, y, v in zip(numbers[4::3], numbers[5::3], numbers[6::3]):
        keypoints += [round(x * width, 2), round(y * height, 2), int(v)] if v > 0 else [0, 0, 0]
    return {"id": image["id"] * MAX_PEOPLE_PER_IMAGE + line_number, "image_id": image["id"],
            "category_id": PERSON_ID, "bbox": bbox,
            "area": round(box_w * width * box_h * height, 2), "iscrowd": 0, "keypoints": keypoints,
            "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0)}


def image_annotations(labels: Path, image: dict) -> list[dict]:
    label_file = labels / f"{image['id']:012d}.txt"
    lines = label_file.read_text().split("\n")
    if len(lines) > MAX_PEOPLE_PER_IMAGE:
        raise SystemExit(f"{label_file}: more than {MAX_PEOPLE_PER_IMAGE} lines; annotation ids would repeat")
    return [person_annotation(label_file, k, line, image) for k, line in enumerate(lines) if line.strip()]


def person_category() -> dict:
    return {"supercategory": "person", "id": PERSON_ID, "name": "person", "keypoints": list(COCO_PERSON_KEYPOINTS),
            "skeleton": [[a + 1, b + 1] for a, b in COCO_PERSON_SKELETON]}  # COCO's skeleton is 1-based


def gather(labels: Path, mirrors: list[Mirror], exclude: set[int], long_side: tuple[int, int],
           out: Path) -> tuple[list[dict], list[str]]:
    """Copy the photos into ``out/train2017``; return their COCO image records (with the
    source of each as ``source``) and the lines of the log."""
    taken: dict[int, dict] = {}
    log = []
    for mirror in mirrors:
        skipped: dict[str, int] = {}
        new = 0
        for candidate in candidates(mirror):
            reason = id_refusal(candidate.coco_id, taken, exclude, labels)
            if reason is None:
                data = git(mirror.git_dir, "cat-file", "blob", candidate.blob)
                size = photo_size(data, long_side)
                reason = size if isinstance(size, str) else None
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            file_name = f"{candidate.coco_id:012d}.jpg"
            (out / "train2017" / file_name).write_bytes(data)
            taken[candidate.coco_id] = {"id": candidate.coco_id, "file_name": file_name, "width": size[0],
                                        "height": size[1], "source": (mirror, candidate.path)}
            new += 1
        counts = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        log.append(f"{mirror.repository}: {new} new photos; skipped: {counts or 'none'}")
    return [taken[i] for i in sorted(taken)], log


def write_outputs(out: Path, labels: Path, images: list[dict]) -> int:
    """Write the annotation file and sources.tsv; return the number of people."""
    sources = ["coco_id\trepository\tgit_dir\tcommit\tpath"]
    records, annotations = [], []
    for image in images:
        mirror, path = image["source"]
        sources.append(f"{image['id']}\t{mirror.repository}\t{mirror.git_dir}\t{mirror.commit}\t{path}")
        record = {key: value for key, value in image.items() if key != "source"}
        records.append(record)
        annotations += image_annotations(labels, record)
    info = {"description": "COCO 2017 train photos found in public GitHub repositories, with COCO train2017 person "
                           "keypoints (YOLO-pose labels of Jar-17/yolov7_for_baseball); "
                           "scripts/gather_coco_keypoint_people.py", "version": "1.0", "year": 2017}
    coco = {"info": info, "licenses": [], "images": records, "annotations": annotations,
            "categories": [person_category()]}
    (out / "annotations" / "person_keypoints_train2017.json").write_text(json.dumps(coco))
    (out / "sources.tsv").write_text("\n".join(sources) + "\n")
    return len(annotations)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, required=True, metavar="DIR", help="YOLO-pose labels/train2017 folder")
    parser.add_argument("--mirror", type=Path, nargs="+", required=True, metavar="GITDIR",
                        help="git dirs of fetched repositories, searched in this order (the first wins)")
    parser.add_argument("--exclude", type=Path, nargs="*", default=[], metavar="DIR",
                        help="image folders whose COCO ids must not be taken again")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (its train2017/ must be empty)")
    parser.add_argument("--long-side", type=int, nargs=2, default=(480, 640), metavar=("MIN", "MAX"),
                        help="keep photos whose long side is within MIN..MAX pixels (default: 480 640)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.labels.is_dir():
        raise SystemExit(f"{args.labels}: labels folder not found; pass the YOLO-pose labels/train2017 folder")
    photos = args.out / "train2017"
    if photos.is_dir() and any(photos.iterdir()):
        raise SystemExit(f"{photos}: not empty; pass a new --out folder (old photos would stay without annotations)")
    photos.mkdir(parents=True, exist_ok=True)
    (args.out / "annotations").mkdir(exist_ok=True)
    mirrors = [open_mirror(path) for path in args.mirror]
    images, log = gather(args.labels, mirrors, excluded_ids(args.exclude), tuple(args.long_side), args.out)
    people = write_outputs(args.out, args.labels, images)
    print("\n".join(log))
    print(f"{args.out}: {len(images)} photos, {people} people")


if __name__ == "__main__":
    main(sys.argv[1:])
