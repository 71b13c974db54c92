"""Reading detection boxes (Qt-free): COCO annotation files, COCO-style detection results,
Pascal VOC XML (a file or a folder of them) and a simple CSV. Every problem is a
``BoxFileError`` whose message names the file, the record and the fix."""

from __future__ import annotations

import csv
import json
import math
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcviewer.boxes import MAX_COORDINATE, coordinates_problem
from hcviewer.cocomask import segmentation_problem
from hcviewer.fileio import loads_json, read_input_text
from hcviewer.input_checks import category_id_problem

DEMO_BOXES = Path(__file__).resolve().parents[2] / "resources" / "demo" / "boxes.json"
DEMO_IMAGE_NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png")

CSV_COLUMNS = ("image", "x0", "y0", "x1", "y1", "label", "score")
CSV_REQUIRED = CSV_COLUMNS[:5]
DEFAULT_LABEL = "object"  # CSV rows without a label column
SUPPORTED = ("COCO annotation or detection-results .json, Pascal VOC .xml (or a folder of them), "
             f"or .csv with header {','.join(CSV_COLUMNS)}")


class BoxFileError(ValueError):
    """A box file that cannot be used; the message names the file, the record and the fix."""


@dataclass(frozen=True)
class LoadedBox:
    xyxy: tuple[float, float, float, float]  # pixels, (x0, y0, x1, y1)
    label: str
    score: float | None = None  # None: ground truth
    segmentation: Any | None = None  # COCO polygon list or RLE dict, when the file has one
    keypoints: tuple[float, ...] | None = None  # COCO flat [x, y, v] * J


@dataclass
class BoxFile:
    """Boxes per image. ``boxes_for`` matches an image by its file name; images named in the
    file by id only (detection results) match an image whose stem is that id
    (``000000391895.jpg`` is image 391895)."""

    path: Path
    kind: str  # "coco", "detections", "voc", "csv"
    categories: list[str]
    category_ids: dict[str, int] = field(default_factory=dict)  # label -> COCO category id
    _by_name: dict[str, list[LoadedBox]] = field(default_factory=dict, repr=False)
    _by_stem: dict[str, list[LoadedBox]] = field(default_factory=dict, repr=False)
    _ids_by_name: dict[str, int] = field(default_factory=dict, repr=False)
    _count: int = field(default=0, repr=False)

    def boxes_for(self, image_path: str | Path) -> list[LoadedBox]:
        """The boxes of one image ([] when the file has none for it)."""
        name = Path(image_path).name
        if name in self._by_name:
            return list(self._by_name[name])
        return list(self._by_stem.get(_stem_key(Path(image_path).stem), []))

    def image_id_for(self, image_path: str | Path) -> int | None:
        """The image's id in the file (COCO files, detection results), else None."""
        name = Path(image_path).name
        if name in self._ids_by_name:
            return self._ids_by_name[name]
        key = _stem_key(Path(image_path).stem)
        return int(key) if self.kind == "detections" and key.isascii() and key.isdigit() and key in self._by_stem else None

    def image_names(self) -> list[str]:
        """The image file names the file mentions, as written there (detection results name none)."""
        return list(self._by_name)

    def __len__(self) -> int:
        """The number of boxes."""
        return self._count

    def _add(self, name: str | None, stem: str | None, box: LoadedBox | None) -> None:
        """Register an image (by file name and/or stem) and, unless None, one of its boxes."""
        for table, key in ((self._by_name, name), (self._by_stem, None if stem is None else _stem_key(stem))):
            if key is not None:
                boxes = table.setdefault(key, [])
                if box is not None:
                    boxes.append(box)
        self._count += box is not None


def _stem_key(stem: str) -> str:
    """'000000391895' and 391895 name the same COCO image."""
    return (stem.lstrip("0") or "0") if stem.isascii() and stem.isdigit() else stem


# ---------------------------------------------------------------------------------- reading
def read_boxes(path: str | Path) -> BoxFile:
    """Read a box file of any supported kind, chosen by its suffix (a folder: VOC XML files)."""
    path = Path(path)
    if path.is_dir():
        return _read_voc_folder(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".xml", ".csv"):
        raise BoxFileError(f"{path}: unknown box file type {suffix or '(no suffix)'}; use {SUPPORTED}")
    text = _read_text(path)
    if suffix == ".xml":
        return _read_voc_files(path, [path], {path: text})
    if suffix == ".csv":
        return _read_csv(path, text)
    return _read_json(path, text)


