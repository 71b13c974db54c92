"""Hypercolumn task heads: one linear classifier per tap, location-specific grid, summed scores.

The hypercolumn at an output pixel is the stack of every tap's bilinearly upsampled features.
A linear classifier on that stack equals the sum of per-tap linear classifiers, and since
bilinear upsampling is linear too, each tap is classified on its own (coarse) grid and only
its scores are upsampled (paper section 3.1). The bias is shared, so the prediction for a tap
subset is exactly the bias plus those taps' contributions.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hcviewer.modeling.box_sampling import ColumnGroup, resize_axis_weights
from hcviewer.modeling.grid import grid_axis_weights, grid_interpolation_weights
from hcviewer.modeling.tensor_state import records_gradient, values_key
from hcviewer.threads import widened_threads

if TYPE_CHECKING:
    from hcviewer.modeling.box_features import BoxTapFeatures


# Cost-model constants of ``HypercolumnHead.evaluation_order``, in multiply-adds.
UPSAMPLE_COST = 5  # per feature value upsampled to the output (two matmuls, box_features.py)
BMM_OVERHEAD = 24  # per pixel and input channel of the pixels order's small batched matmuls


class HypercolumnHead(nn.Module):
    """One task's classifiers over the taps.

    For each tap a 1x1 conv holds K*K*G*C classifiers (K x K grid, G classifier sets, C task
    channels). A tap's contribution at output pixel (y, x) of the S x S box is
    ``sum_k W_k(y, x) * (w_k . up(f)(y, x))`` with W_k the grid interpolation weights and up()
    bilinear upsampling. Two exact evaluation orders, picked per tap by cost:

    - ``scores``: classify at the tap's R x R resolution, upsample the K*K*C score maps, mix
      them with W_k. Cheap when the tap has many channels and few positions (fc7, a 1x1 map).
    - ``pixels``: mix the grid classifiers first into one classifier per output pixel,
      ``w(y, x) = sum_k W_k(y, x) w_k`` (cached in eval mode, it does not depend on the box),
      upsample the tap's features and take one dot product per pixel. Cheap when the tap has
      few channels (MobileNet's stride-4 tap: 24 channels against 25 * 17 keypoint scores).
    - ``columns``: the ``pixels`` order's contribution computed between the two axes of the
      resampling (training: from the maps; inference: upsampling the R x R cut). Features
      resampled along x are classified by one classifier per output column,
      ``u_i(x) = sum_j a_j(x) w_ij``, and the y resampling then also mixes the grid rows.
      Cheaper than ``pixels`` for a tap with many channels and a small cut (MobileNetV2's s16:
      96 channels, 14 x 14), whose features at every output pixel were the largest tensors of a
      training step (and whose per-pixel classifiers, 25 MB, were read on every ``predict``).
    """

    def __init__(
        self,
        tap_channels: dict[str, int],
        task_channels: int,
        grid_size: int,
        output_size: int,
        num_classifier_sets: int = 1,
    ) -> None:
        super().__init__()
        self.task_channels = task_channels
        self.grid_size = grid_size
        self.output_size = output_size
        self.num_sets = num_classifier_sets
        cells = grid_size * grid_size
        self.classifiers = nn.ModuleDict(
            {
                tap: nn.Conv2d(channels, cells * num_classifier_sets * task_channels, 1, bias=False)
                for tap, channels in tap_channels.items()
            }
        )
        self.bias = nn.Parameter(torch.zeros(num_classifier_sets, task_channels))
        for conv in self.classifiers.values():
            if not conv.weight.is_meta:  # shapes only (checkpoint checks); normal_ on meta imports torch._dynamo
                nn.init.normal_(conv.weight, std=0.01)
        self.register_buffer(
            "grid_weights", grid_interpolation_weights(grid_size, output_size), persistent=False
        )
        self.register_buffer("axis_weights", grid_axis_weights(grid_size, output_size), persistent=False)
        self.order = "auto"  # "auto", "scores", "pixels" or "columns"; see the class docstring
        # Per-pixel and per-column classifiers by (order, tap), with the weights they were made from.
        self._classifier_cache: dict[tuple[str, str], tuple[tuple, torch.Tensor]] = {}
        # Several heads' per-pixel or per-column classifiers side by side (``merged_classifiers``), kept
        # by the first of them with the per-head tensors they were made from.
        self._merged_cache: dict[tuple, tuple[tuple, torch.Tensor]] = {}

    @property
    def taps(self) -> tuple[str, ...]:
        return tuple(self.classifiers.keys())

    def evaluation_order(self, tap: str, roi_size: int, upsampled: bool = False, shared_matmul: bool = False) -> str:
        """Which exact order is cheaper for this tap, in units of one multiply-add.

        Calibrated on a 2-core CPU (benchmarks/calibrate_heads.py, 4 boxes, S=50): the
        ``scores`` order costs its multiply-adds (classifying at R x R, then the separable mixing
        of ``contribution_by_scores``: two matmuls through [S, K*R]); upsampling a feature value
        costs about ``UPSAMPLE_COST``, and the per-pixel matmuls of the ``pixels`` order carry
        about ``BMM_OVERHEAD`` extra per pixel and input channel (tiny GEMMs, their classifiers
        read from memory). ``upsampled``: the tap's features are upsampled already (by another
        head of the same call, or in training), so ``pixels`` gets them free. ``shared_matmul``:
        another head of the call evaluates this tap per pixel, and joining its batched matmul adds
        only this head's channels (in a benchmark whose other models evict the caches between
        calls, evaluating MobileNetV2's s16 figure-ground and part heads by ``scores`` beside the
        keypoint head's matmul took 21.0 ms per 4-box call against 19.1 ms joining it).
        """
        if self.order != "auto":
            return "pixels" if self.order == "columns" else self.order
        if self.num_sets > 1:
            return "scores"  # per-pixel classifiers for every class set would not fit in memory
        cin = self.classifiers[tap].in_channels
        k2, c, s = self.grid_size**2, self.task_channels, self.output_size
        kr = self.grid_size * roi_size
        mixing = k2 * s * s if roi_size == 1 else s * kr * kr + s * s * kr  # per task channel
        scores_cost = k2 * c * roi_size * roi_size * cin + c * mixing
        if shared_matmul:
            pixels_cost = cin * s * s * c
        else:
            feature_upsampling = 0 if upsampled or roi_size == 1 else UPSAMPLE_COST
            pixels_cost = cin * s * s * (c + BMM_OVERHEAD + feature_upsampling)
        return "pixels" if pixels_cost < scores_cost else "scores"

    def contribution_by_scores(
        self, tap: str, features: torch.Tensor, set_index: torch.Tensor | None
    ) -> torch.Tensor:
        """This head's contribution [N, C, S, S] in the ``scores`` order (``contributions_by_scores``)."""
        return contributions_by_scores([self], tap, features, set_index)

    def pixel_classifiers(self, tap: str) -> torch.Tensor:
        """The grid classifiers interpolated to every output pixel, [S*S, Cin, C] (one set):
        ``w(y, x) = sum_ij a_i(y) a_j(x) w_ij``."""
        def interpolate(w: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
            per_column = torch.einsum("ijcd,jx->icdx", w, axis)
            return torch.einsum("icdx,iy->yxdc", per_column, axis).reshape(axis.shape[1] ** 2, -1, w.shape[2])

        return self._interpolated_classifiers("pixels", tap, interpolate)

    def column_classifiers(self, tap: str) -> torch.Tensor:
        """The grid classifiers interpolated along x to every output column, [S, Cin, K, C]
        (one set): ``u_i(x) = sum_j a_j(x) w_ij`` for every grid row i."""
        return self._interpolated_classifiers("columns", tap, lambda w, axis: torch.einsum("ijcd,jx->xdic", w, axis))

    def _interpolated_classifiers(self, kind: str, tap: str, interpolate) -> torch.Tensor:
        """``interpolate(w [K, K, C, Cin], axis weights [K, S])`` of the first classifier set,
        contiguous; cached while the weights stay the same and need no gradient (inference)."""
        weight = self.classifiers[tap].weight
        cacheable = not records_gradient((weight,))
        key = (values_key((weight,)), weight.device, weight.dtype)
        cached = self._classifier_cache.get((kind, tap))
        if cacheable and cached is not None and cached[0] == key:
            return cached[1]
        k, c = self.grid_size, self.task_channels
        w = weight.view(k, k, self.num_sets, c, -1)[:, :, 0]  # [K, K, C, Cin]
        classifiers = interpolate(w, self.axis_weights.to(w.dtype)).contiguous()
        if cacheable:
            self._classifier_cache[(kind, tap)] = (key, classifiers)
        return classifiers

    def bias_map(self, n: int, set_index: torch.Tensor | None) -> torch.Tensor:
        """The shared bias as [N, C, 1, 1]."""
        bias = self.bias[set_index] if set_index is not None else self.bias[0].expand(n, -1)
        return bias[:, :, None, None]

    def forward(
        self,
        tap_features: BoxTapFeatures,
        set_index: torch.Tensor | None = None,
        return_contributions: bool = False,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum the contributions of the taps present in ``tap_features``.

        Returns logits [N, C, S, S] and, if asked, each tap's contribution [N, C, S, S].
        """
        return forward_heads({"head": self}, tap_features, set_index, return_contributions)["head"]


def forward_heads(
    heads: dict[str, HypercolumnHead],
    tap_features: BoxTapFeatures,
    set_index: torch.Tensor | None = None,
    return_contributions: bool = False,
) -> dict[str, tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Several task heads over the same box features: per task, logits [N, C, S, S] (bias plus
    the contributions of the taps in ``tap_features``) and, if asked, each tap's contribution.

    Per tap, the heads are considered widest first: the first to evaluate a tap in the
    ``pixels`` order pays for its upsampled features and its batched matmul, which the narrower
    heads then join for the cost of their own channels (``evaluation_order``); all heads in the
    ``pixels`` order share that one batched matmul, or the ``columns`` order's where that is
    cheaper for the tap (``per_pixel_order``), and the heads in the ``scores`` order share one
    classification (``contributions_by_scores``). Each tap gives one tensor with every head's
    channels side by side, so the logits of all heads are the bias plus one sum per tap: a few
    large operations instead of one per head and tap (each operation that runs on both cores
    wakes the second one, tens of microseconds with passive waiting).
    """
    if not tap_features:
        raise ValueError("at least one tap is needed")
    widest_first = sorted(heads, key=lambda task: -heads[task].task_channels)
    n = tap_features.num_boxes
    bias = torch.cat([heads[task].bias_map(n, set_index) for task in widest_first], dim=1)  # [N, sum of C, 1, 1]
    per_tap, total = {}, None
    for tap in tap_features:  # summed in the taps' order, whichever order computed them
        per_tap[tap] = _tap_contributions(heads, widest_first, tap, tap_features, set_index)
        total = bias + per_tap[tap] if total is None else total.add_(per_tap[tap])
    results = {}
    offset = 0
    for task in widest_first:
        channels = slice(offset, offset + heads[task].task_channels)
        offset = channels.stop
        contributions = {tap: c[:, channels] for tap, c in per_tap.items()} if return_contributions else {}
        results[task] = (total[:, channels], contributions)
    return {task: results[task] for task in heads}


def _tap_contributions(heads: dict[str, HypercolumnHead], widest_first: list[str], tap: str,
                       tap_features: BoxTapFeatures, set_index: torch.Tensor | None) -> torch.Tensor:
    """One tap's contributions of every head, [N, sum of C, S, S] with the heads' channels in
    ``widest_first`` order (a view when one evaluation order serves them all)."""
    by_pixels, by_scores = [], []
    for task in widest_first:
        free = tap_features.pixels_are_free(tap) or bool(by_pixels)
        if heads[task].evaluation_order(tap, tap_features.roi_size(tap), upsampled=free,
                                        shared_matmul=bool(by_pixels)) == "pixels":
            by_pixels.append(task)
        else:
            by_scores.append(task)
    groups = []  # (tasks, their contributions [N, sum of their C, S, S])
    # Heads with one classifier set share a classification; a class-specific head goes alone.
    shared = [task for task in by_scores if heads[task].num_sets == 1]
    alone = [[task] for task in by_scores if heads[task].num_sets > 1]
    for group in ([shared] if shared else []) + alone:
        groups.append((group, contributions_by_scores([heads[t] for t in group], tap, tap_features[tap], set_index)))
    if by_pixels:
        grouped = [heads[task] for task in by_pixels]
        if tap_features.has_columns(tap) and per_pixel_order(grouped, tap, tap_features.roi_size(tap)) == "columns":
            groups.append((by_pixels, contributions_by_columns(grouped, tap, tap_features.columns(tap))))
        else:
            groups.append((by_pixels, contributions_by_pixels(grouped, tap, tap_features.pixels(tap))))
    if len(groups) == 1:
        return groups[0][1]
    pieces = {}
    for tasks, contributions in groups:
        for task, piece in zip(tasks, contributions.split([heads[t].task_channels for t in tasks], dim=1)):
            pieces[task] = piece
    return torch.cat([pieces[task] for task in widest_first], dim=1)


def contributions_by_scores(heads: list[HypercolumnHead], tap: str, features: torch.Tensor,
                            set_index: torch.Tensor | None) -> torch.Tensor:
    """The ``scores`` order for several heads at once (each with one classifier set), or for one
    head with any number of sets: box features [N, Cin, R, R] -> the heads' contributions side
    by side, [N, sum of C, S, S]. One classification by all the heads' grid classifiers
    (``merged_scores_classifiers``), then the grid mixing of every channel."""
    n, _, r, _ = features.shape
    head = heads[0]
    k2, s = head.grid_size**2, head.output_size
    sets = head.num_sets if len(heads) == 1 else 1
    weight = merged_scores_classifiers(heads, tap)  # [K*K * sets * sum of C, Cin]
    c = weight.shape[0] // (k2 * sets)
    # The 1x1 conv as one matrix product over every position of the cuts (channels-last: a view):
    # oneDNN's conv took 0.4 ms for 4 boxes on a 1x1 map, and torch runs a 1x1 conv on fewer than
    # 16 boxes with one thread by its slow path.
    rows = F.linear(features.permute(0, 2, 3, 1).reshape(n * r * r, -1), weight)  # [N * R * R, K*K * sets * C]
    scores = rows.view(n, r, r, k2, sets, c).permute(0, 3, 4, 5, 1, 2)
    scores = _select_sets(scores, set_index)  # [N, K*K, C, R, R]
    weights = head.grid_weights.to(scores.dtype).view(k2, s * s)
    if r == 1:
        # A 1x1 map upsamples to a constant: mixing the grid is one [C, K*K] @ [K*K, S*S]
        # matmul per box (no [N, K*K, C, S, S] tensor is ever built).
        mixed = torch.matmul(scores.view(n, k2, c).transpose(1, 2), weights)
        return mixed.view(n, c, s, s)
    # Upsampling and grid mixing are both separable: out[y, x] = sum over (i, p) and (j, q) of
    # A[y, (i, p)] A[x, (j, q)] scores_ij[p, q] with A[y, (i, p)] = a_i(y) u_p(y) (grid weight
    # times bilinear weight), two small matmuls per box and channel; no [N, K*K, C, S, S]
    # tensor of upsampled scores is built.
    k = head.grid_size
    mixing = _scores_mixing_matrix(k, r, s, scores.dtype, scores.device)  # [S, K*R]
    grid = scores.reshape(n, k, k, c, r, r).permute(0, 3, 1, 4, 2, 5).reshape(n * c, k * r, k * r)
    return torch.matmul(torch.matmul(mixing, grid), mixing.t()).view(n, c, s, s)


def merged_scores_classifiers(heads: list[HypercolumnHead], tap: str) -> torch.Tensor:
    """The heads' grid classifiers for the ``scores`` order, [K*K * G * sum of C, Cin] ordered
    (grid cell, set, channel): one head's own (any number of sets G), or several one-set
    heads' side by side within each grid cell. Cached as ``merged_classifiers``."""
    weights = tuple(h.classifiers[tap].weight for h in heads)
    if len(heads) == 1:
        return weights[0].flatten(1)
    cacheable = not records_gradient(weights)
    key, versions = ("scores", tap, tuple(id(h) for h in heads)), values_key(weights)
    cached = heads[0]._merged_cache.get(key)
    if cacheable and cached is not None and cached[0] == versions:
        return cached[1]
    k2 = heads[0].grid_size ** 2
    merged = torch.cat([w.view(k2, -1, w.shape[1]) for w in weights], dim=1).flatten(0, 1)
    if cacheable:
        heads[0]._merged_cache[key] = (versions, merged)
    return merged


def per_pixel_order(heads: list[HypercolumnHead], tap: str, roi_size: int) -> str:
    """``pixels`` or ``columns`` for heads that classify a conv tap's resampled features
    together. A head's own ``order`` decides when set; else the cost in multiply-adds per box
    beyond the x resampling both share, with R the tap's roi size (the rows of an inference cut;
    about the span of a training crop for a typical box): ``pixels`` resamples the Cin channels
    along y to all S x S pixels and runs the per-pixel matmuls (with ``BMM_OVERHEAD``);
    ``columns`` classifies S x R positions into K * C scores and resamples those along y."""
    forced = {h.order for h in heads} & {"pixels", "columns"}
    if forced:
        return "columns" if "columns" in forced else "pixels"
    head = heads[0]
    cin, k, s = head.classifiers[tap].in_channels, head.grid_size, head.output_size
    c = sum(h.task_channels for h in heads)
    pixels_cost = s * s * roi_size * cin + s * s * cin * (c + BMM_OVERHEAD)
    columns_cost = s * roi_size * cin * k * c + s * s * k * roi_size * c
    return "columns" if columns_cost < pixels_cost else "pixels"


def contributions_by_columns(heads: list[HypercolumnHead], tap: str, groups: list[ColumnGroup]) -> torch.Tensor:
    """The ``columns`` order for several heads at once: the box features resampled along x
    (``box_sampling.sample_columns``) -> the heads' contributions side by side,
    [N, sum of C, S, S].

    Per group of G boxes with crops of span rows: one batched matmul classifies every output
    column's [G * span, Cin] features by that column's classifiers of all heads,
    [S, Cin, K * sum of C] (``column_classifiers``); one more per box applies the y weights
    times the grid rows' weights, [S, K * span] @ [K * span, S * sum of C].
    """
    head = heads[0]
    k, s = head.grid_size, head.output_size
    c = sum(h.task_channels for h in heads)
    dtype = groups[0].features.dtype
    classifiers = merged_classifiers(heads, tap, "columns").to(dtype).view(s, -1, k * c)  # [S, Cin, K * sum of C]
    grid_rows = head.axis_weights.t().to(dtype)  # [S(y), K]
    out = []
    for columns, weights_y in groups:
        g, _, span = weights_y.shape
        with widened_threads():  # the call's largest product (MobileNetV2's s16: 30 M multiply-adds for 4 boxes)
            scores = torch.bmm(columns, classifiers)  # [S(x), G * span, K * C]
        scores = scores.view(s, g, span, k, c).permute(1, 3, 2, 0, 4).reshape(g, k * span, s * c)
        mixing = (grid_rows[None, :, :, None] * weights_y.to(dtype)[:, :, None, :]).reshape(g, s, k * span)
        out.append(torch.bmm(mixing, scores).view(g, s, s, c))  # [G, S(y), S(x), C]
    merged = torch.cat(out) if len(out) > 1 else out[0]
    return merged.permute(0, 3, 1, 2)


def contributions_by_pixels(heads: list[HypercolumnHead], tap: str, per_pixel: torch.Tensor) -> torch.Tensor:
    """The ``pixels`` order for several heads at once: per_pixel [S*S, N, Cin]
    (``BoxTapFeatures.pixels``) -> the heads' contributions side by side, [N, sum of C, S, S].

    One small matmul per output pixel, [S*S, N, Cin] @ [S*S, Cin, sum of C], with the heads'
    per-pixel classifiers side by side: bmm runs as one batched GEMM (an einsum here is ~15x
    slower on the CPU), and one call for all heads costs about what one head alone did.
    """
    p, n, _ = per_pixel.shape
    s = heads[0].output_size
    classifiers = merged_classifiers(heads, tap).to(per_pixel.dtype)
    scores = _contiguous_gradient(torch.bmm(per_pixel, classifiers))  # [S*S, N, sum of C]
    return scores.permute(1, 2, 0).view(n, -1, s, s)


@functools.lru_cache(maxsize=32)
def _scores_mixing_matrix(grid_size: int, roi_size: int, output_size: int, dtype: torch.dtype,
                          device: torch.device) -> torch.Tensor:
    """[S, K*R]: entry (y, i*R + p) = a_i(y) u_p(y), grid interpolation times bilinear upsampling
    from R to S along one axis (``contribution_by_scores``)."""
    with torch.inference_mode(False):  # cached: usable later with autograd too
        grid = grid_axis_weights(grid_size, output_size).double()  # [K, S]
        upsample = resize_axis_weights(roi_size, output_size)  # [S, R]
        mixing = grid.t()[:, :, None] * upsample[:, None, :]  # [S, K, R]
        return mixing.reshape(output_size, grid_size * roi_size).to(device, dtype)


def merged_classifiers(heads: list[HypercolumnHead], tap: str, order: str = "pixels") -> torch.Tensor:
    """The heads' per-pixel classifiers side by side, [S*S, Cin, sum of C], or with ``order``
    "columns" their per-column classifiers, [S, Cin, K, sum of C]. Cached while every head's own
    cached classifiers stay the same tensors: the concatenation (25 MB for MobileNetV2's s16 tap
    and three heads, per pixel) took half of a 4-box ``predict``."""
    if order == "pixels":
        parts = tuple(h.pixel_classifiers(tap) for h in heads)
    else:
        parts = tuple(h.column_classifiers(tap) for h in heads)
    dim = parts[0].dim() - 1
    if records_gradient(parts):
        return torch.cat(parts, dim=dim)
    key = (order, tap, tuple(id(h) for h in heads))
    cached = heads[0]._merged_cache.get(key)
    if cached is not None and len(cached[0]) == len(parts) and all(a is b for a, b in zip(cached[0], parts)):
        return cached[1]
    merged = torch.cat(parts, dim=dim)
    heads[0]._merged_cache[key] = (parts, merged)
    return merged


class _ContiguousGradient(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous. The pixels order's
    [S*S, N, C] scores are read permuted to [N, C, S, S], so their gradient arrives with no unit
    stride in a [N, C] matrix, and bmm's backward then copied each of the S*S small matrices
    on its own (~90,000 copies per training step); one copy of the whole gradient replaces them."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def _contiguous_gradient(tensor: torch.Tensor) -> torch.Tensor:
    return _ContiguousGradient.apply(tensor) if tensor.requires_grad else tensor


def _select_sets(scores: torch.Tensor, set_index: torch.Tensor | None) -> torch.Tensor:
    """[N, K2, G, C, R, R] -> [N, K2, C, R, R], picking each box's classifier set."""
    if scores.shape[2] == 1:
        return scores[:, :, 0]
    if set_index is None:
        raise ValueError("a class-specific head needs each box's class index")
    index = set_index.view(-1, 1, 1, 1, 1, 1).expand(-1, scores.shape[1], 1, *scores.shape[3:])
    return scores.gather(2, index).squeeze(2)
