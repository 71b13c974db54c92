"""Masks as their bounding-box crop (Qt-free): a 12000 x 9000 photo makes every full-image
mask 108 MB, and decoding, pasting, painting or re-encoding one on the GUI thread froze the
window for seconds. A ``MaskCrop`` holds only the pixels between the mask's first and last row
and column; conversions to and from COCO's compressed RLE (the document's and the file's form)
touch only the crop's columns, never the whole image.

COCO RLE runs over the image in column-major order, alternating 0- and 1-runs and starting with
0s. Its compressed string stores each run length as 5-bit groups in characters 48..111, the
sixth bit marking "more groups follow"; from the fourth run on, each is stored as the difference
from the run two before (pycocotools' ``rleToString`` / ``rleFrString``).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

MAX_EXACT_PIXELS = 1_000_000  # IoU over a larger region is computed on a grid of about this many pixels
CACHE_BYTES = 256 * 2**20  # decoded crops kept (a large photo's object: ~20 MB each)
_CACHE: OrderedDict[tuple[str, int, int], "MaskCrop"] = OrderedDict()
_REDUCED: "weakref.WeakKeyDictionary[MaskCrop, np.ndarray]" = weakref.WeakKeyDictionary()  # display copies
_CACHE_LOCK = threading.Lock()  # the GUI thread, the image loader and a background save decode crops


@dataclass(frozen=True, eq=False)
class MaskCrop:
    """The pixels ``[y0:y0 + h, x0:x0 + w]`` of a bool mask of an image of ``image_size``
    (height, width); nothing outside them is set. ``mask`` is bool [h, w] (may be 0 x 0)."""

    x0: int
    y0: int
    mask: np.ndarray
    image_size: tuple[int, int]

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        h, w = self.mask.shape
        return self.x0, self.y0, self.x0 + w, self.y0 + h

    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def region(self, x0: int, y0: int, x1: int, y1: int, step: int = 1) -> np.ndarray:
        """bool [ceil((y1 - y0) / step), ceil((x1 - x0) / step)]: the mask at image pixels
        (x0 + j * step, y0 + i * step) (False outside the crop)."""
        out = np.zeros((max(0, -(-(y1 - y0) // step)), max(0, -(-(x1 - x0) // step))), bool)
        cx0, cy0, cx1, cy1 = self.xyxy
        rows, cols = _sampled(y0, cy0, cy1, step, out.shape[0]), _sampled(x0, cx0, cx1, step, out.shape[1])
        if rows is not None and cols is not None:
            (r0, r1, first_row), (c0, c1, first_col) = rows, cols
            out[r0:r1, c0:c1] = self.mask[first_row::step, first_col::step][:r1 - r0, :c1 - c0]
        return out

    def full(self) -> np.ndarray:
        """bool [H, W]: the whole image's mask (large: only for files and tests)."""
        height, width = self.image_size
        return self.region(0, 0, width, height)


