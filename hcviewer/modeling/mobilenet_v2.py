"""MobileNetV2 (Sandler et al. 2018) as torchvision defines it, without importing torchvision.

The same modules under the same names, so torchvision's ImageNet file
(``mobilenet_v2-b0353104.pth``) and every hcviewer checkpoint load unchanged (tested against
torchvision's model: same state-dict keys and shapes, same outputs). Why not torchvision's own:
importing torchvision costs 1.9 s of the app's start-up (it imports ``torch._dynamo``), and the
bundled model is a MobileNetV2.
"""

from __future__ import annotations

import torch
from torch import nn

# t (expansion), c (output channels), n (blocks), s (stride of the first block): the paper's Table 2.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))


class ConvNormReLU6(nn.Sequential):
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
        self.conv = nn.Sequential(*layers)
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
