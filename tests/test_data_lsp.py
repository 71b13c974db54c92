"""The LSPet reader on tiny hand-made folders (a joints.mat written with scipy and noise photos):
its limb joints at their COCO keypoints, neck and head top and invisible joints unlabelled, the
box derived from the joints with the COCO margins, photo and joints enlarged alike, a DataError
naming the file for broken input, and ``--lsp`` through the parser, training and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from hcviewer.categories import COCO_PERSON_KEYPOINTS
from hcviewer.data.lsp import BOX_MARGINS, read_lsp
from hcviewer.data.records import DataError
from hcviewer.data.training import TargetSpec

# LSPet's joint order (its README).
LSP_JOINTS = ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
              "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top")
H, W = 90, 60


def standing_person(dx: float = 0.0) -> np.ndarray:
    """[14, 3] joints of an upright person in a W x H photo, all visible."""
    xy = {"right_ankle": (22, 80), "right_knee": (23, 65), "right_hip": (24, 50), "left_hip": (36, 50),
          "left_knee": (37, 65), "left_ankle": (38, 80), "right_wrist": (14, 52), "right_elbow": (17, 40),
          "right_shoulder": (22, 28), "left_shoulder": (38, 28), "left_elbow": (43, 40), "left_wrist": (46, 52),
          "neck": (30, 26), "head_top": (30, 15)}
    return np.array([(xy[name][0] + dx, xy[name][1], 1) for name in LSP_JOINTS], np.float64)


def write_lsp(root: Path, people: list[np.ndarray], size: tuple[int, int] = (W, H)) -> Path:
    """An LSPet folder: joints.mat as LSPet stores it (14 x 3 x N) and one noise photo per person."""
    (root / "images").mkdir(parents=True)
    savemat(root / "joints.mat", {"joints": np.stack(people, axis=2)})
    rng = np.random.default_rng(0)
    for i in range(len(people)):
        cv2.imwrite(str(root / "images" / f"im{i + 1:05d}.jpg"), rng.integers(0, 255, (size[1], size[0], 3), np.uint8))
    return root


def test_limb_joints_at_their_coco_keypoints(tmp_path):
    joints = standing_person()
    person = read_lsp(write_lsp(tmp_path / "lsp", [joints]), scale=1.0).images[0].objects[0]
    assert person.category == "person" and person.mask is None and person.parts is None
    for lsp_index, name in enumerate(LSP_JOINTS[:12]):
        assert person.keypoints[COCO_PERSON_KEYPOINTS.index(name)].tolist() == [*joints[lsp_index, :2], 2]
    # COCO has no neck or head top, and LSPet no face points: those keypoints are never labelled
    # (v = -1), which the absent-joint training must not read as "not in the box".
    for name in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
        assert person.keypoints[COCO_PERSON_KEYPOINTS.index(name)].tolist() == [0, 0, -1]


def test_invisible_joints_are_unlabelled_and_left_out_of_the_box(tmp_path):
    """LSPet gives no position for an invisible joint (flag 0, often x = 0 outside the photo): it
    becomes v = 0, not COCO's hidden-but-placed v = 1."""
    joints = standing_person()
    joints[LSP_JOINTS.index("left_ankle")] = (0, -26, 0)
    joints[LSP_JOINTS.index("head_top")] = (0, 0, 0)
    person = read_lsp(write_lsp(tmp_path / "lsp", [joints]), scale=1.0).images[0].objects[0]
    assert person.keypoints[COCO_PERSON_KEYPOINTS.index("left_ankle")].tolist() == [0, 0, 0]
    assert (person.keypoints[:, 2] == 2).sum() == 11
    assert person.box[0] > 5 and person.box[1] > 5
    assert TargetSpec(keypoint_names=COCO_PERSON_KEYPOINTS).trains_on(person)
    assert not TargetSpec(keypoint_names=()).trains_on(person)  # no mask: it trains the keypoint head only


def test_people_train_the_keypoint_head_only(tmp_path):
    from hcviewer.data.training import BoxTrainingDataset

    dataset = read_lsp(write_lsp(tmp_path / "lsp", [standing_person()]))
    spec = TargetSpec(output_size=8, keypoint_names=COCO_PERSON_KEYPOINTS, num_parts=2)
    sample = BoxTrainingDataset(dataset, spec, max_side=128, augment=False)[0]
    assert len(sample.boxes) == 1 and (sample.figure_ground == -1).all() and (sample.parts == -1).all()
    assert (sample.keypoints[0] >= 0).sum() == 12


def test_box_is_the_limb_extent_with_the_coco_margins(tmp_path):
    person = read_lsp(write_lsp(tmp_path / "lsp", [standing_person()]), scale=1.0).images[0].objects[0]
    x0, y0, x1, y1 = 14, 28, 46, 80  # limb joints' extent; the head top (y 15) is inside the top margin
    extent_w, extent_h = x1 - x0, y1 - y0
    assert y0 - BOX_MARGINS["top"] * extent_h < 15
    expected = [x0 - BOX_MARGINS["left"] * extent_w, y0 - BOX_MARGINS["top"] * extent_h,
                x1 + BOX_MARGINS["right"] * extent_w, y1 + BOX_MARGINS["bottom"] * extent_h]
    np.testing.assert_allclose(person.box, expected, rtol=1e-6)


