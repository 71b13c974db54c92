"""A user's work survives save and reopen: source image ids, relative file names, the source
file's ground truth, results not yet accepted (saved and autosaved); keypoints saved only for the
categories their head applies to, with visibility from their score."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from hcviewer.annotation.annotation_file import (
    Annotation, SavedImage, SavedObject, encode_mask, write_annotation,
)
from hcviewer.annotation.document import Project
from hcviewer.annotation.head_scope import HeadScope

H, W = 40, 60


def _image(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / name), np.zeros((H, W, 3), np.uint8))
    return folder / name


def _source_coco(folder: Path) -> Path:
    """A COCO ground-truth file (images beside it) with ids 391895 and 7, polygon masks."""
    _image(folder, "a.png")
    _image(folder, "b.png")
    data = {"images": [{"id": 391895, "file_name": "a.png", "height": H, "width": W},
                       {"id": 7, "file_name": "b.png", "height": H, "width": W}],
            "annotations": [{"id": 1, "image_id": 391895, "category_id": 1, "bbox": [4, 6, 20, 16], "iscrowd": 0,
                             "segmentation": [[4, 6, 24, 6, 24, 22, 4, 22]]},
                            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [10, 10, 10, 10], "iscrowd": 0,
                             "segmentation": [[10, 10, 20, 10, 20, 20, 10, 20]]}],
            "categories": [{"id": 1, "name": "person"}]}
    path = folder / "instances.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def opened(tmp_path: Path) -> Project:
    """The source file opened alone (its images come with it), as ``hcviewer --boxes FILE``."""
    project = Project(recovery_dir=tmp_path / "recovery")
    project.load_boxes(_source_coco(tmp_path / "images"))
    return project


def _reopen(path: Path, tmp_path: Path) -> Project:
    project = Project(recovery_dir=tmp_path / "recovery2")
    project.file.open(path)
    return project


def test_source_image_ids_are_kept_and_new_images_get_new_ones(opened, tmp_path):
    opened.add_images([_image(tmp_path / "images", "c.png")])
    opened.add_box(2, np.array([1, 1, 9, 9]), "person")
    path = tmp_path / "out.json"
    opened.file.save(path)
    ids = [image["id"] for image in json.loads(path.read_text())["images"]]
    assert ids == [391895, 7, 391896]
    again = _reopen(path, tmp_path)
    again.file.save(tmp_path / "again.json")
    assert [image["id"] for image in json.loads((tmp_path / "again.json").read_text())["images"]] == ids


def test_file_names_stay_relative_when_saved_outside_the_image_folder(opened, tmp_path):
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "mine.json"
    opened.file.save(path)
    names = [image["file_name"] for image in json.loads(path.read_text())["images"]]
    assert names == ["../images/a.png", "../images/b.png"]
    again = _reopen(path, tmp_path)
    assert [d.path.resolve() for d in again.images] == [d.path.resolve() for d in opened.images]


def test_ground_truth_of_the_source_file_survives_save_and_reopen(opened, tmp_path):
    opened.image_loaded(0, (H, W))
    box = opened.images[0].boxes[0]
    expected = box.gt_mask.copy()
    opened.accept(0, box.id, expected)  # one accepted, the other image's box pending
    path = tmp_path / "out.json"
    opened.file.save(path)
    again = _reopen(path, tmp_path)
    again.image_loaded(0, (H, W))  # ground truth is decoded for the shown image
    assert np.array_equal(again.images[0].boxes[0].gt_mask, expected)
    again.image_loaded(1, (H, W))
    assert again.images[1].boxes[0].gt_mask[10:20, 10:20].all()


def test_results_not_accepted_are_saved_and_reopened(opened, tmp_path):
    probabilities = np.linspace(0, 1, 50 * 50, dtype=np.float32).reshape(50, 50)
    keypoints = np.array([[5.0, 7.0, 0.8], [9.0, 11.0, 0.05]])
    box_id = opened.images[0].boxes[0].id
    opened.set_result(0, box_id, probabilities, keypoints)
    path = tmp_path / "out.json"
    opened.file.save(path)
    result = _reopen(path, tmp_path).images[0].boxes[0].result
    assert result is not None and result.figure_ground.shape == (50, 50)
    assert np.abs(result.figure_ground - probabilities).max() < 1e-3
    assert np.allclose(result.keypoints, keypoints)


def test_the_autosave_keeps_results_and_ground_truth(opened, tmp_path):
    first, second = (d.boxes[0].id for d in opened.images)
    opened.set_result(0, first, np.full((50, 50), 0.75, np.float32))
    opened.set_label(1, second, "cyclist")  # an edit: there is something to autosave
    crashed = opened.file.autosave().rename(tmp_path / "recovery" / "999999999-1.json")
    later = Project(recovery_dir=tmp_path / "recovery")
    later.file.recover(crashed)
    assert later.images[0].boxes[0].result.figure_ground.mean() == pytest.approx(0.75, abs=1e-3)
    assert later.images[1].boxes[0].label == "cyclist"
    later.image_loaded(1, (H, W))
    assert later.images[1].boxes[0].gt_mask[10:20, 10:20].all()
    assert [d.image_id for d in later.images] == [391895, 7]


def test_keypoints_are_saved_only_for_the_categories_of_the_keypoint_head(tmp_path):
    mask = np.zeros((H, W), bool)
    mask[5:15, 5:15] = True
    points = np.array([[6.0, 7.0, 0.9], [8.0, 9.0, 0.04], [10.0, 11.0, np.nan]])
    objects = [SavedObject((4, 4, 16, 16), label, None, encode_mask(mask), points)
               for label in ("person", "potted plant", "object", "horse", "airplane")]
    annotation = Annotation([SavedImage(_image(tmp_path, "a.png"), (H, W), objects)], {},
                            keypoint_names=("nose", "eye", "ear"))
    write_annotation(tmp_path / "default.json", annotation)
    annotations = COCO(str(tmp_path / "default.json")).dataset["annotations"]
    with_points = {a["category_id"]: a for a in annotations if "keypoints" in a}
    names = {c["id"]: c["name"] for c in json.loads((tmp_path / "default.json").read_text())["categories"]}
    # A person model: people only; not a plane, nor a box whose class is not known ("object")
    assert sorted(names[i] for i in with_points) == ["person"]
    person = next(a for a in annotations if names[a["category_id"]] == "person")
    assert person["keypoints"] == [6.0, 7.0, 2, 0, 0, 0, 0, 0, 0] and person["num_keypoints"] == 1
    assert person["keypoint_scores"] == [0.9, 0.04, 0.0]
    categories = {c["name"]: c for c in json.loads((tmp_path / "default.json").read_text())["categories"]}
    assert "keypoints" in categories["person"] and "keypoints" not in categories["potted plant"]
    assert "keypoints" not in categories["object"] and "keypoints" not in categories["airplane"]

    annotation.heads = HeadScope(keypoint_categories=("horse",))  # from the checkpoint's config
    write_annotation(tmp_path / "horse.json", annotation)
    saved = json.loads((tmp_path / "horse.json").read_text())
    names = {c["id"]: c["name"] for c in saved["categories"]}
    assert sorted(names[a["category_id"]] for a in saved["annotations"] if "keypoints" in a) == ["horse"]

    annotation.heads = HeadScope(keypoint_categories=())  # a head trained on every category answers every box
    write_annotation(tmp_path / "any.json", annotation)
    assert all("keypoints" in a for a in json.loads((tmp_path / "any.json").read_text())["annotations"])


def test_saved_keypoints_keep_every_score_and_point_through_reopening(tmp_path):
    """v = 2 from the fixed rule (score >= DEFAULT_KEYPOINT_THRESHOLD); the points hidden in COCO's
    ``keypoints`` come back where the model put them, and a second save writes the same."""
    from hcviewer.annotation.annotation_reader import read_annotation
    from hcviewer.annotation.head_scope import DEFAULT_KEYPOINT_THRESHOLD

    mask = np.zeros((H, W), bool)
    mask[5:15, 5:15] = True
    points = np.array([[6.0, 7.0, 0.9], [8.5, 9.25, DEFAULT_KEYPOINT_THRESHOLD / 2], [10.0, 11.0, 0.0]])
    annotation = Annotation([SavedImage(_image(tmp_path, "a.png"), (H, W),
                                        [SavedObject((4, 4, 16, 16), "person", None, encode_mask(mask), points)])],
                            {}, keypoint_names=("nose", "eye", "ear"))
    write_annotation(tmp_path / "first.json", annotation)
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["hcviewer"]["keypoint_visible_min_score"] == DEFAULT_KEYPOINT_THRESHOLD
    record = first["annotations"][0]
    assert record["keypoints"] == [6.0, 7.0, 2, 0, 0, 0, 0, 0, 0] and record["num_keypoints"] == 1
    reopened = read_annotation(tmp_path / "first.json")
    np.testing.assert_allclose(reopened.images[0].objects[0].keypoints, points)
    write_annotation(tmp_path / "second.json", reopened)
    again = json.loads((tmp_path / "second.json").read_text())
    assert again["annotations"][0] == record and again["hcviewer"] == first["hcviewer"]


def test_head_scope_follows_the_checkpoint_config_rule():
    from hcviewer.modeling.config import HypercolumnConfig

    labels = ("person", "Person", "object", "", "unknown", "bench", "dog", "cat", None)
    for categories in (("person",), ("dog", "Cat"), ()):
        config = HypercolumnConfig(tasks=("figure_ground", "parts", "keypoints"), part_names=("a",),
                                   keypoint_names=("k",), keypoint_categories=categories, part_categories=categories)
        scope = HeadScope.from_config(config)
        for label in labels:
            assert scope.keypoints_apply(label) == config.applies_to("keypoints", label), (categories, label)
            assert scope.parts_apply(label) == config.applies_to("parts", label), (categories, label)
    assert not HeadScope().keypoints_apply("bench") and HeadScope().keypoints_apply("person")
    assert not HeadScope().keypoints_apply("object") and not HeadScope().parts_apply("unknown")


def _numbers(project: Project) -> list[list[tuple[int, str]]]:
    return [[(b.id, b.label) for b in d.boxes] for d in project.images]


def test_box_numbers_are_kept_through_save_and_reopen_whatever_is_accepted(opened, tmp_path):
    """Issue 22: "bus box 33 became 39". Accepted objects are read back before pending ones, and
    the numbers were handed out again in that order."""
    dog = opened.add_box(0, np.array([30, 2, 50, 20]), "dog")
    opened.add_box(1, np.array([1, 1, 9, 9]), "cat")
    opened.delete_box(0, opened.images[0].boxes[0].id)  # a gap in the numbers
    mask = np.zeros((H, W), bool)
    mask[5:15, 32:45] = True
    opened.accept(0, dog, mask)
    opened.reject(1, opened.images[1].boxes[-1].id)
    numbers = _numbers(opened)
    opened.file.save(tmp_path / "out.json")
    saved = json.loads((tmp_path / "out.json").read_text())
    assert [a["id"] for a in saved["annotations"]] == [dog]  # the COCO id is the box's number
    again = _reopen(tmp_path / "out.json", tmp_path)
    assert sorted(map(sorted, _numbers(again))) == sorted(map(sorted, numbers))
    again.file.save(tmp_path / "again.json")
    assert sorted(map(sorted, _numbers(_reopen(tmp_path / "again.json", tmp_path)))) == sorted(map(sorted, numbers))
    assert again.add_box(0, np.array([1, 1, 5, 5]), "cat") == max(i for d in numbers for i, _ in d) + 1


def test_objects_saved_without_a_number_or_with_one_used_twice_get_new_ones_above_the_others(tmp_path):
    image = _image(tmp_path, "a.png")
    mask = encode_mask(np.ones((H, W), bool))
    objects = [SavedObject((1, 1, 9, 9), "person", None, mask, number=7),
               SavedObject((2, 2, 9, 9), "person", None, mask, number=7),
               SavedObject((3, 3, 9, 9), "cat", number=None), SavedObject((4, 4, 9, 9), "cat", number=3),
               SavedObject((5, 5, 9, 9), "cat", number=True)]
    write_annotation(tmp_path / "old.json", Annotation([SavedImage(image, (H, W), objects)], {"person": 1}))
    project = _reopen(tmp_path / "old.json", tmp_path)
    assert [b.id for b in project.images[0].boxes] == [7, 8, 9, 3, 10]
