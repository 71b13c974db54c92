"""``hcviewer predict``'s batch path: keypoints only for the boxes of the keypoint head's
categories, and edge refinement on request (``--refine``, on by default)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from hcviewer.annotation.batch import BatchItem, predict_images, to_coco_results
from hcviewer.app.cli import main
from hcviewer.inference import HypercolumnPredictor, paste_masks


@pytest.fixture
def image_path(tmp_path, rgb_image):
    path = tmp_path / "1.png"
    cv2.imwrite(str(path), rgb_image[..., ::-1])
    return path


def test_keypoints_only_for_people(tiny_checkpoint, image_path):
    predictor = HypercolumnPredictor.from_checkpoint(tiny_checkpoint, "cpu")
    boxes = np.array([[50, 30, 110, 90], [0, 0, 60, 50], [20, 40, 90, 110]], float)
    item = BatchItem(image_path, boxes, ["person", "motorcycle", "object"], 1)
    [result] = predict_images(predictor, [item])
    records = to_coco_results([result], {"person": 1, "motorcycle": 4, "object": 9})
    assert ["keypoints" in r for r in records] == [True, False, False]  # "object" names no class: not a person
    assert all(len(r["keypoints"]) == 17 * 3 for r in records if "keypoints" in r)
    json.dumps(records, allow_nan=False)  # no NaN reaches the file


def test_refine_changes_the_masks(tiny_checkpoint, image_path, rgb_image):
    predictor = HypercolumnPredictor.from_checkpoint(tiny_checkpoint, "cpu")
    item = BatchItem(image_path, np.array([[40, 20, 130, 100]], float), ["person"], 1)
    [plain] = predict_images(predictor, [item])
    [refined] = predict_images(predictor, [item], refine=True)
    predictor.set_image(rgb_image)
    expected = paste_masks(predictor.predict(item.boxes, refine=True), rgb_image.shape[:2], 0.5)[0]
    from pycocotools import mask as mask_utils

    decoded = mask_utils.decode({**refined.masks_rle[0], "counts": refined.masks_rle[0]["counts"].encode()})
    assert np.array_equal(decoded.astype(bool), expected)
    assert plain.masks_rle[0] != refined.masks_rle[0]


@pytest.mark.slow
def test_predict_command_refines_by_default(tiny_checkpoint, image_path, tmp_path):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"image,x0,y0,x1,y1,label\n{image_path.name},40,20,130,100,person\n")
    common = [str(image_path), "--boxes", str(boxes), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
    assert main(["predict", *common, "--out", str(tmp_path / "on.json")]) == 0
    assert main(["predict", *common, "--no-refine", "--out", str(tmp_path / "off.json")]) == 0
    on, off = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("on", "off"))
    assert on[0]["segmentation"] != off[0]["segmentation"]
