"""The synthetic scene generator: determinism, and masks/parts/keypoints/boxes that agree."""

from __future__ import annotations

import numpy as np
import pytest

from hcviewer.data.synthetic import MIN_VISIBLE_PIXELS, PART_NAMES, make_synthetic_dataset
from hcviewer.categories import COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON


@pytest.fixture(scope="module")
def scenes():
    return make_synthetic_dataset(24, seed=7)


def _decoded(image, obj):
    return obj.mask.decode(image.height, image.width), obj.parts.decode(image.height, image.width)


def _flatten(dataset):
    """Every array of a data set, in order, for equality checks."""
    arrays = []
    for image in dataset.images:
        arrays.append(image.pixels)
        for obj in image.objects:
            arrays.extend([obj.box, obj.keypoints, *_decoded(image, obj)])
    return arrays


def test_same_seed_gives_identical_arrays():
    first, second = _flatten(make_synthetic_dataset(4, seed=3)), _flatten(make_synthetic_dataset(4, seed=3))
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_different_seeds_differ():
    a, b = make_synthetic_dataset(2, seed=0), make_synthetic_dataset(2, seed=1)
    assert not np.array_equal(a.images[0].pixels, b.images[0].pixels)


def test_a_longer_data_set_starts_with_the_shorter_one():
    short, long = make_synthetic_dataset(2, seed=5), make_synthetic_dataset(4, seed=5)
    for a, b in zip(short.images, long.images):
        assert np.array_equal(a.pixels, b.pixels)
        assert [o.box.tolist() for o in a.objects] == [o.box.tolist() for o in b.objects]


def test_names_sizes_and_object_counts():
    dataset = make_synthetic_dataset(10, seed=2, image_size=(96, 64), max_objects=2)
    assert dataset.keypoint_names == COCO_PERSON_KEYPOINTS
    assert dataset.skeleton == COCO_PERSON_SKELETON
    assert dataset.part_names == PART_NAMES
    assert len(dataset.images) == 10
    for image in dataset.images:
        assert (image.height, image.width) == (96, 64)
        assert image.pixels.shape == (96, 64, 3) and image.pixels.dtype == np.uint8
        assert image.load_rgb() is image.pixels
        assert 1 <= len(image.objects) <= 2
        assert all(obj.category == "person" for obj in image.objects)
    ids = [obj.annotation_id for image in dataset.images for obj in image.objects]
    assert ids == list(range(dataset.num_objects))


def test_masks_are_visible_pixels_and_disjoint(scenes):
    for image in scenes.images:
        taken = np.zeros((image.height, image.width), bool)
        for obj in image.objects:
            mask, _ = _decoded(image, obj)
            assert mask.dtype == bool and mask.sum() >= MIN_VISIBLE_PIXELS
            assert not (mask & taken).any(), "two objects claim the same pixel"
            taken |= mask


def test_boxes_are_tight_around_masks(scenes):
    for image in scenes.images:
        for obj in image.objects:
            mask, _ = _decoded(image, obj)
            rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
            expected = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
            assert obj.box.dtype == np.float32 and obj.box.tolist() == expected


def test_every_mask_pixel_has_a_part_and_parts_stay_inside_the_mask(scenes):
    seen_parts = set()
    for image in scenes.images:
        for obj in image.objects:
            mask, parts = _decoded(image, obj)
            assert parts.dtype == np.uint8
            assert np.array_equal(parts > 0, mask)
            assert parts.max() <= len(PART_NAMES)
            seen_parts.update(np.unique(parts[mask]).tolist())
    assert seen_parts == set(range(1, len(PART_NAMES) + 1))


def test_keypoint_visibility_matches_the_masks(scenes):
    counts = {0: 0, 1: 0, 2: 0}
    for image in scenes.images:
        masks = [_decoded(image, obj)[0] for obj in image.objects]
        for k, obj in enumerate(image.objects):
            assert obj.keypoints.shape == (17, 3) and obj.keypoints.dtype == np.float32
            others = np.any([m for i, m in enumerate(masks) if i != k], axis=0) if len(masks) > 1 else None
            for x, y, v in obj.keypoints:
                counts[int(v)] += 1
                if v == 0:
                    assert x == 0 and y == 0
                    continue
                col, row = int(x), int(y)
                assert (col, row) == (x, y), "keypoints are pixel indices, as COCO stores them"
                if v == 2:
                    assert masks[k][row, col]
                    x0, y0, x1, y1 = obj.box
                    assert x0 <= x < x1 and y0 <= y < y1
                else:
                    assert v == 1 and others is not None and others[row, col]
    # The fixture's scenes exercise all three states: occlusion and figures leaving the image.
    assert all(n > 0 for n in counts.values()), counts


def test_left_keypoints_are_on_the_image_right(scenes):
    """Figures face the camera, so flipping an image swaps left_* and right_* consistently."""
    left, right = COCO_PERSON_KEYPOINTS.index("left_hip"), COCO_PERSON_KEYPOINTS.index("right_hip")
    checked = 0
    for image in scenes.images:
        for obj in image.objects:
            kp = obj.keypoints
            if kp[left, 2] > 0 and kp[right, 2] > 0:
                assert kp[left, 0] > kp[right, 0]
                checked += 1
    assert checked > 10


def test_backgrounds_are_textured(scenes):
    """Figure-ground is not a colour threshold: the background varies as much as a figure does."""
    for image in scenes.images:
        ground = ~np.any([obj.mask.decode(image.height, image.width) for obj in image.objects], axis=0)
        assert image.pixels[ground].astype(np.float32).std(axis=0).max() > 10


@pytest.mark.parametrize("args", [dict(num_images=-1), dict(max_objects=0), dict(image_size=(16, 200))])
def test_bad_arguments_are_refused(args):
    params = dict(num_images=1, seed=0) | args
    with pytest.raises(ValueError):
        make_synthetic_dataset(**params)


def test_scenes_become_training_targets():
    """The trainer's sample builder takes the scenes as they are: every object a training box, every
    part label present, and every visible keypoint a cell of its box."""
    from hcviewer.data.training import BoxTrainingDataset, TargetSpec

    dataset = make_synthetic_dataset(3, seed=11)
    spec = TargetSpec(output_size=16, keypoint_names=dataset.keypoint_names, num_parts=len(PART_NAMES))
    samples = BoxTrainingDataset(dataset, spec, max_side=256, augment=False)
    for image, sample in zip(dataset.images, (samples[i] for i in range(len(samples)))):
        assert len(sample.boxes) == len(image.objects)
        assert set(sample.parts.unique().tolist()) <= set(range(len(PART_NAMES) + 1))
        for obj, cells in zip(image.objects, sample.keypoints.numpy()):
            visibility = obj.keypoints[:, 2]
            assert (cells[visibility == 2] >= 0).all() and (cells[visibility == 0] == -1).all()
