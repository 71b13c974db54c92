"""Hypercolumn task heads: one linear classifier per tap, location-specific grid, summed scores.

A linear classifier on the hypercolumn (every tap's upsampled features, stacked) is the sum of
per-tap classifiers, so a tap subset's prediction is the shared bias plus those taps'
contributions (paper section 3.1). A tap's contribution at output pixel (y, x) of the S x S box
is ``sum_k W_k(y, x) * (w_k . f(y, x))``, W_k the grid weights (``grid.py``) of its K*K
classifiers. A conv tap mixes them into one classifier per pixel, ``w(y, x) = sum_k W_k(y, x)
w_k``, for its features at every pixel (``conv_tap_contribution``); the box-level vector is the
same at every pixel, so its K*K scores are mixed instead (``box_tap_contribution``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hcviewer.modeling.grid import grid_axis_weights, grid_interpolation_weights


class HypercolumnHead(nn.Module):
    """One task's classifiers: per tap a 1x1 conv holding its K*K*G*C grid classifiers (ordered
    grid cell, set, channel), and the shared bias [G, C]."""

    def __init__(self, tap_channels: dict[str, int], task_channels: int, grid_size: int, output_size: int,
                 num_classifier_sets: int = 1) -> None:
        super().__init__()
        self.task_channels = task_channels
        self.grid_size = grid_size
        self.output_size = output_size
        self.num_sets = num_classifier_sets
        cells = grid_size * grid_size
        self.classifiers = nn.ModuleDict({
            tap: nn.Conv2d(channels, cells * num_classifier_sets * task_channels, 1, bias=False)
            for tap, channels in tap_channels.items()
        })
        self.bias = nn.Parameter(torch.zeros(num_classifier_sets, task_channels))
        for conv in self.classifiers.values():
            if not conv.weight.is_meta:  # shapes only (checkpoint checks); normal_ on meta imports torch._dynamo
                nn.init.normal_(conv.weight, std=0.01)


def grid_classifiers(heads: list[HypercolumnHead], tap: str) -> torch.Tensor:
    """The heads' grid classifiers of one tap side by side: [K*K, G, sum of C, Cin]."""
    k2, sets = heads[0].grid_size ** 2, heads[0].num_sets
    return torch.cat([h.classifiers[tap].weight.view(k2, sets, h.task_channels, -1) for h in heads], dim=2)


def pixel_classifiers(grid: torch.Tensor, output_size: int) -> torch.Tensor:
    """Grid classifiers of one set [K*K, C, Cin] -> one classifier per output pixel,
    [S*S, Cin, C]: ``w(y, x) = sum_ij a_i(y) a_j(x) w_ij`` (separable grid weights a)."""
    k = round(grid.shape[0] ** 0.5)
    axis = grid_axis_weights(k, output_size).to(grid.device, grid.dtype)  # [K, S]
    per_column = torch.einsum("ijcd,jx->icdx", grid.view(k, k, *grid.shape[1:]), axis)
    return torch.einsum("icdx,iy->yxdc", per_column, axis).reshape(output_size ** 2, grid.shape[2], grid.shape[1])


def conv_tap_contribution(features: torch.Tensor, grid: torch.Tensor, output_size: int,
                          set_index: torch.Tensor | None,
                          classifiers: torch.Tensor | None = None) -> torch.Tensor:
    """A conv tap's features at every output pixel [S*S, N, Cin] (``Backbone.box_features``) and
    the heads' grid classifiers [K*K, G, C, Cin] -> contributions [N, C, S, S].

    One small matmul per output pixel, [S*S, N, Cin] @ [S*S, Cin, C] (bmm: one batched GEMM; an
    einsum was ~15x slower on the CPU), per classifier set present. ``classifiers``: the
    per-pixel classifiers of a one-set model, made once (``pixel_classifiers``)."""
    p, n, _ = features.shape
    c = grid.shape[2]
    if set_index is None:
        if classifiers is None:
            classifiers = pixel_classifiers(grid[:, 0], output_size)
        scores = torch.bmm(features, classifiers.to(features.dtype))
    else:
        scores = features.new_zeros(p, n, c)
        for g in set_index.unique().tolist():
            boxes = (set_index == g).nonzero()[:, 0]
            per_pixel = pixel_classifiers(grid[:, g], output_size).to(features.dtype)
            scores = scores.index_copy(1, boxes, torch.bmm(features[:, boxes], per_pixel))
    return _contiguous_gradient(scores).permute(1, 2, 0).view(n, c, output_size, output_size)


