"""The one image reader (hcviewer.imageio): decompression-bomb guard, reduced decoding with an exact
scale, EXIF orientation honoured by decoding and by the size every reader records."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from hcviewer import imageio
from hcviewer.annotation import batch
from hcviewer.annotation.annotation_file import read_size_or_zero
from hcviewer.data.coco import read_coco
from hcviewer.data.folder import read_mask_folder
from hcviewer.data.images import read_rgb
from hcviewer.data.records import DataError
from hcviewer.data.voc import read_voc
from hcviewer.imageio import ImageReadError, read_image, read_image_size, read_jpeg_preview


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb_png(path: Path, side: int = 30000) -> Path:
    """A valid 1-bit PNG of side x side black pixels: about 110 KB on disk, 2.7 GB as RGB."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))
    return path


def _smooth_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[:height, :width]
    return np.stack([x * 200 // width, y * 200 // height, (x + y) * 100 // (width + height)], -1).astype(np.uint8)


def _save(path: Path, rgb: np.ndarray, orientation: int = 1, **options) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, exif=exif.tobytes(), **options)
    return path


def _upright(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Pillow's reference for how EXIF ``orientation`` turns the stored pixels."""
    image = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    return np.asarray(ImageOps.exif_transpose(image))


# ------------------------------------------------------------------------ decompression bombs
def test_a_decompression_bomb_is_refused_from_its_header_before_decoding(tmp_path, monkeypatch):
    bomb = write_bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000

    def no_decoding(*args):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(imageio, "_decode", no_decoding)
    with pytest.raises(ImageReadError) as error:
        read_image(bomb)
    message = str(error.value)
    assert str(bomb) in message and "30000 x 30000" in message and imageio.MAX_PIXELS_VARIABLE in message
    assert read_image_size(bomb) == (30000, 30000)  # the header alone is fine to read


def test_every_image_path_refuses_the_bomb(tmp_path):
    bomb = write_bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ValueError, match="megapixels"):
        batch.read_image_rgb(bomb)  # hcviewer predict and the app's worker
    with pytest.raises(DataError, match="megapixels"):
        read_rgb(bomb)  # training
    assert read_size_or_zero(bomb) == (30000, 30000)  # saving an annotation reads its size without decoding


def test_the_pixel_limit_is_set_by_argument_or_environment(tmp_path, monkeypatch):
    path = _save(tmp_path / "a.png", _smooth_image(30, 40))
    assert read_image(path, max_pixels=1200).rgb.shape == (30, 40, 3)
    with pytest.raises(ImageReadError, match="limit"):
        read_image(path, max_pixels=1199)
    monkeypatch.setenv(imageio.MAX_PIXELS_VARIABLE, "1000")
    with pytest.raises(ImageReadError, match="limit"):
        read_image(path)
    monkeypatch.setenv(imageio.MAX_PIXELS_VARIABLE, "lots")
    with pytest.raises(ImageReadError, match=f"{imageio.MAX_PIXELS_VARIABLE}='lots'"):
        read_image(path)
    monkeypatch.delenv(imageio.MAX_PIXELS_VARIABLE)
    assert imageio.max_image_pixels() == imageio.DEFAULT_MAX_IMAGE_PIXELS


@pytest.mark.parametrize("content, says", [(b"", "empty"), (b"not an image at all", "not an image"),
                                           (None, "no such file")])
def test_unreadable_files_are_image_read_errors_naming_the_file(tmp_path, content, says):
    path = tmp_path / "photo.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=says) as error:
        read_image(path)
    assert str(path) in str(error.value)


def test_a_truncated_jpeg_is_an_image_read_error(tmp_path):
    whole = cv2.imencode(".jpg", _smooth_image(200, 300))[1].tobytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[:300])
    try:
        rgb = read_image(path).rgb  # libjpeg may fill the missing rows with grey
    except ImageReadError as error:
        assert str(path) in str(error)
    else:
        assert rgb.shape == (200, 300, 3)


