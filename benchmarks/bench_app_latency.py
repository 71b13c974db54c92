"""The app as a user meets it: how long after launch the model is ready, how long the first click
on a box of a new image takes, and how many images per second *Segment all images* does.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_app_latency.py \
        [--coco ANN.json --images DIR] [--count 20] [--checkpoint FILE] [--busy]

- **model ready**: the launcher notes the time, starts a fresh Python process that imports the
  app, opens the window and loads the checkpoint (the bundled one by default) as ``hcviewer``
  does; ready is when the status bar would name the device. The disk is warm (the benchmark runs
  the launch once before timing three). Also printed: when the window was shown.
- **first click on a new image**: in that process, each of ``--count`` photos is shown (decoded in
  the loader thread), then its first box is selected as a click does; the time from the click to
  the box's result being drawn (trunk on the new image + heads + drawing).
- **Segment all images**: the same photos with all their ground-truth boxes, from the menu action
  to the document holding every image's results: images per second.

Photos: ``../shared/data/coco-val-dev`` (about 640 x 480, with its boxes) unless ``--coco`` and
``--images`` name others. ``--busy`` runs two ``yes > /dev/null`` neighbours for the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "coco-val-dev"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, default=DATA / "annotations" / "instances_val2017.json")
    parser.add_argument("--images", type=Path, default=DATA / "val2017")
    parser.add_argument("--count", type=int, default=20, help="photos for the click and batch figures")
    parser.add_argument("--launches", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--busy", action="store_true", help="two busy neighbours during the run")
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)  # launch time
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def subset_boxes(args: argparse.Namespace, folder: Path) -> tuple[list[Path], Path]:
    """The first ``count`` photos of the COCO file that have boxes, and a COCO file of just them."""
    coco = json.loads(args.coco.read_text())
    with_boxes = {a["image_id"] for a in coco["annotations"]}
    images = [i for i in coco["images"] if i["id"] in with_boxes][:args.count]
    ids = {i["id"] for i in images}
    subset = {**coco, "images": images, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
    path = folder / "boxes.json"
    path.write_text(json.dumps(subset))
    return [args.images / i["file_name"] for i in images], path


def child(args: argparse.Namespace) -> None:
    """One launch: print when the window was shown and the model ready (s after ``args.child``);
    with ``--measure`` also the click latencies and the batch throughput."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from hcviewer.threads import apply_thread_policy

    apply_thread_policy(None)  # as hcviewer's entry point does, before torch loads
    from hcviewer.app.defaults import DEFAULT_CHECKPOINT
    from hcviewer.app.event_loop import run_until
    from hcviewer.app.main_window import MainWindow
    from hcviewer.app.settings import AppSettings

    folder = Path(tempfile.mkdtemp())
    os.environ["HCVIEWER_RECOVERY_DIR"] = str(folder / "recovery")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = AppSettings(QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(args.checkpoint or DEFAULT_CHECKPOINT, "cpu", settings=settings, offer_recovery=False)
    window.ask_to_save = False
    window.show()
    app.processEvents()
    shown = time.time() - args.child
    state = window.state
    run_until(app, lambda: state.model_info is not None, "the model")
    report = {"shown_s": shown, "ready_s": time.time() - args.child}
    if args.measure:
        paths, boxes = subset_boxes(args, folder)
        window.files.open_paths(paths, boxes=boxes)
        clicks = []
        for index in range(len(paths)):
            window.files.show_image(index)
            run_until(app, lambda: state.image is not None and state.image_index == index
                      and bool(window.canvas.box_items), "the image")
            box_id = min(window.canvas.box_items)
            start = time.perf_counter()
            window.canvas.select_box(box_id)
            run_until(app, lambda: box_id in state.views and box_id in window.canvas.overlays, "the result")
            app.processEvents()  # the repaint
            clicks.append(time.perf_counter() - start)
        window.files.show_image(0)  # the batch segments every box again, the clicked ones too
        start = time.perf_counter()
        window.segmentation.segment_all_images()
        run_until(app, lambda: not window.progress.isVisible(), "Segment all images", timeout_s=1800)
        batch_s = time.perf_counter() - start
        report.update(clicks_ms=[c * 1000 for c in clicks], batch_images=len(paths), batch_s=batch_s,
                      boxes=sum(len(d.boxes) for d in window.project.images))
    print(json.dumps(report), flush=True)
    window.close()


def launch(args: argparse.Namespace, measure: bool) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", repr(time.time()),
               "--coco", str(args.coco), "--images", str(args.images), "--count", str(args.count)]
    if args.checkpoint:
        command += ["--checkpoint", str(args.checkpoint)]
    if measure:
        command.append("--measure")
    output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(output.strip().splitlines()[-1])


def median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    args = parse_args()
    if args.child is not None:
        child(args)
        return
    neighbours = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(2)] if args.busy else []
    try:
        print(f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; "
              f"{'two busy neighbours' if args.busy else 'no neighbours started'}", flush=True)
        launch(args, measure=False)  # a warm disk
        launches = [launch(args, measure=False) for _ in range(args.launches)]
        measured = launch(args, measure=True)
    finally:
        for process in neighbours:
            process.kill()
    print(f"window shown after launch: {median_range([r['shown_s'] * 1000 for r in launches])} ms")
    print(f"model ready after launch: {median_range([r['ready_s'] * 1000 for r in launches])} ms "
          f"({args.launches} launches; target <= 5000 ms)")
    print(f"first click on a new image: {median_range(measured['clicks_ms'])} ms over {len(measured['clicks_ms'])} "
          "photos (target <= 300 ms)")
    print(f"Segment all images: {measured['batch_images']} images, {measured['boxes']} boxes in "
          f"{measured['batch_s']:.1f} s = {measured['batch_images'] / measured['batch_s']:.2f} images/s "
          "(target >= 3)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
