"""Shared fixtures. Tests make their own small data; nothing here needs ../shared or a network."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hcviewer.modeling import HypercolumnConfig, build_hypercolumn, save_checkpoint  # noqa: E402
from hcviewer.modeling.coco import COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON  # noqa: E402


def tiny_person_config(**changes) -> HypercolumnConfig:
    """A small MobileNetV2 person model: all three tasks, 3x3 grid, random init."""
    params = dict(
        backbone="mobilenet_v2",
        grid_size=3,
        output_size=24,
        tasks=("figure_ground", "parts", "keypoints"),
        class_names=("person",),
        part_names=("head", "torso", "legs"),
        keypoint_names=COCO_PERSON_KEYPOINTS,
        skeleton=COCO_PERSON_SKELETON,
        max_image_side=256,
    )
    params.update(changes)
    return HypercolumnConfig(**params)


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A saved random-init checkpoint whose heads give non-trivial, box-dependent output."""
    torch.manual_seed(0)
    model = build_hypercolumn(tiny_person_config())
    with torch.no_grad():
        for head in model.heads.values():
            for conv in head.classifiers.values():
                conv.weight.normal_(std=0.2)
    return save_checkpoint(tmp_path / "tiny.safetensors", model, training={"note": "random init, tests"})


@pytest.fixture
def rgb_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    image[30:90, 50:110] = (220, 40, 40)  # a red square "object"
    return image
