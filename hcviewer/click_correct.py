"""Click to correct: positive and negative clicks inside a box that re-segment its mask.

A click says "this pixel is object" (positive) or "this pixel is not" (negative). The box's
mask is segmented again from the model's probabilities, the current mask (so brush edits and
earlier clicks stay: a pixel the mask and the model disagree on is taken as the mask has it)
and the clicks, on a crop of the box scaled to ``WORK_SIDE``. Only the changed regions that
touch the newest click are taken; elsewhere the mask keeps its own full-resolution pixels, and
a small disk around every click always has its click's label.

- ``bump`` (the default): the probabilities as logits, plus a bump toward the newest click's
  label, high enough to flip the clicked pixel, falling off with the geodesic distance from the
  click (a step across a strong grey-level edge counts as ``EDGE_COST`` pixels), so a click fills
  or clears the image region it lands in; then the guided filter of ``hcviewer.refine`` snaps
  the result to the image's edges.
- ``grabcut``: OpenCV GrabCut on the box and its surroundings (fixed background), seeded by the
  current mask (probable foreground / background), the model's sure pixels of the newest
  click's label (p >= 0.9 foreground for a positive click, <= 0.1 background for a negative
  one: the click says the model erred on the other side) and disks of fixed label at the clicks.

The parameters were chosen on 30 objects of coco-val-kp-dev; measured on coco-val-dev with the
interactive-segmentation protocol (NoC@85 / NoC@90, each click at the centre of the largest
error) against the brush: docs/performance.md, "Click to correct". GrabCut needs about half a
click fewer but costs about five times as much (150-220 ms a click): ``bump`` is the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
from skimage.graph import MCP_Geometric

from hcviewer.paste import box_pixel_range, paste_heatmap_region
from hcviewer.refine import GUIDED_EPS, guided_filter, padded_crop

CLICK_METHODS = ("bump", "grabcut")
DEFAULT_CLICK_METHOD = "bump"
WORK_SIDE = 256  # the crop is scaled to this long side (bump: only down, to bound the cost per click)
CLICK_RADIUS = 0.012  # of the work crop's long side (at least 1 px): the disk a click always sets
CONFIDENT_LOGIT = 6.0  # logits are clipped to +-this (p within 0.0025 of 0 or 1)
FLIP_MARGIN = 3.0  # logit units a bump goes past the clicked pixel's own logit
BUMP_WIDTH = 0.25  # of the work crop's diagonal: geodesic distance where a bump is exp(-1/2) high
EDGE_COST = 150.0  # geodesic cost of crossing a grey-level step of 1 (vs 1 per pixel in flat areas)
EDGE_BLUR = 1.5  # pixels: the grey image is smoothed this much before its edges are taken
GUIDED_RADIUS = 0.02  # of the work crop's long side
GRABCUT_ITERATIONS = 2
GRABCUT_SURE = 0.9  # model probabilities >= this (<= 1 - this) are sure foreground (background)
GRABCUT_MARGIN = 0.1  # of the box's long side: background around the box that GrabCut learns from


class Click(NamedTuple):
    """A click at (x, y) in the crop's pixel coordinates (pixel (i, j) covers [j, j+1) x [i, i+1));
    ``positive``: the pixel is object."""

    x: float
    y: float
    positive: bool


def box_pixels(box: np.ndarray, image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the image pixels whose centres lie in the box, the ones a box's mask
    covers and clicks correct."""
    (x0, x1), (y0, y1) = box_pixel_range(box[0], box[2], image_size[1]), box_pixel_range(box[1], box[3], image_size[0])
    return x0, y0, x1, y1


