"""Every box's result except the selected one's, drawn as ONE image (masks and part colours), one
outline curve and one keypoint scatter + skeleton curve, whatever the number of boxes. One
``BoxOverlay`` per box made each repaint cost ~0.4 ms per box (60 ms for 128 detections),
blocking the GUI; a composite costs about as much to paint for one box as for a thousand."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF

from hcviewer.app.overlays import MASK_COLOR, DisplaySettings, outline_xy, part_lut

MAX_SIDE = 2048  # the composite's longest side in pixels (bigger images are drawn scaled)


@dataclass
class LayerEntry:
    """What one box contributes: its box [4] (image px), figure-ground [S, S], parts
    [P+1, S, S] and keypoints [J, 3], each None when not drawn."""

    box: np.ndarray
    figure_ground: np.ndarray | None
    parts: np.ndarray | None
    keypoints: np.ndarray | None


@dataclass
class Composite:
    rgba: np.ndarray  # [h, w, 4] uint8 at the composite's scale
    outline: tuple[np.ndarray, np.ndarray]  # NaN-separated x, y in image px
    peaks: np.ndarray  # [K, 2] keypoints shown
    skeleton: np.ndarray  # [2E, 2] consecutive pairs of limb end points


def compose(entries: list[LayerEntry], image_shape: tuple[int, int], skeleton: tuple[tuple[int, int], ...],
            settings: DisplaySettings) -> Composite:
    """Paste every entry's thresholded mask and part labels into one canvas (pure numpy)."""
    h, w = image_shape
    scale = min(1.0, MAX_SIDE / max(h, w))
    canvas_shape = (max(1, round(h * scale)), max(1, round(w * scale)))
    mask = np.zeros(canvas_shape, bool)
    parts = np.zeros(canvas_shape, np.uint8)
    xs, ys, peaks, limbs = [], [], [], []
    for entry in entries:
        if entry.figure_ground is not None and settings.show_mask:
            pasted = _paste(entry.figure_ground[None], entry.box, scale, canvas_shape)
            if pasted is not None:
                (values, (x0, y0)), (h, w) = pasted, pasted[0].shape[1:]
                box_mask = values[0] >= settings.threshold
                mask[y0:y0 + h, x0:x0 + w] |= box_mask
                x, y = outline_xy(box_mask, np.array([x0, y0, x0 + w, y0 + h]) / scale)  # NaN-terminated contours
                xs.append(x)
                ys.append(y)
        if entry.parts is not None and settings.show_parts:
            pasted = _paste(entry.parts, entry.box, scale, canvas_shape)
            if pasted is not None:
                (values, (x0, y0)), (h, w) = pasted, pasted[0].shape[1:]
                label = values.argmax(0).astype(np.uint8)
                np.copyto(parts[y0:y0 + h, x0:x0 + w], label, where=label > 0)
        if entry.keypoints is not None and settings.show_keypoints:
            visible = entry.keypoints[:, 2] >= settings.keypoint_min_score
            peaks.append(entry.keypoints[visible, :2])
            edges = [(a, b) for a, b in skeleton if visible[a] and visible[b]]
            if edges:
                limbs.append(entry.keypoints[np.array(edges).reshape(-1), :2])
    rgba = np.zeros((*canvas_shape, 4), np.uint8)
    alpha = round(255 * settings.opacity)
    rgba[parts > 0, :3] = part_lut(settings.part_colors)[parts[parts > 0]]
    rgba[parts > 0, 3] = alpha
    rgba[mask & (parts == 0), :3] = MASK_COLOR  # parts, when shown, colour the mask's pixels
    rgba[mask & (parts == 0), 3] = alpha
    outline = (np.concatenate(xs), np.concatenate(ys)) if xs else (np.zeros(0), np.zeros(0))
    return Composite(rgba, outline, np.concatenate(peaks) if peaks else np.zeros((0, 2)),
                     np.concatenate(limbs) if limbs else np.zeros((0, 2)))


def _paste(box_map: np.ndarray, box: np.ndarray, scale: float, canvas_shape: tuple[int, int]
           ) -> tuple[np.ndarray, tuple[int, int]] | None:
    """A [C, S, S] box map pasted into the canvas (the image at ``scale``): its [C, h, w] values
    over the canvas pixels whose centres lie in the box, and their top-left (x0, y0); None when
    none do."""
    import torch

    from hcviewer.paste import paste_heatmap_region

    heatmap = torch.from_numpy(np.ascontiguousarray(box_map, np.float32))
    region = paste_heatmap_region(heatmap, np.asarray(box, np.float64) * scale, canvas_shape)
    return None if region is None else (region[0].numpy(), region[1])


class ResultLayer:
    """The pyqtgraph items showing a ``Composite`` under the selected box's own overlay."""

    def __init__(self, viewbox: pg.ViewBox) -> None:
        self.image = pg.ImageItem()
        self.outline = pg.PlotCurveItem(pen=pg.mkPen(MASK_COLOR, width=2), connect="finite")
        self.skeleton = pg.PlotCurveItem(pen=pg.mkPen((255, 255, 255), width=2), connect="pairs")
        self.peaks = pg.ScatterPlotItem(size=8, pen=pg.mkPen("k"), brush=pg.mkBrush(255, 220, 0))
        self.items = [self.image, self.outline, self.skeleton, self.peaks]
        for z, item in enumerate(self.items):
            item.setZValue(8 + z * 0.1)  # below the selected box's overlay (10+)
            viewbox.addItem(item, ignoreBounds=True)
        self.key: tuple | None = None
        self.clear()

    def clear(self) -> None:
        self.key = None
        for item in self.items:
            item.setVisible(False)

    def show(self, composite: Composite, image_shape: tuple[int, int]) -> None:
        h, w = image_shape
        self.image.setImage(composite.rgba, levels=(0, 255), autoLevels=False)
        self.image.setRect(QRectF(0, 0, w, h))
        self.outline.setData(*composite.outline)
        self.peaks.setData(x=composite.peaks[:, 0], y=composite.peaks[:, 1])
        self.skeleton.setData(composite.skeleton[:, 0], composite.skeleton[:, 1])
        for item in self.items:
            item.setVisible(True)
