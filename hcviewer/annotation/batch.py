"""The headless batch path (Qt-free), shared by ``hcviewer predict`` and the app's worker:
segment many images' boxes, encode the masks as COCO RLE, and write COCO results JSON."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from hcviewer.annotation.mask_crops import MaskCrop, rle_from_crop
from hcviewer.boxes import box_problem, describe_box
from hcviewer.fileio import OutputError, write_json_atomic  # noqa: F401 - re-exported: how results are written
from hcviewer.imageio import find_images, read_image  # noqa: F401 - find_images: predict's, kept here
from hcviewer.inference import HypercolumnPredictor, InputError, Prediction
from hcviewer.paste import paste_heatmap_region


# What segmenting a box may raise when it (or the image) is more than the machine can take:
# torch's allocator (RuntimeError), numpy's (MemoryError), OpenCV's in edge refinement (cv2.error).
BOX_FAILURES = (RuntimeError, MemoryError, cv2.error)


@dataclass
class BatchItem:
    image_path: Path
    boxes: np.ndarray  # [N, 4] x0, y0, x1, y1 pixels
    labels: list[str]
    image_id: int


@dataclass
class ImageResult:
    """One image's masks; ``error`` says why an image was skipped (then the lists are empty)."""

    image_path: Path
    image_id: int
    boxes: np.ndarray  # [N, 4] xyxy
    masks_rle: list[dict]  # COCO compressed RLE, counts as str
    scores: list[float]  # mean foreground probability inside each mask
    keypoints: np.ndarray | None  # [N, J, 3] (x, y, score), when the checkpoint predicts them
    error: str | None = None
    labels: list[str] = field(default_factory=list)
    box_indices: list[int] | None = None  # the item's box each mask is for (None: all, in order)
    skipped: list[SkippedBox] = field(default_factory=list)  # boxes that could not be segmented
    image_size: tuple[int, int] | None = None  # (H, W) once the image was read
    # Per box its foreground probability over the box (the app draws it): [N, S, S], or with
    # ``refine`` the list of edge-refined [h_i, w_i] maps the masks were encoded from.
    figure_ground: np.ndarray | list[np.ndarray] | None = None


@dataclass(frozen=True)
class SkippedBox:
    """A box of an item that was not segmented (the image's other boxes were)."""

    index: int  # into the item's boxes
    box: tuple[float, float, float, float]
    label: str
    problem: str  # e.g. "lies entirely outside the 160x120 image"

    def describe(self) -> str:
        return f"{describe_box(self.label, self.box)} {self.problem}"


def read_image_rgb(path: Path) -> np.ndarray:
    """RGB uint8 [H, W, 3]; ImageReadError (a ValueError) naming the file when it cannot be read or
    decoded, or is over the pixel limit."""
    return read_image(path).rgb


def predict_images(
    predictor: HypercolumnPredictor,
    items: list[BatchItem],
    progress_callback: Callable[[int, int], None] | None = None,
    cancel_flag: threading.Event | None = None,
    threshold: float = 0.5,
    refine: bool | str = False,
) -> list[ImageResult]:
    """Segment every item's boxes, one image at a time. Unreadable images and boxes the
    predictor refuses become a result with ``error`` set; ``cancel_flag`` stops between images
    (the results so far are returned). ``progress_callback(done, total)`` follows each image.
    ``refine``: edge refinement of the masks (``HypercolumnPredictor.predict``). Keypoints are
    predicted only for the boxes whose label the keypoint head answers (NaN rows otherwise)."""
    if "figure_ground" not in predictor.tasks:
        raise InputError(f"this checkpoint predicts {list(predictor.tasks)}, not figure-ground masks")
    tasks = tuple(t for t in ("figure_ground", "keypoints") if t in predictor.tasks)
    results = []
    for done, item in enumerate(items, start=1):
        if cancel_flag is not None and cancel_flag.is_set():
            break
        results.append(_predict_item(predictor, item, tasks, threshold, refine))
        if progress_callback is not None:
            progress_callback(done, len(items))
    return results


def _predict_item(predictor: HypercolumnPredictor, item: BatchItem, tasks: tuple[str, ...],
                  threshold: float, refine: bool | str = False) -> ImageResult:
    path = Path(item.image_path)
    boxes = np.asarray(item.boxes, np.float32).reshape(-1, 4)
    empty = ImageResult(path, item.image_id, boxes, [], [], None, labels=list(item.labels))
    if len(boxes) == 0:
        return empty
    try:
        image = read_image_rgb(path)
    except ValueError as exc:
        return replace(empty, error=str(exc))
    kept, skipped = _check_boxes(item, boxes, image.shape[:2])
    prediction, error = None, None
    if kept:
        try:
            predictor.set_image(image)
            prediction, kept, skipped = _segment_boxes(predictor, item, boxes, kept, skipped, tasks, refine)
        except InputError as exc:
            error = f"{path}: {exc}"
    result = replace(empty, boxes=boxes[kept], labels=[item.labels[i] for i in kept], box_indices=kept,
                     skipped=skipped, image_size=image.shape[:2], error=error)
    if prediction is None:
        return result
    masks_rle, scores = _encode_masks(prediction, image.shape[:2], threshold)
    return replace(result, boxes=prediction.boxes, masks_rle=masks_rle, scores=scores, keypoints=prediction.keypoints,
                   figure_ground=prediction.mask_maps)


