"""The configuration that fully describes a hypercolumn network; stored in every checkpoint."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from hcviewer.categories import DEFAULT_HEAD_CATEGORIES, head_applies

TASKS = ("figure_ground", "parts", "keypoints")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# What a configuration may claim, checked before any network is built: a checkpoint header is
# untrusted input, and a crafted one (grid_size 400 in a 6 MB file) once allocated 20 GB.
INT_RANGES = {  # field -> (smallest, largest)
    "grid_size": (1, 16),  # the paper uses 5 (K x K location-specific classifiers)
    "output_size": (2, 256),  # S x S heatmap per box; the paper uses 50
    "max_image_side": (32, 4096),  # at least one cell of a stride-32 trunk
}
NAME_COUNTS = {  # field -> the most names it may hold
    "taps": 16,
    "class_names": 2000,  # LVIS has 1,203 categories
    "part_names": 255,  # part label maps are uint8: 0 background, 1..255 parts
    "keypoint_names": 256,  # COCO-WholeBody has 133
    "keypoint_categories": 2000,
    "part_categories": 2000,
}
MAX_NAME_LENGTH = 200
MAX_SKELETON_EDGES = 1024


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
    ``keypoint_absent``: the keypoint softmax has a "not in this box" cell besides the S x S
    ones (``modeling.keypoints.softmax_cells``), so a joint's score is its probability of
    being there; checkpoints written before it have none.
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
    keypoint_categories: tuple[str, ...] = DEFAULT_HEAD_CATEGORIES
    part_categories: tuple[str, ...] = DEFAULT_HEAD_CATEGORIES
    part_colors: tuple[tuple[int, int, int], ...] = ()
    keypoint_absent: bool = False
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
        _check_types_and_bounds(self)
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
        keypoints and parts as ``hcviewer.categories.head_applies``. A motorcycle box of a person
        model gets no keypoints: the head was never trained on motorcycles."""
        if task not in self.tasks or task == "figure_ground":
            return task in self.tasks
        categories = self.keypoint_categories if task == "keypoints" else self.part_categories
        return head_applies(label, categories)

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
                kw[key] = tuple(_json_list(key, kw[key]))
        if "skeleton" in kw:
            kw["skeleton"] = tuple(_edge(edge) for edge in _json_list("skeleton", kw["skeleton"]))
        if "part_colors" in kw:
            colors = _json_list("part_colors", kw["part_colors"])
            kw["part_colors"] = tuple(tuple(_json_list("part_colors", c)) for c in colors)
        return cls(**kw)


def _check_types_and_bounds(config: HypercolumnConfig) -> None:
    """ValueError naming the field whose value has the wrong type or is out of bounds."""
    if not isinstance(config.backbone, str):
        raise ValueError(f"backbone must be a name, got {config.backbone!r}")
    for name, (low, high) in INT_RANGES.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    for name, most in NAME_COUNTS.items():
        names = getattr(config, name)
        if len(names) > most or not all(isinstance(n, str) and 0 < len(n) <= MAX_NAME_LENGTH for n in names):
            raise ValueError(f"{name} must be at most {most} names of 1 to {MAX_NAME_LENGTH} characters, "
                             f"got {len(names)}: {_preview(names)}")
    for name in ("class_specific", "keypoint_absent"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be true or false, got {getattr(config, name)!r}")
    if len(config.skeleton) > MAX_SKELETON_EDGES:
        raise ValueError(f"skeleton has {len(config.skeleton)} edges, at most {MAX_SKELETON_EDGES} are allowed")
    for name, positive in (("mean", False), ("std", True)):
        values = getattr(config, name)
        if len(values) != 3 or not all(_is_finite_number(v) and (v > 0 or not positive) for v in values):
            need = "positive" if positive else "finite"
            raise ValueError(f"{name} must be 3 {need} numbers (one per RGB channel), got {_preview(values)}")
    if not isinstance(config.extra, dict):
        raise ValueError(f"extra must be a JSON object, got {type(config.extra).__name__}")


def _json_list(key: str, value: Any) -> list | tuple:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{key} must be a list, got {_preview(value)}")
    return value


def _edge(edge: Any) -> tuple[int, int]:
    if (not isinstance(edge, (list, tuple)) or len(edge) != 2
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in edge)):
        raise ValueError(f"skeleton edges must be pairs of keypoint indices, got {_preview(edge)}")
    return edge[0], edge[1]


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _preview(values: Any) -> str:
    text = repr(values)
    return text if len(text) <= 120 else text[:117] + "..."

