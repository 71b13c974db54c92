"""RoIAlign (and bilinear resizing after it) as two small matrices per box, for training.

torchvision's ``roi_align`` (``aligned=True``, a fixed ``sampling_ratio``) averages, in every
bin, the bilinear interpolations of a grid of sample points. The sample grid and bilinear
interpolation are both separable, so cutting box n out of a feature map F [C, H, W] is
``A_y[n] @ F @ A_x[n]^T`` with one matrix per axis, A [R, L]. Bilinear resizing of the cut
(``F.interpolate(..., mode="bilinear", align_corners=False)``) is separable and linear too, so
cut + resize to S x S is ``M_y[n] @ F @ M_x[n]^T`` with M = B @ A [S, L].

Why: torchvision's CPU ``roi_align`` backward is a single-threaded scatter per sample, and
CPU ``F.interpolate`` converts to channels-last and back on every call; with the 100-200 boxes of
a training step they dominated the step. Here the forward and the backward are a few batched
matrix products over each box's support (the feature pixels its samples touch), whose
gradients are matrix products as well. Same results up to float rounding (tested against
``roi_align`` + ``F.interpolate``).
"""

from __future__ import annotations

import torch

# Boxes are cut in groups of similar support; each group's crops are padded to its largest.
GROUP_SIZE = 32


def roi_align_axis_weights(
    start: torch.Tensor, extent: torch.Tensor, bins: int, length: int, sampling_ratio: int
) -> torch.Tensor:
    """One axis of torchvision's roi_align (CPU kernel's ``bilinear_interpolate``).

    start, extent [N] in feature pixels (``aligned=True``: start already shifted by -0.5).
    Returns [N, bins, length] float64: each bin's average of its samples' interpolation weights.
    """
    bin_size = extent / bins
    offsets = torch.arange(bins, dtype=torch.float64)[:, None] + (
        torch.arange(sampling_ratio, dtype=torch.float64)[None, :] + 0.5) / sampling_ratio
    position = start[:, None, None] + bin_size[:, None, None] * offsets[None]  # [N, bins, samples]
    inside = ((position >= -1.0) & (position <= length)).to(torch.float64)
    position = position.clamp(min=0.0)
    low = position.floor()
    at_end = low >= length - 1
    low = torch.where(at_end, torch.full_like(low, length - 1), low)
    frac = torch.where(at_end, torch.zeros_like(position), position - low)
    high = torch.where(at_end, low, low + 1)
    share = inside / sampling_ratio
    weights = torch.zeros(start.shape[0], bins, length, dtype=torch.float64)
    weights.scatter_add_(2, low.long(), (1.0 - frac) * share)
    weights.scatter_add_(2, high.long(), frac * share)
    return weights


def resize_axis_weights(in_size: int, out_size: int) -> torch.Tensor:
    """One axis of ``F.interpolate(mode="bilinear", align_corners=False)``: [out_size, in_size]."""
    source = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5).clamp(min=0.0)
    low = source.floor().long()
    high = torch.where(low < in_size - 1, low + 1, low)
    frac = source - low
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    weights.index_put_((rows, low), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, high), frac, accumulate=True)
    return weights


