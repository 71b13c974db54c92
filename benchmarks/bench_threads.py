"""Compare CPU thread policies idle and with busy neighbours, interleaved in one run.

Each policy runs in its own worker process (OpenMP reads its environment once, when torch
loads), started once and kept: the model and data load once per policy. The parent then asks
the workers in turn, round by round, for one measurement each, so a change of load during the
run affects every policy alike. Every round is measured twice: on the machine as it is
("idle"), then with ``--neighbours`` processes ``yes > /dev/null`` running ("busy"), which are
stopped before the next round.

Measured per visit (milliseconds): ``set_image`` on a 480x640 photo, ``predict`` of 4 boxes
(the bundled checkpoint), and one training step (``hcviewer-train``'s step: 2 generated scenes
of 384x512, MobileNetV2 with the default taps, forward + backward + AdamW).

    .venv/bin/python benchmarks/bench_threads.py [--rounds 3] [--neighbours 2] [--skip-train] [--json OUT.json]

``--skip-train`` leaves the training step out (rounds of a few seconds: more rounds, tighter
ranges for the predictor).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "models" / "hcviewer-person-mobilenet_v2.safetensors"
PHOTO_SIZE = (480, 640)
BOXES = [[40, 60, 240, 460], [300, 100, 420, 380], [500, 20, 630, 300], [120, 200, 560, 470]]
OPENMP_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "HCVIEWER_THREADS")


@dataclass(frozen=True)
class Policy:
    name: str
    threads: int | None  # None: torch's own choice
    env: dict[str, str]
    use_hcviewer: bool = False  # apply hcviewer.threads.apply_thread_policy() (what the commands do)


def policies(cores: int) -> list[Policy]:
    return [
        Policy("torch default", None, {}),
        Policy("1 thread", 1, {}),
        Policy(f"{cores} threads, OMP_WAIT_POLICY=PASSIVE", cores, {"OMP_WAIT_POLICY": "PASSIVE"}),
        *(Policy(f"{cores} threads, GOMP_SPINCOUNT={spins}", cores, {"GOMP_SPINCOUNT": str(spins)})
          for spins in (1000, 10000, 100000)),
        Policy("hcviewer policy", None, {}, use_hcviewer=True),
    ]


# ------------------------------------------------------------------------------------ worker
def run_worker(policy: Policy, train: bool) -> None:
    """Load once, then answer one measurement per line read from stdin (JSON on stdout)."""
    os.environ.update(policy.env)  # before torch loads OpenMP
    if policy.use_hcviewer:
        from hcviewer.threads import apply_thread_policy

        description = apply_thread_policy().describe()
    import torch

    if policy.threads is not None:
        torch.set_num_threads(policy.threads)
    if not policy.use_hcviewer:
        description = f"{torch.get_num_threads()} threads"
    predictor, photo = _predictor_and_photo()
    trainer, samples = _trainer_and_samples() if train else (None, None)
    print(json.dumps({"ready": description}), flush=True)
    for line in sys.stdin:
        if line.strip() != "measure":
            break
        start = time.perf_counter()
        predictor.set_image(photo)
        mid = time.perf_counter()
        predictor.predict(BOXES)
        end = time.perf_counter()
        if trainer is not None:
            trainer._step(samples)
        done = time.perf_counter()
        print(json.dumps({"set_image": 1e3 * (mid - start), "predict": 1e3 * (end - mid),
                          "train_step": 1e3 * (done - end) if trainer is not None else None}), flush=True)


def _predictor_and_photo():
    import cv2
    from skimage import data

    from hcviewer.inference import HypercolumnPredictor

    predictor = HypercolumnPredictor.from_checkpoint(CHECKPOINT, "cpu")
    photo = cv2.resize(data.astronaut(), PHOTO_SIZE[::-1], interpolation=cv2.INTER_AREA)
    predictor.set_image(photo)  # warm-up: batch-norm folding, first-call allocations
    predictor.predict(BOXES)
    return predictor, photo


def _trainer_and_samples():
    import tempfile

    from hcviewer.data.synthetic import make_synthetic_dataset
    from hcviewer.train.trainer import TrainConfig, Trainer

    scenes = make_synthetic_dataset(2, seed=0, image_size=(384, 512))
    config = TrainConfig(max_side=512, batch_images=2, pretrained=False, device="cpu", warmup_steps=1)
    trainer = Trainer(config, scenes, None, tempfile.mkdtemp(prefix="bench_threads_"), progress=False)
    samples = [trainer.dataset[i] for i in range(len(trainer.dataset))]
    trainer._step(samples)  # warm-up
    return trainer, samples


# ------------------------------------------------------------------------------------ parent
class Worker:
    def __init__(self, policy: Policy, train: bool) -> None:
        env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES}
        self.policy = policy
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", policy.name, *([] if train else ["--skip-train"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env, cwd=REPO)
        self.description = json.loads(self.process.stdout.readline())["ready"]

    def measure(self) -> dict[str, float]:
        self.process.stdin.write("measure\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


class Neighbours:
    """``count`` processes ``yes > /dev/null``: each keeps one core busy."""

    def __init__(self, count: int) -> None:
        self.processes = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(count)]
        time.sleep(1.0)  # let the scheduler see them

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--neighbours", type=int, default=2, help="busy processes in the busy half of a round")
    parser.add_argument("--skip-train", action="store_true", help="time set_image and predict only")
    parser.add_argument("--json", default=None, help="also write every measurement here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    if args.worker:
        run_worker(next(p for p in policies(cores) if p.name == args.worker), train=not args.skip_train)
        return
    workers = [Worker(p, train=not args.skip_train) for p in policies(cores)]
    rows: list[dict] = []
    try:
        for round_index in range(args.rounds):
            for condition in ("idle", "busy"):
                neighbours = Neighbours(args.neighbours) if condition == "busy" else None
                try:
                    order = random.Random(round_index).sample(workers, len(workers))
                    for worker in order:
                        load = os.getloadavg()[0]
                        rows.append({"policy": worker.policy.name, "condition": condition, "round": round_index,
                                     "load": load, **worker.measure()})
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                finally:
                    if neighbours is not None:
                        neighbours.stop()
    finally:
        for worker in workers:
            worker.close()
    print_table(rows, workers, cores, args.neighbours)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def print_table(rows: list[dict], workers: list[Worker], cores: int, neighbours: int) -> None:
    import torch

    print(f"\n{cores} usable cores, torch {torch.__version__}; busy = {neighbours} x 'yes > /dev/null'; "
          "median (min-max) ms over rounds; load = 1-min load average at the measurements\n")
    print("| policy | threads | condition | set_image | predict 4 boxes | image + 4 boxes | train step | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for condition in ("idle", "busy"):
        for worker in workers:
            mine = [r for r in rows if r["policy"] == worker.policy.name and r["condition"] == condition]
            if not mine:
                continue
            cells = [_cell([r[k] for r in mine]) for k in ("set_image", "predict")]
            cells.append(_cell([r["set_image"] + r["predict"] for r in mine]))
            cells.append(_cell([r["train_step"] for r in mine]) if mine[0]["train_step"] is not None else "-")
            load = statistics.median(r["load"] for r in mine)
            print(f"| {worker.policy.name} | {worker.description} | {condition} | {' | '.join(cells)} | {load:.1f} |")


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


if __name__ == "__main__":
    main()
