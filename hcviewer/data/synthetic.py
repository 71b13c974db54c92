"""Synthetic scenes of articulated stick-figure people with exact masks, parts and keypoints.

Each figure is drawn with cv2 from a random pose (torso lean, head tilt, arm and leg angles),
scale, aspect, clothing colours and textures, over a textured background with distractor
shapes, so telling figure from ground needs more than a colour threshold. Figures are painted
back to front (smaller, i.e. farther, first); ``ImageRecord.objects`` keeps that order, and every
object's mask and part map hold only the pixels of it that remain visible.

Keypoints are the 17 COCO person keypoints (``left_*`` on the figure's own left, which is the
image's right: every figure faces the camera), stored as COCO stores them: the column and row
of the keypoint's pixel (x = c, y = r; boxes, like COCO's, are continuous: pixel (c, r) covers
[c, c + 1) x [r, r + 1)), with COCO visibility: 2 on the figure's visible pixels, 1 under another
figure, 0 outside the image (then x = y = 0, as COCO stores unlabelled points).

The same seed gives identical arrays; image i depends only on (seed, i), so a longer data set of
the same seed starts with the images of a shorter one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hcviewer.data.records import AnnotatedDataset, ArrayMask, ImageRecord, ObjectAnnotation
from hcviewer.categories import COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON

PART_NAMES = ("head", "torso", "arms", "legs")
HEAD, TORSO, ARMS, LEGS = 1, 2, 3, 4

# Each keypoint's part, used to paint a small disc under it so its pixel is always on the figure.
KEYPOINT_PARTS = (HEAD,) * 5 + (TORSO,) * 2 + (ARMS,) * 4 + (LEGS,) * 6

# Materials: which texture paints a pixel (independent of its part label: sleeves and shirt may match).
SKIN, SHIRT, SLEEVES, TROUSERS, HAIR, SHOES = 1, 2, 3, 4, 5, 6
NUM_MATERIALS = 6

SKIN_TONES = np.array([(255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66),
                       (141, 85, 36), (92, 56, 30)], np.float32)

# Figures hidden beyond these limits are left out of the scene (not drawn, so not unannotated).
MIN_VISIBLE_PIXELS = 48
MIN_VISIBLE_FRACTION = 0.25

_SHIFT = 4  # cv2 drawing with 4 fractional bits: sub-pixel limb positions
_SCALE = 1 << _SHIFT


def make_synthetic_dataset(num_images: int, seed: int, image_size: tuple[int, int] = (160, 208),
                           max_objects: int = 3) -> AnnotatedDataset:
    """``num_images`` scenes of ``image_size`` (H, W), each with 1..``max_objects`` figures."""
    height, width = image_size
    if num_images < 0 or max_objects < 1 or min(height, width) < 32:
        raise ValueError("make_synthetic_dataset needs num_images >= 0, max_objects >= 1 and an image "
                         f"of at least 32x32 pixels; got {num_images}, {max_objects}, {image_size}")
    images = [make_synthetic_image(seed, index, image_size, max_objects) for index in range(num_images)]
    next_id = 0
    for image in images:
        for obj in image.objects:
            obj.annotation_id = next_id
            next_id += 1
    return AnnotatedDataset(f"synthetic-seed{seed}", images, COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON,
                            PART_NAMES)


def make_synthetic_image(seed: int, index: int, image_size: tuple[int, int], max_objects: int) -> ImageRecord:
    """Scene ``index`` of the data set of ``seed``."""
    rng = np.random.default_rng([seed, index])
    height, width = image_size
    background = _background(rng, height, width)
    figures: list[_Figure] = []
    while not figures:  # a scene whose figures were all hidden gets new ones
        sampled = [_sample_figure(rng, height, width) for _ in range(int(rng.integers(1, max_objects + 1)))]
        sampled.sort(key=lambda f: f.scale)  # farther (smaller) figures first: nearer ones cover them
        figures = _drop_hidden(sampled)
    pixels, owner = _compose(background, figures, rng)
    objects = [_annotation(figure, owner == k, owner, k) for k, figure in enumerate(figures)]
    return ImageRecord(index, width, height, pixels=pixels, objects=objects)


@dataclass
class _Figure:
    scale: float  # body height in pixels
    keypoints: np.ndarray  # [17, 2] cv2 coordinates (pixel centres at integers)
    labels: np.ndarray  # [H, W] uint8 part label of the whole figure, 0 off it
    appearance: np.ndarray  # [H, W, 3] float32 colours where labels > 0


def _drop_hidden(figures: list[_Figure]) -> list[_Figure]:
    """Leave out figures mostly covered or outside the image. Removing a figure only uncovers the
    others, so one pass leaves every remaining figure above the limits."""
    owner = _owner_map(figures)
    kept = []
    for k, figure in enumerate(figures):
        visible = int((owner == k).sum())
        if visible >= MIN_VISIBLE_PIXELS and visible >= MIN_VISIBLE_FRACTION * int((figure.labels > 0).sum()):
            kept.append(figure)
    return kept


def _owner_map(figures: list[_Figure]) -> np.ndarray:
    owner = np.full(figures[0].labels.shape, -1, np.int32)
    for k, figure in enumerate(figures):
        owner[figure.labels > 0] = k
    return owner


def _compose(background: np.ndarray, figures: list[_Figure], rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
    image = background.copy()
    for figure in figures:
        on = figure.labels > 0
        image[on] = figure.appearance[on]
    image += rng.normal(0, rng.uniform(2, 8), image.shape).astype(np.float32)  # sensor noise
    return np.clip(image, 0, 255).astype(np.uint8), _owner_map(figures)


def _annotation(figure: _Figure, visible: np.ndarray, owner: np.ndarray, k: int) -> ObjectAnnotation:
    rows, cols = np.nonzero(visible.any(1))[0], np.nonzero(visible.any(0))[0]
    box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)
    parts = np.where(visible, figure.labels, 0).astype(np.uint8)
    return ObjectAnnotation(box, "person", mask=ArrayMask(visible), parts=ArrayMask(parts),
                            keypoints=_keypoint_visibility(figure.keypoints, owner, k))


def _keypoint_visibility(points: np.ndarray, owner: np.ndarray, k: int) -> np.ndarray:
    height, width = owner.shape
    keypoints = np.zeros((len(points), 3), np.float32)
    for j, (x, y) in enumerate(points):
        col, row = int(round(x)), int(round(y))  # the pixel whose centre is nearest, as drawn
        if 0 <= col < width and 0 <= row < height:
            keypoints[j] = (col, row, 2 if owner[row, col] == k else 1)
    return keypoints


# ---------------------------------------------------------------- pose and drawing of one figure

def _direction(angle: np.ndarray | float) -> np.ndarray:
    """Unit vector at ``angle`` from straight down, positive towards +x (image coordinates)."""
    return np.array([np.sin(angle), np.cos(angle)], np.float64)


def _sample_pose(rng: np.random.Generator) -> np.ndarray:
    """The 17 keypoints of an upright figure of height 1, pelvis at the origin (body frame)."""
    kp = np.zeros((17, 2))
    neck = np.array([0.0, -0.30])
    shoulder, hip = np.array([0.11, 0.0]), np.array([0.07, 0.0])
    head_centre = neck + 0.10 * _direction(np.pi + rng.uniform(-0.3, 0.3))
    radius, facing = 0.07, rng.uniform(-0.5, 0.5)
    kp[0] = head_centre + radius * np.array([0.4 * facing, 0.1])
    for side, (eye, ear) in ((1, (1, 3)), (-1, (2, 4))):  # +x is the figure's left
        kp[eye] = head_centre + radius * np.array([side * 0.35 + 0.4 * facing, -0.25])
        kp[ear] = head_centre + radius * np.array([side * 0.7 + 0.15 * facing, -0.05])
    for side, (sh, el, wr, hp, kn, an) in ((1, (5, 7, 9, 11, 13, 15)), (-1, (6, 8, 10, 12, 14, 16))):
        kp[sh] = neck + side * shoulder
        upper = side * rng.uniform(-0.2, 2.8)  # from hanging down to raised above the head
        kp[el] = kp[sh] + 0.16 * _direction(upper)
        kp[wr] = kp[el] + 0.15 * _direction(upper + side * rng.uniform(-0.5, 1.8))
        kp[hp] = side * hip
        thigh = side * rng.uniform(-0.1, 0.5)
        kp[kn] = kp[hp] + 0.23 * _direction(thigh)
        kp[an] = kp[kn] + 0.23 * _direction(thigh + rng.uniform(-0.4, 0.4))
    return kp


def _sample_figure(rng: np.random.Generator, height: int, width: int) -> _Figure:
    scale = rng.uniform(0.4, 0.9) * height
    lean = rng.uniform(-0.25, 0.25)
    rotation = np.array([[np.cos(lean), -np.sin(lean)], [np.sin(lean), np.cos(lean)]])
    stretch = np.array([rng.uniform(0.8, 1.25), 1.0])  # broad or slim figures
    pelvis = np.array([rng.uniform(0.0, 1.0) * width, rng.uniform(0.3, 0.75) * height])
    body = _sample_pose(rng)
    keypoints = (body * stretch) @ rotation.T * scale + pelvis
    head_radius = 0.07 * scale * stretch[0]
    canvas = _Canvas(height, width)
    _draw_figure(canvas, rng, keypoints, head_radius, scale, lean)
    appearance = _appearance(rng, canvas.materials)
    return _Figure(scale, keypoints, canvas.labels, appearance)


def _draw_figure(canvas: _Canvas, rng: np.random.Generator, kp: np.ndarray, head_radius: float,
                 scale: float, lean: float) -> None:
    """Paint back to front; a later stroke takes the pixels (and part label) of an earlier one."""
    for point, part in zip(kp, KEYPOINT_PARTS):
        canvas.joint_disc(point, part)
    arm_width, leg_width = max(2, int(0.05 * scale)), max(3, int(0.075 * scale))
    behind = rng.random(2) < 0.3  # an arm may pass behind the torso
    long_sleeves = rng.random() < 0.5
    shoulders, hips = kp[[5, 6]], kp[[11, 12]]
    neck, pelvis = shoulders.mean(0), hips.mean(0)
    head_centre = (kp[3] + kp[4]) / 2
    for arm, arm_behind in zip(((5, 7, 9), (6, 8, 10)), behind):
        if arm_behind:
            _draw_arm(canvas, kp[list(arm)], arm_width, long_sleeves)
    for hip, knee, ankle in ((11, 13, 15), (12, 14, 16)):
        canvas.line(kp[hip], kp[knee], leg_width, LEGS, TROUSERS)
        canvas.line(kp[knee], kp[ankle], leg_width, LEGS, TROUSERS)
        canvas.disc(kp[ankle], 0.55 * leg_width, LEGS, SHOES)
    canvas.line(neck, head_centre, max(2, int(0.05 * scale)), HEAD, SKIN)
    torso = np.array([shoulders[0], shoulders[1], hips[1], hips[0]])
    centre = torso.mean(0)
    canvas.polygon(centre + (torso - centre) * 1.15, TORSO, SHIRT)  # a little wider than the joints
    canvas.line(neck, pelvis, int(0.12 * scale), TORSO, SHIRT)
    canvas.disc(head_centre, head_radius, HEAD, SKIN)
    hair_angle = np.degrees(lean) + 180
    canvas.half_disc(head_centre, head_radius, hair_angle + rng.uniform(-20, 20), HEAD, HAIR)
    for arm, arm_behind in zip(((5, 7, 9), (6, 8, 10)), behind):
        if not arm_behind:
            _draw_arm(canvas, kp[list(arm)], arm_width, long_sleeves)


def _draw_arm(canvas: _Canvas, points: np.ndarray, width: int, long_sleeves: bool) -> None:
    shoulder, elbow, wrist = points
    canvas.line(shoulder, elbow, width, ARMS, SLEEVES)
    canvas.line(elbow, wrist, width, ARMS, SLEEVES if long_sleeves else SKIN)
    canvas.disc(wrist, 0.6 * width, ARMS, SKIN)


class _Canvas:
    """Draws each stroke into the part label map and the material map alike."""

    def __init__(self, height: int, width: int):
        self.labels = np.zeros((height, width), np.uint8)
        self.materials = np.zeros((height, width), np.uint8)

    def _both(self, draw, part: int, material: int) -> None:
        draw(self.labels, part)
        draw(self.materials, material)

    def joint_disc(self, centre: np.ndarray, part: int) -> None:
        """A 1-pixel disc on the pixel nearest to a keypoint, so the keypoint lies on the figure."""
        col, row = (int(round(v)) for v in centre)
        self._both(lambda im, c: cv2.circle(im, (col, row), 1, c, -1, cv2.LINE_8), part,
                   SKIN if part in (HEAD, ARMS) else SHIRT if part == TORSO else TROUSERS)

    def line(self, a: np.ndarray, b: np.ndarray, width: int, part: int, material: int) -> None:
        self._both(lambda im, c: cv2.line(im, _fixed(a), _fixed(b), c, width, cv2.LINE_8, _SHIFT), part, material)

    def disc(self, centre: np.ndarray, radius: float, part: int, material: int) -> None:
        r = max(1, int(round(radius * _SCALE)))
        self._both(lambda im, c: cv2.circle(im, _fixed(centre), r, c, -1, cv2.LINE_8, _SHIFT), part, material)

    def half_disc(self, centre: np.ndarray, radius: float, angle: float, part: int, material: int) -> None:
        axes = (max(1, int(round(radius * _SCALE))),) * 2
        self._both(lambda im, c: cv2.ellipse(im, _fixed(centre), axes, angle, 0, 180, c, -1, cv2.LINE_8, _SHIFT),
                   part, material)

    def polygon(self, points: np.ndarray, part: int, material: int) -> None:
        fixed = np.round(points * _SCALE).astype(np.int32)[None]
        self._both(lambda im, c: cv2.fillPoly(im, fixed, c, cv2.LINE_8, _SHIFT), part, material)


def _fixed(point: np.ndarray) -> tuple[int, int]:
    return int(round(point[0] * _SCALE)), int(round(point[1] * _SCALE))


# ---------------------------------------------------------------- colours and textures

def _appearance(rng: np.random.Generator, materials: np.ndarray) -> np.ndarray:
    """Colour each material's pixels with its own texture."""
    height, width = materials.shape
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.normal(0, 10, 3)
    shirt = rng.uniform(0, 255, 3)
    colours = {SKIN: skin, SHIRT: shirt, SLEEVES: shirt if rng.random() < 0.7 else rng.uniform(0, 255, 3),
               TROUSERS: rng.uniform(0, 255, 3), HAIR: rng.uniform(0, 90, 3), SHOES: rng.uniform(0, 120, 3)}
    appearance = np.zeros((height, width, 3), np.float32)
    for material in range(1, NUM_MATERIALS + 1):
        where = materials == material
        if where.any():
            textured = material in (SHIRT, SLEEVES, TROUSERS)
            appearance[where] = _texture(rng, height, width, colours[material], textured)[where]
    return appearance


