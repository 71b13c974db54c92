"""The headless batch path: predict_images, COCO results, atomic JSON writes."""

from __future__ import annotations

import json
import os
import threading

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_person_config
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from hcviewer.annotation.batch import (
    BatchItem, OutputError, find_images, predict_images, to_coco_results, write_json_atomic,
)
from hcviewer.inference import HypercolumnPredictor, paste_masks
from hcviewer.modeling import build_hypercolumn, save_checkpoint


@pytest.fixture
def predictor(tiny_checkpoint) -> HypercolumnPredictor:
    return HypercolumnPredictor.from_checkpoint(tiny_checkpoint, "cpu")


@pytest.fixture
def items(tmp_path, rgb_image) -> list[BatchItem]:
    """Two readable images (one BGR-saved PNG, one JPEG) and a corrupt one in between."""
    first, second, corrupt = tmp_path / "1.png", tmp_path / "2.jpg", tmp_path / "3.png"
    cv2.imwrite(str(first), rgb_image[..., ::-1])
    cv2.imwrite(str(second), np.ascontiguousarray(rgb_image[:96, :128, ::-1]))
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return [
        BatchItem(first, np.array([[50, 30, 110, 90], [0, 0, 40, 40]], float), ["person", "person"], 1),
        BatchItem(corrupt, np.array([[1, 1, 20, 20]], float), ["person"], 3),
        BatchItem(second, np.array([[10, 10, 60, 80]], float), ["person"], 2),
    ]


def test_predict_images_segments_readable_images_and_records_unreadable_ones(predictor, items, rgb_image):
    progress = []
    results = predict_images(predictor, items, progress_callback=lambda done, total: progress.append((done, total)))
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert [r.image_id for r in results] == [1, 3, 2]
    broken = results[1]
    assert str(items[1].image_path) in broken.error and "corrupt" in broken.error
    assert broken.masks_rle == [] and broken.scores == [] and broken.keypoints is None

    first = results[0]
    assert first.error is None and first.labels == ["person", "person"]
    assert np.array_equal(first.boxes, items[0].boxes)
    assert first.keypoints.shape == (2, 17, 3)
    # the RLE holds exactly the pasted probabilities >= 0.5; the score is their mean inside
    predictor.set_image(rgb_image)
    probs = paste_masks(predictor.predict(items[0].boxes, tasks=("figure_ground",)), rgb_image.shape[:2])
    for rle, score, prob in zip(first.masks_rle, first.scores, probs):
        assert isinstance(rle["counts"], str) and rle["size"] == [120, 160]
        mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        assert np.array_equal(mask, prob >= 0.5)
        assert mask.any() and score == pytest.approx(prob[mask].mean(), abs=1e-6)
    assert len(results[2].masks_rle) == 1 and results[2].masks_rle[0]["size"] == [96, 128]


def test_refined_batch_keeps_the_maps_its_masks_were_encoded_from(predictor, items):
    from hcviewer.annotation.mask_crops import box_map_crop

    [result] = predict_images(predictor, items[:1], refine=True)
    output_size = predictor.config.output_size
    assert all(m.shape != (output_size, output_size) for m in result.figure_ground)  # the finer refined maps
    for box_map, box, rle in zip(result.figure_ground, result.boxes, result.masks_rle):
        drawn = box_map_crop(box_map, box, result.image_size, 0.5)  # what the app draws from the map
        full = np.zeros(result.image_size, bool)
        full[drawn.y0:drawn.y0 + drawn.mask.shape[0], drawn.x0:drawn.x0 + drawn.mask.shape[1]] = drawn.mask
        assert np.array_equal(full, mask_utils.decode(rle).astype(bool))


def test_a_higher_threshold_gives_smaller_masks(predictor, items):
    low, high = (predict_images(predictor, items[:1], threshold=t)[0] for t in (0.3, 0.7))
    for rle_low, rle_high in zip(low.masks_rle, high.masks_rle):
        assert mask_utils.area(_bytes(rle_high)) < mask_utils.area(_bytes(rle_low))


def _bytes(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode()}


def test_cancel_stops_between_images(predictor, items):
    cancel = threading.Event()
    progress = []

    def cancel_after_first(done: int, total: int) -> None:
        progress.append(done)
        cancel.set()

    results = predict_images(predictor, items, progress_callback=cancel_after_first, cancel_flag=cancel)
    assert len(results) == 1 and progress == [1]
    assert predict_images(predictor, items, cancel_flag=cancel) == []


