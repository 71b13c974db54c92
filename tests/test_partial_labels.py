"""Partial labels: every box trains only the heads its object is labelled for, so data sets that
label different things (masks, parts, keypoints) mix in one run, and keypoint-only COCO files
train the keypoint head alone."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from hcviewer.data.coco import read_coco
from hcviewer.data.records import AnnotatedDataset, ObjectAnnotation
from hcviewer.data.synthetic import make_synthetic_dataset
from hcviewer.data.training import BoxTrainingDataset, TargetSpec
from hcviewer.modeling.build import build_hypercolumn
from hcviewer.train.losses import figure_ground_loss, keypoint_loss, part_loss
from hcviewer.train.trainer import TrainConfig, Trainer, batch_inputs, compute_losses, model_config


@pytest.fixture(scope="module")
def scenes() -> AnnotatedDataset:
    return make_synthetic_dataset(4, seed=3, image_size=(96, 128))


def spec_of(dataset: AnnotatedDataset, **changes) -> TargetSpec:
    params = dict(output_size=16, keypoint_names=dataset.keypoint_names, num_parts=len(dataset.part_names))
    return TargetSpec(**(params | changes))


def strip(dataset: AnnotatedDataset, mask: bool = False, parts: bool = False, keypoints: bool = False
          ) -> AnnotatedDataset:
    """A copy whose objects lose the named labels."""
    out = copy.deepcopy(dataset)
    for image in out.images:
        for obj in image.objects:
            obj.mask = None if mask else obj.mask
            obj.parts = None if parts else obj.parts
            obj.keypoints = None if keypoints else obj.keypoints
    return out


def test_losses_ignore_unlabelled_boxes():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 4, 4, requires_grad=True)
    targets = torch.rand(3, 4, 4)
    targets[1] = -1  # box 1 has no mask
    loss = figure_ground_loss(logits, targets)
    loss.backward()
    assert torch.all(logits.grad[1] == 0) and torch.all(logits.grad[[0, 2]] != 0)
    both = torch.nn.functional.binary_cross_entropy_with_logits(logits[[0, 2], 0], targets[[0, 2]])
    assert loss.item() == pytest.approx(both.item())
    nothing = figure_ground_loss(logits, torch.full((3, 4, 4), -1.0))
    assert nothing.item() == 0 and nothing.requires_grad

    part_logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    part_targets = torch.randint(0, 3, (2, 4, 4))
    part_targets[0] = -1
    part_loss(part_logits, part_targets).backward()
    assert torch.all(part_logits.grad[0] == 0) and torch.any(part_logits.grad[1] != 0)

    kp_logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    keypoint_loss(kp_logits, torch.tensor([[-1, -1], [3, -1]])).backward()
    assert torch.all(kp_logits.grad[0] == 0) and torch.all(kp_logits.grad[1, 1] == 0)
    assert torch.any(kp_logits.grad[1, 0] != 0)


def test_each_box_gets_targets_only_for_its_labels(scenes):
    mixed = copy.deepcopy(scenes)
    first = mixed.images[0].objects
    first[0].mask = None  # keypoints and parts only
    first[0].parts = None
    if len(first) > 1:
        first[1].keypoints = None  # mask and parts only
    sample = BoxTrainingDataset(mixed, spec_of(mixed), max_side=128, augment=False)[0]
    assert len(sample.boxes) == len(first)
    assert torch.all(sample.figure_ground[0] == -1) and torch.all(sample.parts[0] == -1)
    assert torch.any(sample.keypoints[0] >= 0)
    assert torch.all(sample.figure_ground[1:] >= 0) and torch.all(sample.parts[1:] >= 0)
    if len(first) > 1:
        assert torch.all(sample.keypoints[1] == -1)


def test_objects_without_a_wanted_label_are_no_training_boxes(scenes):
    keypoints_only = strip(scenes, mask=True, parts=True)
    spec = spec_of(scenes)
    assert len(BoxTrainingDataset(keypoints_only, spec, max_side=128)) == len(scenes.images)
    # A network without a keypoint head has nothing to learn from them.
    without_keypoints = spec_of(scenes, keypoint_names=())
    assert len(BoxTrainingDataset(keypoints_only, without_keypoints, max_side=128)) == 0
    assert len(BoxTrainingDataset(strip(scenes, mask=True, parts=True, keypoints=True), spec, max_side=128)) == 0


def test_a_box_without_mask_gives_no_figure_ground_gradient(scenes):
    """Keypoint-only boxes: the figure-ground head gets exactly zero gradient, the keypoint head does not."""
    data = strip(scenes, mask=True, parts=True)
    config = TrainConfig(taps=("s8", "top"), grid_size=2, output_size=16, tasks=("figure_ground", "keypoints"),
                         max_side=128, pretrained=False, device="cpu")
    network_config = model_config(config, data)
    model = build_hypercolumn(network_config)
    samples = [BoxTrainingDataset(data, spec_of(data, num_parts=0), max_side=128, seed=1)[i] for i in range(2)]
    images, rois, class_index = batch_inputs(samples, network_config, torch.device("cpu"))
    losses = compute_losses(model(images, rois, class_index), samples, torch.device("cpu"))
    sum(losses.values()).backward()
    assert losses["figure_ground"].item() == 0
    figure_ground = [p.grad for p in model.heads["figure_ground"].parameters()]
    assert all(g is None or torch.all(g == 0) for g in figure_ground)
    assert any(g is not None and torch.any(g != 0) for g in (p.grad for p in model.heads["keypoints"].parameters()))


def test_the_checkpoint_records_the_categories_each_head_was_trained_on(scenes):
    data = copy.deepcopy(scenes)
    car = ObjectAnnotation(np.array([2, 2, 40, 30], np.float32), "car", mask=data.images[0].objects[0].mask)
    data.images[0].objects.append(car)
    config = model_config(TrainConfig(tasks=("figure_ground", "parts", "keypoints")), data)
    assert config.keypoint_categories == ("person",) and config.part_categories == ("person",)
    assert config.applies_to("keypoints", "person") and not config.applies_to("keypoints", "car")
    with pytest.raises(ValueError, match="keypoints"):
        model_config(TrainConfig(tasks=("figure_ground", "keypoints")), strip(scenes, keypoints=True))


def write_keypoint_only_coco(folder, scenes: AnnotatedDataset):
    """A pose-stock-like COCO file: boxes and 17 keypoints per person, no segmentation."""
    import cv2

    images_dir = folder / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for record in scenes.images:
        name = f"{len(images) + 1}.png"
        cv2.imwrite(str(images_dir / name), record.pixels[..., ::-1])
        images.append({"id": len(images) + 1, "file_name": name, "width": record.width, "height": record.height})
        for obj in record.objects:
            x0, y0, x1, y1 = (float(v) for v in obj.box)
            annotations.append({"id": len(annotations) + 1, "image_id": len(images), "category_id": 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0,
                                "keypoints": obj.keypoints.reshape(-1).tolist()})
    categories = [{"id": 1, "name": "person", "keypoints": list(scenes.keypoint_names),
                   "skeleton": [[a + 1, b + 1] for a, b in scenes.skeleton]}]
    path = folder / "person_keypoints.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path, images_dir


def test_keypoint_only_coco_trains_the_keypoint_head_alone(scenes, tmp_path):
    """Mixed with a masked set: the keypoint-only photos add keypoint boxes, and the loss weights
    pick the heads (a weight of 0 leaves that head as it was)."""
    path, images_dir = write_keypoint_only_coco(tmp_path / "pose", scenes)
    pose = read_coco(path, images_dir)
    assert all(o.mask is None and o.keypoints is not None for im in pose.images for o in im.objects)
    masked = strip(scenes, keypoints=True, parts=True)
    from hcviewer.data.records import concatenate

    mixed = concatenate([masked, pose])
    config = TrainConfig(taps=("s8", "top"), grid_size=2, output_size=16, tasks=("figure_ground", "keypoints"),
                         max_side=128, pretrained=False, device="cpu", epochs=1, warmup_steps=1,
                         loss_weights={"figure_ground": 0.0})
    trainer = Trainer(config, mixed, None, tmp_path / "run", progress=False)
    assert len(trainer.dataset) == 2 * len(scenes.images)
    before = {k: v.clone() for k, v in trainer.model.heads.state_dict().items()}
    history = trainer.fit()
    after = trainer.model.heads.state_dict()
    assert torch.equal(before["figure_ground.bias"], after["figure_ground.bias"])
    assert not torch.equal(before["keypoints.bias"], after["keypoints.bias"])
    assert history[0].losses["keypoints"] > 0 and history[0].losses["figure_ground"] > 0
    assert trainer.model_config.keypoint_categories == ("person",)


def test_unknown_loss_weight_is_refused(scenes, tmp_path):
    config = TrainConfig(taps=("s8", "top"), grid_size=2, output_size=16, tasks=("figure_ground",),
                         max_side=128, pretrained=False, device="cpu", loss_weights={"parts": 1.0})
    with pytest.raises(ValueError, match="parts"):
        Trainer(config, scenes, None, tmp_path, progress=False)


def test_eval_scores_each_set_on_the_labels_it_has(scenes):
    """A masked set and a keypoint-only set: each gets its own figures, and together they are
    scored as one ground truth (masks from the first, keypoints from the second)."""
    from hcviewer.train.evaluate import evaluate_sets

    masks_only, keypoints_only = strip(scenes, keypoints=True), strip(scenes, mask=True)
    masks_only.name, keypoints_only.name = "masks", "poses"
    config = model_config(TrainConfig(taps=("s8", "top"), grid_size=2, output_size=16,
                                      tasks=("figure_ground", "parts", "keypoints")), scenes)
    model = build_hypercolumn(config)
    report = evaluate_sets(model, [masks_only, keypoints_only], baselines=("box",), min_area=64, progress=False)
    by_set = {r.data: r for r in report.sets}
    assert by_set["masks"].num_keypoint_objects == 0 and by_set["poses"].num_objects == 0
    assert report.num_objects == by_set["masks"].num_objects > 0
    assert report.num_keypoint_objects == by_set["poses"].num_keypoint_objects > 0
    network = {name: r.method("all taps") for name, r in by_set.items()}
    assert network["masks"].pck is None and network["poses"].mask_iou != network["poses"].mask_iou  # nan
    assert 0 <= network["poses"].pck <= 1 and network["masks"].part_iou is not None
    assert report.method("all taps").pck == network["poses"].pck
    assert report.method("box").mask_iou == pytest.approx(by_set["masks"].method("box").mask_iou)
    assert "### poses" in report.markdown()


def test_eval_adds_a_refined_row(scenes):
    from hcviewer.train.evaluate import evaluate_sets

    config = model_config(TrainConfig(taps=("s8", "top"), grid_size=2, output_size=16,
                                      tasks=("figure_ground", "keypoints")), scenes)
    report = evaluate_sets(build_hypercolumn(config), [scenes], baselines=(), min_area=64, refine="guided",
                           progress=False)
    names = [m.name for m in report.methods]
    assert names == ["all taps", "top alone", "all taps, guided refinement"]
    refined, plain = report.methods[2], report.methods[0]
    assert len(refined.ious) == len(plain.ious) and refined.ious != plain.ious and refined.pck is None
