"""A file whose name is not valid UTF-8 (bytes kept by Python as surrogate escapes) is opened
like any other, listed readably, and saved in the annotation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from hcviewer.app.image_loader import readable

NAME = b"caf\xe9_\xff.jpg"  # Latin-1 bytes: not UTF-8


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    ok, jpeg = cv2.imencode(".jpg", np.full((30, 40, 3), 128, np.uint8))
    try:
        with open(os.path.join(os.fsencode(tmp_path), NAME), "wb") as handle:
            handle.write(jpeg.tobytes())
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    return tmp_path


@pytest.fixture
def window(blank_window):
    blank_window.show()
    return blank_window


def test_a_file_name_that_is_not_utf8_opens(window, folder, qtbot):
    window.files.open_paths([folder])
    qtbot.waitUntil(lambda: window.state.image is not None or bool(window.messages), timeout=30000)
    assert window.messages == []  # before: "No such file or directory" for a name Qt had mangled
    assert window.state.image.shape == (30, 40, 3)
    name, tooltip, _ = window.files.file_row(0)
    assert name == "caf\ufffd_\ufffd.jpg" and tooltip.endswith(name)
    assert "caf\ufffd_\ufffd.jpg" in window.windowTitle()


def test_an_unreadable_file_with_such_a_name_is_named_readably(window, folder, qtbot):
    (folder / os.fsdecode(NAME)).write_bytes(b"not an image")
    window.files.open_paths([folder])
    qtbot.waitUntil(lambda: bool(window.messages), timeout=30000)
    assert "caf\ufffd_\ufffd.jpg" in window.messages[0] and "No such file" not in window.messages[0]


def test_the_saved_annotation_names_the_file(window, folder, qtbot):
    window.files.open_paths([folder])
    qtbot.waitUntil(lambda: window.state.image is not None, timeout=30000)
    window.project.add_box(0, np.array([2, 2, 20, 20]), "person")
    window.saving.save_to(folder / "ann.json")
    saved = json.loads((folder / "ann.json").read_text())
    assert os.fsencode(saved["images"][0]["file_name"]) == NAME
    window.project.file.open(folder / "ann.json")
    assert window.project.images[0].path.is_file()


def test_readable_leaves_valid_names_alone():
    assert readable("photo été.jpg") == "photo été.jpg"
    assert readable(Path(os.fsdecode(b"a\xff"))) == "a\ufffd"
