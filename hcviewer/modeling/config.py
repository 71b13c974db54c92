"""The configuration that fully describes a hypercolumn network; stored in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

TASKS = ("figure_ground", "parts", "keypoints")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Box labels that name no category (box files without a label column, boxes drawn in the app):
# every head answers them, as it answers a box with no label at all.
CLASS_AGNOSTIC_LABELS = ("", "object", "unknown")


@dataclass(frozen=True)
class HypercolumnConfig:
    """Everything needed to rebuild a network before its weights are loaded.

    ``taps`` empty means the backbone's default (the paper's choice for VGG16/AlexNet).
    ``class_specific`` gives one classifier set per entry of ``class_names`` (the paper's SDS
    setting: the box's category picks its channels); otherwise one class-agnostic set.
    ``keypoint_categories`` / ``part_categories``: the box categories the keypoint and part heads
    were trained on and answer (``applies_to``); empty means every category. Checkpoints written
    before these fields existed were trained on people, hence the default.
    ``part_colors``: one RGB colour per part name for displays (empty: the app's palette).
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
    keypoint_categories: tuple[str, ...] = ("person",)
    part_categories: tuple[str, ...] = ("person",)
    part_colors: tuple[tuple[int, int, int], ...] = ()
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
        if self.part_colors and (len(self.part_colors) != len(self.part_names) or not all(
                len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in self.part_colors)):
            raise ValueError(f"part_colors must give one (r, g, b) of 0..255 per part name "
                             f"({len(self.part_names)}), got {self.part_colors}")

    def applies_to(self, task: str, label: str | None) -> bool:
        """Whether ``task``'s head answers a box labelled ``label``: figure-ground every box;
        keypoints and parts the boxes of their categories (case-insensitive) and class-agnostic
        boxes (``label`` None or one of ``CLASS_AGNOSTIC_LABELS``). A motorcycle box of a person
        model gets no keypoints: the head was never trained on motorcycles."""
        categories = {"keypoints": self.keypoint_categories, "parts": self.part_categories}.get(task, ())
        if task not in self.tasks or task == "figure_ground" or not categories:
            return task in self.tasks
        name = (label or "").strip().casefold()
        return name in CLASS_AGNOSTIC_LABELS or name in {c.casefold() for c in categories}

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
        for key in ("taps", "tasks", "class_names", "part_names", "keypoint_names", "mean", "std",
                    "keypoint_categories", "part_categories"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if "skeleton" in kw:
            kw["skeleton"] = tuple((int(a), int(b)) for a, b in kw["skeleton"])
        if "part_colors" in kw:
            kw["part_colors"] = tuple(tuple(c) for c in kw["part_colors"])
        return cls(**kw)
