"""An accepted mask as editable polygons, and a polygon edit back onto the mask (Qt-free).

``mask_to_polygons`` traces every boundary of a mask (each part, each hole, each part inside a
hole) with ``cv2.findContours`` and simplifies it with ``cv2.approxPolyDP`` (``TOLERANCES``);
``rasterize`` draws polygons back. Points are image coordinates: pixel (col, row) covers
[col, col + 1) x [row, row + 1), so a boundary pixel's centre is (col + 0.5, row + 0.5), as the
brush and the outlines use.

An edit (``move_vertex``, ``insert_vertex``, ``delete_vertex``) gives new polygons, and
``apply_edit`` changes the mask only where the polygons' drawing changed (and ``EDIT_MARGIN`` px
around it): pixels elsewhere keep exactly what they had, so the simplification never leaks into
the annotation, and specks too small to trace are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hcviewer.annotation.mask_crops import MaskCrop, crop_mask

# px a simplified boundary may stray from the mask's, coarsest first; 1 px alone kept a mean IoU of
# 0.964 with coco-val-dev's masks (small objects lose most), the first of these that keeps 0.99
# gives 0.991 with 26 vertices an object (median; 0.5 px alone: 0.993 with 44). docs/performance.md
TOLERANCES = (1.0, 0.75, 0.5)
MIN_IOU = 0.99
EDIT_MARGIN = 2  # px around a changed region also redrawn: the boundary's 1 px simplification error
MIN_VERTICES = 3
_SHIFT = 4  # cv2 draws at 1/16 px


@dataclass(frozen=True, eq=False)
class Ring:
    """One closed boundary: ``points`` float64 [N, 2] (x, y) image px, N >= 3; ``depth`` 0 for a
    part's outer boundary, 1 for a hole in it, 2 for a part inside that hole, and so on."""

    points: np.ndarray
    depth: int = 0

    @property
    def is_hole(self) -> bool:
        return self.depth % 2 == 1


Polygons = tuple[Ring, ...]


def mask_to_polygons(crop: MaskCrop, tolerance: float | None = None) -> Polygons:
    """Every boundary of the mask, simplified to within ``tolerance`` px (default: the coarsest
    of ``TOLERANCES`` whose polygons keep ``MIN_IOU`` with the mask; small objects need the
    finer ones). Boundaries of fewer than 3 vertices (specks of a pixel or two) are left out
    (and stay in the mask)."""
    if tolerance is not None:
        return _traced(crop, tolerance)
    for tolerance in TOLERANCES:
        polygons = _traced(crop, tolerance)
        if polygons and _iou(crop, polygons_mask(polygons, crop.image_size)) >= MIN_IOU:
            break
    return polygons


