"""GUI responsiveness while the model works: the longest gap between ticks of a 5 ms GUI timer
(a heartbeat) while the worker thread runs the trunk and predicts batches of boxes.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui_responsiveness.py \
        [--checkpoint models/hcviewer-person-mobilenet_v2.safetensors] [--boxes 32] [--rounds 5]

Every gap is the time the GUI event loop could not run: a click or a repaint waiting that long.
The target is a longest gap <= 50 ms. Without ``--checkpoint`` the bundled checkpoint is used
when present, else a random MobileNetV2 person model of the same layout (same cost).
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
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from hcviewer.app.worker import BoxRequest, ModelService  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "hcviewer-person-mobilenet_v2.safetensors"


def random_checkpoint(folder: Path) -> Path:
    from hcviewer.modeling import build_person_model, save_checkpoint

    return save_checkpoint(folder / "random.safetensors", build_person_model(), training={"note": "benchmark"})


def sample_images() -> list[np.ndarray]:
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee(), data.stereo_motorcycle()[0]]


def random_boxes(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    h, w = shape
    x0 = rng.uniform(0, w * 0.7, n)
    y0 = rng.uniform(0, h * 0.7, n)
    return np.stack([x0, y0, x0 + rng.uniform(30, w * 0.3, n), y0 + rng.uniform(30, h * 0.3, n)], 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--boxes", type=int, default=32, help="boxes per request")
    parser.add_argument("--rounds", type=int, default=5, help="requests per image")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    app = QApplication.instance() or QApplication(sys.argv)
    tmp = tempfile.TemporaryDirectory()
    checkpoint = args.checkpoint or (BUNDLED if BUNDLED.exists() else random_checkpoint(Path(tmp.name)))
    service = ModelService()
    loaded: list = []
    service.worker.modelLoaded.connect(loaded.append)
    service.worker.modelFailed.connect(loaded.append)
    service.load(str(checkpoint), args.device)
    while not loaded:
        app.processEvents()
        time.sleep(0.01)
    info = loaded[0]
    if isinstance(info, str):
        print(info, file=sys.stderr)
        return 1

    images = sample_images()
    rng = np.random.default_rng(0)
    expected = len(images) * args.rounds
    answers: list[float] = []
    service.worker.predicted.connect(lambda r: answers.append(r.prediction.seconds + r.trunk_seconds))
    service.worker.failed.connect(lambda m: print("worker error:", m))

    gaps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append((now - last[0]) * 1000)
        last[0] = now

    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(tick)
    heartbeat.start()
    start = time.perf_counter()
    for index, image in enumerate(images):
        key = f"image-{index}"
        service.show_image(key, image)
        for _ in range(args.rounds):
            boxes = random_boxes(rng, image.shape[:2], args.boxes)
            service.predict(BoxRequest(key, list(range(len(boxes))), boxes))
        # Let this image's requests finish before the next image replaces it (else they drop).
        while len(answers) < (index + 1) * args.rounds:
            app.processEvents()
            time.sleep(0.001)
    busy = time.perf_counter() - start
    heartbeat.stop()
    service.shutdown()
    gaps_ms = np.array(gaps[1:])
    print(f"checkpoint: {checkpoint.name} ({', '.join(info.taps)}), device: {info.device}")
    print(f"{len(answers)}/{expected} requests of {args.boxes} boxes on {len(images)} images "
          f"(trunk once per image) in {busy:.2f} s of worker time")
    print(f"heartbeat gaps over {len(gaps_ms)} ticks: longest {gaps_ms.max():.1f} ms, "
          f"99th percentile {np.percentile(gaps_ms, 99):.1f} ms, median {np.median(gaps_ms):.1f} ms "
          f"(target: longest <= 50 ms)")
    del app
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
