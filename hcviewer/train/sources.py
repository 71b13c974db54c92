"""The data a ``hcviewer-train`` command reads: its arguments, the sources they name (kept in a
run's config.json so that ``resume`` reloads them), each source read and split."""

from __future__ import annotations

import argparse
from pathlib import Path

from hcviewer.data.records import AnnotatedDataset, DataError, split_images

SPLIT_HELP = "held-out images: the same fraction and seed give the same split in train, eval and ablate"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data (several sources are mixed)")
    group.add_argument("--coco", action="append", default=[], metavar="ANN.json[,ANN2.json]",
                       help="COCO annotation file(s) of one image folder (comma-separated files are merged by "
                            "annotation id, e.g. COCO's instances + person_keypoints); pair each with --images")
    group.add_argument("--images", action="append", default=[], metavar="DIR", help="image folder of each --coco")
    group.add_argument("--voc", action="append", default=[], metavar="ROOT", help="Pascal VOC / SBD folder")
    group.add_argument("--folder", action="append", default=[], metavar="ROOT",
                       help="folder of images + per-object mask PNGs + boxes.json")
    group.add_argument("--ccp", action="append", default=[], metavar="ROOT",
                       help="Clothing Co-Parsing folder (photos/, labels/, label_names.json): one person per "
                            "photo with mask and part labels")
    group.add_argument("--lsp", action="append", default=[], metavar="ROOT",
                       help="Leeds Sports Pose Extended folder (joints.mat, images/): one person per photo with "
                            "12 COCO keypoints, no mask (trains the keypoint head only)")
    group.add_argument("--val-coco", action="append", default=[], metavar="ANN.json[,ANN2.json]",
                       help="COCO file(s) used for validation only, every image (never trained on); pair each "
                            "with --val-images")
    group.add_argument("--val-images", action="append", default=[], metavar="DIR",
                       help="image folder of each --val-coco")
    group.add_argument("--synthetic", type=int, default=0, metavar="N",
                       help="add N generated scenes with parts and keypoints")
    group.add_argument("--categories", default=None, help="comma-separated category names to keep (default all)")
    group.add_argument("--val-fraction", type=float, default=0.2, help=SPLIT_HELP)
    group.add_argument("--split-seed", type=int, default=0, help=SPLIT_HELP)
    group.add_argument("--limit", type=int, default=None, metavar="N",
                       help="use only the first N images of each source (quick trials)")


def data_sources(args: argparse.Namespace) -> list[dict]:
    """The data arguments as plain records (stored in config.json so ``resume`` reloads them)."""
    if len(args.coco) != len(args.images):
        raise DataError("give one --images folder for each --coco file (in the same order)")
    if len(args.val_coco) != len(args.val_images):
        raise DataError("give one --val-images folder for each --val-coco file (in the same order)")
    sources = [{"kind": "coco", "annotations": a.split(","), "images": i} for a, i in zip(args.coco, args.images)]
    sources += [{"kind": "voc", "root": r} for r in args.voc]
    sources += [{"kind": "folder", "root": r} for r in args.folder]
    sources += [{"kind": "ccp", "root": r} for r in args.ccp]
    sources += [{"kind": "lsp", "root": r} for r in args.lsp]
    sources += [{"kind": "coco", "annotations": a.split(","), "images": i, "validation_only": True}
                for a, i in zip(args.val_coco, args.val_images)]
    if args.synthetic:
        sources.append({"kind": "synthetic", "count": args.synthetic})
    if not sources:
        raise DataError("no data given: use --coco ANN.json --images DIR, --voc ROOT, --folder ROOT, --ccp ROOT, "
                        "--lsp ROOT or --synthetic N")
    if all(s.get("validation_only") for s in sources) and args.command != "eval":
        raise DataError("only --val-coco data given; add training data (--coco, --ccp, ...)")
    return sources


def load_sources(sources: list[dict], categories: tuple[str, ...] | None, seed: int,
                 limit: int | None = None) -> list[AnnotatedDataset]:
    """One data set per source, in order; ``limit`` keeps the first N images of each."""
    datasets = []
    for source in sources:
        if source["kind"] == "coco":
            from hcviewer.data.coco import read_coco

            datasets.append(read_coco(source["annotations"], source["images"], categories))
        elif source["kind"] == "voc":
            from hcviewer.data.voc import read_voc

            datasets.append(read_voc(Path(source["root"])))
        elif source["kind"] == "folder":
            from hcviewer.data.folder import read_mask_folder

            datasets.append(read_mask_folder(Path(source["root"])))
        elif source["kind"] == "ccp":
            from hcviewer.data.ccp import read_ccp

            datasets.append(read_ccp(Path(source["root"])))
        elif source["kind"] == "lsp":
            from hcviewer.data.lsp import read_lsp

            datasets.append(read_lsp(Path(source["root"]), limit))  # only the photos kept: 10,000 headers cost seconds
        else:
            from hcviewer.data.synthetic import make_synthetic_dataset

            datasets.append(make_synthetic_dataset(source["count"], seed=seed))
    for d in datasets:
        if limit is not None:
            d.images = d.images[:limit]
        if categories is not None:
            for image in d.images:
                image.objects = [o for o in image.objects if o.category in categories]
    return datasets


def split_sources(datasets: list[AnnotatedDataset], sources: list[dict], fraction: float, seed: int
                  ) -> tuple[list[AnnotatedDataset], list[AnnotatedDataset]]:
    """Split each source on its own (every source is represented in validation): per source its
    training and validation half; a validation-only source is all validation."""
    halves = [split_images(d, 1.0 if s.get("validation_only") else fraction, seed)
              for d, s in zip(datasets, sources)]
    return [t for t, _ in halves], [v for _, v in halves]
