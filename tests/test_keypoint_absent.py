"""The keypoint head's "not in this box" cell (HypercolumnConfig.keypoint_absent): which joints
train it, what it does to the loss and the scores, and that a checkpoint keeps it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from hcviewer.data.synthetic import make_synthetic_dataset
from hcviewer.data.targets import keypoint_targets
from hcviewer.modeling import HypercolumnConfig, heatmaps_to_keypoints, keypoint_probabilities
from hcviewer.modeling.checkpoint import load_checkpoint
from hcviewer.train.losses import keypoint_loss
from hcviewer.train.trainer import TrainConfig, Trainer

BOX = torch.tensor([[0.0, 0.0, 20.0, 20.0]])


def test_absent_targets_are_the_unplaced_joints_of_labelled_people():
    # inside and visible; hidden but placed; unlabelled; labelled outside the box; never labelled
    person = torch.tensor([[[1.0, 1.0, 2.0], [19.0, 6.0, 1.0], [5.0, 5.0, 0.0], [25.0, 5.0, 2.0],
                            [5.0, 5.0, -1.0]]])
    owner = torch.tensor([0])
    assert keypoint_targets(person, BOX, owner, 4).tolist() == [[0, 7, -1, -1, -1]]
    assert keypoint_targets(person, BOX, owner, 4, absent=True).tolist() == [[0, 7, 16, 16, -1]]
    # A person with no labelled joint (a mask-only object, CCP's people) teaches nothing.
    nobody = torch.zeros(1, 5, 3)
    assert keypoint_targets(nobody, BOX, owner, 4, absent=True).eq(-1).all()


def test_the_absent_cell_takes_the_loss_and_the_score_of_an_absent_joint():
    logits = torch.full((1, 2, 4, 4), -20.0)
    logits[0, :, 1, 2] = 6.0  # both joints peak in one cell, far above the absent cell's 0
    targets = torch.tensor([[1 * 4 + 2, 16]])  # the first is there, the second absent
    per_joint = [keypoint_loss(logits[:, j:j + 1], targets[:, j:j + 1], absent=True).item() for j in range(2)]
    assert per_joint[0] < 0.01 < 5.0 < per_joint[1]  # a confident peak is wrong for the absent joint
    logits.requires_grad_(True)
    keypoint_loss(logits[:, 1:], targets[:, 1:], absent=True).backward()
    assert (logits.grad[0, 1] > 0).all()  # descending lowers every cell of the absent joint
    with pytest.raises(IndexError):
        keypoint_loss(logits.detach(), targets)  # without the cell, S*S is no cell


def test_scores_are_the_probability_of_being_in_the_box():
    logits = torch.full((1, 2, 4, 4), -20.0)
    logits[0, 0, 1, 2] = 8.0  # present, one cell
    logits[0, 1, 3, 3] = -3.0  # a peak far below the absent cell
    probabilities = keypoint_probabilities(logits, absent=True)
    assert probabilities[0, 0].sum() == pytest.approx(1.0, abs=1e-3)
    assert probabilities[0, 1].sum() == pytest.approx(1 / (1 + math.exp(3.0)), abs=1e-3)
    assert keypoint_probabilities(logits, absent=False)[0, 1].sum() == pytest.approx(1.0)
    keypoints = heatmaps_to_keypoints(logits, BOX * 2, absent=True)
    assert keypoints[0, 0, 2] > 0.99 and keypoints[0, 1, 2] < 0.05
    assert keypoints[0, 1, :2].tolist() == pytest.approx([35.0, 35.0])  # the peak stays where it is


def test_the_option_is_kept_in_the_checkpoint_and_old_ones_have_none(tmp_path):
    old = HypercolumnConfig(tasks=("keypoints",), keypoint_names=("nose",)).to_dict()
    del old["keypoint_absent"]  # a checkpoint written before the option
    assert HypercolumnConfig.from_dict(old).keypoint_absent is False
    with pytest.raises(ValueError, match="keypoint_absent must be true or false"):
        HypercolumnConfig.from_dict({**old, "keypoint_absent": "yes"})
    scenes = make_synthetic_dataset(4, seed=3, image_size=(96, 128))
    config = TrainConfig(taps=("s8", "top"), grid_size=2, output_size=16, tasks=("figure_ground", "keypoints"),
                         epochs=1, batch_images=2, max_side=128, pretrained=False, device="cpu",
                         keypoint_absent=True)
    trainer = Trainer(config, scenes, None, tmp_path, progress=False)
    history = trainer.fit()
    assert math.isfinite(history[0].losses["keypoints"])
    model, _ = load_checkpoint(tmp_path / "last.safetensors")
    assert model.config.keypoint_absent is True
    # Training it further keeps the cell: a run without it is refused, naming the fix.
    further = dataclasses.replace(config, init_from=str(tmp_path / "last.safetensors"))
    Trainer(further, scenes, None, tmp_path / "further", progress=False)
    with pytest.raises(ValueError, match=r"last.safetensors: its keypoint head has the 'not in this box' cell; "
                                         r"add --keypoint-absent"):
        Trainer(dataclasses.replace(further, keypoint_absent=False), scenes, None, tmp_path / "dropped",
                progress=False)


@pytest.mark.parametrize("absent", [True, False])
def test_the_predictor_scores_with_the_checkpoints_own_softmax(rgb_image, absent):
    """A keypoint bias far below the absent cell's 0 hides every joint of an absent-cell model;
    without the cell a bias shifts every cell alike and changes no score."""
    from conftest import tiny_person_config
    from hcviewer.inference import HypercolumnPredictor
    from hcviewer.modeling import build_hypercolumn

    torch.manual_seed(0)
    model = build_hypercolumn(tiny_person_config(keypoint_absent=absent))
    boxes = np.array([[40.0, 20.0, 120.0, 100.0]], np.float32)
    scores = []
    for bias in (0.0, -30.0):
        with torch.no_grad():
            model.heads["keypoints"].bias.fill_(bias)
        predictor = HypercolumnPredictor(model, "cpu", mirror=False)
        predictor.set_image(rgb_image)
        result = predictor.predict(boxes)
        scores.append(result.keypoints[0, :, 2])
    if absent:
        assert (scores[1] < 1e-9).all() and (scores[0] > 1e-3).all()
        assert result.keypoint_heatmaps.sum() < 1e-6  # the displayed heatmaps fade with them
    else:
        assert scores[1] == pytest.approx(scores[0], rel=1e-4)
