"""The ``hcviewer`` command: ``hcviewer [PATH ...]`` opens the app; ``hcviewer predict`` segments
boxes headless and writes COCO results; ``hcviewer export`` writes an annotation or those results
as COCO, YOLO, VOC or labelme files (``annotation/export_command.py``). Neither ``predict``,
``export`` nor ``--help`` imports Qt.

An image file literally named ``predict`` is opened with ``hcviewer ./predict``."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np

from hcviewer.annotation.boxfiles import BoxFile, BoxFileError, read_boxes
from hcviewer.app.defaults import DEFAULT_CHECKPOINT
from hcviewer.threads import ThreadsError, add_threads_argument, apply_thread_policy

DEVICES = ("auto", "cpu", "cuda")


class UsageError(ValueError):
    """Bad input on the command line; the message says what and how to fix it (exit code 2)."""


def main(argv: list[str] | None = None) -> int:
    """The command; ``argv`` None: the program's own arguments (the process ends when this returns)."""
    ends_the_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    sigint_handler = signal.getsignal(signal.SIGINT)
    try:
        if argv[:1] == ["predict"]:
            return _predict(_predict_parser().parse_args(argv[1:]))
        if argv[:1] == ["export"]:
            return _export(argv[1:])
        return _open_app(_app_parser().parse_args(argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    except UsageError as exc:
        print(f"hcviewer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before or after the work (during it, predict says what it kept)
        ignore_further_interrupts()
        print("\nhcviewer: interrupted", file=sys.stderr)
        return 130
    finally:
        if not ends_the_process and signal.getsignal(signal.SIGINT) is not sigint_handler:
            signal.signal(signal.SIGINT, sigint_handler)


def ignore_further_interrupts() -> None:
    """After the first Ctrl+C the output is written and the process exits 130: another Ctrl+C
    meanwhile (or during the interpreter's shutdown, which unloads torch) ended it by the signal."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------------------------- app
def _app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcviewer",
        description="Inspect and annotate hypercolumn segmentation, parts and keypoints. "
                    "Without paths the demo photos open. Run 'hcviewer predict --help' for the headless batch, "
                    "'hcviewer export --help' to write its results or an annotation as COCO, YOLO, VOC or labelme.")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="images or folders of images")
    parser.add_argument("--boxes", metavar="FILE", help="box file: COCO JSON, detection results, VOC XML (or folder), CSV")
    _add_model_arguments(parser)
    return parser


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="FILE", help=f"model checkpoint (default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where the model runs (default: auto)")
    parser.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=True,
                        help="average each box's answer with the mirror image's (twice the model time on a new "
                             "image; what it gains: models/README.md). Default: on")
    add_threads_argument(parser)


def _open_app(args: argparse.Namespace) -> int:
    _require_existing(args.paths, "path")
    _require_existing([p for p in (args.boxes, args.checkpoint) if p], "file")
    _apply_threads(args.threads)
    from hcviewer.app.main_window import run_app  # Qt is imported only to open the window

    return run_app(argparse.Namespace(paths=args.paths, boxes=args.boxes, checkpoint=args.checkpoint,
                                      device=args.device, mirror=args.mirror))


def _apply_threads(requested: int | None) -> None:
    """The thread policy of hcviewer.threads, before torch is loaded (the app loads it in its worker)."""
    try:
        apply_thread_policy(requested)
    except ThreadsError as exc:
        raise UsageError(str(exc)) from None


def _require_existing(paths: list[str], what: str) -> None:
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such {what}: {', '.join(missing)}; check the spelling")


# ---------------------------------------------------------------------------------- export
def _export(argv: list[str]) -> int:
    from hcviewer.annotation.export_command import ExportCommandError, export_parser, run_export

    args = export_parser().parse_args(argv)
    try:
        print(run_export(args), file=sys.stderr)
    except ExportCommandError as exc:
        raise UsageError(str(exc)) from None
    return 0


# --------------------------------------------------------------------------------- predict
PROGRESS_EVERY = 25  # images between progress lines when stderr is not a terminal

PREDICT_EPILOG = """\
Nothing is lost: the folder of --out is tried before the model loads; each finished image is
kept in RESULTS.json.partial.jsonl at once, so a run that is interrupted (Ctrl+C: the finished
images are written to --out), killed or crashed continues where it stopped when the same
command is run again. An image or box that cannot be segmented is named and skipped; the others
are written.

exit status: 0 all boxes segmented; 1 some images or boxes skipped (the others written);
2 bad arguments or input files; 130 interrupted (the finished images written)."""


def _predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hcviewer predict", epilog=PREDICT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Segment the boxes of many images without the GUI; write COCO results JSON "
                    "(RLE masks, scores, keypoints when the checkpoint predicts them).")
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="image files or folders (searched recursively)")
    parser.add_argument("--boxes", metavar="FILE", required=True,
                        help="box file: COCO JSON, detection results, VOC XML (or folder), CSV")
    parser.add_argument("--out", metavar="RESULTS.json", required=True, help="where to write the COCO results")
    _add_model_arguments(parser)
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="mask probability threshold (default: 0.5, where a checkpoint calibrated by "
                             "'hcviewer-train calibrate' cuts at its best threshold)")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True,
                        help="snap mask edges to the image's edges (guided filter, under 1 ms per box; "
                             "+0.008 mask IoU on COCO val photos, see docs/performance.md). Default: on")
    parser.add_argument("--min-score", type=float, default=None, metavar="S",
                        help="skip boxes whose score in the box file is below S (ground-truth boxes are kept)")
    parser.add_argument("--force", action="store_true",
                        help="allow --out to be one of the input files (it is replaced at the end)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="require the progress of an earlier run of the same inputs (without it, such "
                            "progress is continued when found)")
    again.add_argument("--restart", action="store_true", help="discard the progress of an earlier run")
    parser.add_argument("--progress-every", type=int, default=PROGRESS_EVERY, metavar="N",
                        help=f"when stderr is not a terminal, a progress line every N images (default {PROGRESS_EVERY})")
    return parser


def _predict(args: argparse.Namespace) -> int:
    if not 0.0 < args.threshold < 1.0:
        raise UsageError(f"--threshold must lie between 0 and 1, got {args.threshold}")
    if args.progress_every < 1:
        raise UsageError(f"--progress-every must be 1 or more, got {args.progress_every}")
    if args.min_score is not None and not math.isfinite(args.min_score):  # NaN kept no box, silently
        raise UsageError(f"--min-score must be a finite number, got {args.min_score}")
    _require_existing(args.images, "image or folder")
    checkpoint = Path(args.checkpoint) if args.checkpoint else DEFAULT_CHECKPOINT
    if not checkpoint.is_file():
        raise UsageError(f"checkpoint {checkpoint} not found; pass --checkpoint FILE")
    out = Path(args.out)
    out_is_input = _check_output(out, [Path(args.boxes), checkpoint], args.force)
    try:
        box_file = read_boxes(args.boxes)
    except BoxFileError as exc:
        raise UsageError(str(exc)) from None
    _apply_threads(args.threads)
    from hcviewer.annotation import batch  # torch is imported only here

    images = batch.find_images(args.images)
    out_is_input = _check_output(out, images, args.force) or out_is_input
    items = _batch_items(box_file, images, args.min_score)
    if not items:
        raise UsageError(_no_match_message(box_file, images))
    progress = _open_progress(out, checkpoint, args)
    try:
        run = PredictRun(batch, items, progress, box_file.category_ids, out)
        try:
            if run.todo:
                run.segment(_load_predictor(checkpoint, args.device, args.mirror), args.threshold, args.progress_every,
                            args.refine)
        except KeyboardInterrupt:
            ignore_further_interrupts()
            # An input named as --out (--force) is replaced only by the complete results.
            return run.interrupted(write=not out_is_input)
        return run.finish()
    finally:
        progress.close()


def _check_output(out: Path, inputs: list[Path], force: bool) -> bool:
    """Refuse an --out that is an input (unless ``force``) or cannot be written, before any
    work; True when --out is one of ``inputs`` (allowed by ``force``)."""
    from hcviewer.fileio import OutputError, check_writable

    try:
        is_dir = out.is_dir()
        same = next((p for p in inputs if out.exists() and p.exists() and out.samefile(p)), None)
    except OSError as exc:  # e.g. a name over the file system's 255 bytes
        shown = str(out) if len(str(out)) <= 80 else f"{str(out)[:60]}... ({len(str(out))} characters)"
        raise UsageError(f"--out {shown}: {exc.strerror or exc}; choose a shorter name or another folder") from None
    if is_dir:
        raise UsageError(f"--out {out} is a folder; give a file name, e.g. {out / 'results.json'}")
    if same is not None and not force:
        raise UsageError(f"--out {out} is an input file ({same}); writing it would replace it. "
                         "Choose another --out, or pass --force")
    try:
        check_writable(out.parent, str(out))
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    return same is not None


def _open_progress(out: Path, checkpoint: Path, args: argparse.Namespace):
    from hcviewer.annotation.batch_progress import ProgressFile, ProgressMismatch, file_identity, progress_path
    from hcviewer.fileio import OutputError

    inputs = {"checkpoint": file_identity(checkpoint), "boxes": file_identity(args.boxes),
              "threshold": args.threshold, "min_score": args.min_score, "refine": args.refine, "mirror": args.mirror}
    mode = "resume" if args.resume else "restart" if args.restart else "auto"
    try:
        return ProgressFile.open(progress_path(out), inputs, mode)
    except (ProgressMismatch, OutputError) as exc:
        raise UsageError(str(exc)) from None


def _batch_items(box_file: BoxFile, images: list[Path], min_score: float | None) -> list:
    """One item per image that has boxes; images the box file names no id for are numbered 1, 2, ..."""
    from hcviewer.annotation.batch import BatchItem

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


def _load_predictor(checkpoint: Path, device: str, mirror: bool):
    from hcviewer.inference import HypercolumnPredictor
    from hcviewer.modeling import CheckpointError

    try:
        predictor = HypercolumnPredictor.from_checkpoint(checkpoint, device, mirror)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    if predictor.device_choice.warning:
        print(f"hcviewer: warning: {predictor.device_choice.warning}", file=sys.stderr)
    if "figure_ground" not in predictor.tasks:
        raise UsageError(f"{checkpoint} predicts {list(predictor.tasks)}, not figure-ground masks; "
                         "choose a checkpoint trained with figure_ground")
    return predictor


class PredictRun:
    """One ``hcviewer predict`` run over ``items``: each image's results go to the progress file
    as soon as it is done; the output is assembled from it at the end (or on Ctrl+C)."""

    def __init__(self, batch, items: list, progress, category_ids: dict[str, int], out: Path) -> None:
        from hcviewer.annotation.batch_progress import image_key

        self.batch = batch
        self.items = items
        self.progress = progress
        self.category_ids = category_ids
        self.out = out
        self.keys = [image_key(item.image_path, item.image_id) for item in items]
        self.todo = [item for item, key in zip(items, self.keys) if key not in progress.done]
        self.failed_images: list[str] = []  # why each unreadable image was skipped (retried next run)
        earlier = len(items) - len(self.todo)
        if earlier:
            print(f"hcviewer: continuing the run kept in {progress.path}: {earlier} of {len(items)} images "
                  "were done before", file=sys.stderr)

    def segment(self, predictor, threshold: float, every: int, refine: bool = False) -> None:
        with ProgressReport(len(self.items), len(self.items) - len(self.todo), every) as report:
            for item in self.todo:
                self._segment_one(predictor, item, threshold, refine)
                report.advance(len(self.failed_images))

    def _segment_one(self, predictor, item, threshold: float, refine: bool = False) -> None:
        from hcviewer.annotation.batch_progress import DoneImage, image_key
        from hcviewer.fileio import OutputError

        try:
            [result] = self.batch.predict_images(predictor, [item], threshold=threshold, refine=refine)
        except self.batch.BOX_FAILURES as exc:  # one image the network could not take: not the run
            result = self.batch.ImageResult(item.image_path, item.image_id, item.boxes, [], [], None,
                                            error=f"{item.image_path}: could not be segmented "
                                                  f"({self.batch.first_line(exc)})")
        if result.error is not None:
            self.failed_images.append(result.error)
            print(f"hcviewer: skipped {result.error}", file=sys.stderr)
            return
        skipped = [f"{result.image_path}: box {box.index + 1} of {len(item.boxes)}, {box.describe()}"
                   for box in result.skipped]  # the image's other boxes are segmented
        for message in skipped:
            print(f"hcviewer: skipped {message}", file=sys.stderr)
        try:
            records = self.batch.to_coco_results([result], self.category_ids)
        except ValueError as exc:  # a label of the box file without a category id
            raise UsageError(str(exc)) from None
        path, image_id = image_key(item.image_path, item.image_id)
        try:
            self.progress.add(DoneImage(path, image_id, records, skipped))
        except OutputError as exc:
            raise UsageError(f"{exc}. The {len(self.progress.done)} images finished so far are kept; "
                             "run the same command again to continue") from None

    def finish(self) -> int:
        """Write the output of every image; the progress file is then no longer needed."""
        done = self._write()
        self.progress.remove()
        skipped_boxes = sum(len(d.skipped) for d in done)
        skipped = [f"{len(self.failed_images)} images" if self.failed_images else "",
                   f"{skipped_boxes} boxes" if skipped_boxes else ""]
        skipped_text = " and ".join(s for s in skipped if s)
        print(f"Wrote {sum(len(d.records) for d in done)} masks for {len(done)} images to {self.out}"
              + (f"; {skipped_text} skipped (named above)" if skipped_text else ""), file=sys.stderr)
        return 1 if skipped_text else 0

    def interrupted(self, write: bool = True) -> int:
        """Ctrl+C: the finished images are written (when ``write``); the progress file stays for
        the next run."""
        done = self._write() if write and self.progress.done else []
        written = (f"wrote {sum(len(d.records) for d in done)} masks of the {len(done)} finished images to "
                   f"{self.out}" if done else "no image was finished, nothing written")
        print(f"\nhcviewer: interrupted after {len(done)} of {len(self.items)} images; {written}. "
              "Run the same command again to continue where it stopped "
              f"(the progress is kept in {self.progress.path})", file=sys.stderr)
        return 130

    def _write(self) -> list:
        from hcviewer.fileio import OutputError, write_json_atomic

        done = self.progress.finished(self.keys)
        try:
            write_json_atomic(self.out, [record for image in done for record in image.records])
        except OutputError as exc:
            raise UsageError(f"{exc}. The results are kept in {self.progress.path}; "
                             "run the same command again once it can be written") from None
        return done


class ProgressReport:
    """A progress bar on a terminal; otherwise a line every ``every`` images (logs, CI)."""

    def __init__(self, total: int, done: int, every: int) -> None:
        self.total, self.done, self.every = total, done, every
        self.started = time.perf_counter()
        self.first = done
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="image", file=sys.stderr, desc="Segmenting")

    def __enter__(self) -> "ProgressReport":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def advance(self, failed: int) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif (self.done - self.first) % self.every == 0 or self.done == self.total:
            rate = (self.done - self.first) / max(time.perf_counter() - self.started, 1e-9)
            print(f"hcviewer: {self.done}/{self.total} images ({rate:.2f} images/s"
                  + (f", {failed} skipped" if failed else "") + ")", file=sys.stderr, flush=True)



if __name__ == "__main__":
    sys.exit(main())
