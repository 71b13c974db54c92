"""The image reader and the box-file reload under hostile or huge inputs (issue 10):

- a 12000 x 9000 JPEG decoded whole and reduced for a model that needs ``--max-side`` pixels
  (``hcviewer.imageio.read_image(path, max_side)``): seconds and peak resident memory;
- a 30000 x 30000 1-bit PNG of about 110 KB (a decompression bomb) refused from its header;
- reloading a COCO box file of N boxes on one image into the app's document.

    .venv/bin/python benchmarks/bench_image_reading.py [--max-side 640] [--boxes 1000 2000 4000]

Each measurement runs in a fresh Python process and reports its own peak memory (VmHWM, Linux).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PEAK = """
def peak_mb():  # VmHWM: this program's own peak (ru_maxrss would include the parent's, forked)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

DECODE = PEAK + """
import sys, time
from hcviewer.imageio import read_image
path, max_side = sys.argv[1], (int(sys.argv[2]) or None)
start = time.perf_counter()
rgb, scale = read_image(path, max_side=max_side)
seconds = time.perf_counter() - start
print(f"{rgb.shape[1]}x{rgb.shape[0]} scale {scale}: {seconds:.2f} s, peak RSS {peak_mb():.0f} MB")
"""

BOMB = PEAK + """
import sys, time
from hcviewer.imageio import ImageReadError, read_image
start = time.perf_counter()
try:
    read_image(sys.argv[1])
except ImageReadError as error:
    message = str(error)
print(f"refused in {(time.perf_counter() - start) * 1000:.1f} ms, peak RSS {peak_mb():.0f} MB: {message[:90]}...")
"""

RELOAD = """
import json, sys, time
from pathlib import Path
from hcviewer.annotation.document import Project
folder = Path(sys.argv[1])
project = Project(recovery_dir=folder / "recovery")
project.add_images([folder / "a.png"])
times = []
for _ in range(2):
    start = time.perf_counter()
    added = project.load_boxes(folder / "boxes.json")
    times.append((time.perf_counter() - start, added))
print(f"first load {times[0][0]:.2f} s ({times[0][1]} added), reload {times[1][0]:.2f} s ({times[1][1]} added)")
"""


def run(code: str, *args: str) -> str:
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    return result.stdout.strip() or result.stderr.strip().splitlines()[-1]


def write_photo(folder: Path, width: int = 12000, height: int = 9000) -> Path:
    import cv2
    import numpy as np

    image = np.random.default_rng(0).integers(60, 200, (height // 8, width // 8, 3), dtype=np.uint8)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    path = folder / f"photo_{width}x{height}.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def write_box_file(folder: Path, count: int) -> None:
    import cv2
    import numpy as np

    cv2.imwrite(str(folder / "a.png"), np.zeros((400, 600, 3), np.uint8))
    corners = np.random.default_rng(0).uniform(0, 500, (count, 2)).round(2).tolist()
    (folder / "boxes.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 600, "height": 400}],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [x, y, 20, 30]}
                        for i, (x, y) in enumerate(corners)],
        "categories": [{"id": 1, "name": "person"}]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-side", type=int, default=640)
    parser.add_argument("--boxes", type=int, nargs="*", default=[1000, 2000, 4000])
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from test_image_reading import write_bomb_png

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photo = write_photo(folder)
        print(f"{photo.name} ({photo.stat().st_size / 1e6:.1f} MB)")
        print(f"  whole:               {run(DECODE, str(photo), '0')}")
        print(f"  max_side {args.max_side:<5}:      {run(DECODE, str(photo), str(args.max_side))}")
        bomb = write_bomb_png(folder / "bomb.png")
        print(f"{bomb.name} 30000x30000 ({bomb.stat().st_size / 1e3:.0f} KB): {run(BOMB, str(bomb))}")
        for count in args.boxes:
            write_box_file(folder, count)
            print(f"box file of {count} boxes on one image: {run(RELOAD, str(folder))}")


if __name__ == "__main__":
    main()
