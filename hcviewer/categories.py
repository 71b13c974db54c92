"""Which boxes a part or keypoint head answers (torch-free: the app applies it to saved
annotations and to boxes drawn before a model has loaded).

A person keypoint head run on a motorcycle box still answers 17 points; they mean nothing. A
checkpoint names the categories each head was trained on (``HypercolumnConfig``'s
``keypoint_categories`` and ``part_categories``; empty: every category; checkpoints older than
these fields: people).
"""

from __future__ import annotations

DEFAULT_HEAD_CATEGORIES = ("person",)


def head_applies(label: str | None, categories: tuple[str, ...]) -> bool:
    """Whether a head trained on ``categories`` answers a box labelled ``label``
    (case-insensitive; empty ``categories``: every box; ``label`` None: the caller names no
    category, as ``HypercolumnPredictor.predict`` without ``categories``).

    A box whose label names no class (``object`` from a box file without labels or drawn in
    the app, ``unknown``, empty) is answered only by a head trained on every category: a person
    head's 17 points on a box that may be a plane would be saved as a person's. Relabel the box
    ``person`` to get them."""
    if label is None:
        return True
    return not categories or label.strip().casefold() in {c.casefold() for c in categories}


# COCO person keypoint names and skeleton (0-based), as in person_keypoints_*.json.
COCO_PERSON_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# COCO's 1-based skeleton converted to 0-based index pairs.
COCO_PERSON_SKELETON = tuple(
    (a - 1, b - 1)
    for a, b in (
        (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
        (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
    )
)
