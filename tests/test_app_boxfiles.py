"""Box file readers: COCO, detection results, Pascal VOC, CSV; every bad file names itself."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from hcviewer.annotation.boxfiles import (
    DEMO_BOXES, BoxFileError, LoadedBox, demo_images, read_boxes, write_boxes_csv,
)
from hcviewer.cocomask import decode_segmentation

SQUARE = [10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]  # x 10..30, y 10..20


def coco_file(tmp_path: Path, **changes) -> Path:
    data = {
        "images": [{"id": 7, "file_name": "train/a.jpg", "width": 40, "height": 30},
                   {"id": 8, "file_name": "b.png", "width": 40, "height": 30}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 20, 10], "segmentation": [SQUARE],
             "keypoints": [12, 12, 2, 0, 0, 0], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 0},
            {"id": 3, "image_id": 8, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 1,
             "segmentation": {"size": [30, 40], "counts": [0, 1200]}},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }
    data.update(changes)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -------------------------------------------------------------------------------------- COCO
def test_coco_boxes_by_file_name_with_segmentation_keypoints_and_categories(tmp_path):
    box_file = read_boxes(coco_file(tmp_path))
    assert box_file.kind == "coco"
    assert box_file.categories == ["person", "car"]
    assert box_file.category_ids == {"person": 1, "car": 3}
    assert box_file.image_names() == ["a.jpg", "b.png"]
    boxes = box_file.boxes_for(tmp_path / "elsewhere" / "a.jpg")  # matched by file name only
    assert [b.label for b in boxes] == ["person", "car"]
    assert boxes[0] == LoadedBox((10.0, 10.0, 30.0, 20.0), "person", None, [SQUARE], (12, 12, 2, 0, 0, 0))
    assert boxes[1].segmentation is None and boxes[1].keypoints is None
    assert box_file.boxes_for("b.png") == []  # its only annotation is a crowd region
    assert box_file.boxes_for("c.png") == []
    assert box_file.image_id_for("a.jpg") == 7 and box_file.image_id_for("c.png") is None
    assert len(box_file) == 2


def test_coco_without_categories_names_classes_by_id(tmp_path):
    data = json.loads(coco_file(tmp_path).read_text())
    del data["categories"]
    box_file = read_boxes(write(tmp_path, "nocat.json", json.dumps(data)))
    assert box_file.categories == ["class 1", "class 3"]
    assert box_file.category_ids == {"class 1": 1, "class 3": 3}


def test_coco_annotation_scores_are_kept(tmp_path):
    data = json.loads(coco_file(tmp_path).read_text())
    data["annotations"][1]["score"] = 0.25
    boxes = read_boxes(write(tmp_path, "scored.json", json.dumps(data))).boxes_for("a.jpg")
    assert [b.score for b in boxes] == [None, 0.25]


def test_detection_results_match_images_whose_stem_is_the_id(tmp_path):
    block = np.zeros((30, 40), np.uint8)
    block[5:20, 10:30] = 1
    rle = {"size": [30, 40], "counts": mask_utils.encode(np.asfortranarray(block))["counts"].decode("ascii")}
    records = [
        {"image_id": 391895, "bbox": [1, 2, 3, 4], "score": 0.9, "category_id": 1, "segmentation": rle},
        {"image_id": 391895, "bbox": [5, 5, 10, 10], "score": 0.4, "category_id": 18},
        {"image_id": 12, "bbox": [0, 0, 1, 1], "score": 0.5, "category_id": 1},
    ]
    box_file = read_boxes(write(tmp_path, "dets.json", json.dumps(records)))
    assert box_file.kind == "detections"
    assert box_file.categories == ["class 1", "class 18"]
    assert box_file.category_ids == {"class 1": 1, "class 18": 18}
    boxes = box_file.boxes_for("/data/val2017/000000391895.jpg")
    assert [(b.xyxy, b.score, b.label) for b in boxes] == [((1, 2, 4, 6), 0.9, "class 1"),
                                                           ((5, 5, 15, 15), 0.4, "class 18")]
    assert boxes[0].segmentation == rle
    assert box_file.boxes_for("12.png")[0].score == 0.5
    assert box_file.boxes_for("391896.jpg") == [] and box_file.boxes_for("cat.jpg") == []
    assert box_file.image_id_for("000000000012.jpg") == 12 and box_file.image_id_for("13.jpg") is None
    assert box_file.image_names() == []


BAD_JSON = {
    "empty": ("", "the file is empty"),
    "not_json": ("{'images': [", "not valid JSON (line 1"),
    "number_top_level": ("3", "JSON top level is a int"),
    "dict_without_annotations": ('{"images": []}', "without 'annotations'"),
    "coco_without_images": ('{"annotations": []}', "needs 'images', and this one has none"),
    "images_not_list": ('{"images": {}, "annotations": []}', "'images' must be a list"),
    "image_without_file_name": ('{"images": [{"id": 1}], "annotations": []}', "images[0] lacks 'file_name'"),
    "detection_without_score": ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 1}]', "record 0 lacks 'score'"),
    "detection_not_object": ('[[1, 2, 3]]', "record 0 must be a JSON object"),
    "detection_bbox_three_numbers": ('[{"image_id": 1, "bbox": [0, 0, 1], "score": 1, "category_id": 1}]',
                                     "record 0: bbox must be four numbers [x, y, width, height], got [0, 0, 1]"),
    "detection_bbox_nan": ('[{"image_id": 1, "bbox": [0, NaN, 1, 1], "score": 1, "category_id": 1}]',
                           "record 0: bbox [0, nan, 1, 1] has a NaN or infinite coordinate"),
    "detection_bbox_string": ('[{"image_id": 1, "bbox": [0, "0", 1, 1], "score": 1, "category_id": 1}]',
                              "record 0: bbox must be four numbers [x, y, width, height], got [0, '0', 1, 1]"),
    "detection_zero_width": ('[{"image_id": 1, "bbox": [0, 0, 0, 1], "score": 1, "category_id": 1}]',
                             "record 0: bbox [0, 0, 0, 1] has zero or negative size"),
    "detection_bad_score": ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": "high", "category_id": 1}]',
                            "record 0: score must be a finite number"),
    "detection_bad_keypoints": ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1, "category_id": 1, '
                                '"keypoints": [1, 2]}]', "record 0: keypoints must be a flat list"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_malformed_json_names_file_record_and_problem(tmp_path, case):
    text, expected = BAD_JSON[case]
    path = write(tmp_path, f"{case}.json", text)
    with pytest.raises(BoxFileError) as error:
        read_boxes(path)
    assert str(path) in str(error.value) and expected in str(error.value)


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["annotations"][1].update(category_id=99), "annotations[1] (id 2): category_id 99 is not in 'categories' (ids [1, 3])"),
    (lambda d: d["annotations"][0].update(image_id=5), "annotations[0] (id 1): image_id 5 is not in 'images'"),
    (lambda d: d["annotations"][1].pop("bbox"), "annotations[1] (id 2) lacks 'bbox'"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, 3, -1]), "annotations[0] (id 1): bbox [0, 0, 3, -1] has zero"),
    (lambda d: d["categories"][0].pop("name"), "categories[0] lacks 'name'"),
])
def test_malformed_coco_records_name_the_record(tmp_path, change, expected):
    data = json.loads(coco_file(tmp_path).read_text())
    change(data)
    path = write(tmp_path, "bad.json", json.dumps(data))
    with pytest.raises(BoxFileError, match="bad.json") as error:
        read_boxes(path)
    assert expected in str(error.value)


def test_missing_unreadable_and_unknown_files(tmp_path):
    with pytest.raises(BoxFileError, match=r"nope\.json: no such file"):
        read_boxes(tmp_path / "nope.json")
    with pytest.raises(BoxFileError, match=r"boxes\.txt: unknown box file type \.txt"):
        read_boxes(write(tmp_path, "boxes.txt", "x"))
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(BoxFileError, match=r"binary\.json: not a UTF-8 text file"):
        read_boxes(binary)


# --------------------------------------------------------------------------------------- VOC
def voc_xml(file_name: str = "dog.jpg", objects: str | None = None) -> str:
    objects = objects if objects is not None else (
        "<object><name>dog</name><difficult>0</difficult>"
        "<bndbox><xmin>11</xmin><ymin>21</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object>"
        "<object><name>person</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>9</ymax></bndbox></object>")
    name = f"<filename>{file_name}</filename>" if file_name else ""
    return f"<annotation><folder>VOC2012</folder>{name}<size><width>64</width><height>64</height></size>{objects}</annotation>"


def test_voc_file_converts_one_based_inclusive_pixels(tmp_path):
    box_file = read_boxes(write(tmp_path, "2008_000001.xml", voc_xml()))
    assert box_file.kind == "voc"
    assert box_file.categories == ["dog", "person"] and box_file.category_ids == {"dog": 1, "person": 2}
    assert [(b.xyxy, b.label, b.score) for b in box_file.boxes_for("dog.jpg")] == [
        ((10, 20, 50, 60), "dog", None), ((0, 0, 5, 9), "person", None)]
    assert box_file.image_names() == ["dog.jpg"]
    assert len(box_file) == 2


def test_voc_folder_reads_every_xml_and_falls_back_to_the_xml_stem(tmp_path):
    write(tmp_path, "a.xml", voc_xml("a.jpg"))
    write(tmp_path, "b.xml", voc_xml("", "<object><name>cat</name><bndbox><xmin>2</xmin><ymin>2</ymin>"
                                         "<xmax>9</xmax><ymax>9</ymax></bndbox></object>"))
    write(tmp_path, "notes.txt", "ignored")
    box_file = read_boxes(tmp_path)
    assert box_file.categories == ["dog", "person", "cat"]
    assert len(box_file.boxes_for("a.jpg")) == 2
    assert [b.label for b in box_file.boxes_for("b.png")] == ["cat"]  # no <filename>: the xml's stem


@pytest.mark.parametrize("text, expected", [
    ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><annotation>&lol;</annotation>', "DOCTYPE or ENTITY"),
    ("<!ENTITY x SYSTEM 'file:///etc/passwd'><annotation/>", "DOCTYPE or ENTITY"),
    ("<annotation><object>", "not well-formed XML"),
    ("<html></html>", "root element is <html>"),
    (voc_xml(objects="<object><bndbox><xmin>1</xmin></bndbox></object>"), "object 0 has no <name>"),
    (voc_xml(objects="<object><name>dog</name><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>5</xmax>"
                     "<ymax>5</ymax></bndbox></object>"), "object 0 (dog): <bndbox><xmin> must be a number"),
    (voc_xml(objects="<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
                     "</bndbox></object>"), "<bndbox><ymax> must be a number"),
    (voc_xml(objects="<object><name>dog</name><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>5</xmax>"
                     "<ymax>5</ymax></bndbox></object>"), "xmax < xmin"),
])
def test_bad_voc_names_the_file_and_object(tmp_path, text, expected):
    path = write(tmp_path, "bad.xml", text)
    with pytest.raises(BoxFileError) as error:
        read_boxes(path)
    assert str(path) in str(error.value) and expected in str(error.value)


def test_voc_folder_without_xml(tmp_path):
    with pytest.raises(BoxFileError, match="holds no .xml files"):
        read_boxes(tmp_path)


# --------------------------------------------------------------------------------------- CSV
def test_csv_with_optional_label_and_score(tmp_path):
    path = write(tmp_path, "boxes.csv",
                 "image,x0,y0,x1,y1,label,score\nimgs/a.jpg,1,2,11,12,cat,0.75\n\na.jpg,0,0,5,5,dog,\nb.png,3,3,4,4,,\n")
    box_file = read_boxes(path)
    assert box_file.kind == "csv" and box_file.categories == ["cat", "dog", "object"]
    assert [(b.xyxy, b.label, b.score) for b in box_file.boxes_for("a.jpg")] == [
        ((1, 2, 11, 12), "cat", 0.75), ((0, 0, 5, 5), "dog", None)]
    assert box_file.boxes_for("b.png")[0].label == "object"
    assert box_file.image_names() == ["a.jpg", "b.png"]


def test_csv_with_required_columns_only_and_round_trip(tmp_path):
    box_file = read_boxes(write(tmp_path, "min.csv", "image,x0,y0,x1,y1\na.jpg,1,1,2,2\n"))
    assert box_file.boxes_for("a.jpg") == [LoadedBox((1, 1, 2, 2), "object")]
    rows = [("a.jpg", LoadedBox((1.5, 2, 3, 4), "cat", 0.5)), ("b.jpg", LoadedBox((0, 0, 9, 9), "dog"))]
    again = read_boxes(write_boxes_csv(tmp_path / "out.csv", rows))
    assert again.boxes_for("a.jpg") == [rows[0][1]] and again.boxes_for("b.jpg") == [rows[1][1]]


@pytest.mark.parametrize("text, expected", [
    ("img,x0,y0,x1,y1\na.jpg,1,1,2,2\n", "line 1: the header must name"),
    ("image,x0,y0,x1,y1,colour\na.jpg,1,1,2,2,red\n", "line 1: the header must name"),
    ("image,x0,y0,x1,y1\na.jpg,1,1,2\n", "line 2: 4 values for 5 columns"),
    ("image,x0,y0,x1,y1\na.jpg,1,1,2,2\na.jpg,one,1,2,2\n", "line 3: x0 must be a number, got 'one'"),
    ("image,x0,y0,x1,y1\na.jpg,1,1,2,inf\n", "line 2: y1 must be a number"),
    ("image,x0,y0,x1,y1\na.jpg,5,1,2,2\n", "line 2: the box (5.0, 1.0, 2.0, 2.0) needs x1 > x0"),
    ("image,x0,y0,x1,y1,label,score\na.jpg,1,1,2,2,cat,x\n", "line 2: score must be a number"),
    ("image,x0,y0,x1,y1\n,1,1,2,2\n", "line 2: the image column is empty"),
])
def test_bad_csv_names_the_file_and_line(tmp_path, text, expected):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(BoxFileError) as error:
        read_boxes(path)
    assert str(path) in str(error.value) and expected in str(error.value)


# ------------------------------------------------------------------------------ segmentation
def test_decode_polygon_matches_a_hand_drawn_square():
    mask = decode_segmentation([SQUARE], 30, 40)
    assert mask.dtype == bool and mask.shape == (30, 40)
    expected = np.zeros((30, 40), bool)
    expected[10:20, 10:30] = True  # the polygon's edges lie on pixel edges: 20 x 10 pixels
    assert np.array_equal(mask, expected)


def test_decode_polygon_matches_cv2_fill_for_a_triangle():
    triangle = [5, 5, 60, 10, 20, 45]
    drawn = np.zeros((50, 70), np.uint8)
    cv2.fillPoly(drawn, [np.array(triangle).reshape(-1, 2)], 1)
    mask = decode_segmentation([triangle], 50, 70)
    iou = (mask & drawn.astype(bool)).sum() / (mask | drawn.astype(bool)).sum()
    assert iou > 0.9


def test_decode_rle_compressed_uncompressed_and_bytes():
    truth = np.zeros((30, 40), bool)
    truth[5:15, 20:35] = True
    compressed = mask_utils.encode(np.asfortranarray(truth.astype(np.uint8)))
    as_str = {"size": [30, 40], "counts": compressed["counts"].decode("ascii")}
    flat = truth.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    uncompressed = {"size": [30, 40], "counts": np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()}
    for segmentation in (compressed, as_str, uncompressed):
        assert np.array_equal(decode_segmentation(segmentation, 30, 40), truth)


@pytest.mark.parametrize("segmentation, expected", [
    ([[1, 2, 3, 4]], "at least 3"),
    ([], "at least 3"),
    ({"size": [10, 10], "counts": "PQ1"}, "RLE for a 10x10 image"),
    ("polygon", "neither a polygon list"),
])
def test_decode_segmentation_rejects_bad_input(segmentation, expected):
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        decode_segmentation(segmentation, 30, 40)


# -------------------------------------------------------------------------------------- demo
def test_demo_boxes_cover_each_demo_photo():
    box_file = read_boxes(DEMO_BOXES)
    labels = {}
    for image in demo_images():
        assert image.is_file(), image
        height, width = cv2.imread(str(image)).shape[:2]
        boxes = box_file.boxes_for(image)
        labels[image.name] = [b.label for b in boxes]
        for box in boxes:
            x0, y0, x1, y1 = box.xyxy
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert labels == {"astronaut.png": ["person"], "chelsea.png": ["cat"], "coffee.png": ["cup", "spoon"],
                      "motorcycle_left.png": ["motorcycle", "bench"]}