# --------------------------------------------------------------------------- reduced decoding
def _bright_box(rgb: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the pixels brighter than mid-grey."""
    ys, xs = np.nonzero(rgb.mean(axis=2) > 128)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_reduced_decoding_returns_the_scale_that_maps_boxes_exactly(tmp_path, suffix):
    height, width = 1800, 2400
    box = np.array([800, 400, 1600, 1200])  # x0, y0, x1, y1 in the original pixels
    rgb = np.full((height, width, 3), 40, np.uint8)
    rgb[box[1]:box[3], box[0]:box[2]] = 230
    path = tmp_path / f"big{suffix}"
    assert cv2.imwrite(str(path), rgb)

    reduced, scale = read_image(path, max_side=500)  # 2400 / 4 = 600 >= 500 > 2400 / 8
    assert scale == 0.25
    assert reduced.shape == (450, 600, 3)
    np.testing.assert_allclose(_bright_box(reduced), box * scale, atol=1)

    full, full_scale = read_image(path, max_side=2400)  # no factor keeps 2400 pixels
    assert full_scale == 1.0 and full.shape == (height, width, 3)


def test_reduced_decoding_of_a_rotated_jpeg_maps_boxes_in_the_upright_image(tmp_path):
    stored = np.full((600, 800, 3), 40, np.uint8)
    stored[100:300, 200:600] = 230  # upright after orientation 6 (90 degrees clockwise): x 300..500, y 200..600
    path = _save(tmp_path / "phone.jpg", stored, orientation=6, quality=95)
    upright_box = np.array(_bright_box(_upright(stored, 6)))

    reduced, scale = read_image(path, max_side=200)
    assert scale == 0.25 and reduced.shape == (200, 150, 3)
    np.testing.assert_allclose(_bright_box(reduced), upright_box * scale, atol=1)


def test_the_display_preview_of_a_large_jpeg_is_decoded_reduced_with_the_whole_photos_size(tmp_path):
    stored = np.full((600, 800, 3), 40, np.uint8)
    stored[100:300, 200:600] = 230
    phone = _save(tmp_path / "phone.jpg", stored, orientation=6, quality=95)
    (preview, scale), size = read_jpeg_preview(phone, 200)
    assert scale == 0.25 and preview.shape == (200, 150, 3) and size == (800, 600) == read_image(phone).rgb.shape[:2]
    np.testing.assert_allclose(_bright_box(preview), np.array(_bright_box(_upright(stored, 6))) * scale, atol=1)
    assert read_jpeg_preview(phone, 500) is None  # not twice as large: decoded whole once, by the caller
    assert read_jpeg_preview(_save(tmp_path / "large.png", stored), 200) is None  # a PNG gains nothing
    with pytest.raises(ImageReadError, match="over the limit"):
        read_jpeg_preview(phone, 200, max_pixels=1000)


# -------------------------------------------------------------------------- EXIF orientation
@pytest.mark.parametrize("file_format", ["PNG", "TIFF", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_and_reported_in_the_size(tmp_path, file_format, orientation):
    stored = _smooth_image(30, 50)
    options = {"lossless": True} if file_format == "WEBP" else {}
    path = _save(tmp_path / f"o{orientation}.{file_format.lower()}", stored, orientation, format=file_format,
                 **options)
    expected = _upright(stored, orientation)
    decoded = read_image(path).rgb
    np.testing.assert_array_equal(decoded, expected)
    assert read_image_size(path) == expected.shape[:2]


def _write_rotated_jpeg(path: Path) -> np.ndarray:
    """A 20 x 30 (stored) JPEG that EXIF turns 90 degrees: 30 x 20 upright. Returns the upright pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = _smooth_image(20, 30)
    _save(path, stored, orientation=6, quality=95)
    return _upright(stored, 6)


def test_the_folder_reader_records_the_upright_size_of_a_rotated_photo(tmp_path):
    upright = _write_rotated_jpeg(tmp_path / "a.jpg")
    (tmp_path / "boxes.json").write_text(json.dumps(
        {"images": [{"file": "a.jpg", "objects": [{"box": [1, 1, 10, 10], "label": "person"}]}]}))
    record = read_mask_folder(tmp_path).images[0]
    assert (record.height, record.width) == upright.shape[:2]
    assert record.load_rgb().shape == upright.shape


def test_the_voc_reader_without_size_records_the_upright_size_of_a_rotated_photo(tmp_path):
    upright = _write_rotated_jpeg(tmp_path / "JPEGImages" / "a.jpg")
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>person</name><bndbox><xmin>2</xmin><ymin>2</ymin>"
        "<xmax>10</xmax><ymax>10</ymax></bndbox></object></annotation>")
    record = read_voc(tmp_path).images[0]
    assert (record.height, record.width) == upright.shape[:2]
    assert record.load_rgb().shape == upright.shape


def test_an_annotation_records_the_upright_size(tmp_path):
    upright = _write_rotated_jpeg(tmp_path / "a.jpg")
    assert read_size_or_zero(tmp_path / "a.jpg") == upright.shape[:2]


# ------------------------------------------------------------------------------ training data
def test_an_empty_image_file_in_training_is_a_data_error_naming_it(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"")
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 30, "height": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
            "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "train.json").write_text(json.dumps(coco))
    record = read_coco(tmp_path / "train.json", tmp_path / "images").images[0]
    with pytest.raises(DataError, match="empty") as error:
        record.load_rgb()
    assert "a.jpg" in str(error.value)


def test_data_images_does_not_import_the_records_module():
    """No import circle: records use the image readers, never the other way round."""
    code = "import sys, hcviewer.data.images; print('hcviewer.data.records' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_image_reading_stays_in_memory_for_non_ascii_paths(tmp_path):
    path = _save(tmp_path / "fotografía.png", _smooth_image(10, 12))
    assert read_image(path).rgb.shape == (10, 12, 3)
