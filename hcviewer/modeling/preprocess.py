"""The one way an image is sized for the network, shared by the app's predictor and the
trainer's evaluation so that both see exactly the same input and box coordinates."""

from __future__ import annotations

import cv2
import numpy as np


def resize_for_model(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink an [H, W, 3] image so its long side is at most ``max_side`` (never enlarge).

    Returns the image and the factor that maps original-pixel boxes onto it: the mean of the
    actual per-axis ratios after rounding (they differ by under a pixel)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return rgb, 1.0
    resized = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return resized, (resized.shape[0] / h + resized.shape[1] / w) / 2
