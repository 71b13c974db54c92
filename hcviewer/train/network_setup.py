"""The network of a training run: its starting weights, what stays frozen, the optimizer and
the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from hcviewer.modeling.hypercolumn import HypercolumnModel


def freeze_batch_norm(model: HypercolumnModel) -> None:
    """Keep ImageNet batch-norm statistics: batches of 2 images cannot estimate them."""
    for module in model.backbone.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
            module.weight.requires_grad_(False)
            module.bias.requires_grad_(False)


def freeze_trunk(model: HypercolumnModel, until: str) -> None:
    """Keep the trunk's first layers at their starting weights: up to and including the layer
    that tap ``until`` reads ("all": the whole trunk and its box-level top; "none": nothing).
    Frozen early layers also skip their backward, the costliest part of a CPU step."""
    if until == "none":
        return
    backbone = model.backbone
    if until == "all":
        frozen = [backbone.body] + ([backbone.box_top] if backbone.box_top is not None else [])
    else:
        try:
            node = backbone.spec.tap(until).node
        except KeyError as exc:
            raise ValueError(f"--freeze-trunk {until}: {exc.args[0]}, or 'none' or 'all'") from None
        frozen = list(backbone.body)[:int(node) + 1]
    for module in frozen:
        module.requires_grad_(False)


def freeze_heads(model: HypercolumnModel, tasks: tuple[str, ...]) -> None:
    """Keep these tasks' heads at their starting weights, e.g. to retrain the figure-ground head
    of a checkpoint without moving its keypoints and parts. Their losses still reach the trunk
    unless it is frozen too or they are weighted 0."""
    unknown = [task for task in tasks if task not in model.heads]
    if unknown:
        raise ValueError(f"--freeze-heads {','.join(unknown)}: this network has no such head "
                         f"(its tasks: {', '.join(model.heads)})")
    if set(tasks) == set(model.heads) and not any(p.requires_grad for p in model.backbone.parameters()):
        raise ValueError("--freeze-heads with --freeze-trunk all leaves nothing to train")
    for task in tasks:
        model.heads[task].requires_grad_(False)


def load_initial_weights(model: HypercolumnModel, path: str) -> None:
    """Start from a checkpoint's weights (e.g. the bundled model, to train it on more data). Its
    network must be this run's: same trunk, taps, grid, tasks and label sets."""
    from hcviewer.modeling.checkpoint import CheckpointError, load_checkpoint

    try:
        start, _ = load_checkpoint(path)
    except CheckpointError as exc:
        raise ValueError(f"--init: {exc}") from None
    ours, theirs = model.config.to_dict(), start.config.to_dict()
    shaping = ("backbone", "taps", "grid_size", "output_size", "tasks", "class_names", "class_specific",
               "part_names", "keypoint_names")
    differences = [f"{key} {theirs[key]!r} (this run: {ours[key]!r})" for key in shaping if ours[key] != theirs[key]]
    if start.config.keypoint_absent and not model.config.keypoint_absent:
        # Its keypoint biases are levels against the absent cell; without the cell they mean nothing.
        raise ValueError(f"--init {path}: its keypoint head has the 'not in this box' cell; "
                         "add --keypoint-absent to train it further")
    if differences:
        raise ValueError(f"--init {path}: that checkpoint is another network: " + "; ".join(differences)
                         + ". Train with its options (or drop --init)")
    model.load_state_dict(start.state_dict())


def make_optimizer(model: HypercolumnModel, lr: float, head_lr_scale: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """AdamW; the heads learn ``head_lr_scale`` times faster than the trunk."""
    trunk = [p for p in model.backbone.parameters() if p.requires_grad]
    heads = [p for p in model.heads.parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": trunk, "lr": lr}, {"params": heads, "lr": lr * head_lr_scale}],
                             weight_decay=weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to zero."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
