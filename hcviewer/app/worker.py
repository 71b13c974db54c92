"""All model work off the GUI thread: a ``ModelWorker`` QObject living in its own QThread, and a
``ModelService`` the GUI talks to.

The GUI never waits on the model. Requests travel as queued signals; the worker answers with
signals. Requests for an image that is no longer shown are dropped on both sides: the worker
skips them (``wanted_key`` is set from the GUI thread, a plain attribute write) and the GUI
ignores late answers. The trunk runs once per image (``set_image``); every box, tap-subset,
compare and probe request for that image is answered from its cached features.

torch is imported inside the worker thread, so the window is up before torch has loaded.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from hcviewer.annotation.mask_crops import as_crop, box_map_iou
from hcviewer.refine import DEFAULT_REFINE, refine_probability


@dataclass(frozen=True)
class ModelInfo:
    """What the GUI needs to know about the loaded checkpoint: its network configuration
    (``HypercolumnConfig``: taps, tasks, class, part and keypoint names, ...) and where it runs."""

    path: str
    config: Any  # HypercolumnConfig (typed loosely: the GUI does not import torch-side modules)
    device: str  # e.g. "GPU: NVIDIA H100" or "CPU (2 threads)"
    device_warning: str | None
    load_seconds: float

    def __getattr__(self, name: str) -> Any:
        """The configuration's fields (``info.taps``, ``info.part_names``, ...)."""
        if name == "config":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.config, name)


@dataclass
class BoxRequest:
    """Predict boxes [N, 4] (x0, y0, x1, y1, image px) of one image with a tap subset."""

    image_key: str
    box_ids: list[int]
    boxes: np.ndarray
    taps: tuple[str, ...] | None = None  # None: all taps
    categories: list[str] | None = None  # each box's class for a class-specific checkpoint
    contributions: bool = False  # per-tap contributions for the probe
    refine: bool = False  # edge-refined masks (``HypercolumnPredictor.predict(refine=...)``)


@dataclass
class BatchRequest:
    """Segment all images: every item's boxes (``hcviewer.annotation.batch.predict_images``)."""

    items: list
    refine: bool = False


@dataclass
class BoxResult:
    request: BoxRequest
    prediction: Any  # hcviewer.inference.Prediction
    trunk_seconds: float  # 0 when the image's features were already cached


@dataclass
class CompareRequest:
    """One box under several tap subsets; IoU against ``gt_mask`` (a ``MaskCrop``, or bool
    [H, W]) when given, of the mask cut as the result panel cuts it (``threshold``, ``refine``)."""

    image_key: str
    box_id: int
    box: np.ndarray  # [4]
    subsets: dict[str, tuple[str, ...]]  # name -> taps
    gt_mask: Any = None  # MaskCrop | np.ndarray | None
    category: str | None = None  # the box's class for a class-specific checkpoint
    threshold: float = 0.5  # the display's mask threshold
    refine: bool = False  # the display's Refine edges


@dataclass
class CompareResult:
    request: CompareRequest
    masks: dict[str, np.ndarray]  # name -> [S, S] foreground probability ([h, w] over the box when refined)
    iou: dict[str, float | None]
    seconds: float


@dataclass
class BatchResult:
    results: Any  # whatever hcviewer.annotation.batch.predict_images returns
    cancelled: bool
    seconds: float


@dataclass
class _Image:
    key: str
    rgb: np.ndarray  # [H, W, 3] uint8


