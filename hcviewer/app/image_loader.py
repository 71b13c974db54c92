"""Images are decoded off the GUI thread (a 40-megapixel JPEG takes most of a second): an
``ImageLoader`` in its own QThread answers ``load(key, path)`` with ``loaded`` or ``failed``.
A photo larger than the screen is also shrunk there for display (``display_image``): drawing a
12000 x 9000 photo itself cost the GUI thread seconds at every zoom. A large JPEG is first
decoded reduced by libjpeg for that display (``previewed``: the picture in 0.5 s, not 1.3 s),
while another thread decodes it whole for the model, whose boxes and masks are in the photo's
own pixels."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, Sequence

import cv2
import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from hcviewer.imageio import IMAGE_SUFFIXES, ImageReadError, read_image, read_jpeg_preview


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


DISPLAY_MAX_SIDE = 4096  # the shown image's longest side; larger photos are shown reduced


def display_image(rgb: np.ndarray, max_side: int | None = None) -> np.ndarray:
    """[h, w, 3] uint8: ``rgb`` itself, or reduced (area average) to ``max_side`` (default
    ``DISPLAY_MAX_SIDE``) on its long side."""
    height, width = rgb.shape[:2]
    scale = (max_side or DISPLAY_MAX_SIDE) / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def readable(text: str | os.PathLike) -> str:
    """A path (or a message naming one) as the user can read it: bytes of a file name that are
    not UTF-8 (``caf\\xe9.jpg``), which Python keeps as surrogate escapes and Qt would drop,
    shown as U+FFFD."""
    return os.fsencode(os.fspath(text)).decode("utf-8", "replace")


class GroundTruthMask(Protocol):
    def prepare(self, size: tuple[int, int]) -> None: ...


class ImageLoader(QObject):
    previewed = Signal(str, object, object)  # key, display_image of a large JPEG, (H, W) of the whole photo
    loaded = Signal(str, object, object)  # key, RGB uint8 [H, W, 3], its display_image
    failed = Signal(str, str)  # key, message

    def __init__(self) -> None:
        super().__init__()
        self.wanted_key: str | None = None  # written by the GUI thread; stale loads are skipped
        # The whole decode, on another core meanwhile (OpenCV releases the GIL while decoding).
        self.whole_decoder = ThreadPoolExecutor(1, thread_name_prefix="hcviewer-decode")

    @Slot(str, object, object)
    def load(self, key: str, path: str | os.PathLike, ground_truths: Sequence[GroundTruthMask]) -> None:
        if key != self.wanted_key:
            return
        whole = self.whole_decoder.submit(read_image, path)
        try:
            preview = read_jpeg_preview(path, DISPLAY_MAX_SIDE)
            display = None if preview is None else display_image(preview[0].rgb)
            if preview is not None:
                self.previewed.emit(key, display, preview[1])
            if key != self.wanted_key:
                return  # another image was asked for meanwhile (its decode waits for this one's)
            image = whole.result().rgb
        except ImageReadError as exc:
            self.failed.emit(key, readable(str(exc)))  # a str signal would drop undecodable bytes
            return
        for ground_truth in ground_truths:  # a large photo's masks take the GUI thread 0.1-1 s each
            ground_truth.prepare(image.shape[:2])
        self.loaded.emit(key, image, display_image(image) if display is None else display)


class ImageLoaderService(QObject):
    _load = Signal(str, object, object)  # the path as Python holds it: a str signal would drop undecodable bytes

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("hcviewer-images")
        self.loader = ImageLoader()
        self.loader.moveToThread(self.thread)
        self._load.connect(self.loader.load)
        self.thread.start()

    def load(self, key: str, path: str | os.PathLike, ground_truths: Sequence[GroundTruthMask] = ()) -> None:
        """Read ``path``; ``ground_truths`` (its boxes' masks) are decoded at its size before it is shown."""
        self.loader.wanted_key = key
        self._load.emit(key, path, tuple(ground_truths))

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        self.loader.wanted_key = None
        self.thread.quit()
        stopped = self.thread.wait(timeout_ms)
        self.loader.whole_decoder.shutdown(wait=False, cancel_futures=True)
        return stopped
