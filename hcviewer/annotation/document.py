"""The project document (Qt-free): images, their boxes, model results and accepted masks.

Views subscribe with ``add_listener`` and change the document only through its commands. Every
edit is one entry on ONE undo/redo stack (``hcviewer.annotation.history``). Boxes are immutable
records; an edit replaces an image's tuple of boxes, and the undo entry keeps the tuples before
and after. The project's file, its autosave and crash recovery are ``project.file``
(``hcviewer.annotation.project_file``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from hcviewer.annotation.annotation_file import (
    Annotation, SavedImage, SavedObject, SavedResult, decode_mask, encode_mask, object_numbers,
)
from hcviewer.annotation.boxfiles import BoxFileError, LoadedBox, read_boxes
from hcviewer.annotation.head_scope import HeadScope
from hcviewer.annotation.history import Edit, History
from hcviewer.annotation.mask_crops import MaskCrop, crop_from_rle, crop_from_segmentation
from hcviewer.annotation.project_file import ProjectFile
from hcviewer.annotation.wording import plural
from hcviewer.boxes import box_problem


@dataclass(frozen=True, eq=False)
class ModelResult:
    """A model's answer for one box: a box map (interactive) or a full-image mask (batch)."""

    figure_ground: np.ndarray | None = None  # [S, S] foreground probability over the box
    mask_rle: dict | None = None  # full-image mask from "segment all images"
    keypoints: np.ndarray | None = None  # [J, 3] (x, y, score) image px
    score: float | None = None
    view: Any = None  # what the window drew for it (opaque here): redo can draw it again


class GroundTruth:
    """A box file's mask for a box; decoded, as a crop of its bounding box (a 12000 x 9000
    photo's full masks took seconds), once the image size is known. Shared (not copied) by
    every version of the box, so undo never loses the decoded mask."""

    def __init__(self, segmentation: Any) -> None:
        self.segmentation = segmentation
        self._size: tuple[int, int] | None = None
        self._crop: MaskCrop | None = None

    def decode(self, size: tuple[int, int]) -> None:
        """The image's size is known: the mask is decoded when first needed (``crop``)."""
        if self._size != tuple(size):
            self._size, self._crop = tuple(size), None

    def prepare(self, size: tuple[int, int]) -> None:
        """``decode`` and decode the mask now: the image loader's thread does this before the image
        is shown, so that drawing or comparing a large photo's ground truth costs the GUI nothing."""
        self.decode(size)
        self._decoded()

    def forget(self) -> None:
        """Drop the decoded mask (another image is shown)."""
        self._size, self._crop = None, None

    @property
    def crop(self) -> MaskCrop | None:
        """The mask as its bounding-box crop; None before ``decode`` or when the segmentation
        does not fit the image."""
        return self._decoded()

    def _decoded(self) -> MaskCrop | None:
        size = self._size
        if self._crop is None and size is not None:
            try:
                self._crop = crop_from_segmentation(self.segmentation, *size)
            except ValueError:
                self._size = None  # a segmentation that does not fit this image: shown as none
        return self._crop

    @property
    def mask(self) -> np.ndarray | None:
        """bool [H, W] over the whole image (for files and tests; drawing uses ``crop``)."""
        return None if self.crop is None else self.crop.full()


@dataclass(frozen=True, eq=False)  # compared by identity: an edit makes new Box objects
class Box:
    id: int
    xyxy: np.ndarray  # [4] float64 x0, y0, x1, y1 image px
    label: str
    score: float | None = None  # detector score; None for ground truth and hand-drawn boxes
    mask_rle: dict | None = None  # the accepted mask (part of the annotation)
    keypoints: np.ndarray | None = None  # accepted keypoints [J, 3]
    rejected: bool = False
    result: ModelResult | None = None
    gt: GroundTruth | None = None

    @property
    def mask(self) -> np.ndarray | None:
        """The accepted mask, bool [H, W], read-only (copy to edit)."""
        return None if self.mask_rle is None else decode_mask(self.mask_rle)

    @property
    def mask_crop(self) -> MaskCrop | None:
        """The accepted mask as its bounding-box crop (cached, read-only): what the window draws and edits."""
        return None if self.mask_rle is None else crop_from_rle(self.mask_rle)

    @property
    def gt_mask(self) -> np.ndarray | None:
        return None if self.gt is None else self.gt.mask

    @property
    def gt_crop(self) -> MaskCrop | None:
        return None if self.gt is None else self.gt.crop

    @property
    def accepted(self) -> bool:
        return self.mask_rle is not None


