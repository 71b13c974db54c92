"""Training on generated scenes on the CPU: the loss goes down, resume continues where it stopped,
the same seed gives the same weights, Ctrl-C leaves a state to resume from."""

from __future__ import annotations

import csv
import random

import pytest
import torch

from hcviewer.data.synthetic import make_synthetic_dataset
from hcviewer.data.targets import jitter_boxes, keypoint_targets, mask_targets, part_targets
from hcviewer.data.training import BoxTrainingDataset, TargetSpec
from hcviewer.modeling.checkpoint import load_checkpoint, read_checkpoint_info
from hcviewer.modeling.mirror import flip_permutation
from hcviewer.train.trainer import TrainConfig, Trainer, TrainingInterrupted, sample_taps


def tiny_config(**overrides) -> TrainConfig:
    base = dict(taps=("s8", "s16", "top"), grid_size=2, output_size=16,
                tasks=("figure_ground", "parts", "keypoints"), epochs=2, batch_images=2, lr=1e-3,
                warmup_steps=1, max_side=128, pretrained=False, device="cpu")
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def scenes():
    return make_synthetic_dataset(6, seed=3, image_size=(96, 128))


def test_box_targets_follow_the_object(scenes):
    spec = TargetSpec(16, scenes.keypoint_names, len(scenes.part_names))
    sample = BoxTrainingDataset(scenes, spec, max_side=128, augment=False)[0]
    record = next(im for im in scenes.images if im.objects)
    assert sample.boxes.shape[0] == sample.figure_ground.shape[0] == sample.parts.shape[0]
    # Ground-truth boxes are tight: the mask fills part of each box, and touches its borders.
    assert torch.all(sample.figure_ground.mean((1, 2)) > 0.1)
    assert torch.all(sample.figure_ground[:, :, 0].amax(1) > 0) and torch.all(sample.figure_ground[:, 0].amax(1) > 0)
    # Part labels lie inside the figure.
    assert torch.all((sample.parts > 0) <= (sample.figure_ground > 0))
    assert sample.keypoints.shape == (len(sample.boxes), len(scenes.keypoint_names))
    assert sample.image.shape[1:] == (record.height, record.width)


def test_target_helpers_on_hand_made_cases():
    masks = torch.zeros(1, 20, 20)
    masks[0, :, :10] = 1  # left half is the object
    boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    owner = torch.zeros(1, dtype=torch.long)
    fg = mask_targets(masks, boxes, owner, 4)
    assert torch.allclose(fg[0, :, :2], torch.ones(4, 2)) and torch.allclose(fg[0, :, 2:], torch.zeros(4, 2))
    parts = part_targets(masks.long() * 2, boxes, owner, 4)
    assert parts[0, 0].tolist() == [2, 2, 0, 0]
    assert part_targets(torch.full((1, 20, 20), -1), boxes, owner, 4).eq(-1).all()
    keypoints = torch.tensor([[[1.0, 1.0, 2.0], [19.0, 6.0, 1.0], [5.0, 5.0, 0.0], [25.0, 5.0, 2.0]]])
    assert keypoint_targets(keypoints, boxes, owner, 4).tolist() == [[0, 1 * 4 + 3, -1, -1]]
    generator = torch.Generator().manual_seed(0)
    gt = torch.tensor([[10.0, 10.0, 50.0, 90.0]])
    jittered, index = jitter_boxes(gt, 3, 0.7, generator)
    from torchvision.ops import box_iou
    assert len(jittered) == 4 and index.eq(0).all()
    assert torch.all(box_iou(jittered, gt) >= 0.7)
    assert flip_permutation(("nose", "left_eye", "right_eye")) == [0, 2, 1]


def test_layer_dropout_draws_proper_subsets():
    rng = random.Random(0)
    taps = ("a", "b", "c")
    draws = [sample_taps(taps, 1.0, rng) for _ in range(50)]
    assert all(d and len(d) < 3 and set(d) <= set(taps) for d in draws)
    assert sample_taps(taps, 0.0, rng) == taps


