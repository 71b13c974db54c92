"""Exporting the accepted masks for other tools (Qt-free): YOLO segmentation labels, Pascal VOC
``SegmentationObject`` / ``SegmentationClass`` PNGs and labelme JSON.

Each exporter writes into one folder the layout its ecosystem reads:

- **YOLO** (Ultralytics segmentation): ``images/`` (links to the images, copies where links
  are refused), ``labels/<stem>.txt`` with one line per object, ``class x1 y1 x2 y2 ...``
  normalised to [0, 1], and ``data.yaml`` naming the classes. An object in several pieces is
  one polygon whose pieces are joined by zero-width bridges (as Ultralytics' own COCO converter
  does), so that one object stays one instance.
- **Pascal VOC**: ``JPEGImages/<stem>.jpg``, ``SegmentationObject/<stem>.png`` (palette PNG,
  pixel value = instance 1..N, 0 background), ``SegmentationClass/<stem>.png`` (palette PNG,
  pixel value = class index: VOC's 20 classes when every label is one of them, else the
  annotation's categories in id order), ``ImageSets/Segmentation/trainval.txt`` and CVAT's
  ``labelmap.txt``. Larger objects are painted first, so an object in front of a larger one
  stays visible.
- **labelme**: ``<stem>.json`` per image, one ``polygon`` shape per piece of an object (pieces
  of one object share a ``group_id``), ``imagePath`` relative to the JSON.

Polygons come from ``cv2.findContours`` on the mask (outer contours through pixel centres, the
convention of OpenCV's and Pillow's polygon filling, which these tools use to rasterise them
again), each piece simplified by Douglas-Peucker (``cv2.approxPolyDP``) to within ``tolerance``
pixels: a mask traced pixel by pixel has hundreds of vertices (979 for one object); the default
1 px keeps a quarter of them or fewer at a median mask IoU of 0.976 (the model's masks of 200
coco-val-dev boxes: 132 vertices on average, 970 at most, become 33 and 226;
benchmarks/bench_export_polygons.py). Holes are not representable in these polygon formats and
are filled. Only images with at least one accepted object are exported.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from hcviewer.annotation.annotation_file import Annotation, SavedImage, decode_mask, image_id_list, unique_stems

FORMATS = {"yolo": "YOLO segmentation labels", "voc": "Pascal VOC segmentation PNGs", "labelme": "labelme JSON"}
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
VOC_VOID = 255
LABELME_VERSION = "5.5.0"  # the JSON layout of labelme 5 (labelme 6 reads it too)
DEFAULT_TOLERANCE = 1.0  # pixels a simplified polygon may stray from the mask's outline (0: not simplified)


class ExportError(OSError):
    """An export that stopped; the message says what was written and what was not."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class ExportResult:
    folder: Path
    images: int = 0
    objects: int = 0
    notes: list[str] = field(default_factory=list)  # what was left out, for the user
    tolerance: float = DEFAULT_TOLERANCE  # pixels the polygons were simplified to

    def summary(self) -> str:
        text = f"{self.objects} objects of {self.images} images to {self.folder}"
        return text + ("; " + "; ".join(self.notes) if self.notes else "")


@dataclass
class _ExportImage:
    """One image to export: its file, unique stem, (height, width) and accepted objects."""

    path: Path
    stem: str
    size: tuple[int, int]
    labels: list[str]
    masks: list[np.ndarray]  # bool [H, W] each


# ------------------------------------------------------------------------------------ polygons
def mask_polygons(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE, min_points: int = 3) -> list[np.ndarray]:
    """The outer contours of a bool [H, W] mask as [N, 2] float (x, y) pixel coordinates,
    largest first, each simplified to within ``tolerance`` pixels (``simplify_contour``); pieces
    with fewer than ``min_points`` vertices (single pixels, lines) are left out."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = sorted(contours, key=cv2.contourArea, reverse=True)
    return [simplify_contour(c, tolerance)[:, 0, :].astype(np.float64) for c in contours if len(c) >= min_points]


def simplify_contour(contour: np.ndarray, tolerance: float) -> np.ndarray:
    """An OpenCV contour [N, 1, 2] simplified by Douglas-Peucker to within ``tolerance`` pixels
    (its vertices are a subset of the contour's). A piece thinner than the tolerance, which would
    collapse to a line, keeps its contour: an object's small part is not dropped."""
    if tolerance <= 0:
        return contour
    simplified = cv2.approxPolyDP(contour, tolerance, closed=True)
    return simplified if len(simplified) >= 3 else contour


def check_tolerance(tolerance: float) -> float:
    """``tolerance`` as a float; ValueError unless it is a finite number of pixels, 0 or more."""
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"the polygon tolerance must be 0 or more pixels (0: not simplified), got {tolerance}")
    return float(tolerance)


