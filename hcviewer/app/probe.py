"""The probe: for the pixel under the pointer, each tap's contribution to the figure-ground
logit of the selected box, the shared bias, their sum and the resulting probability.

The head is linear in its taps (logit = bias + sum over taps of that tap's contribution), so
the bars add up exactly to the logit the mask shows."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

HINT = ("Probe: click a box to segment it, then point at a pixel inside it to see what each layer "
        "adds to its mask logit.")
POSITIVE = (46, 160, 90)
NEGATIVE = (214, 60, 60)
TOTAL = (30, 144, 255)


def sample_box_map(box_map: np.ndarray, box: np.ndarray, x: float, y: float) -> float | None:
    """Bilinear value of an [S, S] box map at image point (x, y); None outside the box.
    Cell (u, v) covers the box's u-th S-th, its centre at (u + 0.5) / S of the box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x0 <= x < x1 and y0 <= y < y1):
        return None
    s_y, s_x = box_map.shape
    u = np.clip((x - x0) / (x1 - x0) * s_x - 0.5, 0, s_x - 1)
    v = np.clip((y - y0) / (y1 - y0) * s_y - 0.5, 0, s_y - 1)
    u0, v0 = int(u), int(v)
    u1, v1 = min(u0 + 1, s_x - 1), min(v0 + 1, s_y - 1)
    fu, fv = u - u0, v - v0
    top = box_map[v0, u0] * (1 - fu) + box_map[v0, u1] * fu
    bottom = box_map[v1, u0] * (1 - fu) + box_map[v1, u1] * fu
    return float(top * (1 - fv) + bottom * fv)


class ProbeWidget(QWidget):
    """Bar chart: one bar per tap (greyed when unchecked), the bias, and the total logit."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        self.title = QLabel(HINT)
        self.title.setWordWrap(True)
        self.title.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)  # the hint at the top
        layout.addWidget(self.title)
        self.plot = pg.PlotWidget(background=(250, 250, 250))
        self.plot.setMinimumHeight(160)
        self.plot.showGrid(y=True, alpha=0.3)
        self.plot.setLabel("left", "logit contribution")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.addLine(y=0, pen=pg.mkPen((80, 80, 80)))
        self.bars = pg.BarGraphItem(x=[], height=[], width=0.7)
        self.plot.addItem(self.bars)
        layout.addWidget(self.plot, 1)
        self.plot.setVisible(False)  # no empty axes: the hint says what to do until a pixel is probed
        self.values: dict[str, float] = {}
        self.probability: float | None = None

    def show_pixel(self, contributions: dict[str, float], bias: float, active: tuple[str, ...],
                   where: str) -> None:
        """contributions: tap -> logit contribution at the pixel; only ``active`` taps count."""
        names = [*contributions, "bias", "logit"]
        logit = bias + sum(v for tap, v in contributions.items() if tap in active)
        heights = [*contributions.values(), bias, logit]
        brushes = []
        for tap, value in contributions.items():
            color = POSITIVE if value >= 0 else NEGATIVE
            brushes.append(pg.mkBrush(*color, 255 if tap in active else 60))
        brushes += [pg.mkBrush(150, 150, 150), pg.mkBrush(*TOTAL)]
        self.bars.setOpts(x=np.arange(len(names)), height=heights, brushes=brushes, width=0.7)
        self.plot.getAxis("bottom").setTicks([list(enumerate(names))])
        self.values = dict(zip(names, heights))
        self.probability = float(1 / (1 + np.exp(-logit)))
        self.title.setText(f"Probe {where}: logit {logit:+.2f} → p(figure) = {self.probability:.2f}")
        self.plot.setVisible(True)

    def clear(self, message: str = HINT) -> None:
        self.plot.setVisible(False)
        self.bars.setOpts(x=[], height=[])
        self.values = {}
        self.probability = None
        self.title.setText(message)
