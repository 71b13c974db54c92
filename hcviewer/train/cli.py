"""``hcviewer-train``: train, resume, eval and ablate hypercolumn networks.

    hcviewer-train train --coco ANN.json --images DIR --out runs/person --epochs 20
    hcviewer-train resume --out runs/person
    hcviewer-train eval --checkpoint FILE --coco ANN.json --images DIR --json OUT.json
    hcviewer-train ablate --coco ANN.json --images DIR --out runs/ablation --epochs 5
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

from hcviewer.data.records import AnnotatedDataset, DataError, concatenate
from hcviewer.threads import ThreadsError, add_threads_argument, apply_thread_policy
from hcviewer.train.sources import add_data_arguments, data_sources, load_sources, split_sources

# modeling.backbones.BACKBONES, spelt out: importing it loads torch before the thread policy is set
BACKBONE_NAMES = ("alexnet", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2", "vgg16")


def _categories(args: argparse.Namespace) -> tuple[str, ...] | None:
    return _split_names(args.categories)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hcviewer-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="fine-tune a network end to end")
    add_data_arguments(train)
    add_model_arguments(train)
    add_training_arguments(train)

    resume = commands.add_parser("resume", help="continue an interrupted or finished run")
    resume.add_argument("--out", required=True, help="the run's output folder")
    resume.add_argument("--epochs", type=int, default=None, help="new total number of epochs")
    resume.add_argument("--export", default=None, help="also write the best weights (fp16) to this file")
    resume.add_argument("--keep-epochs", action="store_true",
                        help="from now on also write each epoch's weights as OUT/epoch-N.safetensors")
    resume.add_argument("--allow-changed-data", action="store_true",
                        help="continue although the training or validation image lists changed since the run "
                             "started (images then move between the splits)")

    evaluate = commands.add_parser("eval", help="score a checkpoint and the baselines on ground-truth boxes")
    evaluate.add_argument("--checkpoint", default=None, help="checkpoint to score (omit: baselines only)")
    add_data_arguments(evaluate)
    evaluate.set_defaults(val_fraction=0.0)
    evaluate.add_argument("--split", choices=("all", "train", "val"), default="all",
                          help="which half of --val-fraction/--split-seed to score (default all images)")
    add_eval_arguments(evaluate)

    calibrate = commands.add_parser(
        "calibrate", help="choose the mask threshold on held-out images; write a checkpoint that cuts masks there at 0.5")
    calibrate.add_argument("--checkpoint", required=True, help="checkpoint to calibrate")
    calibrate.add_argument("--out", required=True, help="the calibrated checkpoint to write")
    add_data_arguments(calibrate)
    calibrate.add_argument("--split", choices=("all", "train", "val"), default="val",
                           help="which half of --val-fraction/--split-seed to calibrate on (default the held-out "
                                "half: the images the checkpoint was not trained on)")
    calibrate.add_argument("--thresholds", default=None, metavar="T,T,...",
                           help="candidate thresholds, comma-separated (default 0.2 to 0.6 in steps of 0.05)")
    calibrate.add_argument("--min-area", type=float, default=32 * 32)
    calibrate.add_argument("--device", default="cpu")
    calibrate.add_argument("--no-mirror", action="store_true",
                           help="score each box on the image alone, not averaged with the mirror image as the app and "
                                "hcviewer predict answer (half the trunk time)")

    ablate = commands.add_parser("ablate", help="one result per tap subset, as in the paper's table")
    add_data_arguments(ablate)
    ablate.add_argument("--checkpoint", default=None,
                        help="evaluate every subset of this model's taps (e.g. a layer-dropout model) "
                             "instead of training one model per subset")
    ablate.add_argument("--all-subsets", action="store_true", help="every non-empty subset, not just the "
                        "paper's (all, top alone, each left out)")
    add_model_arguments(ablate)
    add_training_arguments(ablate)
    ablate.add_argument("--baselines", default="box,ellipse,grabcut")
    for command in commands.choices.values():
        add_threads_argument(command)
    return parser


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("network")
    group.add_argument("--backbone", default="mobilenet_v2", choices=BACKBONE_NAMES)
    group.add_argument("--taps", default=None, help="comma-separated tap names (default: the backbone's)")
    group.add_argument("--grid", type=int, default=5, help="K of the K x K grid of location-specific classifiers")
    group.add_argument("--tasks", default="figure_ground,keypoints",
                       help="comma-separated: figure_ground, parts, keypoints (tasks the data cannot label fail)")
    group.add_argument("--class-specific", action="store_true", help="one classifier set per category")
    group.add_argument("--no-pretrained", action="store_true", help="random trunk instead of ImageNet weights")
    group.add_argument("--keypoint-absent", action="store_true",
                       help="the keypoint head also learns 'not in this box': joints outside the box and those "
                            "a labelled person's annotators left unlabelled train it, and a joint's score becomes "
                            "its probability of being in the box")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--out", required=True, help="output folder (checkpoints, metrics.csv, config.json)")
    group.add_argument("--epochs", type=int, default=20)
    group.add_argument("--batch", type=int, default=2, help="images per step (per GPU under torchrun)")
    group.add_argument("--lr", type=float, default=3e-4)
    group.add_argument("--image-size", type=int, default=512, help="longest image side while training")
    group.add_argument("--inference-size", type=int, default=640,
                       help="longest image side the checkpoint's users (the app, predict, eval) resize to")
    group.add_argument("--layer-dropout", type=float, default=0.0,
                       help="probability of training a random tap subset in a step")
    group.add_argument("--loss-weights", default=None, metavar="TASK=W,...",
                       help="weight of each task's loss in the sum, e.g. figure_ground=1,parts=0.5,keypoints=1 "
                            "(default 1 each)")
    group.add_argument("--init", default=None, metavar="CHECKPOINT",
                       help="start from this checkpoint's weights (same network options), e.g. to train the "
                            "bundled model further on more data")
    group.add_argument("--freeze-trunk", default="none", metavar="TAP",
                       help="keep the trunk up to and including this tap's layer at its starting weights "
                            "('all': the whole trunk; default none)")
    group.add_argument("--freeze-heads", default=None, metavar="TASK,...",
                       help="keep these tasks' heads at their starting weights (with --init: e.g. "
                            "'parts,keypoints' retrains figure-ground alone; their losses still train the "
                            "trunk unless it is frozen too)")
    group.add_argument("--no-augment", action="store_true",
                       help="train on the images as they are: no flips, scale or colour jitter, no box jitter")
    group.add_argument("--copy-paste", type=float, default=0.0, metavar="P",
                       help="probability that a training image gets a random subset of another training image's "
                            "masked objects pasted on, scaled 0.1-2x (Ghiasi et al. 2021; default 0: off)")
    group.add_argument("--keep-epochs", action="store_true",
                       help="also write each epoch's weights as OUT/epoch-N.safetensors (to score a learning curve)")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--device", default="auto", help="auto, cpu or cuda")
    group.add_argument("--export", default=None, help="write the best weights (fp16) to this file at the end")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", default=None, help="write the full report here")
    parser.add_argument("--markdown", default=None, help="write the table here")
    parser.add_argument("--subsets", choices=("standard", "all"), default="standard",
                        help="tap subsets: the paper's (all, top alone, each left out) or every subset")
    parser.add_argument("--baselines", default="box,ellipse,grabcut",
                        help="comma-separated, or 'none': box, ellipse, grabcut (masks); mean-pose (the average COCO "
                             "training pose stretched to the box), grid-ceiling (the ground truth through the "
                             "keypoint grid: the most the head can score) (keypoints)")
    parser.add_argument("--min-area", type=float, default=32 * 32)
    parser.add_argument("--refine", default=None, metavar="METHOD",
                        help="add a row: all taps with edge-refined masks, METHOD guided or grabcut "
                             "(as hcviewer predict --refine)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-mirror", action="store_true",
                        help="score each box on the image alone, not averaged with the mirror image as the app and "
                             "hcviewer predict answer (half the trunk time)")


def train_config(args: argparse.Namespace, sources: list[dict], taps: tuple[str, ...] | None = None):
    from hcviewer.train.trainer import TrainConfig

    return TrainConfig(
        backbone=args.backbone, taps=taps if taps is not None else _names(args.taps), grid_size=args.grid,
        tasks=_names(args.tasks), class_specific=args.class_specific, epochs=args.epochs, batch_images=args.batch,
        lr=args.lr, max_side=args.image_size, inference_side=args.inference_size, layer_dropout=args.layer_dropout, seed=args.seed, device=args.device,
        pretrained=not args.no_pretrained, loss_weights=_loss_weights(args.loss_weights),
        augment=not args.no_augment, copy_paste=args.copy_paste, keypoint_absent=args.keypoint_absent,
        freeze_trunk=args.freeze_trunk, freeze_heads=_names(args.freeze_heads),
        init_from=str(Path(args.init).resolve()) if args.init else "", keep_epochs=args.keep_epochs,
        data={"sources": sources, "categories": args.categories, "val_fraction": args.val_fraction,
              "split_seed": args.split_seed, "limit": args.limit})


def _loss_weights(text: str | None) -> dict[str, float]:
    weights = {}
    for item in _names(text):
        task, _, value = item.partition("=")
        try:
            weights[task.strip()] = float(value)
        except ValueError:
            raise DataError(f"--loss-weights: {item!r} is not TASK=NUMBER (e.g. parts=0.5)") from None
        if not math.isfinite(weights[task.strip()]) or weights[task.strip()] < 0:
            raise DataError(f"--loss-weights: {item!r} needs a finite weight >= 0")
    return weights


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else ()


def run_training(config, out: Path, resume: bool = False, export: str | None = None,
                 allow_changed_data: bool = False):
    """Train (or resume), then score the best weights on the validation split."""
    import torch

    from hcviewer.modeling.checkpoint import load_checkpoint, save_checkpoint
    from hcviewer.train.evaluate import evaluate_sets, validation_metrics, write_report
    from hcviewer.fileio import write_text_atomic
    from hcviewer.train.run_state import check_output_folder
    from hcviewer.train.trainer import Trainer

    check_output_folder(out)  # a read-only or full --out is said before the data loads
    data = config.data
    datasets = load_sources(data["sources"], _split_names(data["categories"]), config.seed, data.get("limit"))
    train_halves, val_halves = split_sources(datasets, data["sources"], data["val_fraction"], data["split_seed"])
    val_halves = [v for v in val_halves if v.images]
    train_set, val_set = concatenate(train_halves), concatenate(val_halves)
    if not train_set.images:  # it was "no labels for ['keypoints']"
        held_out = len(val_set.images)
        raise DataError("no images to train on: " + (f"--val-fraction holds all {held_out} images out for validation; "
                                                     "lower it" if held_out else "the data sources hold none; check them"))
    print(f"training on {len(train_set.images)} images ({train_set.num_objects} objects), validating on "
          f"{len(val_set.images)} images ({val_set.num_objects} objects)", file=sys.stderr)
    trainer = Trainer(config, train_set, val_set, out, validate=validation_metrics, resuming=resume)
    if resume:
        trainer.resume(allow_changed_data=allow_changed_data)
    trainer.fit()
    if trainer.rank != 0 or not val_set.images:
        return None
    best, info = load_checkpoint(out / "best.safetensors")
    report = evaluate_sets(best, val_halves, device=trainer.device)
    write_report(report, out / "eval.json")
    write_text_atomic(out / "eval.md", report.markdown() + "\n")
    print(report.markdown())
    if export:
        training = {**info.training, "validation": f"{val_set.name} ({len(val_set.images)} images)"}
        save_checkpoint(export, best, training, report.to_json(), dtype=torch.float16)
        print(f"exported {export}", file=sys.stderr)
    return report


def _split_names(text: str | None) -> tuple[str, ...] | None:
    return _names(text) or None


def command_train(args: argparse.Namespace) -> int:
    if args.init and not Path(args.init).is_file():  # said before the data loads
        raise DataError(f"--init {args.init}: no such checkpoint file; give the path of a .safetensors checkpoint")
    config = train_config(args, data_sources(args))
    run_training(config, Path(args.out), export=args.export)
    return 0


def command_resume(args: argparse.Namespace) -> int:
    from hcviewer.train.trainer import TrainConfig

    out = Path(args.out)
    path = out / "config.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; --out must be the folder of an earlier 'hcviewer-train train' run")
    saved = json.loads(path.read_text())
    saved["taps"], saved["tasks"] = tuple(saved["taps"]), tuple(saved["tasks"])
    saved["freeze_heads"] = tuple(saved.get("freeze_heads", ()))  # runs from before the option have none
    # Runs from before --inference-size inferred at the larger of 640 and their training size.
    saved.setdefault("inference_side", max(640, saved.get("max_side", 512)))
    config = TrainConfig(**saved)
    if args.epochs is not None:
        config = replace(config, epochs=args.epochs)
    if args.keep_epochs:
        config = replace(config, keep_epochs=True)
    run_training(config, out, resume=True, export=args.export, allow_changed_data=args.allow_changed_data)
    return 0


def command_eval(args: argparse.Namespace) -> int:
    from hcviewer.modeling.checkpoint import load_checkpoint
    from hcviewer.refine import REFINE_METHODS
    from hcviewer.train.evaluate import evaluate_sets, standard_subsets, write_report
    from hcviewer.fileio import write_text_atomic

    if args.refine is not None and args.refine not in REFINE_METHODS:
        raise DataError(f"--refine {args.refine}: use one of {', '.join(REFINE_METHODS)}")
    datasets = _scored_sets(args)
    model = None
    subsets = None
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint, args.device)
        subsets = standard_subsets(model.taps, all_subsets=args.subsets == "all")
    baselines = () if args.baselines == "none" else _names(args.baselines)
    report = evaluate_sets(model, datasets, subsets, baselines, args.min_area, args.device, refine=args.refine,
                           mirror=not args.no_mirror)
    print(report.markdown())
    for target in (args.json, args.markdown):
        if target:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
    if args.json:
        write_report(report, args.json)
    if args.markdown:
        write_text_atomic(Path(args.markdown), report.markdown() + "\n")
    return 0


def _scored_sets(args: argparse.Namespace) -> list[AnnotatedDataset]:
    """The data sources of ``eval`` and ``calibrate``, each reduced to the half of the split
    that ``--split`` names."""
    sources = data_sources(args)
    datasets = load_sources(sources, _categories(args), seed=0, limit=args.limit)
    if args.split != "all":
        train_halves, val_halves = split_sources(datasets, sources, args.val_fraction, args.split_seed)
        datasets = [d for d in (val_halves if args.split == "val" else train_halves) if d.images]
    return datasets


def command_calibrate(args: argparse.Namespace) -> int:
    """Choose the mask threshold on held-out images and write a checkpoint with it folded into
    the figure-ground bias (hcviewer/train/calibrate.py)."""
    import torch

    from hcviewer.modeling.checkpoint import load_checkpoint, save_checkpoint
    from hcviewer.train.calibrate import DEFAULT_THRESHOLDS, calibrate_mask_threshold, fold_mask_threshold
    from hcviewer.fileio import check_writable
    from hcviewer.train.run_state import writing

    thresholds = tuple(_numbers(args.thresholds, "--thresholds")) if args.thresholds else DEFAULT_THRESHOLDS
    out = Path(args.out)
    check_writable(out.parent, f"the calibrated checkpoint {out}")  # said before the images are scored
    model, info = load_checkpoint(args.checkpoint, args.device)
    if "mask_calibration" in info.training:
        raise DataError(f"{args.checkpoint}: already calibrated (threshold "
                        f"{info.training['mask_calibration']['threshold']}); calibrate the checkpoint it was made from")
    calibration = calibrate_mask_threshold(model, _scored_sets(args), thresholds, args.min_area, args.device,
                                           progress=True, mirror=not args.no_mirror)
    print(calibration.markdown())
    fold_mask_threshold(model, calibration.best)
    record = {**calibration.to_json(), "mirror": not args.no_mirror, "calibrated_from": str(args.checkpoint)}
    # The stored evaluation scored the uncalibrated masks: left out rather than kept stale.
    with writing(out, f"Nothing was written; the chosen threshold is {calibration.best}."):
        save_checkpoint(out, model, {**info.training, "mask_calibration": record}, {},
                        dtype=getattr(torch, info.weights_dtype))
    print(f"mask threshold {calibration.best:.2f} folded into the figure-ground bias; wrote {args.out}",
          file=sys.stderr)
    return 0


def _numbers(text: str, option: str) -> list[float]:
    try:
        return [float(item) for item in _names(text)]
    except ValueError:
        raise DataError(f"{option}: {text!r} is not a comma-separated list of numbers") from None


def command_ablate(args: argparse.Namespace) -> int:
    """With --checkpoint: every subset of one model. Otherwise one model trained per subset, each
    scored on the validation split; the table goes to OUT/ablation.md and OUT/ablation.json."""
    from hcviewer.modeling.backbones import get_backbone_spec
    from hcviewer.modeling.checkpoint import load_checkpoint
    from hcviewer.train.evaluate import evaluate_sets, standard_subsets, subset_name
    from hcviewer.fileio import write_text_atomic

    out = Path(args.out)
    sources = data_sources(args)
    baselines = () if args.baselines == "none" else _names(args.baselines)
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint, args.device if args.device != "auto" else "cpu")
        datasets = load_sources(sources, _categories(args), seed=args.seed, limit=args.limit)
        _, val_halves = split_sources(datasets, sources, args.val_fraction, args.split_seed)
        report = evaluate_sets(model, [v for v in val_halves if v.images],
                               standard_subsets(model.taps, args.all_subsets), baselines)
    else:
        taps = _names(args.taps) or get_backbone_spec(args.backbone).default_taps
        methods = []
        report = None
        for subset in standard_subsets(taps, args.all_subsets):
            print(f"== training with taps {', '.join(subset)}", file=sys.stderr)
            config = train_config(args, sources, taps=subset)
            report = run_training(config, out / "_".join(subset))
            if report is None:  # a torchrun worker other than rank 0
                return 0
            scores = report.methods[0]
            scores.name = subset_name(subset, taps)
            methods.append(scores)
        report.methods = methods + [m for m in report.methods if m.taps is None and m.name in baselines]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "ablation.md", report.markdown() + "\n")
    write_text_atomic(out / "ablation.json", json.dumps(report.to_json(), indent=2))
    print(report.markdown())
    return 0


def start_distributed_if_launched() -> None:
    """Under ``torchrun`` (WORLD_SIZE > 1) join the process group: one process per GPU."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch
        import torch.distributed as dist

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def leave_distributed() -> None:
    """Leave the process group before the interpreter exits: a rank that exited with gloo's
    threads still running aborted ("terminate called without an active exception"), which
    torchrun reports as a failed run (1 run in 10 on a busy machine)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# Each number option: the test its value must pass (NaN fails every one), and what it must be.
NUMBER_RULES = {
    "epochs": (lambda v: v >= 1, "1 or more"),
    "batch": (lambda v: v >= 1, "1 or more"),
    "lr": (lambda v: math.isfinite(v) and v > 0, "a finite number above 0"),
    "image_size": (lambda v: v >= 32, "32 or more (pixels; the network's coarsest layer is 1/32 of the image)"),
    "inference_size": (lambda v: v >= 32, "32 or more (pixels; the network's coarsest layer is 1/32 of the image)"),
    "layer_dropout": (lambda v: 0 <= v < 1, "at least 0 and below 1"),
    "copy_paste": (lambda v: 0 <= v <= 1, "from 0 to 1"),
    "val_fraction": (lambda v: 0 <= v <= 1, "from 0 to 1"),
    "grid": (lambda v: v >= 1, "1 or more"),
    "synthetic": (lambda v: v >= 0, "0 or more"),
    "limit": (lambda v: v >= 1, "1 or more"),
}


def check_numbers(args: argparse.Namespace) -> None:
    """Refuse the number options no run can use, before any work: --lr nan trained and wrote
    NaN weights, --batch 0 raised ZeroDivisionError, --epochs -1 and --image-size 0 were taken."""
    for name, (usable, need) in NUMBER_RULES.items():
        value = getattr(args, name, None)
        if value is not None and not usable(value):
            raise DataError(f"--{name.replace('_', '-')} must be {need}, got {value}")


COMMANDS = {"train": command_train, "resume": command_resume, "eval": command_eval, "calibrate": command_calibrate,
            "ablate": command_ablate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        apply_thread_policy(args.threads, short_spin=True)  # before torch loads: OpenMP reads its settings then
    except ThreadsError as exc:
        print(f"hcviewer-train: error: {exc}", file=sys.stderr)
        return 2
    start_distributed_if_launched()
    try:
        return run_command(args)
    finally:
        leave_distributed()


def run_command(args: argparse.Namespace) -> int:
    """Run one command; each error the user can mend is one line and an exit status."""
    from hcviewer.fileio import OutputError
    from hcviewer.modeling.checkpoint import CheckpointError
    from hcviewer.train.trainer import TrainingDiverged, TrainingInterrupted

    try:
        check_numbers(args)
        return COMMANDS[args.command](args)
    except TrainingInterrupted as exc:
        print(f"hcviewer-train: {exc}", file=sys.stderr)
        return 130
    except TrainingDiverged as exc:
        print(f"hcviewer-train: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before training started, or while evaluating after it
        print("\nhcviewer-train: interrupted", file=sys.stderr)
        return 130
    except OutputError as exc:
        print(f"hcviewer-train: error: {exc}", file=sys.stderr)
        return 1
    except (DataError, CheckpointError, FileNotFoundError, ValueError) as exc:
        print(f"hcviewer-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
