"""The ``hcviewer`` command: ``hcviewer [PATH ...]`` opens the app; ``hcviewer predict`` segments
boxes headless and writes COCO results. Neither ``predict`` nor ``--help`` imports Qt.

An image file literally named ``predict`` is opened with ``hcviewer ./predict``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from hcviewer.app.boxfiles import BoxFile, BoxFileError, read_boxes
from hcviewer.app.defaults import DEFAULT_CHECKPOINT

DEVICES = ("auto", "cpu", "cuda")


class UsageError(ValueError):
    """Bad input on the command line; the message says what and how to fix it (exit code 2)."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["predict"]:
            return _predict(_predict_parser().parse_args(argv[1:]))
        return _open_app(_app_parser().parse_args(argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    except UsageError as exc:
        print(f"hcviewer: error: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------- app
def _app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcviewer",
        description="Inspect and annotate hypercolumn segmentation, parts and keypoints. "
                    "Without paths the demo photos open. Run 'hcviewer predict --help' for the headless batch.")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="images or folders of images")
    parser.add_argument("--boxes", metavar="FILE", help="box file: COCO JSON, detection results, VOC XML (or folder), CSV")
    _add_model_arguments(parser)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="FILE", help=f"model checkpoint (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where the model runs (default: auto)")


def _open_app(args: argparse.Namespace) -> int:
    _require_existing(args.paths, "path")
    _require_existing([p for p in (args.boxes, args.checkpoint) if p], "file")
    from hcviewer.app.main_window import run_app  # Qt is imported only to open the window

    return run_app(argparse.Namespace(paths=args.paths, boxes=args.boxes, checkpoint=args.checkpoint,
                                      device=args.device))


def _require_existing(paths: list[str], what: str) -> None:
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such {what}: {', '.join(missing)}; check the spelling")


# --------------------------------------------------------------------------------- predict
def _predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcviewer predict",
        description="Segment the boxes of many images without the GUI; write COCO results JSON "
                    "(RLE masks, scores, keypoints when the checkpoint predicts them).")
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders (searched recursively)")
    parser.add_argument("--boxes", metavar="FILE", required=True,
                        help="box file: COCO JSON, detection results, VOC XML (or folder), CSV")
    parser.add_argument("--out", metavar="RESULTS.json", required=True, help="where to write the COCO results")
    _add_model_arguments(parser)
    parser.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold (default: 0.5)")
    parser.add_argument("--min-score", type=float, default=None, metavar="S",
                        help="skip boxes whose score in the box file is below S (ground-truth boxes are kept)")
    return parser


def _predict(args: argparse.Namespace) -> int:
    if not 0.0 < args.threshold < 1.0:
        raise UsageError(f"--threshold must lie between 0 and 1, got {args.threshold}")
    _require_existing(args.images, "image or folder")
    checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    if not checkpoint.is_file():
        raise UsageError(f"checkpoint {checkpoint} not found; pass --checkpoint FILE")
    try:
        box_file = read_boxes(args.boxes)
    except BoxFileError as exc:
        raise UsageError(str(exc)) from None
    from hcviewer.app import batch  # torch is imported only here

    images = batch.find_images(args.images)
    items = _batch_items(box_file, images, args.min_score)
    if not items:
        raise UsageError(_no_match_message(box_file, images))
    predictor = _load_predictor(checkpoint, args.device)
    results = _run_with_progress(batch, predictor, items, args.threshold)
    return _write_results(batch, results, box_file, Path(args.out))


def _batch_items(box_file: BoxFile, images: list[Path], min_score: float | None) -> list:
    """One item per image that has boxes; images the box file names no id for are numbered 1, 2, ..."""
    from hcviewer.app.batch import BatchItem

    items = []
    for number, image in enumerate(images, start=1):
        boxes = [b for b in box_file.boxes_for(image)
                 if min_score is None or b.score is None or b.score >= min_score]
        if boxes:
            image_id = box_file.image_id_for(image)
            items.append(BatchItem(image, np.array([b.xyxy for b in boxes], np.float64).reshape(-1, 4),
                                   [b.label for b in boxes], number if image_id is None else image_id))
    return items


def _no_match_message(box_file: BoxFile, images: list[Path]) -> str:
    if not images:
        return "no image files found among the given paths (looked for .jpg, .png, .bmp, .tif, .webp)"
    named = box_file.image_names()[:3]
    hint = f" (it names e.g. {', '.join(named)})" if named else " (detection results match images named by image_id, e.g. 000000000139.jpg)"
    return (f"none of the {len(images)} images has boxes in {box_file.path}{hint}; "
            "check that the box file belongs to these images, or lower --min-score")


def _load_predictor(checkpoint: Path, device: str):
    from hcviewer.inference import HypercolumnPredictor
    from hcviewer.modeling import CheckpointError

    try:
        predictor = HypercolumnPredictor.from_checkpoint(checkpoint, device)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    if predictor.device_choice.warning:
        print(f"hcviewer: warning: {predictor.device_choice.warning}", file=sys.stderr)
    return predictor


def _run_with_progress(batch, predictor, items: list, threshold: float) -> list:
    from tqdm import tqdm

    with tqdm(total=len(items), unit="image", file=sys.stderr, disable=None, desc="Segmenting") as bar:
        def advance(done: int, total: int) -> None:
            bar.update(done - bar.n)

        try:
            return batch.predict_images(predictor, items, progress_callback=advance, threshold=threshold)
        except batch.InputError as exc:
            raise UsageError(str(exc)) from None


def _write_results(batch, results: list, box_file: BoxFile, out: Path) -> int:
    failed = [r for r in results if r.error is not None]
    for result in failed:
        print(f"hcviewer: skipped {result.error}", file=sys.stderr)
    for result in results:
        for box in result.skipped:  # the image's other boxes are segmented
            print(f"hcviewer: skipped {box.describe()} in {result.image_path}", file=sys.stderr)
    try:
        records = batch.to_coco_results(results, box_file.category_ids)
        batch.write_json_atomic(out, records)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    print(f"Wrote {len(records)} masks for {len(results) - len(failed)} images to {out}"
          + (f"; {len(failed)} images skipped" if failed else ""), file=sys.stderr)
    return 1 if len(failed) == len(results) else 0


if __name__ == "__main__":
    sys.exit(main())
