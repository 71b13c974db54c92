"""scripts/gather_coco_keypoint_people.py on a tiny git repository made here: only labelled,
not excluded COCO photos are taken, their YOLO-pose lines become COCO pixel boxes and keypoints,
and hcviewer's training reader reads the result."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hcviewer.categories import COCO_PERSON_KEYPOINTS
from hcviewer.data.coco import read_coco

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gather_coco_keypoint_people.py"
LABELLED, UNLABELLED, EXCLUDED, BROKEN, SMALL, ROTATED = 101, 102, 103, 104, 105, 106
WIDTH, HEIGHT = 600, 400
# one person: box centre (0.5, 0.5), size 0.5 x 0.25; nose visible at (0.25, 0.5), left eye hidden
# at (0.75, 0.25), the other 15 keypoints not labelled
PERSON = "0 0.5 0.5 0.5 0.25 0.25 0.5 2 0.75 0.25 1" + " 0 0 0" * 15


def _script():
    spec = importlib.util.spec_from_file_location("gather_coco_keypoint_people", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                   check=True, capture_output=True)


@pytest.fixture
def sources(tmp_path):
    """A git repository of COCO-named photos, the labels folder and an excluded image folder."""
    repo = tmp_path / "owner+name" / "repo"
    photos = repo / "coco" / "train2017"
    photos.mkdir(parents=True)
    for coco_id in (LABELLED, UNLABELLED, EXCLUDED):
        (photos / f"{coco_id:012d}.jpg").write_bytes(_jpeg(WIDTH, HEIGHT))
    (photos / f"{BROKEN:012d}.jpg").write_bytes(b"\xff\xd8 not a whole JPEG")
    (photos / f"{SMALL:012d}.jpg").write_bytes(_jpeg(224, 224))  # a resized copy, not COCO's own photo
    (photos / f"{ROTATED:012d}.jpg").write_bytes(_jpeg(WIDTH, HEIGHT, orientation=6))  # shown turned by 90 degrees
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "photos")
    labels = tmp_path / "labels" / "train2017"
    labels.mkdir(parents=True)
    for coco_id in (LABELLED, EXCLUDED, BROKEN, SMALL, ROTATED):
        (labels / f"{coco_id:012d}.txt").write_text(PERSON + "\n")
    excluded = tmp_path / "coco-mini-train" / "train2017"
    excluded.mkdir(parents=True)
    (excluded / f"{EXCLUDED:012d}.jpg").write_bytes(b"")
    return repo, labels, excluded


def test_gathers_only_labelled_photos_as_coco_pixels(sources, tmp_path, capsys):
    repo, labels, excluded = sources
    out = tmp_path / "out"
    _script().main(["--labels", str(labels), "--mirror", str(repo), "--exclude", str(excluded), "--out", str(out)])

    assert sorted(p.name for p in (out / "train2017").iterdir()) == [f"{LABELLED:012d}.jpg"]
    name = f"{LABELLED:012d}.jpg"
    assert (out / "train2017" / name).read_bytes() == (repo / "coco" / "train2017" / name).read_bytes()
    log = capsys.readouterr().out
    assert "owner/name: 1 new photos" in log
    for reason in ("excluded", "no label file", "not a JPEG", "long side out of range", "EXIF rotation"):
        assert f"1 {reason}" in log

    coco = json.loads((out / "annotations" / "person_keypoints_train2017.json").read_text())
    assert coco["images"] == [{"id": LABELLED, "file_name": name, "width": WIDTH, "height": HEIGHT}]
    [person] = coco["annotations"]
    assert person["bbox"] == [150.0, 150.0, 300.0, 100.0]
    assert person["area"] == 30000.0
    assert person["keypoints"][:6] == [150.0, 200.0, 2, 450.0, 100.0, 1]
    assert person["keypoints"][6:] == [0] * 45
    assert person["num_keypoints"] == 2
    assert person["iscrowd"] == 0 and person["id"] == LABELLED * 100
    [category] = coco["categories"]
    assert category["id"] == person["category_id"] and category["keypoints"] == list(COCO_PERSON_KEYPOINTS)
    assert [16, 14] in category["skeleton"]  # COCO's 1-based pairs

    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = (out / "sources.tsv").read_text().splitlines()
    assert rows[1:] == [f"{LABELLED}\towner/name\t{repo / '.git'}\t{commit}\tcoco/train2017/{name}"]

    dataset = read_coco(out / "annotations" / "person_keypoints_train2017.json", out / "train2017")
    [record] = dataset.images
    [obj] = record.objects
    np.testing.assert_allclose(obj.box, [150, 150, 450, 250])
    np.testing.assert_allclose(obj.keypoints[:2], [[150, 200, 2], [450, 100, 1]])
    assert dataset.keypoint_names == COCO_PERSON_KEYPOINTS


def test_refuses_an_output_folder_holding_photos(sources, tmp_path):
    repo, labels, _ = sources
    out = tmp_path / "out"
    (out / "train2017").mkdir(parents=True)
    (out / "train2017" / "old.jpg").write_bytes(b"")
    with pytest.raises(SystemExit, match="not empty"):
        _script().main(["--labels", str(labels), "--mirror", str(repo), "--out", str(out)])


def test_a_label_line_that_is_not_yolo_pose_names_its_file(sources, tmp_path):
    repo, labels, _ = sources
    (labels / f"{LABELLED:012d}.txt").write_text(PERSON.replace("0.25 0.5 2", "0.25 0.5 seen") + "\n")
    with pytest.raises(SystemExit, match=f"{LABELLED:012d}.txt: line 1 is not class 0 and 55 numbers"):
        _script().main(["--labels", str(labels), "--mirror", str(repo), "--out", str(tmp_path / "out")])