def column_tap_contribution(groups: list[tuple[torch.Tensor, torch.Tensor]], grid: torch.Tensor,
                            output_size: int) -> torch.Tensor:
    """``conv_tap_contribution`` of one-set heads, classified between the two axes of the cut:
    groups of boxes cut along x only, ([G, S(x), span, Cin], y weights [G, S(y), span])
    (``box_sampling.cut_along_x``), and grid classifiers [K*K, C, Cin] -> [N, C, S, S].

    Each output column's features are classified by that column's classifiers of every grid row,
    ``u_i(x) = sum_j a_j(x) w_ij``; the y resampling then also mixes the grid rows. For a tap with
    many channels and a small cut (MobileNetV2's s16) this never builds its features at every
    output pixel, the largest tensors of a training step (``TapSpec.per_column``)."""
    k2, c, cin = grid.shape
    k, s = round(k2 ** 0.5), output_size
    axis = grid_axis_weights(k, s).to(grid.device, grid.dtype)  # [K, S]
    classifiers = torch.einsum("ijcd,jx->xdic", grid.view(k, k, c, cin), axis).reshape(s, cin, k * c)
    out = [grid.new_zeros(0, s, s, c)]  # (no boxes: no groups)
    for along_x, weights_y in groups:
        g, _, span, _ = along_x.shape
        scores = torch.bmm(along_x.transpose(0, 1).reshape(s, g * span, cin), classifiers.to(along_x.dtype))
        scores = scores.view(s, g, span, k, c).permute(1, 3, 2, 0, 4).reshape(g, k * span, s * c)
        mixing = (axis.t()[None, :, :, None] * weights_y[:, :, None, :]).reshape(g, s, k * span)  # a_i(y) m(y, r)
        out.append(torch.bmm(mixing.to(scores.dtype), scores).view(g, s, s, c))  # [G, S(y), S(x), C]
    return torch.cat(out).permute(0, 3, 1, 2)


def box_tap_contribution(vector: torch.Tensor, grid: torch.Tensor, output_size: int,
                         set_index: torch.Tensor | None) -> torch.Tensor:
    """The box-level tap's vector [N, D] and the heads' grid classifiers [K*K, G, C, D] ->
    contributions [N, C, S, S]: the K*K scores of each box (its set's), mixed by the grid weights
    with one [C, K*K] @ [K*K, S*S] matmul per box."""
    n = vector.shape[0]
    k2, sets, c, _ = grid.shape
    scores = F.linear(vector, grid.flatten(0, 2).to(vector.dtype)).view(n, k2, sets, c)
    if sets > 1:
        if set_index is None:
            raise ValueError("a class-specific head needs each box's class index")
        scores = scores.gather(2, set_index.view(-1, 1, 1, 1).expand(-1, k2, 1, c))
    k = round(k2 ** 0.5)
    weights = grid_interpolation_weights(k, output_size).to(vector.device, vector.dtype).view(k2, -1)
    return torch.matmul(scores.view(n, k2, c).transpose(1, 2), weights).view(n, c, output_size, output_size)


class _ContiguousGradient(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous. The per-pixel scores
    [S*S, N, C] are read permuted to [N, C, S, S], so their gradient arrives with no unit stride
    in a [N, C] matrix, and bmm's backward then copied each of the S*S small matrices on its own
    (~90,000 copies per training step); one copy of the whole gradient replaces them."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _contiguous_gradient(tensor: torch.Tensor) -> torch.Tensor:
    return _ContiguousGradient.apply(tensor) if tensor.requires_grad else tensor
