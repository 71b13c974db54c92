"""Paste-back of box heatmaps and keypoint decoding (image-space conventions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints as tv_heatmaps_to_keypoints

from hcviewer.modeling import heatmaps_to_keypoints
from hcviewer.paste import paste_heatmap, paste_masks_in_image

H, W = 37, 53

coordinate = st.floats(min_value=-30.0, max_value=80.0, allow_nan=False, allow_subnormal=False)
extent = st.floats(min_value=0.05, max_value=70.0, allow_nan=False, allow_subnormal=False)


@st.composite
def boxes(draw) -> tuple[float, float, float, float]:
    """Boxes anywhere around a W x H image: inside, across a border, outside, sub-pixel."""
    x0, y0 = draw(coordinate), draw(coordinate)
    return x0, y0, x0 + draw(extent), y0 + draw(extent)


def centres_inside(box, image_size=(H, W)) -> np.ndarray:
    """Pixels whose centres (j + 0.5, i + 0.5) lie in [x0, x1) x [y0, y1)."""
    x0, y0, x1, y1 = box
    cy = np.arange(image_size[0]) + 0.5
    cx = np.arange(image_size[1]) + 0.5
    return ((cy >= y0) & (cy < y1))[:, None] & ((cx >= x0) & (cx < x1))[None, :]


@settings(max_examples=150, deadline=None)
@given(box=boxes(), size=st.sampled_from([1, 2, 7, 28]))
def test_constant_heatmap_pastes_to_exactly_the_pixels_centred_in_the_box(box, size: int) -> None:
    masks = torch.ones(1, size, size)
    pasted = paste_masks_in_image(masks, torch.tensor([box], dtype=torch.float64), (H, W))
    assert pasted.shape == (1, H, W)
    expected = centres_inside(box)
    np.testing.assert_array_equal(pasted[0].numpy() > 0, expected)
    # Inside, bilinear weights sum to one up to float32 rounding.
    np.testing.assert_allclose(pasted[0].numpy()[expected], 1.0, rtol=0, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(box=boxes(), values=st.lists(st.floats(0, 1), min_size=16, max_size=16))
def test_pasted_values_stay_within_the_heatmap_range(box, values) -> None:
    heatmap = torch.tensor(values, dtype=torch.float32).view(1, 4, 4)
    pasted = paste_heatmap(heatmap, torch.tensor(box, dtype=torch.float64), (H, W))
    inside = torch.from_numpy(centres_inside(box))
    assert (pasted[0][~inside] == 0).all()
    if inside.any():
        assert pasted[0][inside].min() >= heatmap.min() - 1e-6
        assert pasted[0][inside].max() <= heatmap.max() + 1e-6


@settings(max_examples=100, deadline=None)
@given(box=boxes())
def test_linear_ramp_is_sampled_at_pixel_centres(box) -> None:
    """A heatmap whose cell (v, u) holds the box-relative x of its centre, (u + 0.5) / S,
    pastes to each pixel's box-relative x, (j + 0.5 - x0) / w, between the outermost cell
    centres (bilinear interpolation reproduces a linear function exactly; outside, the border
    cells are held)."""
    s = 8
    x0, _, x1, _ = box
    ramp = ((torch.arange(s, dtype=torch.float64) + 0.5) / s).expand(s, s)
    pasted = paste_heatmap(ramp[None], torch.tensor(box, dtype=torch.float64), (H, W))[0]
    relative = (np.arange(W) + 0.5 - x0) / (x1 - x0)
    expected = np.clip(relative, 0.5 / s, 1 - 0.5 / s)
    inside = centres_inside(box)
    rows, cols = np.nonzero(inside)
    np.testing.assert_allclose(pasted.numpy()[rows, cols], expected[cols], atol=1e-5)


def test_paste_keeps_masks_apart_and_handles_no_boxes() -> None:
    masks = torch.stack([torch.full((5, 5), 0.25), torch.full((5, 5), 0.75)])
    boxes_ = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 5.0, 30.0, 15.0]])
    pasted = paste_masks_in_image(masks, boxes_, (H, W))
    np.testing.assert_allclose(pasted[0, :10, :10].numpy(), 0.25, atol=1e-6)
    np.testing.assert_allclose(pasted[1, 5:15, 20:30].numpy(), 0.75, atol=1e-6)
    assert pasted[0].sum() == pytest.approx(0.25 * 100, rel=1e-5)
    assert pasted[1].sum() == pytest.approx(0.75 * 100, rel=1e-5)
    assert paste_masks_in_image(masks[:0], boxes_[:0], (H, W)).shape == (0, H, W)


def test_multi_channel_heatmap_pastes_every_channel() -> None:
    heatmap = torch.stack([torch.zeros(6, 6), torch.ones(6, 6), torch.full((6, 6), 2.0)])
    pasted = paste_heatmap(heatmap, torch.tensor([2.0, 3.0, 14.0, 9.0]), (H, W))
    assert pasted.shape == (3, H, W)
    for channel in range(3):
        np.testing.assert_allclose(pasted[channel, 3:9, 2:14].numpy(), float(channel), atol=1e-6)
        assert pasted[channel].sum() == pytest.approx(channel * 72, rel=1e-5)


@settings(max_examples=150, deadline=None)
@given(box=boxes(), u=st.integers(0, 11), v=st.integers(0, 11))
def test_one_hot_peak_maps_to_its_cell_centre_in_image_pixels(box, u: int, v: int) -> None:
    s, j = 12, 3
    logits = torch.zeros(1, j, s, s)
    logits[0, 1, v, u] = 20.0  # keypoint 1 peaks in column u, row v
    keypoints = heatmaps_to_keypoints(logits, torch.tensor([box]))
    assert keypoints.shape == (1, j, 3)
    x0, y0, x1, y1 = box
    x, y, score = keypoints[0, 1].tolist()
    assert x == pytest.approx(x0 + (u + 0.5) / s * (x1 - x0), abs=1e-3)
    assert y == pytest.approx(y0 + (v + 0.5) / s * (y1 - y0), abs=1e-3)
    assert score == pytest.approx(1.0, abs=1e-6)  # all the spatial-softmax mass is at the peak
    # Flat heatmaps carry no information: uniform score.
    assert keypoints[0, 0, 2].item() == pytest.approx(1 / (s * s))


def test_keypoints_agree_with_torchvision_where_conventions_meet() -> None:
    """torchvision resizes the heatmap to the box's pixel size and takes the argmax pixel centre.
    For boxes whose sides are odd multiples of S, the cell centre is such a pixel centre, so
    both decoders must agree on one-hot peaks away from the border cells (there torchvision's
    bicubic resize moves the maximum onto the box's outermost pixel row or column)."""
    s = 8
    boxes_ = torch.tensor([[10.0, 20.0, 34.0, 60.0], [0.0, 0.0, 8.0, 24.0]])  # 3S x 5S, S x 3S
    logits = torch.full((2, 4, s, s), -5.0)
    peaks = [(1, 6), (6, 1), (3, 2), (2, 4)]
    for k, (u, v) in enumerate(peaks):
        logits[:, k, v, u] = 5.0
    ours = heatmaps_to_keypoints(logits, boxes_)
    theirs, _ = tv_heatmaps_to_keypoints(logits, boxes_)
    torch.testing.assert_close(ours[..., :2], theirs[..., :2], atol=1e-4, rtol=0)


def test_peak_between_cells_is_refined_to_sub_cell_precision() -> None:
    s = 10
    logits = torch.zeros(1, 1, s, s)
    logits[0, 0, 4, 4] = logits[0, 0, 4, 5] = 3.0  # two equal neighbours: the peak is between
    logits[0, 0, 4, 3] = logits[0, 0, 4, 6] = 1.0
    keypoint = heatmaps_to_keypoints(logits, torch.tensor([[0.0, 0.0, 100.0, 100.0]]))[0, 0]
    assert keypoint[0].item() == pytest.approx(50.0, abs=0.01)  # the boundary of cells 4 and 5
    assert keypoint[1].item() == pytest.approx(45.0, abs=1e-4)  # row 4's centre
    assert heatmaps_to_keypoints(logits[:0], torch.zeros(0, 4)).shape == (0, 1, 3)


def test_a_broad_mode_wins_over_a_lone_spike_and_keeps_the_spikes_score_out() -> None:
    s = 50
    probabilities = torch.full((1, 1, s, s), 0.1 / (s * s - 26))
    probabilities[0, 0, 30:35, 10:15] = 0.6 / 25  # a broad mode around cell (12, 32): 0.6 of the mass
    probabilities[0, 0, 5, 40] = 0.3  # a lone spike, the highest single cell
    logits = probabilities.log()
    keypoint = heatmaps_to_keypoints(logits, torch.tensor([[0.0, 0.0, 50.0, 50.0]]), probabilities)[0, 0]
    assert keypoint[0].item() == pytest.approx(12.5, abs=0.5) and keypoint[1].item() == pytest.approx(32.5, abs=0.5)
    assert keypoint[2].item() == pytest.approx(0.6 / 25, rel=1e-4)  # the mass of the cell it points at


def test_a_mode_on_the_box_edge_stays_on_the_edge() -> None:
    s = 50
    logits = torch.zeros(1, 1, s, s)
    logits[0, 0, 20, :4] = torch.tensor([6.0, 5.9, 5.8, 5.7])  # a wrist on the box's left edge
    keypoint = heatmaps_to_keypoints(logits, torch.tensor([[0.0, 0.0, 100.0, 100.0]]))[0, 0]
    assert keypoint[0].item() == pytest.approx(1.0)  # cell 0's centre (2 px cells): not pulled inward
    assert keypoint[1].item() == pytest.approx(41.0, abs=0.01)  # row 20's centre
