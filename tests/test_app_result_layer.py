"""The composite layer of all non-selected results (pure numpy part)."""

from __future__ import annotations

import numpy as np

from hcviewer.app.overlays import MASK_COLOR, DisplaySettings, part_color
from hcviewer.app.result_layer import MAX_SIDE, LayerEntry, compose


def _settings(**changes) -> DisplaySettings:
    settings = DisplaySettings()
    settings.__dict__.update(changes)
    return settings


def test_masks_are_pasted_where_their_boxes_are_even_partly_outside_the_image():
    inside = LayerEntry(np.array([10.0, 20.0, 30.0, 40.0]), np.ones((4, 4)), None, None)
    clipped = LayerEntry(np.array([50.0, -10.0, 70.0, 10.0]), np.ones((4, 4)), None, None)
    composite = compose([inside, clipped], (60, 64), (), _settings(opacity=0.5))
    alpha = composite.rgba[..., 3] > 0
    expected = np.zeros((60, 64), bool)
    expected[20:40, 10:30] = True
    expected[0:10, 50:64] = True
    assert np.array_equal(alpha, expected)
    assert (composite.rgba[20, 10, :3] == MASK_COLOR).all() and composite.rgba[20, 10, 3] == 128
    xs, ys = composite.outline
    assert np.nanmin(xs) == 10.5 and np.nanmax(ys) == 39.5  # through edge pixels' centres, image px


def test_threshold_and_hidden_tasks():
    box = np.array([0.0, 0.0, 20.0, 20.0])
    probs = np.tile(np.linspace(0, 1, 4), (4, 1))  # left to right: background to figure
    keypoints = np.array([[5.0, 5.0, 0.9], [15.0, 15.0, 0.05], [8.0, 12.0, 0.8]])
    entry = LayerEntry(box, probs, None, keypoints)
    low = compose([entry], (20, 20), ((0, 1), (0, 2)), _settings(threshold=0.2, keypoint_min_score=0.1))
    high = compose([entry], (20, 20), ((0, 1), (0, 2)), _settings(threshold=0.8, keypoint_min_score=0.1))
    assert (low.rgba[..., 3] > 0).sum() > (high.rgba[..., 3] > 0).sum() > 0
    assert low.peaks.tolist() == [[5, 5], [8, 12]]  # the weak keypoint is hidden...
    assert low.skeleton.tolist() == [[5, 5], [8, 12]]  # ...and so is its limb
    hidden = compose([entry], (20, 20), (), _settings(show_mask=False, show_keypoints=False))
    assert not hidden.rgba.any() and len(hidden.peaks) == 0 and len(hidden.outline[0]) == 0


def test_parts_colour_their_pixels_over_the_mask():
    parts = np.zeros((3, 4, 4))
    parts[0] = 1.0  # background
    parts[2, :2] = 2.0  # part 2 in the top half
    entry = LayerEntry(np.array([0.0, 0.0, 8.0, 8.0]), np.ones((4, 4)), parts, None)
    rgba = compose([entry], (8, 8), (), _settings(show_parts=True)).rgba
    assert (rgba[1, 1, :3] == part_color(2)).all() and (rgba[6, 6, :3] == MASK_COLOR).all()


def test_large_images_are_composed_at_a_capped_size():
    entry = LayerEntry(np.array([0.0, 0.0, 4000.0, 3000.0]), np.ones((4, 4)), None, None)
    composite = compose([entry], (3000, 4000), (), _settings())
    assert composite.rgba.shape == (1536, MAX_SIDE, 4) and composite.rgba[..., 3].all()


def test_parts_are_drawn_in_the_checkpoints_colours_when_it_has_them():
    parts = np.zeros((3, 4, 4))
    parts[0] = 1.0
    parts[2, :2] = 2.0  # part 2 in the top half
    entry = LayerEntry(np.array([0.0, 0.0, 8.0, 8.0]), np.ones((4, 4)), parts, None)
    colors = ((140, 70, 20), (255, 190, 140))
    rgba = compose([entry], (8, 8), (), _settings(show_parts=True, part_colors=colors)).rgba
    assert rgba[1, 1, :3].tolist() == [255, 190, 140] != list(part_color(2))
