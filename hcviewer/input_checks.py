"""Checks of records that the readers of box files and annotations share (pure Python), so that
a file is refused alike wherever it is opened, when it is read, not later."""

from __future__ import annotations

from typing import Any


def category_id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a COCO category id, as the end of a sentence; None when it can.
    COCO results name categories by whole numbers: a string id was read, and ``hcviewer
    predict`` stopped at the first image's results, after segmenting it."""
    if isinstance(value, bool) or not isinstance(value, int):
        text = repr(value)
        return f"must be a whole number, as COCO results need, got {text if len(text) <= 40 else text[:37] + '...'}"
    return None

