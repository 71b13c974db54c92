"""Saving and loading the annotation (Qt-free).

An annotation is a COCO JSON file: every accepted object is an annotation with its mask as
compressed RLE (pycocotools), its box and, for the categories the keypoint head applies to
(``HeadScope``), its keypoints (``v`` = 2 when the keypoint's score reaches the threshold, else
0 with x = y = 0; every score kept in ``keypoint_scores``). What COCO has no place for goes
where COCO readers ignore it, so that loading the file continues the work where it stopped:

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

from hcviewer.app.head_scope import DEFAULT_KEYPOINT_THRESHOLD, HeadScope
from hcviewer.app.mask_crops import MaskCrop, crop_from_rle, rle_area, rle_bbox, rle_from_crop
from hcviewer.fileio import loads_json, read_input_text, write_text_atomic
from hcviewer.imageio import max_image_pixels
from hcviewer.input_checks import category_id_problem

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
    keypoint_threshold: float = DEFAULT_KEYPOINT_THRESHOLD


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
    for image, image_id, png_folder in zip(annotation.images, image_ids, png_folders):
        images.append(_image_record(image, image_id, folder, read_sizes and bool(image.objects)))
        for obj in image.objects:
            category_ids.setdefault(obj.label, max(category_ids.values(), default=0) + 1)
            if obj.mask_rle is None:
                pending.append(_pending_record(obj, image_id))
                continue
            record = _object_record(obj, image_id, len(annotations) + 1, category_ids[obj.label], annotation)
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
            "hcviewer": {"version": FORMAT_VERSION, "pending": pending, **annotation.extra}}
    return coco, pngs


def image_id_list(images: list[SavedImage]) -> list[int | str]:
    """The source ids where there are (each once), new ids above them for the rest."""
    given = [image.image_id for image in images]
    numbers = [i for i in given if isinstance(i, int) and not isinstance(i, bool)]
    next_id, used, ids = max(numbers, default=0) + 1, set(), []
    for image_id in given:
        if image_id is None or image_id in used:
            image_id, next_id = next_id, next_id + 1
        used.add(image_id)
        ids.append(image_id)
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
        height, width = _read_size(image.path) if read_size else (0, 0)
    return {"id": image_id, "file_name": _relative_name(Path(image.path), folder), "height": height, "width": width}


def _object_record(obj: SavedObject, image_id: int | str, ann_id: int, category_id: int,
                   annotation: Annotation) -> dict:
    record = {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": obj.mask_rle,
              "area": rle_area(obj.mask_rle), "bbox": rle_bbox(obj.mask_rle), "iscrowd": 0,
              "hcviewer_box": _rounded(obj.xyxy), "score": obj.score}
    if obj.keypoints is not None and annotation.heads.keypoints_apply(obj.label):
        record.update(keypoint_fields(obj.keypoints, annotation.keypoint_threshold))
    if obj.gt is not None:
        record["hcviewer_gt"] = obj.gt
    return record


def keypoint_fields(keypoints: np.ndarray, threshold: float) -> dict:
    """COCO ``keypoints`` (x, y, v: 2 when the score reaches ``threshold``, else 0 0 0),
    ``num_keypoints`` and every score (``keypoint_scores``) of [J, 3] (x, y, score) points."""
    points = np.asarray(keypoints, np.float64).reshape(-1, 3)
    visible = np.isfinite(points).all(axis=1) & (points[:, 2] >= threshold)
    flat = []
    for (x, y, _), shown in zip(points, visible):
        flat += [round(float(x), 2), round(float(y), 2), 2] if shown else [0, 0, 0]
    scores = [round(float(s), 4) if math.isfinite(s) else 0.0 for s in points[:, 2]]
    return {"keypoints": flat, "num_keypoints": int(visible.sum()), "keypoint_scores": scores}


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


def _read_size(path: Path) -> tuple[int, int]:
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


# ------------------------------------------------------------------------------------ reading
def read_annotation(path: str | os.PathLike) -> Annotation:
    """Load an annotation written by ``write_annotation`` (or any COCO file with RLE or polygon
    masks: its objects come back accepted). Image paths are relative to the file's folder."""
    return _Reader(Path(path)).read()


