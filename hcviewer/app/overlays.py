"""What a prediction looks like over the image: RGBA arrays (pure numpy, testable) and the
pyqtgraph items that show them for one box (mask + outline, part colour map, keypoint heatmap
with peaks and skeleton)."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt

from hcviewer.annotation.head_scope import DEFAULT_KEYPOINT_THRESHOLD
from hcviewer.annotation.mask_crops import MaskCrop

MASK_COLOR = (30, 144, 255)  # dodger blue: model result not yet accepted
ACCEPTED_COLOR = (46, 204, 64)  # green: part of the annotation
GT_COLOR = (255, 140, 0)  # orange: ground truth from the box file
# Part colours (index 0 is background and never drawn); Tableau 10 without its grey.
PART_COLORS = np.array([(0, 0, 0), (214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14),
                        (148, 103, 189), (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207)],
                       np.uint8)
# Accepted objects, one colour per object (or class): distinct colours, none near the model's
# blue or the ground truth's orange (Sasha Trubetskoy's "20 distinct colours", a subset).
ANNOTATION_COLORS = np.array([(60, 180, 75), (240, 50, 230), (255, 225, 25), (230, 25, 75), (0, 128, 128),
                              (145, 30, 180), (210, 245, 60), (128, 0, 0), (170, 255, 195), (250, 190, 212),
                              (128, 128, 0), (220, 190, 255)], np.uint8)
COLOR_BY = ("object", "class")  # the choices of DisplaySettings.color_by
DISPLAY_MAX_SIDE = 384  # box maps are upsampled to at most this many display pixels per side


def part_color(index: int, colors: tuple[tuple[int, int, int], ...] = ()) -> tuple[int, int, int]:
    """Colour of part ``index`` (1-based; 0 is background): the checkpoint's ``colors`` (one per
    part, ``HypercolumnConfig.part_colors``) when it has them, else the app's palette."""
    if colors:
        return tuple(int(v) for v in colors[(index - 1) % len(colors)])
    return tuple(int(v) for v in PART_COLORS[1 + (index - 1) % (len(PART_COLORS) - 1)])


@functools.lru_cache(maxsize=8)
def part_lut(colors: tuple[tuple[int, int, int], ...] = ()) -> np.ndarray:
    """uint8 [256, 3]: part label -> colour (``part_color``; label 0, background, black)."""
    return np.array([(0, 0, 0)] + [part_color(i, colors) for i in range(1, 256)], np.uint8)


def annotation_color(key: int) -> tuple[int, int, int]:
    """The colour of accepted object (or class) number ``key``."""
    return tuple(int(v) for v in ANNOTATION_COLORS[key % len(ANNOTATION_COLORS)])


def annotation_rgba(masks: list[np.ndarray], colors: list[tuple[int, int, int]], opacity: float) -> np.ndarray:
    """bool [H, W] masks, each in its colour (later ones on top) -> uint8 [H, W, 4]."""
    rgba = np.zeros((*masks[0].shape, 4), np.uint8)
    for mask, color in zip(masks, colors):
        rgba[mask, :3] = color
        rgba[mask, 3] = round(255 * opacity)
    return rgba


def display_shape(box: np.ndarray) -> tuple[int, int]:
    """(height, width) in display pixels for a box: its own size, capped for very large boxes."""
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    scale = min(1.0, DISPLAY_MAX_SIDE / max(w, h, 1.0))
    return max(2, round(h * scale)), max(2, round(w * scale))


