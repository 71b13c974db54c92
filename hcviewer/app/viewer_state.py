"""What the window shows now (Qt-free): the image on screen, the selected box and the model
result drawn for each box. The window's controllers share one ``ViewerState``; the project
document (``annotation.document.Project``) holds what is annotated and saved.

The state says what changed (``subscribe``): the canvas redraws once per change, so that
controllers change the state and never call the canvas to redraw. Changes made together
(``changes``) are told once, when the last of them is done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hcviewer.app.worker import ModelInfo


@dataclass
class BoxView:
    """What is drawn for one box: one box's prediction (S x S maps) and the taps it used."""

    box: np.ndarray  # [4] the box the prediction was made for
    taps: tuple[str, ...]
    figure_ground: np.ndarray | None  # [S, S], or edge-refined [h, w] over the same box
    parts: np.ndarray | None  # [P+1, S, S]
    keypoint_heatmaps: np.ndarray | None  # [J, S, S]
    keypoints: np.ndarray | None  # [J, 3]
    contributions: dict[str, np.ndarray]  # tap -> [S, S] figure-ground logit contribution
    bias: float

    @classmethod
    def from_prediction(cls, prediction, i: int) -> "BoxView":
        """Box ``i`` of an ``hcviewer.inference.Prediction``."""
        def pick(array):
            return None if array is None else array[i]

        contributions = {tap: c[i, 0] for tap, c in prediction.contributions.get("figure_ground", {}).items()}
        bias = prediction.bias.get("figure_ground")
        # The probe keeps explaining the S x S map (its contributions); the mask drawn is the refined one.
        return cls(prediction.boxes[i].astype(np.float64), tuple(prediction.taps), pick(prediction.mask_maps),
                   pick(prediction.parts), pick(prediction.keypoint_heatmaps), pick(prediction.keypoints),
                   contributions, 0.0 if bias is None else float(bias[i, 0]))


def stored_view(box: np.ndarray, taps: tuple[str, ...], result) -> BoxView | None:
    """The view of a result the document keeps (``document.ModelResult``): the one drawn for it,
    or one made from its box map (Segment all images), drawn without running the network (no
    parts, heatmaps or probe contributions until the box is selected). None: nothing to draw."""
    if result.view is not None:
        return result.view
    if result.figure_ground is None:
        return None
    return BoxView(np.asarray(box, np.float64), tuple(taps), result.figure_ground, None, None, result.keypoints, {}, 0.0)


@dataclass
class ViewerState:
    """The shown image and what is drawn over it."""

    image: np.ndarray | None = None  # RGB uint8 [H, W, 3] of the shown image, None while it loads
    image_index: int | None = None  # into Project.images
    image_key: str = ""  # changes on every (re)load: answers for an old key are stale
    selected_id: int | None = None
    views: dict[int, BoxView] = field(default_factory=dict)  # model results drawn, by box id
    model_info: "ModelInfo | None" = None  # None until the checkpoint has loaded
    _listeners: list[Callable[[frozenset[str]], None]] = field(default_factory=list, repr=False)
    _held: int = field(default=0, repr=False)
    _pending: set[str] = field(default_factory=set, repr=False)

    def subscribe(self, callback: Callable[[frozenset[str]], None]) -> None:
        """``callback(what)`` after each change; ``what`` names them: "image", "selection",
        "views", "document" (the project changed), "score" (the score filter moved)."""
        self._listeners.append(callback)

    def changed(self, what: str) -> None:
        """Tell the subscribers (at the end of ``changes`` when inside it)."""
        self._pending.add(what)
        if not self._held:
            self._tell()

    def _tell(self) -> None:
        pending, self._pending = frozenset(self._pending), set()
        for callback in list(self._listeners):
            callback(pending)

    @contextmanager
    def changes(self) -> Iterator[None]:
        """Changes made inside are told once, together, at its end."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
        if not self._held and self._pending:
            self._tell()

    def show_image(self, image: np.ndarray) -> None:
        self.image = image
        self.changed("image")

    def select(self, box_id: int | None) -> None:
        if box_id != self.selected_id:
            self.selected_id = box_id
            self.changed("selection")

    def show_views(self, views: dict[int, BoxView]) -> None:
        """Model results to draw, by box id (replacing those drawn for the same boxes)."""
        self.views.update(views)
        self.changed("views")

    def forget_image(self) -> None:
        """Nothing shown: the window clears what it drew itself (``CanvasController.clear_results``)."""
        self.image, self.image_index, self.image_key, self.selected_id = None, None, "", None
        self.views.clear()
