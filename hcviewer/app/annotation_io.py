"""Saving and loading the annotation (Qt-free).

An annotation is a COCO JSON file: every accepted object is an annotation with its mask as
compressed RLE (pycocotools), its box and, when the model predicted them, its keypoints.
Boxes not accepted yet (pending or rejected) go under the top-level key ``"hcviewer"`` (COCO
readers ignore it) so that loading the file continues the work where it stopped. Beside
``NAME.json`` a folder ``NAME_masks/`` holds one PNG per accepted object
(``<image stem>/<annotation id>_<label>.png``, 255 inside the object).

Every file is written to a temporary file in the same folder and renamed over the old one, so a
failed write (disk full, no permission) raises an OSError naming the file (``OutputError`` for
the JSON, ``AnnotationWriteError`` for the mask folder) and leaves the previous file as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from hcviewer.fileio import write_json_atomic

FORMAT_VERSION = 1


class AnnotationError(ValueError):
    """An annotation file that cannot be loaded; the message names the file, the record and the fix."""


class AnnotationWriteError(OSError):
    """A file that could not be written; the previous file is unchanged. The message names it."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class SavedObject:
    """One box of an image, as saved: accepted when ``mask_rle`` is set."""

    xyxy: tuple[float, float, float, float]
    label: str
    score: float | None = None  # detector score; None for ground-truth or hand-drawn boxes
    mask_rle: dict | None = None  # compressed RLE with str counts
    keypoints: np.ndarray | None = None  # [J, 3] (x, y, score) image px
    rejected: bool = False


@dataclass
class SavedImage:
    path: Path
    size: tuple[int, int] | None  # (height, width); None when never read
    objects: list[SavedObject] = field(default_factory=list)


@dataclass
class Annotation:
    images: list[SavedImage]
    category_ids: dict[str, int]  # label -> COCO category id
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()  # 0-based pairs
    extra: dict = field(default_factory=dict)  # other keys under "hcviewer" (the recovery file's)


# ------------------------------------------------------------------------------------ masks
def encode_mask(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a bool [H, W] mask, ``counts`` as str (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict) -> np.ndarray:
    """A read-only bool [H, W] mask; recently decoded masks are cached (masks are redrawn often)."""
    return _decode_cached(rle["counts"], *rle["size"])


@lru_cache(maxsize=64)
def _decode_cached(counts: str, height: int, width: int) -> np.ndarray:
    rle = {"size": [height, width], "counts": counts.encode("ascii")}
    mask = np.ascontiguousarray(mask_utils.decode(rle), dtype=bool)  # pycocotools gives Fortran order
    mask.flags.writeable = False  # shared by every caller: edits must copy
    return mask


def mask_bbox(mask: np.ndarray) -> list[float]:
    """COCO [x, y, w, h] of a mask's pixels ([0, 0, 0, 0] when empty)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


# ------------------------------------------------------------------------------------ writing
def write_annotation(path: str | os.PathLike, annotation: Annotation, png_masks: bool = True) -> list[Path]:
    """Write the COCO JSON (and, with ``png_masks``, the PNG mask folder beside it). Returns
    what was written. Without ``png_masks`` (the autosave) no image header is read either:
    images never shown get size 0 x 0 (thousands of files are not opened every few seconds)."""
    path = Path(path)
    coco, pngs = to_coco(annotation, path.parent, read_sizes=png_masks)
    written = [write_json_atomic(path, coco)]
    if png_masks:
        written.append(_write_mask_folder(mask_folder(path), pngs))
    return written


def mask_folder(path: Path) -> Path:
    return path.with_name(f"{path.stem}_masks")


def to_coco(annotation: Annotation, folder: Path, read_sizes: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """The COCO dict, and the PNG masks by relative file name. ``read_sizes``: read the header
    of images with boxes whose size is unknown (never shown); others are written as 0 x 0."""
    images, annotations, pending, pngs = [], [], [], {}
    category_ids = dict(annotation.category_ids)
    for image_id, image in enumerate(annotation.images, start=1):
        images.append(_image_record(image, image_id, folder, read_sizes and bool(image.objects)))
        for obj in image.objects:
            category_ids.setdefault(obj.label, max(category_ids.values(), default=0) + 1)
            if obj.mask_rle is None:
                pending.append({"image_id": image_id, "box": _rounded(obj.xyxy), "label": obj.label,
                                "score": obj.score, "rejected": obj.rejected})
                continue
            record = _object_record(obj, image_id, len(annotations) + 1, category_ids[obj.label])
            annotations.append(record)
            pngs[f"{Path(image.path).stem}/{record['id']:05d}_{_safe(obj.label)}.png"] = decode_mask(obj.mask_rle)
    categories = [{"id": cid, "name": name} for name, cid in sorted(category_ids.items(), key=lambda kv: kv[1])]
    keypoint_labels = {obj.label for image in annotation.images for obj in image.objects
                       if obj.mask_rle is not None and obj.keypoints is not None}
    for category in categories:
        if category["name"] in keypoint_labels and annotation.keypoint_names:
            category["keypoints"] = list(annotation.keypoint_names)
            category["skeleton"] = [[a + 1, b + 1] for a, b in annotation.skeleton]  # COCO is 1-based
    coco = {"info": {"description": "hcviewer annotation"}, "images": images, "annotations": annotations,
            "categories": categories,
            "hcviewer": {"version": FORMAT_VERSION, "pending": pending, **annotation.extra}}
    return coco, pngs


def _image_record(image: SavedImage, image_id: int, folder: Path, read_size: bool) -> dict:
    if image.size is not None:
        height, width = image.size
    else:
        height, width = _read_size(image.path) if read_size else (0, 0)
    return {"id": image_id, "file_name": _relative_name(Path(image.path), folder), "height": height, "width": width}


def _object_record(obj: SavedObject, image_id: int, ann_id: int, category_id: int) -> dict:
    mask = decode_mask(obj.mask_rle)
    record = {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": obj.mask_rle,
              "area": int(mask.sum()), "bbox": mask_bbox(mask), "iscrowd": 0,
              "hcviewer_box": _rounded(obj.xyxy), "score": obj.score}
    if obj.keypoints is not None:
        points = np.asarray(obj.keypoints, np.float64).reshape(-1, 3)
        record["keypoints"] = [v for x, y, _ in points for v in (round(float(x), 2), round(float(y), 2), 2)]
        record["num_keypoints"] = len(points)
        record["keypoint_scores"] = [round(float(s), 4) for s in points[:, 2]]
    return record


def _rounded(xyxy) -> list[float]:
    return [round(float(v), 2) for v in xyxy]


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "object"


def _relative_name(path: Path, folder: Path) -> str:
    """Relative to the annotation's folder when the image is under it, else absolute."""
    path, folder = path.resolve(), folder.resolve()
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)


