"""Peak memory of ``hcviewer predict`` on one photo with one box far larger than the photo: the
work that depends on a box's size (edge refinement's crop, the pasted mask) must be bounded by
the image, so that no accepted box can take more memory than a box the size of the photo.

    .venv/bin/python benchmarks/bench_box_memory.py PHOTO.jpg        # e.g. a 640 x 480 COCO photo

Each box runs in its own ``hcviewer predict`` process (default checkpoint, edge refinement on);
its peak resident memory is that process's ``ru_maxrss`` from start to exit (``os.wait4``). A
box whose run fails is reported with its exit status.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def boxes_for(width: int, height: int) -> dict[str, tuple[float, float, float, float]]:
    return {
        "the photo's own box": (0, 0, width, height),
        "0,0,16777216,1": (0, 0, 16777216, 1),
        "+-20000": (-20000, -20000, 20000, 20000),
        "+-10000": (-10000, -10000, 10000, 10000),
    }


def peak_rss_of_predict(photo: Path, box: tuple[float, float, float, float], folder: Path) -> tuple[float, int]:
    """(peak RSS in GB, exit status) of one ``hcviewer predict`` process, start to exit."""
    boxes = folder / "boxes.csv"
    boxes.write_text(f"image,x0,y0,x1,y1,label\n{photo.name},{','.join(str(v) for v in box)},person\n")
    command = [sys.executable, "-m", "hcviewer.app.cli", "predict", str(photo), "--boxes", str(boxes),
               "--out", str(folder / "results.json"), "--restart"]
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own usage (ru_maxrss in KiB on Linux)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return usage.ru_maxrss * 1024 / 1e9, child.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", type=Path)
    args = parser.parse_args()
    from PIL import Image

    with Image.open(args.photo) as image:
        width, height = image.size
    print(f"{args.photo} ({width} x {height}), hcviewer predict with edge refinement, peak RSS per box:")
    with tempfile.TemporaryDirectory() as folder:
        for name, box in boxes_for(width, height).items():
            peak, status = peak_rss_of_predict(args.photo.resolve(), box, Path(folder))
            print(f"  {name:>20}: {peak:5.2f} GB (exit {status})", flush=True)


if __name__ == "__main__":
    main()
