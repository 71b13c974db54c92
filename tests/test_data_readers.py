"""Readers (VOC, mask folder, COCO) on tiny hand-made files: what they read, and a DataError that
names the file (and the record) for every kind of broken input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from hcviewer.data.coco import read_coco
from hcviewer.data.folder import read_mask_folder
from hcviewer.data.records import DataError
from hcviewer.data.voc import read_voc

H, W = 20, 30


def _write_jpeg(path: Path, height: int = H, width: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 128, np.uint8))


def _write_palette_png(path: Path, labels: np.ndarray) -> None:
    """A palette PNG whose indices are ``labels`` (as VOC stores its masks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.astype(np.uint8).tobytes())
    image.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)])
    image.save(path)


# ------------------------------------------------------------------------------------------ VOC

def _voc_object(name: str, box: tuple, difficult: int = 0) -> str:
    xmin, ymin, xmax, ymax = box
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin>"
            f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def _voc_xml(objects: list[str], filename: str = "a.jpg", size: bool = True) -> str:
    size_xml = f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>" if size else ""
    return f"<annotation><filename>{filename}</filename>{size_xml}{''.join(objects)}</annotation>"


def _instance_labels() -> np.ndarray:
    """Object 1 on the left, object 2 on the right, each with a void (255) border."""
    labels = np.zeros((H, W), np.uint8)
    labels[4:12, 2:10] = 255
    labels[5:11, 3:9] = 1
    labels[8:18, 14:28] = 255
    labels[9:17, 15:27] = 2
    return labels


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """Two images: 'a' with two objects and instance masks, 'b' with one object and no masks."""
    root = tmp_path / "VOC2012"
    for image_id in ("a", "b"):
        _write_jpeg(root / "JPEGImages" / f"{image_id}.jpg")
    (root / "Annotations").mkdir()
    (root / "Annotations" / "a.xml").write_text(
        _voc_xml([_voc_object("person", (4, 6, 9, 11)), _voc_object("dog", (16, 10, 27, 17), difficult=1)]))
    (root / "Annotations" / "b.xml").write_text(_voc_xml([_voc_object("cat", (1, 1, 30, 20))], "b.jpg"))
    _write_palette_png(root / "SegmentationObject" / "a.png", _instance_labels())
    _write_palette_png(root / "SegmentationClass" / "a.png", np.where(_instance_labels() == 2, 12, 0))
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n\n")
    return root


def test_voc_reads_objects_boxes_and_instance_masks(voc_root: Path):
    dataset = read_voc(voc_root)
    assert [im.image_id for im in dataset.images] == ["a", "b"]
    a, b = dataset.images
    assert (a.width, a.height) == (W, H) and a.path == voc_root / "JPEGImages" / "a.jpg"
    assert [o.category for o in a.objects] == ["person", "dog"]
    # 1-based inclusive VOC corners become 0-based with exclusive x1/y1.
    assert a.objects[0].box.tolist() == [3, 5, 9, 11]
    assert a.objects[1].box.tolist() == [15, 9, 27, 17]
    labels = _instance_labels()
    for value, obj in enumerate(a.objects, start=1):
        mask = obj.mask.decode(H, W)
        assert mask.dtype == bool and np.array_equal(mask, labels == value)  # void 255 is no object's
    assert b.objects[0].box.tolist() == [0, 0, 30, 20] and b.objects[0].mask is None
    assert a.load_rgb().shape == (H, W, 3)


def test_voc_image_set_selects_images(voc_root: Path):
    dataset = read_voc(voc_root, image_set="train")
    assert [im.image_id for im in dataset.images] == ["a"]
    assert dataset.name == "VOC2012:train"


def test_voc_dropping_difficult_objects_keeps_the_mask_values(tmp_path: Path, voc_root: Path):
    (voc_root / "Annotations" / "a.xml").write_text(
        _voc_xml([_voc_object("person", (4, 6, 9, 11), difficult=1), _voc_object("dog", (16, 10, 27, 17))]))
    kept = read_voc(voc_root, keep_difficult=False).images[0].objects
    assert [o.category for o in kept] == ["dog"]
    assert np.array_equal(kept[0].mask.decode(H, W), _instance_labels() == 2)


def test_voc_without_size_reads_it_from_the_image(voc_root: Path):
    (voc_root / "Annotations" / "b.xml").write_text(_voc_xml([_voc_object("cat", (1, 1, 5, 5))], "b.jpg", size=False))
    _write_jpeg(voc_root / "JPEGImages" / "b.jpg", height=13, width=17)
    b = read_voc(voc_root).images[1]
    assert (b.width, b.height) == (17, 13)


