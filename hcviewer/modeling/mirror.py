"""Mirror averaging at test time: every box is predicted on the image and on its mirror image, and
its outputs are the mean of the two, the mirror's flipped back with left and right keypoints
swapped. It costs a second trunk run per image; what it buys is measured in the model card."""

from __future__ import annotations

import torch

from hcviewer.modeling.backbones import TrunkFeatures
from hcviewer.modeling.hypercolumn import BoxOutputs, HypercolumnModel


def flip_permutation(keypoint_names: tuple[str, ...]) -> list[int]:
    """The keypoint order after a horizontal flip: left_* and right_* swap places."""
    index = {name: i for i, name in enumerate(keypoint_names)}
    perm = []
    for name in keypoint_names:
        if "left" in name:
            perm.append(index.get(name.replace("left", "right"), index[name]))
        elif "right" in name:
            perm.append(index.get(name.replace("right", "left"), index[name]))
        else:
            perm.append(index[name])
    return perm


def with_mirror_image(image: torch.Tensor) -> list[torch.Tensor]:
    """A normalised image [3, H, W] -> [it, its mirror image], the trunk's input list."""
    return [image, image.flip(-1)]


def with_mirrored_rois(rois: torch.Tensor, width: int) -> torch.Tensor:
    """rois [K, 5] on image 0 of width ``width`` -> [2K, 5]: them, then the same boxes on the
    mirror image (image 1), x0 and x1 mirrored (x -> width - x, exact in continuous pixels)."""
    mirrored = rois.clone()
    mirrored[:, 0] = 1
    mirrored[:, 1] = width - rois[:, 3]
    mirrored[:, 3] = width - rois[:, 1]
    return torch.cat([rois, mirrored])


def mean_with_mirror(outputs: BoxOutputs, keypoint_order: list[int]) -> BoxOutputs:
    """Outputs of 2K boxes (K boxes, then their mirrors, as ``with_mirrored_rois`` orders them)
    -> the K boxes' outputs averaged with their mirrors'. ``keypoint_order``: ``flip_permutation``
    of the keypoint names. Logits, each tap's contribution and the bias are all averaged, so the
    logits stay their sum."""
    def mean(task: str, values: torch.Tensor) -> torch.Tensor:  # [2K, C] or [2K, C, ..., S]
        k = len(values) // 2
        mirror = values[k:].flip(-1) if values.dim() > 2 else values[k:]
        if task == "keypoints" and keypoint_order:
            mirror = mirror[:, keypoint_order]
        return (values[:k] + mirror) / 2

    return BoxOutputs(
        logits={task: mean(task, v) for task, v in outputs.logits.items()},
        contributions={task: {tap: mean(task, c) for tap, c in taps.items()}
                       for task, taps in outputs.contributions.items()},
        bias={task: mean(task, b) for task, b in outputs.bias.items()})


def forward_boxes_with_mirror(model: HypercolumnModel, features: TrunkFeatures, rois: torch.Tensor, width: int,
                              class_index: torch.Tensor | None = None,
                              taps: tuple[str, ...] | None = None, return_contributions: bool = False,
                              classifiers: dict[str, torch.Tensor] | None = None) -> BoxOutputs:
    """``model.forward_boxes`` over the trunk's features of ``with_mirror_image`` (an input of
    width ``width``) for rois [K, 5] on image 0: each box's outputs averaged with its mirror's."""
    outputs = model.forward_boxes(features, with_mirrored_rois(rois, width),
                                  None if class_index is None else class_index.repeat(2), taps,
                                  return_contributions, classifiers)
    return mean_with_mirror(outputs, flip_permutation(model.config.keypoint_names))
