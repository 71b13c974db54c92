"""Convolutional trunks with named taps.

A trunk is one module of this package (``BACKBONES``: mobilenet_v2.py, vgg16.py, alexnet.py,
efficientnet_lite.py) that defines ``SPEC`` (or, for several variants, one spec each): its taps
(which layer, stride, channels, cut size), the input normalisation its weights were trained
with, how it builds the network and loads its ImageNet weights, and the box-level top that turns
a box's cut into one vector (the paper's fc7, which enters the hypercolumn as a 1x1 map). Adding
a trunk is adding such a file and its line in ``BACKBONES``.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from hcviewer.modeling.box_sampling import box_axis_weights, cut_along_x, sample_boxes
from hcviewer.modeling.config import IMAGENET_MEAN, IMAGENET_STD

# name -> the module that defines its ``SPEC`` ("module:NAME": the spec named NAME there)
BACKBONES = {
    "alexnet": "hcviewer.modeling.alexnet",
    "efficientnet_lite0": "hcviewer.modeling.efficientnet_lite:LITE0_SPEC",
    "efficientnet_lite1": "hcviewer.modeling.efficientnet_lite:LITE1_SPEC",
    "efficientnet_lite2": "hcviewer.modeling.efficientnet_lite:LITE2_SPEC",
    "mobilenet_v2": "hcviewer.modeling.mobilenet_v2",
    "vgg16": "hcviewer.modeling.vgg16",
}

# Trunk feature maps by layer: each image's own map [C, H_i, W_i] (channels-last).
TrunkFeatures = dict[str, list[torch.Tensor]]


@dataclass(frozen=True)
class TapSpec:
    """One tapped layer. Conv taps are cut per box (roi_align at ``roi_size``, resized to the
    output); the box-level tap (``box_level=True``) is the top of the network applied to the
    box's cut of the layer ``node``."""

    name: str
    node: str  # index in the network's ``features`` of the layer this tap reads
    stride: int
    channels: int
    roi_size: int
    box_level: bool = False
    # Classified per output column between the cut's two axes (``heads.column_tap_contribution``)
    per_column: bool = False


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    taps: tuple[TapSpec, ...]
    default_taps: tuple[str, ...]
    make_model: Callable[[bool], nn.Module]  # pretrained -> a network with ``features`` (nn.Sequential)
    # network -> the box-level top: ``image_map`` [C, H, W] -> [C', H, W] once per image, then
    # the module on the boxes' cut of that map, [K, R, R, C'] -> [K, D]
    make_box_top: Callable[[nn.Module], nn.Module]
    # The input its weights expect: RGB in 0..1, minus ``mean``, divided by ``std`` per channel
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def tap(self, name: str) -> TapSpec:
        for t in self.taps:
            if t.name == name:
                return t
        raise KeyError(
            f"unknown tap {name!r} for backbone {self.name!r}; available: {[t.name for t in self.taps]}"
        )


def get_backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}")
    module, _, spec = BACKBONES[name].partition(":")
    return getattr(importlib.import_module(module), spec or "SPEC")


def torchvision_weights(enum_member) -> dict[str, torch.Tensor]:
    """torchvision's normal weight loading: its cache, else a download on a user's machine."""
    return enum_member.get_state_dict(progress=True)


def torchvision_model(name: str, weights: str, pretrained: bool) -> nn.Module:
    """torchvision's ``models.<name>``, with its ImageNet ``weights`` when ``pretrained``.
    torchvision is imported only here: importing it costs the app 1.9 s of start-up."""
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    if pretrained:
        model.load_state_dict(torchvision_weights(getattr(torchvision.models, weights).IMAGENET1K_V1))
    return model


def check_hash_prefix(path: Path) -> None:
    """torchvision names weight files ``<name>-<first 8 hex of sha256>.pth``; verify it as
    ``torch.hub.load_state_dict_from_url(check_hash=True)`` does."""
    expected = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise RuntimeError(f"{path}: sha256 {digest[:8]}... does not match its name's prefix {expected}")


class FlattenTop(nn.Module):
    """Fast R-CNN style box-level top: the box's R x R cut goes through the pretrained fc layers
    (fc6, fc7) unchanged, so their ImageNet weights still apply."""

    def __init__(self, fc_layers: nn.Sequential) -> None:
        super().__init__()
        self.fc = fc_layers

    def image_map(self, feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map

    def forward(self, cut: torch.Tensor) -> torch.Tensor:  # [K, R, R, C] -> [K, D]
        return self.fc(torch.flatten(cut.permute(0, 3, 1, 2), 1))


class TappedLayers(nn.Sequential):
    """A network's ``features`` up to its deepest tapped layer, returning the tapped layers'
    outputs {node: [B, C, H/s, W/s]}. Its modules keep their names in ``features`` (state-dict
    keys "0.0.weight", ...)."""

    def __init__(self, features: nn.Sequential, nodes: tuple[str, ...]) -> None:
        super().__init__(*list(features)[:max(int(node) for node in nodes) + 1])
        self.nodes = frozenset(nodes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        for index, layer in enumerate(self):
            x = layer(x)
            if str(index) in self.nodes:
                outputs[str(index)] = x
        return outputs


class Backbone(nn.Module):
    """The trunk up to its deepest configured tap (run once per image) and the box-level top."""

    def __init__(self, spec: BackboneSpec, taps: tuple[str, ...], pretrained: bool) -> None:
        super().__init__()
        self.spec = spec
        self.tap_specs = {name: spec.tap(name) for name in taps}
        network = spec.make_model(pretrained)
        self.body = TappedLayers(network.features, tuple(t.node for t in self.tap_specs.values()))
        has_box_tap = any(t.box_level for t in self.tap_specs.values())
        self.box_top = spec.make_box_top(network) if has_box_tap else None

    def forward(self, images: list[torch.Tensor]) -> TrunkFeatures:
        """Each normalised image [3, H_i, W_i] on its own (no padding to a common size: 1.45x less
        trunk time for two images of different shapes) -> {node: per image [C, H_i/s, W_i/s]},
        and the box-level top's per-image map under "box_top". Channels-last, as the cuts read them."""
        per_image = [self.body(image[None].contiguous(memory_format=torch.channels_last)) for image in images]
        features = {node: [f[node][0] for f in per_image] for node in per_image[0]}
        box_taps = [t for t in self.tap_specs.values() if t.box_level]
        if box_taps:
            features["box_top"] = [self.box_top.image_map(m) for m in features[box_taps[0].node]]
        return features

    def box_features(self, features: TrunkFeatures, rois: torch.Tensor, tap: str, output_size: int,
                     per_column: bool = False):
        """rois [K, 5] (image index, x0, y0, x1, y1) in input pixels -> a conv tap's features at
        every output pixel, [S*S, K, C] (roi_align at the tap's size, then bilinear resizing to
        S x S, ``box_sampling``), or ``per_column`` resampled along x only (``cut_along_x``); the
        box-level tap's vector [K, D]."""
        t = self.tap_specs[tap]
        maps = features["box_top" if t.box_level else t.node]
        size = t.roi_size if t.box_level else output_size
        weights_y, weights_x = box_axis_weights(rois, [m.shape[1:] for m in maps], 1.0 / t.stride, t.roi_size, size)
        if per_column:
            return cut_along_x(maps, rois[:, 0], weights_y, weights_x)
        if not t.box_level:
            return sample_boxes(maps, rois[:, 0], weights_y, weights_x, pixel_major=True)
        return self.box_top(sample_boxes(maps, rois[:, 0], weights_y, weights_x))
