"""What makes a training run safe to stop and continue exactly: Ctrl+C stops between steps, the
resume state is read without trusting it, the data it was trained on is recognised, and the
output folder is tried before any work.

- :class:`StopRequest`: the first Ctrl+C asks the loop to stop after the current step (the
  position in the epoch is saved, and ``resume`` continues from the next step); a second one
  stops at once, except during the optimizer's update, which is finished first so that the saved
  weights are never half-updated.
- :func:`load_resume_state`: ``resume.pt`` is loaded with ``weights_only=True``; anything else
  (a malicious pickle, a damaged file) is a :class:`ResumeStateError` that names the file.
- :func:`data_fingerprint`: the training and validation image lists, so that ``resume`` notices
  images added, removed or reordered (which move images between the splits).
"""

from __future__ import annotations

import hashlib
import re
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError

from hcviewer.data.records import AnnotatedDataset
from hcviewer.fileio import OutputError, check_writable

RESUME_KEYS = ("model", "optimizer", "schedule", "epoch", "best", "model_config", "tap_rng", "torch_rng")


class ResumeStateError(ValueError):
    """A resume state that cannot be used; the message names the file and what to do."""


# ---------------------------------------------------------------------------------- stopping
class StopRequest:
    """SIGINT (Ctrl+C) while training: see the module docstring. Use as a context manager around
    the loop; outside the main thread (where signals cannot be caught) it does nothing."""

    def __init__(self, message: str = "") -> None:
        self.requested = False
        self.updating = False  # set by the loop from the optimizer's update to the step's end
        self.message = message
        self._previous = None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum, frame) -> None:
        if self.requested and not self.updating:
            raise KeyboardInterrupt
        if not self.requested and self.message:
            print(f"\n{self.message}", flush=True)
        self.requested = True


# ---------------------------------------------------------------------------------- resuming
def load_resume_state(path: Path, device: torch.device) -> dict:
    """The resume state in ``path``, loaded with ``weights_only=True`` (no code runs)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except OSError as exc:
        raise ResumeStateError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except Exception:  # noqa: BLE001 - any failure to decode the file means the same to the user
        # (weights_only refuses pickles that would run code: never advise turning that off)
        raise ResumeStateError(f"{path} is not a resume state written by hcviewer-train, or it is damaged; "
                               "it was not loaded. Start the run again with 'hcviewer-train train', or "
                               "resume from a copy you trust") from None
    missing = [k for k in RESUME_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ResumeStateError(f"{path} lacks {', '.join(missing)}: not a resume state of hcviewer-train; "
                               "start the run again with 'hcviewer-train train'")
    return state


def data_fingerprint(train: AnnotatedDataset, val: AnnotatedDataset | None) -> dict:
    """{"train": {"images": N, "sha256": ...}, "val": {...}} of the image lists, in order."""
    return {"train": _images_digest(train), "val": _images_digest(val)}


def _images_digest(dataset: AnnotatedDataset | None) -> dict:
    images = dataset.images if dataset is not None else []
    digest = hashlib.sha256()
    for image in images:
        name = Path(image.path).name if image.path is not None else ""
        digest.update(f"{image.image_id}|{name}|{image.width}x{image.height}\n".encode())
    return {"images": len(images), "sha256": digest.hexdigest()}


def describe_data_change(saved: dict | None, current: dict) -> str | None:
    """None when the image lists are the ones the run was trained on, else what changed."""
    if saved is None:
        return None  # a state written before fingerprints were kept: nothing to compare
    changes = []
    for split, name in (("train", "training"), ("val", "validation")):
        before, now = saved.get(split, {}), current[split]
        if before.get("sha256") != now["sha256"]:
            changes.append(f"{name} images {before.get('images', '?')} -> {now['images']}"
                           + ("" if before.get("images") != now["images"] else " (other images or order)"))
    return "; ".join(changes) or None


# ---------------------------------------------------------------------------------- outputs
def check_output_folder(out_dir: Path) -> None:
    """Create the run's folder and try a write there, before any training: a read-only or full
    ``--out`` is an OutputError at once, not after the first epoch."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}; "
                          "choose a folder you can write to") from None
    check_writable(out_dir, f"the training outputs in {out_dir}")


@contextmanager
def writing(path: Path, advice: str) -> Iterator[None]:
    """Turn a failed write of ``path`` (full disk, no permission) into an OutputError that says
    why and, in ``advice``, what was kept and what to do; never a traceback."""
    try:
        yield
    except OutputError:
        raise
    except (OSError, SafetensorError) as exc:  # safetensors reports the same causes with its own type
        raise OutputError(f"cannot write {path}: {_reason(exc)}. {advice}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    # safetensors: "Error while serializing: I/O error: No space left on device (os error 28) at path ..."
    found = re.search(r"I/O error: (.+?) \(os error \d+\)", str(exc))
    return found.group(1) if found else str(exc)
