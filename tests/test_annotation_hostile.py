"""Annotation files that lie, and saves that fail: crafted sizes are bounded (masks are drawn at
the image's real size), a full disk leaves a consistent pair or says what was written, file names
cannot steer the mask PNGs out of their folder, and saved files get the usual permissions."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hcviewer.annotation import annotation_file as annotation_io
from hcviewer.annotation.annotation_file import (
    Annotation, AnnotationError, SavedImage, SavedObject, encode_mask, write_annotation,
)
from hcviewer.annotation.annotation_reader import read_annotation


def _polygon_file(folder: Path, height, width) -> Path:
    path = folder / "crafted.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "height": height, "width": width}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10],
                         "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]}],
        "categories": [{"id": 1, "name": "person"}]}))
    return path


def test_a_crafted_image_size_is_drawn_at_the_real_size(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 60, 3), np.uint8))
    path = _polygon_file(tmp_path, 200000, 200000)
    code = ("import sys; from hcviewer.annotation.annotation_file import decode_mask; from hcviewer.annotation.annotation_reader import read_annotation; "
            "(obj,) = read_annotation(sys.argv[1]).images[0].objects; "
            "print(decode_mask(obj.mask_rle).shape, int(decode_mask(obj.mask_rle).sum()))")
    # a child process: before the fix pycocotools segfaulted, which would end this test run too
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["(40,", "60)", "100"]


@pytest.mark.parametrize("height, width", [(200000, 200000), (float("inf"), 30), (-5, 30), ("tall", 30)])
def test_a_crafted_image_size_without_the_image_is_refused(tmp_path, height, width):
    path = _polygon_file(tmp_path, height, width)  # a.png does not exist: only the claim is known
    if height == float("inf"):
        path.write_text(path.read_text().replace("Infinity", "1e999"))
    with pytest.raises(AnnotationError) as error:
        read_annotation(path)
    assert str(error.value).startswith(f"{path}: images[0]")


@pytest.mark.parametrize("record, expected", [
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "segmentation": {"size": [200000, 200000],
                                                                              "counts": "PPYo1"}},
     "at most"),
    ({"image_id": [1], "category_id": 1, "bbox": [0, 0, 5, 5]}, "annotations[0]: image_id must be a whole number or a string, got [1]"),
    ({"image_id": 1, "category_id": {"a": 1}, "bbox": [0, 0, 5, 5]}, "category_id must be a whole number"),
    ({"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5]}, "category_id 2 is not in 'categories' (ids [1])"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "keypoints": [1, 2]}, "flat list"),
    ({"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "hcviewer_gt": [["a"]]}, "ground truth"),
])
def test_crafted_records_are_clean_errors(tmp_path, record, expected):
    path = tmp_path / "crafted.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [record],
                                "categories": [{"id": 1, "name": "person"}]}))
    with pytest.raises(AnnotationError) as error:
        read_annotation(path)
    assert str(error.value).startswith(f"{path}: annotations[0]") and expected in str(error.value)


def test_a_crafted_saved_result_is_refused_unread(tmp_path):
    import base64
    import zlib

    bomb = base64.b64encode(zlib.compress(bytes(100_000_000))).decode("ascii")  # 100 MB from 100 KB
    path = tmp_path / "crafted.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "hcviewer": {"pending": [
        {"image_id": 1, "box": [0, 0, 5, 5], "label": "p",
         "result": {"figure_ground": {"shape": [50, 50], "float16_zlib_base64": bomb}}}]}}))
    with pytest.raises(AnnotationError) as error:
        read_annotation(path)
    assert "hcviewer.pending[0].result: figure_ground" in str(error.value)


@pytest.fixture
def annotation(tmp_path: Path) -> Annotation:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 60, 3), np.uint8))
    objects = []
    for i in range(3):
        mask = np.zeros((40, 60), bool)
        mask[5:15, 10 * i:10 * i + 8] = True
        objects.append(SavedObject((10 * i, 5, 10 * i + 8, 15), "person", None, encode_mask(mask)))
    return Annotation([SavedImage(tmp_path / "a.png", (40, 60), objects)], {"person": 1})


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_while_writing_masks_changes_nothing_and_says_so(annotation, tmp_path, monkeypatch):
    path = tmp_path / "ann.json"
    write_annotation(path, annotation)
    before = _files(tmp_path)
    annotation.images[0].objects.pop()
    written = []
    real_write = Path.write_bytes

    def fill_disk(self, data):
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(self)
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", fill_disk)
    with pytest.raises(OSError) as error:
        write_annotation(path, annotation)
    message = str(error.value)
    assert "No space left on device" in message and "nothing was saved" in message and "ann_masks" in message
    assert _files(tmp_path) == before  # the JSON and its PNGs are both the previous save's


def test_a_mask_folder_that_cannot_be_replaced_is_named(annotation, tmp_path, monkeypatch):
    path = tmp_path / "ann.json"
    write_annotation(path, annotation)
    annotation.images[0].objects.pop()
    real_replace = os.replace

    def refuse_folders(src, dst):
        if Path(src).is_dir():
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return real_replace(src, dst)

    monkeypatch.setattr(annotation_io.os, "replace", refuse_folders)
    with pytest.raises(OSError) as error:
        write_annotation(path, annotation)
    message = str(error.value)
    assert f"{path} was saved" in message and "from the previous save" in message
    assert len(json.loads(path.read_text())["annotations"]) == 2
    assert len(list((tmp_path / "ann_masks" / "a").iterdir())) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staged folder left


def test_file_names_cannot_steer_mask_pngs_out_of_their_folder(annotation, tmp_path):
    (tmp_path / "x").mkdir()
    annotation.images[0].path = tmp_path / "x" / ".."
    annotation.images.append(SavedImage(tmp_path / "other" / "a.png", (40, 60), annotation.images[0].objects[:1]))
    annotation.images.append(SavedImage(tmp_path / "third" / "a.png", (40, 60), annotation.images[0].objects[:1]))
    write_annotation(tmp_path / "ann.json", annotation)
    pngs = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png") if p.name != "a.png")
    assert pngs and all(p.startswith("ann_masks/") for p in pngs)
    folders = {Path(p).parent.name for p in pngs}
    assert len(folders) == 3  # the two a.png of different folders do not overwrite each other


def test_the_mask_folder_and_files_get_the_permissions_of_the_json(annotation, tmp_path):
    umask = os.umask(0o022)
    try:
        write_annotation(tmp_path / "ann.json", annotation)
    finally:
        os.umask(umask)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "ann.json") == 0o644
    assert mode(tmp_path / "ann_masks") == 0o755 and mode(tmp_path / "ann_masks" / "a") == 0o755
    assert {mode(p) for p in (tmp_path / "ann_masks").rglob("*.png")} == {0o644}


def test_image_sizes_follow_the_exif_orientation(tmp_path):
    image = Image.new("RGB", (60, 40))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 40 wide, 60 tall
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert annotation_io.read_size_or_zero(tmp_path / "rotated.jpg") == (60, 40)
    shown = cv2.imdecode(np.fromfile(tmp_path / "rotated.jpg", np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape[:2] == (60, 40)  # as OpenCV shows it
