"""End-to-end fine-tuning of a hypercolumn network on box-aligned targets.

One process per GPU under ``torchrun`` (DistributedDataParallel), or a single process on one GPU
or the CPU. Everything a run writes goes to its output folder:

    last.safetensors   the latest weights (the app's checkpoint format)
    epoch-N.safetensors  each epoch's weights, with ``keep_epochs`` (to score a learning curve)
    best.safetensors   the weights with the best validation mask IoU so far
    resume.pt          weights + optimizer + schedule + position (epoch and step) + random state +
                       the image lists' fingerprint, to continue exactly (loaded weights_only)
    metrics.csv        one row per epoch
    config.json        the training configuration
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from hcviewer.data.records import AnnotatedDataset, ObjectAnnotation
from hcviewer.data.training import BoxTrainingDataset, TargetSpec, TrainingSample
from hcviewer.fileio import write_atomic
from hcviewer.modeling.backbones import get_backbone_spec
from hcviewer.modeling.build import build_hypercolumn
from hcviewer.modeling.checkpoint import save_checkpoint
from hcviewer.modeling.config import HypercolumnConfig
from hcviewer.modeling.hypercolumn import HypercolumnModel
from hcviewer.modeling.preprocess import normalize
from hcviewer.train.losses import figure_ground_loss, keypoint_loss, part_loss
from hcviewer.train.network_setup import (
    freeze_batch_norm, freeze_heads, freeze_trunk, load_initial_weights, make_optimizer, make_schedule,
)
from hcviewer.train.run_state import (
    StopRequest, check_output_folder, data_fingerprint, describe_data_change, load_resume_state, writing,
)

RESUME_EVERY_S = 600.0  # a crash or kill -9 mid-epoch loses at most this much training


@dataclass
class TrainConfig:
    backbone: str = "mobilenet_v2"
    taps: tuple[str, ...] = ()
    grid_size: int = 5
    output_size: int = 50
    tasks: tuple[str, ...] = ("figure_ground", "keypoints")
    class_specific: bool = False
    epochs: int = 20
    batch_images: int = 2
    lr: float = 3e-4
    head_lr_scale: float = 10.0  # the new classifiers learn faster than the pretrained trunk
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    max_side: int = 512  # longest image side while training
    inference_side: int = 640  # the checkpoint's ``max_image_side``: the side its users resize to
    boxes_per_object: int = 2
    layer_dropout: float = 0.0  # probability that a step trains a random tap subset
    loss_weights: dict = field(default_factory=dict)  # task -> weight of its loss in the sum (default 1)
    seed: int = 0
    device: str = "auto"
    pretrained: bool = True
    augment: bool = True  # flips, scale and colour jitter of the images, jittered training boxes
    keypoint_absent: bool = False  # the keypoint head learns "not in this box" (HypercolumnConfig)
    copy_paste: float = 0.0  # probability that an augmented image gets another training image's objects pasted on
    freeze_trunk: str = "none"  # "none", a tap name (its layer and all before it stay ImageNet's) or "all"
    freeze_heads: tuple[str, ...] = ()  # tasks whose heads keep their starting weights
    init_from: str = ""  # checkpoint whose weights the run starts from instead of ImageNet's
    keep_epochs: bool = False  # also write each epoch's weights as epoch-N.safetensors
    data: dict = field(default_factory=dict)  # sources, categories and split, so resume reloads them

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class EpochRow:
    epoch: int
    steps: int
    loss: float
    losses: dict[str, float]
    validation: dict[str, float]  # VALIDATION_METRICS, nan when not validated or nothing labels them
    lr: float
    seconds: float
    images_per_second: float


# What the per-epoch validation reports (``validate`` returns them); the best checkpoint is the one
# with the highest mean of those the validation data labels.
VALIDATION_METRICS = ("mask_iou", "pck", "part_miou")


class TrainingInterrupted(Exception):
    """Ctrl-C during training; the resume state has been written."""


class TrainingDiverged(Exception):
    """A loss became NaN or infinite; that step was not taken and nothing more is written."""


def model_config(config: TrainConfig, dataset: AnnotatedDataset) -> HypercolumnConfig:
    """The network's configuration from the training options and what the data labels."""
    keypoint_categories = labelled_categories(
        dataset, lambda o: o.keypoints is not None and bool((o.keypoints[:, 2] > 0).any()))
    part_categories = labelled_categories(dataset, lambda o: o.parts is not None)
    tasks = tuple(t for t in config.tasks
                  if t == "figure_ground" or (t == "keypoints" and dataset.keypoint_names and keypoint_categories)
                  or (t == "parts" and dataset.part_names and part_categories))
    dropped = set(config.tasks) - set(tasks)
    if dropped:
        raise ValueError(f"the training data has no labels for {sorted(dropped)}; "
                         "drop the task or add data that labels it")
    categories = sorted({o.category for im in dataset.images for o in im.objects})
    trunk = get_backbone_spec(config.backbone)  # its weights' input normalisation
    return HypercolumnConfig(
        backbone=config.backbone, mean=trunk.mean, std=trunk.std, taps=config.taps, grid_size=config.grid_size,
        output_size=config.output_size, tasks=tasks,
        class_names=tuple(categories) if config.class_specific else ("object",),
        class_specific=config.class_specific,
        part_names=dataset.part_names if "parts" in tasks else (),
        keypoint_names=dataset.keypoint_names if "keypoints" in tasks else (),
        skeleton=dataset.skeleton if "keypoints" in tasks else (),
        keypoint_categories=keypoint_categories if "keypoints" in tasks else (),
        part_categories=part_categories if "parts" in tasks else (),
        part_colors=dataset.part_colors if "parts" in tasks else (),
        keypoint_absent=config.keypoint_absent and "keypoints" in tasks,
        max_image_side=config.inference_side,
    )


