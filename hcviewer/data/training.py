"""Training samples: one image with its training boxes and their box-aligned targets.

Images are decoded and scaled to the training size once and kept in memory (a few hundred
photos at 512 px are ~100 MB), so epochs after the first cost only augmentation and the network.
Augmentation uses ``torchvision.transforms.v2`` so the image, boxes, masks and keypoints move
together.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from hcviewer.data.records import AnnotatedDataset, ImageRecord
from hcviewer.data.targets import flip_permutation, jitter_boxes, keypoint_targets, mask_targets, part_targets


@dataclass
class TargetSpec:
    """What the network predicts; decides which targets are built and how."""

    output_size: int = 50
    keypoint_names: tuple[str, ...] = ()
    num_parts: int = 0
    class_names: tuple[str, ...] = ("object",)
    class_specific: bool = False


@dataclass
class TrainingSample:
    image: torch.Tensor  # [3, H, W] float in [0, 1] (normalised inside the model step)
    boxes: torch.Tensor  # [N, 4] xyxy in image pixels
    class_index: torch.Tensor  # [N]
    figure_ground: torch.Tensor  # [N, S, S] in [0, 1]
    keypoints: torch.Tensor | None  # [N, J] cell index, -1 none
    parts: torch.Tensor | None  # [N, S, S] labels, -1 none


@dataclass
class _Prepared:
    rgb: np.ndarray  # [H, W, 3] at training scale
    boxes: np.ndarray  # [M, 4]
    masks: np.ndarray  # [M, H, W] uint8
    keypoints: np.ndarray  # [M, J, 3] (zeros when the object has none)
    parts: np.ndarray  # [M, H, W] int16, -1 when the object has no part labels
    categories: list[str]


class BoxTrainingDataset(torch.utils.data.Dataset):
    """Objects with a mask become training boxes (crowd regions and mask-less objects are skipped)."""

    def __init__(self, dataset: AnnotatedDataset, spec: TargetSpec, max_side: int = 512,
                 boxes_per_object: int = 2, min_iou: float = 0.7, augment: bool = True,
                 min_object_side: float = 8.0, seed: int = 0) -> None:
        self.images = [im for im in dataset.images
                       if any(_usable(o, min_object_side) for o in im.objects)]
        self.spec = spec
        self.max_side = max_side
        self.boxes_per_object = boxes_per_object
        self.min_iou = min_iou
        self.augment = augment
        self.min_object_side = min_object_side
        self.seed = seed
        self.epoch = 0
        self._cache: dict[int, _Prepared] = {}
        self._flip = flip_permutation(spec.keypoint_names) if spec.keypoint_names else []
        self._jitter = v2.Compose([
            v2.RandomResize(int(max_side * 0.75), int(max_side * 1.25) + 1),  # scale jitter (shorter side)
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
        ]) if augment else None

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Makes augmentation a function of (seed, epoch, index): same seed, same run."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> TrainingSample:
        prepared = self._prepare(index)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
        image = tv_tensors.Image(torch.from_numpy(prepared.rgb).permute(2, 0, 1))
        h, w = prepared.rgb.shape[:2]
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(prepared.boxes), format="XYXY", canvas_size=(h, w))
        masks = tv_tensors.Mask(torch.from_numpy(prepared.masks))
        parts = tv_tensors.Mask(torch.from_numpy(prepared.parts))
        kp = prepared.keypoints
        points = tv_tensors.KeyPoints(torch.from_numpy(kp[..., :2].reshape(-1, 2)), canvas_size=(h, w))
        visibility = torch.from_numpy(kp[..., 2].copy())
        if self.augment:
            if torch.rand(1, generator=generator).item() < 0.5:
                image, boxes, masks, parts, points = (TF.horizontal_flip(t) for t in (image, boxes, masks, parts, points))
                if self._flip:
                    swapped = points.reshape(kp.shape[0], -1, 2)[:, self._flip].reshape(-1, 2)
                    points = tv_tensors.wrap(swapped, like=points)  # stay KeyPoints, so resizing moves them
                    visibility = visibility[:, self._flip]
            # v2 draws from torch's global generator; seed it from this sample's generator.
            with torch.random.fork_rng():
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
                image, boxes, masks, parts, points = self._jitter(image, boxes, masks, parts, points)
        gt_boxes = torch.as_tensor(boxes, dtype=torch.float32)
        if self.augment:
            train_boxes, owner = jitter_boxes(gt_boxes, self.boxes_per_object, self.min_iou, generator)
        else:
            train_boxes, owner = gt_boxes, torch.arange(len(gt_boxes))
        size = self.spec.output_size
        keypoints = None
        if self.spec.keypoint_names:
            kp_xyv = torch.cat([torch.as_tensor(points).reshape(kp.shape[0], -1, 2), visibility[..., None]], -1)
            keypoints = keypoint_targets(kp_xyv, train_boxes, owner, size)
        class_index = torch.tensor([self._class_of(prepared.categories[i]) for i in owner.tolist()], dtype=torch.long)
        return TrainingSample(
            image=torch.as_tensor(image).float().div(255),
            boxes=train_boxes,
            class_index=class_index,
            figure_ground=mask_targets(torch.as_tensor(masks), train_boxes, owner, size),
            keypoints=keypoints,
            parts=part_targets(torch.as_tensor(parts), train_boxes, owner, size) if self.spec.num_parts else None,
        )

    def _class_of(self, category: str) -> int:
        if not self.spec.class_specific:
            return 0
        return self.spec.class_names.index(category)

    def _prepare(self, index: int) -> _Prepared:
        if index not in self._cache:
            self._cache[index] = prepare_image(self.images[index], self.max_side, self.min_object_side,
                                               len(self.spec.keypoint_names))
        return self._cache[index]


def _usable(obj, min_side: float) -> bool:
    w, h = obj.box[2] - obj.box[0], obj.box[3] - obj.box[1]
    return obj.mask is not None and not obj.iscrowd and min(w, h) >= min_side


def prepare_image(record: ImageRecord, max_side: int, min_object_side: float, num_keypoints: int) -> _Prepared:
    """Decode an image and its usable objects at training scale (long side <= ``max_side``)."""
    rgb = record.load_rgb()
    scale = min(1.0, max_side / max(rgb.shape[:2]))
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    objects = [o for o in record.objects if _usable(o, min_object_side)]
    masks, parts, keypoints = [], [], []
    for obj in objects:
        full = obj.mask.decode(record.height, record.width).astype(np.uint8)
        masks.append(cv2.resize(full, size, interpolation=cv2.INTER_LINEAR) if scale < 1 else full)
        if obj.parts is not None:
            labels = obj.parts.decode(record.height, record.width).astype(np.int16)
            parts.append(cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST) if scale < 1 else labels)
        else:
            parts.append(np.full(small.shape[:2], -1, np.int16))
        kp = np.zeros((num_keypoints, 3), np.float32)
        if obj.keypoints is not None and num_keypoints:
            kp = obj.keypoints.astype(np.float32).copy()
            kp[:, :2] *= scale  # continuous coordinates, as keypoint_targets reads them
        keypoints.append(kp)
    boxes = np.stack([o.box for o in objects]).astype(np.float32) * scale
    return _Prepared(small, boxes, np.stack(masks), np.stack(keypoints).reshape(len(objects), num_keypoints, 3),
                     np.stack(parts), [o.category for o in objects])

