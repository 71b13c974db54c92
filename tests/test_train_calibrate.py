"""Mask threshold calibration: the chosen threshold, folded into the figure-ground bias, is where
the calibrated model's 0.5 cuts; the rule weighs data sets, not objects; the command writes a
checkpoint that eval scores as the original at the chosen threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hcviewer.data.synthetic import make_synthetic_dataset
from hcviewer.modeling.build import build_hypercolumn
from hcviewer.modeling.checkpoint import load_checkpoint, read_checkpoint_info
from hcviewer.train.calibrate import Calibration, calibrate_mask_threshold, fold_mask_threshold, mask_ious_by_threshold
from hcviewer.train.evaluate import evaluate, predict_subsets

from conftest import tiny_person_config


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_hypercolumn(tiny_person_config(), pretrained_backbone=False).eval()
    with torch.no_grad():
        for head in model.heads.values():
            for conv in head.classifiers.values():
                conv.weight.normal_(std=0.2)
    return model


@pytest.fixture(scope="module")
def scenes():
    return make_synthetic_dataset(3, seed=2, image_size=(96, 128))


def _figure_ground(model, record) -> torch.Tensor:
    boxes = np.stack([o.box for o in record.objects]).astype(np.float32)
    return predict_subsets(model, record.pixels, boxes, [model.taps], torch.device("cpu"))[model.taps]["figure_ground"]


def test_folding_moves_the_probability_half_to_the_threshold(model, scenes):
    record = scenes.images[0]
    before = _figure_ground(model, record).sigmoid()
    calibrated = build_hypercolumn(model.config, pretrained_backbone=False).eval()
    calibrated.load_state_dict(model.state_dict())
    fold_mask_threshold(calibrated, 0.3)
    after = _figure_ground(calibrated, record).sigmoid()
    assert not torch.allclose(before, after)
    torch.testing.assert_close(torch.logit(after.double()), torch.logit(before.double()) + math.log(0.7 / 0.3),
                               atol=1e-4, rtol=1e-4)
    margin = (before - 0.3).abs() > 1e-4  # away from the cut, where rounding could tip a pixel
    assert torch.equal((after >= 0.5)[margin], (before >= 0.3)[margin])
    for name in ("keypoints", "parts"):  # the other heads are untouched
        torch.testing.assert_close(calibrated.heads[name].bias, model.heads[name].bias)
    with pytest.raises(ValueError, match="between 0 and 1"):
        fold_mask_threshold(calibrated, 1.0)


def test_the_rule_weighs_each_set_alike_not_each_object():
    # The crowded set (1,000 objects) prefers 0.6 a little; the other set prefers 0.4 by far.
    # Pooled over objects 0.6 would win; each set's mean counted once, 0.4 wins.
    calibration = Calibration((0.4, 0.6), ["crowded", "other"], [1000, 10], np.array([[0.60, 0.62], [0.90, 0.70]]))
    assert calibration.best == 0.4
    assert "0.40 (chosen)" in calibration.markdown()
    assert calibration.to_json()["threshold"] == 0.4


def test_ious_at_one_half_are_those_of_eval(model, scenes):
    ious = mask_ious_by_threshold(model, scenes, (0.3, 0.5), min_area=64)
    report = evaluate(model, scenes, [model.taps], baselines=(), min_area=64, progress=False)
    assert ious.shape == (report.num_objects, 2)
    assert ious[:, 1].mean() == pytest.approx(report.methods[0].mask_iou, abs=1e-9)
    calibration = calibrate_mask_threshold(model, [scenes], (0.3, 0.5), min_area=64)
    assert calibration.objects == [report.num_objects]
    np.testing.assert_allclose(calibration.iou[0], ious.mean(axis=0))


@pytest.mark.slow
def test_calibrate_command_writes_a_checkpoint_that_cuts_at_the_chosen_threshold(tmp_path, capsys):
    from test_train_cli import TINY, write_coco

    from hcviewer.train.cli import main

    annotations, images = write_coco(tmp_path / "coco")
    data = ["--coco", str(annotations), "--images", str(images)]
    assert main(["train", *data, *TINY, "--epochs", "1", "--tasks", "figure_ground", "--out", str(tmp_path / "run")]) == 0
    original = tmp_path / "run" / "best.safetensors"
    calibrated = tmp_path / "calibrated.safetensors"
    capsys.readouterr()
    assert main(["calibrate", "--checkpoint", str(original), "--out", str(calibrated), *data, "--split", "all",
                 "--thresholds", "0.2,0.35,0.65", "--min-area", "64"]) == 0  # 0.5 left out: a real shift
    assert "(chosen)" in capsys.readouterr().out
    record = read_checkpoint_info(calibrated).training["mask_calibration"]
    chosen = record["threshold"]
    assert chosen in (0.2, 0.35, 0.65) and record["sets"] and record["calibrated_from"] == str(original)
    assert record["mirror"] is True  # scored as the app answers
    plain = tmp_path / "plain.safetensors"
    assert main(["calibrate", "--checkpoint", str(original), "--out", str(plain), *data, "--split", "all",
                 "--thresholds", "0.2,0.35,0.65", "--min-area", "64", "--no-mirror"]) == 0
    plain_record = read_checkpoint_info(plain).training["mask_calibration"]
    assert plain_record["mirror"] is False
    assert read_checkpoint_info(calibrated).weights_dtype == read_checkpoint_info(original).weights_dtype

    dataset = make_coco_dataset(annotations, images)
    before, _ = load_checkpoint(original)
    after, _ = load_checkpoint(calibrated)
    at_chosen = evaluate(before, dataset, [before.taps], baselines=(), min_area=64, threshold=chosen, progress=False)
    at_half = evaluate(after, dataset, [after.taps], baselines=(), min_area=64, progress=False)
    assert at_half.methods[0].mask_iou == pytest.approx(at_chosen.methods[0].mask_iou, abs=1e-3)

    assert main(["calibrate", "--checkpoint", str(calibrated), "--out", str(tmp_path / "twice.safetensors"),
                 *data]) == 2
    assert "already calibrated" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint", str(original), "--out", str(tmp_path / "x.safetensors"), *data,
                 "--thresholds", "0.5,1.5"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err
    blocked = tmp_path / "a file"
    blocked.write_text("")
    assert main(["calibrate", "--checkpoint", str(original), "--out", str(blocked / "x.safetensors"), *data]) == 1
    assert "a file" in capsys.readouterr().err


def make_coco_dataset(annotations, images):
    from hcviewer.data.coco import read_coco

    return read_coco([annotations], images)