def correct_in_box(image: np.ndarray, box: np.ndarray, box_map: np.ndarray | None, mask: np.ndarray,
                   clicks: Sequence[Click], method: str = DEFAULT_CLICK_METHOD) -> np.ndarray:
    """``correct_mask`` of a box of an image: image [H, W, 3] uint8 RGB, box (x0, y0, x1, y1),
    box_map the model's foreground probability over the box (S x S, or refined [h, w]; None: no
    model result), mask bool: the current mask over ``box_pixels(box)``, clicks in image
    coordinates. Returns the corrected mask over the same pixels."""
    import torch  # the paste-back is torch's: imported when a click is first corrected

    x0, y0, x1, y1 = box_pixels(box, image.shape[:2])
    probability = None
    if box_map is not None:
        probability = paste_heatmap_region(torch.from_numpy(np.asarray(box_map, np.float32)[None]), box,
                                           image.shape[:2])[0][0].numpy()
    surroundings = None
    if method == "grabcut":
        margin = max(1, round(GRABCUT_MARGIN * max(x1 - x0, y1 - y0)))
        surroundings = padded_crop(image, y0 - margin, y1 + margin, x0 - margin, x1 + margin)
    shifted = [Click(c.x - x0, c.y - y0, c.positive) for c in clicks]
    return correct_mask(image[y0:y1, x0:x1], probability, mask, shifted, method, surroundings)


