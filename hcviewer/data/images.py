"""Reading image and label files for training, with errors that name the file (``DataError``).
Photos go through the one image reader, ``hcviewer.imageio`` (pixel limit, EXIF orientation)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from hcviewer.data.errors import DataError
from hcviewer.fileio import read_input_bytes
from hcviewer.imageio import ImageReadError, check_pixel_count, read_image, read_image_size


@contextmanager
def _as_data_error() -> Iterator[None]:
    try:
        yield
    except ImageReadError as exc:
        raise DataError(str(exc)) from None


def read_rgb(path: str | Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB (grey and alpha images converted, EXIF orientation applied)."""
    with _as_data_error():
        return read_image(path).rgb


def read_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image as ``read_rgb`` returns it, from its header."""
    with _as_data_error():
        return read_image_size(path)


def read_label_png(path: str | Path) -> np.ndarray:
    """[H, W] integer labels of a palette or grey PNG (palette indices, as VOC stores them)."""
    path = Path(path)
    data = _read_bytes(path)
    try:  # cv2 would map palette PNGs to colours; VOC's labels are the indices
        with Image.open(io.BytesIO(data)) as im, _as_data_error():
            check_pixel_count(path, *im.size)
            if im.mode not in ("P", "L", "1", "I", "I;16"):
                raise DataError(f"{path}: label PNG has mode {im.mode}; save it as palette or 8-bit grey")
            return np.asarray(im).astype(np.int32)
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise DataError(f"{path}: not a readable PNG ({exc}); re-export the mask") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return read_input_bytes(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check the path and permissions") from None
