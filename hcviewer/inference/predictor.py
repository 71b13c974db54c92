"""Segment-Anything-style predictor: ``set_image`` runs the trunk once and caches its
features; ``predict`` answers any boxes, tasks and tap subsets from that cache.

Threads: one predictor may be shared by several threads. The image set by ``set_image`` (its
features, size and pixels) belongs to the calling thread, so each thread's ``predict`` answers
for the image that thread set, never for one another thread set in between; model calls are
serialised (``FX_TRACE_LOCK``). A thread predicts only after its own ``set_image``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hcviewer.boxes import box_problem
from hcviewer.inference.device import DeviceChoice, choose_device
from hcviewer.modeling.backbones import FX_TRACE_LOCK
from hcviewer.modeling.preprocess import resize_for_model
from hcviewer.modeling.refine import DEFAULT_REFINE, refine_probability
from hcviewer.modeling import (
    CheckpointInfo,
    HypercolumnModel,
    heatmaps_to_keypoints,
    load_checkpoint,
    paste_heatmap,
    paste_masks_in_image,
)
from hcviewer.threads import narrowed_threads, waits_passively


# CPU threads of the heads where OpenMP waits passively (``hcviewer.threads.waits_passively``,
# the app's and ``hcviewer predict``'s policy): the heads are many small operations, and each that
# runs on two threads first wakes the sleeping one. On 2 cores one thread (its two largest
# products widened back to both) was faster for every box count: 4 boxes 12.2 against 14.5 ms,
# 16 boxes 27.5 against 35.9 ms (benchmarks/bench_heads_threads.py, docs/performance.md). With
# spinning threads (the trainer's evaluation) two stay faster: 4 boxes 7.3 against 8.4 ms.
PASSIVE_HEADS_THREADS = 1

# Boxes per heads pass: the heads' per-pixel working set grows with the chunk and leaves the
# caches; 256 boxes on one CPU thread took 2.3-2.5 ms per box in chunks of 8-32 and 3.0 ms in
# chunks of 64 (benchmarks/bench_heads_chunk.py, docs/performance.md).
HEADS_CHUNK = 16


class InputError(ValueError):
    """Bad input from the caller (image, boxes, taps, tasks); the message says which and why."""


@dataclass
class Prediction:
    """Results for N boxes; box heatmaps are S x S over each box, numpy float32.

    - ``figure_ground``: [N, S, S] foreground probability.
    - ``parts``: [N, P+1, S, S] per-pixel part probabilities (channel 0 is background).
    - ``keypoint_heatmaps``: [N, J, S, S] spatial-softmax probabilities; ``keypoints`` [N, J, 3]
      (x, y, score) in image pixels.
    - ``contributions``: {task: {tap: [N, C, S, S] logit contribution}}, plus ``bias``
      {task: [N, C]}: logits = bias + sum of the selected taps' contributions.
    - ``has_keypoints`` / ``has_parts``: [N] bool, whether the keypoint / part head answers each
      box (``HypercolumnPredictor.applies_keypoints`` of its label). For the other boxes
      ``keypoints`` are (nan, nan, 0) and ``keypoint_heatmaps`` and ``parts`` are zero: show
      nothing for them. ``logits`` and ``contributions`` stay the network's raw output.
    - ``refined``: with ``predict(refine=...)``, per box its edge-refined foreground probability
      [h_i, w_i] float32 over the same box on a finer grid (``hcviewer.modeling.refine``); use it in
      place of ``figure_ground`` (``mask_maps`` gives whichever masks are cut from).
    """

    boxes: np.ndarray
    taps: tuple[str, ...]
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    figure_ground: np.ndarray | None = None
    parts: np.ndarray | None = None
    keypoint_heatmaps: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    contributions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    bias: dict[str, np.ndarray] = field(default_factory=dict)
    has_keypoints: np.ndarray | None = None
    has_parts: np.ndarray | None = None
    refined: list[np.ndarray] | None = None
    seconds: float = 0.0

    @property
    def mask_maps(self) -> list[np.ndarray] | np.ndarray | None:
        """Per box the foreground probability its mask is cut from: the refined map when the
        prediction was refined, else ``figure_ground``."""
        return self.refined if self.refined is not None else self.figure_ground

    def __len__(self) -> int:
        return len(self.boxes)


class _ThreadImage:
    """The image state of one thread (see the module docstring); these defaults in every new thread."""

    features: dict[str, torch.Tensor] | None = None
    image_size: tuple[int, int] | None = None
    image: np.ndarray | None = None
    scale: float = 1.0


class _ThreadImages:
    """One ``_ThreadImage`` per OS thread. Not ``threading.local``: PySide6 runs each slot call of
    a QThread under a new Python thread state, which empties a ``threading.local`` between the
    app worker's ``set_image`` and ``predict`` calls. Keyed by Python's thread id and the kernel's
    (the OS reuses either alone); when a new thread first asks, the states of threads that have
    ended are dropped (where the OS lists its threads: Linux), freeing their images' features."""

    def __init__(self) -> None:
        self._states: dict[tuple[int, int], _ThreadImage] = {}
        self._lock = threading.Lock()

    def current(self) -> _ThreadImage:
        key = (threading.get_ident(), threading.get_native_id())
        with self._lock:
            state = self._states.get(key)
            if state is None:
                self._drop_ended()
                state = self._states[key] = _ThreadImage()
            return state

    def _drop_ended(self) -> None:
        try:
            alive = {int(name) for name in os.listdir("/proc/self/task")}
        except OSError:  # not Linux: states are kept
            return
        for key in [key for key in self._states if key[1] not in alive]:
            del self._states[key]


