"""Opening: images, folders and box files (dialogs, recent files, drag and drop, the demo), and
showing one image of the project (decoded in the loader thread)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from hcviewer.annotation.boxfiles import DEMO_BOXES, BoxFileError, demo_images
from hcviewer.annotation.wording import plural
from hcviewer.app.image_loader import is_image_file, readable

if TYPE_CHECKING:
    from hcviewer.app.main_window import MainWindow

BOX_FILE_SUFFIXES = (".json", ".xml", ".csv")


class FileController(QObject):
    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)  # a QObject of the GUI thread: worker signals reach it queued
        self.window = window
        self.state = window.state
        self.project = window.project
        window.loader.loader.previewed.connect(self._image_previewed)
        window.loader.loader.loaded.connect(self._image_loaded)
        window.loader.loader.failed.connect(self._image_failed)
        self._previewed_key: str | None = None  # the image whose reduced copy is shown already

    # ------------------------------------------------------------------------------ opening
    def open_demo(self) -> None:
        """The scikit-image sample photos with the bundled demo boxes."""
        images = [p for p in demo_images() if p.exists()]
        if not images:
            self.window.show_message("The demo photos (scikit-image's data folder) are missing; open images with "
                                     "File > Open images, or reinstall scikit-image.")
            return
        self.open_paths(images, boxes=DEMO_BOXES, remember=False)

    def open_paths(self, paths: list[str | os.PathLike], boxes: str | os.PathLike | None = None,
                   remember: bool = True) -> None:
        """Image files and folders (listed lazily: nothing is read until shown)."""
        files: list[Path] = []
        for raw in paths:
            path = Path(raw)
            if path.is_dir():
                files += sorted(p for p in path.iterdir() if is_image_file(p))
            elif path.exists():
                files.append(path)
            else:
                self.window.show_message(f"{path} does not exist; check the path.")
        if files:
            first = self.project.add_images(files)
            for raw in paths if remember else ():
                self.remember_recent(str(raw))
            if boxes is not None:
                self.open_boxes(boxes, remember=remember)
            self.show_image(first)
        elif boxes is not None:
            self.open_boxes(boxes, remember=remember)

    def open_boxes(self, path: str | os.PathLike, remember: bool = True) -> None:
        """Add a box file's boxes to the open images (with none open: the images it names)."""
        opened_images = bool(self.project.images)
        try:
            added = self.project.load_boxes(path)
        except (BoxFileError, OSError, ValueError) as exc:
            self.window.show_message(str(exc), "Box file")
            return
        if remember:
            self.remember_recent(str(path))
        self.window.statusBar().showMessage(f"{plural(added, 'box')} from {Path(path).name}", 8000)
        if not opened_images and self.project.images:
            self.show_image(0)

    def open_dropped(self, paths: list[str]) -> None:
        """Dropped files: images and folders, and the first box file among them."""
        box_files = [p for p in paths if p.lower().endswith(BOX_FILE_SUFFIXES)]
        images = [p for p in paths if p not in box_files]
        self.open_paths(images, boxes=box_files[0] if box_files else None)

    def open_images_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self.window, "Open images", self.window.settings.last_folder(),
                                                "Images (*.jpg *.jpeg *.png *.bmp *.tif *.tiff *.webp)")
        if files:
            self.window.settings.set_last_folder(str(Path(files[0]).parent))
            self.open_paths(files)

    def open_folder_dialog(self) -> None:
        settings = self.window.settings
        folder = QFileDialog.getExistingDirectory(self.window, "Open a folder of images", settings.last_folder())
        if folder:
            settings.set_last_folder(folder)
            self.open_paths([folder])

    def open_boxes_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open boxes", self.dialog_folder(),
                                              "Boxes (*.json *.xml *.csv)")
        if path:
            self.window.settings.set_last_folder(str(Path(path).parent))
            self.open_boxes(path)

    def dialog_folder(self) -> str:
        """Where Open boxes and Open annotation start: the shown image's folder (their files
        usually lie beside the images), else the last folder used."""
        document = self.window.current_document()
        return str(Path(document.path).parent) if document is not None else self.window.settings.last_folder()

    def _open_recent(self, path: str) -> None:
        if path.lower().endswith(BOX_FILE_SUFFIXES):
            self.open_boxes(path)
        else:
            self.open_paths([path])

    def remember_recent(self, path: str) -> None:
        self.window.settings.add_recent(str(Path(path).resolve()))
        self.fill_recent_menu()

    def fill_recent_menu(self) -> None:
        menu = self.window.recent_menu
        menu.clear()
        recent = self.window.settings.recent_files()
        for path in recent:
            action = menu.addAction(path)
            action.triggered.connect(lambda _=False, p=path: self._open_recent(p))
        menu.setEnabled(bool(recent))

    # ------------------------------------------------------------------------------ images
    def file_row(self, row: int) -> tuple[str, str, str]:
        """(name, tooltip, status) of the file list's row ``row``."""
        image = self.project.images[row]
        return readable(Path(image.path).name), readable(image.path), image.status

    def step_image(self, step: int) -> None:
        if self.project.images:
            current = -1 if self.state.image_index is None else self.state.image_index
            self.show_image(min(max(current + step, 0), len(self.project.images) - 1))

    def show_image(self, index: int) -> None:
        """Show image ``index``: decoded in the loader thread; its boxes appear at once."""
        if not 0 <= index < len(self.project.images):
            return
        window = self.window
        self.forget_shown_image()
        self.state.image_index = index
        self.state.image_key = f"{index}:{time.monotonic_ns()}"
        window.file_list.setCurrentIndex(window.file_model.index(index))
        image = self.project.images[index]
        window.setWindowTitle(f"hcviewer — {readable(Path(image.path).name)}")
        window.busy.start("decode", "Decoding photo…")
        window.loader.load(self.state.image_key, image.path, [b.gt for b in image.boxes if b.gt is not None])

    def forget_shown_image(self) -> None:
        """Nothing shown (answers still on their way are for no image now)."""
        self.window.model.forget_image()
        for kind in ("decode", "features", "segment"):  # answers for the image shown till now are dropped
            self.window.busy.drop(kind)
        self.window.view.set_image(None)
        self.window.canvas.clear_results()
        self.state.forget_image()

    def _image_previewed(self, key: str, display: np.ndarray, size: tuple[int, int]) -> None:
        """A large JPEG's reduced copy, over the photo's full extent, while the whole is decoded."""
        if key == self.state.image_key:
            self.window.view.set_image(display, size)
            self._previewed_key = key

    def _image_loaded(self, key: str, rgb: np.ndarray, display: np.ndarray) -> None:
        if key != self.state.image_key:
            return
        window = self.window
        window.busy.finish("decode")
        if key != self._previewed_key:  # else shown already (and perhaps zoomed since)
            window.view.set_image(display, rgb.shape[:2])
        self.project.image_loaded(self.state.image_index, rgb.shape[:2])
        window.model.show_image(key, rgb)
        self.state.show_image(rgb)  # the canvas draws the results the document keeps: no network
        window.segmentation.redraw_results()  # only those kept without box maps

    def _image_failed(self, key: str, message: str) -> None:
        if key != self.state.image_key:
            return
        self.window.busy.finish("decode")
        self.project.image_failed(self.state.image_index, message)
        self.window.file_model.refresh(self.state.image_index)
        self.window.show_message(message, "Image")
