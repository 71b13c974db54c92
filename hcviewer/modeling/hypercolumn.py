"""The hypercolumn network: a trunk run once per image, heads run once per box."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from hcviewer.modeling.backbones import Backbone, TrunkFeatures, get_backbone_spec
from hcviewer.modeling.box_features import BoxTapFeatures
from hcviewer.modeling.box_sampling import size_order
from hcviewer.modeling.config import HypercolumnConfig
from hcviewer.modeling.heads import HypercolumnHead, forward_heads


@dataclass
class BoxOutputs:
    """Per-task logits [K, C, S, S] and, when asked, per-task per-tap contributions."""

    logits: dict[str, torch.Tensor]
    contributions: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    bias: dict[str, torch.Tensor] = field(default_factory=dict)

    def reordered(self, index: torch.Tensor) -> "BoxOutputs":
        """The same outputs with boxes taken in the order of ``index`` [K]."""
        return BoxOutputs(
            logits={task: v.index_select(0, index) for task, v in self.logits.items()},
            contributions={task: {tap: v.index_select(0, index) for tap, v in per_tap.items()}
                           for task, per_tap in self.contributions.items()},
            bias={task: v.index_select(0, index) for task, v in self.bias.items()},
        )


class HypercolumnModel(nn.Module):
    """Backbone with named taps plus one ``HypercolumnHead`` per task.

    Order of operations (and why): the trunk runs once per image; each tap's *features* are cut
    per box with roi_align and then classified. The alternative (classify the whole image
    first, cut the score maps) cuts K*K*C channels per tap instead of the tap's own channels:
    with K=5 and the three tasks (1 + parts + 17 keypoints) that is ~600 channels against
    24-512 feature channels, so cutting features is cheaper for every default tap and also
    skips classifying image regions no box covers. Both orders give the same result, because
    roi_align's bilinear sampling is linear and its weights sum to one.
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
        self.heads = nn.ModuleDict(
            {
                task: HypercolumnHead(
                    tap_channels,
                    config.task_channels(task),
                    config.grid_size,
                    config.output_size,
                    config.num_classifier_sets,
                )
                for task in config.tasks
            }
        )

    @property
    def taps(self) -> tuple[str, ...]:
        return self.config.taps

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.config.tasks

    def forward_trunk(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images [B, 3, H, W], normalised -> trunk feature maps keyed by graph node."""
        return self.backbone(images)

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

    def check_tasks(self, tasks: tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
        if tasks is None:
            return self.tasks
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise ValueError(f"this checkpoint has no {missing} head; it has {list(self.tasks)}")
        return tuple(tasks)

    def box_tap_features(
        self, features: TrunkFeatures, rois: torch.Tensor, taps: tuple[str, ...], sampled: bool = False
    ) -> BoxTapFeatures:
        """rois [K, 5] (batch index, x0, y0, x1, y1) in input pixels -> each tap's box features,
        computed when first used ({tap: [K, C, R, R]} and upsampled, see ``BoxTapFeatures``)."""
        return BoxTapFeatures(self.backbone, features, rois, taps, self.config.output_size, sampled)

    def forward_boxes(
        self,
        features: TrunkFeatures,
        rois: torch.Tensor,
        class_index: torch.Tensor | None = None,
        tasks: tuple[str, ...] | None = None,
        taps: tuple[str, ...] | None = None,
        return_contributions: bool = False,
    ) -> BoxOutputs:
        """Heads for K boxes over cached trunk features; only the named taps contribute.

        With gradients enabled (training) the box features are cut and resized to the output
        in one step by sampling matrices, whose backward is fast; without, cut at each tap's size
        and upsampled only for the heads that need it (fastest forward; ``BoxTapFeatures``).
        """
        taps = self.check_taps(taps)
        tasks = self.check_tasks(tasks)
        if not self.config.class_specific:
            class_index = None
        sampled = torch.is_grad_enabled()
        if sampled:  # boxes of similar size are sampled together (box_sampling.sample_boxes)
            order = size_order(rois)
            rois = rois[order]
            class_index = None if class_index is None else class_index[order]
        box_features = self.box_tap_features(features, rois, taps, sampled)
        out = BoxOutputs(logits={})
        per_task = forward_heads({task: self.heads[task] for task in tasks}, box_features, class_index,
                                 return_contributions)
        for task, (logits, contributions) in per_task.items():
            out.logits[task] = logits
            if return_contributions:
                out.contributions[task] = contributions
                out.bias[task] = self.heads[task].bias_map(rois.shape[0], class_index)
        return out.reordered(torch.argsort(order)) if sampled else out

    def forward(
        self,
        images: torch.Tensor,
        rois: torch.Tensor,
        class_index: torch.Tensor | None = None,
        taps: tuple[str, ...] | None = None,
        image_sizes: list[tuple[int, int]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Training entry point: images [B, 3, H, W], rois [K, 5] -> {task: logits [K, C, S, S]}.

        ``image_sizes``: each image's (H_i, W_i) in the top-left of its padded slot; the trunk
        then runs on each image alone (``Backbone.forward_each``): the maps the predictor computes
        for that image, without the padding's cost (1.45x less trunk time for two images of
        different shapes).
        """
        if image_sizes is None:
            features = self.forward_trunk(images)
        else:
            features = self.backbone.forward_each([image[:, :h, :w] for image, (h, w) in zip(images, image_sizes)])
        return self.forward_boxes(features, rois, class_index, taps=taps).logits