def _traced(crop: MaskCrop, tolerance: float) -> Polygons:
    if not crop.mask.size:
        return ()
    padded = np.pad(crop.mask.astype(np.uint8), 1)  # a part touching the crop's edge is traced whole
    contours, hierarchy = cv2.findContours(padded, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return ()
    parents = hierarchy[0][:, 3]
    offset = np.array([crop.x0 - 1 + 0.5, crop.y0 - 1 + 0.5])
    rings = []
    for i, contour in enumerate(contours):
        points = cv2.approxPolyDP(contour, tolerance, True)[:, 0, :]
        if len(points) >= MIN_VERTICES:
            rings.append(Ring(points.astype(np.float64) + offset, _depth(parents, i)))
    return tuple(rings)


def _iou(a: MaskCrop, b: MaskCrop) -> float:
    """Intersection over union of two crops of the same image (0 when either is empty)."""
    if not a.mask.size or not b.mask.size:
        return 0.0
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a.xyxy, b.xyxy
    x0, y0, x1, y1 = min(ax0, bx0), min(ay0, by0), max(ax1, bx1), max(ay1, by1)
    ra, rb = a.region(x0, y0, x1, y1), b.region(x0, y0, x1, y1)
    return np.count_nonzero(ra & rb) / np.count_nonzero(ra | rb)


def _depth(parents: np.ndarray, index: int) -> int:
    depth = 0
    while parents[index] >= 0:
        index, depth = parents[index], depth + 1
    return depth


def rasterize(polygons: Polygons, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """bool [height, width]: the pixels from (x0, y0) the polygons cover. Boundaries are drawn
    outermost first, each part set and each hole cleared; a hole's own boundary stays set (it
    runs through the part's pixels around the hole, as ``mask_to_polygons`` traces it)."""
    canvas = np.zeros((height, width), np.uint8)
    for ring in sorted(polygons, key=lambda r: r.depth):
        pixels = ring.points - 0.5  # pixel centres at whole numbers, as cv2 draws
        (lx, ly), (hx, hy) = np.floor(pixels.min(0)).astype(int) - 1, np.ceil(pixels.max(0)).astype(int) + 2
        ix0, iy0, ix1, iy1 = max(lx, x0), max(ly, y0), min(hx, x0 + width), min(hy, y0 + height)
        if ix1 <= ix0 or iy1 <= iy0:
            continue  # covers none of these pixels (an edit redraws a small region of a large mask)
        # Each ring is drawn whole on its own bounding box: cv2 draws an edge it clips a little
        # differently, so drawing on the region alone made an edit flip pixels of edges it left.
        own, points = np.zeros((hy - ly, hx - lx), np.uint8), [_fixed(pixels - (lx, ly))]
        cv2.fillPoly(own, points, 1, cv2.LINE_8, _SHIFT)
        if ring.is_hole:
            cv2.polylines(own, points, True, 0, 1, cv2.LINE_8, _SHIFT)
        inside = own[iy0 - ly:iy1 - ly, ix0 - lx:ix1 - lx] > 0
        canvas[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0][inside] = 0 if ring.is_hole else 1
    return canvas.astype(bool)


def _fixed(pixels: np.ndarray) -> np.ndarray:
    """int32 [N, 2] in cv2's fixed point (``_SHIFT`` fractional bits)."""
    return np.round(pixels * (1 << _SHIFT)).astype(np.int32)


def polygons_mask(polygons: Polygons, image_size: tuple[int, int]) -> MaskCrop:
    """The polygons drawn over an image of ``image_size`` (height, width), as a crop."""
    x0, y0, x1, y1 = _bounds(np.concatenate([r.points for r in polygons] or [np.zeros((0, 2))]), image_size)
    return crop_mask(rasterize(polygons, x0, y0, x1 - x0, y1 - y0), x0, y0, image_size)


def apply_edit(crop: MaskCrop, before: Polygons, after: Polygons) -> MaskCrop:
    """The mask ``crop`` after its polygons changed from ``before`` to ``after``: the pixels
    whose drawing changed, and those within ``EDIT_MARGIN`` px of them, take the ``after``
    drawing; every other pixel keeps its value."""
    changed = _changed_points(before, after)
    if not len(changed):
        return crop
    x0, y0, x1, y1 = _bounds(changed, crop.image_size, margin=EDIT_MARGIN + 1)
    if x1 <= x0 or y1 <= y0:
        return crop
    drawn = rasterize(after, x0, y0, x1 - x0, y1 - y0)
    differs = drawn != rasterize(before, x0, y0, x1 - x0, y1 - y0)
    if not differs.any():
        return crop
    size = 2 * EDIT_MARGIN + 1
    near = cv2.dilate(differs.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)
    region = crop.region(x0, y0, x1, y1)
    region[near] = drawn[near]
    # the crop grows to take the region in; pixels outside both are unset
    cx0, cy0, cx1, cy1 = crop.xyxy if crop.mask.size else (x0, y0, x1, y1)
    ux0, uy0, ux1, uy1 = min(cx0, x0), min(cy0, y0), max(cx1, x1), max(cy1, y1)
    whole = crop.region(ux0, uy0, ux1, uy1)
    whole[y0 - uy0:y1 - uy0, x0 - ux0:x1 - ux0] = region
    return crop_mask(whole, ux0, uy0, crop.image_size)


def _changed_points(before: Polygons, after: Polygons) -> np.ndarray:
    """[K, 2]: the vertices an edit moved, added or removed, with their neighbours (the edges
    that changed run between them); only these bound the pixels to redraw (a large photo's
    mask has thousands of vertices)."""
    runs = [r.points for r in before[len(after):] + after[len(before):]]  # rings added or removed: whole
    for old, new in zip(before, after):
        if old is not new:
            runs += _changed_run(old.points, new.points)
    return np.concatenate(runs) if runs else np.zeros((0, 2))


def _changed_run(old: np.ndarray, new: np.ndarray) -> list[np.ndarray]:
    """Of two versions of a ring, the vertices between their common start and common end, and
    the vertex either side."""
    n = min(len(old), len(new))
    same = np.all(old[:n] == new[:n], axis=1)
    start = int(np.argmin(same)) if not same.all() else n
    same_end = np.all(old[len(old) - n:][::-1] == new[len(new) - n:][::-1], axis=1)
    end = min(int(np.argmin(same_end)) if not same_end.all() else n, n - start)
    return [points[np.arange(start - 1, len(points) - end + 1) % len(points)] for points in (old, new)]


def _bounds(points: np.ndarray, image_size: tuple[int, int], margin: int = 1) -> tuple[int, int, int, int]:
    """The pixels (x0, y0, x1, y1), clipped to the image, that polygons through ``points`` may
    cover near them, ``margin`` px around."""
    height, width = image_size
    if not len(points):
        return 0, 0, 0, 0
    x0, y0 = np.floor(points.min(0)).astype(int) - margin
    x1, y1 = np.ceil(points.max(0)).astype(int) + margin
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


# ------------------------------------------------------------------------------ edits
def move_vertex(polygons: Polygons, ring: int, index: int, xy: tuple[float, float]) -> Polygons:
    """Vertex ``index`` of ring ``ring`` moved to ``xy``."""
    points = polygons[ring].points.copy()
    points[index] = xy
    return _replaced(polygons, ring, points)


def insert_vertex(polygons: Polygons, ring: int, index: int, xy: tuple[float, float]) -> Polygons:
    """A vertex at ``xy`` inserted into ring ``ring`` as its vertex ``index`` (between the vertices
    ``index - 1`` and ``index`` before it)."""
    return _replaced(polygons, ring, np.insert(polygons[ring].points, index, xy, axis=0))


def delete_vertex(polygons: Polygons, ring: int, index: int) -> Polygons:
    """Vertex ``index`` of ring ``ring`` removed; ValueError when the ring has only 3 vertices."""
    points = polygons[ring].points
    if len(points) <= MIN_VERTICES:
        raise ValueError(f"a polygon keeps at least {MIN_VERTICES} vertices")
    return _replaced(polygons, ring, np.delete(points, index, axis=0))


def _replaced(polygons: Polygons, ring: int, points: np.ndarray) -> Polygons:
    return polygons[:ring] + (Ring(points, polygons[ring].depth),) + polygons[ring + 1:]


def nearest_edge(polygons: Polygons, xy: tuple[float, float]) -> tuple[int, int, np.ndarray, float]:
    """Of the rings' edges, the one nearest ``xy``: (its ring; the index its end vertex has, so
    that ``insert_vertex`` at that index splits it; the nearest point on it; the distance)."""
    best = (0, 0, np.asarray(xy, np.float64), np.inf)
    for ring, points in enumerate(r.points for r in polygons):
        start, along = points, np.roll(points, -1, axis=0) - points
        length2 = np.maximum((along ** 2).sum(1), 1e-12)
        t = np.clip(((np.asarray(xy, np.float64) - start) * along).sum(1) / length2, 0.0, 1.0)
        nearest = start + t[:, None] * along
        distances = np.hypot(*(nearest - xy).T)
        edge = int(np.argmin(distances))
        if distances[edge] < best[3]:
            best = (ring, edge + 1, nearest[edge], float(distances[edge]))
    return best