@pytest.mark.slow
def test_loss_goes_down_and_checkpoints_load(scenes, tmp_path):
    trainer = Trainer(tiny_config(epochs=10, lr=3e-3), scenes, None, tmp_path, progress=False)
    history = trainer.fit()
    for task in ("figure_ground", "parts", "keypoints"):
        assert history[-1].losses[task] < history[0].losses[task], task
    assert history[-1].losses["figure_ground"] < 0.95 * history[0].losses["figure_ground"]
    for name in ("last.safetensors", "best.safetensors", "resume.pt", "metrics.csv", "config.json"):
        assert (tmp_path / name).is_file()
    with open(tmp_path / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 10
    model, info = load_checkpoint(tmp_path / "last.safetensors")
    assert info.config.tasks == ("figure_ground", "parts", "keypoints")
    assert info.training["epochs_done"] == 10
    assert torch.equal(model.state_dict()["heads.parts.bias"], trainer.model.state_dict()["heads.parts.bias"])


def _interrupt_at_step(trainer: Trainer, monkeypatch, at: int) -> None:
    calls = {"n": 0}
    original = trainer._step

    def step_then_interrupt(samples):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return original(samples)

    monkeypatch.setattr(trainer, "_step", step_then_interrupt)


@pytest.mark.slow
def test_same_seed_same_weights_and_resume_matches_one_run(scenes, tmp_path, monkeypatch):
    straight = Trainer(tiny_config(epochs=2), scenes, None, tmp_path / "a", progress=False)
    straight.fit()
    again = Trainer(tiny_config(epochs=2), scenes, None, tmp_path / "b", progress=False)
    again.fit()
    interrupted = Trainer(tiny_config(epochs=2), scenes, None, tmp_path / "c", progress=False)
    _interrupt_at_step(interrupted, monkeypatch, interrupted.steps_per_epoch + 1)  # first step of epoch 2
    with pytest.raises(TrainingInterrupted):
        interrupted.fit()
    resumed = Trainer(tiny_config(epochs=2), scenes, None, tmp_path / "c", progress=False)
    resumed.resume()
    assert resumed.start_epoch == 1
    resumed.fit()
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, again.model.state_dict()[name]), name
        # Resuming restores weights, optimizer, schedule and random state: same result as one run.
        assert torch.allclose(tensor, resumed.model.state_dict()[name], atol=1e-6), name


def test_keep_epochs_writes_each_epochs_weights(scenes, tmp_path):
    trainer = Trainer(tiny_config(epochs=2, keep_epochs=True), scenes, None, tmp_path, progress=False)
    trainer.fit()
    assert [read_checkpoint_info(tmp_path / f"epoch-{n}.safetensors").training["epochs_done"] for n in (1, 2)] == [1, 2]
    first, second, last = (load_checkpoint(tmp_path / f"{name}.safetensors")[0].state_dict()
                           for name in ("epoch-1", "epoch-2", "last"))
    assert all(torch.equal(tensor, second[k]) for k, tensor in last.items())
    assert not all(torch.equal(tensor, last[k]) for k, tensor in first.items())  # the first epoch's, not the last's


def test_interrupt_saves_a_state_to_resume(scenes, tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(epochs=3), scenes, None, tmp_path, progress=False)
    _interrupt_at_step(trainer, monkeypatch, 2)
    with pytest.raises(TrainingInterrupted, match="hcviewer-train resume"):
        trainer.fit()
    assert read_checkpoint_info(tmp_path / "last.safetensors").config.tasks[0] == "figure_ground"
    later = Trainer(tiny_config(epochs=3), scenes, None, tmp_path, progress=False)
    later.resume()
    assert (later.start_epoch, later.start_step) == (0, 1)  # continues after the last finished step


def test_resume_refuses_a_different_network(scenes, tmp_path):
    Trainer(tiny_config(epochs=1), scenes, None, tmp_path, progress=False).fit()
    other = Trainer(tiny_config(epochs=1, grid_size=3), scenes, None, tmp_path, progress=False)
    with pytest.raises(ValueError, match="different network"):
        other.resume()


