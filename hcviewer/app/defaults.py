"""Paths the app and its command line share (Qt-free, so ``hcviewer predict`` and ``--help``
import neither Qt nor the window)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "hcviewer-person-mobilenet_v2.safetensors"