def _read_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header; (0, 0) when unreadable (it is reported when shown)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, ValueError):
        return 0, 0


def _write_error(path: Path, exc: OSError) -> AnnotationWriteError:
    return AnnotationWriteError(f"Could not write {path}: {exc.strerror or exc}. The previous file, if any, "
                                "is unchanged; choose a folder you can write to, or free disk space.")


def _write_mask_folder(folder: Path, pngs: dict[str, np.ndarray]) -> Path:
    """Write every PNG into a new folder, then swap it for the old one (a failure keeps the old)."""
    temp = None
    try:
        temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        for name, mask in pngs.items():
            target = temp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
            if not ok:
                raise OSError(f"PNG encoding failed for {name}")
            target.write_bytes(png.tobytes())
        old = folder.with_name(f".{folder.name}.old") if folder.exists() else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(temp, folder)
    except OSError as exc:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise _write_error(folder, exc) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return folder


# ------------------------------------------------------------------------------------ reading
def read_annotation(path: str | os.PathLike) -> Annotation:
    """Load an annotation written by ``write_annotation`` (or any COCO file with RLE or polygon
    masks: its objects come back accepted). Image paths are relative to the file's folder."""
    path = Path(path)
    coco = _load_json(path)
    categories = {c["id"]: c for c in _list(path, coco, "categories")}
    names = {cid: str(c.get("name", cid)) for cid, c in categories.items()}
    images: dict[Any, SavedImage] = {}
    for i, record in enumerate(_list(path, coco, "images")):
        _need(path, f"images[{i}]", record, ("id", "file_name"))
        size = (int(record.get("height") or 0), int(record.get("width") or 0))
        size = size if min(size) > 0 else None  # 0 x 0: never read
        images[record["id"]] = SavedImage(path.parent / record["file_name"], size)
    for i, record in enumerate(_list(path, coco, "annotations")):
        where = f"annotations[{i}] (id {record.get('id', '?')})" if isinstance(record, dict) else f"annotations[{i}]"
        _need(path, where, record, ("image_id", "category_id", "bbox"))
        image = _image_of(path, where, images, record["image_id"])
        image.objects.append(_read_object(path, where, record, names, image))
    extra = coco.get("hcviewer") if isinstance(coco.get("hcviewer"), dict) else {}
    for i, record in enumerate(extra.pop("pending", []) or []):
        where = f"hcviewer.pending[{i}]"
        _need(path, where, record, ("image_id", "box", "label"))
        image = _image_of(path, where, images, record["image_id"])
        image.objects.append(SavedObject(_box(path, where, record["box"]), str(record["label"]),
                                         record.get("score"), rejected=bool(record.get("rejected", False))))
    extra.pop("version", None)
    keypoint_category = next((c for c in categories.values() if c.get("keypoints")), {})
    return Annotation(list(images.values()), {name: cid for cid, name in names.items()},
                      tuple(keypoint_category.get("keypoints", ())),
                      tuple((a - 1, b - 1) for a, b in keypoint_category.get("skeleton", ())), extra)


