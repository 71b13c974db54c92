"""Which boxes a checkpoint's part and keypoint heads apply to, in the app (Qt-free, torch-free):
the rule of ``hcviewer.categories``, applied to saved annotations and to boxes drawn before a
model has loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hcviewer.categories import DEFAULT_HEAD_CATEGORIES, head_applies

# Keypoints scoring below this are saved as v=0 (``annotation_file.keypoint_fields``), whatever
# the display shows; the *Min. keypoint score* slider starts here, so that by default what is shown
# is what is saved. A keypoint's score is the probability at its heatmap's peak: on the demo
# photo the bundled model gives 0.1-0.8 to clear joints and under 0.04 to joints outside the box
# or unseen (its keypoint head has a "not in this box" cell). On coco-val-kp-dev (44 people,
# 748 points; docs/performance.md) a point saved at 0.05 is a COCO-labelled point within 0.1 box
# sizes 80% of the time (recall 39%, F1 0.53); 0.01 gives the best F1 (0.65) with precision 54%:
# 0.05 saves fewer wrong points for the annotator to fix.
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