def test_box_holds_the_head_and_stays_in_the_photo(tmp_path):
    upside_down = standing_person()
    upside_down[:, 1] = H - upside_down[:, 1]  # head top at y 78, below the ankles' margin
    near_edge = standing_person(dx=-12)  # the right wrist at x 2: the left margin leaves the photo
    dataset = read_lsp(write_lsp(tmp_path / "lsp", [upside_down, near_edge]), scale=1.0)
    head_top = upside_down[LSP_JOINTS.index("head_top"), 1]
    assert dataset.images[0].objects[0].box[3] == pytest.approx(head_top)
    assert dataset.images[1].objects[0].box[0] == 0


def test_person_with_under_two_visible_limb_joints_has_no_box(tmp_path):
    joints = standing_person()
    joints[1:12, 2] = 0
    assert read_lsp(write_lsp(tmp_path / "lsp", [joints]), scale=1.0).images[0].objects == []


def test_scale_enlarges_photo_and_joints_alike(tmp_path):
    root = write_lsp(tmp_path / "lsp", [standing_person()])
    photo = np.zeros((H, W, 3), np.uint8)
    photo[26:31, 20:25] = 255  # a white square around the right shoulder (22, 28)
    cv2.imwrite(str(root / "images" / "im00001.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 100])
    plain, = read_lsp(root, scale=1.0).images
    record, = read_lsp(root, scale=2.0).images
    rgb = record.load_rgb()
    assert (record.width, record.height) == (2 * W, 2 * H) and rgb.shape == (2 * H, 2 * W, 3)
    shoulder = record.objects[0].keypoints[COCO_PERSON_KEYPOINTS.index("right_shoulder")]
    assert shoulder.tolist() == [44, 56, 2]
    ys, xs = np.nonzero(rgb[..., 0] > 128)
    assert abs(xs.mean() - 45) < 1 and abs(ys.mean() - 57) < 1  # the square's centre (22.5, 28.5) doubled
    np.testing.assert_allclose(record.objects[0].box, plain.objects[0].box * 2, rtol=1e-5)


@pytest.mark.parametrize("breakage, named", [
    ("no images folder", "images"),
    ("no joints.mat", "joints.mat"),
    ("not a MATLAB file", "joints.mat"),
    ("original LSP axis order", "joints.mat"),
    ("visible flag 2", "joints.mat"),
    ("a photo missing", "im00002.jpg"),
    ("a photo replaced by a larger one", "im00001.jpg"),
])
def test_broken_folders_name_the_file(tmp_path, breakage, named):
    root = write_lsp(tmp_path / "lsp", [standing_person(), standing_person(3)])
    if breakage == "no images folder":
        for photo in (root / "images").iterdir():
            photo.unlink()
        (root / "images").rmdir()
    elif breakage == "no joints.mat":
        (root / "joints.mat").unlink()
    elif breakage == "not a MATLAB file":
        (root / "joints.mat").write_bytes(b"MATLAB 5.0 MAT-file, but not really" * 8)
    elif breakage == "original LSP axis order":
        savemat(root / "joints.mat", {"joints": np.zeros((3, 14, 2))})
    elif breakage == "visible flag 2":
        joints = np.stack([standing_person(), standing_person()], axis=2)
        joints[0, 2, 1] = 2
        savemat(root / "joints.mat", {"joints": joints})
    elif breakage == "a photo missing":
        (root / "images" / "im00002.jpg").unlink()
    with pytest.raises(DataError, match=named):
        dataset = read_lsp(root)
        if breakage == "a photo replaced by a larger one":
            cv2.imwrite(str(root / "images" / "im00001.jpg"), np.zeros((H + 10, W, 3), np.uint8))
            dataset.images[0].load_rgb()


def test_lsp_option_and_limit(tmp_path):
    from hcviewer.train.cli import build_parser
    from hcviewer.train.sources import data_sources, load_sources

    root = write_lsp(tmp_path / "lsp", [standing_person(d) for d in (-2, 0, 2)])
    args = build_parser().parse_args(["eval", "--lsp", str(root), "--limit", "2"])
    sources = data_sources(args)
    assert sources == [{"kind": "lsp", "root": str(root)}]
    dataset, = load_sources(sources, ("person",), seed=0, limit=args.limit)
    assert [im.image_id for im in dataset.images] == ["im00001", "im00002"]
    assert dataset.keypoint_names == COCO_PERSON_KEYPOINTS


@pytest.mark.slow
def test_train_and_eval_with_lsp(tmp_path):
    """``--lsp`` trains a keypoint head for a tiny epoch, and ``eval --lsp --split val`` scores
    the held-out people's keypoints."""
    from hcviewer.train.cli import main

    root = write_lsp(tmp_path / "lsp", [standing_person(d) for d in (-4, -2, 0, 2, 4, 3)])
    out = tmp_path / "run"
    tiny = ["--taps", "s8,top", "--grid", "2", "--image-size", "64", "--no-pretrained", "--device", "cpu"]
    assert main(["train", "--lsp", str(root), *tiny, "--tasks", "keypoints", "--epochs", "1",
                 "--val-fraction", "0.34", "--out", str(out)]) == 0
    report_path = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out / "best.safetensors"), "--lsp", str(root), "--split", "val",
                 "--val-fraction", "0.34", "--baselines", "none", "--json", str(report_path),
                 "--min-area", "16"]) == 0
    report = json.loads(report_path.read_text())
    assert report["num_images"] == 2
    assert 0 <= report["methods"][0]["pck"] <= 1