@dataclass
class ImageDocument:
    path: Path
    boxes: tuple[Box, ...] = ()
    size: tuple[int, int] | None = None  # (height, width) once read
    error: str | None = None
    image_id: int | str | None = None  # the id its box file or annotation gave it (kept on save)

    @property
    def status(self) -> str:
        """For the file list: 'error: …', 'done: …', 'segmented …', 'N boxes' or ''."""
        if self.error:
            return f"error: {self.error}"
        n = len(self.boxes)
        accepted = sum(b.accepted for b in self.boxes)
        decided = accepted + sum(b.rejected and not b.accepted for b in self.boxes)
        segmented = sum(b.result is not None or b.accepted for b in self.boxes)
        if n and decided == n:
            return f"done: {accepted} accepted"
        unsegmentable = len(self.unsegmentable())
        problems = f", {unsegmentable} cannot be segmented" if unsegmentable else ""
        if segmented:
            return f"segmented {segmented}/{n}" + (f", {accepted} accepted" if accepted else "") + problems
        return (plural(n, "box") + problems) if n else ""

    def unsegmentable(self) -> list[tuple[Box, str]]:
        """The boxes that cannot be segmented in this image (entirely outside it…), with why;
        known once the image's size is."""
        if self.size is None:
            return []
        problems = ((box, box_problem(box.xyxy, self.size)) for box in self.boxes)
        return [(box, problem) for box, problem in problems if problem is not None]

    def box(self, box_id: int) -> Box:
        for box in self.boxes:
            if box.id == box_id:
                return box
        raise KeyError(f"box {box_id} is not in {self.path.name}")


@dataclass


@dataclass(frozen=True)
class Change:
    """What listeners are told: which images changed (None: the whole project), and whether it
    changes the annotation (boxes read from a file and model results alone do not)."""

    kind: str  # "edit", "undo", "redo", "images", "reset", "status"
    indices: tuple[int, ...] | None = None
    annotates: bool = False


