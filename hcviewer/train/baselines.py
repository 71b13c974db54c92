"""Box-only segmentation baselines: what a method that sees only the box (and the pixels) gets.

Each is ``(image_rgb [H, W, 3] uint8, box_xyxy) -> bool mask [H, W]``. A pixel (r, c) is inside box
(x0, y0, x1, y1) when its centre (c + 0.5, r + 0.5) satisfies x0 <= c + 0.5 < x1 and
y0 <= r + 0.5 < y1 (``hcviewer.paste.box_pixel_range``); every mask is empty
outside the box.
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

from hcviewer.refine import padded_crop
from hcviewer.train.metrics import box_region

GRABCUT_MAX_SIDE = 256  # GrabCut runs on the box crop downscaled to this long side, for speed
GRABCUT_MIN_BOX = 4  # narrower boxes leave GrabCut too few pixels; they get the filled box


def box_filled(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Every pixel of the box is foreground."""
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[box_region(box, image.shape)] = True
    return mask


def inscribed_ellipse(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The axis-aligned ellipse inscribed in the box (pixel centres inside it), about pi/4 of the box."""
    mask = np.zeros(image.shape[:2], dtype=bool)
    rows, cols = box_region(box, image.shape)
    x0, y0, x1, y1 = (float(v) for v in box)
    if rows.start == rows.stop or cols.start == cols.stop:
        return mask
    u = (np.arange(cols.start, cols.stop) + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2)
    v = (np.arange(rows.start, rows.stop) + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)
    mask[rows, cols] = v[:, None] ** 2 + u[None, :] ** 2 <= 1.0
    return mask


def grabcut(image: np.ndarray, box: Sequence[float], iterations: int = 5) -> np.ndarray:
    """OpenCV GrabCut initialised with the box (outside: background, inside: probably foreground).

    Runs on a crop around the box with a margin of background (the image edge replicated where
    the box touches the border, so there is always background to model), downscaled so its long
    side is at most GRABCUT_MAX_SIDE; the result is upscaled back. Deterministic (fixed OpenCV RNG
    seed). Boxes under GRABCUT_MIN_BOX pixels wide or high get ``box_filled``.

    The result is GrabCut's own, with no fallback: on tight ground-truth boxes in cluttered photos
    it often labels the whole box background (about a third of COCO people, the same with OpenCV
    4.10 and 5.0, and on the full uncropped image), which the scores should show.
    """
    rgb = _as_rgb_uint8(image)
    rows, cols = box_region(box, rgb.shape)
    box_h, box_w = rows.stop - rows.start, cols.stop - cols.start
    if min(box_h, box_w) < GRABCUT_MIN_BOX:
        return box_filled(rgb, box)
    margin = max(8, round(0.1 * max(box_h, box_w)))
    crop = padded_crop(rgb, rows.start - margin, rows.stop + margin, cols.start - margin, cols.stop + margin)
    scale = min(1.0, GRABCUT_MAX_SIDE / max(crop.shape[:2]))
    small = cv2.resize(crop, _scaled_size(crop.shape, scale), interpolation=cv2.INTER_AREA) if scale < 1 else crop
    sy, sx = small.shape[0] / crop.shape[0], small.shape[1] / crop.shape[1]
    left, top = int(np.floor(margin * sx)), int(np.floor(margin * sy))
    rect = (left, top, max(1, int(np.ceil((margin + box_w) * sx)) - left),
            max(1, int(np.ceil((margin + box_h) * sy)) - top))
    labels = np.zeros(small.shape[:2], np.uint8)
    cv2.setRNGSeed(0)
    cv2.grabCut(np.ascontiguousarray(small), labels, rect, np.zeros((1, 65)), np.zeros((1, 65)),
                iterations, cv2.GC_INIT_WITH_RECT)
    foreground = ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.float32)
    if scale < 1:
        foreground = cv2.resize(foreground, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    mask[rows, cols] = foreground[margin:margin + box_h, margin:margin + box_w] >= 0.5
    return mask


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image, got dtype {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        return image[:, :, :3]
    raise ValueError(f"expected an [H, W, 3] RGB image, got shape {image.shape}")


def _scaled_size(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    return max(1, round(shape[1] * scale)), max(1, round(shape[0] * scale))


BASELINES: dict[str, Callable[[np.ndarray, Sequence[float]], np.ndarray]] = {
    "box": box_filled,
    "ellipse": inscribed_ellipse,
    "grabcut": grabcut,
}
