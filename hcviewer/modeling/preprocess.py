"""The one way an image is sized and normalised for the network, shared by training, the
predictor and evaluation, so that all see exactly the same input and box coordinates."""

from __future__ import annotations

import cv2
import numpy as np
import torch


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


def normalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """An RGB image [3, H, W] with values in 0..1 -> the network's input (the configuration's
    per-channel ``mean`` and ``std``)."""
    return (image - torch.tensor(mean, device=image.device).view(3, 1, 1)) / torch.tensor(std, device=image.device).view(3, 1, 1)


def model_input(rgb: np.ndarray, max_side: int, mean: tuple[float, ...], std: tuple[float, ...],
                device: torch.device) -> tuple[torch.Tensor, float]:
    """An RGB uint8 image [H, W, 3] -> the network's input [3, h, w] (``resize_for_model``, then
    ``normalize``) and the factor that maps original-pixel boxes onto it."""
    resized, scale = resize_for_model(rgb, max_side)
    tensor = torch.from_numpy(np.ascontiguousarray(resized)).to(device).permute(2, 0, 1).float().div_(255)
    return normalize(tensor, mean, std), scale
