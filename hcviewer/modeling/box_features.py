"""The box features of one ``forward_boxes`` call: computed per tap when a task head first asks
for them, then shared by the heads of the other tasks."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping

import torch

from hcviewer.modeling.backbones import Backbone, TrunkFeatures
from hcviewer.modeling.box_sampling import ColumnGroup, resize_axis_weights


class BoxTapFeatures(Mapping[str, torch.Tensor]):
    """Per tap, for N boxes:

    - ``self[tap]``: [N, C, R, R], roi_align's cut at the tap's size (the box-level tap:
      [N, D, 1, 1]);
    - ``pixels(tap)``: [S*S, N, C], bilinearly resized to the S x S output and laid out
      pixel-major, as the heads' ``pixels`` evaluation order consumes them;
    - ``columns(tap)``: resampled along x only, as the heads' ``columns`` order consumes them
      (``box_sampling.ColumnGroup``).

    ``pixels`` come straight from the feature maps, cut and upsampling as one pair of separable
    sampling matrices (``Backbone.sample_tap``), unless the boxes were cut at the tap's size
    already. ``sampled=True`` (training) does the same for the box-level vector and ``columns``
    instead of cutting at the tap's size first (two steps whose backward passes were most of a
    training step); the values are the same up to float rounding.
    """

    def __init__(self, backbone: Backbone | None, features: TrunkFeatures, rois: torch.Tensor,
                 taps: tuple[str, ...], output_size: int, sampled: bool = False) -> None:
        self._backbone = backbone
        self._features = features
        self._rois = rois
        self._taps = taps
        self.output_size = output_size
        self.sampled = sampled
        self._box: dict[str, torch.Tensor] = {}
        self._pixels: dict[str, torch.Tensor] = {}

    @classmethod
    def of(cls, box_features: dict[str, torch.Tensor], output_size: int) -> "BoxTapFeatures":
        """Given box features {tap: [N, C, R, R]} (a head used on its own)."""
        n = next(iter(box_features.values())).shape[0] if box_features else 0
        made = cls(None, {}, torch.zeros(n, 5), tuple(box_features), output_size)
        made._box = dict(box_features)
        return made

    def __getitem__(self, tap: str) -> torch.Tensor:
        if tap not in self._taps:
            raise KeyError(tap)
        if tap not in self._box:
            if self.sampled and self.is_box_level(tap):
                self._box[tap] = self._backbone.sample_tap(self._features, self._rois, tap, self.output_size)
            else:
                self._box[tap] = self._backbone.tap_box_features(self._features, self._rois, tap)
        return self._box[tap]

    def __iter__(self) -> Iterator[str]:
        return iter(self._taps)

    def __len__(self) -> int:
        return len(self._taps)

    @property
    def num_boxes(self) -> int:
        return self._rois.shape[0]

    def is_box_level(self, tap: str) -> bool:
        if self._backbone is None:
            return self._box[tap].shape[-1] == 1
        return self._backbone.tap_specs[tap].box_level

    def roi_size(self, tap: str) -> int:
        """R of ``self[tap]`` (1 for the box-level tap)."""
        if self._backbone is None:
            return self._box[tap].shape[-1]
        return 1 if self.is_box_level(tap) else self._backbone.tap_specs[tap].roi_size

    def pixels_are_free(self, tap: str) -> bool:
        """Whether ``pixels(tap)`` costs a head nothing more: computed already by another head,
        or the natural product of sampled mode."""
        return tap in self._pixels or (self.sampled and not self.is_box_level(tap))

    def has_columns(self, tap: str) -> bool:
        """Whether ``columns(tap)`` can be made (a conv tap)."""
        return not self.is_box_level(tap)

    def columns(self, tap: str) -> list[ColumnGroup]:
        if self.is_box_level(tap):
            raise ValueError(f"no column features for the box-level tap {tap!r}")
        if self.sampled:
            return self._backbone.sample_tap_columns(self._features, self._rois, tap, self.output_size)
        return [column_major_features(self[tap], self.output_size)]

    def pixels(self, tap: str) -> torch.Tensor:
        if tap not in self._pixels:
            # Unless a head has cut the boxes at the tap's size already, cut and upsample are one
            # resampling from the maps (a 4-box predict 0.8 ms faster: no R x R intermediate).
            if not self.is_box_level(tap) and (self.sampled or tap not in self._box):
                self._pixels[tap] = self._backbone.sample_tap(self._features, self._rois, tap, self.output_size)
            else:
                self._pixels[tap] = pixel_major_features(self[tap], self.output_size)
        return self._pixels[tap]


def pixel_major_features(features: torch.Tensor, output_size: int) -> torch.Tensor:
    """Box features [N, Cin, R, R] (any memory layout), bilinearly upsampled to S x S
    (``F.interpolate(mode="bilinear", align_corners=False)``) and laid out pixel-major,
    [S*S, N, Cin], as the ``pixels`` evaluation order consumes them.

    Upsampling is separable, ``U @ f @ U^T`` with U [S, R]; done as two matrix products over the
    pixel-major layout it needs no transposing copy of the upsampled features (F.interpolate
    and the copy to pixel-major took 2.4 ms for four boxes of a 14 x 14 tap, these 0.4 ms).
    """
    n, cin, r, _ = features.shape
    s = output_size
    if r == 1:
        return features.view(1, n, cin).expand(s * s, n, cin)
    upsample = _upsampling_matrix(r, s, features.dtype, features.device)  # [S, R]
    rows = features.permute(2, 3, 0, 1).reshape(r, r * n * cin)  # [R(y), R(x) * N * Cin]
    along_y = torch.mm(upsample, rows).view(s, r, n * cin)  # [S(y), R(x), N * Cin]
    return torch.matmul(upsample, along_y).view(s * s, n, cin)  # [S(y), S(x), N * Cin]


def column_major_features(features: torch.Tensor, output_size: int) -> ColumnGroup:
    """Box features [N, Cin, R, R] (any memory layout) bilinearly upsampled along x to S
    columns, [S, N * R, Cin], with the upsampling matrix along y as every box's y weights: the
    ``columns`` order's input (``box_sampling.ColumnGroup``)."""
    n, cin, r, _ = features.shape
    upsample = _upsampling_matrix(r, output_size, features.dtype, features.device)  # [S, R]
    along_x = torch.mm(upsample, features.permute(3, 0, 2, 1).reshape(r, n * r * cin))  # [S(x), N * R(y) * Cin]
    return ColumnGroup(along_x.view(output_size, n * r, cin), upsample.expand(n, -1, -1))


@functools.lru_cache(maxsize=32)
def _upsampling_matrix(in_size: int, out_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):  # cached: usable later with autograd too
        return resize_axis_weights(in_size, out_size).to(device, dtype)
