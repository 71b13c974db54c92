"""Segment-Anything-style predictor: ``set_image`` runs the trunk once and caches its
features; ``predict`` answers any boxes and tap subsets from that cache. By default the trunk also
sees the mirror image and every answer is the mean of the two (``hcviewer.modeling.mirror``).

One predictor serves one thread at a time (the app's worker and ``hcviewer predict`` each own
theirs): its image is the one the last ``set_image`` gave.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hcviewer.boxes import box_problem
from hcviewer.inference.device import DeviceChoice, choose_device
from hcviewer.modeling import (
    BoxOutputs,
    CheckpointInfo,
    HypercolumnModel,
    heatmaps_to_keypoints,
    inference_copy,
    keypoint_probabilities,
    load_checkpoint,
)
from hcviewer.modeling.mirror import forward_boxes_with_mirror, with_mirror_image
from hcviewer.modeling.preprocess import model_input
from hcviewer.paste import paste_heatmap, paste_masks_in_image
from hcviewer.refine import DEFAULT_REFINE, refine_probability

# Boxes per heads pass, which bounds the per-pixel features' memory ([S*S, boxes, channels]);
# 256 boxes took 2.3-2.5 ms per box in chunks of 8-32 and 3.0 ms in chunks of 64
# (docs/performance.md).
HEADS_CHUNK = 16


class InputError(ValueError):
    """Bad input from the caller (image, boxes, taps, tasks); the message says which and why."""


@dataclass
class Prediction:
    """Results for N boxes; box heatmaps are S x S over each box, numpy float32. Keypoints and
    parts of boxes their head does not answer (``has_keypoints``, ``has_parts``: the box's
    category, ``HypercolumnConfig.applies_to``) are (nan, nan, 0) and zero: show nothing for
    them; ``logits`` and ``contributions`` stay the network's raw output."""

    boxes: np.ndarray
    taps: tuple[str, ...]
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # {task: [N, C, S, S]}
    figure_ground: np.ndarray | None = None  # [N, S, S] foreground probability
    parts: np.ndarray | None = None  # [N, P+1, S, S] part probabilities (channel 0: background)
    keypoint_heatmaps: np.ndarray | None = None  # [N, J, S, S] spatial-softmax probabilities (keypoint_probabilities)
    keypoints: np.ndarray | None = None  # [N, J, 3] (x, y, score) in image pixels
    # {task: {tap: [N, C, S, S]}} and {task: [N, C]}: logits = bias + the taps' contributions
    contributions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    bias: dict[str, np.ndarray] = field(default_factory=dict)
    has_keypoints: np.ndarray | None = None  # [N] bool
    has_parts: np.ndarray | None = None  # [N] bool
    # predict(refine=...): per box its edge-refined foreground probability [h_i, w_i] over the box
    refined: list[np.ndarray] | None = None
    seconds: float = 0.0

    @property
    def mask_maps(self) -> list[np.ndarray] | np.ndarray | None:
        """Per box the foreground probability its mask is cut from: the refined map when the
        prediction was refined, else ``figure_ground``."""
        return self.refined if self.refined is not None else self.figure_ground

    def __len__(self) -> int:
        return len(self.boxes)


