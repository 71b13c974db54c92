"""What the modeling code asks of tensors before it reuses something computed from them (the
trunk's inference copy, folded and merged classifiers): whether autograd records through them,
and what identifies their current values."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def records_gradient(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether autograd is on and one of ``tensors`` needs a gradient: what is computed from
    them then belongs to the graph (training) and must be computed anew, not taken from a cache."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def values_key(tensors: Iterable[torch.Tensor | None]) -> tuple:
    """Identifies the current values of ``tensors`` (None entries allowed): storage and in-place
    version counter. Inference tensors (a model built under torch.inference_mode) keep no
    version counter; they cannot be trained either, so their storage alone identifies them."""
    return tuple(None if t is None else (t.data_ptr(), None if t.is_inference() else t._version) for t in tensors)