def _segment_boxes(predictor: HypercolumnPredictor, item: BatchItem, boxes: np.ndarray, kept: list[int],
                   skipped: list[SkippedBox], tasks: tuple[str, ...], refine: bool | str
                   ) -> tuple[Prediction | None, list[int], list[SkippedBox]]:
    """(the prediction of the boxes ``kept``, the boxes it is for, the boxes skipped). When the
    boxes fail together, each is tried alone: one that fails alone is skipped and named with why,
    the others are segmented; when none fails alone the error propagates (the image is skipped)."""
    try:
        return _predict_boxes(predictor, boxes, kept, item.labels, tasks, refine), kept, skipped
    except BOX_FAILURES:
        failed = {}
        for i in kept:
            try:
                _predict_boxes(predictor, boxes, [i], item.labels, tasks, refine)
            except BOX_FAILURES as exc:
                failed[i] = SkippedBox(i, tuple(float(v) for v in boxes[i]), item.labels[i],
                                       f"could not be segmented ({first_line(exc)})")
        if not failed:
            raise
    kept = [i for i in kept if i not in failed]
    skipped = sorted([*skipped, *failed.values()], key=lambda box: box.index)
    prediction = _predict_boxes(predictor, boxes, kept, item.labels, tasks, refine) if kept else None
    return prediction, kept, skipped


def _predict_boxes(predictor: HypercolumnPredictor, boxes: np.ndarray, indices: list[int], labels: list[str],
                   tasks: tuple[str, ...], refine: bool | str) -> Prediction:
    labels = [labels[i] for i in indices]
    return predictor.predict(boxes[indices], categories=labels, tasks=tasks, refine=refine)


def first_line(exc: BaseException) -> str:
    """An error's first line, as a skipped image or box is named with it."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "out of memory" if isinstance(exc, MemoryError) else "no details"


def _check_boxes(item: BatchItem, boxes: np.ndarray, image_size: tuple[int, int]) -> tuple[list[int], list[SkippedBox]]:
    """Indices of the boxes [N, 4] that can be segmented, and the others with why."""
    kept, skipped = [], []
    for i, box in enumerate(boxes):
        problem = box_problem(box, image_size)
        if problem is None:
            kept.append(i)
        else:
            skipped.append(SkippedBox(i, tuple(float(v) for v in box), item.labels[i], problem))
    return kept, skipped


def _encode_masks(prediction: Prediction, image_size: tuple[int, int], threshold: float) -> tuple[list[dict], list[float]]:
    """Each box's mask as COCO compressed RLE and its score (mean probability over the mask),
    from the box's pixels only: the same RLE and score as pasting into the whole image
    (``paste_masks``), without an [H, W] map per box (19x faster on a 4000 x 3000 photo and 1 GB
    less peak memory: benchmarks/bench_paste.py)."""
    if threshold <= 0:
        raise ValueError(f"the mask threshold must be above 0 (pixels outside a box have probability 0), got {threshold}")
    masks_rle, scores = [], []
    for box_map, box in zip(prediction.mask_maps, prediction.boxes):
        region = paste_heatmap_region(torch.from_numpy(box_map[None]), torch.from_numpy(box), image_size)
        if region is None:  # no pixel centre in the box (threshold > 0: nothing outside it is set)
            masks_rle.append(rle_from_crop(MaskCrop(0, 0, np.zeros((0, 0), bool), tuple(image_size))))
            scores.append(0.0)
            continue
        probs, (x0, y0) = region[0][0].numpy(), region[1]
        mask = probs >= threshold
        masks_rle.append(rle_from_crop(MaskCrop(x0, y0, mask, tuple(image_size))))
        scores.append(float(probs[mask].mean()) if mask.any() else 0.0)
    return masks_rle, scores


def to_coco_results(results: list[ImageResult], category_ids: dict[str, int]) -> list[dict]:
    """COCO results format: one record per box (image_id, category_id, bbox [x, y, w, h],
    score, segmentation RLE, and keypoints as flat [x, y, score] * J when predicted for the box:
    boxes of categories the keypoint head does not answer, e.g. a motorcycle, have none)."""
    records = []
    for result in results:
        if result.error is not None:
            continue
        for i, (box, rle, score) in enumerate(zip(result.boxes, result.masks_rle, result.scores)):
            label = result.labels[i]
            if label not in category_ids:
                raise ValueError(f"label {label!r} of {result.image_path} has no category id; "
                                 f"known labels: {sorted(category_ids)}")
            x0, y0, x1, y1 = (float(v) for v in box)
            record = {"image_id": int(result.image_id), "category_id": int(category_ids[label]),
                      "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                      "score": round(score, 5), "segmentation": rle}
            if result.keypoints is not None and np.isfinite(result.keypoints[i]).all():  # NaN: not for this box
                record["keypoints"] = [round(float(v), 2) for v in result.keypoints[i].reshape(-1)]
            records.append(record)
    return records