def test_voc_mask_of_another_size_is_refused_when_decoded(voc_root: Path):
    _write_palette_png(voc_root / "SegmentationObject" / "a.png", np.zeros((H + 1, W), np.uint8))
    obj = read_voc(voc_root).images[0].objects[0]
    with pytest.raises(DataError, match="a.png"):
        obj.mask.decode(H, W)


BILLION_LAUGHS = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                  '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n'
                  "<annotation><filename>a.jpg</filename><object><name>&lol2;</name></object></annotation>")

BROKEN_VOC_XML = {
    "billion laughs": (BILLION_LAUGHS, "DOCTYPE"),
    "external entity": ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                        "<annotation>&x;</annotation>", "DOCTYPE"),
    "doctype only": ('<!DOCTYPE annotation SYSTEM "voc.dtd"><annotation/>', "DOCTYPE"),
    "malformed": ("<annotation><object><name>person</name></annotation>", "malformed XML"),
    "not xml": ("\x00\x01 binary", "malformed XML"),
    "no bndbox": (_voc_xml([_voc_object("cat", (1, 1, 5, 5)), "<object><name>dog</name></object>"]),
                  "object 1 .*bndbox"),
    "no xmax": (_voc_xml([_voc_object("cat", (1, 1, 5, 5)), _voc_object("dog", (1, 1, 5, 5)).replace(
        "<xmax>5</xmax>", "")]), "object 1 .*xmax"),
    "non-numeric": (_voc_xml([_voc_object("cat", (1, 1, 5, 5)), _voc_object("dog", (1, "one", 5, 5))]),
                    "object 1 .*ymin.*'one'"),
    "inverted box": (_voc_xml([_voc_object("cat", (1, 1, 5, 5)), _voc_object("dog", (9, 1, 5, 5))]),
                     "object 1 .*xmax < xmin"),
    "no name": (_voc_xml([_voc_object("", (1, 1, 5, 5))]), "object 0 has no <name>"),
    "bad difficult": (_voc_xml([_voc_object("cat", (1, 1, 5, 5), difficult=7)]), "object 0 <difficult>"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_VOC_XML))
def test_voc_broken_xml_names_the_file(voc_root: Path, case: str):
    text, pattern = BROKEN_VOC_XML[case]
    (voc_root / "Annotations" / "b.xml").write_text(text)
    with pytest.raises(DataError, match=pattern) as error:
        read_voc(voc_root)
    assert str(voc_root / "Annotations" / "b.xml") in str(error.value)


