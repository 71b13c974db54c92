"""The ``hcviewer`` command: headless predict end to end, error exits, and the app launcher."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from hcviewer.app.cli import main


@pytest.fixture
def dataset(tmp_path, rgb_image) -> dict[str, Path]:
    """Two COCO-named images in a nested folder, their ground truth and detection results."""
    folder = tmp_path / "images" / "val"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "000000000001.png"), rgb_image[..., ::-1])
    cv2.imwrite(str(folder / "000000000002.png"), np.ascontiguousarray(rgb_image[:80, :100, ::-1]))
    (folder / "readme.txt").write_text("not an image")
    gt = {"images": [{"id": 1, "file_name": "000000000001.png", "width": 160, "height": 120},
                     {"id": 2, "file_name": "000000000002.png", "width": 100, "height": 80}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 30, 60, 60], "area": 3600, "iscrowd": 0},
              {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 40, 50], "area": 2000, "iscrowd": 0}],
          "categories": [{"id": 1, "name": "person"}]}
    detections = [{"image_id": 1, "bbox": [50, 30, 60, 60], "score": 0.9, "category_id": 1},
                  {"image_id": 1, "bbox": [0, 0, 30, 30], "score": 0.1, "category_id": 1},
                  {"image_id": 2, "bbox": [5, 5, 40, 50], "score": 0.8, "category_id": 1}]
    paths = {"images": tmp_path / "images", "gt": tmp_path / "gt.json", "detections": tmp_path / "dets.json",
             "out": tmp_path / "results.json"}
    paths["gt"].write_text(json.dumps(gt))
    paths["detections"].write_text(json.dumps(detections))
    return paths


def predict(dataset, checkpoint, *extra: str, boxes: str = "gt") -> int:
    return main(["predict", str(dataset["images"]), "--boxes", str(dataset[boxes]), "--out", str(dataset["out"]),
                 "--checkpoint", str(checkpoint), "--device", "cpu", *extra])


def test_predict_writes_coco_results_for_ground_truth_boxes(dataset, tiny_checkpoint, capsys):
    assert predict(dataset, tiny_checkpoint) == 0
    assert "Wrote 2 masks for 2 images" in capsys.readouterr().err
    coco = COCO(str(dataset["gt"]))
    results = coco.loadRes(str(dataset["out"]))
    anns = results.loadAnns(results.getAnnIds())
    assert sorted(a["image_id"] for a in anns) == [1, 2]
    assert all(len(a["keypoints"]) == 51 and 0 <= a["score"] <= 1 for a in anns)
    by_image = {a["image_id"]: a for a in anns}
    assert results.annToMask(by_image[2]).shape == (80, 100)
    assert by_image[1]["bbox"] == [50.0, 30.0, 60.0, 60.0]


@pytest.mark.parametrize("mirror", [True, False])
def test_predict_averages_with_the_mirror_image_unless_told_not_to(dataset, tiny_checkpoint, rgb_image, mirror):
    from hcviewer.inference import HypercolumnPredictor

    assert predict(dataset, tiny_checkpoint, *([] if mirror else ["--no-mirror"])) == 0
    written = next(r for r in json.loads(dataset["out"].read_text()) if r["image_id"] == 1)
    predictor = HypercolumnPredictor.from_checkpoint(tiny_checkpoint, device="cpu", mirror=mirror)
    predictor.set_image(rgb_image)
    expected = predictor.predict(np.array([[50, 30, 110, 90]], np.float32)).keypoints[0]
    np.testing.assert_allclose(np.reshape(written["keypoints"], (-1, 3))[:, :2], expected[:, :2], atol=0.01)


def test_predict_from_detection_results_with_min_score(dataset, tiny_checkpoint):
    assert predict(dataset, tiny_checkpoint, "--min-score", "0.5", boxes="detections") == 0
    records = json.loads(dataset["out"].read_text())
    assert [(r["image_id"], r["category_id"]) for r in records] == [(1, 1), (2, 1)]
    assert predict(dataset, tiny_checkpoint, boxes="detections") == 0
    assert len(json.loads(dataset["out"].read_text())) == 3


def test_predict_reports_an_unreadable_image_and_goes_on(dataset, tiny_checkpoint, capsys):
    broken = dataset["images"] / "val" / "000000000002.png"
    broken.write_bytes(b"broken")
    assert predict(dataset, tiny_checkpoint) == 1  # exit status 1: some were skipped
    err = capsys.readouterr().err
    assert f"skipped {broken}: not an image" in err and "1 images skipped" in err
    assert [r["image_id"] for r in json.loads(dataset["out"].read_text())] == [1]


def test_predict_numbers_images_of_a_csv_box_file(dataset, tiny_checkpoint, tmp_path):
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("image,x0,y0,x1,y1,label\n000000000002.png,5,5,45,55,cat\n")
    dataset["csv"] = csv_path
    assert predict(dataset, tiny_checkpoint, boxes="csv") == 0
    [record] = json.loads(dataset["out"].read_text())
    assert record["image_id"] == 2 and record["category_id"] == 1  # the second image; "cat" is category 1


def one_line_error(capsys, *expected: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("hcviewer: error: ") and "\n" not in err and "Traceback" not in err
    for text in expected:
        assert text in err


def test_predict_bad_inputs_exit_2_with_one_line(dataset, tiny_checkpoint, tmp_path, capsys):
    assert predict(dataset, tmp_path / "missing.safetensors") == 2
    one_line_error(capsys, "missing.safetensors not found; pass --checkpoint FILE")

    (tmp_path / "bad.json").write_text("{")
    dataset["bad"] = tmp_path / "bad.json"
    assert predict(dataset, tiny_checkpoint, boxes="bad") == 2
    one_line_error(capsys, "bad.json: not valid JSON")

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}], "annotations": []}))
    dataset["other"] = other
    assert predict(dataset, tiny_checkpoint, boxes="other") == 2
    one_line_error(capsys, "none of the 2 images has boxes in", "it names e.g. x.jpg")

    assert predict(dataset, tiny_checkpoint, "--threshold", "1.5") == 2
    one_line_error(capsys, "--threshold must lie between 0 and 1")

    not_checkpoint = tmp_path / "notes.safetensors"
    not_checkpoint.write_text("hello")
    assert predict(dataset, not_checkpoint) == 2
    one_line_error(capsys, "notes.safetensors")

    dataset["out"] = tmp_path / "no" / "such" / "folder" / "out.json"
    assert predict(dataset, tiny_checkpoint) == 2
    one_line_error(capsys, "cannot write", "out.json")


def test_predict_hostile_inputs_exit_2_with_one_line_before_the_model_loads(dataset, tiny_checkpoint, tmp_path,
                                                                            capsys, make_fifo, monkeypatch):
    """Each was a traceback, a hang, or was accepted silently (issue 23)."""
    from hcviewer.app import cli

    monkeypatch.setattr(cli, "_load_predictor", lambda *args: pytest.fail("the model was loaded"))
    assert predict(dataset, tiny_checkpoint, "--min-score", "nan", boxes="detections") == 2
    one_line_error(capsys, "--min-score must be a finite number, got nan")

    dataset["out"] = tmp_path / ("r" * 5000 + ".json")
    assert predict(dataset, tiny_checkpoint) == 2
    one_line_error(capsys, "--out ", f"({len(str(dataset['out']))} characters): File name too long; choose a shorter name")
    dataset["out"] = tmp_path / "results.json"

    dataset["fifo"] = make_fifo("boxes.json")
    assert predict(dataset, tiny_checkpoint, boxes="fifo") == 2
    one_line_error(capsys, f"{dataset['fifo']}: cannot be read (it is a FIFO (named pipe), not a regular file")

    dataset["huge"] = tmp_path / "huge.json"
    dataset["huge"].write_text('[{"image_id": 1, "bbox": [0, 0, 1' + "0" * 400 + ', 5], "score": 1, "category_id": 1}]')
    assert predict(dataset, tiny_checkpoint, boxes="huge") == 2
    one_line_error(capsys, "huge.json: not valid JSON", "is beyond a 64-bit float")

    dataset["named"] = tmp_path / "named.json"
    dataset["named"].write_text('[{"image_id": 1, "bbox": [0, 0, 5, 5], "score": 1, "category_id": "x"}]')
    assert predict(dataset, tiny_checkpoint, boxes="named") == 2
    one_line_error(capsys, "named.json: record 0: category_id must be a whole number")


def test_predict_skips_a_fifo_named_like_an_image(dataset, tiny_checkpoint, capsys, make_fifo):
    fifo = make_fifo("000000000003.jpg")
    dataset["images"] = [dataset["images"], fifo]
    dataset["boxes"] = dataset["detections"].parent / "with_fifo.json"
    records = json.loads(dataset["detections"].read_text())
    dataset["boxes"].write_text(json.dumps(records + [{"image_id": 3, "bbox": [1, 1, 9, 9], "score": 1, "category_id": 1}]))
    assert main(["predict", str(dataset["images"][0]), str(fifo), "--boxes", str(dataset["boxes"]),
                 "--out", str(dataset["out"]), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {fifo}: cannot be read (it is a FIFO (named pipe), not a regular file" in err
    assert sorted({r["image_id"] for r in json.loads(dataset["out"].read_text())}) == [1, 2]


def test_predict_with_missing_images_or_arguments(dataset, tiny_checkpoint, tmp_path, capsys):
    dataset["images"] = tmp_path / "nowhere"
    assert predict(dataset, tiny_checkpoint) == 2
    one_line_error(capsys, "no such image or folder:", "nowhere")

    empty = tmp_path / "empty"
    empty.mkdir()
    dataset["images"] = empty
    assert predict(dataset, tiny_checkpoint) == 2
    one_line_error(capsys, "no image files found")

    assert main(["predict", str(empty), "--boxes", str(dataset["gt"])]) == 2  # --out is required
    assert "required: --out" in capsys.readouterr().err


@pytest.fixture
def fake_app(monkeypatch):
    """Stands in for hcviewer.app.main_window, recording what run_app is given."""
    calls = []
    module = types.ModuleType("hcviewer.app.main_window")
    module.run_app = lambda args: calls.append(args) or 0
    monkeypatch.setitem(sys.modules, "hcviewer.app.main_window", module)
    return calls


def test_app_arguments_go_to_run_app(fake_app, dataset, tiny_checkpoint):
    assert main([str(dataset["images"]), "--boxes", str(dataset["gt"]), "--checkpoint", str(tiny_checkpoint)]) == 0
    [args] = fake_app
    assert vars(args) == {"paths": [str(dataset["images"])], "boxes": str(dataset["gt"]),
                          "checkpoint": str(tiny_checkpoint), "device": "auto", "mirror": True}
    assert main(["--no-mirror"]) == 0
    assert vars(fake_app[1]) == {"paths": [], "boxes": None, "checkpoint": None, "device": "auto", "mirror": False}


def test_app_refuses_missing_files_before_opening(fake_app, tmp_path, capsys):
    assert main([str(tmp_path / "nope.png")]) == 2
    one_line_error(capsys, "no such path:", "nope.png")
    assert main(["--checkpoint", str(tmp_path / "gone.safetensors")]) == 2
    one_line_error(capsys, "no such file:", "gone.safetensors")
    assert main(["--device", "tpu"]) == 2
    assert fake_app == []


def test_help_and_predict_import_neither_qt_nor_torch_for_help():
    code = ("import sys\nfrom hcviewer.app.cli import main\n"
            "assert main(['--help']) == 0 and main(['predict', '--help']) == 0\n"
            "print(sorted(m for m in ('PySide6', 'torch', 'pyqtgraph') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "hcviewer predict" in done.stdout and done.stdout.strip().endswith("[]")
