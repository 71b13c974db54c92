"""Exports beyond COCO, each read back the way its ecosystem reads it: YOLO segmentation labels
rasterised as Ultralytics does (cv2.fillPoly of the denormalised polygon), Pascal VOC through
torchvision's own VOCSegmentation reader, labelme JSON checked against labelme's shape schema and
rasterised as labelme does (PIL ImageDraw.polygon)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from hcviewer.annotation.annotation_file import Annotation, SavedImage, SavedObject, encode_mask
from hcviewer.annotation.exporters import (
    DEFAULT_TOLERANCE, VOC_CLASSES, ExportError, export_annotation, mask_polygons, merged_polygon, voc_palette,
)

H, W = 60, 80


def _masks() -> dict[str, np.ndarray]:
    person = np.zeros((H, W), bool)
    person[5:25, 5:20] = True
    person[30:50, 8:22] = True  # a second piece: an occluded person is one object
    cat = np.zeros((H, W), np.uint8)
    cv2.circle(cat, (55, 30), 14, 1, -1)
    small = np.zeros((H, W), bool)
    small[32:40, 50:60] = True  # in front of the cat
    return {"person": person, "cat": cat.astype(bool), "dog": small}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / np.logical_or(a, b).sum())


@pytest.fixture
def annotation(tmp_path: Path) -> Annotation:
    images = tmp_path / "photos"
    images.mkdir()
    for name in ("a.png", "b.jpg", "c.png"):
        cv2.imwrite(str(images / name), np.full((H, W, 3), 90, np.uint8))
    masks = _masks()
    objects = [SavedObject((0, 0, 30, 55), label, None, encode_mask(mask)) for label, mask in masks.items()]
    return Annotation([SavedImage(images / "a.png", (H, W), objects),
                       SavedImage(images / "b.jpg", (H, W), objects[:1]),
                       SavedImage(images / "c.png", (H, W), [SavedObject((1, 1, 9, 9), "cat")])],  # nothing accepted
                      {"person": 1, "cat": 17, "dog": 18})


def test_polygons_of_a_mask_in_pieces_merge_into_one_that_rasterises_back():
    mask = _masks()["person"]
    pieces = mask_polygons(mask)
    assert len(pieces) == 2
    drawn = np.zeros((H, W), np.uint8)
    cv2.fillPoly(drawn, [np.round(merged_polygon(pieces)).astype(np.int32)], 1)
    assert _iou(drawn > 0, mask) > 0.95


def _filled(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The polygons rasterised as Ultralytics' polygon2mask does (cv2.fillPoly, outline inside)."""
    drawn = np.zeros(shape, np.uint8)
    for polygon in polygons:
        cv2.fillPoly(drawn, [np.round(polygon).astype(np.int32)], 1)
    return drawn > 0


def _circle_and_irregular() -> dict[str, np.ndarray]:
    circle = np.zeros((240, 240), np.uint8)
    cv2.circle(circle, (120, 120), 100, 1, -1)
    rng = np.random.default_rng(0)  # a closed random walk of the radius: a lumpy outline
    radius = 70 + np.cumsum(rng.normal(0, 4, 60))
    radius -= np.linspace(0, radius[-1] - radius[0], 60)
    angles = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    outline = np.stack([120 + radius * np.cos(angles), 120 + radius * np.sin(angles)], 1)
    irregular = np.zeros((240, 240), np.uint8)
    cv2.fillPoly(irregular, [np.round(outline).astype(np.int32)], 1)
    return {"circle": circle.astype(bool), "irregular": irregular.astype(bool)}


