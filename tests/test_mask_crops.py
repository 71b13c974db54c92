"""Masks as bounding-box crops (hcviewer.annotation.mask_crops): RLE to and from crops without a
full-image array, matching pycocotools and the full-image functions they replace."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from hcviewer.annotation.annotation_file import decode_mask, encode_mask
from hcviewer.annotation.mask_crops import (
    box_map_crop, box_map_iou, box_map_pixels, compose_crops, counts_from_string, crop_from_rle,
    crop_from_segmentation, crop_iou, crop_mask, rle_area, rle_bbox, rle_from_crop,
)
from hcviewer.app.overlays import annotation_rgba
from hcviewer.paste import paste_heatmap


def _random_masks(rng: np.random.Generator, count: int):
    for trial in range(count):
        height, width = (int(v) for v in rng.integers(1, 40, 2))
        mask = np.zeros((height, width), bool)
        kind = trial % 4
        if kind == 0:
            mask = rng.random((height, width)) < 0.3
        elif kind == 1:
            y0, x0 = rng.integers(0, height), rng.integers(0, width)
            mask[y0:y0 + rng.integers(1, height + 1), x0:x0 + rng.integers(1, width + 1)] = True
        elif kind == 2:
            mask[:] = True  # runs going on from one column to the next, ending at the last pixel
        yield mask


def test_rle_to_crop_and_back_is_pycocotools_exactly():
    rng = np.random.default_rng(0)
    for mask in _random_masks(rng, 400):
        rle = encode_mask(mask)
        assert counts_from_string(rle["counts"]).sum() == mask.size
        crop = crop_from_rle(rle)
        assert np.array_equal(crop.full(), mask)
        assert rle_from_crop(crop) == rle  # the same string pycocotools writes
        assert rle_from_crop(crop_mask(mask)) == rle
        assert rle_area(rle) == mask.sum() and rle_bbox(rle) == list(mask_utils.toBbox(mask_utils.encode(
            np.asfortranarray(mask.astype(np.uint8)))).astype(float))


def test_a_crop_holds_only_the_mask_extent_and_samples_regions():
    mask = np.zeros((9000, 12000), bool)
    mask[1000:1200, 3000:3500] = True
    crop = crop_from_rle(encode_mask(mask))
    assert crop.xyxy == (3000, 1000, 3500, 1200) and crop.mask.shape == (200, 500)
    region = crop.region(2990, 990, 3010, 1010, step=2)
    assert np.array_equal(region, mask[990:1010:2, 2990:3010:2])


@pytest.mark.parametrize("text", ["01!", "0" * 3 + "\x7f", "1`"])
def test_crafted_rle_strings_are_value_errors(text):
    with pytest.raises(ValueError):
        crop_from_rle({"size": [10, 10], "counts": text})


def test_segmentations_decode_to_the_same_pixels_as_over_the_whole_image():
    from hcviewer.cocomask import decode_segmentation

    polygon = [[10.5, 12.0, 70.2, 15.0, 55.0, 60.7, 12.0, 48.0], [80, 5, 95, 5, 95, 20]]
    for segmentation in (polygon, encode_mask(decode_segmentation(polygon, 64, 100)),
                         {"size": [64, 100], "counts": [0, 640, 20, 5740]}):
        crop = crop_from_segmentation(segmentation, 64, 100)
        assert np.array_equal(crop.full(), decode_segmentation(segmentation, 64, 100))
    with pytest.raises(ValueError):
        crop_from_segmentation([[1, 2, 3]], 64, 100)


def _pasted(box_map: np.ndarray, box: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """The model's paste-back of an [S, S] box map into the whole image, float [H, W]."""
    return paste_heatmap(torch.from_numpy(box_map[None]), torch.from_numpy(box), image_size)[0].numpy()


def test_box_maps_draw_the_pixels_the_model_paste_back_draws():
    rng = np.random.default_rng(1)
    for _ in range(300):
        side = int(rng.integers(2, 40))
        box_map = rng.random((side, side)).astype(np.float32)
        height, width = (int(v) for v in rng.integers(5, 150, 2))
        x0, y0 = rng.uniform(-20, width - 2), rng.uniform(-20, height - 2)
        box = np.array([x0, y0, x0 + rng.uniform(1, width), y0 + rng.uniform(1, height)])
        full = _pasted(box_map, box, (height, width)) >= 0.5
        assert np.array_equal(box_map_crop(box_map, box, (height, width), 0.5).full(), full)
        truth = rng.random((height, width)) < 0.3
        union = (full | truth).sum()
        expected = (full & truth).sum() / union if union else 1.0
        assert box_map_iou(box_map, box, 0.5, crop_mask(truth)) == pytest.approx(expected, abs=1e-12)
        # an accepted mask is scored as its prediction was: the same IoU
        accepted = box_map_crop(box_map, box, (height, width), 0.5)
        assert crop_iou(accepted, crop_mask(truth)) == pytest.approx(expected, abs=1e-12)
        xs, ys = np.arange(-2, width + 2, 3), np.arange(1, height, 2)
        inside = (xs >= 0) & (xs < width)
        pixels = box_map_pixels(box_map, box, 0.5, xs, ys, (height, width))
        assert np.array_equal(pixels[:, inside], full[np.ix_(ys, xs[inside])]) and not pixels[:, ~inside].any()


def test_large_regions_are_compared_on_a_grid(monkeypatch):
    from hcviewer.annotation import mask_crops

    monkeypatch.setattr(mask_crops, "MAX_EXACT_PIXELS", 10_000)
    box_map = np.clip(np.linspace(-0.5, 1.5, 30)[None, :] + np.zeros((30, 1)), 0, 1).astype(np.float32)
    box, truth = np.array([20.3, 30.7, 950.2, 780.9]), np.zeros((800, 1000), bool)
    truth[100:700, 400:900] = True
    full = _pasted(box_map, box, truth.shape) >= 0.5
    exact = (full & truth).sum() / (full | truth).sum()
    assert box_map_iou(box_map, box, 0.5, crop_mask(truth)) == pytest.approx(exact, abs=0.01)


def test_composed_crops_are_the_full_image_layer_cut_to_their_extent():
    rng = np.random.default_rng(2)
    for _ in range(100):
        height, width = (int(v) for v in rng.integers(5, 60, 2))
        masks = []
        for _ in range(int(rng.integers(1, 4))):
            mask = np.zeros((height, width), bool)
            y0, x0 = rng.integers(0, height), rng.integers(0, width)
            mask[y0:y0 + rng.integers(1, 20), x0:x0 + rng.integers(1, 20)] = True
            masks.append(mask)
        colors = [tuple(int(v) for v in rng.integers(0, 255, 3)) for _ in masks]
        rgba, (x0, y0, x1, y1) = compose_crops([crop_mask(m) for m in masks], colors, 0.5, 10_000)
        layer = np.zeros((height, width, 4), np.uint8)
        layer[y0:y1, x0:x1] = rgba
        assert np.array_equal(layer, annotation_rgba(masks, colors, 0.5))


def test_a_large_photo_layer_is_drawn_at_display_resolution():
    mask = np.zeros((9000, 12000), bool)
    cv2.circle(mask.view(np.uint8), (6000, 4500), 3000, 1, -1)
    rgba, rect = compose_crops([crop_from_rle(encode_mask(mask))], [(255, 0, 0)], 1.0, 4096)
    assert rect == (3000, 1500, 9001, 7501) and max(rgba.shape[:2]) <= 4096 * 6001 // 12000 + 1
    assert np.array_equal(decode_mask(encode_mask(mask)), mask)
