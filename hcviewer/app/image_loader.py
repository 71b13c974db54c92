"""Images are decoded off the GUI thread (a 40-megapixel JPEG takes most of a second): an
``ImageLoader`` in its own QThread answers ``load(key, path)`` with ``loaded`` or ``failed``."""

from __future__ import annotations

import os

import cv2
import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """The file is missing, not an image, or corrupt; the message names it."""


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3] (grey and alpha images converted; EXIF
    orientation applied)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode: non-ASCII paths work
    except OSError as exc:
        raise ImageReadError(f"cannot read {path}: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode {path}: not an image file, or it is corrupt or truncated")
    return np.ascontiguousarray(image[..., ::-1])  # BGR -> RGB


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


class ImageLoader(QObject):
    loaded = Signal(str, object)  # key, RGB uint8 [H, W, 3]
    failed = Signal(str, str)  # key, message

    def __init__(self) -> None:
        super().__init__()
        self.wanted_key: str | None = None  # written by the GUI thread; stale loads are skipped

    @Slot(str, str)
    def load(self, key: str, path: str) -> None:
        if key != self.wanted_key:
            return
        try:
            image = read_rgb(path)
        except ImageReadError as exc:
            self.failed.emit(key, str(exc))
            return
        self.loaded.emit(key, image)


class ImageLoaderService(QObject):
    _load = Signal(str, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("hcviewer-images")
        self.loader = ImageLoader()
        self.loader.moveToThread(self.thread)
        self._load.connect(self.loader.load)
        self.thread.start()

    def load(self, key: str, path: str) -> None:
        self.loader.wanted_key = key
        self._load.emit(key, path)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        self.loader.wanted_key = None
        self.thread.quit()
        return self.thread.wait(timeout_ms)
