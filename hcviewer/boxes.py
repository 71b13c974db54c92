"""Whether a box can be segmented in an image (pure Python: used by the predictor, which imports
torch, and by the app's document, which must not)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

# The network computes in float32, which holds every whole pixel up to 2**24 (and overflows to
# infinity beyond 3.4e38, which crashed roi_align): coordinates are checked as float32 sees them.
MAX_COORDINATE = float(2**24)


def coordinates_problem(box: Sequence[float]) -> str | None:
    """Why box (x0, y0, x1, y1) has unusable coordinates whatever the image, as the end of a
    sentence: NaN or infinite, beyond +-MAX_COORDINATE pixels, or no width or height once
    rounded to float32. None when they are usable."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return "has a NaN or infinite coordinate"
    if any(abs(v) > MAX_COORDINATE for v in (x0, y0, x1, y1)):
        return f"has a coordinate beyond +-{MAX_COORDINATE:.0f} pixels"
    x0, y0, x1, y1 = struct.unpack("4f", struct.pack("4f", x0, y0, x1, y1))  # rounded as float32
    if x1 <= x0 or y1 <= y0:
        return "has zero or negative size"
    return None


def box_problem(box: Sequence[float], image_size: tuple[int, int]) -> str | None:
    """Why box (x0, y0, x1, y1) in pixels cannot be segmented in an image of (H, W) pixels, as
    the end of a sentence ("lies entirely outside the 160x120 image"); None when it can. A box
    partly outside the image is fine: the prediction covers the whole box."""
    problem = coordinates_problem(box)
    if problem is not None:
        return problem
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = image_size
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        return f"lies entirely outside the {w}x{h} image"
    return None


def describe_box(label: str, box: Sequence[float]) -> str:
    """A box as the user sees it: 'the person box at (200, 130)–(260, 170)'."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return f"the {label} box at ({x0:.0f}, {y0:.0f})–({x1:.0f}, {y1:.0f})"
