"""A plain folder of images with one mask PNG per object, described by ``boxes.json``.

Layout (every path in the JSON is relative to the folder)::

    root/
      boxes.json
      a.jpg, b.png, ...          the images
      masks/a_0.png, ...         one PNG per object: non-zero pixels are the object
      masks/a_0_parts.png, ...   optional part labels: 0 background, i = part_names[i - 1]

``boxes.json``::

    {
      "images": [
        {"file": "a.jpg",
         "objects": [
           {"box": [x0, y0, x1, y1],          pixels, x1/y1 exclusive (required)
            "label": "person",                the class name (required)
            "mask": "masks/a_0.png",          optional; without it the object has only a box
            "parts": "masks/a_0_parts.png",   optional; needs "part_names"
            "keypoints": [[x, y, v], ...]}    optional; one per keypoint name, x/y the pixel's
         ]}                                   column/row and v as in COCO: 0 not labelled,
                                              1 hidden, 2 visible
      ],
      "keypoint_names": ["nose", ...],        needed when any object has keypoints
      "skeleton": [[0, 1], ...],              optional, 0-based pairs of keypoint indices
      "part_names": ["head", ...]             needed when any object has parts
    }

Mask and part PNGs must have their image's size (checked when a sample decodes them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hcviewer.boxes import coordinates_problem
from hcviewer.data.images import read_label_png, read_size
from hcviewer.data.records import AnnotatedDataset, DataError, ImageRecord, ObjectAnnotation, PngMask
from hcviewer.fileio import loads_json, read_input_text

ANNOTATION_FILE = "boxes.json"


@dataclass(frozen=True)
class PngLabels:
    """A label PNG decoded as uint8 labels (part maps), not as one object's bool mask."""

    path: Path

    def decode(self, height: int, width: int) -> np.ndarray:
        labels = read_label_png(self.path)
        if labels.shape != (height, width):
            raise DataError(f"{self.path}: part map is {labels.shape[1]}x{labels.shape[0]} but its image is "
                            f"{width}x{height}; part maps must match their image's size")
        if labels.min() < 0 or labels.max() > 255:
            raise DataError(f"{self.path}: part labels must be 0..255; save it as an 8-bit PNG")
        return labels.astype(np.uint8)


def read_mask_folder(root: str | Path) -> AnnotatedDataset:
    """Read ``root/boxes.json`` (or ``root`` itself when it is the JSON file) and check its files."""
    root = Path(root)
    json_path = root if root.is_file() else root / ANNOTATION_FILE
    folder = json_path.parent
    data = _load(json_path)
    keypoint_names = _names(json_path, data, "keypoint_names")
    part_names = _names(json_path, data, "part_names")
    skeleton = _skeleton(json_path, data, len(keypoint_names))
    reader = _RecordReader(json_path, folder, keypoint_names, part_names)
    images = data.get("images")
    if not isinstance(images, list):
        raise DataError(f"{json_path}: 'images' must be a list of {{\"file\": ..., \"objects\": [...]}}")
    records = [reader.image(index, entry) for index, entry in enumerate(images)]
    return AnnotatedDataset(folder.name, records, keypoint_names, skeleton, part_names)


def _load(path: Path) -> dict:
    try:
        data = loads_json(read_input_text(path))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); the folder needs a {ANNOTATION_FILE} "
                        "(see hcviewer.data.folder for its layout)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); fix the file") from None
    except RecursionError:
        raise DataError(f"{path}: the JSON is nested too deeply; see hcviewer.data.folder for the layout") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: must be a JSON object with an 'images' list")
    return data


def _names(path: Path, data: dict, key: str) -> tuple[str, ...]:
    names = data.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{path}: '{key}' must be a list of non-empty names")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: '{key}' has repeated names; each must be unique")
    return tuple(names)