def test_voc_missing_files_are_named(voc_root: Path, tmp_path: Path):
    with pytest.raises(DataError, match="Annotations folder"):
        read_voc(tmp_path / "nowhere")
    with pytest.raises(DataError, match="val.txt"):
        read_voc(voc_root, image_set="val")
    (voc_root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nc\n")
    with pytest.raises(DataError, match="c.xml"):
        read_voc(voc_root, image_set="train")
    (voc_root / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DataError, match="1 image file.*b.jpg"):
        read_voc(voc_root)


def test_voc_without_annotations_is_refused(tmp_path: Path):
    (tmp_path / "Annotations").mkdir()
    with pytest.raises(DataError, match="no .xml files"):
        read_voc(tmp_path)


# ---------------------------------------------------------------------------------- mask folder

@pytest.fixture
def mask_folder(tmp_path: Path) -> Path:
    root = tmp_path / "shots"
    _write_jpeg(root / "a.jpg")
    _write_jpeg(root / "sub" / "b.jpg", height=10, width=12)
    mask = np.zeros((H, W), np.uint8)
    mask[2:8, 3:9] = 255
    (root / "masks").mkdir()
    assert cv2.imwrite(str(root / "masks" / "a_0.png"), mask)  # an 8-bit grey PNG: non-zero is the object
    parts = np.zeros((H, W), np.uint8)
    parts[2:5, 3:9], parts[5:8, 3:9] = 1, 2
    _write_palette_png(root / "masks" / "a_0_parts.png", parts)
    keypoints = [[4.5, 3.5, 2], [0, 0, 0]]
    document = {
        "images": [
            {"file": "a.jpg", "objects": [
                {"box": [3, 2, 9, 8], "label": "person", "mask": "masks/a_0.png", "parts": "masks/a_0_parts.png",
                 "keypoints": keypoints},
                {"box": [10.5, 1, 20, 19.5], "label": "dog"}]},
            {"file": "sub/b.jpg"},
        ],
        "keypoint_names": ["nose", "tail"],
        "skeleton": [[0, 1]],
        "part_names": ["upper", "lower"],
    }
    (root / "boxes.json").write_text(json.dumps(document))
    return root


def test_mask_folder_reads_images_masks_parts_and_keypoints(mask_folder: Path):
    dataset = read_mask_folder(mask_folder)
    assert dataset.name == "shots"
    assert dataset.keypoint_names == ("nose", "tail") and dataset.skeleton == ((0, 1),)
    assert dataset.part_names == ("upper", "lower")
    a, b = dataset.images
    assert (a.image_id, a.width, a.height) == ("a.jpg", W, H)
    assert (b.image_id, b.width, b.height, b.objects) == ("sub/b.jpg", 12, 10, [])
    person, dog = a.objects
    assert person.category == "person" and person.box.tolist() == [3, 2, 9, 8]
    mask = person.mask.decode(H, W)
    assert mask.dtype == bool and mask.sum() == 36 and mask[2:8, 3:9].all()
    parts = person.parts.decode(H, W)
    assert parts.dtype == np.uint8 and set(np.unique(parts)) == {0, 1, 2} and (parts[2:5, 3:9] == 1).all()
    assert person.keypoints.tolist() == [[4.5, 3.5, 2], [0, 0, 0]]
    assert dog.box.tolist() == [10.5, 1, 20, 19.5] and dog.mask is None and dog.keypoints is None


def test_mask_folder_accepts_the_json_path(mask_folder: Path):
    assert len(read_mask_folder(mask_folder / "boxes.json").images) == 2


def _edit(document: dict, change: str) -> None:
    """Break boxes.json in one named way."""
    person = document["images"][0]["objects"][0]
    if change == "box three numbers":
        person["box"] = [1, 2, 3]
    elif change == "box text":
        person["box"] = ["1", 2, 3, 4]
    elif change == "box empty":
        person["box"] = [5, 2, 5, 8]
    elif change == "no label":
        del person["label"]
    elif change == "mask missing":
        person["mask"] = "masks/gone.png"
    elif change == "parts without names":
        del document["part_names"]
    elif change == "keypoints count":
        person["keypoints"] = [[1, 2, 2]]
    elif change == "keypoints visibility":
        person["keypoints"] = [[1, 2, 5], [0, 0, 0]]
    elif change == "keypoints without names":
        del document["keypoint_names"], document["skeleton"]
    elif change == "object not a dict":
        document["images"][0]["objects"][0] = "person"


BROKEN_FOLDER_RECORDS = {
    "box three numbers": "images\\[0\\].objects\\[0\\] \"box\"",
    "box text": "images\\[0\\].objects\\[0\\] \"box\"",
    "box empty": "images\\[0\\].objects\\[0\\] \"box\" .* zero or negative size",
    "no label": "images\\[0\\].objects\\[0\\] needs a \"label\"",
    "mask missing": "images\\[0\\].objects\\[0\\] refers to masks/gone.png",
    "parts without names": "images\\[0\\].objects\\[0\\] has \"parts\"",
    "keypoints count": "images\\[0\\].objects\\[0\\] \"keypoints\" must be 2",
    "keypoints visibility": "images\\[0\\].objects\\[0\\] keypoint visibility",
    "keypoints without names": "images\\[0\\].objects\\[0\\] has \"keypoints\"",
    "object not a dict": "images\\[0\\].objects\\[0\\] must be an object",
}


@pytest.mark.parametrize("change", sorted(BROKEN_FOLDER_RECORDS))
def test_mask_folder_broken_records_name_file_and_record(mask_folder: Path, change: str):
    json_path = mask_folder / "boxes.json"
    document = json.loads(json_path.read_text())
    _edit(document, change)
    json_path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=BROKEN_FOLDER_RECORDS[change]) as error:
        read_mask_folder(mask_folder)
    assert str(error.value).startswith(f"{json_path}: ")


