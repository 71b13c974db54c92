"""How many CPU threads torch uses: one policy for the app, ``hcviewer predict`` and
``hcviewer-train``, decided once at start-up.

torch's default (one OpenMP thread per core, each spinning while it waits for the others) is
fast on an idle machine and collapses as soon as another process wants a core: a spinning
thread keeps its core from the thread everyone is waiting for (on 2 cores with one busy
neighbour, ``set_image`` took 10x longer). What each policy costs, idle and busy, is measured
by ``benchmarks/bench_threads.py`` and written in docs/performance.md (section Thread policy).

Who decides, first match wins: ``--threads N`` on the command line, then the environment
variable ``HCVIEWER_THREADS``, then ``OMP_NUM_THREADS`` (the usual variable, respected when a
user sets it), then :func:`default_threads`.

Call :func:`apply_thread_policy` before the first tensor operation and before any worker thread
runs torch: torch gives each new thread the count set here when that thread first computes.
This module does not import torch: called before torch is loaded it sets ``OMP_NUM_THREADS``,
``OMP_WAIT_POLICY`` and, for the trainer, ``GOMP_SPINCOUNT``, which OpenMP reads once, when
torch loads it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

ENV_VAR = "HCVIEWER_THREADS"
# OpenMP threads that finished their share sleep at once instead of spinning for a core.
WAIT_POLICY = "PASSIVE"
# The trainer's threads spin about 10 microseconds first (libgomp, the runtime of torch's Linux
# wheels: GOMP_SPINCOUNT overrides the wait policy's spin count there), which catches the next
# of a training step's many small operations without a wake-up: 1.14-1.20x faster steps on an
# idle machine, no slower with two busy neighbours. The app and ``hcviewer predict`` sleep at
# once: with the spin the predictor got faster idle but not busy, and its latency with two busy
# neighbours rose from 1.7-1.8x to 1.9-2.0x its idle latency (docs/performance.md, Thread policy).
SPIN_COUNT = "1000"


@dataclass(frozen=True)
class ThreadPolicy:
    threads: int  # torch intra-op threads
    source: str  # what decided it: "--threads", "HCVIEWER_THREADS", "OMP_NUM_THREADS" or "default"

    def describe(self) -> str:
        return f"{self.threads} CPU thread{'s' if self.threads != 1 else ''} ({self.source})"


class ThreadsError(ValueError):
    """A thread count that is not a positive whole number; the message names where it came from."""


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads(cores: int | None = None) -> int:
    """All usable cores (see the module docstring for why this holds under load)."""
    return cores if cores is not None else usable_cores()


def parse_threads(text: str, source: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ThreadsError(f"{source} must be a whole number of threads >= 1, got {text!r}")
    return value


def decide_threads(requested: int | None = None, environ: Mapping[str, str] | None = None,
                   cores: int | None = None) -> ThreadPolicy:
    """The thread count and what decided it (see the module docstring for the order)."""
    environ = os.environ if environ is None else environ
    if requested is not None:
        return ThreadPolicy(parse_threads(str(requested), "--threads"), "--threads")
    for name in (ENV_VAR, "OMP_NUM_THREADS"):
        text = environ.get(name, "").strip()
        if text:
            # OMP_NUM_THREADS may list one count per nesting level ("4,2"): the first is torch's.
            first = text.split(",")[0] if name == "OMP_NUM_THREADS" else text
            return ThreadPolicy(parse_threads(first, name), name)
    return ThreadPolicy(default_threads(cores), "default")


def apply_thread_policy(requested: int | None = None, short_spin: bool = False) -> ThreadPolicy:
    """Decide the thread count and give it to torch. Raises ThreadsError for a bad count.

    Before torch is loaded this only sets the environment that torch and OpenMP read when they
    load (in whichever thread imports torch first: the app loads it in its worker): the thread
    count and passive waiting, after a short spin with ``short_spin`` (the trainer, see
    ``SPIN_COUNT``); a wait policy or spin count the user set is kept. Afterwards it calls
    ``torch.set_num_threads``."""
    policy = decide_threads(requested)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(policy.threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(policy.threads)
        os.environ.update(openmp_waiting(os.environ, short_spin))
    return policy


def openmp_waiting(environ: Mapping[str, str], short_spin: bool = False) -> dict[str, str]:
    """The OpenMP variables of the policy's waiting that ``environ`` lacks: passive waiting,
    after a short spin with ``short_spin`` (``SPIN_COUNT``); none that would override a wait
    policy or spin count set in ``environ``."""
    waiting = {}
    if short_spin and "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        waiting["GOMP_SPINCOUNT"] = SPIN_COUNT
    if "OMP_WAIT_POLICY" not in environ:
        waiting["OMP_WAIT_POLICY"] = WAIT_POLICY
    return waiting


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help=f"CPU threads for the network (default: ${ENV_VAR}, else $OMP_NUM_THREADS, "
                             "else the thread policy of docs/performance.md)")


def _positive_int(text: str) -> int:
    try:
        return parse_threads(text, "--threads")
    except ThreadsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