class Project:
    """The images and their boxes, changed through the commands below, each an undoable edit
    that listeners hear about; ``file`` is where it is saved and autosaved."""

    def __init__(self, recovery_dir: str | os.PathLike | None = None) -> None:
        self.images: list[ImageDocument] = []
        self.category_ids: dict[str, int] = {}  # label -> COCO id (from box files, kept on save)
        self.keypoint_names: tuple[str, ...] = ()  # set by the window from the checkpoint
        self.skeleton: tuple[tuple[int, int], ...] = ()
        self.heads = HeadScope()  # set by the window from the checkpoint: whom keypoints are saved for
        self.history = History()
        self._listeners: list[Callable[[Change], None]] = []
        self._next_id = 1
        self._loaded_index: int | None = None
        self._batch_boxes: dict[int, list[tuple[int, np.ndarray]]] = {}  # image -> (box id, box) sent
        self.file = ProjectFile(self, recovery_dir)  # listens first: it knows of an edit before the views

    # ------------------------------------------------------------------------------ listeners
    def add_listener(self, callback: Callable[[Change], None]) -> None:
        self._listeners.append(callback)

    def _notify(self, change: Change) -> None:
        for callback in list(self._listeners):
            callback(change)

    # ------------------------------------------------------------------------------ images
    def add_images(self, paths: Iterable[str | os.PathLike]) -> int:
        """Append images (nothing is read now); returns the index of the first one added."""
        first = len(self.images)
        self.images += [ImageDocument(Path(p)) for p in paths]
        self._notify(Change("images"))
        return first

    def image_loaded(self, index: int, size: tuple[int, int]) -> None:
        """The window has read image ``index``: decode its ground-truth masks (and drop the
        previous image's, so thousands of images never hold thousands of masks)."""
        previous = self._loaded_index
        if previous is not None and previous != index and previous < len(self.images):
            for box in self.images[previous].boxes:
                if box.gt is not None:
                    box.gt.forget()
        document = self.images[index]
        document.size = (int(size[0]), int(size[1]))
        document.error = None
        self._loaded_index = index
        for box in document.boxes:
            if box.gt is not None:
                box.gt.decode(document.size)

    def image_failed(self, index: int, message: str) -> None:
        self.images[index].error = message
        self._notify(Change("status", (index,)))

    # ------------------------------------------------------------------------------ box files
    def load_boxes(self, path: str | os.PathLike) -> int:
        """Add a box file's boxes to the open images (matched by file name; boxes already there
        are not added twice). With no images open, the images the file names are opened from
        its folder. Returns the number of boxes added; BoxFileError when none match."""
        box_file = read_boxes(path)
        if not self.images:
            folder = Path(box_file.path).parent if not Path(box_file.path).is_dir() else Path(box_file.path)
            self.add_images(p for p in (folder / name for name in box_file.image_names()) if p.is_file())
        for name, cid in box_file.category_ids.items():
            self.category_ids.setdefault(name, cid)
        changes, matched = {}, False
        for index, document in enumerate(self.images):
            boxes = box_file.boxes_for(document.path)
            matched = matched or bool(boxes)
            if document.image_id is None:
                document.image_id = box_file.image_id_for(document.path)
            present = {_box_key(b.label, b.xyxy) for b in document.boxes}
            new = [b for b in boxes if _box_key(b.label, b.xyxy) not in present]
            if new:
                size = document.size if index == self._loaded_index else None  # decoded when shown
                changes[index] = document.boxes + tuple(_box_from_file(b, self._new_id(), size) for b in new)
        if not matched and len(box_file):
            names = ", ".join(box_file.image_names()[:3]) or "image ids"
            raise BoxFileError(f"{box_file.path}: none of the boxes in it ({plural(len(box_file), 'box')}) belongs to the open images "
                               f"(it names {names}…); open the images it describes, or their folder")
        added = sum(len(boxes) - len(self.images[i].boxes) for i, boxes in changes.items())
        self._edit(f"load boxes from {Path(path).name}", changes, annotates=False)
        return added

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    # ------------------------------------------------------------------------------ box edits
    def add_box(self, index: int, xyxy: np.ndarray, label: str) -> int:
        box = Box(self._new_id(), np.asarray(xyxy, np.float64).copy(), label)
        self._edit("add box", {index: self.images[index].boxes + (box,)})
        return box.id

    def delete_box(self, index: int, box_id: int) -> None:
        self._edit("delete box", {index: tuple(b for b in self.images[index].boxes if b.id != box_id)})

    def move_box(self, index: int, box_id: int, xyxy: np.ndarray) -> None:
        """Move or resize a box; its model result is stale and dropped (an accepted mask stays)."""
        self._replace(index, box_id, "move box", xyxy=np.asarray(xyxy, np.float64).copy(), result=None)

    def set_label(self, index: int, box_id: int, label: str) -> None:
        self._replace(index, box_id, "set class", label=label)

    def set_result(self, index: int, box_id: int, figure_ground: np.ndarray | None,
                   keypoints: np.ndarray | None = None, view: Any = None) -> None:
        """Record the model's result for a box (see ``set_results``)."""
        self.set_results(index, {box_id: ModelResult(figure_ground=figure_ground, keypoints=keypoints, view=view)})

    def set_results(self, index: int, results: dict[int, ModelResult]) -> None:
        """Record the model's results for boxes of one image, with one notification. Boxes
        getting their first result make one undoable edit; boxes segmented again (the model is
        deterministic) are only refreshed."""
        boxes, first = self.images[index].boxes, 0
        for box_id, result in results.items():
            box = self.images[index].box(box_id)
            first += box.result is None
            boxes = _swap(boxes, replace(box, result=result))
        if first:
            self._edit("segment box" if len(results) == 1 else f"segment {len(results)} boxes", {index: boxes},
                       annotates=False, clears_redo=False)
        elif results:
            self._set_boxes(index, boxes)
            self._notify(Change("edit", (index,)))

    def accept(self, index: int, box_id: int, mask: np.ndarray) -> None:
        """Make the model's ``mask`` (bool [H, W]) the box's annotation, with its keypoints."""
        box = self.images[index].box(box_id)
        keypoints = box.keypoints if box.result is None or box.result.keypoints is None else box.result.keypoints
        self._replace(index, box_id, "accept", mask_rle=encode_mask(mask), keypoints=keypoints, rejected=False)

    def paint(self, index: int, box_id: int, mask: np.ndarray, erased: bool = False, name: str | None = None) -> None:
        """Make the edited ``mask`` (bool [H, W]: brush strokes, a click correction, or the polygon edit
        ``name`` names) the box's annotation; a box painted before it was accepted takes its result's keypoints."""
        box = self.images[index].box(box_id)
        keypoints = box.keypoints
        if not box.accepted and box.result is not None and box.result.keypoints is not None:
            keypoints = box.result.keypoints
        self._replace(index, box_id, name or ("erase from mask" if erased else "paint mask"),
                      mask_rle=encode_mask(mask), keypoints=keypoints, rejected=False)

    def accept_many(self, index: int, masks: dict[int, np.ndarray]) -> None:
        """Accept several boxes' masks as one edit."""
        boxes = self.images[index].boxes
        for box_id, mask in masks.items():
            box = self.images[index].box(box_id)
            keypoints = box.result.keypoints if box.result is not None else box.keypoints
            boxes = _swap(boxes, replace(box, mask_rle=encode_mask(mask), keypoints=keypoints, rejected=False))
        if masks:
            self._edit(f"accept {plural(len(masks), 'mask')}", {index: boxes})

    def accept_all_results(self, mask_of: Callable[[int, Box], np.ndarray | None]) -> int:
        """Accept every result not yet accepted or rejected, in every image, as ONE edit;
        ``mask_of(index, box)`` gives a box's result as a bool [H, W] mask (None: skip it).
        Returns how many were accepted."""
        changes, count = {}, 0
        for index, document in enumerate(self.images):
            boxes = document.boxes
            for box in document.boxes:
                mask = None if box.result is None or box.accepted or box.rejected else mask_of(index, box)
                if mask is not None:
                    keypoints = box.keypoints if box.result.keypoints is None else box.result.keypoints
                    boxes = _swap(boxes, replace(box, mask_rle=encode_mask(mask), keypoints=keypoints))
                    count += 1
            if boxes is not document.boxes:
                changes[index] = boxes
        if changes:
            self._edit(f"accept {plural(count, 'mask')} in {plural(len(changes), 'image')}", changes)
        return count

    def reject(self, index: int, box_id: int) -> None:
        """Discard the box's result and accepted mask; the box stays, marked rejected."""
        self._replace(index, box_id, "reject", mask_rle=None, keypoints=None, result=None, rejected=True)

    def _replace(self, index: int, box_id: int, name: str, **changes: Any) -> None:
        box = self.images[index].box(box_id)
        if all(_same(getattr(box, key), value) for key, value in changes.items()):
            return  # nothing would change: not an edit
        self._edit(name, {index: _swap(self.images[index].boxes, replace(box, **changes))})

    # ------------------------------------------------------------------------------ batch
    def batch_items(self, min_score: float = 0.0) -> list:
        """``BatchItem``s for every image with boxes that are neither accepted nor rejected
        (detections under ``min_score`` are left out, as they are hidden)."""
        from hcviewer.annotation.batch import BatchItem  # imports torch: only when a batch is run

        items = []
        self._batch_boxes.clear()
        for index, document in enumerate(self.images):
            boxes = [b for b in document.boxes if not (b.accepted or b.rejected) and (b.score is None or b.score >= min_score)]
            if boxes and not document.error:
                items.append(BatchItem(document.path, np.array([b.xyxy for b in boxes]), [b.label for b in boxes],
                                       image_id=index))
                self._batch_boxes[index] = [(b.id, b.xyxy) for b in boxes]
        return items

    def apply_batch_results(self, results: list) -> int:
        """Store ``predict_images`` results (one undoable edit); returns the images segmented.
        Boxes moved or deleted since the batch started keep what they have."""
        changes, errors = {}, []
        for result in results:
            index = int(result.image_id)
            if result.error is not None:
                self.images[index].error = result.error
                errors.append(index)
                continue
            boxes = self.images[index].boxes
            if self.images[index].size is None and result.image_size is not None:
                self.images[index].size = tuple(result.image_size)  # the status counts boxes outside it
            sent = self._batch_boxes.get(index, [])
            indices = range(len(result.masks_rle)) if result.box_indices is None else result.box_indices
            for i, (sent_index, rle, score) in enumerate(zip(indices, result.masks_rle, result.scores)):
                box_id, xyxy = sent[sent_index]  # boxes that could not be segmented were left out
                box = next((b for b in boxes if b.id == box_id), None)
                if box is not None and np.allclose(box.xyxy, xyxy):
                    keypoints = None if result.keypoints is None else np.asarray(result.keypoints[i])
                    box_map = None if result.figure_ground is None else result.figure_ground[i]
                    boxes = _swap(boxes, replace(box, result=ModelResult(box_map, rle, keypoints, score)))
            changes[index] = boxes
        self._batch_boxes.clear()
        self._edit(f"segment {plural(len(changes), 'image')}", changes, annotates=False, clears_redo=False)
        if errors:
            self._notify(Change("status", tuple(errors)))
        return len(changes)

    # ------------------------------------------------------------------------------ undo
    def _edit(self, name: str, changes: dict[int, tuple[Box, ...]], annotates: bool = True,
              clears_redo: bool = True) -> None:
        """Apply ``changes`` as one undoable step (``History.push`` says when redo steps stay)."""
        changes = {i: boxes for i, boxes in changes.items() if boxes != self.images[i].boxes}
        if not changes:
            return
        edit = Edit(name, {i: self.images[i].boxes for i in changes}, changes, annotates)
        self.history.push(edit, clears_redo)
        self._apply(edit.after, "edit", annotates)

    def _apply(self, boxes_by_index: dict[int, tuple[Box, ...]], kind: str, annotates: bool) -> None:
        for index, boxes in boxes_by_index.items():
            self._set_boxes(index, boxes)
        self._notify(Change(kind, tuple(boxes_by_index), annotates))

    def _set_boxes(self, index: int, boxes: tuple[Box, ...]) -> None:
        document = self.images[index]
        document.boxes = boxes
        if document.size is not None and index == self._loaded_index:
            for box in boxes:
                if box.gt is not None:
                    box.gt.decode(document.size)

    def undo(self) -> None:
        edit = self.history.undo()
        if edit is not None:
            self._apply(edit.before, "undo", edit.annotates)

    def redo(self) -> None:
        edit = self.history.redo()
        if edit is not None:
            self._apply(edit.after, "redo", edit.annotates)

    # ------------------------------------------------------------------------------ files
    def to_annotation(self, extra: dict | None = None) -> Annotation:
        """What a save writes: every image with its boxes (results too, while not accepted)."""
        images = [SavedImage(d.path, d.size, [_saved(b) for b in d.boxes], d.image_id) for d in self.images]
        return Annotation(images, dict(self.category_ids), self.keypoint_names, self.skeleton, extra or {},
                          self.heads)

    def reset(self, annotation: Annotation) -> None:
        """An opened (or recovered) annotation replaces the project: its images, accepted masks
        and pending boxes; nothing to undo."""
        numbers = object_numbers(annotation.images)  # a box keeps the number it was saved with
        self.images = [ImageDocument(Path(image.path), size=image.size, image_id=image.image_id,
                                     boxes=tuple(_box_from_saved(o, n) for o, n in zip(image.objects, ns)))
                       for image, ns in zip(annotation.images, numbers)]
        self._next_id = max((n for ns in numbers for n in ns), default=0) + 1
        self.category_ids = dict(annotation.category_ids)
        self.keypoint_names = self.keypoint_names or annotation.keypoint_names
        self.skeleton = self.skeleton or annotation.skeleton
        self.history.clear()
        self._loaded_index = None
        self._notify(Change("reset"))


