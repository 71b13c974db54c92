"""``hcviewer predict`` never loses a run: the output is tried before any work, inputs are never
overwritten by accident, progress is kept so an interrupted or killed run continues where it
stopped, and one bad box or image is named and skipped, never the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from hcviewer.annotation import batch
from hcviewer.annotation.batch_progress import progress_path
from hcviewer.app import cli
from hcviewer.app.cli import main
from hcviewer.inference import HypercolumnPredictor

REPO = Path(__file__).resolve().parents[1]
CLASS_NAMES = ("InputError", "ValueError", "RuntimeError", "OSError", "KeyboardInterrupt", "Traceback")


def make_images(folder: Path, count: int, size: tuple[int, int] = (72, 96)) -> Path:
    """``count`` PNGs img000.png... with two boxes each in boxes.csv; returns the box file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lines = ["image,x0,y0,x1,y1,label"]
    for i in range(count):
        cv2.imwrite(str(folder / f"img{i:03d}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
        lines += [f"img{i:03d}.png,4,6,50,60,person", f"img{i:03d}.png,30,10,90,70,person"]
    boxes = folder.parent / "boxes.csv"
    boxes.write_text("\n".join(lines) + "\n")
    return boxes


@pytest.fixture
def run(tmp_path, tiny_checkpoint):
    """main(predict ...) on 3 images of 2 boxes each, writing tmp/out.json."""
    boxes = make_images(tmp_path / "images", 3)
    out = tmp_path / "out.json"

    def predict(*extra: str, out_path: Path = out, box_file: Path = boxes) -> int:
        return main(["predict", str(tmp_path / "images"), "--boxes", str(box_file), "--out", str(out_path),
                     "--checkpoint", str(tiny_checkpoint), "--device", "cpu", *extra])

    predict.out, predict.boxes, predict.folder = out, boxes, tmp_path / "images"
    return predict


def no_class_names(text: str) -> None:
    assert not [name for name in CLASS_NAMES if name in text], text


def interrupt_at_image(monkeypatch, number: int) -> list:
    """Ctrl+C while the ``number``-th image (1-based) is being segmented; returns the calls."""
    calls = []
    original = batch.predict_images

    def predict_images(predictor, items, **kwargs):
        calls.append(items[0].image_path.name)
        if len(calls) == number:
            raise KeyboardInterrupt
        return original(predictor, items, **kwargs)

    monkeypatch.setattr(batch, "predict_images", predict_images)
    return calls


# ---------------------------------------------------------------------------- the output
def test_an_output_that_cannot_be_written_is_found_before_the_model_loads(run, monkeypatch, capsys):
    loads = []
    monkeypatch.setattr(HypercolumnPredictor, "from_checkpoint", classmethod(lambda cls, *a: loads.append(a)))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("hcviewer.fileio.tempfile.mkstemp", read_only)
    assert run() == 2
    err = capsys.readouterr().err
    assert f"cannot write {run.out}: Permission denied" in err and "choose a folder you can write to" in err
    assert loads == [] and not run.out.exists()
    no_class_names(err)


def test_a_full_disk_is_found_before_the_model_loads(run, monkeypatch, capsys):
    loads = []
    monkeypatch.setattr(HypercolumnPredictor, "from_checkpoint", classmethod(lambda cls, *a: loads.append(a)))

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hcviewer.fileio.os.fsync", full)
    assert run() == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "free disk space" in err and loads == []
    assert [p.name for p in run.out.parent.iterdir() if p.name.startswith(".hcviewer-probe")] == []


def test_out_equal_to_an_input_is_refused_unless_forced(run, capsys):
    before = run.boxes.read_text()
    assert run(out_path=run.boxes) == 2
    err = capsys.readouterr().err
    assert f"--out {run.boxes} is an input file" in err and "--force" in err
    assert run.boxes.read_text() == before
    image = run.folder / "img000.png"
    assert run(out_path=image) == 2 and "is an input file" in capsys.readouterr().err
    assert run("--force", out_path=run.boxes) == 0
    assert len(json.loads(run.boxes.read_text())) == 6  # replaced by the results, as asked


def test_out_that_is_a_folder_is_refused(run, tmp_path, capsys):
    assert run(out_path=tmp_path) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err


# ---------------------------------------------------------------------------- progress
def test_ctrl_c_writes_the_finished_images_and_the_same_command_continues(run, monkeypatch, capsys, tmp_path):
    assert run(out_path=tmp_path / "straight.json") == 0
    straight = json.loads((tmp_path / "straight.json").read_text())
    capsys.readouterr()

    calls = interrupt_at_image(monkeypatch, 3)
    assert run() == 130
    err = capsys.readouterr().err
    assert "interrupted after 2 of 3 images; wrote 4 masks of the 2 finished images" in err
    assert "Run the same command again to continue" in err and str(progress_path(run.out)) in err
    no_class_names(err)
    assert json.loads(run.out.read_text()) == straight[:4]
    assert progress_path(run.out).is_file()

    calls.clear()
    monkeypatch.undo()
    calls = interrupt_at_image(monkeypatch, 99)
    assert run() == 0
    assert calls == ["img002.png"]  # only the image that was not finished
    assert "2 of 3 images were done before" in capsys.readouterr().err
    assert json.loads(run.out.read_text()) == straight
    assert not progress_path(run.out).exists()


def test_a_line_cut_short_by_a_kill_is_redone(run, monkeypatch, capsys):
    interrupt_at_image(monkeypatch, 3)
    assert run() == 130
    monkeypatch.undo()
    partial = progress_path(run.out)
    lines = partial.read_text().splitlines(keepends=True)
    partial.write_text("".join(lines[:2]) + lines[2][:25])  # header, image 1, half of image 2
    calls = interrupt_at_image(monkeypatch, 99)
    assert run() == 0
    assert calls == ["img001.png", "img002.png"]
    assert [r["image_id"] for r in json.loads(run.out.read_text())] == [1, 1, 2, 2, 3, 3]


def test_ctrl_c_before_any_image_is_finished_writes_nothing(run, monkeypatch, capsys):
    def interrupted_load(cls, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(HypercolumnPredictor, "from_checkpoint", classmethod(interrupted_load))
    assert run() == 130
    err = capsys.readouterr().err
    assert "interrupted after 0 of 3 images; no image was finished, nothing written" in err
    assert not run.out.exists()


def test_progress_of_other_inputs_is_not_mixed_in(run, monkeypatch, capsys):
    interrupt_at_image(monkeypatch, 2)
    assert run() == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert run("--threshold", "0.6") == 2
    err = capsys.readouterr().err
    assert "holds the progress of a run with a different threshold" in err and "--restart" in err
    calls = interrupt_at_image(monkeypatch, 99)
    assert run("--threshold", "0.6", "--restart") == 0
    assert len(calls) == 3


def test_resume_requires_progress(run, capsys):
    assert run("--resume") == 2
    assert "no progress to resume" in capsys.readouterr().err


# ---------------------------------------------------------------------------- bad input
def test_bad_boxes_are_named_and_skipped_and_the_rest_is_written(run, capsys):
    with run.boxes.open("a") as f:
        f.write("img001.png,500,500,600,600,person\nimg002.png,-90,-80,-10,-5,person\n")
    assert run() == 1
    err = capsys.readouterr().err
    image1, image2 = run.folder / "img001.png", run.folder / "img002.png"
    assert f"skipped {image1}: box 3 of 3, the person box at (500, 500)–(600, 600) lies entirely outside" in err
    assert f"skipped {image2}: box 3 of 3, the person box at (-90, -80)–(-10, -5) lies entirely outside" in err
    assert "2 boxes skipped" in err
    no_class_names(err)
    records = json.loads(run.out.read_text())
    assert [r["image_id"] for r in records] == [1, 1, 2, 2, 3, 3]


def test_an_image_the_network_fails_on_is_skipped_not_the_run(run, monkeypatch, capsys):
    original = HypercolumnPredictor.set_image
    seen = []

    def failing_on_the_second(self, image):
        seen.append(image.shape)
        if len(seen) == 2:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 9 GB\nmore detail")
        return original(self, image)

    monkeypatch.setattr(HypercolumnPredictor, "set_image", failing_on_the_second)
    assert run() == 1
    err = capsys.readouterr().err
    assert f"skipped {run.folder / 'img001.png'}: could not be segmented (DefaultCPUAllocator: not enough memory" in err
    assert "more detail" not in err and "1 images skipped" in err
    assert [r["image_id"] for r in json.loads(run.out.read_text())] == [1, 1, 3, 3]


def test_boxes_far_larger_than_the_photo_are_segmented_within_it(tmp_path, tiny_checkpoint, capsys):
    """Work that depends on a box's size is bounded by the image: edge refinement once asked
    OpenCV for 200 TB for the first box (a traceback, nothing written) and 6.9 GB for the second."""
    make_images(tmp_path / "images", 1, size=(480, 640))
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x0,y0,x1,y1,label\nimg000.png,0,0,16777216,1,person\n"
                     "img000.png,-20000,-20000,20000,20000,person\n")
    out = tmp_path / "out.json"
    assert main(["predict", str(tmp_path / "images"), "--boxes", str(boxes), "--out", str(out),
                 "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 0
    assert "Wrote 2 masks for 1 images" in capsys.readouterr().err
    records = json.loads(out.read_text())
    assert [r["segmentation"]["size"] for r in records] == [[480, 640], [480, 640]]


def test_a_box_that_fails_alone_is_named_and_skipped_and_the_others_written(run, monkeypatch, capsys):
    """An error of one box (here OpenCV's in edge refinement) skips that box, not its image or the run."""
    with run.boxes.open("a") as f:
        f.write("img001.png,0,0,5000,40,person\n")
    original = HypercolumnPredictor.predict

    def failing_on_wide_boxes(self, boxes, *args, **kwargs):
        if (np.asarray(boxes)[:, 2] - np.asarray(boxes)[:, 0] > 1000).any():
            raise cv2.error("OpenCV(5.1.0) alloc.cpp:73: error: (-4:Insufficient memory) Failed to allocate\nmore")
        return original(self, boxes, *args, **kwargs)

    monkeypatch.setattr(HypercolumnPredictor, "predict", failing_on_wide_boxes)
    assert run() == 1
    err = capsys.readouterr().err
    assert (f"skipped {run.folder / 'img001.png'}: box 3 of 3, the person box at (0, 0)–(5000, 40) could not be "
            "segmented (OpenCV(5.1.0) alloc.cpp:73: error: (-4:Insufficient memory) Failed to allocate)") in err
    assert "1 boxes skipped" in err and "more" not in err
    no_class_names(err)
    assert [r["image_id"] for r in json.loads(run.out.read_text())] == [1, 1, 2, 2, 3, 3]


def test_progress_lines_when_stderr_is_not_a_terminal(run, capsys):
    assert run("--progress-every", "2") == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if " images (" in line]
    assert [line.split(" images")[0] for line in lines] == ["hcviewer: 2/3", "hcviewer: 3/3"]


# ---------------------------------------------------------------------------- a real process
def _start(tmp_path: Path, checkpoint: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "hcviewer.app.cli", "predict", str(tmp_path / "images"), "--boxes",
         str(tmp_path / "boxes.csv"), "--out", str(out), "--checkpoint", str(checkpoint), "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _wait_for_lines(path: Path, process: subprocess.Popen, lines: int) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if path.exists() and path.read_text().count("\n") >= lines:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {lines} lines (process exited: {process.poll()})")


@pytest.mark.slow
def test_sigint_and_kill_of_a_real_run_then_it_continues(tmp_path, tiny_checkpoint):
    make_images(tmp_path / "images", 150, size=(48, 64))
    out = tmp_path / "out.json"
    process = _start(tmp_path, tiny_checkpoint, out)
    _wait_for_lines(progress_path(out), process, 3)  # header and two images
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted after" in err
    first = len(json.loads(out.read_text()))
    assert first >= 4 and first % 2 == 0

    process = _start(tmp_path, tiny_checkpoint, out)
    _wait_for_lines(progress_path(out), process, first // 2 + 3)
    process.kill()  # no chance to write anything more
    process.communicate(timeout=60)

    process = _start(tmp_path, tiny_checkpoint, out)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    assert "were done before" in err
    records = json.loads(out.read_text())
    assert [r["image_id"] for r in records] == [i for i in range(1, 151) for _ in range(2)]
    assert not progress_path(out).exists()


@pytest.mark.slow
def test_a_double_ctrl_c_exits_130_with_the_finished_images_written(tmp_path, tiny_checkpoint):
    """The second Ctrl+C, while the output was written or the interpreter shut down, ended the
    process by the signal (-2)."""
    make_images(tmp_path / "images", 150, size=(48, 64))
    out = tmp_path / "out.json"
    process = _start(tmp_path, tiny_checkpoint, out)
    _wait_for_lines(progress_path(out), process, 3)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted after" in err
    assert len(json.loads(out.read_text())) >= 4


@pytest.mark.slow
def test_a_second_run_on_the_same_out_says_which_process_holds_it(tmp_path, tiny_checkpoint, capsys):
    """Two runs writing the same --out both recomputed every image."""
    make_images(tmp_path / "images", 150, size=(48, 64))
    out = tmp_path / "out.json"
    process = _start(tmp_path, tiny_checkpoint, out)
    try:
        _wait_for_lines(progress_path(out), process, 3)
        assert main(["predict", str(tmp_path / "images"), "--boxes", str(tmp_path / "boxes.csv"), "--out", str(out),
                     "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 2
    finally:
        process.kill()
        process.communicate(timeout=60)
    err = capsys.readouterr().err
    assert (f"{progress_path(out)} is in use by another hcviewer predict writing the same --out "
            f"(process {process.pid}); wait for it to finish") in err
    assert progress_path(out).read_text().count("\n") >= 3  # its progress is untouched
