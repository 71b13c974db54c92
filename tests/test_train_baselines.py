"""Box-only baselines: exact box and ellipse masks, GrabCut on a synthetic disc."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hcviewer.train.baselines import BASELINES, box_filled, grabcut, inscribed_ellipse
from hcviewer.train.metrics import mask_iou


def disc_scene(h: int = 120, w: int = 160, centre: tuple[float, float] = (80, 60), radius: float = 30,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A bright noisy disc on a dark noisy background -> (rgb uint8, disc mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    disc = (xx + 0.5 - centre[0]) ** 2 + (yy + 0.5 - centre[1]) ** 2 <= radius ** 2
    image = np.where(disc[..., None], rng.normal(190, 20, (h, w, 3)), rng.normal(50, 20, (h, w, 3)))
    return image.clip(0, 255).astype(np.uint8), disc


def test_registry_names_the_three_baselines() -> None:
    assert BASELINES == {"box": box_filled, "ellipse": inscribed_ellipse, "grabcut": grabcut}


def test_box_filled_covers_pixels_whose_centres_are_inside() -> None:
    image = np.zeros((10, 12, 3), np.uint8)
    mask = box_filled(image, (2.5, 1.0, 5.5, 3.4))  # columns 2..4, rows 1..2
    expected = np.zeros((10, 12), bool)
    expected[1:3, 2:5] = True
    assert mask.dtype == bool and (mask == expected).all()
    assert box_filled(image, (-4, -4, 100, 100)).all()
    assert not box_filled(image, (20, 20, 30, 30)).any()


def test_inscribed_ellipse_is_about_pi_over_4_of_the_box_and_inside_it() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    box = (20, 30, 220, 130)  # 200 x 100
    mask = inscribed_ellipse(image, box)
    assert mask.sum() / (200 * 100) == pytest.approx(math.pi / 4, abs=0.01)
    assert not (mask & ~box_filled(image, box)).any()
    assert mask[80, 120]  # the centre
    assert not mask[30, 20] and not mask[129, 219]  # the corners


def test_grabcut_segments_a_disc_from_its_box_and_is_deterministic() -> None:
    image, disc = disc_scene()
    box = (46, 26, 114, 94)  # the disc's box with a 4 px slack
    mask = grabcut(image, box)
    assert mask_iou(mask, disc) > 0.8
    assert mask_iou(mask, disc) > mask_iou(inscribed_ellipse(image, box), disc) - 0.05
    assert (grabcut(image, box) == mask).all()
    assert not (mask & ~box_filled(image, box)).any()


def test_grabcut_on_a_large_image_works_on_a_downscaled_crop() -> None:
    image, disc = disc_scene(h=600, w=800, centre=(400, 300), radius=200, seed=1)
    mask = grabcut(image, (190, 90, 610, 510))
    assert mask.shape == disc.shape
    assert mask_iou(mask, disc) > 0.8


@pytest.mark.parametrize("box", [(0, 0, 160, 120), (-10, -10, 114, 94), (40, 20, 200, 140)])
def test_grabcut_handles_boxes_touching_or_beyond_the_border(box: tuple[float, ...]) -> None:
    image, disc = disc_scene()
    mask = grabcut(image, box)
    assert not (mask & ~box_filled(image, box)).any()
    assert mask_iou(mask, disc) > 0.8


def test_grabcut_falls_back_to_the_box_for_tiny_boxes_and_accepts_grey_images() -> None:
    image, _ = disc_scene()
    box = (10, 10, 13, 40)  # 3 px wide
    assert (grabcut(image, box) == box_filled(image, box)).all()
    grey = image[..., 0]
    assert grabcut(grey, (46, 26, 114, 94)).shape == grey.shape
    with pytest.raises(ValueError, match="8-bit"):
        grabcut(image.astype(np.float32), box)
