"""Box-aligned training targets, as in the paper (section 4): every training box gets the S x S
figure-ground mask of its object, the object's part labels and its keypoint positions, all in
box coordinates.

Conventions follow torchvision's ``roi_heads.py``: masks are cut with ``roi_align`` (as
``project_masks_on_boxes``), keypoints become the index of their cell in the S x S grid (as
``keypoints_to_heatmap``), -1 marks "no target".
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou, roi_align


def jitter_boxes(gt_boxes: torch.Tensor, per_object: int, min_iou: float, generator: torch.Generator,
                 max_shift: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Training boxes around the ground truth: each gt box itself plus ``per_object`` random
    shifts/scalings that keep IoU >= ``min_iou`` with it (the paper trains on boxes overlapping
    an object by at least 0.7).

    gt_boxes [M, 4] xyxy -> (boxes [M * (1 + per_object), 4], object_index [same]).
    """
    m = gt_boxes.shape[0]
    if m == 0:
        return gt_boxes.new_zeros((0, 4)), torch.zeros(0, dtype=torch.long)
    wh = (gt_boxes[:, 2:] - gt_boxes[:, :2]).repeat(per_object * 4, 1)
    base = gt_boxes.repeat(per_object * 4, 1)
    noise = (torch.rand(base.shape, generator=generator) * 2 - 1) * max_shift
    candidates = base + noise * wh.repeat(1, 2)
    candidates[:, 2:] = torch.maximum(candidates[:, 2:], candidates[:, :2] + 1)
    owner = torch.arange(m).repeat(per_object * 4)
    iou = box_iou(candidates, gt_boxes)[torch.arange(len(owner)), owner]
    boxes, index = [gt_boxes], [torch.arange(m)]
    for obj in range(m):
        good = torch.nonzero((owner == obj) & (iou >= min_iou)).flatten()[:per_object]
        boxes.append(candidates[good])
        index.append(owner[good])
    return torch.cat(boxes), torch.cat(index)


def mask_targets(masks: torch.Tensor, boxes: torch.Tensor, object_index: torch.Tensor, size: int) -> torch.Tensor:
    """masks [M, H, W] (0/1), boxes [N, 4] -> soft figure-ground targets [N, S, S] in [0, 1]."""
    if boxes.shape[0] == 0:
        return masks.new_zeros((0, size, size), dtype=torch.float32)
    rois = torch.cat([object_index[:, None].to(boxes), boxes], dim=1)
    return roi_align(masks[:, None].float(), rois, (size, size), spatial_scale=1.0, sampling_ratio=2,
                     aligned=True)[:, 0]


def part_targets(part_maps: torch.Tensor, boxes: torch.Tensor, object_index: torch.Tensor, size: int
                 ) -> torch.Tensor:
    """part_maps [M, H, W] integer labels (-1 everywhere: the object has no part labels; uint8
    maps are all labelled) -> [N, S, S] int64 labels
    sampled at each output cell's centre (nearest pixel; outside the image is background)."""
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros((0, size, size), dtype=torch.long)
    h, w = part_maps.shape[-2:]
    steps = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    xs = boxes[:, 0:1] + steps[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # [N, S]
    ys = boxes[:, 1:2] + steps[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    col = xs.floor().long()
    row = ys.floor().long()
    inside = ((col >= 0) & (col < w))[:, None, :] & ((row >= 0) & (row < h))[:, :, None]
    sampled = part_maps[object_index[:, None, None], row.clamp(0, h - 1)[:, :, None],
                        col.clamp(0, w - 1)[:, None, :]].long()  # [N, S, S]
    labelled = part_maps[object_index, 0, 0].long() >= 0  # unlabelled objects are -1 everywhere
    sampled = torch.where(inside, sampled, torch.zeros_like(sampled))
    return torch.where(labelled[:, None, None], sampled, torch.full_like(sampled, -1)).long()


def keypoint_targets(keypoints: torch.Tensor, boxes: torch.Tensor, object_index: torch.Tensor, size: int,
                     absent: bool = False) -> torch.Tensor:
    """keypoints [M, J, 3] (x, y, v) -> [N, J] index y * S + x of each labelled keypoint's cell in
    its box, -1 when unlabelled (v <= 0) or outside the box. With ``absent``, a person with any
    labelled keypoint trains the others as absent (index S*S): those outside the box and those
    its annotators left unlabelled (v == 0, COCO's "not visible and cannot be placed"); v < 0,
    a joint its data set never labels (LSPet's face), and people with no labelled keypoint stay -1."""
    kp = keypoints[object_index]  # [N, J, 3]
    x0, y0 = boxes[:, 0:1], boxes[:, 1:2]
    sx = size / (boxes[:, 2:3] - x0).clamp(min=1e-6)
    sy = size / (boxes[:, 3:4] - y0).clamp(min=1e-6)
    cx = ((kp[..., 0] - x0) * sx).floor().long()
    cy = ((kp[..., 1] - y0) * sy).floor().long()
    labelled = kp[..., 2] > 0
    inside = (cx >= 0) & (cx < size) & (cy >= 0) & (cy < size)
    targets = torch.where(labelled & inside, cy * size + cx, torch.full_like(cx, -1))
    if absent:
        annotated = labelled.any(dim=1, keepdim=True) & (kp[..., 2] >= 0)
        targets = torch.where(annotated & ~(labelled & inside), torch.full_like(cx, size * size), targets)
    return targets
