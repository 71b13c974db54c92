"""The structure of a COCO JSON file, read one way for each reader of one (the trainer's
``read_coco``, the box files of the app and ``hcviewer predict``, hcviewer's saved annotations):
categories and images indexed by their unique ids, each annotation linked to its image and its
category, its box, score and keypoints checked as finite numbers. A problem is a
``CocoFileError`` naming the file and the record, with the fix; each reader turns it into its own
error type and keeps its own conversion of the fields (masks, sizes, its own extra keys)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hcviewer.boxes import coordinates_problem
from hcviewer.fileio import loads_json, read_input_text

SECTIONS = ("images", "annotations", "categories")


class CocoFileError(ValueError):
    """A COCO file whose structure cannot be used; the message names the file, the record and the fix."""


@dataclass(frozen=True)
class CocoRecord:
    """An image or a category: its place in the file, as messages name it, and its fields."""

    where: str  # "images[3]"
    fields: dict[str, Any]


@dataclass(frozen=True)
class CocoAnnotation:
    where: str  # "annotations[3] (id 7)", as messages name it
    fields: dict[str, Any]
    image_id: int | str  # a key of CocoFile.images
    category_id: int  # a key of CocoFile.categories, unless the file has no 'categories'
    xyxy: tuple[float, float, float, float]  # the bbox as corners, in pixels
    score: float | None
    keypoints: tuple[float, ...] | None  # flat [x, y, v] * J; None when the record has none


@dataclass(frozen=True)
class CocoFile:
    path: Path
    data: dict[str, Any]  # the whole JSON object (keys beyond COCO's are the reader's)
    categories: dict[int, CocoRecord]
    images: dict[int | str, CocoRecord]  # in the file's order
    annotations: list[CocoAnnotation]
    has_categories: bool  # False: the file names classes by id only (as detection results do)


def read_coco_json(path: str | os.PathLike, optional: tuple[str, ...] = ()) -> CocoFile:
    """Read the COCO file at ``path`` (see ``coco_structure`` for ``optional``)."""
    path = Path(path)
    return coco_structure(path, parse_json(path, read_text(path, "a COCO JSON file")), optional)


def read_text(path: Path, expected: str) -> str:
    """A UTF-8 input file's text (a byte-order mark dropped); ``expected`` names what it should be."""
    try:
        return read_input_text(path, encoding="utf-8-sig")
    except FileNotFoundError:
        raise CocoFileError(f"{path}: no such file; check the path") from None
    except UnicodeDecodeError:
        raise CocoFileError(f"{path}: not a UTF-8 text file; use {expected}") from None
    except OSError as exc:
        raise CocoFileError(f"{path}: cannot be read ({exc.strerror or exc}); check the path and permissions") from None


def parse_json(path: Path, text: str) -> Any:
    """The JSON value of a file's text (``loads_json``: huge whole numbers are refused)."""
    try:
        return loads_json(text)
    except json.JSONDecodeError as exc:
        raise CocoFileError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                            "fix the file or re-export it") from None
    except RecursionError:
        raise CocoFileError(f"{path}: the JSON is nested too deeply to be a COCO file; "
                            "fix the file or re-export it") from None


def coco_structure(path: Path, data: Any, optional: tuple[str, ...] = ()) -> CocoFile:
    """Index and link a COCO JSON object. The sections in ``optional`` may be absent and read as
    empty, except 'categories': without it the annotations' category ids are not looked up."""
    if not isinstance(data, dict):
        found = "a list (detection results?)" if isinstance(data, list) else f"a {type(data).__name__}"
        raise CocoFileError(f"{path}: the JSON top level is {found}, not a COCO annotation object "
                            "{images, annotations, categories}; re-export the file in COCO format")
    sections = {key: _section(path, data, key, optional) for key in SECTIONS}
    categories = _index(path, sections["categories"], "categories", _category_id)
    images = _index(path, sections["images"], "images", image_id_of)
    has_categories = "categories" in data
    annotations = [_annotation(path, index, record, images, categories if has_categories else None)
                   for index, record in enumerate(sections["annotations"])]
    return CocoFile(path, data, categories, images, annotations, has_categories)


def _section(path: Path, data: dict, key: str, optional: tuple[str, ...]) -> list:
    if key not in data:
        if key in optional:
            return []
        raise CocoFileError(f"{path}: a COCO file needs '{key}', and this one has none; "
                            "re-export the file in COCO format")
    value = data[key]
    if not isinstance(value, list):
        raise CocoFileError(f"{path}: '{key}' must be a list, got {type(value).__name__}; "
                            "re-export the file in COCO format")
    return value


