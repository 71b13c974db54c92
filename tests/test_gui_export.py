"""File > Export in the window: each format's menu entry writes the accepted masks into the
folder chosen in the dialog; nothing accepted, or a folder that cannot be written, is a message."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog, QInputDialog

from hcviewer.app.gui_gc import dispose
from hcviewer.app.main_window import MainWindow
from hcviewer.app.settings import AppSettings


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HCVIEWER_RECOVERY_DIR", str(tmp_path / "recovery"))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 60, 3), np.uint8))
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(None, "cpu", settings=settings, offer_recovery=False)
    window.ask_to_save = False
    qtbot.addWidget(window)
    window.show()
    window.files.open_paths([tmp_path / "a.png"])
    qtbot.waitUntil(lambda: window.state.image is not None, timeout=30000)
    yield window
    dispose(window)


def _export_action(window: MainWindow, prefix: str):
    file_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&File")
    export_menu = next(a.menu() for a in file_menu.actions() if a.text() == "Export")
    return next(a for a in export_menu.actions() if a.text().startswith(prefix))


@pytest.mark.parametrize("prefix, written", [("YOLO", "labels/a.txt"), ("Pascal VOC", "SegmentationObject/a.png"),
                                             ("labelme", "a.json")])
def test_each_export_entry_writes_its_format(window, tmp_path, monkeypatch, prefix, written):
    box_id = window.project.add_box(0, np.array([5, 5, 30, 30]), "person")
    mask = np.zeros((40, 60), bool)
    mask[8:25, 8:28] = True
    window.project.accept(0, box_id, mask)
    out = tmp_path / "export"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(out))
    _export_action(window, prefix).trigger()
    assert (out / written).is_file() and window.messages == []
    assert "1 objects of 1 images" in window.statusBar().currentMessage()


def test_nothing_accepted_and_unwritable_folders_are_messages(window, tmp_path, monkeypatch):
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(tmp_path / "out"))
    _export_action(window, "labelme").trigger()
    assert "no image has an accepted object" in window.messages[-1]
    box_id = window.project.add_box(0, np.array([5, 5, 30, 30]), "person")
    window.project.accept(0, box_id, np.ones((40, 60), bool))
    (tmp_path / "blocker").write_text("a file where the folder should go")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(tmp_path / "blocker" / "x"))
    _export_action(window, "labelme").trigger()
    assert str(Path(tmp_path / "blocker" / "x")) in window.messages[-1]


def test_polygon_tolerance_is_set_in_the_export_menu_and_remembered(window, tmp_path, monkeypatch):
    from hcviewer.annotation.exporters import mask_polygons

    mask = np.zeros((40, 60), np.uint8)
    cv2.circle(mask, (30, 20), 17, 1, -1)
    box_id = window.project.add_box(0, np.array([10, 2, 50, 38]), "person")
    window.project.accept(0, box_id, mask.astype(bool))
    asked = []

    def get_double(parent, title, label, value, low, high, decimals):
        asked.append(value)
        return 0.0, True

    monkeypatch.setattr(QInputDialog, "getDouble", get_double)
    _export_action(window, "Polygon tolerance").trigger()
    assert asked == [1.0]  # the default, shown in the dialog
    for tolerance in (0.0, 2.5):
        if tolerance:
            monkeypatch.setattr(QInputDialog, "getDouble", lambda *args: (2.5, True))
            _export_action(window, "Polygon tolerance").trigger()
        out = tmp_path / f"export{tolerance}"
        monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(out))
        _export_action(window, "labelme").trigger()
        [shape] = json.loads((out / "a.json").read_text())["shapes"]
        assert len(shape["points"]) == len(mask_polygons(mask.astype(bool), tolerance)[0])
        assert f"within {tolerance:g} px" in window.statusBar().currentMessage()
    assert window.exporting.tolerance() == 2.5 and window.settings.q.value("export/tolerance") == 2.5
