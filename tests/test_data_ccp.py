"""The Clothing Co-Parsing reader on tiny hand-made folders: one person per labelled photo with its
box, mask and grouped part labels, a DataError naming the file for broken input, and
``--ccp`` through training (part names and colours in the checkpoint) and evaluation (per-part IoU)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hcviewer.data.ccp import PART_COLORS, PART_GROUPS, PART_NAMES, read_ccp
from hcviewer.data.records import DataError
from hcviewer.modeling.checkpoint import read_checkpoint_info
from hcviewer.modeling.config import HypercolumnConfig

# A few real CCP classes (index -> name), in CCP's own order.
NAMES = ["null", "bag", "dress", "hair", "shoes", "skin"]
H, W = 48, 32


def person_labels(shift: int = 0) -> np.ndarray:
    """A person drawn in CCP labels: hair, skin face, dress, skin legs, shoes, a bag."""
    labels = np.zeros((H, W), np.uint8)
    labels[4:8, 10:20] = 3  # hair
    labels[8:14, 11:19] = 5  # skin (face)
    labels[14:32, 8:22] = 2  # dress
    labels[32:40, 11:19] = 5  # skin (legs)
    labels[40:44, 10:20] = 4  # shoes
    labels[20:26, 22:27] = 1  # bag
    return np.roll(labels, shift, axis=1)


def write_ccp(root: Path, labels: list[np.ndarray], names: list[str] = NAMES) -> Path:
    (root / "photos").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i, label in enumerate(labels, start=1):
        photo = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        photo[label > 0] += np.array([150, 120, 90], np.uint8)  # the person stands out
        cv2.imwrite(str(root / "photos" / f"{i:04d}.jpg"), photo)
        cv2.imwrite(str(root / "labels" / f"{i:04d}.png"), label)
    (root / "label_names.json").write_text(json.dumps({"names": names}))
    return root


def test_one_person_per_photo_with_box_mask_and_grouped_parts(tmp_path):
    empty = np.zeros((H, W), np.uint8)
    dataset = read_ccp(write_ccp(tmp_path / "ccp", [person_labels(), person_labels(-3), empty]))
    assert dataset.name == "ccp" and dataset.part_names == PART_NAMES and dataset.part_colors == PART_COLORS
    assert [len(im.objects) for im in dataset.images] == [1, 1, 0]  # nothing labelled: no person
    record = dataset.images[0]
    person = record.objects[0]
    assert person.category == "person" and (record.width, record.height) == (W, H)
    assert person.box.tolist() == [8, 4, 27, 44]  # extent of the labelled pixels, x1/y1 exclusive
    labels = person_labels()
    assert np.array_equal(person.mask.decode(H, W), labels > 0)
    parts = person.parts.decode(H, W)
    expected = {0: "background", 1: "accessories and bags", 2: "dress and full body", 3: "hair", 4: "shoes",
                5: "face and skin"}
    for ccp_index, part in expected.items():
        wanted = 0 if part == "background" else PART_NAMES.index(part) + 1
        assert set(np.unique(parts[labels == ccp_index])) == {wanted}, part


def test_part_groups_cover_each_class_once_and_fit_a_checkpoint():
    classes = [c for _, _, group in PART_GROUPS for c in group]
    assert len(classes) == len(set(classes)) and len(set(PART_NAMES)) == len(PART_NAMES)
    config = HypercolumnConfig(tasks=("figure_ground", "parts"), part_names=PART_NAMES, part_colors=PART_COLORS)
    assert HypercolumnConfig.from_dict(config.to_dict()) == config


def test_photos_without_labels_are_left_out(tmp_path):
    root = write_ccp(tmp_path / "ccp", [person_labels()])
    cv2.imwrite(str(root / "photos" / "0002.jpg"), np.zeros((H, W, 3), np.uint8))
    assert len(read_ccp(root).images) == 1


@pytest.mark.parametrize("breakage, named", [
    ("no_names", "label_names.json"),
    ("unknown_class", "spacesuit"),
    ("label_out_of_range", "0001.png"),
    ("size_mismatch", "0001.png"),
    ("label_without_photo", "0001.png"),
    ("no_labels_folder", "labels"),
])
def test_broken_folders_are_data_errors_naming_the_file(tmp_path, breakage, named):
    root = write_ccp(tmp_path / "ccp", [person_labels()])
    if breakage == "no_names":
        (root / "label_names.json").unlink()
    elif breakage == "unknown_class":
        (root / "label_names.json").write_text(json.dumps({"names": NAMES + ["spacesuit"]}))
    elif breakage == "label_out_of_range":
        cv2.imwrite(str(root / "labels" / "0001.png"), np.full((H, W), len(NAMES), np.uint8))
    elif breakage == "size_mismatch":
        cv2.imwrite(str(root / "labels" / "0001.png"), np.ones((H + 1, W), np.uint8))
    elif breakage == "label_without_photo":
        (root / "photos" / "0001.jpg").unlink()
    else:
        for path in (root / "labels").iterdir():
            path.unlink()
        (root / "labels").rmdir()
    with pytest.raises(DataError, match=named):
        read_ccp(root)


@pytest.mark.slow
def test_train_and_eval_with_ccp(tmp_path, capsys):
    """``--ccp`` trains a part head whose names, colours and categories reach the checkpoint,
    and ``eval --ccp`` reports the per-part IoU of the held-out photos."""
    from hcviewer.train.cli import main

    root = write_ccp(tmp_path / "ccp", [person_labels(s) for s in (-4, -2, 0, 2, 4, 3)])
    out = tmp_path / "run"
    tiny = ["--taps", "s8,top", "--grid", "2", "--image-size", "64", "--no-pretrained", "--device", "cpu"]
    assert main(["train", "--ccp", str(root), *tiny, "--tasks", "figure_ground,parts", "--epochs", "1",
                 "--val-fraction", "0.34", "--out", str(out)]) == 0
    config = read_checkpoint_info(out / "best.safetensors").config
    assert config.part_names == PART_NAMES and config.part_colors == PART_COLORS
    assert config.part_categories == ("person",) and config.tasks == ("figure_ground", "parts")
    report_path = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--ccp", str(root), "--split", "val",
                 "--val-fraction", "0.34", "--json", str(report_path), "--min-area", "16"]) == 0
    report = json.loads(report_path.read_text())
    assert report["num_images"] == 2 and report["num_part_objects"] == 2
    network = report["methods"][0]
    assert set(network["part_iou"]) == {"background", *PART_NAMES}
    present = [v for name, v in network["part_iou"].items() if name != "background" and v == v]
    assert network["part_miou"] == pytest.approx(np.mean(present))
    assert "face and skin" in capsys.readouterr().out

    # A validation-only COCO set is scored whole next to the held-out photos, each on its own.
    coco = write_coco_of(root)
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--ccp", str(root), "--val-coco", str(coco),
                 "--val-images", str(root / "photos"), "--split", "val", "--val-fraction", "0.34",
                 "--baselines", "none", "--json", str(report_path), "--min-area", "16"]) == 0
    report = json.loads(report_path.read_text())
    assert {s["data"]: s["num_images"] for s in report["sets"]} == {"ccp:val": 2, "val-coco:val": 6}
    assert report["num_images"] == 8 and report["sets"][1]["num_part_objects"] == 0


def write_coco_of(root: Path) -> Path:
    """The CCP photos as a COCO file: one person per photo with its mask, no parts."""
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for i, label_path in enumerate(sorted((root / "labels").glob("*.png")), start=1):
        mask = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED) > 0
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        images.append({"id": i, "file_name": f"{label_path.stem}.jpg", "width": W, "height": H})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
                            "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")},
                            "bbox": [float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]),
                                     float(rows[-1] + 1 - rows[0])]})
    path = root.parent / "val-coco" / "annotations" / "instances.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "person"}]}))
    return path
