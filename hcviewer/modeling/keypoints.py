"""Keypoint heatmaps to keypoints in image pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def softmax_cells(logits: torch.Tensor, absent: bool) -> torch.Tensor:
    """Keypoint logits [N, J, S, S] -> the logits each joint's spatial softmax runs over,
    [N, J, S*S], and with ``absent`` (the checkpoint's ``keypoint_absent``) one more, "not in
    this box", at a fixed 0 [N, J, S*S + 1]. The fixed logit gives the joint's scores an absolute
    level (each joint's head bias learns it), so a joint outside the box or unseen can take its
    mass off every cell."""
    flat = logits.flatten(2).float()
    return torch.cat([flat, flat.new_zeros(*flat.shape[:2], 1)], dim=-1) if absent else flat


def keypoint_probabilities(logits: torch.Tensor, absent: bool) -> torch.Tensor:
    """Keypoint logits [N, J, S, S] -> the spatial softmax [N, J, S, S] (``softmax_cells``); with
    ``absent`` the map sums to the joint's probability of being in the box."""
    n, j, s, _ = logits.shape
    return softmax_cells(logits, absent).softmax(-1)[..., :s * s].reshape(n, j, s, s)


# The peak is looked for on the map smoothed by a Gaussian of this sigma (a fraction of the box
# side: 3 cells of the 50 x 50 grid): a broad mode then wins over a lone spike. Chosen on the
# training sources' held-out fifths (COCO train and pelota people, stage 6's checkpoint): PCK@0.1
# 0.683 unsmoothed, 0.689 / 0.696 / 0.700 / 0.702 at 1 / 2 / 3 / 4 cells; OKS AP 0.245 unsmoothed,
# 0.265 / 0.272 / 0.268 at 2 / 3 / 4.
PEAK_SMOOTHING = 0.06


def heatmaps_to_keypoints(logits: torch.Tensor, boxes: torch.Tensor,
                          probabilities: torch.Tensor | None = None, absent: bool = False) -> torch.Tensor:
    """Keypoint logits [N, J, S, S] -> [N, J, 3] (x, y, score) in image pixels.

    The peak is the highest cell of the spatial softmax smoothed by ``PEAK_SMOOTHING``, refined
    to sub-cell precision by a parabola through the smoothed log map's neighbours; the score is
    the probability mass at the peak cell. ``probabilities``: the softmax
    (``keypoint_probabilities``) when the caller has it already; else it is made with ``absent``.
    """
    n, j, s, _ = logits.shape
    if n == 0:
        return logits.new_zeros(0, j, 3)
    if probabilities is None:
        probabilities = keypoint_probabilities(logits, absent)
    maps = gaussian_smoothed(probabilities.float(), PEAK_SMOOTHING * s).clamp_min(1e-30).log()
    index = maps.reshape(n, j, s * s).argmax(-1)
    score = probabilities.reshape(n, j, s * s).gather(-1, index[..., None])[..., 0].float()
    py, px = index // s, index % s
    dx = _parabola_offset(maps, py, px, axis="x")
    dy = _parabola_offset(maps, py, px, axis="y")
    boxes = boxes.to(logits.device).float()
    bw = (boxes[:, 2] - boxes[:, 0])[:, None]
    bh = (boxes[:, 3] - boxes[:, 1])[:, None]
    x = boxes[:, 0:1] + (px.float() + 0.5 + dx) / s * bw
    y = boxes[:, 1:2] + (py.float() + 0.5 + dy) / s * bh
    return torch.stack([x, y, score], dim=-1)


def gaussian_smoothed(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """[N, J, S, S] maps convolved with a Gaussian of ``sigma`` cells (separable; the border
    cells are repeated outward, so a mode at the box's edge keeps its height)."""
    radius = min(int(3 * sigma + 0.5), maps.shape[-1] - 1)
    if radius < 1:
        return maps
    n, j, s, _ = maps.shape
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = (-offsets ** 2 / (2 * sigma ** 2)).exp()
    kernel = kernel / kernel.sum()
    flat = maps.reshape(n * j, 1, s, s)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return flat.reshape(n, j, s, s)


def _parabola_offset(maps: torch.Tensor, py: torch.Tensor, px: torch.Tensor, axis: str) -> torch.Tensor:
    n, j, s, _ = maps.shape
    ni = torch.arange(n)[:, None].expand(n, j)
    ji = torch.arange(j)[None, :].expand(n, j)
    if axis == "x":
        lo, hi = (px - 1).clamp(0, s - 1), (px + 1).clamp(0, s - 1)
        left, mid, right = maps[ni, ji, py, lo], maps[ni, ji, py, px], maps[ni, ji, py, hi]
        inside = (px > 0) & (px < s - 1)
    else:
        lo, hi = (py - 1).clamp(0, s - 1), (py + 1).clamp(0, s - 1)
        left, mid, right = maps[ni, ji, lo, px], maps[ni, ji, py, px], maps[ni, ji, hi, px]
        inside = (py > 0) & (py < s - 1)
    curvature = left - 2 * mid + right
    offset = torch.where(curvature < 0, 0.5 * (left - right) / curvature.clamp(max=-1e-6), torch.zeros_like(mid))
    return torch.where(inside, offset.clamp(-0.5, 0.5), torch.zeros_like(mid))
