"""scripts/attach_coco_instances.py on a tiny gathered set made here: a covered photo gets the
instance files' masks and its matching people their keypoints, the rest stays keypoint-only, and
hcviewer's training reader reads the result; files that disagree with the photos are refused."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hcviewer.categories import COCO_PERSON_KEYPOINTS
from hcviewer.data.coco import read_coco

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "attach_coco_instances.py"
COVERED, UNCOVERED = 11, 12
WIDTH, HEIGHT = 60, 40


def _script():
    spec = importlib.util.spec_from_file_location("attach_coco_instances", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _person(image_id: int, line: int, bbox: list[float], nose: tuple[float, float]) -> dict:
    keypoints = [nose[0], nose[1], 2] + [0, 0, 0] * (len(COCO_PERSON_KEYPOINTS) - 1)
    return {"id": image_id * 100 + line, "image_id": image_id, "category_id": 1, "bbox": bbox,
            "area": bbox[2] * bbox[3], "iscrowd": 0, "keypoints": keypoints, "num_keypoints": 1}


def _square(x: float, y: float, side: float) -> list[list[float]]:
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


def _instance(ann_id: int, category: int, x: float, y: float, side: float) -> dict:
    return {"id": ann_id, "image_id": COVERED, "category_id": category, "bbox": [x, y, side, side],
            "area": side * side, "iscrowd": 0, "segmentation": _square(x, y, side)}


@pytest.fixture
def gathered(tmp_path: Path) -> Path:
    """Two photos with two gathered people each; only COVERED will have instance annotations."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2017").mkdir()
    images = []
    for image_id in (COVERED, UNCOVERED):
        name = f"{image_id:012d}.jpg"
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 128, np.uint8)).save(tmp_path / "train2017" / name)
        images.append({"id": image_id, "file_name": name, "width": WIDTH, "height": HEIGHT})
    people = [_person(COVERED, 0, [10, 10, 10, 10], (15, 12)), _person(COVERED, 1, [40, 20, 12, 12], (45, 25)),
              _person(UNCOVERED, 0, [5, 5, 20, 20], (10, 8)), _person(UNCOVERED, 1, [30, 5, 20, 20], (40, 8))]
    category = {"id": 1, "name": "person", "keypoints": list(COCO_PERSON_KEYPOINTS), "skeleton": [[1, 2]]}
    coco = {"images": images, "annotations": people, "categories": [category]}
    (tmp_path / "annotations" / "person_keypoints_train2017.json").write_text(json.dumps(coco))
    return tmp_path


def _instance_file(path: Path, annotations: list[dict], width: int = WIDTH) -> Path:
    coco = {"images": [{"id": COVERED, "file_name": f"{COVERED:012d}.jpg", "width": width, "height": HEIGHT},
                       {"id": 999, "file_name": "000000000999.jpg", "width": 640, "height": 480}],
            "annotations": annotations + [dict(_instance(7, 1, 1, 1, 5), image_id=999)],
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}
    path.write_text(json.dumps(coco))
    return path


def test_covered_photo_gets_masks_and_matching_people_keep_their_keypoints(gathered: Path, tmp_path: Path) -> None:
    # the COCO person at (10, 10) is the first gathered person (same box); the second gathered
    # person has no COCO instance (the file labels another person at (30, 2)); one dog
    first = _instance_file(tmp_path / "a.json", [_instance(1, 1, 10, 10, 10), _instance(2, 18, 20, 20, 8)])
    second = _instance_file(tmp_path / "b.json", [_instance(1, 1, 10, 10, 10), _instance(3, 1, 30, 2, 6)])
    _script().main(["--dataset", str(gathered), "--instances", str(first), str(second)])

    data = read_coco(gathered / "annotations" / "train2017.json", gathered / "train2017")
    objects = {image.path.name: image.objects for image in data.images}
    covered, uncovered = objects[f"{COVERED:012d}.jpg"], objects[f"{UNCOVERED:012d}.jpg"]
    assert len(data.images) == 2 and data.keypoint_names == COCO_PERSON_KEYPOINTS
    # COCO person 1 with the gathered keypoints, dog 2, COCO person 3 without, the unmatched gathered person
    assert len(covered) == 4
    assert sum(obj.mask is not None for obj in covered) == 3
    with_keypoints = [obj for obj in covered if obj.keypoints is not None]
    assert len(with_keypoints) == 2
    masked_person = next(obj for obj in with_keypoints if obj.mask is not None)
    assert masked_person.keypoints[0].tolist() == [15, 12, 2]
    unmatched = next(obj for obj in with_keypoints if obj.mask is None)
    assert unmatched.keypoints[0].tolist() == [45, 25, 2]
    assert len(uncovered) == 2 and all(obj.mask is None and obj.keypoints is not None for obj in uncovered)


def test_files_that_disagree_on_an_annotation_are_refused(gathered: Path, tmp_path: Path) -> None:
    first = _instance_file(tmp_path / "a.json", [_instance(1, 1, 10, 10, 10)])
    second = _instance_file(tmp_path / "b.json", [_instance(1, 1, 10, 10, 12)])
    with pytest.raises(SystemExit, match=r"b\.json: annotation 1 differs"):
        _script().main(["--dataset", str(gathered), "--instances", str(first), str(second)])
    assert not (gathered / "annotations" / "train2017.json").exists()


def test_a_file_whose_photo_size_differs_is_refused(gathered: Path, tmp_path: Path) -> None:
    resized = _instance_file(tmp_path / "resized.json", [_instance(1, 1, 10, 10, 10)], width=2 * WIDTH)
    with pytest.raises(SystemExit, match=r"resized\.json: image 11 is 120 x 40, the photo 60 x 40"):
        _script().main(["--dataset", str(gathered), "--instances", str(resized)])