def upsample(box_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[S, S] or [C, S, S] -> [h, w] or [C, h, w], bilinear with pixel-centre alignment."""
    h, w = shape
    if box_map.ndim == 2:
        return cv2.resize(box_map.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.stack([cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) for m in box_map])


def mask_rgba(mask: np.ndarray, color: tuple[int, int, int], opacity: float) -> np.ndarray:
    """bool [h, w] -> uint8 [h, w, 4]: ``color`` at ``opacity`` where true, transparent elsewhere."""
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[mask, :3] = color
    rgba[mask, 3] = round(255 * opacity)
    return rgba


def parts_rgba(part_probs: np.ndarray, opacity: float,
               colors: tuple[tuple[int, int, int], ...] = ()) -> np.ndarray:
    """[P+1, h, w] part probabilities -> uint8 [h, w, 4]: each pixel's most likely part in its
    colour (``part_color``); background (channel 0) transparent."""
    label = part_probs.argmax(0)
    rgba = np.zeros((*label.shape, 4), np.uint8)
    rgba[..., :3] = part_lut(tuple(colors))[label]
    rgba[..., 3] = np.where(label > 0, round(255 * opacity), 0)
    return rgba


def heatmap_rgba(heatmaps: np.ndarray, opacity: float) -> np.ndarray:
    """[J, h, w] keypoint probabilities -> uint8 [h, w, 4]: the max over keypoints, each map
    normalised to its own peak, as a hot colour map whose alpha follows the value."""
    peaks = heatmaps.reshape(len(heatmaps), -1).max(1).clip(min=1e-12)[:, None, None]
    value = (heatmaps / peaks).max(0)  # [h, w] in [0, 1]
    lut = pg.colormap.get("inferno").getLookupTable(0.0, 1.0, 256, alpha=False)  # [256, 3]
    rgba = np.zeros((*value.shape, 4), np.uint8)
    rgba[..., :3] = lut[(value * 255).astype(np.uint8)]
    rgba[..., 3] = (value * 255 * opacity).astype(np.uint8)
    return rgba


def outline_xy(mask: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contours of a bool [h, w] display-resolution box mask as (x, y) arrays in image
    coordinates, with NaN between contours (one ``PlotCurveItem`` draws them all)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    h, w = mask.shape
    sx, sy = (box[2] - box[0]) / w, (box[3] - box[1]) / h
    xs, ys = [], []
    for contour in contours:
        points = contour[:, 0, :].astype(np.float64)  # [M, 2] (col, row) of boundary pixels
        points = np.vstack([points, points[:1]])  # closed
        xs += [box[0] + (points[:, 0] + 0.5) * sx, [np.nan]]
        ys += [box[1] + (points[:, 1] + 0.5) * sy, [np.nan]]
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys)


def crop_outline_xy(crop: MaskCrop, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Contours of a crop in image coordinates (NaN-separated), traced at the resolution of
    an image reduced to ``max_side``."""
    if not crop.mask.size:
        return np.zeros(0), np.zeros(0)
    height, width = crop.image_size
    scale = min(1.0, max_side / max(height, width))
    h, w = crop.mask.shape
    mask = crop.mask if scale == 1.0 else cv2.resize(crop.mask.astype(np.uint8), (max(1, round(w * scale)),
                                                     max(1, round(h * scale))), interpolation=cv2.INTER_NEAREST)
    return outline_xy(np.asarray(mask, bool), np.array(crop.xyxy, np.float64))


class BoxOverlay:
    """The pyqtgraph items showing one box's prediction. ``update`` redraws from a prediction;
    the per-task visibility, opacity and threshold come from the caller's display settings."""

    def __init__(self, viewbox: pg.ViewBox) -> None:
        self.viewbox = viewbox
        self.mask_image = pg.ImageItem()
        self.parts_image = pg.ImageItem()
        self.heatmap_image = pg.ImageItem()
        self.outline = pg.PlotCurveItem(pen=pg.mkPen(MASK_COLOR, width=2), connect="finite")
        self.skeleton = pg.PlotCurveItem(pen=pg.mkPen((255, 255, 255), width=2), connect="pairs")
        self.peaks = pg.ScatterPlotItem(size=8, pen=pg.mkPen("k"), brush=pg.mkBrush(255, 220, 0))
        self.items = [self.parts_image, self.heatmap_image, self.mask_image, self.outline, self.skeleton, self.peaks]
        for z, item in enumerate(self.items):
            item.setZValue(10 + z)
            viewbox.addItem(item)
        self.clear()

    def clear(self) -> None:
        self._drawn_key = None
        for item in self.items:
            item.setVisible(False)

    def remove(self) -> None:
        for item in self.items:
            self.viewbox.removeItem(item)

    def show(self, box: np.ndarray, figure_ground: np.ndarray | None, parts: np.ndarray | None,
             keypoint_heatmaps: np.ndarray | None, keypoints: np.ndarray | None,
             skeleton: tuple[tuple[int, int], ...], settings: "DisplaySettings", mask_fill: bool = True) -> None:
        """box [4]; figure_ground [S, S]; parts [P+1, S, S]; keypoint_heatmaps [J, S, S];
        keypoints [J, 3] (x, y, score) image px. ``mask_fill`` False: the mask's outline only (the
        box has an accepted mask, drawn in its own colour). Redraws only when something changed."""
        key = (tuple(box), *(id(a) for a in (figure_ground, parts, keypoint_heatmaps, keypoints)), settings.key(),
               mask_fill)
        if key == self._drawn_key:
            return
        self.clear()
        self._drawn_key = key
        rect = QRectF(float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1]))
        shape = display_shape(box)
        parts_shown = parts is not None and settings.show_parts
        if figure_ground is not None and settings.show_mask:
            mask = upsample(figure_ground, shape) >= settings.threshold
            if mask_fill and not parts_shown:  # parts, when shown, colour the figure (as in the result layer)
                _show_image(self.mask_image, mask_rgba(mask, MASK_COLOR, settings.opacity), rect)
            self.outline.setData(*outline_xy(mask, box))
            self.outline.setVisible(True)
        if parts_shown:
            _show_image(self.parts_image, parts_rgba(upsample(parts, shape), settings.opacity, settings.part_colors),
                        rect)
        if keypoint_heatmaps is not None and settings.show_keypoints:
            _show_image(self.heatmap_image, heatmap_rgba(upsample(keypoint_heatmaps, shape), 0.8), rect)
        if keypoints is not None and settings.show_keypoints:
            visible = keypoints[:, 2] >= settings.keypoint_min_score
            self.peaks.setData(x=keypoints[visible, 0], y=keypoints[visible, 1])
            self.peaks.setVisible(True)
            edges = [(a, b) for a, b in skeleton if visible[a] and visible[b]]
            if edges:
                points = keypoints[np.array(edges).reshape(-1), :2]  # [2E, 2] consecutive pairs
                self.skeleton.setData(points[:, 0], points[:, 1])
                self.skeleton.setVisible(True)