def _skeleton(path: Path, data: dict, num_keypoints: int) -> tuple[tuple[int, int], ...]:
    pairs = data.get("skeleton", [])
    if not isinstance(pairs, list):
        raise DataError(f"{path}: 'skeleton' must be a list of [a, b] keypoint index pairs")
    skeleton = []
    for index, pair in enumerate(pairs):
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(k, int) and 0 <= k < num_keypoints for k in pair)):
            raise DataError(f"{path}: skeleton[{index}] is {pair!r}; it must be two 0-based indices into "
                            f"keypoint_names (0..{num_keypoints - 1})")
        skeleton.append((pair[0], pair[1]))
    return tuple(skeleton)


class _RecordReader:
    """Turns the JSON's image entries into records, naming json file and record on every error."""

    def __init__(self, json_path: Path, folder: Path, keypoint_names: tuple[str, ...],
                 part_names: tuple[str, ...]):
        self.json_path = json_path
        self.folder = folder
        self.keypoint_names = keypoint_names
        self.part_names = part_names

    def image(self, index: int, entry: object) -> ImageRecord:
        where = f"images[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise self.error(where, "needs a \"file\" (the image path relative to the folder)")
        image_path = self.existing_file(where, entry["file"])
        width, height = self.image_size(where, image_path)
        objects = entry.get("objects", [])
        if not isinstance(objects, list):
            raise self.error(where, "'objects' must be a list")
        annotations = [self.object(f"{where}.objects[{i}]", obj) for i, obj in enumerate(objects)]
        return ImageRecord(entry["file"], width, height, path=image_path, objects=annotations)

    def object(self, where: str, entry: object) -> ObjectAnnotation:
        if not isinstance(entry, dict):
            raise self.error(where, "must be an object with \"box\" and \"label\"")
        label = entry.get("label")
        if not isinstance(label, str) or not label:
            raise self.error(where, "needs a \"label\" (the class name)")
        obj = ObjectAnnotation(self.box(where, entry.get("box")), label)
        if "mask" in entry:
            obj.mask = PngMask(self.existing_file(where, entry["mask"]))
        if "parts" in entry:
            if not self.part_names:
                raise self.error(where, "has \"parts\" but the file has no \"part_names\"; add them")
            obj.parts = PngLabels(self.existing_file(where, entry["parts"]))
        if "keypoints" in entry:
            obj.keypoints = self.keypoints(where, entry["keypoints"])
        return obj

    def box(self, where: str, box: object) -> np.ndarray:
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in box)):
            raise self.error(where, f"\"box\" is {box!r}; it must be four numbers [x0, y0, x1, y1]")
        problem = coordinates_problem(box)
        if problem is not None:
            raise self.error(where, f"\"box\" {box!r} {problem}; x1 must exceed x0 and y1 exceed y0")
        return np.asarray(box, np.float32)

    def keypoints(self, where: str, keypoints: object) -> np.ndarray:
        if not self.keypoint_names:
            raise self.error(where, "has \"keypoints\" but the file has no \"keypoint_names\"; add them")
        try:
            array = np.asarray(keypoints, np.float32)
        except (TypeError, ValueError, OverflowError):
            array = np.zeros((0,))
        if array.shape != (len(self.keypoint_names), 3) or not np.isfinite(array).all():
            raise self.error(where, f"\"keypoints\" must be {len(self.keypoint_names)} [x, y, v] triples "
                                    "of numbers, one per keypoint name")
        if not np.isin(array[:, 2], (0, 1, 2)).all():
            raise self.error(where, "keypoint visibility v must be 0 (not labelled), 1 (hidden) or 2 (visible)")
        return array

    def existing_file(self, where: str, relative: object) -> Path:
        if not isinstance(relative, str) or not relative:
            raise self.error(where, f"file name {relative!r} must be a path relative to the folder")
        path = self.folder / relative
        if not path.is_file():
            raise self.error(where, f"refers to {relative}, which is not in {self.folder}; "
                                    "fix the path or add the file")
        return path

    def image_size(self, where: str, image_path: Path) -> tuple[int, int]:
        """(width, height) as the image decodes (EXIF orientation applied), from its header."""
        try:
            height, width = read_size(image_path)
        except DataError as exc:
            raise self.error(where, f"image {image_path.name} cannot be read ({exc})") from None
        return width, height

    def error(self, where: str, problem: str) -> DataError:
        return DataError(f"{self.json_path}: {where} {problem}")
