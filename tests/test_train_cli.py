"""hcviewer-train end to end on a small COCO folder written from generated scenes: train, resume,
eval (the command form the issue names) and ablate, with tiny networks on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from hcviewer.data.synthetic import make_synthetic_dataset
from hcviewer.modeling.checkpoint import load_checkpoint, read_checkpoint_info
from hcviewer.train.cli import main

pytestmark = pytest.mark.slow

TINY = ["--taps", "s8,top", "--grid", "2", "--image-size", "128", "--no-pretrained", "--device", "cpu",
        "--batch", "2"]


def write_coco(folder: Path, num_images: int = 6) -> tuple[Path, Path]:
    scenes = make_synthetic_dataset(num_images, seed=5, image_size=(96, 128))
    images_dir = folder / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for record in scenes.images:
        name = f"{len(images) + 1:04d}.png"
        cv2.imwrite(str(images_dir / name), cv2.cvtColor(record.pixels, cv2.COLOR_RGB2BGR))
        images.append({"id": len(images) + 1, "file_name": name, "width": record.width, "height": record.height})
        for obj in record.objects:
            mask = obj.mask.decode(record.height, record.width)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            x0, y0, x1, y1 = (float(v) for v in obj.box)
            annotations.append({"id": len(annotations) + 1, "image_id": images[-1]["id"], "category_id": 1,
                                "iscrowd": 0, "segmentation": rle, "area": float(mask.sum()),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "keypoints": obj.keypoints.reshape(-1).tolist(),
                                "num_keypoints": int((obj.keypoints[:, 2] > 0).sum())})
    categories = [{"id": 1, "name": "person", "keypoints": list(scenes.keypoint_names),
                   "skeleton": [[a + 1, b + 1] for a, b in scenes.skeleton]}]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, images_dir


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"))


def test_train_resume_eval(coco, tmp_path, capsys):
    annotations, images = coco
    out = tmp_path / "run"
    data = ["--coco", str(annotations), "--images", str(images), "--val-fraction", "0.34"]
    assert main(["train", *data, *TINY, "--epochs", "1", "--out", str(out), "--export", str(tmp_path / "m.safetensors")]) == 0
    info = read_checkpoint_info(tmp_path / "m.safetensors")
    assert info.weights_dtype == "float16" and info.config.tasks == ("figure_ground", "keypoints")
    assert info.metrics["methods"][0]["name"] == "all taps"
    assert (out / "eval.md").read_text().count("|") > 20

    assert not list(out.glob("epoch-*"))  # each epoch's weights only when asked for
    assert main(["resume", "--out", str(out), "--epochs", "2", "--keep-epochs"]) == 0
    assert read_checkpoint_info(out / "last.safetensors").training["epochs_done"] == 2
    assert [p.name for p in out.glob("epoch-*")] == ["epoch-2.safetensors"]
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs

    report_path = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--coco", str(annotations),
                 "--images", str(images), "--json", str(report_path), "--min-area", "64"]) == 0
    report = json.loads(report_path.read_text())
    names = [m["name"] for m in report["methods"]]
    assert names[:2] == ["all taps", "top alone"] and {"box", "ellipse", "grabcut"} <= set(names)
    for method in report["methods"]:
        assert 0.0 <= method["mask_iou"] <= 1.0
        assert set(method["segm_ap"]) >= {"AP", "AP50", "AP70"}
    assert report["methods"][0]["pck"] is not None
    assert "grabcut" in capsys.readouterr().out


def test_ablate_from_one_checkpoint(coco, tmp_path):
    annotations, images = coco
    run = tmp_path / "run"
    data = ["--coco", str(annotations), "--images", str(images)]
    assert main(["train", *data, *TINY, "--taps", "s4,s8,top", "--epochs", "1", "--layer-dropout", "0.5",
                 "--out", str(run)]) == 0
    out = tmp_path / "ablation"
    assert main(["ablate", *data, "--checkpoint", str(run / "best.safetensors"), "--out", str(out),
                 "--baselines", "ellipse"]) == 0
    table = json.loads((out / "ablation.json").read_text())
    names = [m["name"] for m in table["methods"]]
    assert names == ["all taps", "top alone", "without s4", "without s8", "without top", "ellipse"]
    assert "without s8" in (out / "ablation.md").read_text()


def test_ablate_trains_one_model_per_subset(coco, tmp_path):
    annotations, images = coco
    out = tmp_path / "ablation"
    assert main(["ablate", "--coco", str(annotations), "--images", str(images), *TINY, "--epochs", "1",
                 "--tasks", "figure_ground", "--out", str(out), "--baselines", "none"]) == 0
    names = [m["name"] for m in json.loads((out / "ablation.json").read_text())["methods"]]
    assert names == ["all taps", "top alone"]
    assert (out / "s8_top" / "best.safetensors").is_file() and (out / "top" / "best.safetensors").is_file()


def test_continue_from_a_checkpoint_with_a_frozen_trunk(coco, tmp_path, capsys):
    annotations, images = coco
    data = ["--coco", str(annotations), "--images", str(images), "--val-fraction", "0.34"]
    assert main(["train", *data, *TINY, "--epochs", "1", "--out", str(tmp_path / "first")]) == 0
    start = tmp_path / "first" / "last.safetensors"
    out = tmp_path / "second"
    assert main(["train", *data, *TINY, "--epochs", "1", "--out", str(out), "--init", str(start),
                 "--freeze-trunk", "s8", "--freeze-heads", "keypoints", "--no-augment"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["init_from"] == str(start.resolve()) and saved["freeze_trunk"] == "s8" and saved["augment"] is False
    assert saved["freeze_heads"] == ["keypoints"]
    start.rename(tmp_path / "moved.safetensors")  # resume takes its weights from resume.pt alone
    assert main(["resume", "--out", str(out), "--epochs", "2"]) == 0  # resume keeps the options
    resumed = read_checkpoint_info(out / "last.safetensors").training["config"]
    assert resumed["freeze_trunk"] == "s8" and resumed["freeze_heads"] == ["keypoints"]
    started = load_checkpoint(tmp_path / "moved.safetensors")[0].heads.keypoints.state_dict()
    ended = load_checkpoint(out / "last.safetensors")[0].heads.keypoints.state_dict()
    assert all(torch.equal(started[k], ended[k]) for k in started)  # kept through training and resuming
    capsys.readouterr()
    assert main(["train", *data, *TINY, "--out", str(tmp_path / "third"), "--init", str(tmp_path / "no.safetensors")]) == 2
    assert "no.safetensors: no such checkpoint file" in capsys.readouterr().err


def test_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["train", "--coco", str(tmp_path / "missing.json"), "--images", str(tmp_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "o")]) == 2
    assert "no data given" in capsys.readouterr().err
    assert main(["resume", "--out", str(tmp_path / "nothing")]) == 2
    assert "config.json" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, says", [
    ("--lr", "nan", "--lr must be a finite number above 0, got nan"),  # trained, wrote NaN weights
    ("--batch", "0", "--batch must be 1 or more, got 0"),  # ZeroDivisionError traceback
    ("--epochs", "-1", "--epochs must be 1 or more, got -1"),
    ("--image-size", "0", "--image-size must be 32 or more"),
    ("--inference-size", "0", "--inference-size must be 32 or more"),
    ("--val-fraction", "1.5", "--val-fraction must be from 0 to 1, got 1.5"),  # "no labels for ['keypoints']"
])
def test_numbers_no_run_can_use_are_refused_before_any_work(coco, tmp_path, capsys, option, value, says):
    annotations, images = coco
    out = tmp_path / "run"
    assert main(["train", "--coco", str(annotations), "--images", str(images), *TINY, "--out", str(out),
                 option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hcviewer-train: error: {says}" if says.endswith(value) else says in err
    assert not out.exists()


def test_no_images_to_train_on_is_said_so(coco, tmp_path, capsys):
    annotations, images = coco
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({**json.loads(annotations.read_text()), "images": [], "annotations": []}))
    for data, says in (([str(empty)], "the data sources hold none"),
                       ([str(annotations), "--val-fraction", "1"], "--val-fraction holds all 6 images out")):
        assert main(["train", "--coco", *data, "--images", str(images), *TINY, "--out", str(tmp_path / "run")]) == 2
        assert f"hcviewer-train: error: no images to train on: {says}" in capsys.readouterr().err


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(coco, tmp_path, capsys,
                                                                                    monkeypatch):
    from hcviewer.train import trainer

    calls = []

    def nan_from_the_third_step(*args):
        calls.append(1)
        losses = trainer_compute_losses(*args)
        return {k: v * float("nan") for k, v in losses.items()} if len(calls) >= 3 else losses

    trainer_compute_losses = trainer.compute_losses
    monkeypatch.setattr(trainer, "compute_losses", nan_from_the_third_step)
    annotations, images = coco
    out = tmp_path / "run"
    assert main(["train", "--coco", str(annotations), "--images", str(images), "--val-fraction", "0.34", *TINY,
                 "--epochs", "3", "--out", str(out)]) == 1  # 4 training images: 2 steps an epoch
    err = capsys.readouterr().err
    assert ("hcviewer-train: error: the figure_ground, keypoints loss became nan at step 1 of epoch 2; training "
            f"stopped before that step, and the checkpoints in {out}") in err
    model, info = load_checkpoint(out / "last.safetensors")  # refused if any weight were NaN
    assert info.training["epochs_done"] == 1 and len(calls) == 3


def test_torchrun_two_processes_on_the_cpu(coco, tmp_path):
    """DistributedDataParallel over gloo: both ranks train on their share, rank 0 writes. The
    rendezvous takes a free port (--standalone): a busy port (another run, another test) is no
    failure; here the default one is taken while it runs."""
    annotations, images = coco
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
               "-m", "hcviewer.train.cli", "train", "--coco", str(annotations), "--images", str(images),
               *TINY, "--epochs", "1", "--out", str(out), "--tasks", "figure_ground"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with _listening_if_free(29500):  # torchrun's default master port
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_checkpoint_info(out / "best.safetensors").training["epochs_done"] == 1
    assert (out / "eval.json").is_file()


@contextmanager
def _listening_if_free(port: int):
    """Hold ``port`` on localhost while the block runs (nothing to do when it is already taken)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            pass  # taken already: busy either way
        yield
