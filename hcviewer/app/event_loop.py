"""Driving the real window from a script (screenshots, benchmarks, the soak run) without a test
framework: run Qt's event loop until the window reaches a state."""

from __future__ import annotations

import time
from typing import Callable

from PySide6.QtWidgets import QApplication


def run_until(app: QApplication, condition: Callable[[], bool], what: str = "the window",
              timeout_s: float = 300.0, poll_s: float = 0.001) -> None:
    """Process events until ``condition()`` holds; TimeoutError naming ``what`` after ``timeout_s``.
    The short sleep keeps the loop from spinning a core that the model's worker needs."""
    end = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        app.processEvents()
        time.sleep(poll_s)
