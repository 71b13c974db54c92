"""The hypercolumn predictor against a fair bare trunk and its peers, interleaved photo by photo.

Every model is built first, in one process; then, round after round, each photo goes through
every model in turn (the order rotates from photo to photo), so that a change of machine load
during the run hits all models alike. Per model and photo:

- trunk: once per image (hypercolumn ``set_image``; the bare trunk's forward; Mask R-CNN's
  transform + ResNet-50-FPN; SAM's ``set_image`` with the ViT-B image encoder);
- heads: the photo's 4 boxes from the cached trunk features (hypercolumn ``predict``; Mask
  R-CNN's RoIAlign + mask head with the boxes as proposals; SAM's prompt encoder + mask decoder
  with the boxes as prompts), then the same boxes again. Box-level outputs, no paste-back.

The **fair bare trunk** is torchvision's MobileNetV2 forward (features, pooling, classifier) with
the predictor's own optimisations: batch norm folded into the convolutions
(``torch.fx.experimental.optimization.fuse``), channels-last layout, the same resizing and
normalisation, under ``torch.inference_mode``. Beside each trunk's time the table gives its
achieved GFLOP/s (its FLOPs counted by ``torch.utils.flop_counter`` on the photo) and the run
prints the GFLOP/s of a 2048 x 2048 float32 matmul, timed in the same rounds: the machine's
practical limit. The load average is printed at the start and the end.

``--busy`` starts two ``yes > /dev/null`` neighbours for the run (and stops them); ``--both``
runs idle, then busy, and compares. Networks have random weights (timing does not depend on
them); the thread count is the app's policy (``hcviewer.threads``) unless ``--threads``.

    .venv/bin/python benchmarks/bench_predictor.py            # idle, 4 photos x 5 rounds
    .venv/bin/python benchmarks/bench_predictor.py --both
    .venv/bin/python benchmarks/bench_predictor.py --quick    # 2 photos x 1 round: does it work
    .venv/bin/python benchmarks/bench_predictor.py --threads 2 --skip vgg16 alexnet maskrcnn sam \
        --trunks efficientnet_lite0 efficientnet_lite1 efficientnet_lite2   # trunk choice vs mobilenet_v2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "coco-mini-train"
BOXES_PER_IMAGE = 4
MIRRORED = "hypercolumn mobilenet_v2"  # the default: answers averaged with the mirror image's
HYPERCOLUMN = "hypercolumn mobilenet_v2, no mirror"  # one trunk run per image, as the targets count
BARE = "bare MobileNetV2 forward (BN folded, channels-last)"

# The targets (mobilenet_v2, 480x640 photo, 4 boxes), of the predictor's cost over one
# trunk run; mirror averaging's second run is reported beside them.
TARGET_TRUNK_RATIO = 1.1  # new image + 4 boxes / fair bare trunk
TARGET_CACHED_MS = 20.0
TARGET_BUSY_RATIO = 2.0  # busy / idle, new image + 4 boxes


@dataclass
class Sample:
    name: str
    image: "object"  # [H, W, 3] uint8 RGB numpy array
    boxes: "object"  # [4, 4] float32 (x0, y0, x1, y1) image pixels


@dataclass
class Contender:
    """One model: ``trunk(sample)`` once per image; ``heads(sample)`` for its boxes (None: a
    trunk-only reference)."""

    name: str
    trunk: Callable[[Sample], object]
    heads: Callable[[Sample], object] | None = None
    flops: dict[str, float] = field(default_factory=dict)  # trunk FLOPs per photo name


@dataclass
class Timing:
    """Milliseconds, one entry per (round, photo)."""

    trunk: list[float] = field(default_factory=list)
    heads: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)
    gflops: list[float] = field(default_factory=list)  # achieved by the trunk


def spread(values: list[float], digits: int = 1) -> str:
    """'median (min-max)'."""
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


# --- data --------------------------------------------------------------------------------------


def load_coco_samples(data: Path, count: int) -> list[Sample]:
    """Photos with at least four non-crowd objects, 480x640 ones first (the targets' size), by
    id; the four largest ground-truth boxes of each."""
    import cv2
    import numpy as np

    annotations = json.loads((data / "annotations" / "instances_train2017.json").read_text())
    boxes_by_image: dict[int, list[list[float]]] = {}
    for ann in annotations["annotations"]:
        if not ann["iscrowd"]:
            boxes_by_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    candidates = [img for img in annotations["images"] if len(boxes_by_image.get(img["id"], [])) >= BOXES_PER_IMAGE]
    candidates.sort(key=lambda img: ((img["height"], img["width"]) != (480, 640), img["id"]))
    samples = []
    for img in candidates[:count]:
        bgr = cv2.imread(str(data / "train2017" / img["file_name"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"{data / 'train2017' / img['file_name']}: cannot be read as an image")
        xywh = sorted(boxes_by_image[img["id"]], key=lambda b: -b[2] * b[3])[:BOXES_PER_IMAGE]
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in xywh], np.float32)
        samples.append(Sample(img["file_name"], cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), boxes))
    return samples


def load_skimage_samples(count: int) -> list[Sample]:
    """Without the shared data: scikit-image's sample photos, four fixed boxes each."""
    import numpy as np
    from skimage import data as skdata

    photos = [("astronaut", skdata.astronaut), ("coffee", skdata.coffee), ("chelsea", skdata.chelsea),
              ("rocket", skdata.rocket)]
    fractions = [(0.2, 0.1, 0.8, 0.9), (0.05, 0.3, 0.45, 0.95), (0.5, 0.05, 0.95, 0.6), (0.3, 0.4, 0.7, 0.7)]
    samples = []
    for name, load in photos[:count]:
        image = np.ascontiguousarray(load()[..., :3])
        h, w = image.shape[:2]
        boxes = np.array([[x0 * w, y0 * h, x1 * w, y1 * h] for x0, y0, x1, y1 in fractions], np.float32)
        samples.append(Sample(name, image, boxes))
    return samples


# --- models ------------------------------------------------------------------------------------


def hypercolumn(backbone: str, device, mirror: bool = True) -> Contender:
    """The bundled person model's layout with all three tasks (figure-ground, 3 parts, 17
    keypoints), 5x5 grid, 50x50 output; answers averaged with the mirror image's unless
    ``mirror`` is False."""
    from hcviewer.inference import HypercolumnPredictor
    from hcviewer.modeling import build_person_model

    predictor = HypercolumnPredictor(build_person_model(backbone, grid_size=5, parts=("head", "torso", "legs")),
                                     device=device, mirror=mirror)
    name = f"hypercolumn {backbone}" + ("" if mirror else ", no mirror")
    return Contender(name, lambda s: predictor.set_image(s.image),
                     lambda s: predictor.predict(s.boxes))


def bare_mobilenet(device) -> Contender:
    import torch
    import torchvision
    from torch.fx.experimental.optimization import fuse

    from hcviewer.modeling import HypercolumnConfig
    from hcviewer.modeling.preprocess import resize_for_model

    config = HypercolumnConfig()
    model = fuse(torchvision.models.mobilenet_v2(weights=None).eval()).to(device, memory_format=torch.channels_last)
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)

    def forward(sample: Sample) -> None:  # what HypercolumnPredictor.set_image does, then the network
        resized, _ = resize_for_model(sample.image, config.max_image_side)
        tensor = torch.from_numpy(resized).to(device).permute(2, 0, 1)[None].float().div_(255)
        with torch.inference_mode():
            model(((tensor - mean) / std).contiguous(memory_format=torch.channels_last))

    return Contender(BARE, forward)