def _sampled(start: int, lo: int, hi: int, step: int, count: int) -> tuple[int, int, int] | None:
    """Of the samples start + k * step (k < count), those in [lo, hi): (first k, end k, the first
    one's offset from lo); None when there are none."""
    k0 = max(0, -(-(lo - start) // step))
    k1 = min(count, -(-(hi - start) // step))
    return (k0, k1, start + k0 * step - lo) if k1 > k0 else None


def crop_mask(mask: np.ndarray, x0: int = 0, y0: int = 0, image_size: tuple[int, int] | None = None) -> MaskCrop:
    """A bool [h, w] mask placed at (x0, y0) of an image of ``image_size`` (default: the mask
    is the whole image), trimmed to its set pixels."""
    mask = np.asarray(mask, bool)
    size = tuple(image_size) if image_size is not None else mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return MaskCrop(0, 0, np.zeros((0, 0), bool), size)
    trimmed = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return MaskCrop(x0 + int(cols[0]), y0 + int(rows[0]), trimmed, size)


def as_crop(mask: "np.ndarray | MaskCrop") -> MaskCrop:
    """A crop as it is; a bool [H, W] mask trimmed to its set pixels."""
    return mask if isinstance(mask, MaskCrop) else crop_mask(mask)


# ------------------------------------------------------------------------------------ RLE
def counts_from_string(text: str) -> np.ndarray:
    """Run lengths (int64) of a COCO compressed RLE string (pycocotools' ``rleFrString``);
    ValueError for characters outside its alphabet or negative runs (a crafted string)."""
    chars = np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int64) - 48
    if len(chars) and (chars.min() < 0 or chars.max() > 63 or chars[-1] & 0x20):
        raise ValueError("the RLE counts string is not COCO's compressed RLE")
    if len(chars) == 0:
        return np.zeros(0, np.int64)
    last = (chars & 0x20) == 0  # the last character of each run's group
    group = np.concatenate([[0], np.cumsum(last)[:-1]])  # run index of each character
    starts = np.concatenate([[0], np.flatnonzero(last)[:-1] + 1])
    position = np.arange(len(chars)) - starts[group]  # 5-bit group index within its run
    values = np.zeros(int(last.sum()), np.int64)
    np.add.at(values, group, (chars & 0x1F) << (5 * position))
    ends = np.flatnonzero(last)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * (position[ends][negative] + 1))  # sign extension
    counts = values.copy()  # from the fourth run on, each is stored as a difference to the run two before
    counts[1::2] = np.cumsum(values[1::2])
    counts[2::2] = np.cumsum(values[2::2])
    if (counts < 0).any():
        raise ValueError("the RLE counts string has negative run lengths")
    return counts


def string_from_counts(counts: np.ndarray, image_size: tuple[int, int]) -> str:
    """The compressed RLE string of run lengths (pycocotools' ``rleToString``)."""
    height, width = image_size
    rle = mask_utils.frPyObjects({"counts": [int(c) for c in counts], "size": [height, width]}, height, width)
    return rle["counts"].decode("ascii")


def crop_from_rle(rle: dict) -> MaskCrop:
    """The crop of a compressed RLE mask ``{"size": [H, W], "counts": str}``; recently decoded
    crops are cached (drawn again on every redraw, undo and redo), up to ``CACHE_BYTES``."""
    height, width = (int(v) for v in rle["size"])
    key = (rle["counts"], height, width)
    with _CACHE_LOCK:
        crop = _CACHE.pop(key, None)
    if crop is None:
        crop = _decode_crop(*key)  # outside the lock: another thread's cached crops stay at hand
    with _CACHE_LOCK:
        _CACHE[key] = crop  # most recent last
        total = sum(c.mask.nbytes for c in _CACHE.values())
        while total > CACHE_BYTES and len(_CACHE) > 1:
            total -= _CACHE.pop(next(iter(_CACHE))).mask.nbytes
    return crop


def remember_crop(crop: MaskCrop, rle: dict) -> None:
    """Put a crop made elsewhere (with its RLE) in the cache: drawing it decodes nothing."""
    with _CACHE_LOCK:
        _CACHE[(rle["counts"], *(int(v) for v in rle["size"]))] = crop


def _decode_crop(counts: str, height: int, width: int) -> MaskCrop:
    runs = counts_from_string(counts)
    ends = np.minimum(np.cumsum(runs), height * width)
    starts = ends - np.minimum(runs, ends)
    first, last = starts[1::2], ends[1::2]  # the 1-runs, column-major [start, end)
    keep = last > first
    first, last = first[keep], last[keep]
    if len(first) == 0:
        return MaskCrop(0, 0, np.zeros((0, 0), bool), (height, width))
    # Each run as pieces of one column each: (column, first row, end row).
    first_col, last_col = first // height, (last - 1) // height
    pieces = last_col - first_col + 1
    run = np.repeat(np.arange(len(first)), pieces)
    step = np.arange(len(run)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    col = first_col[run] + step
    row0 = np.where(step == 0, first[run] - col * height, 0)
    row1 = np.where(step == pieces[run] - 1, last[run] - col * height, height)
    x0, y0, x1, y1 = int(col.min()), int(row0.min()), int(col.max()) + 1, int(row1.max())
    edges = np.zeros((y1 - y0 + 1, x1 - x0), np.int8)  # +1 where a piece starts, -1 below its end
    np.add.at(edges, (row0 - y0, col - x0), 1)
    np.add.at(edges, (row1 - y0, col - x0), -1)
    mask = np.empty((y1 - y0, x1 - x0), bool)
    inside = np.zeros(x1 - x0, np.int8)
    for row, change in enumerate(edges[:-1]):  # a running sum down the rows (numpy's cumsum along
        inside += change                         # axis 0 walks column by column: 30x slower)
        mask[row] = inside
    mask.flags.writeable = False  # shared by every caller: edits must copy
    return MaskCrop(x0, y0, mask, (height, width))


def rle_from_crop(crop: MaskCrop) -> dict:
    """COCO compressed RLE (str counts) of a crop, computed from the crop's pixels only."""
    height, width = crop.image_size
    h, w = crop.mask.shape
    padded = np.zeros((h + 2, w), np.int8)
    padded[1:-1] = crop.mask
    change = np.diff(padded, axis=0)  # [h + 1, w]: +1 where a run of 1s starts down a column, -1 where it ends
    where = np.flatnonzero(change != 0)  # flatnonzero of a bool array: 10x faster than nonzero in 2-D
    row, col = np.divmod(where, w)
    linear = (crop.x0 + col) * height + crop.y0 + row  # column-major, as COCO counts
    rising = change.ravel()[where] == 1
    starts, ends = np.sort(linear[rising]), np.sort(linear[~rising])
    if len(starts):
        joined = ends[:-1] == starts[1:]  # a run that goes on at the top of the next column
        starts = starts[np.concatenate([[True], ~joined])]
        ends = ends[np.concatenate([~joined, [True]])]
    edges = np.empty(2 * len(starts) + 2, np.int64)
    edges[0], edges[-1] = 0, height * width
    edges[1:-1:2], edges[2:-1:2] = starts, ends
    counts = np.diff(edges)
    if len(counts) > 1 and counts[-1] == 0:
        counts = counts[:-1]  # pycocotools writes no empty run after a mask that reaches the last pixel
    return {"size": [height, width], "counts": string_from_counts(counts, (height, width))}


def rle_area(rle: dict) -> int:
    """Pixels of a compressed RLE mask, without decoding it."""
    return int(mask_utils.area(_bytes_rle(rle)))


def rle_bbox(rle: dict) -> list[float]:
    """COCO [x, y, w, h] of a compressed RLE mask, without decoding it."""
    return [float(v) for v in mask_utils.toBbox(_bytes_rle(rle))]


def _bytes_rle(rle: dict) -> dict:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


# ------------------------------------------------------------------------------------ sources
def crop_from_segmentation(segmentation: Any, height: int, width: int) -> MaskCrop:
    """A COCO segmentation (polygons, compressed or uncompressed RLE) of an image of
    (height, width) as a crop; polygons are drawn over their bounding box only (the same
    pixels as drawn over the whole image). ValueError saying what is wrong with it."""
    from hcviewer.cocomask import segmentation_problem

    problem = segmentation_problem(segmentation, (height, width))
    if problem is not None:
        raise ValueError(f"the segmentation {problem}")
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        if isinstance(counts, list):
            counts = mask_utils.frPyObjects(segmentation, height, width)["counts"]
        text = counts.decode("ascii") if isinstance(counts, bytes) else counts
        return crop_from_rle({"size": [height, width], "counts": text})
    polygons = [np.asarray(p, np.float64).reshape(-1, 2) for p in segmentation if len(p) >= 6]
    points = np.concatenate(polygons)
    x0, y0 = (max(0, int(np.floor(v)) - 1) for v in points.min(axis=0))
    x1, y1 = min(width, int(np.ceil(points[:, 0].max())) + 2), min(height, int(np.ceil(points[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return MaskCrop(0, 0, np.zeros((0, 0), bool), (height, width))
    shifted = [(p - [x0, y0]).reshape(-1).tolist() for p in polygons]
    rle = mask_utils.merge(mask_utils.frPyObjects(shifted, y1 - y0, x1 - x0))
    local = _decode_crop(rle["counts"].decode("ascii"), y1 - y0, x1 - x0)  # row-major, unlike mask_utils.decode
    return MaskCrop(x0 + local.x0, y0 + local.y0, local.mask, (height, width))


def box_map_crop(box_map: np.ndarray, box: np.ndarray, image_size: tuple[int, int], threshold: float) -> MaskCrop:
    """An S x S box map (foreground probability) drawn into its box, thresholded, over the box's
    pixels only: the pixels that ``paste_heatmap(box_map, box, image_size) >= threshold`` sets."""
    from hcviewer.paste import paste_heatmap_region  # torch: once a model is loaded

    region = paste_heatmap_region(_tensor(box_map), box, tuple(image_size))
    if region is None:
        return MaskCrop(0, 0, np.zeros((0, 0), bool), tuple(image_size))
    values, (left, top) = region
    return crop_mask(values[0].numpy() >= threshold, left, top, tuple(image_size))


def box_map_iou(box_map: np.ndarray, box: np.ndarray, threshold: float, gt: MaskCrop) -> float:
    """IoU against the ground truth of a model's result: the mask that ``box_map_crop`` draws
    (and Accept keeps) from the box map at ``threshold``. The one IoU of a prediction: the result
    panel and the compare view pass the same map (edge-refined when the display refines), box
    and threshold. Counted as ``crop_iou`` counts it."""
    from hcviewer.paste import box_pixel_range

    height, width = gt.image_size
    (left, right), (top, bottom) = box_pixel_range(box[0], box[2], width), box_pixel_range(box[1], box[3], height)
    extent = (left, top, right, bottom) if right > left and bottom > top else None
    return _grid_iou(extent, lambda x0, y0, x1, y1, step: box_map_pixels(
        box_map, box, threshold, np.arange(x0, x1, step), np.arange(y0, y1, step), gt.image_size), gt)


def crop_iou(mask: MaskCrop, gt: MaskCrop) -> float:
    """IoU against the ground truth of a mask (an accepted, maybe brush-edited one), counted as
    ``box_map_iou`` counts a prediction's."""
    return _grid_iou(mask.xyxy if mask.mask.size else None, mask.region, gt)


def box_map_pixels(box_map: np.ndarray, box: np.ndarray, threshold: float, xs: np.ndarray, ys: np.ndarray,
                   image_size: tuple[int, int]) -> np.ndarray:
    """bool [len(ys), len(xs)]: whether each image pixel of columns ``xs`` by rows ``ys`` is in
    the mask ``box_map_crop`` draws (nothing outside the box's pixels, as pasted)."""
    from hcviewer.paste import box_pixel_range, sample_heatmap

    height, width = image_size
    (left, right), (top, bottom) = box_pixel_range(box[0], box[2], width), box_pixel_range(box[1], box[3], height)
    xs, ys = np.asarray(xs), np.asarray(ys)
    if not (right > left and bottom > top) or not (len(xs) and len(ys)):
        return np.zeros((len(ys), len(xs)), bool)
    inside = sample_heatmap(_tensor(box_map), box, xs, ys)[0].numpy() >= threshold
    return inside & ((ys >= top) & (ys < bottom))[:, None] & ((xs >= left) & (xs < right))[None, :]


def _grid_iou(extent: tuple[int, int, int, int] | None, pixels, gt: MaskCrop) -> float:
    """IoU of a mask within ``extent`` (None: empty), whose pixels ``pixels(x0, y0, x1, y1, step)``
    gives as ``MaskCrop.region`` does, and the ground truth, over the union of both extents; over a region of more than
    ``MAX_EXACT_PIXELS`` both are sampled on a grid of about that many pixels (a large photo's
    box: exact to about 0.001, without drawing millions of pixels)."""
    boxes = ([extent] if extent is not None else []) + ([gt.xyxy] if gt.mask.size else [])
    if not boxes:
        return 1.0
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    step = max(1, int(np.ceil(np.sqrt((x1 - x0) * (y1 - y0) / MAX_EXACT_PIXELS))))
    truth = gt.region(x0, y0, x1, y1, step)
    predicted = pixels(x0, y0, x1, y1, step) if extent is not None else np.zeros_like(truth)
    union = np.count_nonzero(predicted | truth)
    return float(np.count_nonzero(predicted & truth) / union) if union else 1.0


def _tensor(box_map: np.ndarray):
    """An [S, S] box map as the [1, S, S] float32 tensor the paste-back takes."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(box_map, np.float32))[None]


# ------------------------------------------------------------------------------------ drawing
def compose_crops(crops: list[MaskCrop], colors: list[tuple[int, int, int]], opacity: float,
                  max_side: int) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The crops in their colours (later ones on top) as one uint8 RGBA [h, w, 4] over the
    union of their boxes, reduced so that the whole image would be at most ``max_side`` long;
    returns it and the image rectangle (x0, y0, x1, y1) it covers, or None when all are empty."""
    drawn = [(c, color) for c, color in zip(crops, colors) if c.mask.size]
    if not drawn:
        return None
    height, width = drawn[0][0].image_size
    scale = min(1.0, max_side / max(height, width))
    color_table = np.zeros((min(len(drawn), 255) + 1, 4), np.uint8)  # index 0: transparent; 255 colours at most
    x0, y0 = min(c.x0 for c, _ in drawn), min(c.y0 for c, _ in drawn)
    x1, y1 = max(c.xyxy[2] for c, _ in drawn), max(c.xyxy[3] for c, _ in drawn)
    index = np.zeros((max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale))), np.uint8)
    for number, (crop, color) in enumerate(drawn, start=1):
        cx0, cy0, cx1, cy1 = crop.xyxy
        left, top = round((cx0 - x0) * scale), round((cy0 - y0) * scale)
        right, bottom = max(left + 1, round((cx1 - x0) * scale)), max(top + 1, round((cy1 - y0) * scale))
        mask = _reduced(crop, (right - left, bottom - top))
        np.copyto(index[top:bottom, left:right], np.uint8(min(number, 255)), where=mask)
        color_table[min(number, 255)] = (*color, round(255 * opacity))
    # One uint32 per RGBA colour: indexing a [n, 4] table row by row is 7x slower.
    rgba = color_table.view(np.uint32).ravel()[index].view(np.uint8).reshape(*index.shape, 4)
    return rgba, (x0, y0, x1, y1)


def _reduced(crop: MaskCrop, size: tuple[int, int]) -> np.ndarray:
    """bool [h, w]: the crop's mask resized (nearest pixels) to size (w, h); remembered per
    crop, so that undo, redo and redraws of a large photo's masks cost no resize."""
    if crop.mask.shape[::-1] == tuple(size):
        return crop.mask
    cached = _REDUCED.get(crop)
    if cached is None or cached.shape[::-1] != tuple(size):
        cached = cv2.resize(crop.mask.view(np.uint8), size, interpolation=cv2.INTER_NEAREST).view(bool)
        _REDUCED[crop] = cached
    return cached
