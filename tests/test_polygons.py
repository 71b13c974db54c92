"""Polygon editing's geometry (hcviewer.annotation.polygons): masks traced into polygons and drawn
back, and vertex edits applied to the mask only where they change it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hcviewer.annotation.mask_crops import MaskCrop, crop_mask
from hcviewer.annotation.polygons import (
    EDIT_MARGIN, MIN_IOU, apply_edit, delete_vertex, insert_vertex, mask_to_polygons, move_vertex, nearest_edge,
    polygons_mask, rasterize,
)

SIZE = (120, 160)  # (height, width)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def _disc(cx: float, cy: float, radius: float) -> np.ndarray:
    mask = np.zeros(SIZE, np.uint8)
    cv2.circle(mask, (cx, cy), radius, 1, -1)
    return mask.astype(bool)


def _square() -> MaskCrop:
    mask = np.zeros(SIZE, bool)
    mask[10:20, 30:40] = True
    return crop_mask(mask)


def test_a_square_becomes_four_vertices_at_its_boundary_pixels_centres_and_draws_back_exactly():
    crop = _square()
    (ring,) = mask_to_polygons(crop)
    assert ring.depth == 0 and not ring.is_hole
    assert sorted(map(tuple, ring.points)) == [(30.5, 10.5), (30.5, 19.5), (39.5, 10.5), (39.5, 19.5)]
    assert np.array_equal(polygons_mask((ring,), SIZE).full(), crop.full())


@pytest.mark.parametrize("radius", [4, 10, 40])
def test_a_disc_is_traced_within_the_iou_the_editor_promises(radius):
    mask = _disc(80, 60, radius)
    polygons = mask_to_polygons(crop_mask(mask))
    assert len(polygons) == 1
    iou = _iou(polygons_mask(polygons, SIZE).full(), mask)
    assert iou >= {4: 0.95, 10: 0.98, 40: MIN_IOU}[radius]
    assert len(polygons[0].points) < 4 * radius  # simplified, not every boundary pixel


def test_parts_holes_and_a_part_inside_a_hole_are_each_a_ring_and_draw_back():
    mask = _disc(50, 60, 40) & ~_disc(50, 60, 20) | _disc(50, 60, 6) | _disc(135, 30, 12)
    polygons = mask_to_polygons(crop_mask(mask))
    assert sorted(r.depth for r in polygons) == [0, 0, 1, 2]
    drawn = polygons_mask(polygons, SIZE).full()
    assert _iou(drawn, mask) >= MIN_IOU
    assert drawn[60, 50] and not drawn[60, 50 - 13] and drawn[60, 50 - 30] and drawn[30, 135]


def test_an_empty_mask_has_no_polygons_and_a_speck_is_left_out():
    assert mask_to_polygons(crop_mask(np.zeros(SIZE, bool))) == ()
    speck = np.zeros(SIZE, bool)
    speck[5, 5] = True
    assert mask_to_polygons(crop_mask(speck)) == ()


def test_moving_a_vertex_out_adds_the_swept_pixels_and_nothing_far_away_changes():
    mask = _square().full()
    mask[100, 150] = True  # a speck no polygon traces: kept by every edit
    crop = crop_mask(mask)
    polygons = mask_to_polygons(crop)
    ring = next(i for i, r in enumerate(polygons) if len(r.points) == 4)
    corner = int(np.argmax(polygons[ring].points.sum(1)))  # (39.5, 19.5), the bottom right
    moved = move_vertex(polygons, ring, corner, (49.5, 29.5))
    edited = apply_edit(crop, polygons, moved).full()
    assert edited[24, 44] and not mask[24, 44]  # on the diagonal the corner was dragged along
    assert edited[100, 150] and np.array_equal(edited[10:20, 30:40], mask[10:20, 30:40])
    assert np.array_equal(edited, rasterize(moved, 0, 0, SIZE[1], SIZE[0]) | (mask & ~_near(edited ^ mask)))
    assert polygons[ring].points[corner].tolist() == [39.5, 19.5]  # edits make new polygons


def _near(changed: np.ndarray, margin: int = EDIT_MARGIN) -> np.ndarray:
    size = 2 * margin + 1
    return cv2.dilate(changed.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)


def test_moving_a_vertex_in_leaves_no_sliver_of_the_old_boundary():
    mask = _disc(80, 60, 30)
    crop = crop_mask(mask)
    polygons = mask_to_polygons(crop)
    points = polygons[0].points
    top = int(np.argmin(points[:, 1]))
    moved = move_vertex(polygons, 0, top, points[top] + (0, 20))  # the top pushed 20 px down
    edited = apply_edit(crop, polygons, moved).full()
    drawn = rasterize(moved, 0, 0, SIZE[1], SIZE[0])
    swept = rasterize(polygons, 0, 0, SIZE[1], SIZE[0]) & ~drawn
    # the mask's pixels just outside the old edges (the simplification's error) went with them
    assert not (edited & ~drawn & _near(swept, 1)).any()
    assert not edited[35, 80] and mask[35, 80]
    far = ~_near(swept, EDIT_MARGIN)
    assert np.array_equal(edited[far], mask[far])


@pytest.mark.parametrize("edit", ["move", "insert", "delete"])
def test_an_edit_of_any_vertex_redraws_what_drawing_everything_would(edit):
    """``apply_edit`` redraws only near the changed vertices: the same mask as redrawing the
    whole image would give, whichever vertex (the first and last too) and whichever ring."""
    mask = _disc(60, 60, 40) & ~_disc(60, 60, 15) | _disc(135, 30, 12)
    crop = crop_mask(mask)
    polygons = mask_to_polygons(crop)
    for ring, points in enumerate(r.points for r in polygons):
        for index in range(len(points)):
            if edit == "move":
                after = move_vertex(polygons, ring, index, points[index] + (7.3, -5.1))
            elif edit == "insert":
                after = insert_vertex(polygons, ring, index, points[index - 1] + (4.0, 6.0))
            else:
                after = delete_vertex(polygons, ring, index)
            drawn = rasterize(after, 0, 0, SIZE[1], SIZE[0])
            expected = np.where(_near(drawn != rasterize(polygons, 0, 0, SIZE[1], SIZE[0])), drawn, mask)
            assert np.array_equal(apply_edit(crop, polygons, after).full(), expected), (ring, index)


def test_inserting_a_vertex_on_an_edge_changes_no_pixel_and_deleting_it_neither():
    crop = _square()
    polygons = mask_to_polygons(crop)
    ring, index, point, distance = nearest_edge(polygons, (41.0, 15.0))
    assert ring == 0 and distance == pytest.approx(1.5) and point.tolist() == [39.5, 15.0]
    added = insert_vertex(polygons, 0, index, point)
    assert len(added[0].points) == 5 and added[0].points[index].tolist() == [39.5, 15.0]
    assert apply_edit(crop, polygons, added) is crop
    assert apply_edit(crop, added, delete_vertex(added, 0, index)) is crop


def test_deleting_a_corner_cuts_it_off_and_a_triangle_keeps_its_three_vertices():
    crop = _square()
    polygons = mask_to_polygons(crop)
    corner = int(np.argmax(polygons[0].points.sum(1)))
    triangle = delete_vertex(polygons, 0, corner)
    edited = apply_edit(crop, polygons, triangle).full()
    assert not edited[19, 39] and edited[10, 30] and edited[15, 34]
    with pytest.raises(ValueError, match="at least 3"):
        delete_vertex(triangle, 0, 0)


def test_a_vertex_dragged_off_the_image_is_clipped_to_it():
    crop = _square()
    polygons = mask_to_polygons(crop)
    corner = int(np.argmax(polygons[0].points.sum(1)))
    edited = apply_edit(crop, polygons, move_vertex(polygons, 0, corner, (500.0, 400.0)))
    assert edited.image_size == SIZE and edited.full()[SIZE[0] - 1, SIZE[1] - 1]
