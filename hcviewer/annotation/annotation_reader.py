"""Reading an annotation file (Qt-free): one written by ``annotation_file.write_annotation``, or
any COCO file with RLE or polygon masks. Every problem is an ``AnnotationError`` naming the file,
the record and the fix; sizes and masks a file claims are bounded before anything is allocated."""

from __future__ import annotations

import base64
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
from hcviewer.data.coco_json import (
    CocoAnnotation, CocoFileError, category_of, finite, image_of, read_coco_json, require,
)
from hcviewer.imageio import max_image_pixels


def read_annotation(path: str | os.PathLike) -> Annotation:
    """Load an annotation written by ``write_annotation`` (or any COCO file with RLE or polygon
    masks: its objects come back accepted). Image paths are relative to the file's folder."""
    try:
        return _Reader(Path(path)).read()
    except CocoFileError as exc:  # the shared COCO structure and number checks
        raise AnnotationError(str(exc)) from None


class _Reader:
    """One file's reading: every problem is an AnnotationError naming the file and the record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.real_sizes: dict[Path, tuple[int, int]] = {}
        self.max_pixels = max_image_pixels()  # no mask larger than an image hcviewer opens

    def fail(self, message: str) -> AnnotationError:
        return AnnotationError(f"{self.path}: {message}")

    def read(self) -> Annotation:
        coco = read_coco_json(self.path, optional=("annotations", "categories"))
        names = {category_id: str(c.fields["name"]) for category_id, c in coco.categories.items()}
        images: dict[Any, SavedImage] = {}
        for image_id, record in coco.images.items():
            image_path = self.path.parent / str(record.fields["file_name"])
            images[image_id] = SavedImage(image_path, self._claimed_size(record.where, record.fields, image_path),
                                          image_id=image_id)
        for ann in coco.annotations:
            if not coco.has_categories:  # unlike a box file's, an object here needs its category's name
                category_of(self.path, ann.where, ann.category_id, coco.categories)
            image = images[ann.image_id]
            image.objects.append(self._object(ann, names[ann.category_id], image))
        extra = dict(coco.data["hcviewer"]) if isinstance(coco.data.get("hcviewer"), dict) else {}
        pending = extra.get("pending", [])
        if not isinstance(pending, list):
            raise self.fail("'hcviewer.pending' must be a list; fix or remove it")
        for i, record in enumerate(pending):
            where = f"hcviewer.pending[{i}]"
            require(self.path, where, record, ("image_id", "box", "label"))
            image = images[image_of(self.path, where, record["image_id"], images)]
            image.objects.append(SavedObject(
                self._box(where, record["box"]), str(record["label"]), self._score(where, record.get("score")),
                rejected=bool(record.get("rejected", False)), gt=self._gt(where, record.get("gt")),
                result=self._result(where, record.get("result"), image), number=record.get("id")))
        for key in ("version", "pending", "keypoint_visible_min_score"):  # written again at every save
            extra.pop(key, None)
        keypoint_category = next((c.fields for c in coco.categories.values() if c.fields.get("keypoints")), {})
        return Annotation(list(images.values()), {name: cid for cid, name in names.items()},
                          tuple(str(n) for n in keypoint_category.get("keypoints", ())),
                          self._skeleton(keypoint_category.get("skeleton", ())), extra)

    def _score(self, where: str, value: Any) -> float | None:
        return None if value is None else finite(self.path, where, value, "score")

    def _claimed_size(self, where: str, record: dict, image_path: Path) -> tuple[int, int] | None:
        """(height, width) from the record; None when 0 x 0 (never read). A claim beyond
        the image reader's limit (``max_image_pixels``) is replaced by the image file's real size, or
        refused without it."""
        height, width = (finite(self.path, where, record.get(k) or 0, k) for k in ("height", "width"))
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
        x0, y0, x1, y1 = (finite(self.path, where, v, "a box value") for v in values)
        if not (x1 > x0 and y1 > y0):
            raise self.fail(f"{where}: box {values!r} is empty")
        return x0, y0, x1, y1

    def _skeleton(self, edges: Any) -> tuple[tuple[int, int], ...]:
        try:
            return tuple((int(a) - 1, int(b) - 1) for a, b in edges)
        except (TypeError, ValueError):
            raise self.fail(f"categories: a skeleton is a list of [a, b] keypoint numbers, not {edges!r}") from None

    # -- objects ---------------------------------------------------------------------------
    def _object(self, ann: CocoAnnotation, label: str, image: SavedImage) -> SavedObject:
        xyxy = self._box(ann.where, ann.fields["hcviewer_box"]) if "hcviewer_box" in ann.fields else ann.xyxy
        return SavedObject(xyxy, label, ann.score, self._mask(ann.where, ann.fields.get("segmentation"), image),
                           self._keypoints(ann), gt=self._gt(ann.where, ann.fields.get("hcviewer_gt")),
                           number=ann.fields.get("id"))

    def _keypoints(self, ann: CocoAnnotation) -> np.ndarray | None:
        """[J, 3] (x, y, score): every point as the model placed it where hcviewer saved them
        (``hcviewer_keypoints``); else from COCO's: the saved score where there is one, 1 for a
        labelled point; 0 for an unlabelled one (v = 0, saved at 0, 0)."""
        if ann.keypoints is None:
            return None
        points = np.array(ann.keypoints).reshape(-1, 3)
        if "hcviewer_keypoints" in ann.fields:
            placed = self._points(ann.where, ann.fields["hcviewer_keypoints"])
            if len(placed) != len(points):
                raise self.fail(f"{ann.where}: 'hcviewer_keypoints' has {len(placed)} points, 'keypoints' "
                                f"{len(points)}; remove 'hcviewer_keypoints'")
            return placed
        labelled = points[:, 2] > 0
        scores = ann.fields.get("keypoint_scores")
        if isinstance(scores, list) and len(scores) == len(points):
            score = np.array([finite(self.path, ann.where, s, "a keypoint score") for s in scores])
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