def _show_image(item: pg.ImageItem, rgba: np.ndarray, rect: QRectF) -> None:
    item.setImage(rgba, levels=(0, 255), autoLevels=False)
    item.setRect(rect)
    item.setVisible(True)


class DisplaySettings:
    """How results are drawn (shared by the main view and the compare view)."""

    def __init__(self) -> None:
        self.opacity = 0.5
        self.threshold = 0.5
        # Masks snapped to the image's edges (guided filter, ~1 ms a box), as hcviewer predict
        # does by default: +0.012 mask IoU on coco-val-dev (docs/performance.md, Edge refinement).
        self.refine_edges = True
        self.show_mask = True
        self.show_parts = True  # for checkpoints with a parts head (the toggle is disabled otherwise)
        self.show_keypoints = True
        self.show_gt = False
        self.selected_only = False  # masks, parts, keypoints and ground truth of the selected box alone
        self.keypoint_min_score = DEFAULT_KEYPOINT_THRESHOLD  # weaker keypoints are hidden (by default: as saved)
        self.color_by = "object"  # accepted masks: one colour per "object" or per "class"
        self.part_colors: tuple[tuple[int, int, int], ...] = ()  # the checkpoint's, one per part (empty: palette)

    def key(self) -> tuple:
        return tuple(sorted(vars(self).items()))


def brush_pen(color: tuple[int, int, int], width: float = 2, dashed: bool = False) -> "pg.QtGui.QPen":
    pen = pg.mkPen(color, width=width)
    if dashed:
        pen.setStyle(Qt.PenStyle.DashLine)
    pen.setCosmetic(True)
    return pen
