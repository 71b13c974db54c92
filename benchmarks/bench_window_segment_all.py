"""The whole main window's responsiveness during "Segment all boxes in image": the longest gap
between ticks of a 5 ms GUI timer while the worker predicts N boxes AND the window draws their
results (document update, box items, composite result layer, repaint).

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_window_segment_all.py \
        [--checkpoint FILE] [--boxes 32 128] [--rounds 5]

``bench_gui_responsiveness.py`` measures the worker alone; this adds the GUI thread's own work.
The image is the demo's astronaut photo with N random boxes. Target: longest gap <= 50 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from hcviewer.app.defaults import DEFAULT_CHECKPOINT  # noqa: E402
from hcviewer.app.event_loop import run_until  # noqa: E402
from hcviewer.app.main_window import MainWindow  # noqa: E402
from hcviewer.app.settings import AppSettings  # noqa: E402


def measure(app: QApplication, window: MainWindow, boxes: int, rounds: int) -> np.ndarray:
    """Heartbeat gaps (ms) over ``rounds`` times "segment all" on ``boxes`` random boxes."""
    rng = np.random.default_rng(0)
    document = window.current_document()
    for box in document.boxes:
        window.project.delete_box(window.state.image_index, box.id)
    h, w = window.state.image.shape[:2]
    for _ in range(boxes):
        x0, y0 = rng.uniform(0, w * 0.7), rng.uniform(0, h * 0.7)
        xyxy = np.array([x0, y0, x0 + rng.uniform(40, w * 0.3), y0 + rng.uniform(40, h * 0.3)])
        window.project.add_box(window.state.image_index, xyxy, "person")
    run_until(app, lambda: len(window.canvas.box_items) == boxes)
    ticks: list[float] = []
    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    heartbeat.start()
    for _ in range(rounds):
        window.state.views.clear()  # forget the results: the next round predicts and draws them again
        window.canvas.sync_boxes()
        window.segmentation.segment_all()
        run_until(app, lambda: len(window.state.views) == boxes and window.canvas.result_layer.key is not None)
    heartbeat.stop()
    return np.diff(ticks) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--boxes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.checkpoint.exists():
        print(f"{args.checkpoint} is missing; pass --checkpoint FILE", file=sys.stderr)
        return 2

    app = QApplication.instance() or QApplication(sys.argv[:1])
    folder = tempfile.TemporaryDirectory()
    os.environ["HCVIEWER_RECOVERY_DIR"] = folder.name
    settings = AppSettings(QSettings(str(Path(folder.name) / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(args.checkpoint, "cpu", settings=settings, offer_recovery=False)
    window.ask_to_save = False
    window.resize(1400, 900)
    window.show()
    window.files.open_demo()
    run_until(app, lambda: window.state.model_info is not None and window.state.image is not None)
    print(f"checkpoint: {args.checkpoint.name}, device: {window.state.model_info.device}, "
          f"image {window.state.image.shape[1]}x{window.state.image.shape[0]}")
    for boxes in args.boxes:
        gaps = measure(app, window, boxes, args.rounds)
        print(f"{args.rounds} x segment all on {boxes} boxes: heartbeat gaps over {len(gaps)} ticks: "
              f"longest {gaps.max():.1f} ms, 99th percentile {np.percentile(gaps, 99):.1f} ms, "
              f"median {np.median(gaps):.1f} ms (target: longest <= 50 ms)")
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
