"""The annotation file and writing it (Qt-free); ``annotation_reader`` reads it back.

An annotation is a COCO JSON file: every accepted object is an annotation with its mask as
compressed RLE (pycocotools), its box and, for the categories the keypoint head applies to
(``HeadScope``), its keypoints: ``v`` = 2 when the keypoint's score reaches
``DEFAULT_KEYPOINT_THRESHOLD``, else 0 with x = y = 0, whatever the display shows (the rule is
written in the file as ``hcviewer.keypoint_visible_min_score``); every score is kept in
``keypoint_scores`` and every point as the model placed it in ``hcviewer_keypoints``. What COCO
has no place for goes where COCO readers ignore it, so that loading the file continues the work
where it stopped:

- image ids are the source box file's (new images get new ids), ``file_name`` is relative to
  the annotation's folder (with ``..`` when the images lie elsewhere);
- an object's ground truth from the source box file: ``hcviewer_gt`` (its COCO segmentation);
- boxes not accepted (pending or rejected), with their ground truth and the model's result
  (``figure_ground`` S x S probabilities, float16, zlib, base64), under the top-level
  ``"hcviewer"`` key.

Beside ``NAME.json`` a folder ``NAME_masks/`` holds one PNG per accepted object
(``<image stem>/<annotation id>_<label>.png``, 1 bit per pixel: 255 inside the object as OpenCV
reads it, True as Pillow does). The PNGs are written to a new folder first, then the JSON
(temporary file and rename), then the folder replaces the old one: a full disk or a missing
permission leaves both previous files, and the error (``AnnotationWriteError``) says exactly
what was and was not written.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from hcviewer.annotation.head_scope import DEFAULT_KEYPOINT_THRESHOLD, HeadScope
from hcviewer.annotation.mask_crops import MaskCrop, crop_from_rle, rle_area, rle_bbox, rle_from_crop
from hcviewer.fileio import write_text_atomic

FORMAT_VERSION = 2
# Mask PNGs: 1 bit per pixel (read back as 0/255 by OpenCV, mode "1" by Pillow), run-length deflate:
# a 12000 x 9000 mask is written in 0.3 s instead of 2 s, and 5x smaller.
PNG_OPTIONS = [cv2.IMWRITE_PNG_BILEVEL, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
MAX_RESULT_SIDE = 1024  # a saved S x S model result


class AnnotationError(ValueError):
    """An annotation file that cannot be loaded; the message names the file, the record and the fix."""


class AnnotationWriteError(OSError):
    """A save that failed; the message says which files were written and which were not."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class SavedResult:
    """The model's answer for a box not accepted yet."""

    figure_ground: np.ndarray | None = None  # [S, S] foreground probability over the box
    mask_rle: dict | None = None  # full-image compressed RLE ("segment all images")
    keypoints: np.ndarray | None = None  # [J, 3] (x, y, score) image px
    score: float | None = None


@dataclass
class SavedObject:
    """One box of an image, as saved: accepted when ``mask_rle`` is set."""

    xyxy: tuple[float, float, float, float]
    label: str
    score: float | None = None  # detector score; None for ground-truth or hand-drawn boxes
    mask_rle: dict | None = None  # compressed RLE with str counts
    keypoints: np.ndarray | None = None  # [J, 3] (x, y, score) image px
    rejected: bool = False
    gt: Any = None  # the source box file's COCO segmentation (polygons or RLE)
    result: SavedResult | None = None
    number: Any = None  # the box's number (its id in the app), saved as the record's id; as read, so
    # anything but a positive whole number used once gets a new one (``object_numbers``)


@dataclass
class SavedImage:
    path: Path
    size: tuple[int, int] | None  # (height, width); None when never read
    objects: list[SavedObject] = field(default_factory=list)
    image_id: int | str | None = None  # the source file's id; None: a new id is given on save


@dataclass
class Annotation:
    images: list[SavedImage]
    category_ids: dict[str, int]  # label -> COCO category id
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()  # 0-based pairs
    extra: dict = field(default_factory=dict)  # other keys under "hcviewer" (the recovery file's)
    heads: HeadScope = field(default_factory=HeadScope)