def test_freeze_trunk_keeps_the_early_layers(scenes, tmp_path):
    trainer = Trainer(tiny_config(epochs=1, freeze_trunk="s8"), scenes, None, tmp_path, progress=False)
    before = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    trainer.fit()
    after = trainer.model.backbone.state_dict()
    s8_node = int(trainer.model.backbone.spec.tap("s8").node)
    frozen = [k for k in before if k.startswith("body.") and int(k.split(".")[1]) <= s8_node]
    trained = [k for k in before if k.startswith("body.") and int(k.split(".")[1]) > s8_node and "weight" in k
               and "running" not in k]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_freeze_trunk_names_the_taps_it_knows(scenes, tmp_path):
    with pytest.raises(ValueError, match="conv9.*available.*s4"):
        Trainer(tiny_config(epochs=1, freeze_trunk="conv9"), scenes, None, tmp_path, progress=False)
    everything = Trainer(tiny_config(epochs=1, freeze_trunk="all"), scenes, None, tmp_path / "all", progress=False)
    assert not any(p.requires_grad for p in everything.model.backbone.parameters())
    assert all(p.requires_grad for p in everything.model.heads.parameters())


def test_freeze_heads_keeps_those_heads_and_trains_the_rest(scenes, tmp_path):
    trainer = Trainer(tiny_config(epochs=1, freeze_heads=("parts", "keypoints")), scenes, None, tmp_path,
                      progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    kept = [k for k in before if k.startswith(("heads.parts.", "heads.keypoints."))]
    trained = [k for k in before if k.startswith("heads.figure_ground.")]
    assert kept and trained
    assert all(torch.equal(before[k], after[k]) for k in kept)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("backbone.body."))


def test_freeze_heads_names_the_heads_it_knows(scenes, tmp_path):
    with pytest.raises(ValueError, match="--freeze-heads part: this network has no such head.*parts"):
        Trainer(tiny_config(epochs=1, freeze_heads=("part",)), scenes, None, tmp_path, progress=False)
    with pytest.raises(ValueError, match="leaves nothing to train"):
        Trainer(tiny_config(epochs=1, freeze_trunk="all", freeze_heads=("figure_ground", "parts", "keypoints")),
                scenes, None, tmp_path / "all", progress=False)


def test_init_starts_from_a_checkpoint_of_the_same_network(scenes, tmp_path):
    first = Trainer(tiny_config(epochs=1), scenes, None, tmp_path / "first", progress=False)
    first.fit()
    start = tmp_path / "first" / "last.safetensors"
    second = Trainer(tiny_config(epochs=1, init_from=str(start)), scenes, None, tmp_path / "second", progress=False)
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name]), name
    with pytest.raises(ValueError, match=r"last.safetensors.*another network.*grid_size 2 \(this run: 3\)"):
        Trainer(tiny_config(epochs=1, grid_size=3, init_from=str(start)), scenes, None, tmp_path / "third",
                progress=False)


def test_no_augment_trains_on_the_boxes_as_annotated(scenes, tmp_path):
    trainer = Trainer(tiny_config(epochs=1, augment=False), scenes, None, tmp_path, progress=False)
    trainer.dataset.set_epoch(0)
    first = trainer.dataset[0]
    trainer.dataset.set_epoch(5)
    later = trainer.dataset[0]
    assert torch.equal(first.image, later.image) and torch.equal(first.boxes, later.boxes)
    record = trainer.dataset.images[0]
    assert first.image.shape[1:] == (record.height, record.width)


def test_scale_jitter_zooms_the_training_size_image_by_at_most_a_quarter(scenes):
    spec = TargetSpec(16, scenes.keypoint_names, len(scenes.part_names))
    dataset = BoxTrainingDataset(scenes, spec, max_side=128, augment=True)
    record = dataset.images[0]
    factors = []
    for epoch in range(12):
        dataset.set_epoch(epoch)
        sample = dataset[0]
        height, width = sample.image.shape[1:]
        fy, fx = height / record.height, width / record.width
        assert fy == pytest.approx(fx, abs=2 / min(record.height, record.width))  # both sides alike
        factors.append(fy)
    assert 0.74 <= min(factors) and max(factors) <= 1.26 and max(factors) - min(factors) > 0.2
