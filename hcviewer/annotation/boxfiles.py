"""Reading detection boxes (Qt-free): COCO annotation files, COCO-style detection results,
Pascal VOC XML (a file or a folder of them) and a simple CSV. Every problem is a
``BoxFileError`` whose message names the file, the record and the fix."""

from __future__ import annotations

import csv
import math
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcviewer.boxes import coordinates_problem
from hcviewer.cocomask import segmentation_problem
from hcviewer.data.coco_json import (
    CocoFile, CocoFileError, bbox_xyxy, category_of, coco_structure, finite, image_id_of, keypoints, parse_json,
    read_text, require, short_repr,
)

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
        text = read_text(path, SUPPORTED)
    except CocoFileError as exc:
        raise BoxFileError(str(exc)) from None
    if not text.strip():
        raise BoxFileError(f"{path}: the file is empty; use {SUPPORTED}")
    return text


def _checked_box(path: Path, where: str, xyxy: tuple[float, float, float, float], written: Any
                 ) -> tuple[float, float, float, float]:
    """The box, or a BoxFileError when the network could not use its coordinates (float32)."""
    problem = coordinates_problem(xyxy)
    if problem is not None:
        raise BoxFileError(f"{path}: {where}: the box {short_repr(written)} {problem}; fix or remove the record")
    return xyxy


# ------------------------------------------------------------------------------------ JSON
def _read_json(path: Path, text: str) -> BoxFile:
    try:
        data = parse_json(path, text)
        if isinstance(data, list):
            return _read_detections(path, data)
        if isinstance(data, dict) and "annotations" in data:
            return _read_coco(coco_structure(path, data, optional=("categories",)))
    except CocoFileError as exc:
        raise BoxFileError(str(exc)) from None
    found = "an object without 'annotations'" if isinstance(data, dict) else f"a {type(data).__name__}"
    raise BoxFileError(f"{path}: the JSON top level is {found}; expected a COCO annotation object "
                       "{images, annotations, categories} or a detection-results list "
                       "[{image_id, bbox, score, category_id}, ...]")


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


def _read_coco(coco: CocoFile) -> BoxFile:
    names = {category_id: str(c.fields["name"]) for category_id, c in coco.categories.items()}
    box_file = BoxFile(coco.path, "coco", [])
    for image_id, image in coco.images.items():
        name = Path(str(image.fields["file_name"])).name
        box_file._add(name, None, None)
        box_file._ids_by_name[name] = image_id
    used = []
    for ann in coco.annotations:
        if ann.fields.get("iscrowd"):
            continue  # a crowd region is not one object to segment
        label = names[ann.category_id] if coco.has_categories else f"class {ann.category_id}"
        box = LoadedBox(ann.xyxy, label, ann.score, _segmentation(coco.path, ann.where, ann.fields), ann.keypoints)
        box_file._add(Path(str(coco.images[ann.image_id].fields["file_name"])).name, None, box)
        used.append(ann.category_id)
    _set_categories(box_file, names, used)
    return box_file


def _read_detections(path: Path, records: list) -> BoxFile:
    """COCO detection results: a list of records naming images by id only."""
    box_file = BoxFile(path, "detections", [])
    used = []
    for i, record in enumerate(records):
        where = f"record {i}"
        require(path, where, record, ("image_id", "bbox", "score", "category_id"))
        image_id = image_id_of(path, where, record["image_id"], "image_id")
        category_id = category_of(path, where, record["category_id"], None)
        box = LoadedBox(bbox_xyxy(path, where, record["bbox"]), f"class {category_id}",
                        finite(path, where, record["score"], "score"), _segmentation(path, where, record),
                        keypoints(path, where, record))
        box_file._add(None, str(image_id), box)
        used.append(category_id)
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