# ------------------------------------------------------------------------------------ masks
def encode_mask(mask: np.ndarray | MaskCrop | dict) -> dict:
    """COCO compressed RLE of a bool [H, W] mask or of a ``MaskCrop`` (only the crop's pixels
    are read: a large photo's masks are edited as crops), ``counts`` as str (JSON-ready). A mask
    already encoded (made in the background) is returned as it is."""
    if isinstance(mask, dict):
        return mask
    if isinstance(mask, MaskCrop):
        return rle_from_crop(mask)
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


# ------------------------------------------------------------------------------------ writing
def write_annotation(path: str | os.PathLike, annotation: Annotation, png_masks: bool = True) -> list[Path]:
    """Write the COCO JSON (and, with ``png_masks``, the PNG mask folder beside it). Returns
    what was written. Without ``png_masks`` (the autosave) no image header is read either:
    images never shown get size 0 x 0 (thousands of files are not opened every few seconds)."""
    path = Path(path)
    coco, pngs = to_coco(annotation, path.parent, read_sizes=png_masks)
    text = json.dumps(coco, default=_plain)
    if not png_masks:
        _write_json(path, text, f"the previous {path.name}, if any, is unchanged")
        return [path]
    folder = mask_folder(path)
    staged = _stage_mask_folder(path, folder, pngs)
    try:
        _write_json(path, text, f"nothing was saved: the previous {path.name} and {folder.name}/, if any, "
                                "are unchanged")
    except AnnotationWriteError:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    try:
        _replace_folder(staged, folder)
    except OSError as exc:
        shutil.rmtree(staged, ignore_errors=True)
        raise AnnotationWriteError(f"{path} was saved, but its mask folder {folder} could not be replaced "
                                   f"({_reason(exc)}): the PNGs there are from the previous save. The JSON "
                                   "holds every mask; save again to write the PNGs.") from None
    return [path, folder]


def _write_json(path: Path, text: str, kept: str) -> None:
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise AnnotationWriteError(f"Could not write {path} ({_reason(exc)}); {kept}. Choose a folder you can "
                                   "write to, or free disk space.") from None


def mask_folder(path: Path) -> Path:
    return path.with_name(f"{path.stem}_masks")


def to_coco(annotation: Annotation, folder: Path, read_sizes: bool = True) -> tuple[dict, dict[str, dict]]:
    """The COCO dict, and the masks (compressed RLE) of the PNGs by relative file name.
    ``read_sizes``: read the header of images with boxes whose size is unknown (never shown);
    others are written as 0 x 0."""
    images, annotations, pending, pngs = [], [], [], {}
    category_ids = dict(annotation.category_ids)
    image_ids = image_id_list(annotation.images)
    png_folders = unique_stems(annotation.images, image_ids)
    numbers = object_numbers(annotation.images)
    for image, image_id, png_folder, image_numbers in zip(annotation.images, image_ids, png_folders, numbers):
        images.append(_image_record(image, image_id, folder, read_sizes and bool(image.objects)))
        for obj, number in zip(image.objects, image_numbers):
            category_ids.setdefault(obj.label, max(category_ids.values(), default=0) + 1)
            if obj.mask_rle is None:
                pending.append({"id": number, **_pending_record(obj, image_id)})
                continue
            record = _object_record(obj, image_id, number, category_ids[obj.label], annotation)
            annotations.append(record)
            pngs[f"{png_folder}/{record['id']:05d}_{safe_name(obj.label)}.png"] = obj.mask_rle
    categories = [{"id": cid, "name": name} for name, cid in sorted(category_ids.items(), key=lambda kv: kv[1])]
    keypoint_ids = {record["category_id"] for record in annotations if "keypoints" in record}
    for category in categories:
        if category["id"] in keypoint_ids and annotation.keypoint_names:
            category["keypoints"] = list(annotation.keypoint_names)
            category["skeleton"] = [[a + 1, b + 1] for a, b in annotation.skeleton]  # COCO is 1-based
    coco = {"info": {"description": "hcviewer annotation"}, "images": images, "annotations": annotations,
            "categories": categories,
            "hcviewer": {"version": FORMAT_VERSION, "pending": pending, **annotation.extra,
                         "keypoint_visible_min_score": DEFAULT_KEYPOINT_THRESHOLD}}
    return coco, pngs


