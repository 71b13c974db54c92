"""Fuzzing every reader with hypothesis: random JSON, CSV and XML shaped like the real formats
(each field either plausible or any JSON value), and random text. A reader may accept the
input or refuse it with the project's error type (BoxFileError, AnnotationError, DataError,
CheckpointError); any other exception is a bug. Decoding what was accepted (masks, images) is
held to the same rule.

Deterministic by default (the same examples every run, so CI is stable); a random campaign of N
examples per reader: ``HCVIEWER_FUZZ_EXAMPLES=N pytest tests/test_fuzz_readers.py``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from hcviewer.annotation.annotation_file import AnnotationError
from hcviewer.annotation.annotation_reader import read_annotation
from hcviewer.annotation.boxfiles import BoxFileError, read_boxes
from hcviewer.cocomask import decode_segmentation
from hcviewer.data.coco import read_coco
from hcviewer.data.images import read_rgb
from hcviewer.data.folder import read_mask_folder
from hcviewer.data.records import DataError
from hcviewer.data.voc import read_voc
from hcviewer.modeling import CheckpointError, HypercolumnConfig, read_checkpoint_info
from hcviewer.modeling.checkpoint import FORMAT_NAME, FORMAT_VERSION, HEADER_KEY

FUZZ = settings(
    max_examples=int(os.environ.get("HCVIEWER_FUZZ_EXAMPLES", 60)),
    derandomize="HCVIEWER_FUZZ_EXAMPLES" not in os.environ,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
H, W = 12, 16  # the size of the images the fuzzed files refer to

# ------------------------------------------------------------------------------ strategies
HUGE = 10**400  # a JSON whole number beyond a float
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.integers(-3, 50) | st.sampled_from([HUGE, -HUGE])
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6))
any_json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)


def maybe(plausible: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a plausible value of the field, sometimes any JSON value."""
    return st.one_of(plausible, plausible, any_json)


numbers = st.integers(-5, 40) | st.floats(-1e40, 1e40) | st.sampled_from([0.5, 1e39, 3e38, -0.0, 16777217.5, 16777216,
                                                                          -20000, HUGE])
boxes4 = st.lists(numbers, min_size=4, max_size=4)
polygons = st.lists(st.lists(numbers, max_size=9), max_size=3)
rle_counts = st.text(alphabet=[chr(c) for c in range(40, 120)], max_size=12) | st.lists(st.integers(-2, 200), max_size=6)
rles = st.fixed_dictionaries({"size": maybe(st.just([H, W]) | st.lists(st.integers(-1, 30), max_size=3)),
                              "counts": maybe(rle_counts)})
segmentations = maybe(polygons | rles)
ids = st.integers(0, 3) | st.sampled_from(["a", "1"])
file_names = st.sampled_from(["a.jpg", "b.png", "missing.jpg", "", "../a.jpg", "a.jpg/.."])
keypoints = st.lists(numbers | st.integers(0, 2), max_size=7)

coco_images = st.fixed_dictionaries(
    {"id": maybe(ids), "file_name": maybe(file_names)},
    optional={"width": maybe(st.just(W) | st.integers(0, 10**6)), "height": maybe(st.just(H) | st.integers(0, 10**6))})
coco_annotations = st.fixed_dictionaries(
    {"image_id": maybe(ids), "category_id": maybe(ids), "bbox": maybe(boxes4)},
    optional={"id": maybe(ids), "segmentation": segmentations, "keypoints": maybe(keypoints), "iscrowd": any_json,
              "score": maybe(numbers), "hcviewer_box": maybe(boxes4)})
coco_categories = st.fixed_dictionaries(
    {"id": maybe(ids), "name": maybe(st.sampled_from(["person", "dog", ""]))},
    optional={"keypoints": maybe(st.lists(st.sampled_from(["nose", "eye", ""]), max_size=3)),
              "skeleton": maybe(st.lists(st.lists(st.integers(-1, 4), max_size=3), max_size=3))})
