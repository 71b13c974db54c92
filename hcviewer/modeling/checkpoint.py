"""The one checkpoint format shared by the trainer and the app.

A single ``.safetensors`` file: the weights, plus a JSON header stored in the safetensors
metadata under the key ``hcviewer`` (format version, the full network configuration, class /
part / keypoint names and skeleton, input normalisation, how and on what it was trained,
metrics). safetensors never unpickles, so opening an untrusted file is safe.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from hcviewer.fileio import open_input, write_atomic
from hcviewer.modeling.config import HypercolumnConfig
from hcviewer.modeling.hypercolumn import HypercolumnModel

FORMAT_NAME = "hcviewer-checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "hcviewer"
NORMALISED_PIXEL_LIMIT = 1000.0  # |(pixel - mean) / std| for pixels in [0, 1]; ImageNet's reaches 2.6


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


@dataclass
class CheckpointInfo:
    path: Path
    config: HypercolumnConfig
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights_dtype: str = "float32"


def save_checkpoint(
    path: str | os.PathLike,
    model: HypercolumnModel,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write atomically (temp file, then rename): a crash never leaves a half-written file.

    ``dtype=torch.float16`` halves the file; floating tensors are cast back on load.
    """
    path = Path(path)
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        state[name] = tensor.contiguous()
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "training": training or {},
        "metrics": metrics or {},
        "weights_dtype": str(dtype or torch.float32).removeprefix("torch."),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: save_file(state, tmp, metadata={HEADER_KEY: json.dumps(header)}))
    return path


def read_checkpoint_info(path: str | os.PathLike) -> CheckpointInfo:
    """Read and validate the header only (cheap: no weights are loaded)."""
    path = Path(path)
    try:
        open_input(path).close()  # safetensors says "No such file" for a file it may not read
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc}); give this user read permission "
                              "(chmod a+r) or choose another checkpoint") from None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors checkpoint ({exc}); it may be truncated or another "
            f"format. Use a file written by hcviewer-train."
        ) from None
    if HEADER_KEY not in metadata:
        raise CheckpointError(
            f"{path}: safetensors file without an hcviewer header; it was not written by hcviewer-train"
        )
    try:
        header = json.loads(metadata[HEADER_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the hcviewer header is not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: the hcviewer header is nested too deeply to be a checkpoint header; "
                              "use a file written by hcviewer-train") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the hcviewer header is a JSON {type(header).__name__}, not an object; "
                              "use a file written by hcviewer-train")
    if header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: header format is {header.get('format')!r}, expected {FORMAT_NAME!r}")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, this hcviewer reads version {FORMAT_VERSION}; "
            "upgrade hcviewer or re-export the checkpoint"
        )
    if not isinstance(header.get("config"), dict):
        raise CheckpointError(f"{path}: the header has no network configuration object ('config'); "
                              "use a file written by hcviewer-train")
    try:
        config = HypercolumnConfig.from_dict(header["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the network configuration in the header is invalid ({exc}); "
                              "re-export the checkpoint with hcviewer-train") from None
    sections = {key: header.get(key, {}) for key in ("training", "metrics")}
    for key, value in sections.items():
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: the header's '{key}' must be a JSON object, got "
                                  f"{type(value).__name__}; re-export the checkpoint with hcviewer-train")
    return CheckpointInfo(path=path, config=config, weights_dtype=str(header.get("weights_dtype", "float32")),
                          **sections)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[HypercolumnModel, CheckpointInfo]:
    """Build the configured network and load its weights; every failure is a CheckpointError."""
    info = read_checkpoint_info(path)
    # The header is checked against the file's tensors on a network without storage first: a
    # header claiming more weights than the file holds is refused before anything is allocated.
    expected = {key: (tuple(t.shape), t.dtype) for key, t in _build(info, torch.device("meta")).state_dict().items()}
    _check_shapes(info.path, expected, _stored_shapes(info.path))
    model = _build(info, torch.device("cpu"))
    try:
        state = {}
        with safe_open(str(info.path), framework="pt", device="cpu") as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{info.path}: the weights cannot be read ({exc}); the file may be truncated") from None
    for key, tensor in state.items():
        if tensor.is_floating_point():
            if not torch.isfinite(tensor).all():
                raise CheckpointError(f"{info.path}: weight {key} holds NaN or infinite values; the training run "
                                      "diverged or the file is damaged: use an earlier checkpoint")
            state[key] = tensor.to(expected[key][1])
    check_statistics(info, state)
    model.load_state_dict(state)
    return model.to(device).eval(), info


def check_statistics(info: CheckpointInfo, state: dict[str, torch.Tensor]) -> None:
    """Refuse the statistics under which every prediction comes out empty without an error: a
    BatchNorm variance below 0 (its square root is NaN), or an input normalisation under which
    the network sees no image: pixels in [0, 1] mapped beyond +-NORMALISED_PIXEL_LIMIT (a mean
    of 1e300, a std of 1e-300) or onto a range narrower than 1 / NORMALISED_PIXEL_LIMIT."""
    for key, tensor in state.items():
        if key.endswith("running_var") and (tensor < 0).any():
            raise CheckpointError(f"{info.path}: BatchNorm statistic {key} holds negative variances (down to "
                                  f"{tensor.min().item():g}); the file is damaged: use an earlier checkpoint")
    mean, std = (torch.tensor(getattr(info.config, name), dtype=torch.float64) for name in ("mean", "std"))
    black, white = -mean / std, (1 - mean) / std  # where pixels 0 and 1 go, per channel
    for name, bad in (("std", (1 / std < 1 / NORMALISED_PIXEL_LIMIT) | (1 / std > NORMALISED_PIXEL_LIMIT)),
                      ("mean", torch.maximum(black.abs(), white.abs()) > NORMALISED_PIXEL_LIMIT)):
        if bad.any():
            raise CheckpointError(
                f"{info.path}: the header's input normalisation (mean {list(info.config.mean)}, std "
                f"{list(info.config.std)}) maps pixels in [0, 1] onto [{black.min().item():.3g}, "
                f"{white.max().item():.3g}], where the network sees no image: its {name} is not one a network is "
                "trained with (ImageNet's: mean 0.485, 0.456, 0.406, std 0.229, 0.224, 0.225); use another checkpoint "
                "or re-export it with hcviewer-train")


def _build(info: CheckpointInfo, device: torch.device) -> HypercolumnModel:
    try:
        with device:
            return HypercolumnModel(info.config, pretrained_backbone=False)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{info.path}: cannot build the network it describes ({exc})") from None


def _stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the weights cannot be read ({exc}); the file may be truncated") from None


def _check_shapes(path: Path, expected: dict[str, tuple], stored: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the network in its header "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    for key, shape in stored.items():
        if shape != expected[key][0]:
            raise CheckpointError(f"{path}: weight {key} has shape {shape}, the network expects {expected[key][0]}")

