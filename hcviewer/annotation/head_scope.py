"""Which boxes a checkpoint's part and keypoint heads apply to, in the app (Qt-free, torch-free):
the rule of ``hcviewer.categories``, applied to saved annotations and to boxes drawn before a
model has loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hcviewer.categories import DEFAULT_HEAD_CATEGORIES, head_applies

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
        return head_applies(label, self.keypoint_categories)

    def parts_apply(self, label: str | None) -> bool:
        return head_applies(label, self.part_categories)
