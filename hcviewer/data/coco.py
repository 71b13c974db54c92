"""COCO JSON reader for training (the file's structure is read by ``coco_json``): instance
polygons and RLE (via pycocotools), person keypoints with names and skeleton. Several annotation files of the same images may be merged (COCO ships instances and
person keypoints as separate files with the same annotation ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hcviewer.cocomask import segmentation_problem
from hcviewer.data.coco_json import CocoAnnotation, CocoFile, CocoFileError, CocoRecord, read_coco_json, short_repr
from hcviewer.data.records import AnnotatedDataset, CocoSegmentation, DataError, ImageRecord, ObjectAnnotation
from hcviewer.imageio import max_image_pixels


def read_coco(annotation_files: str | Path | list[str | Path], images_dir: str | Path,
              categories: tuple[str, ...] | None = None, name: str | None = None) -> AnnotatedDataset:
    """Read one or more COCO files over ``images_dir``.

    ``categories`` keeps only objects of those category names (all when None). An annotation id
    present in several files becomes one object; keypoints come from the file that has them.
    """
    files = [Path(annotation_files)] if isinstance(annotation_files, (str, Path)) else [Path(f) for f in annotation_files]
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: image folder not found; pass the folder holding the COCO images")
    records: dict[int | str, ImageRecord] = {}
    objects: dict[tuple[int | str, int], ObjectAnnotation] = {}
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    for path in files:
        coco = _read_file(path)
        for category in coco.categories.values():
            if category.fields.get("keypoints"):
                keypoint_names, skeleton = _keypoint_names(path, category)
        _read_images(coco, images_dir, records)
        for index, ann in enumerate(coco.annotations):
            record = records[ann.image_id]
            category = str(coco.categories[ann.category_id].fields["name"])
            if categories is not None and category not in categories:
                continue
            key = (record.image_id, ann.fields["id"] if "id" in ann.fields else -index - 1)
            obj = objects.get(key)
            if obj is None:
                obj = ObjectAnnotation(np.array(ann.xyxy, np.float32), category, annotation_id=ann.fields.get("id"),
                                       iscrowd=bool(ann.fields.get("iscrowd", False)))
                objects[key] = obj
                record.objects.append(obj)
            if ann.fields.get("segmentation") and obj.mask is None:
                _check_segmentation(path, ann, record)
                obj.mask = CocoSegmentation(ann.fields["segmentation"], where=f"{path}: {ann.where}")
            if ann.keypoints is not None and obj.keypoints is None:
                obj.keypoints = np.asarray(ann.keypoints, np.float32).reshape(-1, 3)
    missing = [r.path for r in records.values() if not r.path.is_file()]
    if missing:
        raise DataError(f"{files[0]}: {len(missing)} image file(s) are missing from {images_dir}, e.g. "
                        f"{missing[0].name}; check --images")
    dataset_name = name or files[0].parent.parent.name or files[0].stem
    return AnnotatedDataset(dataset_name, list(records.values()), keypoint_names, skeleton)


def _read_file(path: Path) -> CocoFile:
    try:
        return read_coco_json(path)
    except CocoFileError as exc:
        raise DataError(str(exc)) from None


def _keypoint_names(path: Path, category: CocoRecord) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    """A category's keypoint names and its skeleton, 0-based (COCO's is 1-based)."""
    names, pairs = category.fields["keypoints"], category.fields.get("skeleton", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{path}: {category.where}: 'keypoints' must be a list of keypoint names; fix the category")
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(type(k) is int and 1 <= k <= len(names) for k in p)
            for p in pairs):
        raise DataError(f"{path}: {category.where}: 'skeleton' must be a list of [a, b] pairs of keypoint "
                        f"numbers 1..{len(names)}; fix the category")
    return tuple(names), tuple((a - 1, b - 1) for a, b in pairs)


def _read_images(coco: CocoFile, images_dir: Path, records: dict) -> None:
    """Add the file's images to ``records``; an id seen in an earlier file must name the same file."""
    for image_id, image in coco.images.items():
        file_name = Path(str(image.fields["file_name"])).name
        if image_id in records and records[image_id].path.name != file_name:
            raise DataError(f"{coco.path}: {image.where}: id {image_id!r} names {file_name!r}, and "
                            f"{records[image_id].path.name!r} in an earlier file; give each image its own id")
        if image_id not in records:
            width, height = (_size(coco.path, image, key) for key in ("width", "height"))
            if width * height > max_image_pixels():
                raise DataError(f"{coco.path}: {image.where} claims {width} x {height} pixels, over the "
                                f"{max_image_pixels()}-pixel limit; fix width/height")
            records[image_id] = ImageRecord(image_id, width, height, path=images_dir / file_name)


def _size(path: Path, image: CocoRecord, key: str) -> int:
    value = image.fields.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # some tools write 640.0
    if type(value) is not int or value < 1:
        raise DataError(f"{path}: {image.where}: '{key}' is {short_repr(value)}; "
                        f"it must be the image's {key} in pixels")
    return value


def _check_segmentation(path: Path, ann: CocoAnnotation, record: ImageRecord) -> None:
    """Broken polygons would train on a silently empty mask, broken RLE on garbage (or crash
    pycocotools): each is an error naming the annotation."""
    problem = segmentation_problem(ann.fields["segmentation"], (record.height, record.width))
    if problem is not None:
        raise DataError(f"{path}: {ann.where} of image {record.path.name}: the segmentation "
                        f"{problem}; fix or remove the annotation")
