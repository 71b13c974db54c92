"""Clothing Co-Parsing (Yang, Luo, Lin, CVPR 2014) as person part labels.

Layout::

    root/
      photos/NNNN.jpg        one person per photo
      labels/NNNN.png        8-bit label index per pixel, same size as the photo (0 = background)
      label_names.json       {"names": ["null", "accessories", "bag", ...]}: index -> name

Every photo with a label map becomes one ``person``: its box is the extent of the labelled
(non-zero) pixels, its figure-ground mask all labelled pixels, and its parts the 59 clothing
classes grouped into ``PART_GROUPS``, a small person-part set with a display colour each (the
trainer writes names and colours into the checkpoint, the app draws its legend from there).
Photos without a label map are left out; a label map without its photo is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hcviewer.data.records import AnnotatedDataset, DataError, ImageRecord, ObjectAnnotation, PngMask
from hcviewer.fileio import loads_json, read_input_text

CATEGORY = "person"
BACKGROUND_NAMES = ("null", "background")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")

# (part name, display RGB, CCP class names). Every CCP class name is in exactly one group.
PART_GROUPS: tuple[tuple[str, tuple[int, int, int], tuple[str, ...]], ...] = (
    ("hair", (140, 70, 20), ("hair",)),
    ("face and skin", (255, 190, 140), ("skin",)),
    ("upper clothes", (220, 40, 40), ("blazer", "blouse", "bra", "cape", "cardigan", "coat", "hoodie", "jacket",
                                      "jumper", "shirt", "sweater", "sweatshirt", "t-shirt", "top", "vest")),
    ("lower clothes", (30, 100, 220), ("jeans", "leggings", "panties", "pants", "shorts", "skirt", "stockings",
                                       "tights")),
    ("dress and full body", (150, 60, 200), ("bodysuit", "dress", "intimate", "romper", "suit", "swimwear")),
    ("shoes", (255, 160, 0), ("boots", "clogs", "flats", "heels", "loafers", "pumps", "sandals", "shoes",
                              "sneakers", "socks", "wedges")),
    ("accessories and bags", (0, 180, 160), ("accessories", "bag", "belt", "bracelet", "earrings", "glasses",
                                             "gloves", "hat", "necklace", "purse", "ring", "scarf", "sunglasses",
                                             "tie", "wallet", "watch")),
)
PART_NAMES = tuple(name for name, _, _ in PART_GROUPS)
PART_COLORS = tuple(color for _, color, _ in PART_GROUPS)


@dataclass(frozen=True)
class CcpParts:
    """A CCP label map decoded as part labels: 0 background, i = ``PART_NAMES[i - 1]``."""

    path: Path
    lookup: np.ndarray = field(compare=False)  # [256] uint8: CCP class index -> part index

    def decode(self, height: int, width: int) -> np.ndarray:
        from hcviewer.data.images import read_label_png

        labels = read_label_png(self.path)
        if labels.shape != (height, width):
            raise DataError(f"{self.path}: label map is {labels.shape[1]}x{labels.shape[0]} but its photo is "
                            f"{width}x{height}; label maps must match their photo's size")
        return self.lookup[np.clip(labels, 0, 255)]


def read_ccp(root: str | Path, name: str | None = None) -> AnnotatedDataset:
    """Read a Clothing Co-Parsing folder (layout in the module docstring)."""
    root = Path(root)
    photos_dir, labels_dir = root / "photos", root / "labels"
    for folder in (photos_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: not found; --ccp ROOT needs ROOT/photos, ROOT/labels and "
                            "ROOT/label_names.json (Clothing Co-Parsing layout)")
    names = _label_names(root / "label_names.json")
    lookup = part_lookup(names, root / "label_names.json")
    photos = {p.stem: p for p in sorted(photos_dir.iterdir()) if p.suffix.lower() in PHOTO_SUFFIXES}
    records = []
    for label_path in sorted(labels_dir.glob("*.png")):
        photo = photos.get(label_path.stem)
        if photo is None:
            raise DataError(f"{label_path}: no photo {label_path.stem}.jpg in {photos_dir}; add it or remove "
                            "the label map")
        records.append(_record(photo, label_path, len(names), lookup))
    if not records:
        raise DataError(f"{labels_dir}: no label maps (*.png); is {root} a Clothing Co-Parsing folder?")
    return AnnotatedDataset(name or root.name, records, part_names=PART_NAMES, part_colors=PART_COLORS)


def part_lookup(names: list[str], where: Path) -> np.ndarray:
    """[256] uint8 table: CCP class index -> part index (0 for background and unused indices)."""
    group_of = {cls: index for index, (_, _, classes) in enumerate(PART_GROUPS, start=1) for cls in classes}
    lookup = np.zeros(256, np.uint8)
    for index, class_name in enumerate(names):
        key = class_name.strip().lower()
        if key in BACKGROUND_NAMES:
            continue
        if key not in group_of:
            raise DataError(f"{where}: class {class_name!r} (index {index}) is in no part group; known classes are "
                            f"those of Clothing Co-Parsing (see hcviewer.data.ccp.PART_GROUPS)")
        lookup[index] = group_of[key]
    return lookup


def _label_names(path: Path) -> list[str]:
    try:
        data = loads_json(read_input_text(path))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); a CCP folder needs label_names.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); fix the file") from None
    names = data.get("names") if isinstance(data, dict) else data
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not 1 < len(names) <= 256:
        raise DataError(f"{path}: needs {{\"names\": [...]}} with one class name per label index (0 = background)")
    return names


def _record(photo: Path, label_path: Path, num_classes: int, lookup: np.ndarray) -> ImageRecord:
    """One image with one person; the label map is read once here for the box."""
    from PIL import Image

    from hcviewer.data.images import read_label_png

    labels = read_label_png(label_path)
    try:
        with Image.open(photo) as image:  # the header only
            width, height = image.size
    except Exception as exc:  # PIL raises many types for broken files
        raise DataError(f"{photo}: cannot be read ({exc}); re-export it") from None
    if labels.shape != (height, width):
        raise DataError(f"{label_path}: label map is {labels.shape[1]}x{labels.shape[0]} but {photo.name} is "
                        f"{width}x{height}; they must have the same size")
    if labels.max() >= num_classes or labels.min() < 0:
        raise DataError(f"{label_path}: label {int(labels.max())} has no name in label_names.json "
                        f"({num_classes} names); fix the label map or the names")
    record = ImageRecord(photo.stem, width, height, path=photo)
    rows = np.flatnonzero(labels.any(1))
    if rows.size:
        cols = np.flatnonzero(labels.any(0))
        box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)  # x1, y1 exclusive
        record.objects.append(ObjectAnnotation(box, CATEGORY, mask=PngMask(label_path),
                                               parts=CcpParts(label_path, lookup)))
    return record