def labelled_categories(dataset: AnnotatedDataset, labels: Callable[[ObjectAnnotation], bool]) -> tuple[str, ...]:
    """The categories of the objects for which ``labels(object)`` holds: the boxes a head is
    trained on, and so the only boxes it should answer (``HypercolumnConfig.applies_to``)."""
    return tuple(sorted({o.category for im in dataset.images for o in im.objects if not o.iscrowd and labels(o)}))


def pick_device(request: str) -> torch.device:
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no usable GPU was found; use --device cpu")
    if dist.is_available() and dist.is_initialized() and request == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(request)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_inputs(samples: list[TrainingSample], config: HypercolumnConfig, device: torch.device
                 ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Each image normalised, unpadded (the trunk runs on each alone, as the predictor does)
    -> images [3, H_i, W_i], rois [N, 5] (image index, x0, y0, x1, y1), class_index [N]."""
    images = [normalize(s.image, config.mean, config.std).to(device) for s in samples]
    rois = torch.cat([F.pad(s.boxes, (1, 0), value=float(i)) for i, s in enumerate(samples)])
    class_index = torch.cat([s.class_index for s in samples])
    return images, rois.to(device), class_index.to(device)


def compute_losses(logits: dict[str, torch.Tensor], samples: list[TrainingSample], device: torch.device,
                   keypoint_absent: bool = False) -> dict[str, torch.Tensor]:
    """Each task's loss over the boxes labelled for it (targets of -1 are left out);
    ``keypoint_absent``: the network's keypoint softmax has the absent cell."""
    losses = {}
    if "figure_ground" in logits:
        losses["figure_ground"] = figure_ground_loss(logits["figure_ground"],
                                                     torch.cat([s.figure_ground for s in samples]).to(device))
    if "keypoints" in logits:
        losses["keypoints"] = keypoint_loss(logits["keypoints"], torch.cat([s.keypoints for s in samples]).to(device),
                                          keypoint_absent)
    if "parts" in logits:
        losses["parts"] = part_loss(logits["parts"], torch.cat([s.parts for s in samples]).to(device))
    return losses


def sample_taps(taps: tuple[str, ...], probability: float, generator: random.Random) -> tuple[str, ...]:
    """Layer dropout: with ``probability`` train a random non-empty proper subset of the taps, so
    that every subset the app can toggle gives a calibrated prediction on its own."""
    if probability <= 0 or len(taps) < 2 or generator.random() >= probability:
        return taps
    while True:
        subset = tuple(t for t in taps if generator.random() < 0.5)
        if subset and len(subset) < len(taps):
            return subset


class Trainer:
    def __init__(self, config: TrainConfig, train_set: AnnotatedDataset, val_set: AnnotatedDataset | None,
                 out_dir: str | Path,
                 validate: Callable[[HypercolumnModel, AnnotatedDataset], dict[str, float]] | None = None,
                 progress: bool = True, resuming: bool = False) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.device = pick_device(config.device)
        seed_everything(config.seed)
        self.model_config = model_config(config, train_set)
        # A resumed run takes every weight from resume.pt: neither ImageNet's nor the --init
        # checkpoint (which may have moved since) is read.
        start_from = "" if resuming else config.init_from
        self.model = build_hypercolumn(self.model_config,
                                       pretrained_backbone=config.pretrained and not start_from and not resuming)
        if start_from:
            load_initial_weights(self.model, start_from)
        self.model = self.model.to(self.device)
        freeze_batch_norm(self.model)
        freeze_trunk(self.model, config.freeze_trunk)
        freeze_heads(self.model, config.freeze_heads)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        spec = TargetSpec(self.model_config.output_size, self.model_config.keypoint_names,
                          len(self.model_config.part_names), self.model_config.class_names,
                          self.model_config.class_specific, "figure_ground" in self.model_config.tasks,
                          self.model_config.keypoint_absent)
        self.dataset = BoxTrainingDataset(train_set, spec, config.max_side, config.boxes_per_object,
                                          augment=config.augment, seed=config.seed, copy_paste=config.copy_paste)
        if len(self.dataset) == 0:
            raise ValueError("the training data has no usable objects (objects need a side >= 8 px and a mask, "
                             "part labels or keypoints of a trained task)")
        unknown = set(config.loss_weights) - set(self.model_config.tasks)
        if unknown:
            raise ValueError(f"loss weights for {sorted(unknown)}, which this network does not train "
                             f"(its tasks: {', '.join(self.model_config.tasks)})")
        self.val_set = val_set
        self.validate = validate
        self.progress = progress and self.rank == 0
        self.optimizer = make_optimizer(self.model, config.lr, config.head_lr_scale, config.weight_decay)
        self.steps_per_epoch = math.ceil(len(self.dataset) / (config.batch_images * self.world))
        self.schedule = make_schedule(self.optimizer, config.warmup_steps, self.steps_per_epoch * config.epochs)
        self.start_epoch = 0
        self.best = -math.inf
        self.history: list[EpochRow] = []
        self._tap_rng = random.Random(config.seed)
        self.start_step = 0  # steps of start_epoch already done (a run stopped mid-epoch)
        self._resumed_totals: dict[str, float] = {}  # that epoch's loss sums over those steps
        self._position: tuple[int, int, dict[str, float]] = (0, 0, {})  # epoch, steps done, loss sums
        self.data = data_fingerprint(train_set, val_set)
        self.resume_every_s = RESUME_EVERY_S
        self._stop = StopRequest("stopping after this step (Ctrl+C again to stop sooner)")
        # From the optimizer's update to the end of the step a second Ctrl+C waits: weights are saved whole.
        self.optimizer.register_step_pre_hook(lambda *args: setattr(self._stop, "updating", True))
        self.network = self.model
        if self.distributed:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # -- persistence --------------------------------------------------------------------------
    def resume(self, path: str | Path | None = None, allow_changed_data: bool = False) -> None:
        """Continue from ``resume.pt`` where it stopped: weights, optimizer, schedule, epoch and
        step within it, random state, best score. Refuses a state of another network, or (unless
        ``allow_changed_data``) one trained on other image lists."""
        path = Path(path) if path else self.out_dir / "resume.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no resume state; start with 'hcviewer-train train' first")
        state = load_resume_state(path, self.device)
        if state["model_config"] != self.model_config.to_dict():
            raise ValueError(f"{path}: was written for a different network ({state['model_config']}); "
                             "resume with the options of that run")
        change = describe_data_change(state.get("data"), self.data)
        if change and not allow_changed_data:
            raise ValueError(f"{path}: the data changed since this run started ({change}), so images would move "
                             "between training and validation; resume with the same data, or pass "
                             "--allow-changed-data to continue on the new lists")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            self._tap_rng.setstate(_tuple_state(state["tap_rng"]))
            torch.set_rng_state(state["torch_rng"])
            self.start_epoch, self.start_step = int(state["epoch"]), int(state.get("step", 0))
            self._resumed_totals = {str(k): float(v) for k, v in state.get("epoch_losses", {}).items()}
            self.best = float(state["best"])
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise ValueError(f"{path}: does not fit this network or is damaged ({str(exc).splitlines()[0]}); "
                             "start the run again with 'hcviewer-train train'") from None
        self._position = (self.start_epoch, self.start_step, dict(self._resumed_totals))

    def _save_resume(self, epoch: int, step: int = 0, totals: dict[str, float] | None = None) -> None:
        """The state after ``step`` steps of ``epoch`` (0-based; step 0: the epoch's start)."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "epoch": epoch, "step": step,
                 "epoch_losses": dict(totals or {}), "best": self.best, "data": self.data,
                 "model_config": self.model_config.to_dict(), "tap_rng": list(_list_state(self._tap_rng.getstate())),
                 "torch_rng": torch.get_rng_state()}
        path = self.out_dir / "resume.pt"
        with writing(path, self._after_failed_write()):
            write_atomic(path, lambda tmp: torch.save(state, tmp))

    def _after_failed_write(self) -> str:
        """What a failed write leaves and what to do (for the message)."""
        if (self.out_dir / "resume.pt").is_file():
            return ("resume.pt keeps the last saved state: free disk space, then continue with: "
                    f"hcviewer-train resume --out {self.out_dir}")
        return "Nothing of this run is saved yet: free disk space (or choose another --out) and start it again"

    def _training_header(self, epoch: int, seconds: float) -> dict:
        return {"trainer": "hcviewer-train", "config": self.config.to_json(), "epochs_done": epoch,
                "train_images": len(self.dataset), "seconds": round(seconds, 1), "device": str(self.device)}

    # -- loop ---------------------------------------------------------------------------------
    def fit(self) -> list[EpochRow]:
        """Train from the start (or the resumed position) to ``config.epochs``. Ctrl+C stops
        after the current step, saves the position and raises TrainingInterrupted."""
        if self.rank == 0:
            check_output_folder(self.out_dir)
            with writing(self.out_dir / "config.json", self._after_failed_write()):
                (self.out_dir / "config.json").write_text(json.dumps(self.config.to_json(), indent=2))
        started = time.perf_counter()
        try:
            with self._stop:
                for epoch in range(self.start_epoch, self.config.epochs):
                    row = self._train_epoch(epoch)
                    self._end_epoch(row, time.perf_counter() - started)
                    self._position = (epoch + 1, 0, {})
        except KeyboardInterrupt:
            epoch, step, totals = self._position
            if self.rank == 0:
                self._save_resume(epoch, step, totals)
                with writing(self.out_dir / "last.safetensors", self._after_failed_write()):
                    save_checkpoint(self.out_dir / "last.safetensors", self.model,
                                    self._training_header(epoch, time.perf_counter() - started))
            raise TrainingInterrupted(f"interrupted in epoch {epoch + 1} after step {step} of {self.steps_per_epoch}; "
                                      f"state saved in {self.out_dir}; continue with: "
                                      f"hcviewer-train resume --out {self.out_dir}") from None
        return self.history

    def _epoch_order(self, epoch: int) -> list[int]:
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.config.seed + epoch))
        if self.world > 1:
            # Every rank must run the same number of steps (DDP synchronises each backward):
            # repeat images to fill the last round, as DistributedSampler does.
            per_round = self.world * self.config.batch_images
            total = math.ceil(len(order) / per_round) * per_round
            order = order.repeat(math.ceil(total / len(order)))[:total]
        return order[self.rank::self.world].tolist()

    def _train_epoch(self, epoch: int) -> EpochRow:
        self.network.train()
        freeze_batch_norm(self.model)
        self.dataset.set_epoch(epoch)
        order = self._epoch_order(epoch)
        batches = [order[i:i + self.config.batch_images] for i in range(0, len(order), self.config.batch_images)]
        first = self.start_step if epoch == self.start_epoch else 0  # steps done before a resume
        totals: dict[str, float] = dict(self._resumed_totals) if first else {}
        self._position = (epoch, first, dict(totals))
        start = last_save = time.perf_counter()
        images = 0
        bar = tqdm(total=len(batches), initial=first, desc=f"epoch {epoch + 1}/{self.config.epochs}",
                   disable=not self.progress, unit="batch", dynamic_ncols=True)
        for step, indices in enumerate(batches[first:], start=first + 1):
            self._stop_if_requested()
            samples = [self.dataset[i] for i in indices]
            losses = self._step(samples)
            for name, value in losses.items():
                totals[name] = totals.get(name, 0.0) + value
            self._position = (epoch, step, dict(totals))
            self._stop.updating = False
            images += len(indices)
            elapsed = time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses.values()):.3f}", img_s=f"{images / elapsed:.2f}")
            if self.rank == 0 and time.perf_counter() - last_save >= self.resume_every_s:
                self._save_resume(*self._position)
                last_save = time.perf_counter()
        bar.close()
        self._stop_if_requested()
        seconds = time.perf_counter() - start
        mean = {k: v / max(1, len(batches)) for k, v in totals.items()}
        return EpochRow(epoch + 1, len(batches), self._weighted(mean), mean,
                        {name: float("nan") for name in VALIDATION_METRICS},
                        self.optimizer.param_groups[0]["lr"], seconds, images / max(seconds, 1e-9))

    def _stop_if_requested(self) -> None:
        """Stop between steps after a Ctrl+C (under torchrun: when any process got one, all stop)."""
        requested = self._stop.requested
        if self.distributed:
            flag = torch.tensor([float(requested)], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            requested = bool(flag.item())
        if requested:
            raise KeyboardInterrupt

    def _step(self, samples: list[TrainingSample]) -> dict[str, float]:
        images, rois, class_index = batch_inputs(samples, self.model_config, self.device)
        taps = sample_taps(self.model.taps, self.config.layer_dropout, self._tap_rng)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.network(images, rois, class_index, taps)
        losses = compute_losses(logits, samples, self.device, self.model_config.keypoint_absent)
        values = {k: float(v.detach()) for k, v in losses.items()}
        self._stop_if_diverged(values)
        self.optimizer.zero_grad(set_to_none=True)
        self._weighted(losses).backward()
        self.optimizer.step()
        self.schedule.step()
        return values

    def _stop_if_diverged(self, losses: dict[str, float]) -> None:
        """Stop before a step whose loss is NaN or infinite: the weights stay the last good ones,
        and the checkpoints of the finished epochs are kept (--lr nan wrote NaN weights)."""
        diverged = sorted(task for task, value in losses.items() if not math.isfinite(value))
        if diverged:
            epoch, done, _ = self._position
            raise TrainingDiverged(
                f"the {', '.join(diverged)} loss became {losses[diverged[0]]} at step {done + 1} of epoch "
                f"{epoch + 1}; training stopped before that step, and the checkpoints in {self.out_dir} (of the "
                "epochs finished before) are kept. Train again with a lower --lr")

    def _weighted(self, losses: dict):
        """The loss that is minimised: each task's loss times its weight (default 1)."""
        return sum(self.config.loss_weights.get(task, 1.0) * value for task, value in losses.items())

    def _end_epoch(self, row: EpochRow, seconds: float) -> None:
        if self.rank != 0:
            return
        if self.validate is not None and self.val_set is not None and self.val_set.images:
            row.validation.update(self.validate(self.model, self.val_set))  # the next epoch sets train mode
        self.history.append(row)
        header = self._training_header(row.epoch, seconds)
        metrics = {**{f"val_{k}": v for k, v in row.validation.items()}, "epoch": row.epoch}
        kept = self._after_failed_write()
        for name in ["last"] + ([f"epoch-{row.epoch}"] if self.config.keep_epochs else []):
            with writing(self.out_dir / f"{name}.safetensors", kept):
                save_checkpoint(self.out_dir / f"{name}.safetensors", self.model, header, metrics)
        score = validation_score(row.validation)
        score = score if not math.isnan(score) else -row.loss
        if score > self.best:
            with writing(self.out_dir / "best.safetensors", kept):
                save_checkpoint(self.out_dir / "best.safetensors", self.model, header, metrics)
            self.best = score  # once saved: a failed save is retried when this epoch is redone
        self._save_resume(row.epoch)
        with writing(self.out_dir / "metrics.csv", self._after_failed_write()):
            self._append_csv(row)
        if self.progress:
            tqdm.write(f"epoch {row.epoch}: loss {row.loss:.4f} ({', '.join(f'{k} {v:.4f}' for k, v in row.losses.items())})"
                       f", validation {', '.join(f'{k} {v:.4f}' for k, v in row.validation.items())}"
                       f", {row.seconds:.0f} s")

    def _append_csv(self, row: EpochRow) -> None:
        path = self.out_dir / "metrics.csv"
        fields = ["epoch", "steps", "loss", *[f"loss_{k}" for k in row.losses],
                  *[f"val_{k}" for k in VALIDATION_METRICS], "lr", "seconds", "images_per_second"]
        new = not path.exists() or row.epoch == 1
        with open(path, "w" if new else "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(fields)
            writer.writerow([row.epoch, row.steps, f"{row.loss:.5f}", *[f"{v:.5f}" for v in row.losses.values()],
                             *[f"{row.validation[k]:.5f}" for k in VALIDATION_METRICS], f"{row.lr:.3g}",
                             f"{row.seconds:.1f}",
                             f"{row.images_per_second:.3f}"])


def validation_score(validation: dict[str, float]) -> float:
    """The mean of the validation metrics that were measured (nan when none was)."""
    measured = [v for v in validation.values() if not math.isnan(v)]
    return sum(measured) / len(measured) if measured else float("nan")


def _list_state(state: tuple) -> list:
    """random.Random's state in plain lists, which ``torch.load(weights_only=True)`` accepts."""
    return [state[0], list(state[1]), state[2]]


def _tuple_state(state: list) -> tuple:
    return (state[0], tuple(state[1]), state[2])