coco_documents = st.fixed_dictionaries(
    {"images": maybe(st.lists(coco_images, max_size=3)), "annotations": maybe(st.lists(coco_annotations, max_size=4)),
     "categories": maybe(st.lists(coco_categories, max_size=3))},
    optional={"hcviewer": maybe(st.fixed_dictionaries({"pending": maybe(st.lists(st.fixed_dictionaries(
        {"image_id": maybe(ids), "box": maybe(boxes4), "label": maybe(st.text(max_size=4))}), max_size=2))}))})
detection_lists = st.lists(st.fixed_dictionaries(
    {"image_id": maybe(ids), "bbox": maybe(boxes4), "score": maybe(numbers), "category_id": maybe(ids)},
    optional={"segmentation": segmentations, "keypoints": maybe(keypoints)}), max_size=4)
JSON_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _one_number_huge(text: str, which: int) -> str:
    """``text`` with one of its numbers (the ``which``-th, cycling) replaced by HUGE."""
    found = list(JSON_NUMBER.finditer(text))
    if not found:
        return text
    number = found[which % len(found)]
    return f"{text[:number.start()]}{HUGE}{text[number.end():]}"


VALID_JSON = [  # files every JSON reader accepts, but for one number made HUGE
    json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": W, "height": H}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 5, 6], "score": 0.5,
                                 "area": 30, "iscrowd": 0, "keypoints": [2, 3, 2, 4, 5, 1],
                                 "segmentation": [[1, 2, 6, 2, 6, 8, 1, 8]]}],
                "categories": [{"id": 1, "name": "person", "keypoints": ["nose", "eye"], "skeleton": [[1, 2]]}]}),
    json.dumps([{"image_id": 1, "bbox": [1, 2, 5, 6], "score": 0.5, "category_id": 1, "keypoints": [2, 3, 0.9]}]),
]
json_texts = (st.builds(json.dumps, coco_documents) | st.builds(json.dumps, detection_lists)
              | st.builds(_one_number_huge, st.sampled_from(VALID_JSON), st.integers(0, 60))
              | st.builds(json.dumps, any_json) | st.text(max_size=40))

csv_cells = st.text(max_size=6) | st.builds(str, numbers) | file_names
csv_headers = st.sampled_from(["image,x0,y0,x1,y1", "image,x0,y0,x1,y1,label,score", "x0,y0", ""]) | st.text(max_size=20)
csv_texts = st.builds(lambda header, rows: "\n".join([header] + [",".join(r) for r in rows]),
                      csv_headers, st.lists(st.lists(csv_cells, max_size=8), max_size=5)) | st.text(max_size=60)

xml_values = st.text(alphabet="0123456789.-e infa<&", max_size=6) | st.builds(str, numbers)


def _voc_xml(filename, size, objects) -> str:
    size_xml = "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height></size>"
    return f"<annotation><filename>{filename}</filename>{size_xml}{''.join(objects)}</annotation>"


voc_objects = st.builds(
    lambda name, corners, difficult: (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                                      + "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"),
                                                                                   corners)) + "</bndbox></object>"),
    st.sampled_from(["person", "", "dog"]), st.lists(xml_values, min_size=0, max_size=4), st.sampled_from(["0", "1", "x"]))
xml_texts = (st.builds(_voc_xml, st.sampled_from(["a.jpg", "", "missing.jpg"]),
                       st.none() | st.tuples(xml_values, xml_values), st.lists(voc_objects, max_size=3))
             | st.text(max_size=60) | st.just("<!DOCTYPE a [<!ENTITY b 'c'>]><annotation/>")
             | st.builds(lambda n: "<a>" * n + "</a>" * n, st.integers(1, 50_000)))

folder_documents = st.fixed_dictionaries(
    {"images": maybe(st.lists(st.fixed_dictionaries(
        {"file": maybe(file_names)},
        optional={"objects": maybe(st.lists(st.fixed_dictionaries(
            {"box": maybe(boxes4), "label": maybe(st.sampled_from(["person", ""]))},
            optional={"mask": maybe(st.sampled_from(["mask.png", "a.jpg", "gone.png"])),
                      "parts": maybe(st.sampled_from(["mask.png", "gone.png"])),
                      "keypoints": maybe(st.lists(st.lists(numbers, max_size=3), max_size=3))}), max_size=3))}),
        max_size=2))},
    optional={"keypoint_names": maybe(st.lists(st.sampled_from(["nose", "eye", "nose"]), max_size=3)),
              "part_names": maybe(st.lists(st.sampled_from(["head", "arm"]), max_size=2)),
              "skeleton": maybe(st.lists(st.lists(st.integers(-1, 3), max_size=3), max_size=2))})

