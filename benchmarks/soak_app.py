"""Soak test of the whole app: the real main window, offscreen, driven through a long session.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/soak_app.py            # full: 500 images
    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/soak_app.py --quick    # 30 images (CI)

Opens a folder of N generated images with a COCO box file (2 boxes each), segments all images
(worker thread, progress), accepts the results of the first images, toggles every tap off and on
around a selected box, opens and closes Compare M times, makes edits and walks the undo stack
back and forth, saves the annotation and reopens it. Recorded: each phase's wall time, the
resident memory (RSS) after it, and the longest gap between ticks of a 5 ms GUI-thread timer
(how long a click or a repaint would have waited). The app's own GUI-thread garbage collector is
installed as ``run_app`` does.

Full: 500 images, 20 rounds of tap toggles, Compare 50 times, 1000 undo/redo steps; quick: 30
images, 3 rounds, Compare 5 times, 50 steps. The checkpoint is the bundled one (full) or a tiny
random-init MobileNetV2 (quick, or ``--checkpoint tiny``). ``--json FILE`` writes the figures;
the exit status is non-zero when a phase did not complete or the reopened annotation differs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PySide6.QtCore import QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from hcviewer.app.defaults import DEFAULT_CHECKPOINT  # noqa: E402
from hcviewer.app.event_loop import run_until  # noqa: E402
from hcviewer.app.gui_gc import dispose, install_gui_gc  # noqa: E402
from hcviewer.app.main_window import MainWindow  # noqa: E402
from hcviewer.app.settings import AppSettings  # noqa: E402

IMAGE_SIZE = (240, 320)  # (H, W) of the generated photos
ACCEPTED_IMAGES = 10  # images whose results are accepted (saved as objects with masks)


@dataclass
class Plan:
    images: int
    tap_rounds: int
    compares: int
    undo_steps: int  # undo + redo steps (half each)


FULL = Plan(images=500, tap_rounds=20, compares=50, undo_steps=1000)
QUICK = Plan(images=30, tap_rounds=3, compares=5, undo_steps=50)


@dataclass
class Phase:
    name: str
    seconds: float
    rss_mb: float
    longest_gap_ms: float
    longest_gc_ms: float  # the longest garbage collection (on the GUI thread: gui_gc)
    gc_runs: int


@dataclass
class Report:
    checkpoint: str
    plan: dict
    phases: list[Phase] = field(default_factory=list)
    rss_start_mb: float = 0.0
    saved_objects: int = 0
    reopened_objects: int = 0
    saved_accepted: int = 0
    reopened_accepted: int = 0


def rss_mb() -> float:
    """Resident memory now (Linux /proc), else the peak so far."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


class GcPauses:
    """The garbage collector's runs and the longest one since ``reset`` (gc.callbacks)."""

    def __init__(self) -> None:
        self._started = 0.0
        self.longest = 0.0
        self.runs = 0
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.longest, self.runs = 0.0, 0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.runs += 1
            self.longest = max(self.longest, time.perf_counter() - self._started)


class Heartbeat:
    """A 5 ms GUI-thread timer; the longest gap between its ticks since ``reset``."""

    def __init__(self) -> None:
        self._timer = QTimer()
        self._timer.setInterval(5)
        self._timer.timeout.connect(self._tick)
        self._last = time.perf_counter()
        self.longest = 0.0

    def start(self) -> None:
        self.reset()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def reset(self) -> None:
        self._last = time.perf_counter()
        self.longest = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self._last)
        self._last = now


def wait(app: QApplication, condition, what: str) -> None:
    run_until(app, condition, what, timeout_s=600)


def write_dataset(folder: Path, count: int) -> Path:
    """``count`` photos-like images (noise and two coloured blobs) and a COCO box file."""
    rng = np.random.default_rng(0)
    h, w = IMAGE_SIZE
    images, annotations = [], []
    for image_id in range(1, count + 1):
        image = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        boxes = []
        for _ in range(2):
            x0, y0 = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 100))
            x1, y1 = x0 + int(rng.integers(40, 100)), y0 + int(rng.integers(40, 100))
            cv2.ellipse(image, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2 - 4, (y1 - y0) // 2 - 4), 0, 0, 360,
                        tuple(int(c) for c in rng.integers(120, 255, 3)), -1)
            boxes.append([x0, y0, x1 - x0, y1 - y0])
        name = f"{image_id:04d}.png"
        cv2.imwrite(str(folder / name), image)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for bbox in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": 0})
    path = folder / "boxes.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))
    return path


