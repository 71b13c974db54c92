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

from hcviewer.fileio import write_atomic
from hcviewer.modeling.config import HypercolumnConfig
from hcviewer.modeling.hypercolumn import HypercolumnModel

FORMAT_NAME = "hcviewer-checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "hcviewer"


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
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
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
    if header.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path}: header format is {header.get('format')!r}, expected {FORMAT_NAME!r}")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, this hcviewer reads version {FORMAT_VERSION}; "
            "upgrade hcviewer or re-export the checkpoint"
        )
    try:
        config = HypercolumnConfig.from_dict(header["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the network configuration in the header is invalid ({exc})") from None
    return CheckpointInfo(
        path=path,
        config=config,
        training=header.get("training", {}),
        metrics=header.get("metrics", {}),
        weights_dtype=header.get("weights_dtype", "float32"),
    )


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[HypercolumnModel, CheckpointInfo]:
    """Build the configured network and load its weights; every failure is a CheckpointError."""
    info = read_checkpoint_info(path)
    try:
        model = HypercolumnModel(info.config, pretrained_backbone=False)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{info.path}: cannot build the network it describes ({exc})") from None
    try:
        state = {}
        with safe_open(str(info.path), framework="pt", device="cpu") as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{info.path}: the weights cannot be read ({exc}); the file may be truncated") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{info.path}: weights do not match the network in its header "
            f"({len(missing)} missing, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{info.path}: weight {key} has shape {tuple(tensor.shape)}, the network expects "
                f"{tuple(expected[key].shape)}"
            )
        if tensor.is_floating_point():
            state[key] = tensor.to(expected[key].dtype)
    model.load_state_dict(state)
    return model.to(device).eval(), info

