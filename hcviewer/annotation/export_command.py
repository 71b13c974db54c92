"""``hcviewer export`` (Qt-free): an annotation file, or the results of ``hcviewer predict``,
written as COCO, YOLO, Pascal VOC or labelme files by the writers the app uses (COCO:
``write_annotation``, as File > Save annotation; the others: ``export_annotation``, as File >
Export), so that a batch run gets the same files as the window writes.

Results name images by id only. They are matched to the images under ``--images`` as the app
matches detection results (``000000000139.jpg`` is image 139), or, with ``--boxes`` (the box
file given to ``hcviewer predict``), by the ids predict gave: that file's, else 1, 2, ... in the
order predict found the images. Results have no category names: ``--boxes`` gives them, else
category 3 is "class 3" (as the app names the categories of detection results)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from hcviewer.annotation.annotation_file import (
    Annotation, AnnotationError, SavedImage, SavedObject, encode_mask, read_size_or_zero, write_annotation,
)
from hcviewer.annotation.annotation_reader import read_annotation
from hcviewer.annotation.boxfiles import BoxFileError, read_boxes
from hcviewer.annotation.exporters import DEFAULT_TOLERANCE, FORMATS, check_tolerance, export_annotation
from hcviewer.annotation.head_scope import HeadScope
from hcviewer.categories import COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON
from hcviewer.cocomask import decode_segmentation, segmentation_problem
from hcviewer.data.coco_json import (
    CocoFileError, bbox_xyxy, category_of, finite, image_id_of, keypoints, parse_json, read_text, require,
)
from hcviewer.imageio import find_images

EXPORT_FORMATS = {"coco": "COCO annotation JSON, as File > Save annotation", **FORMATS}
SOURCE_KINDS = "an hcviewer annotation (or COCO) file, or the results JSON of 'hcviewer predict'"


class ExportCommandError(ValueError):
    """Bad input to ``hcviewer export``; the message names the file and the fix (exit code 2)."""


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcviewer export",
        description="Write an annotation, or the results of 'hcviewer predict', as COCO, YOLO segmentation, "
                    "Pascal VOC or labelme files: the same files as the app's File > Save annotation (coco) "
                    "and File > Export (the others).",
        epilog="exit status: 0 written; 2 bad arguments, unreadable input or output that cannot be written.")
    parser.add_argument("source", metavar="ANNOTATION_OR_RESULTS.json", help=SOURCE_KINDS)
    parser.add_argument("out", metavar="OUT", help="the folder to write (coco: the .json file)")
    parser.add_argument("--to", required=True, choices=list(EXPORT_FORMATS), help="the format to write")
    parser.add_argument("--images", metavar="DIR",
                        help="the images (a folder, searched recursively): required for predict results; "
                             "for an annotation, where its images are now (matched by file name)")
    parser.add_argument("--boxes", metavar="FILE",
                        help="predict results: the box file given to 'hcviewer predict' (image ids, category names)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="PX",
                        help="polygons (yolo, labelme) stray at most PX pixels from the mask's outline; 0 keeps "
                             f"every outline vertex (default {DEFAULT_TOLERANCE:g})")
    return parser


def run_export(args: argparse.Namespace) -> str:
    """Read ``args.source``, write it as ``args.to`` at ``args.out``; returns what was written.
    ExportCommandError (one line naming the file and the fix) for anything that stops it."""
    try:
        tolerance = check_tolerance(args.tolerance)
    except ValueError as exc:
        raise ExportCommandError(f"--tolerance: {exc}") from None
    images = _image_folder(args.images)
    annotation = read_source(Path(args.source), images, args.boxes)
    _check_images(annotation, Path(args.source))
    return write_export(annotation, Path(args.out), args.to, tolerance)


def write_export(annotation: Annotation, out: Path, kind: str, tolerance: float = DEFAULT_TOLERANCE) -> str:
    """Write ``annotation`` as ``kind`` (a key of ``EXPORT_FORMATS``) at ``out``; returns what was written."""
    if kind == "coco":
        if out.is_dir() or out.suffix.lower() != ".json":
            raise ExportCommandError(f"{out} is {'a folder' if out.is_dir() else 'not a .json file name'}; coco "
                                     f"writes one JSON file: give its name, e.g. {out / 'annotation.json'}")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            written = write_annotation(out, annotation)
        except OSError as exc:  # AnnotationWriteError says what was and was not written
            raise ExportCommandError(str(exc)) from None
        objects = sum(o.mask_rle is not None for image in annotation.images for o in image.objects)
        return f"Wrote {objects} objects of {len(annotation.images)} images to {written[0]} (PNG masks in {written[1]})"
    if out.exists() and not out.is_dir():
        raise ExportCommandError(f"{out} is a file; {kind} writes a folder: give a folder name")
    if not any(o.mask_rle is not None for image in annotation.images for o in image.objects):
        raise ExportCommandError("nothing to export: no image has an accepted object (a mask); accept results "
                                 "in the app (A) and save, or export the results of 'hcviewer predict'")
    try:
        result = export_annotation(annotation, out, kind, tolerance)
    except OSError as exc:  # ExportError says what was written
        raise ExportCommandError(str(exc)) from None
    return f"Wrote {EXPORT_FORMATS[kind]}: {result.summary()}"


def read_source(path: Path, images: list[Path] | None, boxes: str | None = None) -> Annotation:
    """An annotation file, or predict results matched to ``images`` (found image files)."""
    try:
        data = parse_json(path, read_text(path, SOURCE_KINDS))  # an annotation is read again by its reader
        if isinstance(data, list):
            if images is None:
                raise ExportCommandError(f"{path} holds results, which name images by id only; pass --images DIR, "
                                         "the images given to 'hcviewer predict'")
            return _ResultsReader(path, images, _read_boxes(boxes)).read(data)
        if boxes is not None:
            raise ExportCommandError(f"{path} is an annotation, which names its images and categories; --boxes is "
                                     "for the results of 'hcviewer predict': leave it out")
        annotation = read_annotation(path)
    except (CocoFileError, AnnotationError) as exc:
        raise ExportCommandError(str(exc)) from None
    if images is not None:
        by_name = {image.name: image for image in images}
        for image in annotation.images:
            image.path = by_name.get(Path(image.path).name, image.path)
    return annotation


def _image_folder(folder: str | None) -> list[Path] | None:
    """The image files under ``--images`` (as ``hcviewer predict`` finds them), None without it."""
    if folder is None:
        return None
    if not Path(folder).exists():
        raise ExportCommandError(f"--images {folder}: no such folder; give the folder that holds the images")
    return find_images([folder])


def _read_boxes(path: str | None):
    if path is None:
        return None
    try:
        return read_boxes(path)
    except BoxFileError as exc:
        raise ExportCommandError(str(exc)) from None


def _check_images(annotation: Annotation, source: Path) -> None:
    """Every image with an accepted object is there to be linked or copied."""
    missing = [Path(image.path) for image in annotation.images
               if any(o.mask_rle is not None for o in image.objects) and not Path(image.path).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ExportCommandError(f"{source}: its image {missing[0]}{more} not found; pass --images DIR, the "
                                 "folder that holds the images")


class _ResultsReader:
    """COCO results (``hcviewer predict``'s) as an annotation of accepted objects; every problem
    is a CocoFileError naming the file and the record."""

    def __init__(self, path: Path, images: list[Path], box_file) -> None:
        self.path = path
        self.box_file = box_file
        self.names = {cid: name for name, cid in box_file.category_ids.items()} if box_file else {}
        self.category_ids: dict[str, int] = {}
        self.images: dict[Any, SavedImage] = {}
        for number, image in enumerate(images, start=1):  # predict's numbering (cli._batch_items)
            image_id = box_file.image_id_for(image) if box_file else _stem_number(image)
            image_id = number if box_file and image_id is None else image_id
            if image_id is not None:
                self.images.setdefault(image_id, SavedImage(image, None, [], image_id))

    def read(self, records: list) -> Annotation:
        unmatched = []
        for i, record in enumerate(records):
            where = f"record {i}"
            require(self.path, where, record, ("image_id", "category_id", "bbox", "segmentation"))
            image = self.images.get(image_id_of(self.path, where, record["image_id"], "image_id"))
            if image is None:
                unmatched.append(record["image_id"])
                continue
            image.objects.append(self._object(where, record, image))
        if unmatched:
            hint = "pass --boxes FILE, the box file given to 'hcviewer predict'" if self.box_file is None else \
                "check that --images and --boxes are the ones given to 'hcviewer predict'"
            raise ExportCommandError(f"{self.path}: {len(unmatched)} results are for images not found under "
                                     f"--images (image_id {unmatched[0]!r}, ...); {hint}")
        images = [image for image in self.images.values() if image.objects]
        points = [o.keypoints for image in images for o in image.objects if o.keypoints is not None]
        coco_points = bool(points) and all(len(p) == len(COCO_PERSON_KEYPOINTS) for p in points)
        return Annotation(images, dict(self.category_ids), COCO_PERSON_KEYPOINTS if coco_points else (),
                          COCO_PERSON_SKELETON if coco_points else (),
                          heads=HeadScope(keypoint_categories=()))  # predict wrote points only where they apply

    def _object(self, where: str, record: dict, image: SavedImage) -> SavedObject:
        category_id = category_of(self.path, where, record["category_id"], None)
        label = self.names.get(category_id, f"class {category_id}")
        self.category_ids.setdefault(label, category_id)
        score = None if record.get("score") is None else finite(self.path, where, record["score"], "score")
        points = keypoints(self.path, where, record)
        return SavedObject(bbox_xyxy(self.path, where, record["bbox"]), label, score,
                           self._mask(where, record["segmentation"], image),
                           None if points is None else np.reshape(points, (-1, 3)))

    def _mask(self, where: str, segmentation: Any, image: SavedImage) -> dict:
        """Compressed RLE of the record's segmentation, which must fit the image file's size
        (read from its header: a size the file claims is not trusted)."""
        if image.size is None:
            image.size = read_size_or_zero(image.path)
        if not min(image.size):
            raise CocoFileError(f"{self.path}: {where}: its image {image.path} cannot be read; check the file")
        problem = segmentation_problem(segmentation, image.size)
        if problem is not None:
            raise CocoFileError(f"{self.path}: {where}: the segmentation {problem} ({image.path}); "
                                "fix or remove the record")
        if isinstance(segmentation, dict) and isinstance(segmentation["counts"], str):
            return {"size": list(image.size), "counts": segmentation["counts"]}
        return encode_mask(decode_segmentation(segmentation, *image.size))


def _stem_number(image: Path) -> int | None:
    """The id a file named by COCO's convention has (``000000000139.jpg``: 139)."""
    stem = image.stem
    return int(stem) if stem.isascii() and stem.isdigit() else None

