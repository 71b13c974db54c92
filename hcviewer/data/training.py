"""Training samples: one image with its training boxes and their box-aligned targets.

Images are decoded and scaled to the training size once and kept in memory (a few hundred
photos at 512 px are ~100 MB), so epochs after the first cost only augmentation and the network.
Augmentation uses ``torchvision.transforms.v2`` so the image, boxes, masks and keypoints move
together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from hcviewer.data.copy_paste import copy_paste
from hcviewer.data.records import AnnotatedDataset, ImageRecord, ObjectAnnotation
from hcviewer.data.targets import jitter_boxes, keypoint_targets, mask_targets, part_targets
from hcviewer.modeling.mirror import flip_permutation


# Training images are zoomed by a random factor in this range (both sides alike) around the
# training size. (Until session 10 the jitter set the *shorter* side to 0.75-1.25 x max_side, so
# a run at --image-size 448 trained on long sides of 448-840 px, 2.2x the pixels on average.)
SCALE_JITTER = (0.75, 1.25)


@dataclass
class TargetSpec:
    """What the network predicts; decides which targets are built and how."""

    output_size: int = 50
    keypoint_names: tuple[str, ...] = ()
    num_parts: int = 0
    class_names: tuple[str, ...] = ("object",)
    class_specific: bool = False
    figure_ground: bool = True
    keypoint_absent: bool = False  # train unplaced joints of labelled people as absent (data.targets)

    def trains_on(self, obj: ObjectAnnotation) -> bool:
        """Whether the object labels anything this network learns (mask, parts or a keypoint)."""
        return ((self.figure_ground and obj.mask is not None) or (self.num_parts > 0 and obj.parts is not None)
                or (bool(self.keypoint_names) and obj.keypoints is not None and bool((obj.keypoints[:, 2] > 0).any())))


@dataclass
class TrainingSample:
    """Targets are -1 where the box's object has no label for that task (partial labels: each box
    trains only the heads its object is annotated for)."""

    image: torch.Tensor  # [3, H, W] float in [0, 1] (normalised inside the model step)
    boxes: torch.Tensor  # [N, 4] xyxy in image pixels
    class_index: torch.Tensor  # [N]
    figure_ground: torch.Tensor  # [N, S, S] in [0, 1]; -1 for objects without a mask
    keypoints: torch.Tensor | None  # [N, J] cell index, -1 none
    parts: torch.Tensor | None  # [N, S, S] labels, -1 for objects without part labels


@dataclass
class PreparedImage:
    """One image at training scale. Masks and part maps are stored only for the objects that
    have them (``*_index`` maps an object to its row, -1 for none), so a photo of many
    objects without part labels costs no part maps."""

    rgb: np.ndarray  # [H, W, 3] at training scale
    boxes: np.ndarray  # [M, 4]
    masks: np.ndarray  # [K, H, W] uint8, K = objects with a mask
    mask_index: np.ndarray  # [M] int64: row of each object in ``masks``, or -1
    keypoints: np.ndarray  # [M, J, 3] (zeros when the object has none)
    parts: np.ndarray  # [L, H, W] uint8 part labels, L = objects with part labels
    part_index: np.ndarray  # [M] int64: row of each object in ``parts``, or -1
    categories: list[str]


class BoxTrainingDataset(torch.utils.data.Dataset):
    """Objects that label something the network learns become training boxes (crowd regions,
    objects under ``min_object_side`` and objects without any wanted label are skipped)."""

    def __init__(self, dataset: AnnotatedDataset, spec: TargetSpec, max_side: int = 512,
                 boxes_per_object: int = 2, min_iou: float = 0.7, augment: bool = True,
                 min_object_side: float = 8.0, seed: int = 0, copy_paste: float = 0.0) -> None:
        self.images = [im for im in dataset.images
                       if any(_usable(o, min_object_side, spec) for o in im.objects)]
        self.copy_paste = copy_paste  # probability that an (augmented) image gets another's objects pasted on
        # The images that have an object to paste: a mask or part labels the network trains on.
        self._paste_sources = [i for i, im in enumerate(self.images)
                               if any(_usable(o, min_object_side, spec) and _has_region(o, spec) for o in im.objects)]
        self.spec = spec
        self.max_side = max_side
        self.boxes_per_object = boxes_per_object
        self.min_iou = min_iou
        self.augment = augment
        self.min_object_side = min_object_side
        self.seed = seed
        self.epoch = 0
        self._cache: dict[int, PreparedImage] = {}
        self._flip = flip_permutation(spec.keypoint_names) if spec.keypoint_names else []
        self._colour_jitter = v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03)

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Makes augmentation a function of (seed, epoch, index): same seed, same run."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> TrainingSample:
        prepared = self._prepare(index)
        if self.augment and self.copy_paste > 0:
            prepared = self._paste_onto(index, prepared)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
        h, w = prepared.rgb.shape[:2]
        kp = prepared.keypoints
        # Only the label maps this image has travel through the transforms (v2 moves every
        # tensor of the dict together and passes the rest through).
        data = {"image": tv_tensors.Image(torch.from_numpy(prepared.rgb).permute(2, 0, 1)),
                "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(prepared.boxes), format="XYXY", canvas_size=(h, w)),
                "points": tv_tensors.KeyPoints(torch.from_numpy(kp[..., :2].reshape(-1, 2)), canvas_size=(h, w))}
        if len(prepared.masks):
            data["masks"] = tv_tensors.Mask(torch.from_numpy(prepared.masks))
        if len(prepared.parts):
            data["parts"] = tv_tensors.Mask(torch.from_numpy(prepared.parts))
        visibility = torch.from_numpy(kp[..., 2].copy())
        if self.augment:
            if torch.rand(1, generator=generator).item() < 0.5:
                data = {key: TF.horizontal_flip(value) for key, value in data.items()}
                if self._flip:
                    swapped = data["points"].reshape(kp.shape[0], -1, 2)[:, self._flip].reshape(-1, 2)
                    data["points"] = tv_tensors.wrap(swapped, like=data["points"])  # stay KeyPoints, so resizing moves them
                    visibility = visibility[:, self._flip]
            # v2 draws from torch's global generator; seed it from this sample's generator.
            with torch.random.fork_rng():
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
                data = self._colour_jitter(data)
            low, high = SCALE_JITTER
            factor = low + (high - low) * torch.rand(1, generator=generator).item()
            data = v2.Resize((max(1, round(h * factor)), max(1, round(w * factor))))(data)
        gt_boxes = torch.as_tensor(data["boxes"], dtype=torch.float32)
        if self.augment:
            train_boxes, owner = jitter_boxes(gt_boxes, self.boxes_per_object, self.min_iou, generator)
        else:
            train_boxes, owner = gt_boxes, torch.arange(len(gt_boxes))
        size = self.spec.output_size
        keypoints = None
        if self.spec.keypoint_names:
            kp_xyv = torch.cat([torch.as_tensor(data["points"]).reshape(kp.shape[0], -1, 2), visibility[..., None]], -1)
            keypoints = keypoint_targets(kp_xyv, train_boxes, owner, size, self.spec.keypoint_absent)
        class_index = torch.tensor([self._class_of(prepared.categories[i]) for i in owner.tolist()], dtype=torch.long)
        mask_rows = torch.from_numpy(prepared.mask_index)[owner]
        part_rows = torch.from_numpy(prepared.part_index)[owner]
        return TrainingSample(
            image=torch.as_tensor(data["image"]).float().div(255),
            boxes=train_boxes,
            class_index=class_index,
            figure_ground=labelled_targets(mask_targets, data.get("masks"), train_boxes, mask_rows, size, torch.float32),
            keypoints=keypoints,
            parts=labelled_targets(part_targets, data.get("parts"), train_boxes, part_rows, size, torch.long)
            if self.spec.num_parts else None,
        )

    def _paste_onto(self, index: int, prepared: PreparedImage) -> PreparedImage:
        """With probability ``copy_paste``, another training image's objects pasted on. Its own
        generator (of seed, epoch and index) leaves every other draw of the sample as it was."""
        rng = np.random.default_rng([self.seed % 2**32, self.epoch, index])
        sources = [i for i in self._paste_sources if i != index]
        if rng.random() >= self.copy_paste or not sources:
            return prepared
        source = self._prepare(sources[int(rng.integers(len(sources)))])
        return copy_paste(prepared, source, rng, self._flip, min_object_side=self.min_object_side)

    def _class_of(self, category: str) -> int:
        if not self.spec.class_specific:
            return 0
        return self.spec.class_names.index(category)

    def _prepare(self, index: int) -> PreparedImage:
        if index not in self._cache:
            self._cache[index] = prepare_image(self.images[index], self.max_side, self.min_object_side, self.spec)
        return self._cache[index]


def _usable(obj: ObjectAnnotation, min_side: float, spec: TargetSpec) -> bool:
    w, h = obj.box[2] - obj.box[0], obj.box[3] - obj.box[1]
    return not obj.iscrowd and min(w, h) >= min_side and spec.trains_on(obj)


def _has_region(obj: ObjectAnnotation, spec: TargetSpec) -> bool:
    return (spec.figure_ground and obj.mask is not None) or (spec.num_parts > 0 and obj.parts is not None)


def prepare_image(record: ImageRecord, max_side: int, min_object_side: float, spec: TargetSpec) -> PreparedImage:
    """Decode an image and its usable objects at training scale (long side <= ``max_side``)."""
    rgb = record.load_rgb()
    scale = min(1.0, max_side / max(rgb.shape[:2]))
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    objects = [o for o in record.objects if _usable(o, min_object_side, spec)]
    num_keypoints = len(spec.keypoint_names)
    masks, parts, keypoints = [], [], []
    mask_index = np.full(len(objects), -1, np.int64)
    part_index = np.full(len(objects), -1, np.int64)
    for i, obj in enumerate(objects):
        if spec.figure_ground and obj.mask is not None:
            full = obj.mask.decode(record.height, record.width).astype(np.uint8)
            mask_index[i] = len(masks)
            masks.append(cv2.resize(full, size, interpolation=cv2.INTER_LINEAR) if scale < 1 else full)
        if spec.num_parts and obj.parts is not None:
            labels = obj.parts.decode(record.height, record.width).astype(np.uint8)
            part_index[i] = len(parts)
            parts.append(cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST) if scale < 1 else labels)
        kp = np.zeros((num_keypoints, 3), np.float32)
        if obj.keypoints is not None and num_keypoints:
            kp = obj.keypoints.astype(np.float32).copy()
            kp[:, :2] *= scale  # continuous coordinates, as keypoint_targets reads them
        keypoints.append(kp)
    height, width = small.shape[:2]
    boxes = np.stack([o.box for o in objects]).astype(np.float32) * scale
    return PreparedImage(small, boxes, _stack(masks, height, width), mask_index,
                     np.stack(keypoints).reshape(len(objects), num_keypoints, 3),
                     _stack(parts, height, width), part_index, [o.category for o in objects])


def _stack(maps: list[np.ndarray], height: int, width: int) -> np.ndarray:
    return np.stack(maps) if maps else np.zeros((0, height, width), np.uint8)


def labelled_targets(make: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor],
                     maps: torch.Tensor | None, boxes: torch.Tensor, rows: torch.Tensor, size: int,
                     dtype: torch.dtype) -> torch.Tensor:
    """Box targets [N, S, S] from ``make(maps, boxes, rows, size)`` for the boxes whose object has
    a label map (``rows`` [N] >= 0: its row in ``maps`` [K, H, W]); -1 for the others."""
    out = torch.full((len(boxes), size, size), -1, dtype=dtype)
    labelled = rows >= 0
    if maps is not None and labelled.any():
        out[labelled] = make(torch.as_tensor(maps), boxes[labelled], rows[labelled], size).to(dtype)
    return out