config_fields = st.fixed_dictionaries({}, optional={
    "grid_size": maybe(st.integers(-1, 20)), "output_size": maybe(st.integers(-1, 300)),
    "tasks": maybe(st.lists(st.sampled_from(["figure_ground", "parts", "keypoints", "depth"]), max_size=3)),
    "class_names": maybe(st.lists(st.text(max_size=3), max_size=3)), "class_specific": any_json,
    "part_names": maybe(st.lists(st.text(max_size=3), max_size=3)),
    "keypoint_names": maybe(st.lists(st.text(max_size=3), max_size=3)),
    "skeleton": maybe(st.lists(st.lists(st.integers(-1, 3), max_size=3), max_size=3)),
    "max_image_side": maybe(st.integers(-10, 10_000)), "mean": maybe(st.lists(numbers, max_size=4)),
    "std": maybe(st.lists(numbers, max_size=4)), "taps": maybe(st.lists(st.sampled_from(["s4", "s8", "x"]), max_size=3)),
    "backbone": maybe(st.sampled_from(["mobilenet_v2", "resnet9000"])), "extra": any_json,
    "part_colors": any_json, "keypoint_categories": any_json, "unknown_key": any_json})
headers = st.fixed_dictionaries(
    {"format": maybe(st.just(FORMAT_NAME)), "format_version": maybe(st.just(FORMAT_VERSION)),
     "config": maybe(config_fields)},
    optional={"training": any_json, "metrics": any_json, "weights_dtype": any_json})


# -------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Images and masks the fuzzed files may refer to."""
    root = tmp_path_factory.mktemp("fuzz")
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)
    Image.fromarray(image).save(root / "a.jpg")
    Image.fromarray(image).save(root / "b.png")
    Image.fromarray((image[..., 0] > 128).astype(np.uint8)).save(root / "mask.png")
    return root


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


# ----------------------------------------------------------------------------------- tests
def _read_box_file(path: Path) -> None:
    try:
        box_file = read_boxes(path)
    except BoxFileError:
        return
    for name in ["a.jpg", "b.png", "1.jpg", *box_file.image_names()]:
        box_file.image_id_for(name)
        for box in box_file.boxes_for(name):
            if box.segmentation is not None:
                try:
                    decode_segmentation(box.segmentation, H, W)
                except ValueError:
                    pass  # the app shows no ground truth for it


@pytest.mark.parametrize("name, texts", [("boxes.json", json_texts), ("boxes.csv", csv_texts), ("boxes.xml", xml_texts)])
@FUZZ
@given(data=st.data())
def test_box_files(folder, name, texts, data):
    _read_box_file(_write(folder, name, data.draw(texts)))


@FUZZ
@given(text=json_texts)
def test_annotation_files(folder, text):
    try:
        read_annotation(_write(folder, "annotation.json", text))
    except AnnotationError:
        pass


def _use_dataset(read) -> None:
    """Read a training data set and decode everything a training sample would."""
    try:
        dataset = read()
        for record in dataset.images:
            record.load_rgb()
            for obj in record.objects:
                for source in (obj.mask, obj.parts):
                    if source is not None:
                        source.decode(record.height, record.width)
    except DataError:
        pass


@FUZZ
@given(text=json_texts)
def test_coco_training_files(folder, text):
    path = _write(folder, "instances.json", text)
    _use_dataset(lambda: read_coco(path, folder))


@FUZZ
@given(document=folder_documents | any_json)
def test_mask_folder_files(folder, document):
    _write(folder, "boxes.json", json.dumps(document))
    _use_dataset(lambda: read_mask_folder(folder))


