"""``hcviewer export``: an annotation file, or the results of a real ``hcviewer predict`` run,
written as COCO, YOLO, VOC and labelme files equal, byte for byte, to what the window writes for
the same document (File > Save annotation, File > Export); bad input is one line and exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hcviewer.annotation.annotation_file import (
    Annotation, SavedImage, SavedObject, decode_mask, encode_mask, write_annotation,
)
from hcviewer.annotation.export_command import EXPORT_FORMATS
from hcviewer.app.cli import main
from hcviewer.app.main_window import MainWindow

FORMATS = tuple(EXPORT_FORMATS)  # a format added there is tested here
H, W = 60, 80


def _masks() -> list[np.ndarray]:
    person = np.zeros((H, W), np.uint8)
    cv2.circle(person, (30, 30), 22, 1, -1)
    person[40:58, 60:75] = 1  # a second piece
    cat = np.zeros((H, W), np.uint8)
    cv2.ellipse(cat, (55, 20), (18, 10), 30, 0, 360, 1, -1)
    return [person.astype(bool), cat.astype(bool)]


@pytest.fixture
def annotation_file(tmp_path) -> Path:
    """photos/a.png with a two-piece person and a cat accepted, photos/b.png with a pending box."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(photos / name), np.full((H, W, 3), 120, np.uint8))
    person, cat = (encode_mask(m) for m in _masks())
    annotation = Annotation([SavedImage(photos / "a.png", (H, W), [SavedObject((5, 5, 75, 58), "person", None, person),
                                                                   SavedObject((35, 8, 75, 32), "cat", 0.8, cat)], 4),
                             SavedImage(photos / "b.png", (H, W), [SavedObject((1, 1, 20, 20), "cat")], 9)],
                            {"person": 1, "cat": 17})
    path = tmp_path / "work" / "annotation.json"
    path.parent.mkdir()
    write_annotation(path, annotation)
    return path


def _gui_export(window: MainWindow, source: Path, kind: str, out: Path) -> None:
    """What the window writes: the annotation opened, then File > Save annotation (coco) or File > Export."""
    window.saving.open_annotation(source)
    assert window.messages == [] and window.project.images
    out.parent.mkdir(parents=True, exist_ok=True)
    assert window.saving.save_to(out, wait=True) if kind == "coco" else window.exporting.export_to(kind, out)


def _out(tmp_path: Path, kind: str) -> Path:
    return tmp_path / "out" / ("annotation.json" if kind == "coco" else kind)


def _files(out: Path) -> dict[str, bytes | str]:
    """Every file written (a folder's, or the COCO file and its mask folder) by relative name:
    its bytes, or where a link points."""
    roots = [out] if out.is_dir() else [out, out.with_name(f"{out.stem}_masks")]
    files = {}
    for root in roots:
        for path in ([root] if root.is_file() else sorted(root.rglob("*"))):
            if path.is_symlink():
                files[str(path.relative_to(out.parent))] = str(path.resolve())
            elif path.is_file():
                files[str(path.relative_to(out.parent))] = path.read_bytes()
    return files


def _same_as_the_window(window, tmp_path: Path, kind: str, cli_source: Path, gui_source: Path, *extra: str) -> dict:
    """Export ``gui_source`` in the window and ``cli_source`` with the command to the same path
    (YOLO's data.yaml names its folder); the files must be equal. Returns them."""
    out = _out(tmp_path, kind)
    _gui_export(window, gui_source, kind, out)
    by_window = _files(out)
    shutil.rmtree(out.parent)
    assert main(["export", str(cli_source), "--to", kind, str(out), *extra]) == 0
    by_command = _files(out)
    assert by_command.keys() == by_window.keys() and by_command
    assert by_command == by_window
    return by_command


@pytest.mark.parametrize("kind", FORMATS)
def test_an_annotation_exports_the_files_the_window_writes(blank_window, annotation_file, tmp_path, kind, capsys):
    files = _same_as_the_window(blank_window, tmp_path, kind, annotation_file, annotation_file)
    assert capsys.readouterr().err.startswith("Wrote ")
    expected = {"coco": "annotation_masks/a/00001_person.png", "yolo": "yolo/labels/a.txt",
                "voc": "voc/SegmentationObject/a.png", "labelme": "labelme/a.json"}[kind]
    assert expected in files and not any("b." in name for name in files)  # b.png has nothing accepted


