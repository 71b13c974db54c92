"""Exporting: File > Export writes the accepted masks as YOLO segmentation labels, Pascal VOC
PNGs or labelme JSON into a folder the user picks (``hcviewer.annotation.exporters``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from hcviewer.annotation.exporters import FORMATS, export_annotation

if TYPE_CHECKING:
    from hcviewer.app.main_window import MainWindow


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
            result = export_annotation(window.project.to_annotation(), folder, kind)
        except OSError as exc:  # ExportError says what was written
            window.show_message(str(exc), "Export")
            return False
        if not result.images:
            window.show_message("Nothing was exported: no image has an accepted object yet. Accept results "
                                "(A) first.", "Export")
            return False
        window.statusBar().showMessage(f"Exported {FORMATS[kind]}: {result.summary()}", 10000)
        return True

    def _start_folder(self) -> str:
        """Beside the saved annotation, else beside the images."""
        project = self.window.project
        if project.file.path is not None:
            return str(Path(project.file.path).parent)
        return str(Path(project.images[0].path).parent) if project.images else self.window.settings.last_folder()
