"""How OpenMP's waiting threads affect ``hcviewer-train``'s step: passive waiting against a short
spin, interleaved step by step in one run.

One worker process per setting (OpenMP reads its environment once, when torch loads), each
training this tree's step (``bench_training.py``'s worker: the bundled model's recipe, the same
prepared batches) with ``--threads`` threads; the driver asks them in turn, batch by batch, the
order rotating, so that a change of load hits all alike. The first pass over the batches (first
touch of the process's memory) is left out of the figures.

    .venv/bin/python benchmarks/bench_wait_policy.py [--threads 2] [--rounds 3] [--busy]

``--busy`` runs two ``yes > /dev/null`` neighbours for the whole run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from bench_training import REPO, Worker

from hcviewer.threads import SPIN_COUNT, WAIT_POLICY, openmp_waiting

SETTINGS = {
    f"passive (OMP_WAIT_POLICY={WAIT_POLICY})": {"OMP_WAIT_POLICY": WAIT_POLICY},
    f"short spin (GOMP_SPINCOUNT={SPIN_COUNT})": {"GOMP_SPINCOUNT": SPIN_COUNT},
    "hcviewer-train's policy (both)": openmp_waiting({}, short_spin=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the batches (the first is left out)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--busy", action="store_true", help="two 'yes > /dev/null' neighbours")
    args = parser.parse_args()
    worker_args = argparse.Namespace(images=args.images, synthetic=0, threads=args.threads, image_size=640)
    neighbours = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(2 if args.busy else 0)]
    try:
        batches = Path(tempfile.mkdtemp()) / "batches.pt"
        base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        workers = []
        for name, env in SETTINGS.items():
            os.environ.clear()
            os.environ.update({**base, **env})
            workers.append(Worker(name, REPO, worker_args, batches))
        os.environ.clear()
        os.environ.update(base)
        count = workers[0].info["batches"]
        for round_index in range(args.rounds):
            for batch in range(count):
                turn = (round_index * count + batch) % len(workers)
                for worker in workers[turn:] + workers[:turn]:
                    worker.step(batch)
    finally:
        for process in neighbours:
            process.kill()
    print(f"{args.threads} threads per worker; {'two busy neighbours' if args.busy else 'no neighbours started'}; "
          f"load average at the end {os.getloadavg()[0]:.2f}")
    print("| setting | images/s (passes 2 on) | seconds |\n| --- | ---: | ---: |")
    for worker in workers:
        steps = worker.steps[count:]
        seconds = sum(s["seconds"] for s in steps)
        print(f"| {worker.name} | {sum(s['images'] for s in steps) / seconds:.3f} | {seconds:.1f} |")
        worker.close()


if __name__ == "__main__":
    main()