@FUZZ
@given(text=xml_texts, image_set=st.none() | st.sampled_from(["train", "gone"]))
def test_voc_training_folders(folder, text, image_set):
    root = folder / "voc"
    for sub in ("Annotations", "JPEGImages", "SegmentationObject", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages" / "a.jpg").write_bytes((folder / "a.jpg").read_bytes())
    (root / "SegmentationObject" / "a.png").write_bytes((folder / "mask.png").read_bytes())
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    _write(root / "Annotations", "a.xml", text)
    _use_dataset(lambda: read_voc(root, image_set))


@FUZZ
@given(header=headers | any_json)
def test_checkpoint_headers(folder, header):
    path = folder / "fuzz.safetensors"
    save_file({"weight": torch.zeros(1)}, str(path), metadata={HEADER_KEY: json.dumps(header)})
    try:
        info = read_checkpoint_info(path)
    except CheckpointError:
        return
    assert isinstance(info.config, HypercolumnConfig)


# ------------------------------------------------------------------ what is not a file at all
def _not_files(folder: Path, name: str, make_fifo) -> dict[str, Path]:
    """A FIFO, a link to /dev/zero and a folder, each called ``name``."""
    paths = {kind: folder / kind / name for kind in ("dev-zero", "folder")}
    for path in paths.values():
        path.parent.mkdir()
    paths["fifo"] = make_fifo(name)
    paths["dev-zero"].symlink_to("/dev/zero")
    paths["folder"].mkdir()
    return paths


NOT_FILE_READERS = {
    "boxes.json": (read_boxes, BoxFileError), "boxes.csv": (read_boxes, BoxFileError),
    "annotation.json": (read_annotation, AnnotationError),
    "instances.json": (lambda p: read_coco(p, p.parent), DataError),
    "image.png": (lambda p: read_rgb(p), DataError),
}


@pytest.mark.parametrize("name", sorted(NOT_FILE_READERS))
def test_what_is_not_a_regular_file_is_refused_unread(tmp_path, make_fifo, name):
    """A FIFO hung every reader, /dev/zero ran one out of memory; a folder named like a box file
    is read as a folder of VOC files, every other reader refuses it."""
    read, error_type = NOT_FILE_READERS[name]
    for kind, path in _not_files(tmp_path, name, make_fifo).items():
        if kind == "folder" and read is read_boxes:
            continue
        with pytest.raises(error_type, match="not a regular file") as error:
            read(path)
        assert str(path) in str(error.value)


# ---------------------------------------------------------------- checkpoints' statistics
statistics = st.lists(st.floats(-1e6, 1e6) | st.sampled_from([1e300, 1e-300, -1e300, 1e-6, 0.5]), min_size=3, max_size=3)


@settings(FUZZ, max_examples=min(FUZZ.max_examples, 20), phases=[Phase.explicit, Phase.generate])  # a failure: shown as found
@given(mean=statistics, std=statistics, variance=st.sampled_from([1.0, 0.0, -1.0, 1e-30, 1e30]))
def test_checkpoint_statistics(tiny_checkpoint, tmp_path, mean, std, variance):
    """A checkpoint with any normalisation and BatchNorm variances either is refused at load or
    predicts finite probabilities (negative variances, a mean of 1e300 or a std of 1e-300 gave
    NaN: empty masks of score 0, exit status 0)."""
    from safetensors import safe_open

    from hcviewer.inference import HypercolumnPredictor
    from hcviewer.modeling import load_checkpoint

    with safe_open(str(tiny_checkpoint), framework="pt") as f:
        header = json.loads(f.metadata()[HEADER_KEY])
        state = {key: f.get_tensor(key) for key in f.keys()}
    header["config"].update(mean=mean, std=std)
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key] * variance
    path = tmp_path / "statistics.safetensors"
    save_file(state, str(path), metadata={HEADER_KEY: json.dumps(header)})
    try:
        load_checkpoint(path)
    except CheckpointError:
        return
    predictor = HypercolumnPredictor.from_checkpoint(path)
    predictor.set_image(np.random.default_rng(0).integers(0, 255, (H * 4, W * 4, 3), np.uint8))
    assert np.isfinite(predictor.predict([[2, 2, 40, 30]]).figure_ground).all()