def test_an_annotation_whose_images_moved_is_exported_with_images(annotation_file, tmp_path, capsys):
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "photos", moved)
    out = tmp_path / "labelme"
    assert main(["export", str(annotation_file), "--to", "labelme", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "a.png not found; pass --images DIR" in err and str(annotation_file) in err and "\n" not in err
    assert main(["export", str(annotation_file), "--images", str(moved), "--to", "labelme", str(out)]) == 0
    document = json.loads((out / "a.json").read_text())
    assert (out / document["imagePath"]).resolve() == (moved / "a.png").resolve()


def test_the_tolerance_option_reaches_the_polygons(annotation_file, tmp_path):
    from hcviewer.annotation.exporters import mask_polygons

    for tolerance in ("0", "2.5"):
        out = tmp_path / f"yolo{tolerance}"
        assert main(["export", str(annotation_file), "--to", "yolo", "--tolerance", tolerance, str(out)]) == 0
        vertices = [(len(line.split()) - 1) // 2 for line in (out / "labels" / "a.txt").read_text().splitlines()]
        # the person's two pieces are joined by a bridge that visits its end vertices twice
        assert vertices == [sum(len(p) for p in mask_polygons(mask, float(tolerance))) + 2 * (i == 0)
                            for i, mask in enumerate(_masks())]


# ------------------------------------------------------------------------------------ predict
@pytest.fixture
def predicted(tmp_path, rgb_image, tiny_checkpoint) -> dict[str, Path]:
    """A real ``hcviewer predict`` run on two tiny images whose boxes come from a CSV file (so
    predict numbers the images 1, 2 and names the category "person" 1)."""
    photos = tmp_path / "shots"
    photos.mkdir()
    cv2.imwrite(str(photos / "left.png"), rgb_image[..., ::-1])
    cv2.imwrite(str(photos / "right.png"), np.ascontiguousarray(rgb_image[:80, :100, ::-1]))
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1,label\nleft.png,50,30,110,90,person\nleft.png,5,5,40,40,person\n"
                     "right.png,10,10,60,70,person\n")
    results = tmp_path / "results.json"
    assert main(["predict", str(photos), "--boxes", str(boxes), "--out", str(results),
                 "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 0
    return {"images": photos, "boxes": boxes, "results": results}


@pytest.mark.slow
def test_predict_results_export_the_files_the_window_writes(blank_window, predicted, tmp_path):
    records = json.loads(predicted["results"].read_text())
    assert [r["image_id"] for r in records] == [1, 1, 2] and all(r["segmentation"]["counts"] for r in records)
    inputs = ("--images", str(predicted["images"]), "--boxes", str(predicted["boxes"]))
    # The results as an annotation the window opens: what it exports from there, the command
    # writes from the results themselves.
    converted = tmp_path / "converted" / "annotation.json"
    assert main(["export", str(predicted["results"]), "--to", "coco", str(converted), *inputs]) == 0
    coco = json.loads(converted.read_text())
    assert [c["name"] for c in coco["categories"]] == ["person"]
    assert [(a["image_id"], a["score"]) for a in coco["annotations"]] == [(r["image_id"], r["score"]) for r in records]
    for kind in FORMATS[1:]:
        files = _same_as_the_window(blank_window, tmp_path, kind, predicted["results"], converted, *inputs)
        if kind == "voc":  # the masks are predict's: instance 1 is the larger of the left image's
            with Image.open(tmp_path / "out" / "voc" / "SegmentationObject" / "left.png") as png:
                instances = np.asarray(png)
            masks = sorted((decode_mask(r["segmentation"]) for r in records[:2]), key=lambda m: -m.sum())
            assert all(np.array_equal(instances == i + 1, m & (instances <= i + 1)) for i, m in enumerate(masks))
        assert (kind == "yolo") == ("yolo/labels/right.txt" in files)


def test_results_match_images_named_by_id_without_the_box_file(tmp_path, capsys):
    photos = tmp_path / "val"
    photos.mkdir()
    cv2.imwrite(str(photos / "000000000007.png"), np.zeros((H, W, 3), np.uint8))
    results = tmp_path / "results.json"
    mask = encode_mask(_masks()[1])
    results.write_text(json.dumps([{"image_id": 7, "category_id": 3, "bbox": [37, 8, 36, 24], "score": 0.5,
                                    "segmentation": mask}]))
    out = tmp_path / "yolo"
    assert main(["export", str(results), "--images", str(photos), "--to", "yolo", str(out)]) == 0
    assert '0: "class 3"' in (out / "data.yaml").read_text() and (out / "labels" / "000000000007.txt").read_text()
    capsys.readouterr()
    results.write_text(json.dumps([{"image_id": 8, "category_id": 3, "bbox": [37, 8, 36, 24], "score": 0.5,
                                    "segmentation": mask}]))
    assert main(["export", str(results), "--images", str(photos), "--to", "yolo", str(out)]) == 2
    one_line_error(capsys, str(results), "image_id 8", "pass --boxes FILE")


# ---------------------------------------------------------------------------------- errors
def one_line_error(capsys, *expected: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("hcviewer: error: ") and "\n" not in err and "Traceback" not in err, err
    for text in expected:
        assert text in err, err


def test_bad_inputs_exit_2_with_one_line(annotation_file, tmp_path, capsys):
    out = str(tmp_path / "out")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["export", str(bad), "--to", "yolo", out]) == 2
    one_line_error(capsys, str(bad), "not valid JSON", "fix the file")
    bad.write_text(json.dumps({"images": "x", "annotations": []}))
    assert main(["export", str(bad), "--to", "yolo", out]) == 2
    one_line_error(capsys, str(bad))
    assert main(["export", str(tmp_path / "none.json"), "--to", "yolo", out]) == 2
    one_line_error(capsys, "none.json: no such file; check the path")
    assert main(["export", str(annotation_file), "--images", str(tmp_path / "nowhere"), "--to", "yolo", out]) == 2
    one_line_error(capsys, "--images", "nowhere: no such folder")
    assert main(["export", str(annotation_file), "--boxes", str(annotation_file), "--to", "yolo", out]) == 2
    one_line_error(capsys, str(annotation_file), "is an annotation", "leave it out")
    assert main(["export", str(annotation_file), "--to", "tiff", out]) == 2
    assert "invalid choice: 'tiff'" in capsys.readouterr().err
    assert main(["export", str(annotation_file), "--to", "yolo", "--tolerance", "-1", out]) == 2
    one_line_error(capsys, "--tolerance", "0 or more pixels")
    assert main(["export", str(annotation_file), "--to", "coco", str(tmp_path)]) == 2
    one_line_error(capsys, "is a folder", "annotation.json")
    assert main(["export", str(annotation_file), "--to", "coco", out]) == 2
    one_line_error(capsys, "not a .json file name", "annotation.json")
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5,
                                    "segmentation": {"size": [3, 3], "counts": "x"}}]))
    assert main(["export", str(results), "--to", "yolo", out]) == 2
    one_line_error(capsys, str(results), "pass --images DIR")
    assert not Path(out).exists()


