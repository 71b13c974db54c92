"""Exporting: File > Export writes the accepted masks as YOLO segmentation labels, Pascal VOC
PNGs or labelme JSON into a folder the user picks (``hcviewer.annotation.exporters``); File >
Export > Polygon tolerance sets how far the simplified polygons may stray from the masks
(remembered between runs, as ``hcviewer export --tolerance``)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QInputDialog

from hcviewer.annotation.exporters import DEFAULT_TOLERANCE, FORMATS, export_annotation

if TYPE_CHECKING:
    from hcviewer.app.main_window import MainWindow

TOLERANCE_SETTING = "export/tolerance"
MAX_TOLERANCE = 20.0  # pixels; beyond it a polygon is a rough outline of the object


class ExportController(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)
        self.window = window

    def export_dialog(self, kind: str) -> None:
        """Ask for a folder, then export ``kind`` (a key of ``FORMATS``) into it."""
        folder = QFileDialog.getExistingDirectory(self.window, f"Export {FORMATS[kind]} into folder",
                                                  self._start_folder())
        if folder:
            self.export_to(kind, folder)

    def export_to(self, kind: str, folder: str | os.PathLike) -> bool:
        """Export the project; a failure or nothing to export is a message and returns False."""
        window = self.window
        try:
            result = export_annotation(window.project.to_annotation(), folder, kind, self.tolerance())
        except OSError as exc:  # ExportError says what was written
            window.show_message(str(exc), "Export")
            return False
        if not result.images:
            window.show_message("Nothing was exported: no image has an accepted object yet. Accept results "
                                "(A) first.", "Export")
            return False
        polygons = f" (polygons within {result.tolerance:g} px of the masks)" if kind != "voc" else ""
        window.statusBar().showMessage(f"Exported {FORMATS[kind]}: {result.summary()}{polygons}", 10000)
        return True

    def tolerance(self) -> float:
        """The pixels an exported polygon may stray from its mask's outline (0: not simplified)."""
        try:
            value = float(self.window.settings.q.value(TOLERANCE_SETTING, DEFAULT_TOLERANCE))
        except (TypeError, ValueError):  # a settings file edited by hand
            return DEFAULT_TOLERANCE
        return value if math.isfinite(value) and 0 <= value <= MAX_TOLERANCE else DEFAULT_TOLERANCE

    def ask_tolerance(self) -> None:
        """File > Export > Polygon tolerance: the user sets it; it is remembered between runs."""
        value, ok = QInputDialog.getDouble(
            self.window, "Polygon tolerance",
            "Pixels the exported YOLO and labelme polygons may stray from the masks\n"
            f"(0 keeps every outline vertex; {DEFAULT_TOLERANCE:g} px about a quarter of them):",
            self.tolerance(), 0.0, MAX_TOLERANCE, 2)
        if ok:
            self.window.settings.q.setValue(TOLERANCE_SETTING, value)
            self.window.statusBar().showMessage(f"Exported polygons will stray at most {value:g} px from the masks",
                                                5000)

    def _start_folder(self) -> str:
        """Beside the saved annotation, else beside the images."""
        project = self.window.project
        if project.file.path is not None:
            return str(Path(project.file.path).parent)
        return str(Path(project.images[0].path).parent) if project.images else self.window.settings.last_folder()