def _swap(boxes: tuple[Box, ...], new: Box) -> tuple[Box, ...]:
    return tuple(new if b.id == new.id else b for b in boxes)


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, np.ndarray) or isinstance(new, np.ndarray):
        return old is not None and new is not None and np.array_equal(old, new)
    return old is new or old == new


def _box_key(label: str, xyxy) -> tuple:
    """Boxes with the same label and corners (to 1/1000 pixel) are one box: reloading a box file
    adds nothing twice. A set of keys makes that check linear in the number of boxes."""
    return (label, *(round(float(v), 3) for v in xyxy))


def _saved(box: Box) -> SavedObject:
    """What is saved of a box: its result too while it is not accepted (the work is not lost)."""
    result = box.result if box.result is not None and not box.accepted else None
    saved_result = None if result is None else SavedResult(result.figure_ground, result.mask_rle,
                                                           result.keypoints, result.score)
    return SavedObject(tuple(float(v) for v in box.xyxy), box.label, box.score, box.mask_rle, box.keypoints,
                       box.rejected, None if box.gt is None else box.gt.segmentation, saved_result, box.id)


def _box_from_file(loaded: LoadedBox, box_id: int, size: tuple[int, int] | None) -> Box:
    """A box file's box; its ground truth is decoded when its image's ``size`` is known."""
    gt = GroundTruth(loaded.segmentation) if loaded.segmentation is not None else None
    if gt is not None and size is not None:
        gt.decode(size)
    return Box(box_id, np.array(loaded.xyxy, np.float64), loaded.label, loaded.score, gt=gt)


def _box_from_saved(obj: SavedObject, box_id: int) -> Box:
    """A saved box (of an opened or recovered annotation) with its result and ground truth."""
    result = None if obj.result is None else ModelResult(
        obj.result.figure_ground, obj.result.mask_rle, obj.result.keypoints, obj.result.score)
    return Box(box_id, np.array(obj.xyxy, np.float64), obj.label, obj.score, obj.mask_rle,
               obj.keypoints, obj.rejected, result, None if obj.gt is None else GroundTruth(obj.gt))