def test_malformed_results_name_the_record(tmp_path, capsys):
    photos = tmp_path / "val"
    photos.mkdir()
    cv2.imwrite(str(photos / "1.png"), np.zeros((H, W, 3), np.uint8))
    results = tmp_path / "results.json"
    for record, expected in (({"image_id": 1, "bbox": [1, 1, 5, 5]}, "lacks 'category_id', 'segmentation'"),
                             ({"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
                               "segmentation": encode_mask(np.zeros((10, 10), bool))}, "not this 80x60 one"),
                             ({"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
                               "segmentation": {"size": [H, W], "counts": "!!"}}, "re-export the mask")):
        results.write_text(json.dumps([record]))
        assert main(["export", str(results), "--images", str(photos), "--to", "labelme", str(tmp_path / "o")]) == 2
        one_line_error(capsys, str(results), "record 0", expected)


def test_nothing_accepted_is_an_error_for_folder_formats(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((H, W, 3), np.uint8))
    path = tmp_path / "pending.json"
    write_annotation(path, Annotation([SavedImage(tmp_path / "a.png", (H, W), [SavedObject((1, 1, 9, 9), "cat")])],
                                      {"cat": 1}))
    assert main(["export", str(path), "--to", "voc", str(tmp_path / "voc")]) == 2
    one_line_error(capsys, "no image has an accepted object")


def test_export_imports_neither_qt_nor_torch(annotation_file, tmp_path):
    """Measured (loaded 2-core machine): exporting 44 predicted masks of 4 COCO photos to YOLO took 0.9 s;
    importing torch, as finding the images through annotation.batch did, alone took 4.3-4.9 s."""
    code = ("import sys\nfrom hcviewer.app.cli import main\n"
            f"assert main(['export', {str(annotation_file)!r}, '--images', {str(tmp_path / 'photos')!r}, '--to', "
            f"'labelme', {str(tmp_path / 'o')!r}]) == 0\n"
            "assert main(['export', '--help']) == 0\n"
            "print(sorted(m for m in ('PySide6', 'pyqtgraph', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert "hcviewer export" in done.stdout and done.stdout.strip().endswith("[]")