class _Reader:
    """One file's reading: every problem is an AnnotationError naming the file and the record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.real_sizes: dict[Path, tuple[int, int]] = {}
        self.max_pixels = max_image_pixels()  # no mask larger than an image hcviewer opens

    def fail(self, message: str) -> AnnotationError:
        return AnnotationError(f"{self.path}: {message}")

    def read(self) -> Annotation:
        coco = self._load_json()
        categories = {}
        for i, record in enumerate(self._list(coco, "categories")):
            self._need(f"categories[{i}]", record, ("id",))
            categories[self._category_id(f"categories[{i}]", record["id"])] = record
        names = {cid: str(c.get("name", cid)) for cid, c in categories.items()}
        images: dict[Any, SavedImage] = {}
        for i, record in enumerate(self._list(coco, "images")):
            self._need(f"images[{i}]", record, ("id", "file_name"))
            image_id = self._key(f"images[{i}]", record["id"])
            if image_id in images:
                raise self.fail(f"images[{i}]: image id {image_id!r} is used twice (also for {images[image_id].path.name}); "
                                "give each image its own id")
            image_path = self.path.parent / str(record["file_name"])
            images[image_id] = SavedImage(image_path, self._claimed_size(f"images[{i}]", record, image_path),
                                          image_id=image_id)
        for i, record in enumerate(self._list(coco, "annotations")):
            where = f"annotations[{i}] (id {record.get('id', '?')})" if isinstance(record, dict) else f"annotations[{i}]"
            self._need(where, record, ("image_id", "category_id", "bbox"))
            image = self._image_of(where, images, record["image_id"])
            image.objects.append(self._object(where, record, names, image))
        extra = dict(coco["hcviewer"]) if isinstance(coco.get("hcviewer"), dict) else {}
        for i, record in enumerate(self._list(extra, "pending")):
            where = f"hcviewer.pending[{i}]"
            self._need(where, record, ("image_id", "box", "label"))
            image = self._image_of(where, images, record["image_id"])
            image.objects.append(SavedObject(
                self._box(where, record["box"]), str(record["label"]), self._score(where, record.get("score")),
                rejected=bool(record.get("rejected", False)), gt=self._gt(where, record.get("gt")),
                result=self._result(where, record.get("result"), image)))
        for key in ("version", "pending"):
            extra.pop(key, None)
        keypoint_category = next((c for c in categories.values() if c.get("keypoints")), {})
        return Annotation(list(images.values()), {name: cid for cid, name in names.items()},
                          tuple(str(n) for n in keypoint_category.get("keypoints", ())),
                          self._skeleton(keypoint_category.get("skeleton", ())), extra)

    # -- the file --------------------------------------------------------------------------
    def _load_json(self) -> dict:
        try:
            coco = loads_json(read_input_text(self.path))
        except FileNotFoundError:
            raise self.fail("no such file; check the path") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise self.fail(f"cannot be read ({exc}); check the path and permissions") from None
        except json.JSONDecodeError as exc:
            raise self.fail(f"not valid JSON ({exc.msg} at line {exc.lineno}); "
                            "choose an annotation saved by hcviewer or a COCO file") from None
        except RecursionError:
            raise self.fail("nested too deeply to be an annotation; choose an annotation saved by "
                            "hcviewer or a COCO file") from None
        if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
            raise self.fail("not a COCO annotation (no 'images' list); choose an annotation saved "
                            "by hcviewer or a COCO file")
        return coco

    def _list(self, data: dict, key: str) -> list:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise self.fail(f"'{key}' must be a list")
        return value

    def _need(self, where: str, record: Any, keys: tuple[str, ...]) -> None:
        if not isinstance(record, dict):
            raise self.fail(f"{where} is not an object")
        missing = [k for k in keys if k not in record]
        if missing:
            raise self.fail(f"{where} has no {', '.join(repr(k) for k in missing)}")

    def _key(self, where: str, value: Any) -> int | str:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.fail(f"{where}: an id is a number or a string, not {value!r}")
        return value

    def _category_id(self, where: str, value: Any) -> int:
        problem = category_id_problem(value)
        if problem is not None:
            raise self.fail(f"{where}: the id {problem}; fix the record")
        return value

    def _image_of(self, where: str, images: dict[Any, SavedImage], image_id: Any) -> SavedImage:
        if not isinstance(image_id, (int, str)) or image_id not in images:
            raise self.fail(f"{where} refers to image id {image_id!r}, which 'images' does not list")
        return images[image_id]

    def _number(self, where: str, value: Any, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(f"{where}: {what} must be a finite number, not {value!r}")
        return float(value)

    def _score(self, where: str, value: Any) -> float | None:
        return None if value is None else self._number(where, value, "score")

    def _claimed_size(self, where: str, record: dict, image_path: Path) -> tuple[int, int] | None:
        """(height, width) from the record; None when 0 x 0 (never read). A claim beyond
        the image reader's limit (``max_image_pixels``) is replaced by the image file's real size, or
        refused without it."""
        height, width = (self._number(where, record.get(k) or 0, k) for k in ("height", "width"))
        if height >= 0 and width >= 0 and height * width <= self.max_pixels:
            return (int(height), int(width)) if min(height, width) > 0 else None
        real = self._real_size(image_path)
        if min(real) > 0:
            return real
        raise self.fail(f"{where}: height {height:g} x width {width:g} is not an image size hcviewer opens "
                        f"(at most {self.max_pixels} pixels) and {image_path} cannot be read for its real size; "
                        "fix the record")

    def _real_size(self, image_path: Path) -> tuple[int, int]:
        """The image file's (height, width) from its header, (0, 0) when unreadable; read once."""
        if image_path not in self.real_sizes:
            self.real_sizes[image_path] = _read_size(image_path)
        return self.real_sizes[image_path]

    def _box(self, where: str, values: Any) -> tuple[float, float, float, float]:
        if not isinstance(values, (list, tuple)) or len(values) != 4:
            raise self.fail(f"{where}: a box is four numbers x0, y0, x1, y1, not {values!r}")
        x0, y0, x1, y1 = (self._number(where, v, "a box value") for v in values)
        if not (x1 > x0 and y1 > y0):
            raise self.fail(f"{where}: box {values!r} is empty")
        return x0, y0, x1, y1

    def _skeleton(self, edges: Any) -> tuple[tuple[int, int], ...]:
        try:
            return tuple((int(a) - 1, int(b) - 1) for a, b in edges)
        except (TypeError, ValueError):
            raise self.fail(f"categories: a skeleton is a list of [a, b] keypoint numbers, not {edges!r}") from None

    # -- objects ---------------------------------------------------------------------------
    def _object(self, where: str, record: dict, names: dict, image: SavedImage) -> SavedObject:
        if "hcviewer_box" in record:
            xyxy = self._box(where, record["hcviewer_box"])
        else:
            bbox = record["bbox"]
            if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                raise self.fail(f"{where}: bbox is [x, y, width, height], not {bbox!r}")
            x, y, w, h = (self._number(where, v, "a bbox value") for v in bbox)
            xyxy = self._box(where, (x, y, x + w, y + h))
        category_id = record["category_id"]
        label = names.get(category_id) if isinstance(category_id, (int, str)) else None
        if label is None:
            raise self.fail(f"{where}: category_id {category_id!r} is not in 'categories'")
        return SavedObject(xyxy, label, self._score(where, record.get("score")),
                           self._mask(where, record.get("segmentation"), image),
                           self._keypoints(where, record), gt=self._gt(where, record.get("hcviewer_gt")))

    def _keypoints(self, where: str, record: dict) -> np.ndarray | None:
        """[J, 3] (x, y, score): the saved score where there is one, 1 for a labelled COCO
        point; 0 for an unlabelled one (v = 0, saved at 0, 0)."""
        values = record.get("keypoints")
        if not values:
            return None
        if not isinstance(values, list) or len(values) % 3:
            raise self.fail(f"{where}: keypoints are a flat list [x, y, v] * J")
        points = np.array([self._number(where, v, "a keypoint value") for v in values]).reshape(-1, 3)
        labelled = points[:, 2] > 0
        scores = record.get("keypoint_scores")
        if isinstance(scores, list) and len(scores) == len(points):
            score = np.array([self._number(where, s, "a keypoint score") for s in scores])
        else:
            score = np.ones(len(points))
        return np.column_stack([points[:, :2], np.where(labelled, score, 0.0)])

    def _mask(self, where: str, segmentation: Any, image: SavedImage) -> dict | None:
        """The segmentation as compressed RLE with str counts (None when the record has none)."""
        if not segmentation:
            return None
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
            rle = self._rle(where, segmentation)
            if image.size is not None and tuple(rle["size"]) != image.size:
                raise self.fail(f"{where}: mask size {rle['size']} differs from the image's "
                                f"{list(image.size)} (height, width)")
            image.size = image.size or tuple(rle["size"])
            return rle
        from hcviewer.app.boxfiles import decode_segmentation

        try:
            return encode_mask(decode_segmentation(segmentation, *self._decode_size(where, image)))
        except (ValueError, TypeError) as exc:
            raise self.fail(f"{where}: {exc}") from None

    def _rle(self, where: str, rle: dict) -> dict:
        size = rle.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s >= 0 for s in size)
                and size[0] * size[1] <= self.max_pixels and rle["counts"].isascii()):
            raise self.fail(f"{where}: an RLE mask has 'size' [height, width] (at most {self.max_pixels} pixels) "
                            "and ASCII 'counts'; fix the record")
        return {"size": list(size), "counts": rle["counts"]}

    def _decode_size(self, where: str, image: SavedImage) -> tuple[int, int]:
        """The size to draw a polygon at: the image file's own when it can be read (a file's
        claim is not trusted), else the claimed one (bounded when read)."""
        real = self._real_size(image.path)
        if min(real) > 0:
            image.size = real
        if image.size is None:
            raise self.fail(f"{where}: a polygon or uncompressed mask needs the image's 'height' and "
                            "'width' in 'images' (or the image file beside the annotation)")
        return image.size

    def _gt(self, where: str, segmentation: Any) -> Any:
        """A source file's ground truth, kept as it is (decoded, at the real size, when shown)."""
        if segmentation is None:
            return None
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), str):
            return self._rle(f"{where} ground truth", segmentation)
        if isinstance(segmentation, list) and all(
                isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and
                all(isinstance(v, (int, float)) and math.isfinite(v) for v in p) for p in segmentation):
            return segmentation
        raise self.fail(f"{where}: the ground truth is a COCO polygon list or an RLE {{'size', 'counts'}}")

    def _result(self, where: str, record: Any, image: SavedImage) -> SavedResult | None:
        if record is None:
            return None
        if not isinstance(record, dict):
            raise self.fail(f"{where}: 'result' is not an object")
        where = f"{where}.result"
        mask = record.get("mask")
        return SavedResult(self._box_map(where, record.get("figure_ground")),
                           None if mask is None else self._mask(where, mask, image),
                           self._points(where, record.get("keypoints")), self._score(where, record.get("score")))

    def _box_map(self, where: str, record: Any) -> np.ndarray | None:
        if record is None:
            return None
        try:
            shape = tuple(int(s) for s in record["shape"])
            if len(shape) != 2 or not all(0 < s <= MAX_RESULT_SIDE for s in shape):
                raise ValueError(f"shape {list(shape)}")
            expected = 2 * shape[0] * shape[1]  # float16 bytes; a longer stream is refused unread
            data = zlib.decompressobj().decompress(
                base64.b64decode(record["float16_zlib_base64"], validate=True), expected + 1)
            values = np.frombuffer(data, np.float16).reshape(shape)
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise self.fail(f"{where}: figure_ground is not a saved S x S result ({exc}); remove it") from None
        return np.clip(values.astype(np.float32), 0, 1)

    def _points(self, where: str, values: Any) -> np.ndarray | None:
        if values is None:
            return None
        try:
            points = np.array(values, np.float64)
        except (TypeError, ValueError):
            points = np.empty(0)
        if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
            raise self.fail(f"{where}: keypoints are a list of finite [x, y, score]")
        return points