@pytest.mark.parametrize("text, pattern", [
    ("{\"images\": [", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ("{\"images\": {}}", "'images' must be a list"),
    ("{\"images\": [{\"objects\": []}]}", "images\\[0\\] needs a \"file\""),
    ("{\"images\": [{\"file\": \"gone.jpg\"}]}", "images\\[0\\] refers to gone.jpg"),
    ("{\"images\": [{\"file\": \"a.jpg\", \"objects\": 3}]}", "images\\[0\\] 'objects' must be a list"),
    ("{\"images\": [{\"file\": \"boxes.json\"}]}", "images\\[0\\] image boxes.json cannot be read"),
    ("{\"images\": [], \"keypoint_names\": [\"a\", \"a\"]}", "repeated names"),
    ("{\"images\": [], \"keypoint_names\": [\"a\"], \"skeleton\": [[0, 1]]}", "skeleton\\[0\\]"),
])
def test_mask_folder_broken_files_are_named(mask_folder: Path, text: str, pattern: str):
    json_path = mask_folder / "boxes.json"
    json_path.write_text(text)
    with pytest.raises(DataError, match=pattern) as error:
        read_mask_folder(mask_folder)
    assert str(json_path) in str(error.value)


def test_mask_folder_without_json_explains_the_layout(tmp_path: Path):
    with pytest.raises(DataError, match="boxes.json.*hcviewer.data.folder"):
        read_mask_folder(tmp_path)


def test_mask_folder_part_map_of_another_size_is_refused(mask_folder: Path):
    _write_palette_png(mask_folder / "masks" / "a_0_parts.png", np.zeros((H, W + 2), np.uint8))
    person = read_mask_folder(mask_folder).images[0].objects[0]
    with pytest.raises(DataError, match="a_0_parts.png"):
        person.parts.decode(H, W)


# ----------------------------------------------------------------------------------------- COCO

SQUARE = [2.0, 3.0, 12.0, 3.0, 12.0, 13.0, 2.0, 13.0]  # polygon covering columns 2..11, rows 3..12


def _coco_document() -> dict:
    from pycocotools import mask as mask_utils

    crowd = np.zeros((H, W), np.uint8, order="F")
    crowd[5:9, 20:26] = 1
    compressed = mask_utils.encode(crowd)
    compressed["counts"] = compressed["counts"].decode("ascii")
    return {
        "images": [{"id": 1, "file_name": "train2017/a.jpg", "width": W, "height": H},
                   {"id": 2, "file_name": "b.jpg", "width": W, "height": H}],
        "categories": [{"id": 1, "name": "person", "keypoints": ["nose", "left_eye", "right_eye"],
                        "skeleton": [[1, 2], [1, 3]]},
                       {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 10], "iscrowd": 0,
             "segmentation": [SQUARE], "keypoints": [5, 6, 2, 0, 0, 0, 9, 6, 1], "num_keypoints": 2},
            {"id": 11, "image_id": 1, "category_id": 18, "bbox": [20, 5, 6, 4], "iscrowd": 1,
             "segmentation": compressed},
            {"id": 12, "image_id": 2, "category_id": 18, "bbox": [0, 0, 4, 2], "iscrowd": True,
             "segmentation": {"size": [H, W], "counts": [0, 2, H - 2, 2, H - 2, 2, H - 2, 2, H * W - 62]}},
        ],
    }


@pytest.fixture
def coco_files(tmp_path: Path) -> tuple[Path, Path]:
    images_dir = tmp_path / "images"
    for name in ("a.jpg", "b.jpg"):
        _write_jpeg(images_dir / name)
    json_path = tmp_path / "annotations" / "instances.json"
    json_path.parent.mkdir()
    json_path.write_text(json.dumps(_coco_document()))
    return json_path, images_dir


def test_coco_reads_polygons_boxes_and_keypoints(coco_files):
    json_path, images_dir = coco_files
    dataset = read_coco(json_path, images_dir)
    assert dataset.keypoint_names == ("nose", "left_eye", "right_eye")
    assert dataset.skeleton == ((0, 1), (0, 2))  # COCO's skeleton is 1-based
    a, b = dataset.images
    assert (a.image_id, a.path) == (1, images_dir / "a.jpg")  # file_name folders are dropped
    person = a.objects[0]
    assert person.category == "person" and person.annotation_id == 10 and not person.iscrowd
    assert person.box.tolist() == [2, 3, 12, 13]  # [x, y, w, h] becomes x0, y0, x1, y1
    mask = person.mask.decode(H, W)
    assert mask.dtype == bool and mask[3:13, 2:12].all() and mask.sum() == pytest.approx(100, abs=21)
    assert person.keypoints.shape == (3, 3) and person.keypoints[2].tolist() == [9, 6, 1]


def test_coco_reads_crowd_rle(coco_files):
    dataset = read_coco(*coco_files)
    compressed, uncompressed = dataset.images[0].objects[1], dataset.images[1].objects[0]
    assert compressed.iscrowd and uncompressed.iscrowd  # 1 and the JSON boolean true alike
    expected = np.zeros((H, W), bool)
    expected[5:9, 20:26] = True
    assert np.array_equal(compressed.mask.decode(H, W), expected)
    # Column-major counts: 0 off, then 2 on in each of the first four columns.
    expected = np.zeros((H, W), bool)
    expected[0:2, 0:4] = True
    assert np.array_equal(uncompressed.mask.decode(H, W), expected)


