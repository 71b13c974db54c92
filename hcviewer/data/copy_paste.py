"""Copy-paste augmentation (Ghiasi et al., "Simple Copy-Paste is a Strong Data Augmentation
Method for Instance Segmentation", CVPR 2021): a random subset of one training image's objects,
flipped and scaled by large-scale jitter, is pasted onto another training image.

Plain functions on ``PreparedImage`` (one image at training scale with its objects, see
``training.py``); they return new images and never change their arguments, which the training
set caches. The paste is hard (the paper found blending unnecessary). The objects underneath
lose the covered pixels from their masks and part maps, their keypoints under the paste become
hidden (COCO v=1: labelled but not visible, which the keypoint head trains on as it does COCO's
own hidden keypoints), and an object covered almost completely is dropped. An object's box is
the extent of its visible mask wherever a paste changed that mask (COCO's boxes are the extent
of their segmentation and CCP's of their label map; untouched objects keep their given box);
an object without a mask keeps its box, and its covered share is that of its box. Pasted
objects keep their own masks, parts and keypoints, moved with the jitter, so they train the
heads they are labelled for.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from hcviewer.data.training import PreparedImage

# The source image is scaled by a random factor in this range (the paper's large-scale jitter),
# then cropped or padded to the target's size at a random position.
LSJ_SCALE = (0.1, 2.0)
# An object whose mask (or, without a mask, box) is covered by more than this share is dropped.
DROP_COVERED = 0.9


def copy_paste(target: PreparedImage, source: PreparedImage, rng: np.random.Generator, keypoint_flip: list[int],
               scale_range: tuple[float, float] = LSJ_SCALE, min_object_side: float = 8.0,
               drop_covered: float = DROP_COVERED) -> PreparedImage:
    """``target`` with a random non-empty subset of ``source``'s objects that have a mask or part
    labels pasted on: the source is flipped (p = 0.5; ``keypoint_flip`` is the keypoint order
    after a flip), scaled by a factor drawn from ``scale_range`` and placed at a random offset
    (crop or pad to the target's size). Pasted objects under ``min_object_side`` are left out;
    with none left the target comes back as it was."""
    candidates = pastable_objects(source)
    if not len(candidates):
        return target
    chosen = rng.choice(candidates, size=int(rng.integers(1, len(candidates) + 1)), replace=False)
    source = select_objects(source, np.sort(chosen))
    if rng.random() < 0.5:
        source = flip_image(source, keypoint_flip)
    height, width = target.rgb.shape[:2]
    scale = rng.uniform(*scale_range)
    size = (max(1, round(source.rgb.shape[0] * scale)), max(1, round(source.rgb.shape[1] * scale)))
    offset = tuple(int(rng.integers(min(0, canvas - side), max(0, canvas - side) + 1))
                   for canvas, side in zip((height, width), size))
    pasted = place(source, size, offset, (height, width), min_object_side)
    if not pasted.categories:
        return target
    return paste(target, pasted, min_object_side, drop_covered)


def pastable_objects(image: PreparedImage) -> np.ndarray:
    """Indices of the objects that have a region to paste (a mask, else part labels)."""
    return np.flatnonzero((image.mask_index >= 0) | (image.part_index >= 0))


def object_region(image: PreparedImage, index: int) -> np.ndarray | None:
    """[H, W] bool: the object's mask, else its labelled part pixels; None when it has neither."""
    if image.mask_index[index] >= 0:
        return image.masks[image.mask_index[index]] > 0
    if image.part_index[index] >= 0:
        return image.parts[image.part_index[index]] > 0
    return None


def select_objects(image: PreparedImage, keep: np.ndarray) -> PreparedImage:
    """The image with only the objects ``keep`` (indices, in the order given)."""
    masks, mask_index = _take_maps(image.masks, image.mask_index[keep])
    parts, part_index = _take_maps(image.parts, image.part_index[keep])
    return replace(image, boxes=image.boxes[keep], masks=masks, mask_index=mask_index,
                   keypoints=image.keypoints[keep], parts=parts, part_index=part_index,
                   categories=[image.categories[i] for i in keep])


def flip_image(image: PreparedImage, keypoint_flip: list[int]) -> PreparedImage:
    """Mirror left-right: pixels, maps, boxes, keypoints (left and right joints swap places)."""
    width = image.rgb.shape[1]
    boxes = image.boxes.copy()
    boxes[:, [0, 2]] = width - image.boxes[:, [2, 0]]
    keypoints = image.keypoints[:, keypoint_flip].copy()
    keypoints[..., 0] = width - keypoints[..., 0]
    return replace(image, rgb=image.rgb[:, ::-1].copy(), boxes=boxes, masks=image.masks[:, :, ::-1].copy(),
                   parts=image.parts[:, :, ::-1].copy(), keypoints=keypoints)


def place(image: PreparedImage, size: tuple[int, int], offset: tuple[int, int], canvas: tuple[int, int],
          min_object_side: float) -> PreparedImage:
    """Resize ``image`` to ``size`` (h, w) and put its top-left corner at ``offset`` (y, x) of a
    blank ``canvas`` (h, w): what falls outside is cropped. Keypoints outside the canvas become
    unlabelled; boxes are the extent of each object's region on the canvas; objects with no
    region left or a box side under ``min_object_side`` are left out."""
    (height, width), (top, left) = size, offset
    scale_y, scale_x = height / image.rgb.shape[0], width / image.rgb.shape[1]
    # One warp per map straight onto the canvas (a resize to 2x and then a crop would fill 4x the
    # canvas); pixel centres map onto pixel centres, and label maps take the nearest one.
    warp = np.array([[scale_x, 0, left + (scale_x - 1) / 2], [0, scale_y, top + (scale_y - 1) / 2]])

    def onto_canvas(pixels: np.ndarray, interpolation: int) -> np.ndarray:
        return cv2.warpAffine(pixels, warp, canvas[::-1], flags=interpolation, borderMode=cv2.BORDER_CONSTANT)

    rgb = onto_canvas(image.rgb, cv2.INTER_LINEAR)
    masks, parts = (np.stack([onto_canvas(m, cv2.INTER_NEAREST) for m in maps])
                    if len(maps) else np.zeros((0,) + canvas, np.uint8) for maps in (image.masks, image.parts))
    keypoints = image.keypoints.copy()
    keypoints[..., 0] = keypoints[..., 0] * scale_x + left
    keypoints[..., 1] = keypoints[..., 1] * scale_y + top
    outside = ((keypoints[..., 0] < 0) | (keypoints[..., 0] >= canvas[1]) | (keypoints[..., 1] < 0)
               | (keypoints[..., 1] >= canvas[0]))
    keypoints[..., 2][outside] = 0
    placed = replace(image, rgb=rgb, masks=masks, parts=parts, keypoints=keypoints)
    boxes = np.stack([_extent(object_region(placed, i)) for i in range(len(image.categories))])
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return select_objects(replace(placed, boxes=boxes), np.flatnonzero(sides >= min_object_side))


def paste(target: PreparedImage, pasted: PreparedImage, min_object_side: float = 8.0,
          drop_covered: float = DROP_COVERED) -> PreparedImage:
    """``pasted`` (an image of the target's size whose every object has a region) hard-pasted
    over ``target``: the target's objects lose the covered pixels, their covered keypoints
    become hidden (v=1), their boxes shrink to what stays visible, and those covered by more
    than ``drop_covered`` or left under ``min_object_side`` are dropped. The pasted objects
    follow the target's."""
    cover = np.zeros(target.rgb.shape[:2], bool)
    for i in range(len(pasted.categories)):
        cover |= object_region(pasted, i)
    uncovered = replace(target, masks=target.masks * ~cover, parts=target.parts * ~cover)
    boxes, keypoints = target.boxes.copy(), target.keypoints.copy()
    keep = []
    for i in range(len(target.categories)):
        region = object_region(target, i)
        if region is None:
            x0, y0, x1, y1 = np.round(boxes[i]).astype(int).clip(0)
            covered = cover[y0:y1, x0:x1].mean() if x1 > x0 and y1 > y0 else 0.0
        else:
            visible = object_region(uncovered, i)
            area, shown = np.count_nonzero(region), np.count_nonzero(visible)
            covered = 1.0 - shown / max(1, area)
            if 0 < shown < area:
                boxes[i] = _extent(visible)
        _hide_covered(keypoints[i], cover)
        side = min(boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1])
        if covered <= drop_covered and side >= min_object_side:
            keep.append(i)
    updated = replace(uncovered, rgb=np.where(cover[..., None], pasted.rgb, target.rgb), boxes=boxes,
                      keypoints=keypoints)
    return _concatenate(select_objects(updated, np.array(keep, np.int64)), pasted)