def test_images_without_boxes_and_boxes_outside_the_image(predictor, items):
    no_boxes = BatchItem(items[0].image_path, np.zeros((0, 4)), [], 5)
    mixed = BatchItem(items[0].image_path, np.array([[500, 500, 600, 600], [10, 10, 60, 60]], float),
                      ["bench", "person"], 6)
    empty, result = predict_images(predictor, [no_boxes, mixed])
    assert empty.error is None and empty.masks_rle == [] and len(empty.boxes) == 0
    # the box outside is skipped and named; the image's other box is segmented
    assert result.error is None and len(result.masks_rle) == 1
    assert result.box_indices == [1] and result.labels == ["person"]
    [skipped] = result.skipped
    assert skipped.index == 0
    assert skipped.describe().startswith("the bench box at (500, 500)–(600, 600) lies entirely outside the ")


def test_class_specific_checkpoints_need_known_labels(tmp_path, items):
    torch.manual_seed(0)
    config = tiny_person_config(class_names=("person", "dog"), class_specific=True, tasks=("figure_ground",))
    path = save_checkpoint(tmp_path / "classes.safetensors", build_hypercolumn(config))
    predictor = HypercolumnPredictor.from_checkpoint(path, "cpu")
    dog = BatchItem(items[0].image_path, items[0].boxes, ["dog", "person"], 1)
    cat = BatchItem(items[0].image_path, items[0].boxes, ["cat", "person"], 1)
    good, bad = predict_images(predictor, [dog, cat])
    assert good.error is None and len(good.masks_rle) == 2 and good.keypoints is None
    assert "['cat'] are not among the checkpoint's classes" in bad.error


def test_coco_results_load_with_pycocotools(predictor, items, tmp_path):
    results = predict_images(predictor, items)
    records = to_coco_results(results, {"person": 1})
    assert len(records) == 3  # the corrupt image gives none
    assert records[0]["bbox"] == [50.0, 30.0, 60.0, 60.0] and records[0]["category_id"] == 1
    assert len(records[0]["keypoints"]) == 17 * 3
    gt = {"images": [{"id": 1, "file_name": "1.png", "width": 160, "height": 120},
                     {"id": 2, "file_name": "2.jpg", "width": 128, "height": 96}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 30, 60, 60], "area": 3600,
                           "iscrowd": 0, "segmentation": [[50, 30, 110, 30, 110, 90, 50, 90]]}],
          "categories": [{"id": 1, "name": "person"}]}
    gt_path, results_path = tmp_path / "gt.json", tmp_path / "results.json"
    write_json_atomic(gt_path, gt)
    write_json_atomic(results_path, records)
    coco = COCO(str(gt_path))
    detections = coco.loadRes(str(results_path))
    assert len(detections.getAnnIds()) == 3
    assert detections.annToMask(detections.loadAnns(detections.getAnnIds(imgIds=[2]))[0]).shape == (96, 128)


def test_coco_results_need_every_label_mapped(predictor, items):
    with pytest.raises(ValueError, match=r"label 'person' of .*1.png has no category id"):
        to_coco_results(predict_images(predictor, items[:1]), {"cat": 17})


def test_write_json_atomic_writes_numpy_values(tmp_path):
    path = write_json_atomic(tmp_path / "out.json", {"a": np.float32(0.5), "b": np.arange(3), "c": np.int64(7)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": 7}
    assert os.listdir(tmp_path) == ["out.json"]


def test_write_json_atomic_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    path.write_text("[1]")

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)  # write_json_atomic (hcviewer.fileio) replaces with os.replace
    with pytest.raises(OutputError, match=r"cannot write .*out.json: No space left on device; the previous file"):
        write_json_atomic(path, [2])
    assert path.read_text() == "[1]" and os.listdir(tmp_path) == ["out.json"]


def test_write_json_atomic_into_a_missing_folder_names_the_file(tmp_path):
    with pytest.raises(OSError, match=r"cannot write .*missing/out.json"):
        write_json_atomic(tmp_path / "missing" / "out.json", [])


def test_find_images_searches_folders_recursively(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ("b.JPG", "sub/a.png", "sub/deeper/c.webp", "sub/notes.txt"):
        (tmp_path / name).write_bytes(b"")
    explicit = tmp_path / "sub" / "notes.txt"
    found = find_images([tmp_path, tmp_path / "sub" / "a.png", explicit])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "b.JPG", "sub/a.png", "sub/deeper/c.webp", "sub/notes.txt"]