class HypercolumnPredictor:
    def __init__(self, model: HypercolumnModel, device: str | torch.device = "auto",
                 info: CheckpointInfo | None = None, mirror: bool = True) -> None:
        """``model`` stays as it is: the predictor answers with its own inference copy.
        ``mirror``: average every answer with the mirror image's (twice the trunk time)."""
        if isinstance(device, torch.device):
            self.device_choice = DeviceChoice(device, str(device))
        else:
            self.device_choice = choose_device(device)
        self.device = self.device_choice.device
        self.model = inference_copy(model).to(self.device)
        self.info = info
        self.config = model.config
        # The per-pixel classifiers made once (``HypercolumnModel.pixel_classifiers``): a 4-box
        # predict 29.2 -> 21.2 ms (20 coco-val-dev photos, interleaved, 2-core CPU).
        self._classifiers = self.model.pixel_classifiers()
        self.mirror = mirror
        self._input_width = 0
        self._features: dict[str, list[torch.Tensor]] | None = None
        self._image_size: tuple[int, int] | None = None
        self._image: np.ndarray | None = None
        self._scale = 1.0

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto",
                        mirror: bool = True) -> "HypercolumnPredictor":
        model, info = load_checkpoint(path)
        return cls(model, device, info, mirror)

    # -- properties --------------------------------------------------------------------------
    @property
    def taps(self) -> tuple[str, ...]:
        return self.model.taps

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.model.tasks

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the original image given to ``set_image``."""
        return self._image_size

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- image -------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray) -> float:
        """Run the trunk on an RGB uint8 image [H, W, 3] (and on its mirror image); returns the
        seconds it took."""
        image = _check_image(image)
        start = time.perf_counter()
        config = self.config
        tensor, box_scale = model_input(image, config.max_image_side, config.mean, config.std, self.device)
        with torch.inference_mode(), self._autocast():
            self._features = self.model.backbone(with_mirror_image(tensor) if self.mirror else [tensor])
        self._input_width = tensor.shape[-1]
        self._image_size = image.shape[:2]
        self._image = image  # edge refinement reads its pixels (a reference: the caller keeps it unchanged)
        self._scale = box_scale
        return time.perf_counter() - start

    def reset_image(self) -> None:
        self._features = None
        self._image_size = None
        self._image = None

    # -- boxes -------------------------------------------------------------------------------
    def predict(self, boxes: np.ndarray | list, taps: Sequence[str] | None = None,
                categories: Sequence[str | None] | None = None, tasks: Sequence[str] | None = None,
                refine: bool | str = False, contributions: bool = False) -> Prediction:
        """Predict for boxes [N, 4] (x0, y0, x1, y1) in original image pixels.

        ``taps`` names the layers whose contributions are summed (default: all). ``categories``:
        each box's category name (None: class-agnostic); it picks a class-specific checkpoint's
        classifier set, and keypoints and parts are given only for the boxes they apply to
        (``Prediction.has_keypoints``); without categories every box gets them. ``tasks``: the
        heads to report (default: all). ``refine``: True (the default method, ``guided``) or a
        method of ``hcviewer.refine.REFINE_METHODS`` fills ``Prediction.refined``.
        ``contributions``: fill ``Prediction.contributions`` and ``bias``.
        """
        if self._features is None or self._image_size is None:
            raise InputError("no image is set; call set_image(image) first")
        try:
            taps = self.model.check_taps(taps)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        tasks = self.tasks if tasks is None else tuple(tasks)
        missing = [t for t in tasks if t not in self.tasks]
        if missing:
            raise InputError(f"this checkpoint has no {missing} head; it has {list(self.tasks)}")
        boxes_np = check_boxes(boxes, self._image_size)
        if categories is not None and len(categories) != len(boxes_np):
            raise InputError(f"categories must name {len(boxes_np)} boxes, got {len(categories)}")
        class_sets = self._class_sets(categories, len(boxes_np))
        start = time.perf_counter()
        chunks = []
        step = HEADS_CHUNK // 2 if self.mirror else HEADS_CHUNK  # a mirrored box is two boxes
        for lo in range(0, max(len(boxes_np), 1), step):  # one call without boxes: empty outputs
            chunks.append(self._forward_boxes(boxes_np[lo:lo + step],
                                              None if class_sets is None else class_sets[lo:lo + step],
                                              taps, contributions))
        result = _prediction(chunks, boxes_np, taps, tasks, self.config.keypoint_absent)
        self._answer_categories(result, categories)
        if refine and result.figure_ground is not None:
            method = DEFAULT_REFINE if refine is True else refine
            try:
                result.refined = [refine_probability(self._image, box, probability, method)
                                  for box, probability in zip(result.boxes, result.figure_ground)]
            except ValueError as exc:
                raise InputError(str(exc)) from None
        result.seconds = time.perf_counter() - start
        return result

    def _forward_boxes(self, boxes: np.ndarray, class_sets: torch.Tensor | None, taps: tuple[str, ...],
                       contributions: bool) -> BoxOutputs:
        rois = torch.zeros(len(boxes), 5, device=self.device)
        rois[:, 1:] = torch.from_numpy(boxes).to(self.device) * self._scale
        with torch.inference_mode(), self._autocast():
            if self.mirror:
                return forward_boxes_with_mirror(self.model, self._features, rois, self._input_width, class_sets,
                                                 taps, contributions, self._classifiers)
            return self.model.forward_boxes(self._features, rois, class_sets, taps, contributions, self._classifiers)

    def _answer_categories(self, result: Prediction, categories: Sequence[str | None] | None) -> None:
        """Blank keypoints and parts of the boxes whose category their head does not answer."""
        names = [None] * len(result.boxes) if categories is None else list(categories)
        if result.keypoints is not None:
            result.has_keypoints = np.array([self.config.applies_to("keypoints", name) for name in names], bool)
            result.keypoints[~result.has_keypoints] = (np.nan, np.nan, 0.0)
            result.keypoint_heatmaps[~result.has_keypoints] = 0.0
        if result.parts is not None:
            result.has_parts = np.array([self.config.applies_to("parts", name) for name in names], bool)
            result.parts[~result.has_parts] = 0.0

    def _class_sets(self, categories: Sequence[str | None] | None, n: int) -> torch.Tensor | None:
        """Each box's classifier set of a class-specific checkpoint, by its category name."""
        if not self.config.class_specific:
            return None
        names = list(self.config.class_names)
        if categories is None:
            raise InputError(f"this checkpoint is class-specific ({names}); give each box its category")
        unknown = sorted({str(c) for c in categories} - set(names))
        if unknown:
            raise InputError(f"categories {unknown} are not among the checkpoint's classes {names}")
        return torch.tensor([names.index(c) for c in categories], dtype=torch.long, device=self.device)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InputError(f"the image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"the image must be RGB with shape [H, W, 3], got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError("the image is empty (zero height or width)")
    if image.dtype != np.uint8:
        raise InputError(f"the image must be uint8 (0-255), got {image.dtype}")
    return image


def check_boxes(boxes, image_size: tuple[int, int]) -> np.ndarray:
    """Validate boxes [N, 4] (x0, y0, x1, y1) against an image (H, W); errors name the box index.

    Boxes partly outside the image are fine (the prediction covers the whole box); boxes
    entirely outside it are rejected.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), np.float32)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InputError(f"boxes must have shape [N, 4] as (x0, y0, x1, y1), got {arr.shape}")
    for i, box in enumerate(arr):
        problem = box_problem(box, image_size)
        if problem is not None:
            raise InputError(f"box {i} {problem}: {box.tolist()} (x0, y0, x1, y1)")
    return arr.astype(np.float32)


def _prediction(outputs: list[BoxOutputs], boxes: np.ndarray, taps: tuple[str, ...], tasks: tuple[str, ...],
                keypoint_absent: bool) -> Prediction:
    """The heads' outputs of every chunk of boxes as one ``Prediction`` (probabilities, keypoints)."""
    def joined(get) -> torch.Tensor:
        return torch.cat([get(o) for o in outputs]).float().cpu()

    result = Prediction(boxes=boxes, taps=taps)
    for task in tasks:
        logits = joined(lambda o: o.logits[task])
        result.logits[task] = logits.numpy()
        if task == "figure_ground":
            result.figure_ground = logits[:, 0].sigmoid().numpy()
        elif task == "parts":
            result.parts = logits.softmax(1).numpy()
        elif task == "keypoints":
            heatmaps = keypoint_probabilities(logits, keypoint_absent)
            result.keypoint_heatmaps = heatmaps.numpy()
            result.keypoints = heatmaps_to_keypoints(logits, torch.from_numpy(boxes), heatmaps).numpy()
        if outputs[0].contributions:
            result.contributions[task] = {tap: joined(lambda o: o.contributions[task][tap]).numpy() for tap in taps}
            result.bias[task] = joined(lambda o: o.bias[task]).numpy()
    return result


def paste_masks(prediction: Prediction, image_size: tuple[int, int], threshold: float | None = None) -> np.ndarray:
    """Figure-ground probabilities pasted into the image: [N, H, W] float32, or bool when
    ``threshold`` is given; the refined probabilities when the prediction has them."""
    if prediction.figure_ground is None:
        raise InputError("this prediction has no figure-ground masks")
    if prediction.refined is not None:
        probs = np.zeros((len(prediction), *image_size), np.float32)
        for i, (refined, box) in enumerate(zip(prediction.refined, prediction.boxes)):
            probs[i] = paste_heatmap(torch.from_numpy(refined[None]), torch.from_numpy(box), image_size)[0].numpy()
    else:
        probs = paste_masks_in_image(torch.from_numpy(prediction.figure_ground),
                                     torch.from_numpy(prediction.boxes), image_size).numpy()
    return probs >= threshold if threshold is not None else probs