def correct_mask(image: np.ndarray, probability: np.ndarray | None, mask: np.ndarray, clicks: Sequence[Click],
                 method: str = DEFAULT_CLICK_METHOD, surroundings: np.ndarray | None = None) -> np.ndarray:
    """The box's mask corrected by ``clicks`` (the last one is new).

    image [h, w, 3] uint8 RGB: the box's pixels; probability [h, w] float: the model's foreground
    probability at them (None: the mask alone, as a weak prior); mask [h, w] bool: the current
    mask. ``surroundings`` (GrabCut only): the image around the box, [h + 2m, w + 2m, 3] with the
    box at offset m, whose border GrabCut takes as background. Returns bool [h, w]."""
    if method not in CLICK_METHODS:
        raise ValueError(f"unknown click correction {method!r}; use one of {', '.join(CLICK_METHODS)}")
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    if not clicks or h == 0 or w == 0:
        return mask.copy()
    # GrabCut works on WORK_SIDE pixels whatever the box: on a small box's few pixels its colour
    # models and edges decided little (NoC@85 11.07 -> 8.43 upsampled, 30 coco-val-kp-dev objects).
    scale = WORK_SIDE / max(h, w) if method == "grabcut" else min(1.0, WORK_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    down = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small_image = _resized(image, size, down)
    small_mask = _resized(mask.astype(np.float32), size, down) >= 0.5
    prior = _prior(None if probability is None else _resized(probability.astype(np.float32), size, down),
                   small_mask)
    small_clicks = [Click(c.x * size[0] / w, c.y * size[1] / h, c.positive) for c in clicks]
    radius = max(1, round(CLICK_RADIUS * max(size)))
    if method == "bump":
        corrected = _bump(small_image, prior, small_clicks[-1])
    else:
        margin = 0 if surroundings is None else (surroundings.shape[0] - h) // 2
        offset = round(margin * scale)
        around = None if surroundings is None else _resized(surroundings, (size[0] + 2 * offset, size[1] + 2 * offset),
                                                            cv2.INTER_AREA)
        corrected = _grabcut(small_image, prior, small_mask, small_clicks, radius, around, offset)
    _stamp_clicks(corrected, small_clicks, radius)
    changed = _touching(corrected != small_mask, small_clicks[-1], radius)
    if scale != 1:  # back to full resolution: the mask keeps its own pixels where nothing changed
        up = cv2.INTER_LINEAR if scale < 1 else cv2.INTER_AREA
        changed = _resized(changed.astype(np.float32), (w, h), up) > 0.25
        corrected = _resized(corrected.astype(np.float32), (w, h), up) >= 0.5
    out = np.where(changed, corrected, mask)
    _stamp_clicks(out, clicks, max(1, round(radius / scale)))
    return out


def _resized(array: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    if (array.shape[1], array.shape[0]) == size:
        return array
    return cv2.resize(array, size, interpolation=interpolation)


def _prior(probability: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """Foreground probability that agrees with the current mask: the model's where it does, 0.6
    (0.4) where the mask was painted or clicked against the model; 0.6 / 0.4 without a model."""
    if probability is None:
        return np.where(mask, 0.6, 0.4).astype(np.float32)
    return np.where(mask, np.maximum(probability, 0.6), np.minimum(probability, 0.4)).astype(np.float32)


def _bump(image: np.ndarray, prior: np.ndarray, click: Click) -> np.ndarray:
    """Logits plus the click's geodesic bump, edge-aware smoothed, thresholded: bool [h, w].
    Earlier clicks are in the prior already (the mask they made)."""
    h, w = prior.shape
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    prior = prior.clip(1e-6, 1 - 1e-6)  # the model may be exactly sure
    logits = np.log(prior / (1 - prior)).clip(-CONFIDENT_LOGIT, CONFIDENT_LOGIT)
    smooth = cv2.GaussianBlur(grey, (0, 0), EDGE_BLUR)  # edges of regions, not of the noise in them
    edges = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)) / 4
    row, col = _pixel(click, (h, w))
    distance, _ = MCP_Geometric(1.0 + EDGE_COST * edges.astype(np.float64)).find_costs([(row, col)])
    sign = 1.0 if click.positive else -1.0
    height = max(0.0, -sign * logits[row, col]) + FLIP_MARGIN
    bump = height * np.exp(-0.5 * (distance / (BUMP_WIDTH * np.hypot(h, w))) ** 2)
    probability = 1 / (1 + np.exp(-(logits + sign * bump.astype(np.float32))))
    radius = max(1, round(GUIDED_RADIUS * max(h, w)))
    return guided_filter(grey, probability.astype(np.float32), radius, GUIDED_EPS) >= 0.5


def _grabcut(image: np.ndarray, prior: np.ndarray, mask: np.ndarray, clicks: Sequence[Click], radius: int,
             surroundings: np.ndarray | None, offset: int) -> np.ndarray:
    """GrabCut seeded by the prior, the clicks and the background around the box (``surroundings``:
    the box with ``offset`` pixels around it, at the work scale): bool [h, w]."""
    h, w = prior.shape
    seeds = np.where(mask, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    # Sure pixels of the newest click's own label only: the click says the model was wrong on the other side.
    if clicks[-1].positive:
        seeds[mask & (prior >= GRABCUT_SURE)] = cv2.GC_FGD
    else:
        seeds[~mask & (prior <= 1 - GRABCUT_SURE)] = cv2.GC_BGD
    for click in clicks:
        row, col = _pixel(click, (h, w))
        cv2.circle(seeds, (col, row), radius, int(cv2.GC_FGD if click.positive else cv2.GC_BGD), -1)
    pixels = np.ascontiguousarray(image if surroundings is None else surroundings)
    if offset:  # the box's surroundings are background
        seeds = cv2.copyMakeBorder(seeds, offset, offset, offset, offset, cv2.BORDER_CONSTANT, value=int(cv2.GC_BGD))
    fg = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    if fg.all() or not fg.any():
        return mask.copy()  # one side has no pixels to model
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(pixels), seeds, None, np.zeros((1, 65)), np.zeros((1, 65)),
                GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    cut = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    return np.ascontiguousarray(cut[offset:offset + h, offset:offset + w])


def _pixel(click: Click, shape: tuple[int, int]) -> tuple[int, int]:
    """(row, col) of the pixel under a click, inside the crop."""
    return (int(np.clip(np.floor(click.y), 0, shape[0] - 1)), int(np.clip(np.floor(click.x), 0, shape[1] - 1)))


def _stamp_clicks(mask: np.ndarray, clicks: Sequence[Click], radius: int) -> None:
    """Set a disk of ``radius`` around every click to its label, later clicks over earlier ones."""
    canvas = mask.view(np.uint8)
    for click in clicks:
        row, col = _pixel(click, mask.shape)
        cv2.circle(canvas, (col, row), radius, int(click.positive), -1)


def _touching(changed: np.ndarray, click: Click, radius: int) -> np.ndarray:
    """The connected regions of ``changed`` that reach the click's disk: a click never changes
    the mask far away from it."""
    count, labels = cv2.connectedComponents(changed.astype(np.uint8), connectivity=8)
    if count <= 1:
        return changed
    disk = np.zeros(changed.shape, np.uint8)
    row, col = _pixel(click, changed.shape)
    cv2.circle(disk, (col, row), radius + 1, 1, -1)
    keep = np.unique(labels[(disk > 0) & changed])
    return np.isin(labels, keep[keep > 0])
