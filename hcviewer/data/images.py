"""Reading image and label files with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hcviewer.data.records import DataError


def read_rgb(path: str | Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB (grey and alpha images converted)."""
    path = Path(path)
    data = _read_bytes(path)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format); "
                        "re-export it as PNG or JPEG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_png(path: str | Path) -> np.ndarray:
    """[H, W] integer labels of a palette or grey PNG (palette indices, as VOC stores them)."""
    path = Path(path)
    data = _read_bytes(path)
    from PIL import Image  # cv2 would map palette PNGs to colours; VOC's labels are the indices
    import io

    try:
        with Image.open(io.BytesIO(data.tobytes())) as im:
            if im.mode not in ("P", "L", "1", "I", "I;16"):
                raise DataError(f"{path}: label PNG has mode {im.mode}; save it as palette or 8-bit grey")
            return np.asarray(im).astype(np.int32)
    except DataError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise DataError(f"{path}: not a readable PNG ({exc}); re-export the mask") from None


def _read_bytes(path: Path) -> np.ndarray:
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); check the path and permissions") from None
