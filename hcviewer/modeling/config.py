"""The configuration that fully describes a hypercolumn network; stored in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

TASKS = ("figure_ground", "parts", "keypoints")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class HypercolumnConfig:
    """Everything needed to rebuild a network before its weights are loaded.

    ``taps`` empty means the backbone's default (the paper's choice for VGG16/AlexNet).
    ``class_specific`` gives one classifier set per entry of ``class_names`` (the paper's SDS
    setting: the box's category picks its channels); otherwise one class-agnostic set.
    """

    backbone: str = "mobilenet_v2"
    taps: tuple[str, ...] = ()
    grid_size: int = 5
    output_size: int = 50
    tasks: tuple[str, ...] = ("figure_ground",)
    class_names: tuple[str, ...] = ("object",)
    class_specific: bool = False
    part_names: tuple[str, ...] = ()
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    max_image_side: int = 640
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks}")
        if "parts" in self.tasks and not self.part_names:
            raise ValueError("the parts task needs part_names")
        if "keypoints" in self.tasks and not self.keypoint_names:
            raise ValueError("the keypoints task needs keypoint_names")
        if self.grid_size < 1 or self.output_size < 2:
            raise ValueError("grid_size must be >= 1 and output_size >= 2")
        if not self.class_names:
            raise ValueError("class_names must name at least one class")
        for a, b in self.skeleton:
            if not (0 <= a < len(self.keypoint_names) and 0 <= b < len(self.keypoint_names)):
                raise ValueError(f"skeleton edge {(a, b)} names a keypoint that does not exist")

    def task_channels(self, task: str) -> int:
        """Output channels of one task (per class when class-specific)."""
        if task == "figure_ground":
            return 1
        if task == "parts":
            return len(self.part_names) + 1  # + background
        if task == "keypoints":
            return len(self.keypoint_names)
        raise KeyError(task)

    @property
    def num_classifier_sets(self) -> int:
        return len(self.class_names) if self.class_specific else 1

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["skeleton"] = [list(e) for e in self.skeleton]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HypercolumnConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}")
        kw = dict(d)
        for key in ("taps", "tasks", "class_names", "part_names", "keypoint_names", "mean", "std"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if "skeleton" in kw:
            kw["skeleton"] = tuple((int(a), int(b)) for a, b in kw["skeleton"])
        return cls(**kw)
