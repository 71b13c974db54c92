"""The one image reader of hcviewer (app, ``hcviewer predict``, training readers): Qt- and
torch-free.

- **Decompression-bomb guard**: the pixel count is read from the file's header (Pillow reads
  only the header) and an image over ``max_image_pixels()`` is refused *before* it is decoded. A
  109 KB PNG can claim 30000 x 30000 pixels (2.7 GB as RGB). The default, 250 megapixels, is
  above the largest phone photos (200 MP, 16320 x 12240) and costs at most 750 MB as RGB;
  ``$HCVIEWER_MAX_IMAGE_PIXELS`` or the ``max_pixels`` argument changes it.
- **Reduced decoding**: when the caller needs only ``max_side`` pixels on the long side (the
  app's display: ``read_jpeg_preview``), a JPEG is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (OpenCV's
  ``IMREAD_REDUCED_COLOR_*``), which reads a 12000 x 9000 photo at a fraction of the time and
  memory; other formats are decoded whole and shrunk by the same factor. The returned ``scale``
  maps original pixel coordinates onto the returned image exactly: ``x_returned = x * scale``.
- **EXIF orientation** is applied by this module, for every format, and ``read_image_size``
  honours it too, so the size a reader records is the size the decoder returns (OpenCV's own
  handling differs between formats and fails on rotated TIFF).

Every failure is an ``ImageReadError`` whose message names the file and says what to do.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from hcviewer.fileio import read_input_bytes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what folders are searched for
DEFAULT_MAX_IMAGE_PIXELS = 250_000_000
MAX_PIXELS_VARIABLE = "HCVIEWER_MAX_IMAGE_PIXELS"
REDUCTION_FACTORS = (8, 4, 2)  # what libjpeg's DCT scaling (IMREAD_REDUCED_COLOR_*) offers
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees

# This module's guard replaces Pillow's: Pillow's is one process-wide number that refuses at
# 179 megapixels (below current phone photos) inside Image.open, before the size can be reported.
Image.MAX_IMAGE_PIXELS = None


class ImageReadError(ValueError):
    """The file is missing, not an image, corrupt, or too large; the message names it."""


class DecodedImage(NamedTuple):
    rgb: np.ndarray  # [H', W', 3] uint8, EXIF orientation applied
    scale: float  # returned pixel = original pixel * scale (1.0, 0.5, 0.25 or 0.125)


def find_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Image files among ``paths``, folders searched recursively (sorted, without repeats)."""
    found: dict[Path, None] = {}
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files = [path]
        found.update(dict.fromkeys(files))
    return list(found)


def max_image_pixels() -> int:
    """The pixel count above which images are refused: ``$HCVIEWER_MAX_IMAGE_PIXELS`` or 250 MP."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ImageReadError(f"{MAX_PIXELS_VARIABLE}={text!r} is not a positive whole number of pixels; "
                             f"unset it (default {DEFAULT_MAX_IMAGE_PIXELS}) or set e.g. 400000000")
    return value


def check_pixel_count(path: str | os.PathLike, width: int, height: int, max_pixels: int | None = None) -> None:
    """ImageReadError when ``width x height`` is over ``max_pixels`` (default ``max_image_pixels()``)."""
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if width * height > limit:
        raise ImageReadError(f"{path}: {width} x {height} pixels ({width * height / 1e6:.0f} megapixels) is over "
                             f"the limit of {limit / 1e6:.0f} megapixels that protects memory from "
                             f"decompression bombs; shrink the image, or raise the limit with "
                             f"{MAX_PIXELS_VARIABLE}=<pixels> if you trust it")


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) as ``read_image`` returns the image (EXIF orientation applied), from the
    header only."""
    with _open_header(path, _read_file(path)) as header:
        return _upright_size(header, _orientation(header))