def image_id_list(images: list[SavedImage]) -> list[int | str]:
    """The source ids where there are (each once), new ids above them for the rest."""
    return _kept_ids([image.image_id for image in images])


def object_numbers(images: list[SavedImage]) -> list[list[int]]:
    """Each image's objects' numbers: the saved ones (positive whole numbers, each once), new
    numbers above them for the rest. Saved as the records' ids, so a box keeps its number."""
    kept = iter(_kept_ids([o.number if _whole(o.number) and o.number > 0 else None
                           for image in images for o in image.objects]))
    return [[next(kept) for _ in image.objects] for image in images]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kept_ids(given: list) -> list:
    """``given`` with each None or repeated id replaced by a new whole number above the others."""
    numbers = [i for i in given if _whole(i)]
    next_id, used, ids = max(numbers, default=0) + 1, set(), []
    for given_id in given:
        if given_id is None or given_id in used:
            given_id, next_id = next_id, next_id + 1
        used.add(given_id)
        ids.append(given_id)
    return ids


def unique_stems(images: list[SavedImage], image_ids: list) -> list[str]:
    """One file or folder name per image (the mask folder's, an export's): its stem made safe
    (a file name like ``x/..`` cannot reach outside), with its id when two images share a stem."""
    stems = [safe_name(Path(image.path).stem) for image in images]
    counts = {stem: stems.count(stem) for stem in set(stems)}
    return [stem if counts[stem] == 1 else f"{stem}-{safe_name(str(i))}" for stem, i in zip(stems, image_ids)]


def _image_record(image: SavedImage, image_id: int | str, folder: Path, read_size: bool) -> dict:
    if image.size is not None:
        height, width = image.size
    else:
        height, width = read_size_or_zero(image.path) if read_size else (0, 0)
    return {"id": image_id, "file_name": _relative_name(Path(image.path), folder), "height": height, "width": width}


def _object_record(obj: SavedObject, image_id: int | str, ann_id: int, category_id: int,
                   annotation: Annotation) -> dict:
    record = {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": obj.mask_rle,
              "area": rle_area(obj.mask_rle), "bbox": rle_bbox(obj.mask_rle), "iscrowd": 0,
              "hcviewer_box": _rounded(obj.xyxy), "score": obj.score}
    if obj.keypoints is not None and annotation.heads.keypoints_apply(obj.label):
        record.update(keypoint_fields(obj.keypoints))
    if obj.gt is not None:
        record["hcviewer_gt"] = obj.gt
    return record


def keypoint_fields(keypoints: np.ndarray) -> dict:
    """COCO ``keypoints`` (x, y, v: 2 when the score reaches ``DEFAULT_KEYPOINT_THRESHOLD``, else
    0 0 0), ``num_keypoints``, every score (``keypoint_scores``) and every point as the model
    placed it (``hcviewer_keypoints``, [x, y, score] each: reopening the file shows the points
    hidden in ``keypoints`` again) of [J, 3] (x, y, score) points.

    The rule is a constant, not the display's *Min. keypoint score*: what is saved must not
    depend on how the annotator chose to look at it (at 0.00 every point of every person was
    saved as visible). Nor a per-project setting: ``v`` = 2 should mean the same in every file
    the app writes, and the threshold belongs to the model's score scale (chosen on held-out
    people, docs/performance.md), not to a project; anyone needing another cut has every score."""
    points = np.asarray(keypoints, np.float64).reshape(-1, 3)
    visible = np.isfinite(points).all(axis=1) & (points[:, 2] >= DEFAULT_KEYPOINT_THRESHOLD)
    flat = []
    for (x, y, _), shown in zip(points, visible):
        flat += [round(float(x), 2), round(float(y), 2), 2] if shown else [0, 0, 0]
    scores = [round(float(s), 4) if math.isfinite(s) else 0.0 for s in points[:, 2]]
    placed = [[round(float(x), 2), round(float(y), 2), score] if math.isfinite(x) and math.isfinite(y)
              else [0.0, 0.0, 0.0] for (x, y, _), score in zip(points, scores)]
    return {"keypoints": flat, "num_keypoints": int(visible.sum()), "keypoint_scores": scores,
            "hcviewer_keypoints": placed}


