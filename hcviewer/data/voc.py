"""Pascal VOC / SBD instance segmentation reader.

Layout under ``root`` (as in VOCdevkit/VOC2012, or SBD converted to PNG)::

    JPEGImages/<id>.jpg                     the photos
    Annotations/<id>.xml                    objects: name, bndbox (1-based, inclusive), difficult
    SegmentationObject/<id>.png             palette PNG: object i of the XML has value i (1-based),
                                            0 background, 255 the void boundary (optional per image)
    SegmentationClass/<id>.png              class labels (not needed: the class comes from the XML)
    ImageSets/Segmentation/<image_set>.txt  one id a line (optional: all XML files when not given)

Images without a SegmentationObject PNG still give their boxes (their objects have no mask).
The XML is parsed without document type declarations: a file that declares one (the way entity
expansion attacks such as "billion laughs" start) is refused.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.parsers import expat

import numpy as np

from hcviewer.boxes import coordinates_problem
from hcviewer.data.images import read_size
from hcviewer.data.records import AnnotatedDataset, DataError, ImageRecord, ObjectAnnotation, PngMask
from hcviewer.fileio import read_input_bytes, read_input_text
from hcviewer.imageio import max_image_pixels


def read_voc(root: str | Path, image_set: str | None = None, keep_difficult: bool = True) -> AnnotatedDataset:
    """Read a VOC-style folder; ``image_set`` names ImageSets/Segmentation/<image_set>.txt.

    ``keep_difficult`` False drops objects marked difficult (VOC evaluation ignores them).
    """
    root = Path(root)
    if not (root / "Annotations").is_dir():
        raise DataError(f"{root}: no Annotations folder; pass the VOC folder that holds Annotations/ "
                        "and JPEGImages/ (e.g. VOCdevkit/VOC2012)")
    image_ids = _image_ids(root, image_set)
    records = [_read_record(root, image_id, keep_difficult) for image_id in image_ids]
    missing = [r.path for r in records if not r.path.is_file()]
    if missing:
        raise DataError(f"{root / 'JPEGImages'}: {len(missing)} image file(s) are missing, e.g. "
                        f"{missing[0].name}; check that the images were extracted next to Annotations/")
    name = root.name if image_set is None else f"{root.name}:{image_set}"
    return AnnotatedDataset(name, records)


def _image_ids(root: Path, image_set: str | None) -> list[str]:
    if image_set is None:
        ids = sorted(p.stem for p in (root / "Annotations").glob("*.xml"))
        if not ids:
            raise DataError(f"{root / 'Annotations'}: no .xml files; is this a VOC folder?")
        return ids
    list_file = root / "ImageSets" / "Segmentation" / f"{image_set}.txt"
    try:
        lines = read_input_text(list_file).splitlines()
    except OSError as exc:
        raise DataError(f"{list_file}: cannot be read ({exc.strerror}); check the image set name "
                        "(e.g. train, val, trainval)") from None
    except UnicodeDecodeError:
        raise DataError(f"{list_file}: not a text file; it should list one image id a line") from None
    # Some list files carry a second column (a per-class flag); the id is the first word.
    return [line.split()[0] for line in lines if line.strip()]


def _read_record(root: Path, image_id: str, keep_difficult: bool) -> ImageRecord:
    xml_path = root / "Annotations" / f"{image_id}.xml"
    annotation = _parse_xml(xml_path)
    file_name = Path(annotation.findtext("filename") or f"{image_id}.jpg").name
    image_path = root / "JPEGImages" / file_name
    width, height = _image_size(xml_path, annotation, image_path)
    instance_png = root / "SegmentationObject" / f"{image_id}.png"
    has_masks = instance_png.is_file()
    objects = []
    for index, element in enumerate(annotation.findall("object")):
        obj = _read_object(xml_path, index, element)
        if _is_difficult(xml_path, index, element) and not keep_difficult:
            continue
        if has_masks:
            obj.mask = PngMask(instance_png, value=index + 1)
        objects.append(obj)
    return ImageRecord(image_id, width, height, path=image_path, objects=objects)


class _DoctypeRefused(Exception):
    pass


def _parse_xml(path: Path) -> ET.Element:
    try:
        data = read_input_bytes(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); every listed image needs its "
                        "annotation file") from None
    _refuse_doctype(path, data)
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise DataError(f"{path}: malformed XML ({exc}); re-export the annotation") from None


def _refuse_doctype(path: Path, data: bytes) -> None:
    """Scan with expat first: a DOCTYPE (and with it any ENTITY) stops the scan before it expands."""

    def refuse(*_args: object) -> None:
        raise _DoctypeRefused

    scanner = expat.ParserCreate()
    scanner.StartDoctypeDeclHandler = refuse
    scanner.EntityDeclHandler = refuse
    try:
        scanner.Parse(data, True)
    except _DoctypeRefused:
        raise DataError(f"{path}: declares a DOCTYPE or ENTITY, which annotation files never need and "
                        "which can expand without bound; remove the declaration") from None
    except expat.ExpatError as exc:
        raise DataError(f"{path}: malformed XML ({exc}); re-export the annotation") from None


def _image_size(xml_path: Path, annotation: ET.Element, image_path: Path) -> tuple[int, int]:
    size = annotation.find("size")
    if size is not None:
        width, height = _number(size.findtext("width")), _number(size.findtext("height"))
        if width is not None and height is not None and width >= 1 and height >= 1:
            if width * height > max_image_pixels():
                raise DataError(f"{xml_path}: <size> claims {width:g} x {height:g} pixels, over the "
                                f"{max_image_pixels()}-pixel limit; fix <width> and <height>")
            return int(width), int(height)
    return _image_size_from_file(xml_path, image_path)


def _image_size_from_file(xml_path: Path, image_path: Path) -> tuple[int, int]:
    """Some converted files lack <size> (or have 0 x 0): (width, height) from the image header
    instead, as the image decodes (EXIF orientation applied)."""
    try:
        height, width = read_size(image_path)
    except DataError as exc:
        raise DataError(f"{xml_path}: has no usable <size> and its image cannot be used ({exc}); "
                        "add <size><width>/<height> or fix the image") from None
    return width, height


def _read_object(path: Path, index: int, element: ET.Element) -> ObjectAnnotation:
    name = (element.findtext("name") or "").strip()
    if not name:
        raise DataError(f"{path}: object {index} has no <name>; every object needs its class name")
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise DataError(f"{path}: object {index} ({name}) has no <bndbox>; add xmin/ymin/xmax/ymax")
    coords = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = bndbox.findtext(tag)
        if text is None:
            raise DataError(f"{path}: object {index} ({name}) <bndbox> has no <{tag}>")
        value = _number(text)
        if value is None:
            raise DataError(f"{path}: object {index} ({name}) <{tag}> is {text.strip()!r}, not a number")
        coords.append(value)
    xmin, ymin, xmax, ymax = coords
    if xmax < xmin or ymax < ymin:
        raise DataError(f"{path}: object {index} ({name}) box has xmax < xmin or ymax < ymin "
                        f"({xmin}, {ymin}, {xmax}, {ymax}); swap the corners")
    # VOC pixels are 1-based and xmax/ymax inclusive: pixel columns xmin..xmax are [xmin - 1, xmax).
    box = (xmin - 1, ymin - 1, xmax, ymax)
    problem = coordinates_problem(box)
    if problem is not None:
        raise DataError(f"{path}: object {index} ({name}) box ({xmin}, {ymin}, {xmax}, {ymax}) {problem}; fix it")
    return ObjectAnnotation(np.array(box, np.float32), name)


def _is_difficult(path: Path, index: int, element: ET.Element) -> bool:
    text = (element.findtext("difficult") or "0").strip()
    if text not in ("0", "1"):
        raise DataError(f"{path}: object {index} <difficult> is {text!r}; it must be 0 or 1")
    return text == "1"


def _number(text: str | None) -> float | None:
    """A finite number, or None when the text is missing or not one."""
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None