@pytest.mark.parametrize("name, traced, simplified, bound", [("circle", 292, 32, 0.995), ("irregular", 228, 43, 0.99)])
def test_polygons_are_simplified_to_tens_of_vertices_at_the_default_tolerance(name, traced, simplified, bound):
    """Measured: the circle of radius 100 px traced with 292 vertices becomes 32 at the default
    1 px, its polygon's IoU with the mask 0.9961; the lumpy outline 228 -> 43 vertices, IoU 0.9931."""
    mask = _circle_and_irregular()[name]
    every_vertex = mask_polygons(mask, tolerance=0)
    assert len(every_vertex) == 1 and len(every_vertex[0]) == traced
    assert np.array_equal(_filled(every_vertex, mask.shape), mask)  # tolerance 0: the outline as traced
    [polygon] = mask_polygons(mask)
    assert DEFAULT_TOLERANCE == 1.0 and len(polygon) == simplified
    assert _iou(_filled([polygon], mask.shape), mask) >= bound
    [coarser] = mask_polygons(mask, tolerance=3.0)
    assert len(coarser) < len(polygon) and _iou(_filled([coarser], mask.shape), mask) >= 0.97


def test_simplifying_keeps_every_piece_and_thin_parts():
    mask = _masks()["person"].copy()
    mask[55:57, 30:70] = True  # a bar 2 px thin, which Douglas-Peucker at 3 px would flatten to a line
    pieces = mask_polygons(mask, tolerance=3.0)
    assert len(pieces) == 3 and all(len(piece) >= 3 for piece in pieces)
    assert _iou(_filled(pieces, mask.shape), mask) > 0.95
    with pytest.raises(ValueError, match="tolerance"):
        export_annotation(Annotation([], {}), Path("unused"), "yolo", tolerance=float("nan"))