def _index(path: Path, records: list, section: str, check_id: Callable[[Path, str, Any, str], Any]) -> dict:
    """id -> CocoRecord; an id used twice is refused (the second would silently replace the first)."""
    keys = ("id", "file_name") if section == "images" else ("id", "name")
    index = {}
    for i, fields in enumerate(records):
        where = f"{section}[{i}]"
        require(path, where, fields, keys)
        record_id = check_id(path, where, fields["id"], "id")
        if record_id in index:
            raise CocoFileError(f"{path}: {where}: id {record_id!r} is used twice (also by {index[record_id].where}, "
                                f"{short_repr(index[record_id].fields[keys[1]])}); give each its own id")
        index[record_id] = CocoRecord(where, fields)
    return index


def _annotation(path: Path, index: int, fields: Any, images: dict, categories: dict | None) -> CocoAnnotation:
    where = f"annotations[{index}] (id {short_repr(fields['id'])})" if isinstance(fields, dict) and "id" in fields \
        else f"annotations[{index}]"
    require(path, where, fields, ("image_id", "category_id", "bbox"))
    image_id = image_of(path, where, fields["image_id"], images)
    category_id = category_of(path, where, fields["category_id"], categories)
    score = None if fields.get("score") is None else finite(path, where, fields["score"], "score")
    return CocoAnnotation(where, fields, image_id, category_id, bbox_xyxy(path, where, fields["bbox"]), score,
                          keypoints(path, where, fields))


def require(path: Path, where: str, record: Any, keys: tuple[str, ...]) -> None:
    """``record`` is an object with ``keys``."""
    if not isinstance(record, dict):
        raise CocoFileError(f"{path}: {where} must be a JSON object, got {type(record).__name__}; "
                            "fix or remove the record")
    missing = [k for k in keys if k not in record]
    if missing:
        raise CocoFileError(f"{path}: {where} lacks {', '.join(repr(k) for k in missing)}; "
                            "add it or remove the record")


def image_id_of(path: Path, where: str, value: Any, what: str) -> int | str:
    """An image id: a whole number or a string (anything else cannot be matched)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CocoFileError(f"{path}: {where}: {what} must be a whole number or a string, got {short_repr(value)}; "
                            "fix the record")
    return value


def image_of(path: Path, where: str, value: Any, images: dict) -> int | str:
    """A record's image id, looked up in ``images``."""
    image_id = image_id_of(path, where, value, "image_id")
    if image_id not in images:
        raise CocoFileError(f"{path}: {where}: image_id {image_id!r} is not in 'images'; "
                            "add the image or fix the id")
    return image_id


def _category_id(path: Path, where: str, value: Any, what: str) -> int:
    """A category id as COCO results need it: a whole number (a string id was read, and
    ``hcviewer predict`` stopped at the first image's results, after segmenting it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CocoFileError(f"{path}: {where}: {what} must be a whole number, as COCO results need, "
                            f"got {short_repr(value)}; fix the record")
    return value


def category_of(path: Path, where: str, value: Any, categories: dict | None) -> int:
    """A record's category id, looked up in ``categories`` unless None (a file without them)."""
    category_id = _category_id(path, where, value, "category_id")
    if categories is not None and category_id not in categories:
        raise CocoFileError(f"{path}: {where}: category_id {category_id!r} is not in 'categories' "
                            f"(ids {short_repr(sorted(categories))}); add the category or fix the id")
    return category_id


def finite(path: Path, where: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CocoFileError(f"{path}: {where}: {what} must be a finite number, got {short_repr(value)}; "
                            "fix or remove the record")
    return float(value)


def bbox_xyxy(path: Path, where: str, bbox: Any) -> tuple[float, float, float, float]:
    """A COCO bbox [x, y, width, height] as corners (x0, y0, x1, y1), usable by the network."""
    if not (isinstance(bbox, list) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
        raise CocoFileError(f"{path}: {where}: bbox must be four numbers [x, y, width, height], "
                            f"got {short_repr(bbox)}; fix or remove the record")
    x, y, w, h = (float(v) for v in bbox)
    problem = coordinates_problem((x, y, x + w, y + h))
    if problem is not None:
        raise CocoFileError(f"{path}: {where}: bbox {short_repr(bbox)} {problem}; fix or remove the record")
    return x, y, x + w, y + h


def keypoints(path: Path, where: str, fields: dict) -> tuple[float, ...] | None:
    """The record's flat [x, y, v] * J of finite numbers; None when it has none."""
    values = fields.get("keypoints")
    if values is None or (isinstance(values, list) and not values):
        return None
    if not isinstance(values, list) or len(values) % 3:
        raise CocoFileError(f"{path}: {where}: keypoints must be a flat list of [x, y, v] triples, "
                            f"got {short_repr(values)}; fix or remove them")
    return tuple(finite(path, where, v, "a keypoint value") for v in values)


def short_repr(value: Any) -> str:
    """A value as a message shows it (a crafted one may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
