"""Batch norm with running statistics is an affine map, so it folds into the convolution before it.

Training (batch norm frozen) folds it inside the graph on every call (``FoldingSequential``):
the same function and gradients without batch norm's own passes, 1.5-1.7x faster forward and
backward of MobileNetV2 on a CPU thread (benchmarks/bench_training.py, docs/performance.md).
Inference folds it once, into the weights (``fold_batch_norm_``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def folded_conv(conv: nn.Conv2d, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of ``conv`` followed by ``norm`` (a batch norm using its running
    statistics, or an identity where it was folded already)."""
    if not isinstance(norm, nn.BatchNorm2d):
        return conv.weight, conv.bias
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    bias = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1))), bias


def uses_running_statistics(module: nn.Module) -> bool:  # a batch norm that is an affine map
    return isinstance(module, nn.BatchNorm2d) and not module.training and module.running_var is not None


class FoldingSequential(nn.Sequential):
    """``nn.Sequential`` (same modules, same state-dict keys) in which a convolution followed by a
    batch norm that uses its running statistics runs as one convolution with folded weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        i = 0
        while i < len(layers):
            conv = layers[i]
            if isinstance(conv, nn.Conv2d) and i + 1 < len(layers) and uses_running_statistics(layers[i + 1]):
                weight, bias = folded_conv(conv, layers[i + 1])
                x = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
                i += 2
            else:
                x = conv(x)
                i += 1
        return x


@torch.no_grad()
def fold_batch_norm_(model: nn.Module) -> nn.Module:
    """Fold every (convolution, batch norm in eval mode) pair of ``model``'s sequentials into the
    convolution's weights, in place; the batch norm becomes an identity. For inference copies."""
    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(sequential) - 1):
            conv, norm = sequential[i], sequential[i + 1]
            if isinstance(conv, nn.Conv2d) and uses_running_statistics(norm):
                weight, bias = folded_conv(conv, norm)
                conv.weight.copy_(weight)
                conv.bias = nn.Parameter(bias)
                sequential[i + 1] = nn.Identity()
    return model
