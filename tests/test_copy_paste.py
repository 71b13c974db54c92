"""Copy-paste augmentation (Ghiasi et al. 2021) on hand-made arrays: pasted pixels come from the
source, the objects underneath lose what is covered (mask, parts, visible keypoints) or are
dropped, pasted objects keep their labels moved with the jitter; in training it is off by
default, seeded, and never reaches validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hcviewer.data import training
from hcviewer.data.copy_paste import DROP_COVERED, copy_paste, object_region, paste, place
from hcviewer.data.synthetic import make_synthetic_dataset
from hcviewer.data.training import BoxTrainingDataset, PreparedImage, TargetSpec
from hcviewer.train.trainer import TrainConfig, Trainer

H, W = 40, 60


def scene(colour: int, objects: list[tuple[tuple[int, int, int, int], np.ndarray | None]],
          parts: bool = False) -> PreparedImage:
    """An image of one ``colour``; each object a filled rectangle (x0, y0, x1, y1) as its mask (and
    part 1 when ``parts``) with its keypoints [J, 3] (or none)."""
    masks = np.zeros((len(objects), H, W), np.uint8)
    keypoints = np.zeros((len(objects), 2, 3), np.float32)
    for i, ((x0, y0, x1, y1), kp) in enumerate(objects):
        masks[i, y0:y1, x0:x1] = 1
        if kp is not None:
            keypoints[i] = kp
    index = np.arange(len(objects), dtype=np.int64)
    return PreparedImage(np.full((H, W, 3), colour, np.uint8), np.array([o[0] for o in objects], np.float32),
                         masks, index, keypoints, masks.copy() if parts else np.zeros((0, H, W), np.uint8),
                         index.copy() if parts else np.full(len(objects), -1, np.int64),
                         ["thing"] * len(objects))


def test_pasted_pixels_come_from_the_source_and_cover_the_target():
    target = scene(10, [((0, 0, 30, 20), None)], parts=True)
    pasted = scene(200, [((20, 10, 50, 30), None)])
    result = paste(target, pasted)
    cover = pasted.masks[0] > 0
    assert (result.rgb[cover] == 200).all() and (result.rgb[~cover] == 10).all()
    # The target's object loses exactly the covered pixels, from its mask and its part map.
    assert np.array_equal(object_region(result, 0), (target.masks[0] > 0) & ~cover)
    assert np.array_equal(result.parts[result.part_index[0]] > 0, (target.parts[0] > 0) & ~cover)
    # Its box is what stays visible (an L shape spans the whole box here); the pasted object follows.
    assert result.boxes.tolist() == [[0, 0, 30, 20], [20, 10, 50, 30]]
    assert result.categories == ["thing", "thing"]
    assert np.array_equal(object_region(result, 1), cover)


def test_a_box_shrinks_to_what_stays_visible():
    target = scene(10, [((0, 0, 30, 20), None)])
    result = paste(target, scene(200, [((15, 0, 40, 25), None)]))
    assert result.boxes[0].tolist() == [0, 0, 15, 20]


def test_keypoints_under_the_paste_become_hidden():
    under, outside, unlabelled = [25.5, 15.5, 2], [2.5, 2.5, 2], [25.5, 15.5, 0]
    target = scene(10, [((0, 0, 30, 20), np.array([under, outside])), ((0, 0, 30, 20), np.array([unlabelled, outside]))])
    result = paste(target, scene(200, [((20, 10, 50, 30), None)]))
    assert result.keypoints[0, :, 2].tolist() == [1, 2]  # v=1: labelled, hidden (still trained, as COCO's)
    assert result.keypoints[1, :, 2].tolist() == [0, 2]
    assert np.array_equal(result.keypoints[:2, :, :2], target.keypoints[:, :, :2])


def test_objects_covered_almost_completely_are_dropped():
    target = scene(10, [((0, 0, 20, 20), None), ((30, 0, 50, 20), None)])
    # 19 of 20 columns of the first object (95%) and half of the second are covered.
    pasted = scene(200, [((1, 0, 20, 20), None), ((40, 0, 60, 30), None)])
    result = paste(target, pasted)
    assert len(result.categories) == 3  # the second object and the two pasted ones
    assert result.boxes[0].tolist() == [30, 0, 40, 20]
    assert np.array_equal(object_region(result, 0), (target.masks[1] > 0) & ~(pasted.masks[1] > 0))
    # An object without a mask is judged by its box.
    boxed = scene(10, [((0, 0, 20, 20), None)])
    boxed.mask_index[:] = -1
    assert len(paste(boxed, scene(200, [((1, 0, 20, 20), None)])).categories) == 1
    assert len(paste(boxed, scene(200, [((10, 0, 20, 20), None)])).categories) == 2
    assert DROP_COVERED == 0.9


def test_pasted_objects_move_with_the_jitter_exactly():
    source = scene(200, [((4, 6, 10, 12), np.array([[5.5, 7.25, 2], [9.0, 11.0, 1]]))], parts=True)
    placed = place(source, (H * 2, W * 2), (5, -3), (H, W), min_object_side=8)
    expected = np.zeros((H, W), bool)
    expected[6 * 2 + 5:12 * 2 + 5, 4 * 2 - 3:10 * 2 - 3] = True
    assert np.array_equal(object_region(placed, 0), expected)
    assert np.array_equal(placed.parts[0] > 0, expected)
    assert placed.boxes[0].tolist() == [5, 17, 17, 29]
    assert placed.keypoints[0].tolist() == [[5.5 * 2 - 3, 7.25 * 2 + 5, 2], [15.0, 27.0, 1]]
    # Cropped off the canvas: keypoints there become unlabelled, the box is the visible part.
    cropped = place(source, (H * 2, W * 2), (-15, -3), (H, W), min_object_side=8)
    assert cropped.boxes[0].tolist() == [5, 0, 17, 9] and cropped.keypoints[0, :, 2].tolist() == [0, 1]
    # Scaled under the smallest usable side, an object is left out.
    assert place(source, (H // 2, W // 2), (0, 0), (H, W), min_object_side=8).categories == []


@pytest.mark.parametrize("seed", range(8))
def test_copy_paste_keeps_keypoints_on_their_pasted_object(seed):
    """Through random flips, scales and offsets the pasted object's left and right keypoints sit
    on its left and right ends (they swap names when flipped), and the inputs stay unchanged."""
    source = scene(200, [((10, 10, 50, 30), np.array([[10.5, 20.0, 2], [49.5, 20.0, 2]]))])
    target = scene(10, [((0, 0, 8, 8), None)])
    before = [a.copy() for a in (source.rgb, source.masks, source.keypoints, target.rgb, target.masks)]
    result = copy_paste(target, source, np.random.default_rng(seed), keypoint_flip=[1, 0], scale_range=(0.5, 1.5))
    for a, b in zip(before, (source.rgb, source.masks, source.keypoints, target.rgb, target.masks)):
        assert np.array_equal(a, b)
    if len(result.categories) == 1:  # the target object, covered or not, with nothing pasted
        return
    x0, _, x1, _ = result.boxes[-1]
    left, right = result.keypoints[-1]
    if left[2]:
        assert abs(left[0] - x0) < 1.5 and left[2] == 2
    if right[2]:
        assert abs(right[0] - x1) < 1.5 and right[2] == 2


def synthetic_samples(copy_paste_probability: float | None, augment: bool = True, count: int = 4):
    scenes = make_synthetic_dataset(count, seed=3, image_size=(64, 80))
    spec = TargetSpec(16, scenes.keypoint_names, len(scenes.part_names))
    extra = {} if copy_paste_probability is None else {"copy_paste": copy_paste_probability}
    dataset = BoxTrainingDataset(scenes, spec, max_side=80, augment=augment, seed=5, **extra)
    dataset.set_epoch(1)
    return [dataset[i] for i in range(len(dataset))]


def assert_same_samples(first, second):
    for a, b in zip(first, second, strict=True):
        for name in ("image", "boxes", "class_index", "figure_ground", "keypoints", "parts"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_probability_zero_is_the_default_and_draws_nothing(monkeypatch):
    default = synthetic_samples(None)
    monkeypatch.setattr(training, "copy_paste", lambda *args, **kwargs: pytest.fail("pasted at P=0"))
    assert_same_samples(synthetic_samples(0.0), default)
    # At P=1 with nothing to paste (one image), every other draw of the sample is as at P=0:
    # copy-paste has its own generator.
    monkeypatch.undo()
    assert_same_samples(synthetic_samples(1.0, count=1), synthetic_samples(0.0, count=1))


def test_probability_one_pastes_deterministically():
    pasted = synthetic_samples(1.0)
    assert sum(len(p.boxes) for p in pasted) > sum(len(d.boxes) for d in synthetic_samples(None))
    assert_same_samples(synthetic_samples(1.0), pasted)


def test_images_without_augmentation_are_never_pasted_on():
    assert_same_samples(synthetic_samples(1.0, augment=False), synthetic_samples(0.0, augment=False))


def test_validation_images_are_never_pasted(tmp_path):
    """The trainer pastes only training images, onto training images; validation reads its
    records untouched."""
    train_set = make_synthetic_dataset(4, seed=3, image_size=(64, 80))
    val_set = make_synthetic_dataset(2, seed=4, image_size=(64, 80))
    val_pixels = [im.pixels.copy() for im in val_set.images]
    seen = []

    def validate(model, data):
        seen.append(data)
        return {"mask_iou": 0.5}

    config = TrainConfig(taps=("s8", "top"), grid_size=2, output_size=16, tasks=("figure_ground",), epochs=1,
                         max_side=80, pretrained=False, device="cpu", copy_paste=1.0)
    trainer = Trainer(config, train_set, val_set, tmp_path, validate=validate, progress=False)
    assert {id(im) for im in trainer.dataset.images} <= {id(im) for im in train_set.images}
    trainer.fit()
    assert seen and seen[0] is val_set
    assert all(np.array_equal(im.pixels, p) for im, p in zip(val_set.images, val_pixels))
    assert set(trainer.dataset._cache) <= set(range(len(train_set.images)))


@pytest.mark.slow
def test_train_command_with_copy_paste(tmp_path):
    from hcviewer.train.cli import main

    assert main(["train", "--synthetic", "6", "--copy-paste", "1", "--epochs", "1", "--taps", "s8,top", "--grid", "2",
                 "--image-size", "96", "--no-pretrained", "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["copy_paste"] == 1.0


def test_train_command_refuses_a_probability_over_one(tmp_path, capsys):
    from hcviewer.train.cli import main

    assert main(["train", "--synthetic", "2", "--copy-paste", "1.5", "--out", str(tmp_path / "run")]) != 0
    assert "--copy-paste must be from 0 to 1, got 1.5" in capsys.readouterr().err
