"""A 12000 x 9000 photo in the real window: the longest gap between ticks of a 5 ms GUI timer
(a heartbeat) while the photo is shown with its boxes and ground truth, a box is segmented,
accepted, painted with the brush, undone and redone, and the annotation saved; and the time to
the first picture on the canvas (a reduced decode for the display, before the whole photo).

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_large_image.py \
        [--width 12000 --height 9000] [--checkpoint FILE]

Every gap is time the GUI event loop could not run (a click or a repaint waits that long); the
target is a longest gap <= 100 ms in every step. The photo (a synthetic JPEG: noise with a few
large shapes, written once to the temporary folder) comes with a COCO file of two boxes with
polygon ground truth. Peak resident memory is the process's (ru_maxrss). Without
``--checkpoint`` the bundled checkpoint is used when present, else a random one of its layout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "hcviewer-person-mobilenet_v2.safetensors"
SETTLE_S = 1.0  # after each step: late repaints and worker answers count too


def write_photo(folder: Path, width: int, height: int) -> tuple[Path, Path]:
    """The photo (JPEG) and a COCO file with two boxes and polygon ground truth."""
    photo = folder / f"large_{width}x{height}.jpg"
    rng = np.random.default_rng(0)
    if not photo.exists():
        image = rng.integers(60, 200, (height // 8, width // 8, 3), dtype=np.uint8)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        cv2.ellipse(image, (width // 3, height // 2), (width // 8, height // 3), 0, 0, 360, (200, 60, 60), -1)
        cv2.rectangle(image, (2 * width // 3, height // 4), (2 * width // 3 + width // 10, height // 2), (40, 160, 40), -1)
        cv2.imwrite(str(photo), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    boxes = [[width / 3 - width / 7, height / 2 - height / 2.6, width / 3 + width / 7, height / 2 + height / 2.6],
             [2 * width / 3 - 50, height / 4 - 50, 2 * width / 3 + width / 10 + 50, height / 2 + 50]]
    annotations = []
    for i, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2.3, (y1 - y0) / 2.3
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        polygon = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1).round(1).reshape(-1).tolist()
        annotations.append({"id": i, "image_id": 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "segmentation": [polygon], "iscrowd": 0, "area": float((x1 - x0) * (y1 - y0))})
    boxes_file = folder / "large_boxes.json"
    boxes_file.write_text(json.dumps({"images": [{"id": 1, "file_name": photo.name, "width": width, "height": height}],
                                      "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}))
    return photo, boxes_file


class Heartbeat:
    """Ticks every 5 ms on the GUI thread; remembers the longest gap of each step, in wall time
    and in the GUI thread's own CPU time (the work that kept the event loop away: on a busy
    machine the wall gap also holds the time the thread waited for a core or the GIL)."""

    def __init__(self) -> None:
        self.gaps: dict[str, float] = {}
        self.cpu_gaps: dict[str, float] = {}
        self.step = "start"
        self._last, self._last_cpu = time.perf_counter(), time.thread_time()
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        gap, cpu_gap = (now - self._last) * 1000, (cpu - self._last_cpu) * 1000
        self._last, self._last_cpu = now, cpu
        self.gaps[self.step] = max(self.gaps.get(self.step, 0.0), gap)
        self.cpu_gaps[self.step] = max(self.cpu_gaps.get(self.step, 0.0), cpu_gap)


def run_step(app: QApplication, beat: Heartbeat, name: str, action: Callable[[], None],
             done: Callable[[], bool], timeout_s: float = 300.0) -> float:
    """Run ``action`` from the event loop (as a key press would), wait for ``done``, settle;
    returns the step's wall time (s)."""
    beat.step = name
    start = time.perf_counter()
    QTimer.singleShot(0, action)
    while not done():
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError(f"step {name!r} did not finish in {timeout_s:.0f} s")
    seconds = time.perf_counter() - start
    settle = time.perf_counter()
    while time.perf_counter() - settle < SETTLE_S:
        app.processEvents()
        time.sleep(0.001)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=12000)
    parser.add_argument("--height", type=int, default=9000)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "hcviewer-bench-large")
    args = parser.parse_args(argv)

    from hcviewer.app.gui_gc import install_gui_gc
    from hcviewer.app.image_view import Mode
    from hcviewer.app.main_window import MainWindow
    from hcviewer.app.settings import AppSettings

    args.folder.mkdir(parents=True, exist_ok=True)
    photo, boxes_file = write_photo(args.folder, args.width, args.height)
    os.environ.setdefault("HCVIEWER_RECOVERY_DIR", str(args.folder / "recovery"))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    install_gui_gc(app)  # garbage collected on the GUI thread, as run_app does
    checkpoint = args.checkpoint or BUNDLED
    settings = AppSettings(QSettings(str(args.folder / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(checkpoint, "cpu", settings=settings, offer_recovery=False)
    window.ask_to_save = False
    window.resize(1400, 900)
    window.show()
    while window.state.model_info is None:
        app.processEvents()
        time.sleep(0.01)

    beat = Heartbeat()
    project, state, canvas, annotation = window.project, window.state, window.canvas, window.annotation
    timings = {}

    def box_id() -> int:
        return project.images[0].boxes[0].id

    def accepted() -> bool:
        return project.images[0].boxes[0].accepted

    def painted_count() -> int:
        return sum(1 for step in project.history.edits() if step.name.startswith("paint"))

    def brush() -> None:
        annotation.set_mode(Mode.BRUSH_ADD)
        x0, y0, x1, y1 = project.images[0].boxes[0].xyxy
        annotation.stroke_started()
        for t in np.linspace(0, 1, 20):
            annotation.stroke_point(x0 + (x1 - x0) * t, y0 + (y1 - y0) * 0.9)
        annotation.stroke_finished()

    undo_steps = []
    first_picture: dict[str, float] = {}

    def open_photo() -> None:
        first_picture["opened"] = time.perf_counter()
        window.files.open_paths([photo], boxes=boxes_file)

    def shown() -> bool:
        if "drawn" not in first_picture and window.view.image_item.image is not None:
            first_picture["drawn"] = time.perf_counter()  # the picture on the canvas (boxes may follow)
        return state.image is not None and len(canvas.box_items) == 2

    timings["show"] = run_step(app, beat, "show", open_photo, shown)
    timings["segment"] = run_step(app, beat, "segment", lambda: canvas.select_box(box_id()),
                                  lambda: box_id() in state.views)
    timings["accept"] = run_step(app, beat, "accept", annotation.accept_selected, accepted)
    before = painted_count()
    timings["brush"] = run_step(app, beat, "brush", brush, lambda: painted_count() > before)
    undo_steps.append(project.history.undo_name())
    timings["undo"] = run_step(app, beat, "undo", annotation.undo, lambda: painted_count() == before)
    timings["redo"] = run_step(app, beat, "redo", annotation.redo, lambda: painted_count() > before)
    saved = args.folder / "saved.json"
    saved.unlink(missing_ok=True)
    timings["save"] = run_step(app, beat, "save", lambda: window.saving.save_to(saved, wait=False),
                               lambda: not window.saving.saving)  # as File > Save does
    beat.timer.stop()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"photo {args.width} x {args.height} ({photo.stat().st_size / 1e6:.1f} MB JPEG), checkpoint "
          f"{Path(checkpoint).name}, device {state.model_info.device}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"first picture {first_picture['drawn'] - first_picture['opened']:.2f} s after opening; "
          f"boxes and the whole photo {timings['show']:.2f} s")
    print(f"{'step':<10}{'wall s':>8}{'longest GUI gap ms':>20}{'its GUI CPU ms':>16}")
    for step, seconds in timings.items():
        print(f"{step:<10}{seconds:>8.2f}{beat.gaps.get(step, 0.0):>20.0f}{beat.cpu_gaps.get(step, 0.0):>16.0f}")
    print(f"longest gap overall {max(beat.gaps.values()):.0f} ms (target <= 100 ms); peak RSS {peak_mb:.0f} MB")
    window.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
