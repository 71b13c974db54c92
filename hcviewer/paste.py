"""Box heatmaps pasted into the image: the one paste-back of the predictor, the trainer's
metrics and the app (conventions of torchvision's ``roi_heads.py``).

Boxes are (x0, y0, x1, y1) in continuous pixel coordinates: pixel (i, j) covers
[j, j+1) x [i, i+1) and its centre is (j + 0.5, i + 0.5). Output cell (u, v) of an S x S box
heatmap covers the box's u-th and v-th S-th along x and y.
"""

from __future__ import annotations

import numpy as np
import torch


def box_pixel_range(x0: float, x1: float, size: int) -> tuple[int, int]:
    """Image pixels whose centres lie in [x0, x1), clipped to [0, size)."""
    start = int(np.ceil(x0 - 0.5))
    stop = int(np.ceil(x1 - 0.5))
    return max(start, 0), min(max(stop, 0), size)


def paste_heatmap(heatmap: torch.Tensor, box: torch.Tensor | np.ndarray, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample one box heatmap [C, S, S] into the image: [C, H, W], zero outside the box.

    Exact for boxes partly or wholly outside the image: only the visible part is sampled.
    """
    h, w = image_size
    out = heatmap.new_zeros(heatmap.shape[0], h, w)
    region = paste_heatmap_region(heatmap, box, image_size)
    if region is not None:
        values, (x0, y0) = region
        out[:, y0:y0 + values.shape[1], x0:x0 + values.shape[2]] = values
    return out


def paste_heatmap_region(heatmap: torch.Tensor, box: torch.Tensor | np.ndarray, image_size: tuple[int, int]
                         ) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """What ``paste_heatmap`` writes inside the box, without the [C, H, W] image around it:
    ([C, h, w] values of the image pixels whose centres lie in the box, (x0, y0) of its top-left
    pixel), or None when no pixel centre lies in the box."""
    h, w = image_size
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        return None
    cx0, cx1 = box_pixel_range(x0, x1, w)
    cy0, cy1 = box_pixel_range(y0, y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    return sample_heatmap(heatmap, box, np.arange(cx0, cx1), np.arange(cy0, cy1)), (cx0, cy0)


def sample_heatmap(heatmap: torch.Tensor, box: torch.Tensor | np.ndarray, xs: np.ndarray, ys: np.ndarray
                   ) -> torch.Tensor:
    """The box heatmap [C, S, S] bilinearly sampled at the centres of image pixels ``xs`` (columns)
    by ``ys`` (rows): [C, len(ys), len(xs)], edge cells repeated beyond the box (grid_sample's
    "border" padding, align_corners=False). The one paste-back: every mask drawn into an image
    (the predictor's, ``hcviewer predict``'s, the app's crops and display layer) is made here."""
    x0, y0, x1, y1 = (float(v) for v in box)
    rows = _interpolation_weights(ys, y0, y1, heatmap.shape[-2]).to(heatmap)  # [len(ys), S]
    cols = _interpolation_weights(xs, x0, x1, heatmap.shape[-1]).to(heatmap)  # [len(xs), S]
    return rows @ heatmap @ cols.T


def _interpolation_weights(pixels: np.ndarray, start: float, stop: float, cells: int) -> torch.Tensor:
    """[len(pixels), cells] float64: row k holds the linear-interpolation weights of the two cells
    around pixel k's centre. Positions in float64: in float32 the box corner's rounding (1e-6 px
    at x ~ 16) over a sub-pixel box's width moved the sampled value by more than 1e-5."""
    position = (np.asarray(pixels, np.float64) + 0.5 - start) / (stop - start) * cells - 0.5
    position = np.clip(position, 0, cells - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    fraction = position - low
    weights = np.zeros((len(position), cells))
    index = np.arange(len(position))
    np.add.at(weights, (index, low), 1 - fraction)
    np.add.at(weights, (index, high), fraction)
    return torch.from_numpy(weights)


def paste_masks_in_image(
    masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int]
) -> torch.Tensor:
    """masks [N, S, S] (probabilities) and boxes [N, 4] -> [N, H, W] probabilities."""
    if masks.shape[0] == 0:
        return masks.new_zeros(0, *image_size)
    return torch.stack([paste_heatmap(m[None], b, image_size)[0] for m, b in zip(masks, boxes)])
