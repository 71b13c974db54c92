"""Which boxes a checkpoint's part and keypoint heads apply to (Qt-free, torch-free).

A person keypoint head run on a motorcycle box still answers 17 points; they mean nothing. The
checkpoint's config names the categories each head was trained on (``keypoint_categories``,
``part_categories``; empty: every category; checkpoints older than these fields: people). The
rule is ``HypercolumnConfig.applies_to``'s, restated here so that the app can apply it to saved
annotations and to boxes drawn before a model has loaded without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_HEAD_CATEGORIES = ("person",)  # HypercolumnConfig's default
CLASS_AGNOSTIC_LABELS = ("", "object", "unknown")  # labels that name no category: every head answers them
# Keypoints scoring below this are hidden and saved as v=0. A keypoint's score is its heatmap's
# peak probability: the bundled model gives 0.2-0.5 to clear joints, 0.05-0.2 to most others
# and 0.01-0.03 to points it cannot see.
DEFAULT_KEYPOINT_THRESHOLD = 0.05


@dataclass(frozen=True)
class HeadScope:
    """The categories the keypoint and part heads apply to (empty: every category)."""

    keypoint_categories: tuple[str, ...] = DEFAULT_HEAD_CATEGORIES
    part_categories: tuple[str, ...] = DEFAULT_HEAD_CATEGORIES

    @classmethod
    def from_config(cls, config: Any) -> "HeadScope":
        """From a checkpoint config or the app's model info (attributes ``keypoint_categories``
        and ``part_categories``; a config without them: the defaults)."""
        return cls(*(tuple(str(name) for name in getattr(config, key, DEFAULT_HEAD_CATEGORIES))
                     for key in ("keypoint_categories", "part_categories")))

    def keypoints_apply(self, label: str | None) -> bool:
        return _applies(label, self.keypoint_categories)

    def parts_apply(self, label: str | None) -> bool:
        return _applies(label, self.part_categories)


def _applies(label: str | None, categories: tuple[str, ...]) -> bool:
    name = (label or "").strip().casefold()
    return not categories or name in CLASS_AGNOSTIC_LABELS or name in {c.casefold() for c in categories}
