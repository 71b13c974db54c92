"""Time the hypercolumn predictor against Mask R-CNN and Segment Anything on the same boxes.

Every model gets the same photos and the same given boxes (COCO ground-truth boxes; no
detector runs). For each model two parts are timed separately:

- trunk: once per image (hypercolumn ``set_image``, Mask R-CNN's transform + ResNet-50-FPN,
  SAM's ``set_image`` with the ViT-B image encoder);
- heads: all of an image's boxes at once, from the cached trunk features (hypercolumn
  ``predict``, Mask R-CNN's RoIAlign + mask head with the boxes as proposals, SAM's prompt
  encoder + mask decoder with the boxes as prompts). Output: box-level masks, no paste-back.

All networks use random weights: timing does not depend on the values. Medians over images
and repeats. Run from the repository root:

    .venv/bin/python benchmarks/bench_predictor.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torchvision

from hcviewer.inference import HypercolumnPredictor
from hcviewer.modeling import BACKBONES, HypercolumnModel, build_person_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "coco-mini-train"
BOXES_PER_IMAGE = 4

# The targets for mobilenet_v2 on a 2-core CPU, 480x640 photo, 4 boxes.
TARGET_NEW_IMAGE_MS = 200.0
TARGET_CACHED_MS = 20.0
TARGET_TRUNK_RATIO = 1.1


@dataclass
class Sample:
    name: str
    image: np.ndarray  # [H, W, 3] uint8 RGB
    boxes: np.ndarray  # [BOXES_PER_IMAGE, 4] float32 (x0, y0, x1, y1) image pixels


@dataclass
class Timing:
    """Milliseconds, one entry per (image, repeat)."""

    trunk: list[float] = field(default_factory=list)
    heads: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)  # heads again, same boxes

    def median(self, part: str) -> float:
        values = getattr(self, part)
        return statistics.median(values) if values else float("nan")


# --- data --------------------------------------------------------------------------------------


def load_coco_samples(data: Path, count: int) -> list[Sample]:
    """Images with at least four non-crowd objects, 480x640 ones first (the target's size);
    the four largest ground-truth boxes of each."""
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
    """Fallback without the shared data: scikit-image's sample photos, four fixed boxes each
    (a centred box and three overlapping ones, as a user would draw around objects)."""
    from skimage import data as skdata

    photos = [("astronaut", skdata.astronaut), ("coffee", skdata.coffee), ("chelsea", skdata.chelsea),
              ("rocket", skdata.rocket)]
    samples = []
    for name, load in photos[:count]:
        image = np.ascontiguousarray(load()[..., :3])
        h, w = image.shape[:2]
        fractions = [(0.2, 0.1, 0.8, 0.9), (0.05, 0.3, 0.45, 0.95), (0.5, 0.05, 0.95, 0.6), (0.3, 0.4, 0.7, 0.7)]
        boxes = np.array([[x0 * w, y0 * h, x1 * w, y1 * h] for x0, y0, x1, y1 in fractions], np.float32)
        samples.append(Sample(name, image, boxes))
    return samples


# --- timing ------------------------------------------------------------------------------------


def make_timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def timed(run: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1000

    return timed


def bench_model(backbone: str) -> HypercolumnModel:
    """The bundled person model's layout with all three tasks: 50x50 output, 5x5 grid."""
    return build_person_model(backbone, grid_size=5, parts=("head", "torso", "legs"))


def bench_hypercolumn(backbone: str, samples: list[Sample], repeats: int, device: torch.device, timed) -> Timing:
    predictor = HypercolumnPredictor(bench_model(backbone), device=device)
    predictor.set_image(samples[0].image)  # warm-up: allocator, oneDNN/cuDNN kernel choice
    predictor.predict(samples[0].boxes)
    timing = Timing()
    for _ in range(repeats):
        for sample in samples:
            timing.trunk.append(timed(lambda: predictor.set_image(sample.image)))
            timing.heads.append(timed(lambda: predictor.predict(sample.boxes)))
            timing.cached.append(timed(lambda: predictor.predict(sample.boxes)))
    return timing


def bench_bare_mobilenet(samples: list[Sample], repeats: int, device: torch.device, timed) -> Timing:
    """torchvision's MobileNetV2 forward (with its classifier) on the same normalised input
    the predictor's trunk sees: the reference for the 1.1x target."""
    model = torchvision.models.mobilenet_v2(weights=None).eval().to(device)
    config = bench_model("mobilenet_v2").config
    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)

    def forward(image: np.ndarray) -> None:
        scale = min(1.0, config.max_image_side / max(image.shape[:2]))
        if scale < 1.0:
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
        tensor = torch.from_numpy(image).to(device).permute(2, 0, 1)[None].float().div_(255)
        with torch.inference_mode():
            model((tensor - mean) / std)

    forward(samples[0].image)
    timing = Timing()
    for _ in range(repeats):
        for sample in samples:
            timing.trunk.append(timed(lambda: forward(sample.image)))
    return timing


