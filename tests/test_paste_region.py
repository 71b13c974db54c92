"""Masks pasted and encoded over their box's pixels only give exactly what pasting into the
whole image gives (RLE, score, pasted values), on random boxes, sizes and thresholds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from hcviewer.annotation.batch import _encode_masks
from hcviewer.inference import Prediction, paste_masks
from hcviewer.paste import paste_heatmap, paste_heatmap_region


def _whole_image_encoding(prediction: Prediction, size: tuple[int, int], threshold: float):
    rles, scores = [], []
    for probs in paste_masks(prediction, size):
        mask = probs >= threshold
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rles.append({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})
        scores.append(float(probs[mask].mean()) if mask.any() else 0.0)
    return rles, scores


def _random_prediction(rng: np.random.Generator, height: int, width: int, refined: bool) -> Prediction:
    n = int(rng.integers(1, 6))
    corner = rng.uniform(-20, 5, (n, 2)) + rng.uniform(0, 1, (n, 2)) * [width, height]
    size = rng.uniform(0.2, 1.3, (n, 2)) * [width, height]
    boxes = np.concatenate([corner, corner + size], 1).astype(np.float32)
    maps = rng.random((n, 12, 12)).astype(np.float32)
    if rng.random() < 0.3:
        maps = (maps > 0.5).astype(np.float32)  # runs that reach the box's edges
    return Prediction(boxes=boxes, taps=(), figure_ground=maps if not refined else np.zeros_like(maps),
                      refined=maps if refined else None)


@pytest.mark.parametrize("seed", range(4))
def test_box_region_rle_is_the_whole_image_rle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(60):
        height, width = (int(v) for v in rng.integers(1, 50, 2))
        prediction = _random_prediction(rng, height, width, refined=bool(rng.random() < 0.3))
        threshold = float(rng.choice([0.5, 0.3, 0.9, 1e-6]))
        assert _encode_masks(prediction, (height, width), threshold) == \
            _whole_image_encoding(prediction, (height, width), threshold)


def test_full_image_box_and_box_without_pixels() -> None:
    maps = np.ones((2, 8, 8), np.float32)
    boxes = np.array([[0, 0, 30, 20], [10.6, 5.6, 11.4, 6.4]], np.float32)  # whole image; no pixel centre inside
    prediction = Prediction(boxes=boxes, taps=(), figure_ground=maps)
    rles, scores = _encode_masks(prediction, (20, 30), 0.5)
    assert (rles, scores) == _whole_image_encoding(prediction, (20, 30), 0.5)
    assert mask_utils.area({"size": [20, 30], "counts": rles[0]["counts"].encode()}) == 600
    assert mask_utils.area({"size": [20, 30], "counts": rles[1]["counts"].encode()}) == 0
    with pytest.raises(ValueError, match="threshold"):
        _encode_masks(prediction, (20, 30), 0.0)


def test_region_is_what_paste_heatmap_writes() -> None:
    torch.manual_seed(0)
    heatmap = torch.rand(3, 10, 10)
    for box in ([-5.0, 3.2, 17.7, 40.0], [2.0, 2.0, 6.5, 9.1], [0.0, 0.0, 24.0, 16.0]):
        full = paste_heatmap(heatmap, torch.tensor(box), (16, 24))
        values, (x0, y0) = paste_heatmap_region(heatmap, torch.tensor(box), (16, 24))
        inside = torch.zeros_like(full)
        inside[:, y0:y0 + values.shape[1], x0:x0 + values.shape[2]] = values
        assert torch.equal(inside, full)
    assert paste_heatmap_region(heatmap, torch.tensor([30.0, 2.0, 40.0, 9.0]), (16, 24)) is None