def _read_text(path: Path) -> str:
    try:
        text = read_input_text(path, encoding="utf-8-sig")
    except FileNotFoundError:
        raise BoxFileError(f"{path}: no such file; check the path") from None
    except UnicodeDecodeError:
        raise BoxFileError(f"{path}: not a UTF-8 text file; use {SUPPORTED}") from None
    except OSError as exc:
        raise BoxFileError(f"{path}: cannot be read ({exc.strerror or exc}); check the path and permissions") from None
    if not text.strip():
        raise BoxFileError(f"{path}: the file is empty; use {SUPPORTED}")
    return text


def _number(path: Path, where: str, value: Any, what: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or abs(value) > MAX_COORDINATE):
        raise BoxFileError(f"{path}: {where}: {what} must be a finite number within +-{MAX_COORDINATE:.0f}, "
                           f"got {_short(value)}; fix or remove the record")
    return float(value)


def _short(value: Any) -> str:
    """A value as a message shows it (a crafted one may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _checked_box(path: Path, where: str, xyxy: tuple[float, float, float, float], written: Any
                 ) -> tuple[float, float, float, float]:
    """The box, or a BoxFileError when the network could not use its coordinates (float32)."""
    problem = coordinates_problem(xyxy)
    if problem is not None:
        raise BoxFileError(f"{path}: {where}: the box {_short(written)} {problem}; fix or remove the record")
    return xyxy


def _xywh_to_xyxy(path: Path, where: str, bbox: Any) -> tuple[float, float, float, float]:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise BoxFileError(f"{path}: {where}: bbox must be a list of 4 numbers [x, y, width, height], "
                           f"got {_short(bbox)}; fix or remove the record")
    x, y, w, h = (_number(path, where, v, "bbox value") for v in bbox)
    return _checked_box(path, where, (x, y, x + w, y + h), bbox)


def _id(path: Path, where: str, value: Any, what: str) -> int | str:
    """A COCO id: a whole number or a string (anything else cannot be matched or looked up)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise BoxFileError(f"{path}: {where}: {what} must be a whole number or a string, got {_short(value)}; "
                           "fix the record")
    return value


def _category_id(path: Path, where: str, value: Any, what: str) -> int:
    problem = category_id_problem(value)
    if problem is not None:
        raise BoxFileError(f"{path}: {where}: {what} {problem}; fix the record")
    return value


# ------------------------------------------------------------------------------------ JSON
def _read_json(path: Path, text: str) -> BoxFile:
    try:
        data = loads_json(text)
    except json.JSONDecodeError as exc:
        raise BoxFileError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                           "fix the file or re-export it") from None
    except RecursionError:
        raise BoxFileError(f"{path}: the JSON is nested too deeply to be a box file; use {SUPPORTED}") from None
    if isinstance(data, list):
        return _read_detections(path, data)
    if isinstance(data, dict) and "annotations" in data:
        return _read_coco(path, data)
    found = "an object without 'annotations'" if isinstance(data, dict) else f"a {type(data).__name__}"
    raise BoxFileError(f"{path}: the JSON top level is {found}; expected a COCO annotation object "
                       "{images, annotations, categories} or a detection-results list "
                       "[{image_id, bbox, score, category_id}, ...]")


def _records(path: Path, data: dict, key: str) -> list:
    if key not in data:
        raise BoxFileError(f"{path}: a COCO annotation file needs '{key}', and this one has none; "
                           "re-export the file in COCO format")
    value = data[key]
    if not isinstance(value, list):
        raise BoxFileError(f"{path}: '{key}' must be a list in a COCO annotation file, "
                           f"got {type(value).__name__}; re-export the file in COCO format")
    return value