def _texture(rng: np.random.Generator, height: int, width: int, colour: np.ndarray, patterned: bool
             ) -> np.ndarray:
    """[H, W, 3] float32: a colour with blotches, and for cloth sometimes stripes of a second colour."""
    blotches = _smooth_noise(rng, height, width, rng.uniform(1.5, 6))
    field = colour[None, None] * (1 + rng.uniform(0.05, 0.35) * blotches[..., None])
    if patterned and rng.random() < 0.4:
        stripes = _stripes(rng, height, width)[..., None]
        field = field * (1 - stripes) + rng.uniform(0, 255, 3)[None, None] * stripes
    return field.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, sigma: float) -> np.ndarray:
    """Blurred noise rescaled to [-1, 1]."""
    noise = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), sigma)
    return noise / max(float(np.abs(noise).max()), 1e-6)


def _stripes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """[H, W] in [0, 1]: soft or hard stripes at a random angle and period."""
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 30)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 6.3))
    return (wave > 0.5).astype(np.float32) if rng.random() < 0.5 else wave


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A noise, stripe or gradient backdrop with a few textured distractor shapes."""
    kind = rng.integers(3)
    first, second = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    if kind == 0:
        weight = 0.5 + 0.5 * _smooth_noise(rng, height, width, rng.uniform(2, 12))
    elif kind == 1:
        weight = _stripes(rng, height, width)
    else:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = xs * np.cos(angle) + ys * np.sin(angle)
        weight = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    image = first * (1 - weight[..., None]) + second * weight[..., None]
    for _ in range(int(rng.integers(2, 7))):
        shape = np.zeros((height, width), np.uint8)
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        size = (int(rng.integers(4, width // 3)), int(rng.integers(4, height // 3)))
        if rng.random() < 0.5:
            cv2.ellipse(shape, centre, size, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            cv2.rectangle(shape, centre, (centre[0] + size[0], centre[1] + size[1]), 1, -1)
        texture = _texture(rng, height, width, rng.uniform(0, 255, 3), patterned=True)
        image[shape > 0] = texture[shape > 0]
    return image.astype(np.float32)