def bench_mask_rcnn(samples: list[Sample], repeats: int, device: torch.device, timed) -> Timing:
    """Mask R-CNN (ResNet-50-FPN) predicting masks for given boxes: the boxes replace the RPN's
    proposals and go straight to the mask branch (RoIAlign 14x14, mask head, 28x28 predictor)."""
    from torchvision.models.detection.roi_heads import maskrcnn_inference

    model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    model = model.eval().to(device)
    state: dict[str, object] = {}

    def trunk(image: np.ndarray) -> None:
        tensor = torch.from_numpy(image).to(device).permute(2, 0, 1).float().div_(255)
        with torch.inference_mode():
            images, _ = model.transform([tensor])
            state["features"] = model.backbone(images.tensors)
        state["image_sizes"] = images.image_sizes
        state["scale"] = images.image_sizes[0][0] / image.shape[0]

    def heads(boxes: np.ndarray) -> None:
        with torch.inference_mode():
            proposals = [torch.from_numpy(boxes).to(device) * state["scale"]]
            pooled = model.roi_heads.mask_roi_pool(state["features"], proposals, state["image_sizes"])
            mask_logits = model.roi_heads.mask_predictor(model.roi_heads.mask_head(pooled))
            labels = [torch.ones(len(boxes), dtype=torch.int64, device=device)]
            maskrcnn_inference(mask_logits, labels)[0].cpu()

    trunk(samples[0].image)
    heads(samples[0].boxes)
    timing = Timing()
    for _ in range(repeats):
        for sample in samples:
            timing.trunk.append(timed(lambda: trunk(sample.image)))
            timing.heads.append(timed(lambda: heads(sample.boxes)))
            timing.cached.append(timed(lambda: heads(sample.boxes)))
    return timing


def bench_sam(samples: list[Sample], repeats: int, device: torch.device, timed) -> Timing:
    """Segment Anything ViT-B: set_image (1024x1024 image encoder), then the boxes as prompts.
    No warm-up run: one encoder pass costs tens of seconds on a CPU."""
    from segment_anything import SamPredictor, sam_model_registry

    sam = sam_model_registry["vit_b"]().eval().to(device)  # no checkpoint: random init
    predictor = SamPredictor(sam)

    def heads(sample: Sample) -> None:
        boxes = torch.from_numpy(sample.boxes).to(device)
        boxes = predictor.transform.apply_boxes_torch(boxes, sample.image.shape[:2])
        with torch.inference_mode():
            masks, _, _ = predictor.predict_torch(None, None, boxes=boxes, multimask_output=False)
        masks.cpu()

    timing = Timing()
    for _ in range(repeats):
        for sample in samples:
            with torch.inference_mode():
                timing.trunk.append(timed(lambda: predictor.set_image(sample.image)))
            timing.heads.append(timed(lambda: heads(sample)))
            timing.cached.append(timed(lambda: heads(sample)))
    return timing


# --- report ------------------------------------------------------------------------------------


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, Python {platform.python_version()}"


