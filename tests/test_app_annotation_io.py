"""Annotation files: COCO JSON with RLE masks and keypoints, PNG mask folder, atomic writes,
errors naming the file and record."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from hcviewer.annotation import annotation_file as annotation_io
from hcviewer.annotation.annotation_file import (
    Annotation, AnnotationError, SavedImage, SavedObject, decode_mask, encode_mask, write_annotation,
)
from hcviewer.annotation.annotation_reader import read_annotation


def _mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def annotation(tmp_path: Path) -> Annotation:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 60, 3), np.uint8))
    keypoints = np.array([[10.5, 12.0, 0.9], [20.0, 22.25, 0.01]])
    person = SavedObject((5, 5, 30, 35), "person", 0.8, encode_mask(_mask(40, 60, 10, 30, 8, 25)), keypoints)
    cat = SavedObject((30, 2, 58, 20), "cat", None, encode_mask(_mask(40, 60, 3, 18, 32, 50)))
    pending = SavedObject((1, 1, 9, 9), "person", 0.3)
    rejected = SavedObject((40, 25, 55, 39), "cat", None, rejected=True)
    return Annotation([SavedImage(tmp_path / "a.png", (40, 60), [person, cat, pending, rejected]),
                       SavedImage(tmp_path / "b.png", None, [])],
                      {"person": 1}, keypoint_names=("nose", "eye"), skeleton=((0, 1),))


def test_saved_file_is_coco_that_pycocotools_reads(annotation, tmp_path):
    path = tmp_path / "ann.json"
    write_annotation(path, annotation)
    coco = COCO(str(path))
    assert [img["file_name"] for img in coco.dataset["images"]] == ["a.png", "b.png"]  # relative to the file
    assert coco.dataset["images"][1]["height"] == 0  # b.png does not exist: size unknown, no crash
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == 2  # accepted objects only; pending and rejected boxes are kept aside
    person = next(a for a in anns if a["category_id"] == 1)
    assert np.array_equal(coco.annToMask(person).astype(bool), _mask(40, 60, 10, 30, 8, 25))
    assert person["bbox"] == [8, 10, 17, 20] and person["area"] == 17 * 20
    # the second point scores 0.01, below the keypoint threshold: unlabelled (v = 0 at 0, 0), score kept
    assert person["keypoints"] == [10.5, 12.0, 2, 0, 0, 0] and person["num_keypoints"] == 1
    assert person["keypoint_scores"] == [0.9, 0.01]
    categories = {c["name"]: c for c in coco.dataset["categories"]}
    assert categories["person"]["id"] == 1 and categories["cat"]["id"] == 2  # new labels get new ids
    assert categories["person"]["keypoints"] == ["nose", "eye"] and categories["person"]["skeleton"] == [[1, 2]]
    assert "keypoints" not in categories["cat"]


def test_png_masks_are_written_per_object(annotation, tmp_path):
    write_annotation(tmp_path / "ann.json", annotation)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "ann_masks").rglob("*.png"))
    assert files == ["ann_masks/a/00001_person.png", "ann_masks/a/00002_cat.png"]
    png = cv2.imread(str(tmp_path / "ann_masks/a/00002_cat.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(png > 0, _mask(40, 60, 3, 18, 32, 50)) and set(np.unique(png)) == {0, 255}


def test_saving_again_replaces_the_mask_folder(annotation, tmp_path):
    write_annotation(tmp_path / "ann.json", annotation)
    annotation.images[0].objects.pop(1)  # the cat is no longer accepted
    write_annotation(tmp_path / "ann.json", annotation)
    assert [p.name for p in (tmp_path / "ann_masks" / "a").iterdir()] == ["00001_person.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_load_gives_back_what_was_saved(annotation, tmp_path):
    path = tmp_path / "ann.json"
    write_annotation(path, annotation)
    loaded = read_annotation(path)
    assert [img.path for img in loaded.images] == [tmp_path / "a.png", tmp_path / "b.png"]
    objects = loaded.images[0].objects
    assert [(o.label, o.score, o.rejected) for o in objects] == [
        ("person", 0.8, False), ("cat", None, False), ("person", 0.3, False), ("cat", None, True)]
    assert [o.xyxy for o in objects] == [(5, 5, 30, 35), (30, 2, 58, 20), (1, 1, 9, 9), (40, 25, 55, 39)]
    assert np.array_equal(decode_mask(objects[0].mask_rle), _mask(40, 60, 10, 30, 8, 25))
    assert objects[2].mask_rle is None
    # the weak point, saved unlabelled (v = 0 at 0, 0), comes back with its place and score
    assert np.allclose(objects[0].keypoints, [[10.5, 12.0, 0.9], [20.0, 22.25, 0.01]])
    assert loaded.category_ids == {"person": 1, "cat": 2}
    assert loaded.keypoint_names == ("nose", "eye") and loaded.skeleton == ((0, 1),)


def test_a_plain_coco_file_with_polygons_loads_as_accepted_masks(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "x.jpg", "height": 20, "width": 30}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [2, 4, 10, 8],
                         "segmentation": [[2, 4, 12, 4, 12, 12, 2, 12]]}],
        "categories": [{"id": 3, "name": "dog"}]}))
    (obj,) = read_annotation(path).images[0].objects
    assert obj.label == "dog" and obj.xyxy == (2, 4, 12, 12)
    mask = decode_mask(obj.mask_rle)
    assert mask.shape == (20, 30) and mask[6:10, 4:10].all() and not mask[15:, :].any()


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ('{"annotations": []}', "a COCO file needs 'images', and this one has none"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 5, "image_id": 2, '
     '"category_id": 1, "bbox": [0, 0, 1, 1]}], "categories": [{"id": 1, "name": "p"}]}',
     "annotations[0] (id 5): image_id 2 is not in 'images'; add the image or fix the id"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 5, "image_id": 1, '
     '"category_id": 9, "bbox": [0, 0, 1, 1]}], "categories": []}', "category_id 9 is not in 'categories'"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 5, "image_id": 1, '
     '"category_id": 1, "bbox": [0, 0, 1, 1], "segmentation": [[0, 0, 1, 0, 1, 1]]}], '
     '"categories": [{"id": 1, "name": "p"}]}', "needs the image's 'height' and 'width'"),
    ('{"images": [{"id": 1, "file_name": "a.png"}], "hcviewer": {"pending": [{"image_id": 1, '
     '"box": [5, 5, 1, 1], "label": "p"}]}}', "hcviewer.pending[0]: box [5, 5, 1, 1] is empty"),
])
def test_malformed_files_name_the_file_and_record(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(AnnotationError) as error:
        read_annotation(path)
    assert str(error.value).startswith(str(path)) and expected in str(error.value)


def test_a_failed_write_names_the_file_and_keeps_the_previous_one(annotation, tmp_path, monkeypatch):
    path = tmp_path / "ann.json"
    write_annotation(path, annotation)
    before = path.read_bytes()
    annotation.images[0].objects.pop(0)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as error:
        write_annotation(path, annotation)
    assert str(path) in str(error.value) and "No space left on device" in str(error.value)
    assert "unchanged" in str(error.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "ann.json", "ann_masks"]


def test_a_failed_mask_folder_write_keeps_the_previous_folder(annotation, tmp_path, monkeypatch):
    path = tmp_path / "ann.json"
    write_annotation(path, annotation)
    monkeypatch.setattr(annotation_io.cv2, "imencode", lambda *a: (False, None))
    with pytest.raises(OSError) as error:
        write_annotation(path, annotation)
    assert "ann_masks" in str(error.value)
    assert len(list((tmp_path / "ann_masks" / "a").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "ann.json", "ann_masks"]


def test_without_png_masks_no_image_is_opened_and_unknown_sizes_stay_unknown(tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(annotation_io, "read_size_or_zero", lambda path: opened.append(path) or (40, 60))
    images = [SavedImage(tmp_path / "never_shown.png", None, [SavedObject((1, 1, 5, 5), "person")]),
              SavedImage(tmp_path / "no_boxes.png", None, [])]
    annotation = Annotation(images, {})
    write_annotation(tmp_path / "recovery.json", annotation, png_masks=False)
    assert opened == [] and not (tmp_path / "recovery_masks").exists()
    assert [image.size for image in read_annotation(tmp_path / "recovery.json").images] == [None, None]
    write_annotation(tmp_path / "saved.json", annotation)
    assert opened == [tmp_path / "never_shown.png"]  # a real save reads the size of images with boxes


def test_decoded_masks_are_read_only_and_c_ordered():
    mask = decode_mask(encode_mask(_mask(5, 7, 1, 3, 2, 6)))
    assert mask.flags.c_contiguous and not mask.flags.writeable
