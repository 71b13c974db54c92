"""Per-task losses on box-aligned targets (shapes as in torchvision's roi_heads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hcviewer.modeling.keypoints import softmax_cells


def figure_ground_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [N, 1, S, S] (the head already picked each box's classifier set), targets [N, S, S]
    soft masks in [0, 1], -1 for boxes whose object has no mask: they add no loss and no gradient
    (the mean runs over the labelled boxes' cells only)."""
    labelled = targets >= 0
    if not labelled.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[:, 0].float()[labelled], targets[labelled])


def keypoint_loss(logits: torch.Tensor, targets: torch.Tensor, absent: bool = False) -> torch.Tensor:
    """logits [N, J, S, S], targets [N, J] cell index (-1 none): cross entropy over the S*S cells
    of each labelled keypoint (a spatial softmax, as Mask R-CNN's keypoint head). With ``absent``
    the softmax has one more cell, S*S, "not in this box" (``modeling.keypoints.softmax_cells``)."""
    flat = softmax_cells(logits, absent)  # [N, J, S*S (+1)]
    valid = targets >= 0
    if not valid.any():
        return flat.sum() * 0.0
    return F.cross_entropy(flat[valid], targets[valid])


def part_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [N, P+1, S, S], targets [N, S, S] labels (-1: object without part labels)."""
    if not (targets >= 0).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets, ignore_index=-1)
