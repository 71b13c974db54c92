"""Training speed: images per second of ``hcviewer-train``'s step, this tree against a baseline.

Each code version runs in its own worker process (a git revision is extracted to a temporary
folder); the driver hands the workers the same batches in turn, step by step and alternating
which goes first, so that a change of machine load hits both alike. A step is the trainer's own
``Trainer._step`` (forward, losses, backward, optimizer step) on batches prepared beforehand;
preparing a batch (augmentation, targets) is timed separately, once. The batches are prepared
once, by this tree's data pipeline, and every worker trains on those very tensors: a revision
whose augmentation made larger images (before session 10 the scale jitter did) would otherwise
be timed on other work. Wall-clock and CPU time (``time.process_time``: what the step itself
used of the CPU, less sensitive to other processes on a shared machine) are both reported.
Every worker waits as ``hcviewer-train`` does (this tree's ``hcviewer/threads.py``: passive
waiting after a short spin) unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set.

    .venv/bin/python benchmarks/bench_training.py --baseline 5a368b4
    .venv/bin/python benchmarks/bench_training.py --synthetic 16 --quick

Data: by default the bundled model's recipe (models/README.md): ``../shared/data/coco-mini-train``
(instances + person keypoints) and ``../shared/data/pelota-pose``, training split of
``--val-fraction 0.2 --split-seed 0``, image size 640, 3 boxes per object, layer dropout 0.2,
MobileNetV2 with taps s4, s8, s16, top, grid 5, 50 x 50 output, figure-ground + keypoints; the
whole trunk trained (``--freeze-trunk``, which the bundled recipe adds, is newer than the
baselines and would be another recipe).
``--images N`` images of that split are used (drawn with a fixed seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The shared photos beside the project (a worktree elsewhere: HCVIEWER_DATA).
DATA = Path(os.environ.get("HCVIEWER_DATA", REPO.parent / "shared" / "data"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="git revision to compare against (default: this tree alone)")
    parser.add_argument("--images", type=int, default=16, help="images of the recipe's training split")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="N generated scenes (with parts) instead of the shared photos")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the batches")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--quick", action="store_true", help="4 images, 1 round")
    parser.add_argument("--image-size", type=int, default=640, help="training image size (long side)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # tree path of a worker
    parser.add_argument("--batches-file", default=None, help=argparse.SUPPRESS)  # shared prepared batches
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds = 4, 1
    return args


# -- worker ---------------------------------------------------------------------------------------


def recipe_images(args: argparse.Namespace):
    """The training images of the recipe (or generated scenes), as an AnnotatedDataset."""
    from hcviewer.data.records import concatenate, split_images

    if args.synthetic:
        from hcviewer.data.synthetic import make_synthetic_dataset

        return make_synthetic_dataset(args.synthetic, seed=0)
    from hcviewer.data.coco import read_coco

    coco, pelota = DATA / "coco-mini-train", DATA / "pelota-pose"
    sources = [read_coco([coco / "annotations/instances_train2017.json",
                          coco / "annotations/person_keypoints_train2017.json"], coco / "train2017"),
               read_coco([pelota / "annotations/person_keypoints_train2017.json"], pelota / "train2017")]
    return concatenate([split_images(source, 0.2, 0)[0] for source in sources])


def run_worker(args: argparse.Namespace) -> None:
    """Build the trainer of the tree on sys.path, prepare the batches, then answer step requests
    (one index per line on stdin, one JSON line per step on stdout)."""
    import random

    import torch

    import hcviewer
    from hcviewer.data.training import TrainingSample
    from hcviewer.train.trainer import Trainer, TrainConfig, freeze_batch_norm

    train = recipe_images(args)
    random.Random(0).shuffle(train.images)
    train.images = train.images[:args.images]
    tasks = ("figure_ground", "parts", "keypoints") if args.synthetic else ("figure_ground", "keypoints")
    config = TrainConfig(backbone="mobilenet_v2", taps=("s4", "s8", "s16", "top"), grid_size=5, output_size=50,
                         tasks=tasks, max_side=args.image_size, boxes_per_object=3, layer_dropout=0.2,
                         device="cpu", pretrained=True)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, train, None, out, progress=False)
        torch.set_num_threads(args.threads)
        batches_file = Path(args.batches_file)
        prepare = float("nan")
        if batches_file.is_file():  # another worker prepared them: train on the same tensors
            samples = [TrainingSample(**fields) for fields in torch.load(batches_file)]
        else:
            start = time.perf_counter()
            samples = [trainer.dataset[i] for i in range(len(trainer.dataset))]
            prepare = (time.perf_counter() - start) / max(1, len(samples))
            torch.save([dataclasses.asdict(s) for s in samples], batches_file)
        batches = [samples[i:i + config.batch_images] for i in range(0, len(samples), config.batch_images)]
        trainer.network.train()  # as Trainer._train_epoch does
        freeze_batch_norm(trainer.model)
        print(json.dumps({"batches": len(batches), "prepare_seconds_per_image": prepare, "code": hcviewer.__file__,
                          "boxes": [sum(len(s.boxes) for s in b) for b in batches]}), flush=True)
        for line in sys.stdin:
            batch = batches[int(line)]
            start, cpu_start = time.perf_counter(), time.process_time()
            losses = trainer._step(batch)
            print(json.dumps({"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
                              "images": len(batch),
                              "loss": sum(losses.values())}), flush=True)


# -- driver ---------------------------------------------------------------------------------------


class Worker:
    def __init__(self, name: str, tree: Path, args: argparse.Namespace, batches_file: Path) -> None:
        self.name = name
        # hcviewer-train's way of waiting (this tree's hcviewer/threads.py) for every tree alike,
        # unless the environment sets a way of waiting (bench_wait_policy.py compares them).
        from hcviewer.threads import openmp_waiting

        chosen = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
        waiting = {} if chosen else openmp_waiting({}, short_spin=True)
        env = {**os.environ, **waiting, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads),
               "MKL_NUM_THREADS": str(args.threads)}
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree),
                   "--images", str(args.images), "--synthetic", str(args.synthetic), "--threads", str(args.threads),
                   "--image-size", str(args.image_size), "--batches-file", str(batches_file)]
        self.process = subprocess.Popen(command, env=env, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        self.info = self._read()
        self.steps: list[dict] = []

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} stopped (see its error output above)")
        return json.loads(line)

    def step(self, index: int) -> None:
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        self.steps.append({**self._read(), "batch": index})

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def extract_revision(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "hcviewer"], check=True,
                             capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def summary(worker: Worker) -> dict:
    images = sum(s["images"] for s in worker.steps)
    return {"images_per_second": images / sum(s["seconds"] for s in worker.steps),
            "images_per_cpu_second": images / sum(s["cpu_seconds"] for s in worker.steps),
            "median_step": statistics.median(s["seconds"] for s in worker.steps),
            "loss": [s["loss"] for s in worker.steps]}


def main() -> None:
    args = parse_args()
    if args.worker:
        sys.path.insert(0, args.worker)
        run_worker(args)
        return
    import torch  # only for the version line

    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"{os.cpu_count()} CPUs; torch {torch.__version__}; {args.threads} thread(s) per worker", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        batches_file = Path(tmp) / "batches.pt"  # written by the first worker, read by the others
        workers = [Worker("this tree", REPO, args, batches_file)]
        if args.baseline:
            tree = extract_revision(args.baseline, Path(tmp) / "baseline")
            workers.append(Worker(f"baseline {args.baseline}", tree, args, batches_file))
        info = workers[0].info
        for worker in workers:
            print(f"{worker.name}: {worker.info['code']}")
        print(f"{info['batches']} batches of 2 images, boxes per batch {info['boxes']}; preparing a batch: "
              f"{info['prepare_seconds_per_image'] * 2:.2f} s", flush=True)
        for round_index in range(args.rounds):
            for batch in range(info["batches"]):
                for worker in (workers if (round_index + batch) % 2 == 0 else workers[::-1]):
                    worker.step(batch)
            print(f"round {round_index + 1}: " + ", ".join(
                f"{w.name} {sum(s['seconds'] for s in w.steps[-info['batches']:]):.1f} s" for w in workers), flush=True)
        for worker in workers:
            worker.close()
    results = {w.name: summary(w) for w in workers}
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    print("| code | images/s (wall clock) | images per CPU-second | median step (s) |")
    print("| --- | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {r['images_per_second']:.3f} | {r['images_per_cpu_second']:.3f} | {r['median_step']:.2f} |")
    if len(workers) == 2:
        new, old = results[workers[0].name], results[workers[1].name]
        print(f"\nspeed-up: {new['images_per_second'] / old['images_per_second']:.2f}x (wall clock), "
              f"{new['images_per_cpu_second'] / old['images_per_cpu_second']:.2f}x (CPU time)")
        gaps = [abs(a - b) / abs(b) for a, b in zip(new["loss"], old["loss"])]
        print(f"losses step by step: largest relative difference {max(gaps):.2e} over {len(gaps)} steps "
              f"(first {new['loss'][0]:.5f} vs {old['loss'][0]:.5f}, last {new['loss'][-1]:.5f} vs {old['loss'][-1]:.5f})")


if __name__ == "__main__":
    main()
