"""COCO JSON reader: instance polygons and RLE (via pycocotools), person keypoints with names and
skeleton. Several annotation files of the same images may be merged (COCO ships instances and
person keypoints as separate files with the same annotation ids)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hcviewer.data.records import AnnotatedDataset, CocoSegmentation, DataError, ImageRecord, ObjectAnnotation


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
    records: dict[int, ImageRecord] = {}
    objects: dict[tuple[int, int], ObjectAnnotation] = {}
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    for path in files:
        data = _load_json(path)
        category_names = _categories(path, data)
        for cat in data.get("categories", []):
            if cat.get("keypoints"):
                keypoint_names = tuple(cat["keypoints"])
                # COCO skeletons are 1-based.
                skeleton = tuple((int(a) - 1, int(b) - 1) for a, b in cat.get("skeleton", []))
        for index, image in enumerate(_list(path, data, "images")):
            image_id = _field(path, "images", index, image, "id")
            if image_id not in records:
                file_name = Path(str(_field(path, "images", index, image, "file_name"))).name
                records[image_id] = ImageRecord(image_id, int(_field(path, "images", index, image, "width")),
                                                int(_field(path, "images", index, image, "height")),
                                                path=images_dir / file_name)
        for index, ann in enumerate(_list(path, data, "annotations")):
            record = records.get(_field(path, "annotations", index, ann, "image_id"))
            if record is None:
                raise DataError(f"{path}: annotations[{index}] refers to image_id {ann['image_id']} which is not "
                                "in 'images'; fix or remove the annotation")
            category = category_names.get(_field(path, "annotations", index, ann, "category_id"))
            if category is None:
                raise DataError(f"{path}: annotations[{index}] has category_id {ann['category_id']} which is not "
                                "in 'categories'")
            if categories is not None and category not in categories:
                continue
            key = (record.image_id, ann.get("id", -index - 1))
            obj = objects.get(key)
            if obj is None:
                obj = ObjectAnnotation(_box(path, index, ann), category, iscrowd=bool(ann.get("iscrowd", False)),
                                       annotation_id=ann.get("id"))
                objects[key] = obj
                record.objects.append(obj)
            if ann.get("segmentation") and obj.mask is None:
                _check_segmentation(path, index, ann["segmentation"], record)
                obj.mask = CocoSegmentation(ann["segmentation"])
            if ann.get("keypoints") and obj.keypoints is None:
                obj.keypoints = _keypoints(path, index, ann["keypoints"])
    missing = [r.path for r in records.values() if not r.path.is_file()]
    if missing:
        raise DataError(f"{files[0]}: {len(missing)} image file(s) are missing from {images_dir}, e.g. "
                        f"{missing[0].name}; check --images")
    dataset_name = name or files[0].parent.parent.name or files[0].stem
    return AnnotatedDataset(dataset_name, list(records.values()), keypoint_names, skeleton)


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); is it a COCO annotation file?") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations'; "
                        "a list of detections is a results file, not a training file)")
    return data


def _list(path: Path, data: dict, key: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise DataError(f"{path}: '{key}' must be a list")
    return value


def _categories(path: Path, data: dict) -> dict[int, str]:
    names = {}
    for index, cat in enumerate(_list(path, data, "categories")):
        names[_field(path, "categories", index, cat, "id")] = str(_field(path, "categories", index, cat, "name"))
    return names


def _field(path: Path, section: str, index: int, record: object, key: str):
    if not isinstance(record, dict) or key not in record:
        raise DataError(f"{path}: {section}[{index}] has no '{key}'; every COCO {section[:-1]} needs one")
    return record[key]


def _box(path: Path, index: int, ann: dict) -> np.ndarray:
    bbox = _field(path, "annotations", index, ann, "bbox")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DataError(f"{path}: annotations[{index}] bbox {bbox!r} is not four numbers [x, y, width, height]") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise DataError(f"{path}: annotations[{index}] bbox {bbox!r} needs finite values and positive width "
                        "and height")
    return np.array([x, y, x + w, y + h], np.float32)


def _keypoints(path: Path, index: int, flat: list) -> np.ndarray:
    try:
        values = np.asarray(flat, np.float32)
    except (TypeError, ValueError):
        values = None
    if values is None or values.ndim != 1 or len(values) % 3 or not np.isfinite(values).all():
        raise DataError(f"{path}: annotations[{index}] keypoints must be a flat list of numeric [x, y, v] triples")
    return values.reshape(-1, 3)


def _check_segmentation(path: Path, index: int, segm: object, record: ImageRecord) -> None:
    """Uncompressed RLE whose runs do not cover the image would decode to garbage silently."""
    if isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        size = segm.get("size")
        if size != [record.height, record.width] or sum(segm["counts"]) != record.height * record.width:
            raise DataError(f"{path}: annotations[{index}] segmentation: an uncompressed RLE needs size [height, width] = "
                            f"[{record.height}, {record.width}] and counts summing to {record.height * record.width}")