def _hide_covered(keypoints: np.ndarray, cover: np.ndarray) -> None:
    """Labelled keypoints [J, 3] whose pixel is covered become hidden (v=1), in place."""
    height, width = cover.shape
    cols = np.floor(keypoints[:, 0]).astype(int).clip(0, width - 1)
    rows = np.floor(keypoints[:, 1]).astype(int).clip(0, height - 1)
    keypoints[(keypoints[:, 2] > 0) & cover[rows, cols], 2] = 1


def _concatenate(first: PreparedImage, second: PreparedImage) -> PreparedImage:
    """The objects of both (same canvas; the first's pixels)."""
    def shifted(index: np.ndarray, rows: int) -> np.ndarray:
        return np.where(index >= 0, index + rows, -1)

    return replace(first, boxes=np.concatenate([first.boxes, second.boxes]),
                   masks=np.concatenate([first.masks, second.masks]),
                   mask_index=np.concatenate([first.mask_index, shifted(second.mask_index, len(first.masks))]),
                   keypoints=np.concatenate([first.keypoints, second.keypoints]),
                   parts=np.concatenate([first.parts, second.parts]),
                   part_index=np.concatenate([first.part_index, shifted(second.part_index, len(first.parts))]),
                   categories=first.categories + second.categories)


def _take_maps(maps: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The maps of ``rows`` (-1: none) and each object's new row."""
    present = rows >= 0
    index = np.full(len(rows), -1, np.int64)
    index[present] = np.arange(int(present.sum()))
    return maps[rows[present]], index


def _extent(region: np.ndarray) -> np.ndarray:
    """[4] float32 x0, y0, x1, y1 (exclusive) of a region's pixels; zeros when it is empty."""
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    if not rows.size:
        return np.zeros(4, np.float32)
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)