def test_coco_merges_instance_and_keypoint_files_and_filters_categories(coco_files, tmp_path: Path):
    json_path, images_dir = coco_files
    document = _coco_document()
    keypoints_only = dict(document, annotations=[dict(document["annotations"][0], segmentation=[])])
    del document["annotations"][0]["keypoints"]
    json_path.write_text(json.dumps(document))
    keypoints_path = tmp_path / "annotations" / "person_keypoints.json"
    keypoints_path.write_text(json.dumps(keypoints_only))
    dataset = read_coco([json_path, keypoints_path], images_dir, categories=("person",))
    objects = [obj for image in dataset.images for obj in image.objects]
    assert len(objects) == 1
    assert objects[0].mask is not None and objects[0].keypoints[0].tolist() == [5, 6, 2]


def _break(document: dict, change: str) -> None:
    annotation = document["annotations"][1]
    if change == "bbox negative width":
        annotation["bbox"] = [1, 1, -4, 3]
    elif change == "bbox three numbers":
        annotation["bbox"] = [1, 1, 4]
    elif change == "bbox text":
        annotation["bbox"] = "1 1 4 4"
    elif change == "bbox missing":
        del annotation["bbox"]
    elif change == "unknown image id":
        annotation["image_id"] = 99
    elif change == "unknown category":
        annotation["category_id"] = 7
    elif change == "keypoints not triples":
        annotation["keypoints"] = [1, 2]
    elif change == "keypoints text":
        annotation["keypoints"] = ["nose", 2, 2]
    elif change == "RLE counts short":
        annotation["segmentation"] = {"size": [H, W], "counts": [0, 2, 18, 2]}


BROKEN_COCO_RECORDS = {
    "bbox negative width": "annotations\\[1\\] \\(id 11\\): bbox \\[1, 1, -4, 3\\] has zero or negative size",
    "bbox three numbers": "annotations\\[1\\] \\(id 11\\): bbox must be four numbers",
    "bbox text": "annotations\\[1\\] \\(id 11\\): bbox must be four numbers",
    "bbox missing": "annotations\\[1\\] \\(id 11\\) lacks 'bbox'",
    "unknown image id": "annotations\\[1\\] \\(id 11\\): image_id 99 is not in 'images'",
    "unknown category": "annotations\\[1\\] \\(id 11\\): category_id 7 is not in 'categories'",
    "keypoints not triples": "annotations\\[1\\] \\(id 11\\): keypoints must be a flat list of \\[x, y, v\\] triples",
    "keypoints text": "annotations\\[1\\] \\(id 11\\): a keypoint value must be a finite number",
    "RLE counts short": "annotations\\[1\\] \\(id 11\\) of image a.jpg: the segmentation",
}


@pytest.mark.parametrize("change", sorted(BROKEN_COCO_RECORDS))
def test_coco_broken_annotations_name_file_and_record(coco_files, change: str):
    json_path, images_dir = coco_files
    document = _coco_document()
    _break(document, change)
    json_path.write_text(json.dumps(document))
    with pytest.raises(DataError, match=BROKEN_COCO_RECORDS[change]) as error:
        read_coco(json_path, images_dir)
    assert str(error.value).startswith(f"{json_path}: ")


@pytest.mark.parametrize("text, pattern", [
    ("{\"images\": [", "not valid JSON"),
    ("[{\"image_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 0.9}]", "top level is a list \\(detection results\\?\\)"),
    ("{\"images\": [{\"id\": 1}], \"annotations\": [], \"categories\": []}", "images\\[0\\] lacks 'file_name'"),
])
def test_coco_broken_files_are_named(coco_files, text: str, pattern: str):
    json_path, images_dir = coco_files
    json_path.write_text(text)
    with pytest.raises(DataError, match=pattern) as error:
        read_coco(json_path, images_dir)
    assert str(json_path) in str(error.value)


def test_coco_missing_images_are_named(coco_files, tmp_path: Path):
    json_path, images_dir = coco_files
    (images_dir / "b.jpg").unlink()
    with pytest.raises(DataError, match="1 image file.*b.jpg"):
        read_coco(json_path, images_dir)
    with pytest.raises(DataError, match="image folder not found"):
        read_coco(json_path, tmp_path / "nowhere")
    with pytest.raises(DataError, match="gone.json: no such file"):
        read_coco(tmp_path / "gone.json", images_dir)