def _pending_record(obj: SavedObject, image_id: int | str) -> dict:
    record = {"image_id": image_id, "box": _rounded(obj.xyxy), "label": obj.label, "score": obj.score,
              "rejected": obj.rejected}
    if obj.gt is not None:
        record["gt"] = obj.gt
    if obj.result is not None:
        record["result"] = _result_record(obj.result)
    return record


def _result_record(result: SavedResult) -> dict:
    record: dict[str, Any] = {"score": result.score}
    if result.figure_ground is not None:
        values = np.nan_to_num(np.asarray(result.figure_ground, np.float16))
        record["figure_ground"] = {"shape": list(values.shape), "float16_zlib_base64":
                                   base64.b64encode(zlib.compress(values.tobytes())).decode("ascii")}
    if result.mask_rle is not None:
        record["mask"] = result.mask_rle
    if result.keypoints is not None:
        record["keypoints"] = np.nan_to_num(np.asarray(result.keypoints, np.float64)).round(3).tolist()
    return record


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays (scores and sizes may come from the model as numpy)."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _rounded(xyxy) -> list[float]:
    return [round(float(v), 2) for v in xyxy]


def safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.") or "object"


def _relative_name(path: Path, folder: Path) -> str:
    """Relative to the annotation's folder (``../images/x.jpg`` when the images lie beside it);
    absolute only where no relative path exists (another drive)."""
    try:
        return Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix()
    except ValueError:
        return str(path.resolve())


def read_size_or_zero(path: Path) -> tuple[int, int]:
    """(height, width) as the image is shown (EXIF orientation applied) from the file's header;
    (0, 0) when unreadable (it is reported when shown)."""
    from hcviewer.imageio import ImageReadError, read_image_size

    try:
        return read_image_size(path)
    except ImageReadError:
        return 0, 0


def _reason(exc: OSError) -> str:
    return str(exc.strerror or exc)


def _folder_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _stage_mask_folder(path: Path, folder: Path, pngs: dict[str, dict]) -> Path:
    """Every mask (compressed RLE, decoded one at a time) as a PNG in a new hidden folder beside
    ``folder`` (with the usual permissions, as the JSON); on failure nothing is left and nothing
    else has changed."""
    temp = None
    try:
        temp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        os.chmod(temp, _folder_mode())  # mkdtemp makes 0700
        for name, rle in pngs.items():
            target = temp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            ok, png = cv2.imencode(".png", _png_pixels(rle), PNG_OPTIONS)
            if not ok:
                raise OSError(f"PNG encoding failed for {name}")
            target.write_bytes(png.tobytes())
    except OSError as exc:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise AnnotationWriteError(f"Could not write the mask PNGs into {folder} ({_reason(exc)}); nothing was "
                                   f"saved: the previous {path.name} and {folder.name}/, if any, are unchanged. "
                                   "Choose a folder you can write to, or free disk space.") from None
    return temp


def _png_pixels(rle: dict) -> np.ndarray:
    """uint8 [H, W], 255 inside the mask, made row by row from its crop (a full decode of a
    12000 x 9000 mask is column-major and took seconds to turn around)."""
    crop = crop_from_rle(rle)
    pixels = np.zeros(crop.image_size, np.uint8)
    x0, y0, x1, y1 = crop.xyxy
    pixels[y0:y1, x0:x1][crop.mask] = 255
    return pixels


def _replace_folder(staged: Path, folder: Path) -> None:
    """Swap the staged folder for the old one (renames only: no disk space needed)."""
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    had_old = folder.exists()
    if had_old:
        os.replace(folder, old)
    try:
        os.replace(staged, folder)
    except OSError:
        if had_old:
            os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