def read_image(path: str | os.PathLike, max_side: int | None = None,
               max_pixels: int | None = None) -> DecodedImage:
    """Decode an image file as RGB uint8 (grey, alpha, 16-bit and CMYK converted).

    ``max_side``: the long side the caller needs; the image is returned reduced by the largest
    factor of 2, 4 or 8 that keeps the long side at least ``max_side`` (None: full size).
    ``max_pixels``: refuse larger images (default ``max_image_pixels()``), checked before decoding.
    """
    data = _read_file(path)
    header = _checked_header(path, data, max_pixels)
    factor = _reduction_factor(max(header.size), max_side)
    if header.format == "TIFF" and header.orientation != 1:
        # OpenCV's TIFF decoder fails on orientations 5-8; Pillow's turns the pixels upright itself
        rgb = _decode_with_pillow(path, data)
    else:
        rgb = _apply_orientation(_decode(path, data, factor if header.is_jpeg else 1), header.orientation)
    if factor > 1 and not header.is_jpeg:
        # fx = fy = 1/factor makes OpenCV map coordinates by exactly that factor
        rgb = cv2.resize(rgb, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    return DecodedImage(rgb, 1.0 / factor)


def read_jpeg_preview(path: str | os.PathLike, max_side: int,
                      max_pixels: int | None = None) -> tuple[DecodedImage, tuple[int, int]] | None:
    """A JPEG at least twice ``max_side`` on its long side, decoded reduced by libjpeg (a 12000 x
    9000 photo in about half the time of a whole decode), and the (height, width) of the whole
    image (upright, as ``read_image`` returns it); None for other files, which gain nothing (the
    caller decodes them whole once). Refuses what ``read_image`` refuses."""
    data = _read_file(path)
    header = _checked_header(path, data, max_pixels)
    factor = _reduction_factor(max(header.size), max_side)
    if not header.is_jpeg or factor == 1:
        return None
    rgb = _apply_orientation(_decode(path, data, factor), header.orientation)
    return DecodedImage(rgb, 1.0 / factor), header.upright_size


class _Header(NamedTuple):
    size: tuple[int, int]  # (width, height) as stored
    upright_size: tuple[int, int]  # (height, width) after EXIF orientation
    orientation: int
    format: str | None
    is_jpeg: bool  # MPO too: a camera's JPEG with extra frames


def _checked_header(path: str | os.PathLike, data: np.ndarray, max_pixels: int | None) -> _Header:
    """The header's facts, after refusing an image over the pixel limit."""
    with _open_header(path, data) as header:
        orientation = _orientation(header)
        facts = _Header(header.size, _upright_size(header, orientation), orientation, header.format,
                        header.format in ("JPEG", "MPO"))
    check_pixel_count(path, *facts.size, max_pixels)
    return facts


def _read_file(path: str | os.PathLike) -> np.ndarray:
    try:
        data = np.frombuffer(read_input_bytes(path), np.uint8)  # with imdecode: non-ASCII paths work on Windows
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file; check the path") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot be read ({exc.strerror or exc}); check the path and "
                             "permissions") from None
    if data.size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes); copy the image again or remove it")
    return data


def _open_header(path: str | os.PathLike, data: np.ndarray) -> Image.Image:
    """Pillow reads the header (size, format, EXIF) without decoding pixels."""
    try:
        return Image.open(io.BytesIO(data.tobytes()))
    except Exception:  # Pillow raises many types for unknown or broken headers
        raise ImageReadError(f"{path}: not an image file, or it is corrupt or truncated; "
                             "re-export it as PNG or JPEG") from None


def _orientation(header: Image.Image) -> int:
    try:
        # Pillow's base getexif: PNG's own override decodes every pixel to find a late eXIf chunk
        value = Image.Image.getexif(header).get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block: the pixels are still usable, unrotated
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright_size(header: Image.Image, orientation: int) -> tuple[int, int]:
    """(height, width) after EXIF orientation; Pillow reports a TIFF's size upright already."""
    width, height = header.size
    return (width, height) if orientation in _SWAPS_AXES and header.format != "TIFF" else (height, width)


def _reduction_factor(long_side: int, max_side: int | None) -> int:
    if max_side is None:
        return 1
    if max_side < 1:
        raise ValueError(f"max_side must be a positive number of pixels, got {max_side}")
    return next((f for f in REDUCTION_FACTORS if long_side / f >= max_side), 1)


def _decode(path: str | os.PathLike, data: np.ndarray, factor: int) -> np.ndarray:
    flags = (_REDUCED_FLAGS[factor] if factor > 1 else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        bgr = cv2.imdecode(data, flags)
    except cv2.error:
        bgr = None
    if bgr is None:
        raise _undecodable(path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: a second copy of a large photo costs 300 MB


def _decode_with_pillow(path: str | os.PathLike, data: np.ndarray) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            return np.asarray(image.convert("RGB"))
    except Exception:  # Pillow raises many types for broken data
        raise _undecodable(path) from None


def _undecodable(path: str | os.PathLike) -> ImageReadError:
    return ImageReadError(f"{path}: the image data cannot be decoded (corrupt, truncated or an unsupported "
                          "variant); re-export it as PNG or JPEG")


def _apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels upright as EXIF orientation 1-8 says (as Pillow's exif_transpose)."""
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return rgb if turned is None else np.ascontiguousarray(turned(rgb))
