"""Which boxes a part or keypoint head answers (torch-free: the app applies it to saved
annotations and to boxes drawn before a model has loaded).

A person keypoint head run on a motorcycle box still answers 17 points; they mean nothing. A
checkpoint names the categories each head was trained on (``HypercolumnConfig``'s
``keypoint_categories`` and ``part_categories``; empty: every category; checkpoints older than
these fields: people).
"""

from __future__ import annotations

DEFAULT_HEAD_CATEGORIES = ("person",)
# Box labels that name no category (box files without a label column, boxes drawn in the app):
# every head answers them, as it answers a box with no label at all.
CLASS_AGNOSTIC_LABELS = ("", "object", "unknown")


def head_applies(label: str | None, categories: tuple[str, ...]) -> bool:
    """Whether a head trained on ``categories`` answers a box labelled ``label``
    (case-insensitive; empty ``categories``: every box)."""
    name = (label or "").strip().casefold()
    return not categories or name in CLASS_AGNOSTIC_LABELS or name in {c.casefold() for c in categories}