def _load_json(path: Path) -> dict:
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotationError(f"{path}: no such file; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: cannot be read ({exc}); check the path and permissions") from None
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); "
                              "choose an annotation saved by hcviewer or a COCO file") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise AnnotationError(f"{path}: not a COCO annotation (no 'images' list); choose an annotation saved "
                              "by hcviewer or a COCO file")
    return coco


def _list(path: Path, coco: dict, key: str) -> list:
    value = coco.get(key, [])
    if not isinstance(value, list):
        raise AnnotationError(f"{path}: '{key}' must be a list")
    return value


def _need(path: Path, where: str, record: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(record, dict):
        raise AnnotationError(f"{path}: {where} is not an object")
    missing = [k for k in keys if k not in record]
    if missing:
        raise AnnotationError(f"{path}: {where} has no {', '.join(repr(k) for k in missing)}")


def _image_of(path: Path, where: str, images: dict[Any, SavedImage], image_id: Any) -> SavedImage:
    if image_id not in images:
        raise AnnotationError(f"{path}: {where} refers to image id {image_id!r}, which 'images' does not list")
    return images[image_id]


def _box(path: Path, where: str, values: Any) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in values)
    except (TypeError, ValueError):
        raise AnnotationError(f"{path}: {where}: a box is four numbers x0, y0, x1, y1, not {values!r}") from None
    if not (np.isfinite([x0, y0, x1, y1]).all() and x1 > x0 and y1 > y0):
        raise AnnotationError(f"{path}: {where}: box {values!r} is empty or not finite")
    return x0, y0, x1, y1


def _read_object(path: Path, where: str, record: dict, names: dict, image: SavedImage) -> SavedObject:
    if "hcviewer_box" in record:
        xyxy = _box(path, where, record["hcviewer_box"])
    else:
        try:
            x, y, w, h = (float(v) for v in record["bbox"])
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}: {where}: bbox is [x, y, width, height], not {record['bbox']!r}") from None
        xyxy = _box(path, where, (x, y, x + w, y + h))
    label = names.get(record["category_id"])
    if label is None:
        raise AnnotationError(f"{path}: {where}: category_id {record['category_id']!r} is not in 'categories'")
    mask_rle = _read_mask(path, where, record.get("segmentation"), image)
    keypoints = None
    if record.get("keypoints"):
        points = np.asarray(record["keypoints"], np.float64).reshape(-1, 3)
        scores = record.get("keypoint_scores")
        keypoints = np.column_stack([points[:, :2], scores if scores is not None else points[:, 2] > 0])
    score = record.get("score")
    return SavedObject(xyxy, label, None if score is None else float(score), mask_rle, keypoints)


def _read_mask(path: Path, where: str, segmentation: Any, image: SavedImage) -> dict | None:
    """The segmentation as compressed RLE with str counts (None when the record has none)."""
    if not segmentation:
        return None
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
        size = tuple(int(s) for s in segmentation.get("size", ()))
        if image.size is not None and size != image.size:
            raise AnnotationError(f"{path}: {where}: mask size {list(size)} differs from the image's "
                                  f"{list(image.size)} (height, width)")
        image.size = image.size or size
        return {"size": list(size), "counts": segmentation["counts"]}
    if image.size is None:
        raise AnnotationError(f"{path}: {where}: a polygon or uncompressed mask needs the image's "
                              "'height' and 'width' in 'images'")
    from hcviewer.app.boxfiles import decode_segmentation

    try:
        return encode_mask(decode_segmentation(segmentation, *image.size))
    except ValueError as exc:
        raise AnnotationError(f"{path}: {where}: {exc}") from None