def markdown_table(results: dict[str, Timing], reference: str) -> str:
    ref = results[reference]
    ref_total = ref.median("trunk") + ref.median("heads")
    lines = [
        "| model | trunk per image (ms) | heads, 4 boxes (ms) | heads per box (ms) | same boxes again (ms) "
        f"| new image + 4 boxes (ms) | x {reference} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, timing in results.items():
        trunk, heads = timing.median("trunk"), timing.median("heads")
        total = trunk + heads if timing.heads else trunk
        cells = [
            name, f"{trunk:.1f}",
            f"{heads:.1f}" if timing.heads else "-",
            f"{heads / BOXES_PER_IMAGE:.2f}" if timing.heads else "-",
            f"{timing.median('cached'):.1f}" if timing.cached else "-",
            f"{total:.1f}", f"{total / ref_total:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(ours: Timing, bare: Timing) -> str:
    new_image = ours.median("trunk") + ours.median("heads")
    ratio = new_image / bare.median("trunk")
    rows = [
        ("new image + 4 boxes", f"<= {TARGET_NEW_IMAGE_MS:.0f} ms", f"{new_image:.1f} ms", new_image <= TARGET_NEW_IMAGE_MS),
        ("same 4 boxes from the cache", f"<= {TARGET_CACHED_MS:.0f} ms", f"{ours.median('cached'):.1f} ms",
         ours.median("cached") <= TARGET_CACHED_MS),
        ("predictor (new image + 4 boxes) / bare torchvision mobilenet_v2 forward", f"<= {TARGET_TRUNK_RATIO}",
         f"{ratio:.2f} ({bare.median('trunk'):.1f} ms bare)", ratio <= TARGET_TRUNK_RATIO),
    ]
    lines = ["| target (mobilenet_v2) | goal | measured | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {what} | {goal} | {measured} | {'yes' if met else 'NO'} |" for what, goal, measured, met in rows]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="a COCO folder (annotations/instances_train2017.json, train2017/); "
                             "scikit-image's sample photos when it does not exist")
    parser.add_argument("--images", type=int, default=4, help="photos to use (default 4)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats per image for the hypercolumn models (default 10, --quick 3)")
    parser.add_argument("--sam-images", type=int, default=1,
                        help="photos for SAM, whose encoder takes tens of seconds on a CPU (default 1)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "vgg16", "alexnet"],
                        choices=sorted(BACKBONES))
    parser.add_argument("--skip", nargs="*", default=[], choices=["maskrcnn", "sam"],
                        help="comparison models to leave out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was given but no usable GPU was found")
    repeats = args.repeats or (3 if args.quick else 10)
    heavy_repeats = 1 if args.quick else 3
    if (args.data / "annotations" / "instances_train2017.json").is_file():
        samples = load_coco_samples(args.data, args.images)
        source = f"{args.data} ({len(samples)} photos, their {BOXES_PER_IMAGE} largest ground-truth boxes)"
    else:
        samples = load_skimage_samples(args.images)
        source = f"scikit-image sample photos ({len(samples)}; {args.data} not found)"
    sizes = sorted({f"{s.image.shape[0]}x{s.image.shape[1]}" for s in samples})
    print(f"# machine: {machine_description(device)}", file=sys.stderr)
    print(f"# data: {source}; sizes (HxW) {', '.join(sizes)}", file=sys.stderr)

    timed = make_timer(device)
    results: dict[str, Timing] = {}
    torch.manual_seed(0)
    for backbone in args.backbones:
        print(f"# hypercolumn {backbone} ...", file=sys.stderr)
        results[f"hypercolumn {backbone}"] = bench_hypercolumn(backbone, samples, repeats, device, timed)
    print("# bare torchvision mobilenet_v2 ...", file=sys.stderr)
    results["torchvision mobilenet_v2 forward (no heads)"] = bench_bare_mobilenet(samples, repeats, device, timed)
    if "maskrcnn" not in args.skip:
        print("# Mask R-CNN ...", file=sys.stderr)
        results["Mask R-CNN R50-FPN, given boxes"] = bench_mask_rcnn(samples, heavy_repeats, device, timed)
    if "sam" not in args.skip:
        print("# SAM ViT-B ...", file=sys.stderr)
        results["SAM ViT-B, boxes as prompts"] = bench_sam(samples[: args.sam_images], 1, device, timed)

    print(f"\nMachine: {machine_description(device)}  ")
    print(f"Data: {source}; image sizes (HxW): {', '.join(sizes)}  ")
    repeat_notes = [f"hypercolumn and bare trunk {repeats}"]
    if "maskrcnn" not in args.skip:
        repeat_notes.append(f"Mask R-CNN {heavy_repeats}")
    if "sam" not in args.skip:
        repeat_notes.append(f"SAM 1 on {min(args.sam_images, len(samples))} photo(s)")
    print(f"Repeats per image: {', '.join(repeat_notes)}. Medians; random weights.\n")
    reference = "hypercolumn mobilenet_v2"
    print(markdown_table(results, reference if reference in results else next(iter(results))))
    if reference in results:
        print()
        print(targets_table(results[reference], results["torchvision mobilenet_v2 forward (no heads)"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