def merged_polygon(polygons: list[np.ndarray]) -> np.ndarray:
    """One polygon [N, 2] visiting every piece: from the first piece to each next one along the
    shortest link, around it, and back (zero-width bridges, as Ultralytics merges segments)."""
    merged = polygons[0]
    for piece in polygons[1:]:
        distances = np.linalg.norm(merged[:, None, :] - piece[None, :, :], axis=2)
        i, j = np.unravel_index(int(distances.argmin()), distances.shape)
        around = np.vstack([piece[j:], piece[:j + 1]])  # the piece from j back to j
        merged = np.vstack([merged[:i + 1], around, merged[i:]])
    return merged


# ------------------------------------------------------------------------------------ entry
def export_annotation(annotation: Annotation, folder: str | os.PathLike, kind: str,
                      tolerance: float = DEFAULT_TOLERANCE) -> ExportResult:
    """Write ``annotation``'s accepted masks into ``folder`` in format ``kind`` (a key of
    ``FORMATS``), polygons simplified to within ``tolerance`` pixels (0: every contour vertex).
    Raises ExportError naming the file that could not be written, ValueError for a bad tolerance."""
    exporters: dict[str, Callable[[list[_ExportImage], Path, ExportResult, list[str]], None]] = {
        "yolo": _export_yolo, "voc": _export_voc, "labelme": _export_labelme}
    folder = Path(folder)
    result = ExportResult(folder, tolerance=check_tolerance(tolerance))
    images = _images_to_export(annotation, result)
    categories = [name for name, _ in sorted(annotation.category_ids.items(), key=lambda kv: kv[1])]
    categories += sorted({label for image in images for label in image.labels} - set(categories))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        exporters[kind](images, folder, result, categories)
    except OSError as exc:
        raise ExportError(f"Export to {folder} stopped after {result.images} of {len(images)} images: "
                          f"{getattr(exc, 'filename', None) or folder}: {exc.strerror or exc}. The files of "
                          "those images are complete; free disk space or choose another folder, and export "
                          "again.") from None
    return result


def _images_to_export(annotation: Annotation, result: ExportResult) -> list[_ExportImage]:
    stems = unique_stems(annotation.images, image_id_list(annotation.images))
    images, without = [], 0
    for image, stem in zip(annotation.images, stems):
        accepted = [o for o in image.objects if o.mask_rle is not None]
        if not accepted:
            without += bool(image.objects)
            continue
        masks = [decode_mask(o.mask_rle) for o in accepted]
        images.append(_ExportImage(Path(image.path), stem, _size(image, masks[0]), [o.label for o in accepted], masks))
    if without:
        result.notes.append(f"{without} images with boxes but no accepted object were left out")
    return images


def _size(image: SavedImage, mask: np.ndarray) -> tuple[int, int]:
    return image.size if image.size is not None else mask.shape