def mask_rcnn(device) -> Contender:
    """Mask R-CNN (ResNet-50-FPN, torchvision's eager model) predicting masks for given boxes:
    the boxes replace the RPN's proposals and go straight to the mask branch."""
    import torch
    import torchvision
    from torchvision.models.detection.roi_heads import maskrcnn_inference

    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval().to(device)
    state: dict[str, object] = {}

    def trunk(sample: Sample) -> None:
        tensor = torch.from_numpy(sample.image).to(device).permute(2, 0, 1).float().div_(255)
        with torch.inference_mode():
            images, _ = model.transform([tensor])
            state["features"] = model.backbone(images.tensors)
        state["image_sizes"] = images.image_sizes
        state["scale"] = images.image_sizes[0][0] / sample.image.shape[0]

    def heads(sample: Sample) -> None:
        with torch.inference_mode():
            proposals = [torch.from_numpy(sample.boxes).to(device) * state["scale"]]
            pooled = model.roi_heads.mask_roi_pool(state["features"], proposals, state["image_sizes"])
            logits = model.roi_heads.mask_predictor(model.roi_heads.mask_head(pooled))
            maskrcnn_inference(logits, [torch.ones(len(sample.boxes), dtype=torch.int64, device=device)])[0].cpu()

    return Contender("Mask R-CNN R50-FPN, given boxes", trunk, heads)


