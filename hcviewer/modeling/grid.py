"""Location-specific classifiers (paper section 3.2).

A K x K grid of classifiers is laid over the box, classifier (i, j) sitting at the centre of grid
cell (i, j). Each output pixel's score is the bilinear interpolation of the scores of the (up to
four) grid classifiers around it; pixels outside the outermost centres take the nearest ones.
"""

from __future__ import annotations

import torch


def grid_axis_weights(grid_size: int, output_size: int) -> torch.Tensor:
    """1-D interpolation weights [grid_size, output_size]; each column sums to one."""
    # Explicitly on the CPU (a small constant table): also inside a ``with torch.device("meta")``
    # build, where arange would import torch._dynamo (1.2 s of the app's start-up).
    weights = torch.zeros(grid_size, output_size, dtype=torch.float64, device="cpu")
    if grid_size == 1:
        weights[0] = 1.0
        return weights.float()
    # Output pixel centre in box units is (x + 0.5) / S; grid centre i is at (i + 0.5) / K.
    position = (torch.arange(output_size, dtype=torch.float64, device="cpu") + 0.5) / output_size * grid_size - 0.5
    position = position.clamp(0, grid_size - 1)
    lower = position.floor().long().clamp(max=grid_size - 2)
    frac = position - lower
    columns = torch.arange(output_size, device="cpu")
    weights[lower, columns] = 1.0 - frac
    weights[lower + 1, columns] += frac
    return weights.float()


def grid_interpolation_weights(grid_size: int, output_size: int) -> torch.Tensor:
    """Weights [K*K, S, S]: how much grid classifier k = i*K + j counts at output pixel (y, x)."""
    axis = grid_axis_weights(grid_size, output_size)  # [K, S]
    return torch.einsum("iy,jx->ijyx", axis, axis).reshape(grid_size * grid_size, output_size, output_size)
