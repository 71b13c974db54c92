"""COCO JSON reader: instance polygons and RLE (via pycocotools), person keypoints with names and
skeleton. Several annotation files of the same images may be merged (COCO ships instances and
person keypoints as separate files with the same annotation ids)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hcviewer.boxes import coordinates_problem
from hcviewer.cocomask import segmentation_problem
from hcviewer.data.records import AnnotatedDataset, CocoSegmentation, DataError, ImageRecord, ObjectAnnotation
from hcviewer.fileio import loads_json, read_input_text
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
    records: dict[int, ImageRecord] = {}
    objects: dict[tuple[int, int], ObjectAnnotation] = {}
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    for path in files:
        data = _load_json(path)
        category_names = _categories(path, data)
        for index, cat in enumerate(data["categories"]):
            if cat.get("keypoints"):
                keypoint_names, skeleton = _keypoint_names(path, index, cat)
        _read_images(path, data, images_dir, records)
        for index, ann in enumerate(_list(path, data, "annotations")):
            record = records.get(_id(path, "annotations", index, ann, "image_id"))
            if record is None:
                raise DataError(f"{path}: annotations[{index}] refers to image_id {ann['image_id']} which is not "
                                "in 'images'; fix or remove the annotation")
            category = category_names.get(_id(path, "annotations", index, ann, "category_id"))
            if category is None:
                raise DataError(f"{path}: annotations[{index}] has category_id {ann['category_id']} which is not "
                                "in 'categories'")
            if categories is not None and category not in categories:
                continue
            key = (record.image_id, _id(path, "annotations", index, ann, "id") if "id" in ann else -index - 1)
            obj = objects.get(key)
            if obj is None:
                obj = ObjectAnnotation(_box(path, index, ann), category, iscrowd=bool(ann.get("iscrowd", False)),
                                       annotation_id=ann.get("id"))
                objects[key] = obj
                record.objects.append(obj)
            if ann.get("segmentation") and obj.mask is None:
                _check_segmentation(path, index, ann, record)
                obj.mask = CocoSegmentation(ann["segmentation"], where=f"{path}: {_annotation(index, ann)}")
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
        data = loads_json(read_input_text(path))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); is it a COCO annotation file?") from None
    except RecursionError:
        raise DataError(f"{path}: the JSON is nested too deeply to be a COCO annotation file") from None
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations'; "
                        "a list of detections is a results file, not a training file)")
    return data


def _list(path: Path, data: dict, key: str) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise DataError(f"{path}: '{key}' must be a list")
    return value


def _categories(path: Path, data: dict) -> dict[int | str, str]:
    names = {}
    for index, cat in enumerate(_list(path, data, "categories")):
        names[_id(path, "categories", index, cat, "id")] = str(_field(path, "categories", index, cat, "name"))
    return names


def _keypoint_names(path: Path, index: int, cat: dict) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...]]:
    """A category's keypoint names and its skeleton, 0-based (COCO's is 1-based)."""
    names, pairs = cat["keypoints"], cat.get("skeleton", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{path}: categories[{index}] 'keypoints' must be a list of keypoint names")
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(type(k) is int and 1 <= k <= len(names) for k in p)
            for p in pairs):
        raise DataError(f"{path}: categories[{index}] 'skeleton' must be a list of [a, b] pairs of keypoint "
                        f"numbers 1..{len(names)}")
    return tuple(names), tuple((a - 1, b - 1) for a, b in pairs)


def _read_images(path: Path, data: dict, images_dir: Path, records: dict) -> None:
    """Add the file's images to ``records``; an id seen in an earlier file must name the same file."""
    seen = set()
    for index, image in enumerate(_list(path, data, "images")):
        image_id = _id(path, "images", index, image, "id")
        file_name = Path(str(_field(path, "images", index, image, "file_name"))).name
        if image_id in seen or (image_id in records and records[image_id].path.name != file_name):
            raise DataError(f"{path}: images[{index}] reuses image id {image_id!r} (already "
                            f"{records[image_id].path.name}); give each image its own id")
        seen.add(image_id)
        if image_id not in records:
            width, height = (_size(path, index, image, key) for key in ("width", "height"))
            if width * height > max_image_pixels():
                raise DataError(f"{path}: images[{index}] claims {width} x {height} pixels, over the "
                                f"{max_image_pixels()}-pixel limit; fix width/height")
            records[image_id] = ImageRecord(image_id, width, height, path=images_dir / file_name)


def _size(path: Path, index: int, image: dict, key: str) -> int:
    value = _field(path, "images", index, image, key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # some tools write 640.0
    if type(value) is not int or value < 1:
        raise DataError(f"{path}: images[{index}] '{key}' is {_short(value)}; it must be the image's {key} in pixels")
    return value


def _id(path: Path, section: str, index: int, record: object, key: str) -> int | str:
    """An id field: a whole number or a string (anything else cannot be matched)."""
    value = _field(path, section, index, record, key)
    if type(value) not in (int, str):
        raise DataError(f"{path}: {section}[{index}] '{key}' is {_short(value)}; ids are whole numbers or strings")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _annotation(index: int, ann: dict) -> str:
    return f"annotations[{index}] (id {_short(ann['id'])})" if "id" in ann else f"annotations[{index}]"


def _field(path: Path, section: str, index: int, record: object, key: str):
    if not isinstance(record, dict) or key not in record:
        raise DataError(f"{path}: {section}[{index}] has no '{key}'; every COCO {section[:-1]} needs one")
    return record[key]


def _box(path: Path, index: int, ann: dict) -> np.ndarray:
    bbox = _field(path, "annotations", index, ann, "bbox")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: annotations[{index}] bbox {bbox!r} is not four numbers [x, y, width, height]") from None
    problem = coordinates_problem((x, y, x + w, y + h))
    if problem is not None:
        raise DataError(f"{path}: annotations[{index}] bbox {_short(bbox)} {problem}; fix or remove the annotation")
    return np.array([x, y, x + w, y + h], np.float32)


def _keypoints(path: Path, index: int, flat: list) -> np.ndarray:
    try:
        values = np.asarray(flat, np.float32)
    except (TypeError, ValueError, OverflowError):
        values = None
    if values is None or values.ndim != 1 or len(values) % 3 or not np.isfinite(values).all():
        raise DataError(f"{path}: annotations[{index}] keypoints must be a flat list of numeric [x, y, v] triples")
    return values.reshape(-1, 3)


def _check_segmentation(path: Path, index: int, ann: dict, record: ImageRecord) -> None:
    """Broken polygons would train on a silently empty mask, broken RLE on garbage (or crash
    pycocotools): each is an error naming the annotation."""
    problem = segmentation_problem(ann["segmentation"], (record.height, record.width))
    if problem is not None:
        raise DataError(f"{path}: {_annotation(index, ann)} of image {record.path.name}: the segmentation "
                        f"{problem}; fix or remove the annotation")
