"""The in-memory form every reader produces: images with their annotated objects.

Masks are kept in their file form (COCO polygons / RLE, a PNG and the value of the object in
it, or an in-memory array for synthetic scenes) and decoded only when a training sample needs
them, so a data set of large photos costs little memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from hcviewer.cocomask import decode_segmentation
from hcviewer.data.errors import DataError
from hcviewer.data.images import read_label_png, read_rgb


class MaskSource(Protocol):
    def decode(self, height: int, width: int) -> np.ndarray:
        """The full-image mask [H, W]: bool for an object mask, uint8 labels for part maps."""


@dataclass(frozen=True)
class CocoSegmentation:
    """A COCO ``segmentation`` field: polygon list, compressed or uncompressed RLE. ``where``
    names its file and annotation in errors."""

    segmentation: object
    where: str = "a COCO annotation"

    def decode(self, height: int, width: int) -> np.ndarray:
        try:
            return decode_segmentation(self.segmentation, height, width)
        except ValueError as exc:
            raise DataError(f"{self.where}: {exc}; fix or remove the annotation") from None


@dataclass(frozen=True)
class PngMask:
    """Pixels of a PNG equal to ``value`` (VOC SegmentationObject), or non-zero when None."""

    path: Path
    value: int | None = None

    def decode(self, height: int, width: int) -> np.ndarray:
        labels = read_label_png(self.path)
        if labels.shape != (height, width):
            raise DataError(f"{self.path}: mask is {labels.shape[1]}x{labels.shape[0]} but its image is "
                            f"{width}x{height}; masks must match their image's size")
        return labels > 0 if self.value is None else labels == self.value


@dataclass(frozen=True)
class ArrayMask:
    """An in-memory full-image mask or label map (synthetic scenes)."""

    array: np.ndarray

    def decode(self, height: int, width: int) -> np.ndarray:
        if self.array.shape != (height, width):
            raise DataError(f"in-memory mask is {self.array.shape}, expected {(height, width)}")
        return self.array


@dataclass
class ObjectAnnotation:
    box: np.ndarray  # [4] float32 x0, y0, x1, y1 in image pixels
    category: str
    mask: MaskSource | None = None
    parts: MaskSource | None = None  # uint8 labels: 0 background, i = part_names[i - 1]
    keypoints: np.ndarray | None = None  # [J, 3] x, y, v (COCO visibility: 0 none, 1 hidden, 2 seen;
    # -1 a joint its data set never labels)
    iscrowd: bool = False
    annotation_id: int | None = None


@dataclass
class ImageRecord:
    image_id: int | str
    width: int
    height: int
    path: Path | None = None
    pixels: np.ndarray | None = None  # in-memory RGB (synthetic scenes); else read from path
    objects: list[ObjectAnnotation] = field(default_factory=list)

    def load_rgb(self) -> np.ndarray:
        """[H, W, 3] uint8 RGB."""
        if self.pixels is not None:
            return self.pixels
        rgb = read_rgb(self.path)
        if rgb.shape[:2] != (self.height, self.width):
            raise DataError(f"{self.path}: image is {rgb.shape[1]}x{rgb.shape[0]} but the annotation says "
                            f"{self.width}x{self.height}; fix the annotation's width/height")
        return rgb


@dataclass
class AnnotatedDataset:
    """What a reader returns; several may be mixed for training (``concatenate``)."""

    name: str
    images: list[ImageRecord]
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    part_names: tuple[str, ...] = ()
    part_colors: tuple[tuple[int, int, int], ...] = ()  # one RGB per part name, or () for the app's palette

    @property
    def num_objects(self) -> int:
        return sum(len(im.objects) for im in self.images)


def split_images(dataset: AnnotatedDataset, val_fraction: float, seed: int = 0
                 ) -> tuple[AnnotatedDataset, AnnotatedDataset]:
    """A deterministic image-level split (no object is in both halves)."""
    order = np.random.default_rng(seed).permutation(len(dataset.images))
    n_val = int(round(len(order) * val_fraction))
    val = {int(i) for i in order[:n_val]}
    parts = ([im for i, im in enumerate(dataset.images) if i not in val],
             [im for i, im in enumerate(dataset.images) if i in val])
    return tuple(AnnotatedDataset(f"{dataset.name}:{half}", images, dataset.keypoint_names, dataset.skeleton,
                                  dataset.part_names, dataset.part_colors) for half, images in zip(("train", "val"), parts))


def concatenate(datasets: list[AnnotatedDataset]) -> AnnotatedDataset:
    """Mix data sets; keypoint/part names must agree where both define them."""
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    part_names: tuple[str, ...] = ()
    part_colors: tuple[tuple[int, int, int], ...] = ()
    for d in datasets:
        if d.keypoint_names:
            if keypoint_names and d.keypoint_names != keypoint_names:
                raise DataError(f"{d.name}: keypoint names {d.keypoint_names} differ from {keypoint_names}")
            keypoint_names, skeleton = d.keypoint_names, d.skeleton or skeleton
        if d.part_names:
            if part_names and d.part_names != part_names:
                raise DataError(f"{d.name}: part names {d.part_names} differ from {part_names}")
            part_names, part_colors = d.part_names, d.part_colors or part_colors
    images = [im for d in datasets for im in d.images]
    return AnnotatedDataset("+".join(d.name for d in datasets), images, keypoint_names, skeleton, part_names,
                            part_colors)