def box_axis_weights(
    rois: torch.Tensor,
    feature_size: tuple[int, int],
    spatial_scale: float,
    roi_size: int,
    output_size: int,
    sampling_ratio: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rois [N, 5] (batch index, x0, y0, x1, y1) in input pixels -> (M_y [N, S, H], M_x [N, S, W])
    in float64: roi_align at ``roi_size`` (aligned=True), then bilinear resizing to ``output_size``."""
    h, w = feature_size
    boxes = rois[:, 1:].detach().to("cpu", torch.float64) * spatial_scale - 0.5
    axes = []
    for lo, hi, length in ((boxes[:, 1], boxes[:, 3], h), (boxes[:, 0], boxes[:, 2], w)):
        weights = roi_align_axis_weights(lo, hi - lo, roi_size, length, sampling_ratio)
        if output_size != roi_size:
            weights = resize_axis_weights(roi_size, output_size) @ weights
        axes.append(weights)
    return axes[0], axes[1]


def sample_boxes(features: torch.Tensor, batch_index: torch.Tensor, weights_y: torch.Tensor,
                 weights_x: torch.Tensor, pixel_major: bool = False) -> torch.Tensor:
    """Cut and resample boxes with per-axis weights: ``M_y[n] @ features[b_n] @ M_x[n]^T``.

    features [B, C, H, W]; batch_index [N]; weights_y [N, S, H] and weights_x [N, S', W]
    (``box_axis_weights``). Returns [N, S, S', C] (channels last), or with ``pixel_major``
    [S*S', N, C]. Boxes are processed in consecutive groups of ``GROUP_SIZE``, each cropped to
    its largest support: give boxes sorted by size (``size_order``) for the least padding.
    """
    n = batch_index.shape[0]
    s, s2, c = weights_y.shape[1], weights_x.shape[1], features.shape[1]
    if n == 0:
        return features.new_zeros(s * s2, 0, c) if pixel_major else features.new_zeros(0, s, s2, c)
    start_y, span_y = _supports(weights_y)
    start_x, span_x = _supports(weights_x)
    features = features.permute(0, 2, 3, 1).contiguous()  # [B, H, W, C]; a no-op for channels-last maps
    batch_index = batch_index.to("cpu")
    groups = []
    for lo in range(0, n, GROUP_SIZE):
        part = slice(lo, lo + GROUP_SIZE)
        groups.append(_sample_group(features, batch_index[part], weights_y[part], weights_x[part],
                                    start_y[part], int(span_y[part].max()),
                                    start_x[part], int(span_x[part].max())))
    if pixel_major:  # one copy: each group is written transposed into its columns
        return torch.cat([g.view(g.shape[0], s * s2, c).transpose(0, 1) for g in groups], dim=1)
    return torch.cat(groups) if len(groups) > 1 else groups[0]


def size_order(rois: torch.Tensor) -> torch.Tensor:
    """rois [N, 5] -> the permutation [N] that sorts boxes by area (for ``sample_boxes``)."""
    return torch.argsort((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))


def _supports(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weights [N, S, L] -> first column with a non-zero weight and the span of those columns
    ([N] each; a box with no weight inside the map gets span 1)."""
    used = (weights != 0).any(1)  # [N, L]
    length = used.shape[1]
    first = torch.where(used.any(1), used.float().argmax(1), torch.zeros(used.shape[0], dtype=torch.long))
    last = length - 1 - used.flip(1).float().argmax(1)
    span = torch.where(used.any(1), last - first + 1, torch.ones_like(first))
    return first, span


def _sample_group(features, batch_index, weights_y, weights_x, start_y, span_y, start_x, span_x):
    g = batch_index.shape[0]
    h, w = features.shape[1:3]
    batch_index = batch_index.to(features.device)
    # Crop windows of the group's common size, moved inside the map where a support is narrower.
    top = torch.minimum(start_y, torch.tensor(h - span_y)).clamp(min=0)
    left = torch.minimum(start_x, torch.tensor(w - span_x)).clamp(min=0)
    rows = top[:, None] + torch.arange(span_y)  # [G, span_y]
    cols = left[:, None] + torch.arange(span_x)  # [G, span_x]
    dtype, device = features.dtype, features.device
    my = weights_y.gather(2, rows[:, None, :].expand(-1, weights_y.shape[1], -1)).to(device, dtype)
    mx = weights_x.gather(2, cols[:, None, :].expand(-1, weights_x.shape[1], -1)).to(device, dtype)
    rows, cols = rows.to(device), cols.to(device)
    # [G, span_x, span_y, C] from channels-last features (each index copies C contiguous values):
    # x-major, so that the x contraction is one batched matmul.
    c = features.shape[-1]
    pixel = (batch_index[:, None, None] * h + rows[:, None, :]) * w + cols[:, :, None]  # [G, span_x, span_y]
    crops = features.reshape(-1, c).index_select(0, pixel.reshape(-1))
    along_x = torch.bmm(mx, crops.reshape(g, span_x, span_y * c))  # [G, S', span_y * C]
    along_x = along_x.view(g, -1, span_y, c).transpose(1, 2).reshape(g, span_y, -1)  # [G, span_y, S' * C]
    return torch.bmm(my, along_x).view(g, my.shape[1], mx.shape[1], c)  # [G, S, S', C]
