"""The hypercolumn network: a trunk run once per image, heads run once per box. One forward path
for training and inference."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from hcviewer.modeling.backbones import Backbone, TrunkFeatures, get_backbone_spec
from hcviewer.modeling.batch_norm import fold_batch_norm_
from hcviewer.modeling.box_sampling import size_order
from hcviewer.modeling.config import HypercolumnConfig
from hcviewer.modeling.heads import (
    HypercolumnHead,
    box_tap_contribution,
    column_tap_contribution,
    conv_tap_contribution,
    grid_classifiers,
    pixel_classifiers,
)


@dataclass
class BoxOutputs:
    """Per task: logits [K, C, S, S]; when asked, each tap's contribution and the bias [K, C]."""

    logits: dict[str, torch.Tensor]
    contributions: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    bias: dict[str, torch.Tensor] = field(default_factory=dict)


class HypercolumnModel(nn.Module):
    """Backbone with named taps plus one ``HypercolumnHead`` per task. The trunk runs once per
    image; each tap's *features* are cut per box, then classified: cutting the score maps instead
    would cut K*K*C channels per tap (~600 for K=5 and the three tasks) against 24-512 feature
    channels. Both give the same result (roi_align's sampling is linear, its weights sum to one).
    """

    def __init__(self, config: HypercolumnConfig, pretrained_backbone: bool = False) -> None:
        super().__init__()
        spec = get_backbone_spec(config.backbone)
        taps = config.taps or spec.default_taps
        if len(set(taps)) != len(taps):
            raise ValueError(f"taps repeat a name: {taps}")
        for tap in taps:
            spec.tap(tap)  # raises a clear KeyError for unknown names
        if config.taps != tuple(taps):
            config = dataclasses.replace(config, taps=tuple(taps))
        self.config = config
        self.backbone = Backbone(spec, tuple(taps), pretrained_backbone)
        tap_channels = {t: spec.tap(t).channels for t in taps}
        self.heads = nn.ModuleDict({
            task: HypercolumnHead(tap_channels, config.task_channels(task), config.grid_size, config.output_size,
                                  config.num_classifier_sets)
            for task in config.tasks
        })

    @property
    def taps(self) -> tuple[str, ...]:
        return self.config.taps

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.config.tasks

    def check_taps(self, taps: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
        if taps is None:
            return self.taps
        taps = tuple(taps)
        unknown = [t for t in taps if t not in self.taps]
        if unknown:
            raise ValueError(f"unknown taps {unknown}; this model has {list(self.taps)}")
        if not taps:
            raise ValueError("at least one tap must be selected")
        return taps

    @torch.no_grad()
    def pixel_classifiers(self) -> dict[str, torch.Tensor] | None:
        """Every conv tap's per-pixel classifiers of all heads, [S*S, Cin, sum of C], for an
        inference copy to make once (``forward_boxes(classifiers=...)``); None for a
        class-specific model (one per class would not fit in memory)."""
        if self.config.class_specific:
            return None
        heads = list(self.heads.values())
        return {tap: pixel_classifiers(grid_classifiers(heads, tap)[:, 0], self.config.output_size)
                for tap, spec in self.backbone.tap_specs.items() if not (spec.box_level or spec.per_column)}

    def forward_boxes(self, features: TrunkFeatures, rois: torch.Tensor, class_index: torch.Tensor | None = None,
                      taps: tuple[str, ...] | None = None, return_contributions: bool = False,
                      classifiers: dict[str, torch.Tensor] | None = None) -> BoxOutputs:
        """Every head for K boxes, rois [K, 5] (image index, x0, y0, x1, y1) in input pixels, over
        the trunk's features; only the named taps contribute. ``class_index`` [K] picks each
        box's classifier set (class-specific models)."""
        taps = self.check_taps(taps)
        heads = list(self.heads.values())
        s = self.config.output_size
        set_index = class_index if self.config.class_specific else None
        order = size_order(rois)  # boxes of similar size are cut together (box_sampling.sample_boxes)
        rois = rois[order]
        set_index = None if set_index is None else set_index[order]
        bias = torch.cat([h.bias[set_index] if set_index is not None else h.bias[0].expand(len(rois), -1)
                          for h in heads], dim=1)  # [K, sum of C]
        total, per_tap = bias[:, :, None, None], {}
        for tap in taps:
            per_column = self.backbone.tap_specs[tap].per_column and set_index is None
            box_features = self.backbone.box_features(features, rois, tap, s, per_column)
            grid = grid_classifiers(heads, tap)
            if self.backbone.tap_specs[tap].box_level:
                per_tap[tap] = box_tap_contribution(box_features, grid, s, set_index)
            elif per_column:
                per_tap[tap] = column_tap_contribution(box_features, grid[:, 0], s)
            else:
                prepared = None if classifiers is None else classifiers[tap]
                per_tap[tap] = conv_tap_contribution(box_features, grid, s, set_index, prepared)
            total = total + per_tap[tap]
        back = torch.argsort(order)
        out = BoxOutputs(logits={})
        channels = torch.tensor([h.task_channels for h in heads]).cumsum(0).tolist()
        for task, stop, head in zip(self.heads, channels, heads):
            part = slice(stop - head.task_channels, stop)
            out.logits[task] = total[back, part]
            if return_contributions:
                out.contributions[task] = {tap: c[back, part] for tap, c in per_tap.items()}
                out.bias[task] = bias[back, part]
        return out

    def forward(self, images: list[torch.Tensor], rois: torch.Tensor, class_index: torch.Tensor | None = None,
                taps: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Normalised images [3, H_i, W_i], rois [K, 5] -> {task: logits [K, C, S, S]}."""
        return self.forward_boxes(self.backbone(images), rois, class_index, taps).logits


def inference_copy(model: HypercolumnModel) -> HypercolumnModel:
    """``model`` for inference: a copy in eval mode with batch norm folded into the trunk's
    convolution weights (once, at load time) and the trunk's weights channels-last, as its
    input; ``model`` itself is left unchanged."""
    copied = copy.deepcopy(model).eval()
    fold_batch_norm_(copied)
    copied.backbone.to(memory_format=torch.channels_last)
    return copied