def tiny_checkpoint(folder: Path) -> Path:
    """A random-init MobileNetV2 hypercolumn model (figure-ground and keypoints), as the tests use."""
    import torch

    from hcviewer.modeling import HypercolumnConfig, build_hypercolumn, save_checkpoint
    from hcviewer.categories import COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON

    torch.manual_seed(0)
    config = HypercolumnConfig(backbone="mobilenet_v2", grid_size=3, output_size=24,
                               tasks=("figure_ground", "keypoints"), class_names=("person",),
                               keypoint_names=COCO_PERSON_KEYPOINTS, skeleton=COCO_PERSON_SKELETON,
                               max_image_side=256)
    model = build_hypercolumn(config)
    with torch.no_grad():
        for head in model.heads.values():
            for conv in head.classifiers.values():
                conv.weight.normal_(std=0.2)
    return save_checkpoint(folder / "tiny.safetensors", model, training={"note": "random init, soak"})


class Soak:
    """Drives one window through the plan; each phase is timed and measured."""

    def __init__(self, app: QApplication, window: MainWindow, report: Report) -> None:
        self.app, self.window, self.report = app, window, report
        self.heartbeat = Heartbeat()
        self.heartbeat.start()
        self.gc_pauses = GcPauses()

    def phase(self, name: str, run) -> None:
        self.heartbeat.reset()
        self.gc_pauses.reset()
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        wait(self.app, lambda: time.perf_counter() - start > seconds + 0.02, "the heartbeat")  # its last gap counts
        phase = Phase(name, seconds, rss_mb(), self.heartbeat.longest * 1000, self.gc_pauses.longest * 1000,
                      self.gc_pauses.runs)
        self.report.phases.append(phase)
        print(f"{name:<26} {seconds:7.1f} s  RSS {phase.rss_mb:7.1f} MB  longest GUI gap {phase.longest_gap_ms:7.1f} ms"
              f"  GC {phase.gc_runs:4d} runs, longest {phase.longest_gc_ms:6.1f} ms", flush=True)

    def wait(self, condition, what: str) -> None:
        wait(self.app, condition, what)

    # ---------------------------------------------------------------------------------- phases
    def open_folder(self, folder: Path, boxes: Path, count: int) -> None:
        window = self.window
        window.files.open_paths([folder], boxes=boxes)
        self.wait(lambda: window.state.model_info is not None and window.state.image is not None
                  and len(window.canvas.box_items) == 2, "the first image, its boxes and the model")
        assert len(window.project.images) == count, f"{len(window.project.images)} images opened, not {count}"

    def segment_all_images(self) -> None:
        window = self.window
        window.segmentation.segment_all_images()
        self.wait(lambda: not window.progress.isVisible(), "segment all images")
        unsegmented = [d.path.name for d in window.project.images if any(b.result is None for b in d.boxes)]
        assert not unsegmented, f"not segmented: {unsegmented[:5]}"

    def accept_first_images(self) -> None:
        window = self.window
        for index in range(min(ACCEPTED_IMAGES, len(window.project.images))):
            self.show_image(index)
            window.segmentation.segment_all()
            self.wait(lambda: len(window.state.views) == 2, f"the results of image {index}")
            window.annotation.accept_all()
            self.wait(lambda: all(b.accepted for b in window.current_document().boxes), f"accepting image {index}")

    def show_image(self, index: int) -> None:
        window = self.window
        window.files.show_image(index)
        self.wait(lambda: window.state.image_index == index and window.state.image is not None
                  and len(window.canvas.box_items) == 2, f"image {index}")

    def toggle_taps(self, rounds: int) -> None:
        window = self.window
        self.show_image(len(window.project.images) - 1)  # an image whose results are not accepted
        box_id = sorted(window.canvas.box_items)[0]
        window.canvas.select_box(box_id)
        self.wait(lambda: box_id in window.state.views, "the selected box's result")
        for _ in range(rounds):
            for box in window.layers.boxes.values():
                for checked in (False, True):
                    before = window.state.views.get(box_id)
                    box.setChecked(checked)
                    self.wait(lambda: window.state.views.get(box_id) is not None
                              and window.state.views.get(box_id) is not before, "a re-rendered tap subset")

    def compare(self, times: int) -> None:
        segmentation = self.window.segmentation
        for _ in range(times):
            segmentation.open_compare()
            self.wait(lambda: segmentation.compare_window.caption.text().startswith("Box "), "a compare result")
            segmentation.close_compare()
            self.app.processEvents()

    def undo_redo(self, steps: int) -> None:
        window = self.window
        index = window.state.image_index
        # Not the selected box: moving that one asks the model again, and a late answer is a new
        # edit that clears the redo stack (measured here: the undo stack itself).
        box_id = next(i for i in sorted(window.canvas.box_items) if i != window.state.selected_id)
        edits = steps // 2
        for _ in range(edits):  # each move of the box is one undo step
            box = window.current_document().box(box_id)
            window.annotation.box_edited(box_id, box.xyxy + np.array([1.0, 0.0, 1.0, 0.0]))
            self.app.processEvents()
        moved = window.project.images[index].box(box_id).xyxy.copy()
        for step in (window.annotation.undo, window.annotation.redo):
            for _ in range(edits):
                step()
                self.app.processEvents()
        assert np.allclose(window.project.images[index].box(box_id).xyxy, moved), "redo did not restore the edits"

    def save(self, path: Path) -> None:
        window = self.window
        assert window.saving.save_to(path), f"saving failed: {window.messages[-1:]}"
        self.report.saved_objects, self.report.saved_accepted = count_objects(window)

    def reopen(self, path: Path) -> None:
        window = self.window
        window.saving.open_annotation(path)
        self.wait(lambda: window.state.image is not None, "the reopened annotation's first image")
        self.report.reopened_objects, self.report.reopened_accepted = count_objects(window)