# ------------------------------------------------------------------------------------ YOLO
def _export_yolo(images: list[_ExportImage], folder: Path, result: ExportResult, categories: list[str]) -> None:
    class_index = {name: i for i, name in enumerate(categories)}
    (folder / "images").mkdir(exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    for image in images:
        height, width = image.size
        lines = []
        for label, mask in zip(image.labels, image.masks):
            polygons = mask_polygons(mask, result.tolerance)
            if not polygons:
                continue
            points = merged_polygon(polygons) / [width, height]
            lines.append(" ".join([str(class_index[label])] + [f"{v:.6f}" for v in points.reshape(-1)]))
        _place_image(image.path, folder / "images" / f"{image.stem}{image.path.suffix.lower()}")
        (folder / "labels" / f"{image.stem}.txt").write_text("\n".join(lines) + "\n" if lines else "")
        result.images += 1
        result.objects += len(lines)
    names = "\n".join(f"  {i}: {json.dumps(name)}" for i, name in enumerate(categories))
    (folder / "data.yaml").write_text(f"# hcviewer export (Ultralytics YOLO segmentation)\npath: {json.dumps(str(folder.resolve()))}\n"
                                      f"train: images\nval: images\nnames:\n{names}\n")


# ------------------------------------------------------------------------------------ VOC
def voc_palette() -> np.ndarray:
    """[256, 3] uint8: the Pascal VOC colour map (index 255, void, is (224, 224, 192))."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, code = index, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                code[channel] |= ((value >> channel) & 1) << (7 - bit)
            value >>= 3
        palette[index] = code
    return palette


def _export_voc(images: list[_ExportImage], folder: Path, result: ExportResult, categories: list[str]) -> None:
    labels = {label for image in images for label in image.labels}
    classes = list(VOC_CLASSES) if labels <= set(VOC_CLASSES) else ["background", *categories]
    class_index = {name: i for i, name in enumerate(classes)}
    for name in ("JPEGImages", "SegmentationObject", "SegmentationClass", "ImageSets/Segmentation"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    for image in images:
        instances = np.zeros(image.size, np.uint8)
        semantic = np.zeros(image.size, np.uint8)
        order = sorted(range(len(image.masks)), key=lambda i: -int(image.masks[i].sum()))  # large first
        for i in order[:VOC_VOID - 1]:
            instances[image.masks[i]] = i + 1
            semantic[image.masks[i]] = class_index[image.labels[i]]
        if len(order) > VOC_VOID - 1:
            result.notes.append(f"{image.path.name}: only {VOC_VOID - 1} of {len(order)} objects fit a VOC PNG")
        _write_palette_png(folder / "SegmentationObject" / f"{image.stem}.png", instances, palette)
        _write_palette_png(folder / "SegmentationClass" / f"{image.stem}.png", semantic, palette)
        _place_jpeg(image.path, folder / "JPEGImages" / f"{image.stem}.jpg")
        result.images += 1
        result.objects += min(len(order), VOC_VOID - 1)
    (folder / "ImageSets" / "Segmentation" / "trainval.txt").write_text("".join(f"{i.stem}\n" for i in images))
    (folder / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "".join(
        f"{name}:{','.join(str(int(v)) for v in palette[i])}::\n" for i, name in enumerate(classes)))


def _write_palette_png(path: Path, indices: np.ndarray, palette: np.ndarray) -> None:
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    image.save(path)


def _place_jpeg(source: Path, target: Path) -> None:
    """A JPEG whose pixels are stored upright is linked; others are encoded upright as JPEG
    (VOC readers open JPEGImages/<stem>.jpg without applying EXIF orientation)."""
    from hcviewer.imageio import read_image

    with Image.open(source) as header:
        upright_jpeg = header.format in ("JPEG", "MPO") and header.getexif().get(0x0112, 1) == 1
    if upright_jpeg:
        _place_image(source, target)
        return
    ok, jpeg = cv2.imencode(".jpg", read_image(source).rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise OSError(f"JPEG encoding failed for {source}")
    target.write_bytes(jpeg.tobytes())


# ------------------------------------------------------------------------------------ labelme
def _export_labelme(images: list[_ExportImage], folder: Path, result: ExportResult, categories: list[str]) -> None:
    for image in images:
        shapes = []
        for group_id, (label, mask) in enumerate(zip(image.labels, image.masks)):
            polygons = mask_polygons(mask, result.tolerance)
            shapes += [{"label": label, "points": polygon.tolist(), "group_id": group_id if len(polygons) > 1 else None,
                        "description": "", "shape_type": "polygon", "flags": {}, "mask": None} for polygon in polygons]
            result.objects += bool(polygons)
        height, width = image.size
        document = {"version": LABELME_VERSION, "flags": {}, "shapes": shapes,
                    "imagePath": Path(os.path.relpath(image.path.resolve(), folder.resolve())).as_posix(),
                    "imageData": None, "imageHeight": int(height), "imageWidth": int(width)}
        (folder / f"{image.stem}.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
        result.images += 1


# ------------------------------------------------------------------------------------ files
def _place_image(source: Path, target: Path) -> None:
    """``target`` shows ``source``: a symbolic link, or a copy where links are refused."""
    if target.is_symlink() or target.exists():
        target.unlink()
    try:
        target.symlink_to(source.resolve())
    except OSError:
        shutil.copy2(source, target)