def _per_thread(name: str) -> property:
    """An attribute of the calling thread's image state."""
    return property(lambda self: getattr(self._thread_image.current(), name),
                    lambda self, value: setattr(self._thread_image.current(), name, value))


class HypercolumnPredictor:
    # Per thread: two threads alternating set_image and predict each get their own image's results.
    _features = _per_thread("features")
    _image_size = _per_thread("image_size")
    _image = _per_thread("image")
    _scale = _per_thread("scale")

    def __init__(self, model: HypercolumnModel, device: str | torch.device = "auto",
                 info: CheckpointInfo | None = None) -> None:
        if isinstance(device, torch.device):
            self.device_choice = DeviceChoice(device, str(device))
        else:
            self.device_choice = choose_device(device)
        self.device = self.device_choice.device
        self.model = model.to(self.device).eval()
        self.info = info
        self.config = model.config
        self._mean = torch.tensor(self.config.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.config.std, device=self.device).view(1, 3, 1, 1)
        self._thread_image = _ThreadImages()
        self._features: dict[str, torch.Tensor] | None = None
        self._image_size: tuple[int, int] | None = None
        self._image: np.ndarray | None = None
        self._scale = 1.0

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto") -> "HypercolumnPredictor":
        model, info = load_checkpoint(path)
        return cls(model, device, info)

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
        """Run the trunk on an RGB uint8 image [H, W, 3]; returns the seconds it took."""
        image = _check_image(image)
        start = time.perf_counter()
        resized, box_scale = resize_for_model(image, self.config.max_image_side)
        tensor = torch.from_numpy(np.ascontiguousarray(resized)).to(self.device)
        tensor = tensor.permute(2, 0, 1)[None].float().div_(255)
        tensor = (tensor - self._mean) / self._std
        with FX_TRACE_LOCK, torch.inference_mode(), self._autocast():
            # Batch norm folded into the trunk's convolutions, channels-last maps (as the box cuts
            # read them): ``Backbone._inference_body``.
            self._features = self.model.forward_trunk(tensor)
        self._image_size = image.shape[:2]
        self._image = image  # edge refinement reads its pixels (a reference: the caller keeps it unchanged)
        self._scale = box_scale
        return time.perf_counter() - start

    def reset_image(self) -> None:
        self._features = None
        self._image_size = None
        self._image = None

    def applies_keypoints(self, label: str | None) -> bool:
        """Whether boxes labelled ``label`` get keypoints: the checkpoint's keypoint categories
        (``config.keypoint_categories``, e.g. person) and class-agnostic boxes (None, "object",
        "unknown"); False for every box when the checkpoint has no keypoint head."""
        return self.config.applies_to("keypoints", label)

    def applies_parts(self, label: str | None) -> bool:
        """Whether boxes labelled ``label`` get part labels (as ``applies_keypoints``)."""
        return self.config.applies_to("parts", label)

    # -- boxes -------------------------------------------------------------------------------
    def predict(
        self,
        boxes: np.ndarray | list,
        tasks: tuple[str, ...] | list[str] | None = None,
        taps: tuple[str, ...] | list[str] | None = None,
        class_index: np.ndarray | list[int] | None = None,
        return_contributions: bool = False,
        batch_size: int = HEADS_CHUNK,
        labels: Sequence[str | None] | None = None,
        refine: bool | str = False,
    ) -> Prediction:
        """Predict for boxes [N, 4] (x0, y0, x1, y1) in original image pixels.

        ``taps`` names the layers whose contributions are summed (default: all);
        ``class_index`` picks each box's classifier set for class-specific checkpoints.
        ``labels``: each box's category name (None: class-agnostic); keypoints and parts are
        given only for the boxes they apply to (``Prediction.has_keypoints``); without labels
        every box gets them. ``refine``: True (the default method, ``guided``) or a method of
        ``hcviewer.modeling.refine.REFINE_METHODS`` fills ``Prediction.refined``.
        """
        if self._features is None or self._image_size is None:
            raise InputError("no image is set in this thread; call set_image(image) first")
        try:
            taps = self.model.check_taps(taps)
            tasks = self.model.check_tasks(tasks)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        boxes_np = check_boxes(boxes, self._image_size)
        class_sets = self._check_class_index(class_index, len(boxes_np))
        start = time.perf_counter()
        with FX_TRACE_LOCK, self._heads_threads():  # the thread count is the process's: no model call meanwhile
            chunks = []
            for lo in range(0, len(boxes_np), batch_size):
                chunks.append(self._predict_chunk(boxes_np[lo:lo + batch_size],
                                                  None if class_sets is None else class_sets[lo:lo + batch_size],
                                                  tasks, taps, return_contributions))
            result = _concatenate(chunks, boxes_np, taps, tasks, self.model, return_contributions)
        self._answer_categories(result, labels)
        if refine and result.figure_ground is not None:
            method = DEFAULT_REFINE if refine is True else refine
            try:
                result.refined = [refine_probability(self._image, box, probability, method)
                                  for box, probability in zip(result.boxes, result.figure_ground)]
            except ValueError as exc:
                raise InputError(str(exc)) from None
        result.seconds = time.perf_counter() - start
        return result

    def _answer_categories(self, result: Prediction, labels: Sequence[str | None] | None) -> None:
        """Blank keypoints and parts of the boxes whose category their head does not answer."""
        n = len(result.boxes)
        if labels is not None and len(labels) != n:
            raise InputError(f"labels must name {n} boxes, got {len(labels)}")
        names = [None] * n if labels is None else list(labels)
        if result.keypoints is not None:
            result.has_keypoints = np.array([self.applies_keypoints(name) for name in names], bool)
            result.keypoints[~result.has_keypoints] = (np.nan, np.nan, 0.0)
            result.keypoint_heatmaps[~result.has_keypoints] = 0.0
        if result.parts is not None:
            result.has_parts = np.array([self.applies_parts(name) for name in names], bool)
            result.parts[~result.has_parts] = 0.0

    def _check_class_index(self, class_index, n: int) -> torch.Tensor | None:
        if not self.config.class_specific:
            return None
        if class_index is None:
            raise InputError(f"this checkpoint is class-specific ({list(self.config.class_names)}); give each box a class index")
        labels = np.asarray(class_index, dtype=np.int64).reshape(-1)
        if len(labels) != n or labels.min(initial=0) < 0 or labels.max(initial=0) >= len(self.config.class_names):
            raise InputError(f"class_index must hold {n} values in [0, {len(self.config.class_names)})")
        return torch.from_numpy(labels).to(self.device)

    def _heads_threads(self) -> contextlib.AbstractContextManager:
        """``PASSIVE_HEADS_THREADS`` for the heads on a CPU whose threads wait passively (their
        large operations widen again: ``hcviewer.threads.widened_threads``)."""
        if self.device.type != "cpu" or not waits_passively():
            return contextlib.nullcontext()
        return narrowed_threads(PASSIVE_HEADS_THREADS)

    def _predict_chunk(self, boxes: np.ndarray, labels, tasks, taps, return_contributions):
        rois = torch.zeros(len(boxes), 5, device=self.device)
        rois[:, 1:] = torch.from_numpy(boxes).to(self.device) * self._scale
        with torch.inference_mode(), self._autocast():  # ``predict`` holds FX_TRACE_LOCK
            out = self.model.forward_boxes(self._features, rois, labels, tasks, taps, return_contributions)
        return out


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


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _concatenate(chunks, boxes: np.ndarray, taps, tasks, model: HypercolumnModel, with_contributions: bool) -> Prediction:
    s = model.config.output_size
    result = Prediction(boxes=boxes, taps=tuple(taps))
    for task in tasks:
        if len(chunks) == 1:  # no copy for the usual single chunk
            logits = chunks[0].logits[task].float()
        elif chunks:
            logits = torch.cat([c.logits[task].float() for c in chunks])
        else:
            logits = torch.zeros(0, model.config.task_channels(task), s, s)
        result.logits[task] = _numpy(logits)
        if task == "figure_ground":
            result.figure_ground = _numpy(logits[:, 0].sigmoid())
        elif task == "parts":
            result.parts = _numpy(logits.softmax(1))
        elif task == "keypoints":
            n, j = logits.shape[:2]
            heatmaps = logits.reshape(n, j, s * s).softmax(-1).reshape(n, j, s, s)
            result.keypoint_heatmaps = _numpy(heatmaps)
            result.keypoints = _numpy(heatmaps_to_keypoints(logits.cpu(), torch.from_numpy(boxes), heatmaps.cpu()))
        if with_contributions:
            result.contributions[task] = {
                tap: _numpy(torch.cat([c.contributions[task][tap].float() for c in chunks]))
                if chunks else np.zeros((0, model.config.task_channels(task), s, s), np.float32)
                for tap in taps
            }
            result.bias[task] = (
                _numpy(torch.cat([c.bias[task].float() for c in chunks])[:, :, 0, 0]) if chunks
                else np.zeros((0, model.config.task_channels(task)), np.float32)
            )
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