def _require(path: Path, where: str, record: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(record, dict):
        raise BoxFileError(f"{path}: {where} must be a JSON object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise BoxFileError(f"{path}: {where} lacks {', '.join(repr(k) for k in missing)}; add it or remove the record")


def _coco_categories(path: Path, data: dict) -> dict[Any, str]:
    """Category id -> name ({} when the file has no 'categories')."""
    if "categories" not in data:
        return {}
    names = {}
    for i, category in enumerate(_records(path, data, "categories")):
        _require(path, f"categories[{i}]", category, ("id", "name"))
        names[_category_id(path, f"categories[{i}]", category["id"], "id")] = str(category["name"])
    return names


def _label(path: Path, where: str, category_id: Any, names: dict[Any, str]) -> str:
    category_id = _category_id(path, where, category_id, "category_id")
    if not names:
        return f"class {category_id}"
    if category_id not in names:
        raise BoxFileError(f"{path}: {where}: category_id {category_id!r} is not among the file's categories "
                           f"(ids {sorted(names, key=str)}); add the category or fix the id")
    return names[category_id]


def _keypoints(path: Path, where: str, record: dict) -> tuple[float, ...] | None:
    values = record.get("keypoints")
    if values is None or (isinstance(values, list) and not values):
        return None
    if not isinstance(values, list) or len(values) % 3:
        raise BoxFileError(f"{path}: {where}: keypoints must be a flat list [x, y, v] * J; fix or remove them")
    return tuple(_number(path, where, v, "keypoint value") for v in values)


def _coco_box(path: Path, where: str, record: dict, names: dict[Any, str], score: float | None) -> LoadedBox:
    return LoadedBox(_xywh_to_xyxy(path, where, record["bbox"]), _label(path, where, record["category_id"], names),
                     score, _segmentation(path, where, record), _keypoints(path, where, record))


def _segmentation(path: Path, where: str, record: dict) -> Any | None:
    """The record's COCO segmentation, checked now (it is decoded when its image is shown)."""
    segmentation = record.get("segmentation") or None
    problem = None if segmentation is None else segmentation_problem(segmentation)
    if problem is not None:
        raise BoxFileError(f"{path}: {where}: the segmentation {problem}; fix or remove it")
    return segmentation


def _set_categories(box_file: BoxFile, names: dict[Any, str], used_ids: list[Any]) -> None:
    """Categories from the file's list, else "class <id>" for each id the boxes use."""
    if not names:
        names = {i: f"class {i}" for i in sorted(set(used_ids), key=str)}
    box_file.categories = list(dict.fromkeys(names.values()))
    box_file.category_ids = {name: i for i, name in names.items() if isinstance(i, int)}


def _read_coco(path: Path, data: dict) -> BoxFile:
    names = _coco_categories(path, data)
    images: dict[Any, str] = {}
    for i, image in enumerate(_records(path, data, "images")):
        _require(path, f"images[{i}]", image, ("id", "file_name"))
        image_id = _id(path, f"images[{i}]", image["id"], "id")
        if image_id in images:
            raise BoxFileError(f"{path}: images[{i}]: image id {image_id!r} is used twice (also for "
                               f"{images[image_id]!r}); give each image its own id")
        images[image_id] = str(image["file_name"])
    box_file = BoxFile(path, "coco", [])
    for image_id, file_name in images.items():
        box_file._add(Path(file_name).name, None, None)
        box_file._ids_by_name[Path(file_name).name] = image_id
    used = []
    for i, record in enumerate(_records(path, data, "annotations")):
        where = f"annotations[{i}]"
        _require(path, where, record, ("image_id", "bbox", "category_id"))
        if _id(path, where, record["image_id"], "image_id") not in images:
            raise BoxFileError(f"{path}: {where}: image_id {record['image_id']!r} is not in 'images'; "
                               "add the image or fix the id")
        if record.get("iscrowd"):
            continue  # a crowd region is not one object to segment
        score = _number(path, where, record["score"], "score") if "score" in record else None
        box_file._add(Path(images[record["image_id"]]).name, None, _coco_box(path, where, record, names, score))
        used.append(record["category_id"])
    _set_categories(box_file, names, used)
    return box_file


def _read_detections(path: Path, records: list) -> BoxFile:
    box_file = BoxFile(path, "detections", [])
    used = []
    for i, record in enumerate(records):
        where = f"record {i}"
        _require(path, where, record, ("image_id", "bbox", "score", "category_id"))
        score = _number(path, where, record["score"], "score")
        box_file._add(None, str(_id(path, where, record["image_id"], "image_id")),
                      _coco_box(path, where, record, {}, score))
        used.append(record["category_id"])
    _set_categories(box_file, {}, used)
    return box_file


def _set_labels(box_file: BoxFile, labels: list[str]) -> None:
    """Categories of a file that names labels only (VOC, CSV): ids 1, 2, ... by first use."""
    _set_categories(box_file, dict(enumerate(dict.fromkeys(labels), start=1)), [])


# ------------------------------------------------------------------------------------- VOC
_UNSAFE_XML = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _read_voc_folder(folder: Path) -> BoxFile:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml")
    if not files:
        raise BoxFileError(f"{folder}: the folder holds no .xml files; choose a folder of Pascal VOC annotations")
    return _read_voc_files(folder, files, {p: _read_text(p) for p in files})


def _read_voc_files(path: Path, files: list[Path], texts: dict[Path, str]) -> BoxFile:
    box_file = BoxFile(path, "voc", [])
    for xml_path in files:
        file_name, boxes = _parse_voc(xml_path, texts[xml_path])
        box_file._add(file_name, xml_path.stem, None)
        for box in boxes:
            box_file._add(file_name, xml_path.stem, box)
            box_file.categories.append(box.label)
    _set_labels(box_file, box_file.categories)
    return box_file


def _parse_voc(path: Path, text: str) -> tuple[str | None, list[LoadedBox]]:
    """(the <filename> or None, the boxes). VOC pixel indices are 1-based and inclusive:
    (xmin, ymin, xmax, ymax) covers pixel edges (xmin - 1, ymin - 1, xmax, ymax)."""
    if _UNSAFE_XML.search(text):
        raise BoxFileError(f"{path}: the XML declares a DOCTYPE or ENTITY, which is refused for safety; "
                           "remove the declaration (VOC annotations need none)")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise BoxFileError(f"{path}: not well-formed XML ({exc}); fix the file or re-export it") from None
    if root.tag != "annotation":
        raise BoxFileError(f"{path}: the root element is <{root.tag}>, expected a Pascal VOC <annotation>")
    file_name = (root.findtext("filename") or "").strip() or None
    boxes = [_voc_object(path, i, obj) for i, obj in enumerate(root.findall("object"))]
    return file_name, boxes


def _voc_object(path: Path, index: int, obj: ElementTree.Element) -> LoadedBox:
    where = f"object {index}"
    label = (obj.findtext("name") or "").strip()
    if not label:
        raise BoxFileError(f"{path}: {where} has no <name>; add the class name")
    corners = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = obj.findtext(f"bndbox/{tag}")
        try:
            value = float((text or "").strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise BoxFileError(f"{path}: {where} ({label}): <bndbox><{tag}> must be a number, got {text!r}; fix it")
        corners.append(value)
    x0, y0, x1, y1 = corners[0] - 1, corners[1] - 1, corners[2], corners[3]
    if x1 <= x0 or y1 <= y0:
        raise BoxFileError(f"{path}: {where} ({label}): the box {corners} has xmax < xmin or ymax < ymin; fix it")
    return LoadedBox(_checked_box(path, f"{where} ({label})", (x0, y0, x1, y1), corners), label)


# ------------------------------------------------------------------------------------- CSV
def _read_csv(path: Path, text: str) -> BoxFile:
    rows = csv.reader(text.splitlines())
    try:
        return _read_csv_rows(path, rows)
    except csv.Error as exc:  # e.g. a field over csv.field_size_limit() (128 KB)
        raise BoxFileError(f"{path}: line {rows.line_num}: not a CSV row ({exc}); fix the row") from None


def _read_csv_rows(path: Path, rows) -> BoxFile:
    header = [h.strip().lower() for h in next(rows)]
    repeated = sorted({column for column in header if header.count(column) > 1})
    if repeated:  # the last of them would silently win
        raise BoxFileError(f"{path}: line 1: the header names the column {', '.join(repeated)} more than once; "
                           "keep one of each")
    missing = [c for c in CSV_REQUIRED if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown:
        raise BoxFileError(f"{path}: line 1: the header must name the columns {','.join(CSV_COLUMNS)} "
                           f"(label and score optional), got {','.join(header)}; fix the header")
    box_file = BoxFile(path, "csv", [])
    for line, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise BoxFileError(f"{path}: line {line}: {len(row)} values for {len(header)} columns; fix the row")
        values = dict(zip(header, (cell.strip() for cell in row)))
        box = _csv_box(path, line, values)
        box_file._add(Path(values["image"]).name, None, box)
        box_file.categories.append(box.label)
    _set_labels(box_file, box_file.categories)
    return box_file


def _csv_box(path: Path, line: int, values: dict[str, str]) -> LoadedBox:
    if not values["image"]:
        raise BoxFileError(f"{path}: line {line}: the image column is empty; give the image file name")

    def number(column: str) -> float:
        try:
            value = float(values[column])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise BoxFileError(f"{path}: line {line}: {column} must be a number, got {values[column]!r}; fix the row")
        return value

    x0, y0, x1, y1 = (number(c) for c in ("x0", "y0", "x1", "y1"))
    if x1 <= x0 or y1 <= y0:
        raise BoxFileError(f"{path}: line {line}: the box ({x0}, {y0}, {x1}, {y1}) needs x1 > x0 and y1 > y0; fix the row")
    score = number("score") if values.get("score") else None
    xyxy = _checked_box(path, f"line {line}", (x0, y0, x1, y1), [values[c] for c in ("x0", "y0", "x1", "y1")])
    return LoadedBox(xyxy, values.get("label") or DEFAULT_LABEL, score)


def write_boxes_csv(path: str | Path, rows: list[tuple[str, LoadedBox]]) -> Path:
    """Write (image name, box) rows in the CSV format ``read_boxes`` reads."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for image, box in rows:
            writer.writerow([image, *box.xyxy, box.label, "" if box.score is None else box.score])
    return path


# ------------------------------------------------------------------------------------ demo
def demo_images() -> list[Path]:
    """The scikit-image sample photos that ``DEMO_BOXES`` annotates."""
    import skimage

    folder = Path(skimage.__file__).resolve().parent / "data"
    return [folder / name for name in DEMO_IMAGE_NAMES]