class ModelWorker(QObject):
    """Lives in the worker thread; every slot runs there."""

    modelLoaded = Signal(object)  # ModelInfo
    modelFailed = Signal(str)
    featuresStarted = Signal(str)  # image key: the trunk runs (seconds on a large photo)
    imageReady = Signal(str, float)  # image key, trunk seconds
    predicted = Signal(object)  # BoxResult
    compared = Signal(object)  # CompareResult
    batchProgress = Signal(int, int)  # done, total
    batchFinished = Signal(object)  # BatchResult
    failed = Signal(str)  # an error message for the user

    def __init__(self) -> None:
        super().__init__()
        self.wanted_key: str | None = None  # written by the GUI thread
        self.cancel_event = threading.Event()
        self._predictor = None
        self._image: _Image | None = None
        self._features_key: str | None = None

    # -- loading ---------------------------------------------------------------------------
    @Slot(str, str, bool)
    def load(self, checkpoint: str, device: str, mirror: bool) -> None:
        start = time.perf_counter()
        try:
            from hcviewer.inference import HypercolumnPredictor

            predictor = HypercolumnPredictor.from_checkpoint(checkpoint, device, mirror)
        except Exception as exc:  # noqa: BLE001 - any failure becomes a message, the app stays up
            message = str(exc)  # CheckpointError names the file: said once
            self.modelFailed.emit(f"Could not load the model: {message}" if checkpoint in message
                                  else f"Could not load the model {checkpoint}: {message}")
            return
        self._predictor = predictor
        self._features_key = None
        choice = predictor.device_choice
        self.modelLoaded.emit(ModelInfo(checkpoint, predictor.model.config, choice.description, choice.warning,
                                        time.perf_counter() - start))
        if self._image is not None and self._image.key == self.wanted_key:
            self._ensure_features(self._image.key)

    # -- image -----------------------------------------------------------------------------
    @Slot(str, object)
    def set_image(self, key: str, rgb: np.ndarray) -> None:
        """Remember the shown image and run the trunk on it now (so the first click is fast)."""
        if key != self.wanted_key:
            return
        self._image = _Image(key, rgb)
        self._features_key = None
        if self._predictor is not None:
            self._guard(lambda: self._ensure_features(key))

    def _ensure_features(self, key: str) -> float:
        """Run the trunk for ``key`` unless its features are cached; returns trunk seconds."""
        if self._features_key == key:
            return 0.0
        if self._image is None or self._image.key != key:
            raise LookupError(f"image {key} is not loaded in the worker")
        self.featuresStarted.emit(key)
        seconds = self._predictor.set_image(self._image.rgb)
        self._features_key = key
        self.imageReady.emit(key, seconds)
        return seconds

    # -- boxes -----------------------------------------------------------------------------
    @Slot(object)
    def predict(self, request: BoxRequest) -> None:
        if not self._is_current(request.image_key):
            return

        def run() -> None:
            trunk = self._ensure_features(request.image_key)
            prediction = self._predictor.predict(request.boxes, taps=request.taps, categories=request.categories,
                                                 refine=request.refine, contributions=request.contributions)
            self.predicted.emit(BoxResult(request, prediction, trunk))

        self._guard(run)

    @Slot(object)
    def compare(self, request: CompareRequest) -> None:
        """All subsets from ONE prediction with contributions: logits = bias + sum over the
        subset's taps (the head is linear in its taps), so each subset costs a numpy sum."""
        if not self._is_current(request.image_key):
            return

        def run() -> None:
            self._ensure_features(request.image_key)
            start = time.perf_counter()
            prediction = self._predictor.predict(
                request.box[None], categories=None if request.category is None else [request.category],
                tasks=("figure_ground",), contributions=True)
            contributions = {tap: c[0, 0] for tap, c in prediction.contributions["figure_ground"].items()}
            bias = float(prediction.bias["figure_ground"][0, 0])
            masks, iou = {}, {}
            gt = None if request.gt_mask is None else as_crop(request.gt_mask)
            for name, taps in request.subsets.items():
                logits = bias + sum((contributions[t] for t in taps), np.zeros_like(next(iter(contributions.values()))))
                masks[name] = 1.0 / (1.0 + np.exp(-logits))
                if request.refine:  # as predict(refine=True) refines the result panel's mask
                    masks[name] = refine_probability(self._image.rgb, request.box, masks[name], DEFAULT_REFINE)
                iou[name] = None if gt is None else box_map_iou(masks[name], request.box, request.threshold, gt)
            self.compared.emit(CompareResult(request, masks, iou, time.perf_counter() - start))

        self._guard(run)

    # -- batch -----------------------------------------------------------------------------
    @Slot(object)
    def predict_all(self, request: BatchRequest) -> None:
        """``hcviewer.annotation.batch.predict_images`` over many images; cancellable, with progress."""
        from hcviewer.annotation.batch import predict_images

        self.cancel_event.clear()
        start = time.perf_counter()

        def run() -> None:
            results = predict_images(self._predictor, request.items,
                                     progress_callback=lambda done, total: self.batchProgress.emit(done, total),
                                     cancel_flag=self.cancel_event, refine=request.refine)
            self.batchFinished.emit(BatchResult(results, self.cancel_event.is_set(), time.perf_counter() - start))

        if self._predictor is None:
            self.failed.emit("The model is still loading; try again in a moment.")
            return
        self._features_key = None  # predict_images calls set_image on other images
        self._guard(run)

    # -- helpers ---------------------------------------------------------------------------
    def _is_current(self, key: str) -> bool:
        if key != self.wanted_key:
            return False  # the user has moved on: drop it
        if self._predictor is None:
            self.failed.emit("The model is still loading; the request will work once it is ready.")
            return False
        return True

    def _guard(self, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - an error in the worker is a message, never a crash
            traceback.print_exc()
            # Bad input (InputError is a ValueError) says what is wrong in words; others name their kind.
            self.failed.emit(str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")


class ModelService(QObject):
    """The GUI side: owns the worker thread; methods return at once."""

    _load = Signal(str, str, bool)
    _set_image = Signal(str, object)
    _predict = Signal(object)
    _compare = Signal(object)
    _predict_all = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("hcviewer-model")
        self.worker = ModelWorker()
        self.worker.moveToThread(self.thread)
        self._load.connect(self.worker.load)
        self._set_image.connect(self.worker.set_image)
        self._predict.connect(self.worker.predict)
        self._compare.connect(self.worker.compare)
        self._predict_all.connect(self.worker.predict_all)
        self.thread.start()

    # Each method only queues work for the worker thread.
    def load(self, checkpoint: str, device: str = "auto", mirror: bool = True) -> None:
        self._load.emit(checkpoint, device, mirror)

    def show_image(self, key: str, rgb: np.ndarray) -> None:
        self.worker.wanted_key = key
        self._set_image.emit(key, rgb)

    def forget_image(self) -> None:
        self.worker.wanted_key = None

    def predict(self, request: BoxRequest) -> None:
        self._predict.emit(request)

    def compare(self, request: CompareRequest) -> None:
        self._compare.emit(request)

    def predict_all(self, items: list, refine: bool = False) -> None:
        self._predict_all.emit(BatchRequest(items, refine))

    def cancel(self) -> None:
        self.worker.cancel_event.set()

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Stop the thread after the request it is running; pending requests are dropped."""
        self.worker.wanted_key = None
        self.worker.cancel_event.set()
        self.thread.quit()
        return self.thread.wait(timeout_ms)

