"""Device choice: never silent. The caller gets the device and a human-readable reason."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    description: str  # e.g. "CUDA: NVIDIA H100" or "CPU (2 threads)"
    warning: str | None = None  # set when the request could not be honoured


def choose_device(request: str = "auto") -> DeviceChoice:
    """``auto``: CUDA when usable, else CPU. ``cuda`` where none is usable falls back to the CPU
    with a warning the caller must show once."""
    request = request.lower()
    if request not in ("auto", "cpu", "cuda") and not request.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {request!r}")
    cpu = DeviceChoice(torch.device("cpu"), f"CPU ({torch.get_num_threads()} threads)")
    if request == "cpu":
        return cpu
    if torch.cuda.is_available():
        device = torch.device("cuda" if request == "auto" else request)
        try:
            name = torch.cuda.get_device_name(device)
        except (RuntimeError, AssertionError) as exc:
            return DeviceChoice(cpu.device, cpu.description, f"CUDA device {request} is not usable ({exc}); running on the CPU")
        return DeviceChoice(device, f"GPU: {name}")
    if request == "auto":
        return cpu
    return DeviceChoice(cpu.device, cpu.description, "CUDA was requested but no usable GPU was found; running on the CPU")