def test_exported_polygons_follow_the_tolerance(tmp_path):
    image = tmp_path / "round.png"
    cv2.imwrite(str(image), np.zeros((240, 240, 3), np.uint8))
    masks = _circle_and_irregular()
    annotation = Annotation([SavedImage(image, (240, 240), [SavedObject((0, 0, 240, 240), name, None, encode_mask(m))
                                                            for name, m in masks.items()])], {"circle": 1, "irregular": 2})
    counts = {}
    for tolerance in (0.0, DEFAULT_TOLERANCE):
        export_annotation(annotation, tmp_path / f"yolo{tolerance}", "yolo", tolerance)
        lines = (tmp_path / f"yolo{tolerance}" / "labels" / "round.txt").read_text().splitlines()
        export_annotation(annotation, tmp_path / f"labelme{tolerance}", "labelme", tolerance)
        shapes = json.loads((tmp_path / f"labelme{tolerance}" / "round.json").read_text())["shapes"]
        counts[tolerance] = ([(len(line.split()) - 1) // 2 for line in lines], [len(s["points"]) for s in shapes])
    assert counts == {0.0: ([292, 228], [292, 228]), DEFAULT_TOLERANCE: ([32, 43], [32, 43])}


def test_yolo_labels_rasterise_back_to_the_masks(annotation, tmp_path):
    out = tmp_path / "yolo"
    result = export_annotation(annotation, out, "yolo")
    assert (result.images, result.objects) == (2, 4) and "1 images with boxes" in result.summary()
    names = {int(i): json.loads(n) for i, n in re.findall(r"^\s+(\d+): (.+)$", (out / "data.yaml").read_text(), re.M)}
    assert names == {0: "person", 1: "cat", 2: "dog"}
    assert re.search(r"^train: images$", (out / "data.yaml").read_text(), re.M)
    lines = (out / "labels" / "a.txt").read_text().splitlines()
    assert len(lines) == 3  # one line per object, the two-piece person included
    for line, (label, mask) in zip(lines, _masks().items()):
        values = line.split()
        assert names[int(values[0])] == label
        points = np.array(values[1:], float).reshape(-1, 2)
        assert points.min() >= 0 and points.max() <= 1
        drawn = np.zeros((H, W), np.uint8)
        cv2.fillPoly(drawn, [np.round(points * [W, H]).astype(np.int32)], 1)  # as Ultralytics' polygon2mask
        assert _iou(drawn > 0, mask) > 0.9, label
    assert (out / "images" / "a.png").resolve() == (tmp_path / "photos" / "a.png").resolve()
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["a.txt", "b.txt"]


def test_voc_pngs_read_by_torchvision_and_as_palette_pngs(annotation, tmp_path):
    from torchvision.datasets import VOCSegmentation

    root = tmp_path / "export"
    out = root / "VOCdevkit" / "VOC2012"
    annotation.images[0].objects[1].label = "cat"
    annotation.images[0].objects[2].label = "dog"
    result = export_annotation(annotation, out, "voc")
    assert (result.images, result.objects) == (2, 4)
    dataset = VOCSegmentation(str(root), year="2012", image_set="trainval")
    assert len(dataset) == 2
    image, target = dataset[0]
    assert image.size == (W, H)
    classes = np.asarray(target)
    masks = _masks()
    person, cat, dog = (VOC_CLASSES.index(name) for name in ("person", "cat", "dog"))
    assert (classes[masks["person"]] == person).all()
    assert (classes[masks["dog"]] == dog).all()  # smaller, in front of the cat: painted last
    assert (classes[masks["cat"] & ~masks["dog"]] == cat).all()
    assert (classes[~(masks["person"] | masks["cat"] | masks["dog"])] == 0).all()
    with Image.open(out / "SegmentationObject" / "a.png") as png:
        assert png.mode == "P"
        assert np.array_equal(np.array(png.getpalette()[:768], np.uint8).reshape(256, 3), voc_palette())
        instances = np.asarray(png)
    assert (instances[masks["person"]] == 1).all() and (instances[masks["dog"]] == 3).all()
    assert tuple(voc_palette()[person]) == (192, 128, 128) and tuple(voc_palette()[255]) == (224, 224, 192)
    assert "person:192,128,128::" in (out / "labelmap.txt").read_text()


def test_voc_classes_beyond_voc_are_the_annotations_categories(annotation, tmp_path):
    annotation.images[0].objects[2].label = "traffic cone"
    export_annotation(annotation, tmp_path / "voc", "voc")
    labelmap = (tmp_path / "voc" / "labelmap.txt").read_text().splitlines()[1:]
    assert [line.split(":")[0] for line in labelmap] == ["background", "person", "cat", "dog", "traffic cone"]
    with Image.open(tmp_path / "voc" / "SegmentationClass" / "a.png") as png:
        assert (np.asarray(png)[_masks()["dog"]] == 4).all()


def _labelme_shape_ok(shape: dict) -> bool:
    """labelme's own shape schema (labelme/_label_file.py, _load_shape_json_obj)."""
    return (isinstance(shape["label"], str) and isinstance(shape["shape_type"], str)
            and isinstance(shape["points"], list) and len(shape["points"]) > 2
            and all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
                    for p in shape["points"])
            and isinstance(shape.get("flags") or {}, dict)
            and (shape.get("group_id") is None or isinstance(shape["group_id"], int)))


def test_labelme_json_matches_labelme_schema_and_rasterises_back(annotation, tmp_path):
    out = tmp_path / "labelme"
    export_annotation(annotation, out, "labelme")
    document = json.loads((out / "a.json").read_text(encoding="utf-8"))
    for key in ("version", "flags", "shapes", "imagePath", "imageData", "imageHeight", "imageWidth"):
        assert key in document
    assert (out / document["imagePath"]).resolve() == (tmp_path / "photos" / "a.png").resolve()
    with Image.open(out / document["imagePath"]) as image:
        assert image.size == (document["imageWidth"], document["imageHeight"])
    assert all(_labelme_shape_ok(shape) for shape in document["shapes"])
    person_shapes = [s for s in document["shapes"] if s["label"] == "person"]
    assert len(person_shapes) == 2 and person_shapes[0]["group_id"] == person_shapes[1]["group_id"] is not None
    for label, mask in _masks().items():
        canvas = Image.new("L", (W, H), 0)
        draw = ImageDraw.Draw(canvas)
        for shape in (s for s in document["shapes"] if s["label"] == label):
            draw.polygon([tuple(p) for p in shape["points"]], outline=1, fill=1)  # labelme's shape_to_mask
        assert _iou(np.asarray(canvas) > 0, mask) > 0.9, label


def test_a_folder_that_cannot_be_written_is_named(annotation, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError) as error:
        export_annotation(annotation, blocker / "out", "labelme")
    assert str(blocker / "out") in str(error.value) and "0 of 2 images" in str(error.value)
