"""Reading an annotation file (Qt-free): one written by ``annotation_file.write_annotation``, or
any COCO file with RLE or polygon masks. Every problem is an ``AnnotationError`` naming the file,
the record and the fix; sizes and masks a file claims are bounded before anything is allocated."""

from __future__ import annotations

import base64
import json
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from hcviewer.annotation.annotation_file import (
    MAX_RESULT_SIDE, Annotation, AnnotationError, SavedImage, SavedObject, SavedResult, encode_mask,
    read_size_or_zero,
)
from hcviewer.cocomask import decode_segmentation
from hcviewer.fileio import loads_json, read_input_text
from hcviewer.imageio import max_image_pixels
from hcviewer.input_checks import category_id_problem


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
            self.real_sizes[image_path] = read_size_or_zero(image_path)
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