def sam(device) -> Contender | None:
    """Segment Anything ViT-B (``segment-anything``, if installed): set_image, boxes as prompts."""
    try:
        from segment_anything import SamPredictor, sam_model_registry
    except ImportError:
        return None
    import torch

    predictor = SamPredictor(sam_model_registry["vit_b"]().eval().to(device))  # random init

    def trunk(sample: Sample) -> None:
        with torch.inference_mode():
            predictor.set_image(sample.image)

    def heads(sample: Sample) -> None:
        boxes = predictor.transform.apply_boxes_torch(torch.from_numpy(sample.boxes).to(device), sample.image.shape[:2])
        with torch.inference_mode():
            predictor.predict_torch(None, None, boxes=boxes, multimask_output=False)[0].cpu()

    return Contender("SAM ViT-B, boxes as prompts", trunk, heads)


def count_trunk_flops(contender: Contender, samples: list[Sample]) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    for sample in samples:
        with FlopCounterMode(display=False) as counter:
            contender.trunk(sample)
        contender.flops[sample.name] = float(counter.get_total_flops())


def matmul_gflops(device, size: int = 2048, repeats: int = 3) -> float:
    """Best of a few float32 [size, size] @ [size, size] products, in GFLOP/s."""
    import torch

    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    best = float("inf")
    for _ in range(repeats):
        seconds = timed_ms(device, lambda: a @ b) / 1000
        best = min(best, seconds)
    return 2 * size**3 / best / 1e9


def timed_ms(device, run: Callable[[], object]) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000


# --- the run -----------------------------------------------------------------------------------


@contextlib.contextmanager
def busy_neighbours(count: int):
    """``count`` processes of ``yes > /dev/null`` for the duration (none for 0)."""
    neighbours = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(count)]
    try:
        yield
    finally:
        for process in neighbours:
            process.terminate()
            process.wait()


def run_interleaved(contenders: list[Contender], samples: list[Sample], rounds: int, device) -> tuple[dict, list[float]]:
    """Timings per contender and the matmul GFLOP/s, one measurement per (round, photo)."""
    timings = {c.name: Timing() for c in contenders}
    matmul = []
    step = 0
    for _ in range(rounds):
        for sample in samples:
            matmul.append(matmul_gflops(device))
            order = contenders[step % len(contenders):] + contenders[:step % len(contenders)]
            step += 1
            for contender in order:
                timing = timings[contender.name]
                ms = timed_ms(device, lambda: contender.trunk(sample))
                timing.trunk.append(ms)
                if contender.flops:
                    timing.gflops.append(contender.flops[sample.name] / ms / 1e6)
                if contender.heads is not None:
                    timing.heads.append(timed_ms(device, lambda: contender.heads(sample)))
                    timing.cached.append(timed_ms(device, lambda: contender.heads(sample)))
    return timings, matmul


def new_image(timing: Timing) -> list[float]:
    """Trunk + heads per (round, photo), ms."""
    return [t + h for t, h in zip(timing.trunk, timing.heads)] if timing.heads else list(timing.trunk)


