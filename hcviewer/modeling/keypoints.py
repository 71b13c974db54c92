"""Keypoint heatmaps to keypoints in image pixels."""

from __future__ import annotations

import torch


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


def heatmaps_to_keypoints(logits: torch.Tensor, boxes: torch.Tensor,
                          probabilities: torch.Tensor | None = None, absent: bool = False) -> torch.Tensor:
    """Keypoint logits [N, J, S, S] -> [N, J, 3] (x, y, score) in image pixels.

    The peak is refined to sub-cell precision by a parabola through its neighbours; the score
    is the probability mass at the peak cell. ``probabilities``: the softmax
    (``keypoint_probabilities``) when the caller has it already; else it is made with ``absent``.
    """
    n, j, s, _ = logits.shape
    if n == 0:
        return logits.new_zeros(0, j, 3)
    if probabilities is None:
        probabilities = keypoint_probabilities(logits, absent)
    score, index = probabilities.reshape(n, j, s * s).max(-1)
    py, px = index // s, index % s
    maps = logits.float()
    dx = _parabola_offset(maps, py, px, axis="x")
    dy = _parabola_offset(maps, py, px, axis="y")
    boxes = boxes.to(logits.device).float()
    bw = (boxes[:, 2] - boxes[:, 0])[:, None]
    bh = (boxes[:, 3] - boxes[:, 1])[:, None]
    x = boxes[:, 0:1] + (px.float() + 0.5 + dx) / s * bw
    y = boxes[:, 1:2] + (py.float() + 0.5 + dy) / s * bh
    return torch.stack([x, y, score], dim=-1)


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
