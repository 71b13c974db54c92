"""Click to correct: Shift+click inside the selected box marks object, Ctrl+click background;
each click re-segments the box's mask (``hcviewer.click_correct``) in the mask thread and is one
undo step. The clicks are drawn as green (object) and red (background) dots.

A box's clicks belong to the mask they made: the controller remembers, for each mask a series
of clicks made, those clicks, so undo (which brings back the mask before) shows the dots before
too, and a brush stroke (a mask no click made) starts a new series on the painted mask."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject

from hcviewer.annotation.mask_crops import MaskCrop, crop_mask, remember_crop
from hcviewer.app.mask_jobs import MaskJobs, encoded_crop
from hcviewer.click_correct import Click, box_pixels, correct_in_box

if TYPE_CHECKING:
    from hcviewer.app.main_window import MainWindow

POSITIVE_COLOR = (40, 220, 60)
NEGATIVE_COLOR = (235, 40, 40)
DOTS_Z = 70  # above the masks and the boxes


class ClickController(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)  # a QObject of the GUI thread: the mask thread's results reach it queued
        self.window = window
        self.state = window.state
        self.jobs = MaskJobs(self)  # corrections are made off the GUI thread, one at a time
        self.jobs.failed = self._failed
        self._made_by: dict[tuple[int, str], tuple[Click, ...]] = {}  # (box id, mask RLE counts) -> its clicks
        self._pending: list[tuple[str, int, Click]] = []  # (image key, box id, click) not corrected yet
        self._running = False
        self.dots = pg.ScatterPlotItem(size=11, pen=pg.mkPen("w", width=1.5))
        self.dots.setZValue(DOTS_Z)
        window.view.viewbox.addItem(self.dots, ignoreBounds=True)
        self.state.subscribe(lambda _: self.draw_dots())

    def clicks_of(self, box_id: int) -> tuple[Click, ...]:
        """The clicks that made the box's accepted mask as it is now (none: no click made it)."""
        box = self.window.canvas.visible_boxes().get(box_id)
        if box is None or box.mask_rle is None:
            return ()
        return self._made_by.get((box_id, box.mask_rle["counts"]), ())

    def waiting(self) -> bool:
        """Clicks are being corrected or wait for it."""
        return bool(self._pending)

    def click(self, box_id: int, x: float, y: float, positive: bool) -> None:
        """A Shift (positive) or Ctrl (negative) click at image point (x, y) on box ``box_id``."""
        if box_id != self.state.selected_id:
            self.window.canvas.select_box(box_id)  # a modified click on another box selects it
            return
        if self.window.annotation.editable_mask() is None:
            self.window.statusBar().showMessage("Wait for the box's mask, then click to correct it.", 5000)
            return
        self._pending.append((self.state.image_key, box_id, Click(x, y, positive)))
        self.draw_dots()
        if not self._running:
            self._correct_next()

    def _correct_next(self) -> None:
        """Correct the box with the first pending click, in the mask thread."""
        while self._pending and self._pending[0][0] != self.state.image_key:
            self._pending.pop(0)  # clicked on an image no longer shown
        box = self.window.canvas.visible_boxes().get(self._pending[0][1]) if self._pending else None
        mask = self.window.annotation.editable_mask() if box is not None and box.id == self.state.selected_id else None
        if mask is None:
            self._pending.clear()
            self._running = False
            self.draw_dots()
            return
        key, box_id, click = self._pending[0]
        clicks = (*self.clicks_of(box_id), click)
        view = self.state.views.get(box_id)
        box_map = None if view is None or not np.allclose(view.box, box.xyxy) else view.figure_ground
        image, xyxy, before = self.state.image, box.xyxy.copy(), box.mask_rle
        self._running = True
        self.jobs.submit(lambda: encoded_crop(corrected_crop(image, xyxy, box_map, mask, clicks)),
                         lambda made: self._corrected(key, box_id, before, clicks, made))

    def _corrected(self, key: str, box_id: int, before: dict | None, clicks: tuple[Click, ...],
                   made: tuple[MaskCrop, dict]) -> None:
        """A correction made in the background becomes the box's mask (one undo step) if the box
        is as it was; then the next pending click is corrected."""
        self._running = False
        if self._pending and self._pending[0][1] == box_id:
            self._pending.pop(0)
        box = self.window.canvas.visible_boxes().get(box_id) if key == self.state.image_key else None
        crop, rle = made
        if box is not None and box.mask_rle is before and before is not None and rle["counts"] == before["counts"]:
            self.window.statusBar().showMessage("The click changes nothing: the mask already has that pixel "
                                                "as you marked it.", 5000)
        elif box is not None and box.mask_rle is before:
            remember_crop(crop, rle)
            self._made_by[(box_id, rle["counts"])] = clicks
            self.window.project.paint(self.state.image_index, box_id, rle,
                                      name="click to add" if clicks[-1].positive else "click to remove")
        else:
            self._pending = [p for p in self._pending if p[1] != box_id]  # undone or moved meanwhile
        self._correct_next()

    def _failed(self, message: str) -> None:
        """A correction raised: said, and the clicks waiting are dropped (the mask stays as it was)."""
        self._pending.clear()
        self._running = False
        self.draw_dots()
        self.window.show_message(message, "Click to correct")

    def draw_dots(self) -> None:
        """The selected box's clicks (those that made its mask, then those waiting)."""
        box_id, key = self.state.selected_id, self.state.image_key
        waiting = (c for image_key, i, c in self._pending if i == box_id and image_key == key)
        clicks = () if box_id is None else (*self.clicks_of(box_id), *waiting)
        self.dots.setData([c.x for c in clicks], [c.y for c in clicks],
                          brush=[pg.mkBrush(*(POSITIVE_COLOR if c.positive else NEGATIVE_COLOR)) for c in clicks])


def corrected_crop(image: np.ndarray, box: np.ndarray, box_map: np.ndarray | None, mask: MaskCrop,
                   clicks: tuple[Click, ...]) -> MaskCrop:
    """The box's mask ``mask`` corrected by ``clicks`` (image coordinates) inside the box; what
    the mask has outside the box (brush strokes past its edge) stays."""
    size = image.shape[:2]
    x0, y0, x1, y1 = box_pixels(box, size)
    cx0, cy0, cx1, cy1 = mask.xyxy if mask.mask.size else (x0, y0, x1, y1)
    left, top, right, bottom = min(x0, cx0), min(y0, cy0), max(x1, cx1), max(y1, cy1)
    region = mask.region(left, top, right, bottom)
    inside = region[y0 - top:y1 - top, x0 - left:x1 - left]
    inside[...] = correct_in_box(image, box, box_map, inside, clicks)
    return crop_mask(region, left, top, size)
