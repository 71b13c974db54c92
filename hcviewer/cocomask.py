"""COCO ``segmentation`` fields (polygon lists, compressed or uncompressed RLE), checked before
pycocotools sees them: its C code trusts its input, so a crafted compressed RLE string corrupts
the heap and a polygon with far-away vertices allocates without bound. Shared by the training
readers (hcviewer.data) and the app's box and annotation files."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_COUNT_CHARACTERS = 6  # 30 bits per run length; more overflows pycocotools' int shift
POLYGON_OUTLINE_FACTOR = 1000  # outline length allowed per pixel of (height + width); see _polygon_problem


def segmentation_problem(segmentation: Any, size: tuple[int, int] | None = None) -> str | None:
    """Why a COCO segmentation cannot be decoded, as the end of a sentence ("has an odd number
    of polygon values"), or None. With ``size`` (height, width), also whether it fits that image.
    Polygons of fewer than 3 points beside proper ones are allowed (COCO has such zero-area
    pieces; decoding skips them); an object with none of at least 3 points is a problem."""
    if isinstance(segmentation, list):
        return _polygons_problem(segmentation, size)
    if isinstance(segmentation, dict) and {"size", "counts"} <= segmentation.keys():
        return _rle_problem(segmentation, size)
    return "is neither a polygon list [[x0, y0, x1, y1, ...], ...] nor an RLE {'size', 'counts'}"


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation as a bool [H, W] mask; ValueError saying what is wrong with it."""
    from pycocotools import mask as mask_utils

    problem = segmentation_problem(segmentation, (height, width))
    if problem is not None:
        raise ValueError(f"the segmentation {problem}")
    if isinstance(segmentation, list):
        polygons = [[float(v) for v in polygon] for polygon in segmentation if len(polygon) >= 6]
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": [height, width], "counts": counts if isinstance(counts, bytes) else counts.encode("ascii")}
    return np.ascontiguousarray(mask_utils.decode(rle), dtype=bool)


def _polygons_problem(polygons: list, size: tuple[int, int] | None) -> str | None:
    if not polygons:
        return "is an empty polygon list; a polygon needs at least 3 (x, y) points"
    for index, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or not all(_is_finite_number(v) for v in polygon):
            return f"polygon {index} is not a flat list of finite numbers [x0, y0, x1, y1, ...]"
        if len(polygon) % 2:
            return f"polygon {index} has an odd number of values ({len(polygon)}); it needs (x, y) pairs"
    if all(len(polygon) < 6 for polygon in polygons):
        return "has no polygon of at least 3 (x, y) points"
    return None if size is None else _outline_problem(polygons, size)


def _outline_problem(polygons: list, size: tuple[int, int]) -> str | None:
    """pycocotools draws each edge at 5x resolution into one buffer: bound the outline length
    (the larger of |dx| and |dy| per edge) to POLYGON_OUTLINE_FACTOR x (height + width)."""
    height, width = size
    limit = POLYGON_OUTLINE_FACTOR * (height + width)
    outline = 0.0
    for polygon in polygons:
        xs, ys = np.asarray(polygon[0::2], np.float64), np.asarray(polygon[1::2], np.float64)
        outline += float(np.maximum(np.abs(xs - np.roll(xs, 1)), np.abs(ys - np.roll(ys, 1))).sum())
    if outline > limit:
        return (f"has polygon outlines {outline:.3g} pixels long, far beyond a {width}x{height} image "
                f"(at most {limit}); its coordinates are not pixels of this image")
    return None


def _rle_problem(rle: dict, size: tuple[int, int] | None) -> str | None:
    shape = rle["size"]
    if not (isinstance(shape, list) and len(shape) == 2 and all(_is_count(v) and v > 0 for v in shape)):
        return f"has RLE 'size' {shape!r}; it must be [height, width]"
    if size is not None and tuple(shape) != tuple(size):
        return f"is an RLE for a {shape[1]}x{shape[0]} image, not this {size[1]}x{size[0]} one"
    counts = rle["counts"]
    if isinstance(counts, bytes):  # pycocotools' own encode gives bytes
        counts = counts.decode("latin-1")
    if isinstance(counts, list):
        runs = counts if all(_is_count(c) for c in counts) else None
    elif isinstance(counts, str):
        runs = _compressed_runs(counts)
    else:
        return f"has RLE 'counts' of type {type(counts).__name__}; it must be a string or a list of run lengths"
    if runs is None or sum(runs) != shape[0] * shape[1]:
        return (f"has RLE 'counts' that are not run lengths covering its {shape[1]}x{shape[0]} pixels; "
                "re-export the mask")
    return None


def _compressed_runs(text: str) -> list[int] | None:
    """The run lengths of COCO's compressed RLE string (pycocotools' rleFrString), None when the
    string is not one: characters outside '0'..'o', an unfinished value, a negative run."""
    runs: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text) or shift >= 5 * MAX_COUNT_CHARACTERS:
                return None
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift  # sign extension
        if len(runs) > 2:
            value += runs[-2]  # runs after the second are stored as differences
        if value < 0:
            return None
        runs.append(value)
    return runs


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