def count_objects(window: MainWindow) -> tuple[int, int]:
    """(boxes, accepted boxes) of the whole project."""
    boxes = [b for d in window.project.images for b in d.boxes]
    return len(boxes), sum(b.accepted for b in boxes)


def run(plan: Plan, checkpoint_arg: str | None, workdir: Path) -> Report:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    install_gui_gc(app)
    os.environ["HCVIEWER_RECOVERY_DIR"] = str(workdir / "recovery")
    if checkpoint_arg == "tiny" or (checkpoint_arg is None and (plan is QUICK or not DEFAULT_CHECKPOINT.exists())):
        checkpoint = tiny_checkpoint(workdir)
    else:
        checkpoint = Path(checkpoint_arg) if checkpoint_arg else DEFAULT_CHECKPOINT
    folder = workdir / "images"
    folder.mkdir()
    boxes = write_dataset(folder, plan.images)
    report = Report(str(checkpoint), asdict(plan), rss_start_mb=rss_mb())
    settings = AppSettings(QSettings(str(workdir / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(checkpoint, "cpu", settings=settings, offer_recovery=False)
    window.ask_to_save = False
    window.show()
    soak = Soak(app, window, report)
    print(f"soak: {plan.images} images, checkpoint {checkpoint.name}; RSS at start {report.rss_start_mb:.1f} MB")
    try:
        soak.phase("open folder + model", lambda: soak.open_folder(folder, boxes, plan.images))
        soak.phase("segment all images", soak.segment_all_images)
        soak.phase(f"accept {ACCEPTED_IMAGES} images", soak.accept_first_images)
        soak.phase(f"toggle taps x{plan.tap_rounds}", lambda: soak.toggle_taps(plan.tap_rounds))
        soak.phase(f"compare x{plan.compares}", lambda: soak.compare(plan.compares))
        soak.phase(f"undo/redo {plan.undo_steps} steps", lambda: soak.undo_redo(plan.undo_steps))
        soak.phase("save", lambda: soak.save(workdir / "annotation.json"))
        soak.phase("reopen", lambda: soak.reopen(workdir / "annotation.json"))
    finally:
        soak.heartbeat.stop()
        dispose(window)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the short form CI runs (30 images)")
    parser.add_argument("--images", type=int, help="override the number of images")
    parser.add_argument("--checkpoint", help="a checkpoint file, or 'tiny' (random init)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.images:
        plan = Plan(args.images, plan.tap_rounds, plan.compares, plan.undo_steps)
    with tempfile.TemporaryDirectory(prefix="hcviewer-soak-") as workdir:
        try:
            report = run(plan, args.checkpoint, Path(workdir))
        except (AssertionError, TimeoutError) as exc:
            print(f"soak: FAILED: {exc}", file=sys.stderr)
            return 1
    phases = report.phases
    after_open = phases[0].rss_mb
    print(f"RSS: start {report.rss_start_mb:.1f} MB, after opening and loading {after_open:.1f} MB, "
          f"end {phases[-1].rss_mb:.1f} MB (growth after opening {phases[-1].rss_mb - after_open:+.1f} MB); "
          f"longest GUI gap {max(p.longest_gap_ms for p in phases):.1f} ms")
    print(f"objects: saved {report.saved_objects} ({report.saved_accepted} accepted), "
          f"reopened {report.reopened_objects} ({report.reopened_accepted} accepted)")
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=1))
    same = (report.saved_objects, report.saved_accepted) == (report.reopened_objects, report.reopened_accepted)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