def report(title: str, timings: dict[str, Timing], matmul: list[float], loads: tuple) -> str:
    bare = statistics.median(timings[BARE].trunk) if BARE in timings else float("nan")
    lines = [f"### {title}", "",
             f"Load average (1 min) {loads[0]:.2f} at the start, {loads[1]:.2f} at the end. "
             f"2048 x 2048 float32 matmul: {spread(matmul)} GFLOP/s.", "",
             "| model | trunk (ms) | trunk GFLOP/s | heads, 4 boxes (ms) | same boxes again (ms) "
             "| new image + 4 boxes (ms) | / fair bare trunk |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, t in timings.items():
        total = new_image(t)
        lines.append(f"| {name} | {spread(t.trunk)} | {spread(t.gflops)} | {spread(t.heads)} | {spread(t.cached)} "
                     f"| {spread(total)} | {statistics.median(total) / bare:.2f} |")
    if HYPERCOLUMN in timings and BARE in timings:
        ours = timings[HYPERCOLUMN]
        ratio = statistics.median(new_image(ours)) / bare
        cached = statistics.median(ours.cached)
        lines += ["", "| target (mobilenet_v2) | goal | measured | met |", "| --- | --- | --- | --- |",
                  f"| new image + 4 boxes / fair bare trunk | <= {TARGET_TRUNK_RATIO} | {ratio:.2f} "
                  f"| {'yes' if ratio <= TARGET_TRUNK_RATIO else 'NO'} |",
                  f"| same 4 boxes from the cache | <= {TARGET_CACHED_MS:.0f} ms | {cached:.1f} ms "
                  f"| {'yes' if cached <= TARGET_CACHED_MS else 'NO'} |"]
    if MIRRORED in timings and HYPERCOLUMN in timings:
        cost = statistics.median(new_image(timings[MIRRORED])) / statistics.median(new_image(timings[HYPERCOLUMN]))
        lines += ["", f"Mirror averaging (the default) / no mirror, new image + 4 boxes: {cost:.2f}x."]
    return "\n".join(lines)


def machine_description(device, threads) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), model)
    return (f"{model}, {os.cpu_count()} CPUs, {threads.describe()}, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="a COCO folder (annotations/instances_train2017.json, train2017/); "
                             "scikit-image's sample photos when it does not exist")
    parser.add_argument("--images", type=int, default=4, help="photos (default 4)")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the photos (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 photos, 1 round: a smoke run")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--busy", action="store_true", help="with two 'yes > /dev/null' neighbours")
    mode.add_argument("--both", action="store_true", help="idle, then busy, and their ratio")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: the app's policy)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["vgg16", "alexnet", "maskrcnn", "sam"],
                        help="models to leave out")
    parser.add_argument("--trunks", nargs="*", default=[], metavar="BACKBONE",
                        choices=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"],
                        help="also time the hypercolumn model on these trunks")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds = 2, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from hcviewer.threads import apply_thread_policy

    threads = apply_thread_policy(args.threads)  # before torch loads, as the app does
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was given but no usable GPU was found")
    if (args.data / "annotations" / "instances_train2017.json").is_file():
        samples = load_coco_samples(args.data, args.images)
        source = f"{args.data.name} ({len(samples)} photos, their {BOXES_PER_IMAGE} largest ground-truth boxes)"
    else:
        samples = load_skimage_samples(args.images)
        source = f"scikit-image sample photos ({len(samples)}; {args.data} not found)"
    torch.manual_seed(0)
    contenders = [hypercolumn("mobilenet_v2", device), hypercolumn("mobilenet_v2", device, mirror=False),
                  bare_mobilenet(device)]
    contenders += [hypercolumn(b, device) for b in args.trunks]
    contenders += [hypercolumn(b, device) for b in ("vgg16", "alexnet") if b not in args.skip]
    if "maskrcnn" not in args.skip:
        contenders.append(mask_rcnn(device))
    notes = []
    if "sam" not in args.skip:
        peer = sam(device)
        if peer is None:
            notes.append("SAM: segment-anything is not installed, left out.")
        else:
            contenders.append(peer)
    for contender in contenders:  # warm-up (allocator, oneDNN kernel choice), then FLOPs
        contender.trunk(samples[0])
        if contender.heads is not None:
            contender.heads(samples[0])
        count_trunk_flops(contender, samples)
    sizes = sorted({f"{s.image.shape[0]}x{s.image.shape[1]}" for s in samples})
    print(f"Machine: {machine_description(device, threads)}  ")
    print(f"Data: {source}; sizes (HxW) {', '.join(sizes)}; {args.rounds} rounds, models interleaved "
          f"photo by photo; medians (min-max) over rounds x photos; random weights.  ")
    for note in notes:
        print(note + "  ")
    modes = [("idle", 0), ("busy: two 'yes > /dev/null' neighbours", 2)] if args.both else \
        [("busy: two 'yes > /dev/null' neighbours", 2)] if args.busy else [("idle", 0)]
    results = {}
    for title, neighbours in modes:
        with busy_neighbours(neighbours):
            start_load = os.getloadavg()[0]
            timings, matmul = run_interleaved(contenders, samples, args.rounds, device)
            loads = (start_load, os.getloadavg()[0])
        results[title] = timings
        print()
        print(report(title, timings, matmul, loads))
    if args.both:
        idle, busy = (statistics.median(new_image(r[HYPERCOLUMN])) for r in results.values())
        ratio = busy / idle
        print(f"\nhypercolumn mobilenet_v2, new image + 4 boxes: busy / idle = {busy:.1f} / {idle:.1f} ms = "
              f"{ratio:.2f} (target <= {TARGET_BUSY_RATIO}: {'yes' if ratio <= TARGET_BUSY_RATIO else 'NO'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
