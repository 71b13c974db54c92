"""Location-specific classifier grid: the interpolation weights (paper section 3.2)."""

from __future__ import annotations

import pytest
import torch

from hcviewer.modeling.grid import grid_axis_weights, grid_interpolation_weights
from hcviewer.modeling.heads import box_tap_contribution, conv_tap_contribution


@pytest.mark.parametrize("grid_size, output_size", [(1, 7), (2, 10), (3, 24), (5, 50), (5, 7), (4, 3)])
def test_weights_are_a_partition_of_unity(grid_size: int, output_size: int) -> None:
    axis = grid_axis_weights(grid_size, output_size)
    assert axis.shape == (grid_size, output_size)
    assert (axis >= 0).all()
    torch.testing.assert_close(axis.sum(0), torch.ones(output_size))
    # Bilinear: at most two neighbouring grid classifiers per axis.
    nonzero = axis > 0
    assert (nonzero.sum(0) <= 2).all()
    for column in nonzero.T:
        rows = column.nonzero().flatten()
        assert rows.max() - rows.min() <= 1

    full = grid_interpolation_weights(grid_size, output_size)
    assert full.shape == (grid_size * grid_size, output_size, output_size)
    torch.testing.assert_close(full.sum(0), torch.ones(output_size, output_size))


@pytest.mark.parametrize("grid_size, cell", [(2, 3), (3, 5), (5, 5), (5, 1)])
def test_grid_centres_take_exactly_their_own_classifier(grid_size: int, cell: int) -> None:
    """With S = K * cell and an odd cell, the pixel at the middle of grid cell (i, j) sits
    exactly on that classifier's centre: its weight is one-hot."""
    output_size = grid_size * cell
    full = grid_interpolation_weights(grid_size, output_size)
    for i in range(grid_size):
        for j in range(grid_size):
            y, x = i * cell + cell // 2, j * cell + cell // 2
            expected = torch.zeros(grid_size * grid_size)
            expected[i * grid_size + j] = 1.0
            torch.testing.assert_close(full[:, y, x], expected)


def test_pixels_between_centres_interpolate_linearly() -> None:
    # K=2 over S=4: centres at 0.25 and 0.75 of the box; pixel centres at 0.125 .. 0.875.
    axis = grid_axis_weights(2, 4)
    expected = torch.tensor([[1.0, 0.75, 0.25, 0.0], [0.0, 0.25, 0.75, 1.0]])
    torch.testing.assert_close(axis, expected)


def test_single_classifier_weights_are_all_ones() -> None:
    torch.testing.assert_close(grid_interpolation_weights(1, 9), torch.ones(1, 9, 9))


def test_grid_of_identical_classifiers_is_one_classifier() -> None:
    """A K x K grid whose classifiers are all equal predicts exactly what K=1 predicts, for a conv
    tap's per-pixel features and for a box-level vector."""
    torch.manual_seed(0)
    plain = torch.randn(1, 1, 2, 6, dtype=torch.float64)  # [K*K, G, C, Cin]
    grid = plain.repeat(16, 1, 1, 1)
    pixels = torch.randn(12 * 12, 3, 6, dtype=torch.float64)  # [S*S, N, Cin]
    vector = torch.randn(3, 6, dtype=torch.float64)
    # The grid weights are float32, so float32 rounding is the tolerance.
    torch.testing.assert_close(conv_tap_contribution(pixels, grid, 12, None),
                               conv_tap_contribution(pixels, plain, 12, None), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(box_tap_contribution(vector, grid, 12, None),
                               box_tap_contribution(vector, plain, 12, None), rtol=1e-5, atol=1e-6)
