"""Hostile inputs on the reader side (issue 10): crafted checkpoint headers and weights, box
coordinates that overflow float32, unhashable ids, deep nesting, broken polygons, oversized CSV
fields, duplicate image ids. Each is one clear error of the project's type naming the file and
the record, never another exception, an allocation of gigabytes, or silently wrong output."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hcviewer.modeling import CheckpointError, load_checkpoint, read_checkpoint_info
from hcviewer.modeling import checkpoint as checkpoint_module
from hcviewer.modeling.checkpoint import HEADER_KEY


# -------------------------------------------------------------------------------- checkpoints
def _rewrite(source: Path, target: Path, header_text=None, edit_config=None, edit_state=None) -> Path:
    """Copy a checkpoint with its header (as text, or its config edited) and/or tensors changed."""
    with safe_open(str(source), framework="pt") as f:
        header = json.loads(f.metadata()[HEADER_KEY])
        state = {key: f.get_tensor(key) for key in f.keys()}
    if edit_config:
        edit_config(header["config"])
    if edit_state:
        edit_state(state)
    save_file(state, str(target), metadata={HEADER_KEY: header_text or json.dumps(header)})
    return target


@pytest.mark.parametrize("field, value", [
    ("grid_size", 400),
    ("grid_size", 0),
    ("grid_size", 2.5),
    ("output_size", 100000),
    ("max_image_side", 0),
    ("max_image_side", -640),
    ("class_names", [f"class {i}" for i in range(200_000)]),
    ("class_names", "person"),
    ("keypoint_names", ["x" * 10_000] * 17),
    ("part_names", [f"part {i}" for i in range(300)]),
    ("std", [0.0, 0.224, 0.225]),
    ("std", [math.inf, 0.224, 0.225]),
    ("mean", [math.nan, 0.456, 0.406]),
    ("skeleton", [[math.inf, 1]]),
    ("skeleton", [[0, 1]] * 5000),
    ("class_specific", "yes"),
])
def test_header_values_out_of_bounds_are_refused_from_the_header_naming_the_field(
        tiny_checkpoint, tmp_path, field, value):
    path = _rewrite(tiny_checkpoint, tmp_path / "crafted.safetensors",
                    edit_config=lambda config: config.update({field: value}))
    with pytest.raises(CheckpointError) as error:
        read_checkpoint_info(path)  # the header alone: nothing is built or allocated
    assert str(path) in str(error.value) and field in str(error.value)


@pytest.mark.parametrize("header_text, says", [
    ("[1, 2, 3]", "not an object"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (json.dumps({"format": "hcviewer-checkpoint", "format_version": 1, "config": 5}), "config"),
])
def test_malformed_headers_are_checkpoint_errors(tiny_checkpoint, tmp_path, header_text, says):
    path = _rewrite(tiny_checkpoint, tmp_path / "crafted.safetensors", header_text=header_text)
    with pytest.raises(CheckpointError, match=says) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_a_header_claiming_weights_the_file_lacks_is_refused_before_allocating(tiny_checkpoint, tmp_path, monkeypatch):
    """2000 class-specific classifier sets of 256 keypoints are within every single bound, but the
    file holds weights for one set: the real network (about 30 GB) is never built."""
    def many_sets(config):
        config.update(class_names=[f"class {i}" for i in range(2000)], class_specific=True,
                      keypoint_names=[f"k{i}" for i in range(256)], skeleton=[])

    path = _rewrite(tiny_checkpoint, tmp_path / "crafted.safetensors", edit_config=many_sets)
    built_on = []
    real_build = checkpoint_module._build
    monkeypatch.setattr(checkpoint_module, "_build",
                        lambda info, device: built_on.append(device.type) or real_build(info, device))
    with pytest.raises(CheckpointError, match="shape") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)
    assert built_on == ["meta"]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_infinite_weights_are_refused_at_load_naming_the_weight(tiny_checkpoint, tmp_path, bad):
    def poison(state):
        key = next(k for k in state if k.startswith("heads.figure_ground.classifiers."))
        state[key][0, 0, 0, 0] = bad

    path = _rewrite(tiny_checkpoint, tmp_path / "diverged.safetensors", edit_state=poison)
    with pytest.raises(CheckpointError, match="heads.figure_ground.classifiers.*NaN or infinite") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_a_valid_checkpoint_still_loads_after_the_checks(tiny_checkpoint):
    model, info = load_checkpoint(tiny_checkpoint)
    assert info.config.grid_size == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert next(model.parameters()).device.type == "cpu"
    assert np.isfinite(info.config.std).all()


def _negative_variances(state):
    for key in state:
        if key.endswith("running_var"):
            state[key].fill_(-1)


@pytest.mark.parametrize("edit_config, edit_state, says", [
    (None, _negative_variances, r"BatchNorm statistic .*running_var holds negative variances \(down to -1\)"),
    (lambda config: config.update(mean=[1e300, 0.456, 0.406]), None, r"onto \[-4.37e\+300, .*its mean"),
    (lambda config: config.update(std=[1e-300, 0.224, 0.225]), None, r"onto \[-4.85e\+299, .*its std"),
    (lambda config: config.update(std=[1e6, 1e6, 1e6]), None, "its std"),
])
def test_statistics_that_empty_every_prediction_are_refused_at_load(tiny_checkpoint, tmp_path, edit_config,
                                                                    edit_state, says):
    """Such a checkpoint loaded, and predict wrote empty masks of score 0 with exit status 0."""
    path = _rewrite(tiny_checkpoint, tmp_path / "degenerate.safetensors", edit_config=edit_config,
                    edit_state=edit_state)
    with pytest.raises(CheckpointError, match=says) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def _as_another_user(call):
    """``call()``'s CheckpointError message (or None), as a user other than root: root reads a
    mode-000 file anyway, so under root it runs in a forked child that drops to nobody."""
    if os.geteuid() != 0:
        try:
            call()
        except CheckpointError as exc:
            return str(exc)
        return None
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child only runs Python and safetensors' reader, then leaves without cleanup
        message = b""
        try:
            os.setgid(65534)
            os.setuid(65534)
            call()
        except CheckpointError as exc:
            message = str(exc).encode()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"unexpected {exc!r}".encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(child, 0)
    return message or None


def test_an_unreadable_checkpoint_is_said_to_be_unreadable_not_truncated(tiny_checkpoint):
    """It was "No such file or directory ... the file may be truncated"."""
    folder = Path(tempfile.mkdtemp(prefix="hcviewer-unreadable-"))  # not under root's 0700 pytest folder
    try:
        folder.chmod(0o755)
        path = folder / "unreadable.safetensors"
        shutil.copy(tiny_checkpoint, path)
        path.chmod(0)
        message = _as_another_user(lambda: load_checkpoint(path))
    finally:
        shutil.rmtree(folder)
    assert message is not None and message.startswith(f"{path}: cannot be read (Permission denied)"), message
    assert "truncated" not in message and "No such file" not in message


# ------------------------------------------------------------------ box coordinates (float32)
def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _coco_document(bbox=(1, 1, 5, 5), segmentation=None, **image_changes) -> dict:
    image = {"id": 1, "file_name": "a.jpg", "width": 30, "height": 20, **image_changes}
    annotation = {"id": 7, "image_id": 1, "category_id": 1, "bbox": list(bbox)}
    if segmentation is not None:
        annotation["segmentation"] = segmentation
    return {"images": [image], "annotations": [annotation], "categories": [{"id": 1, "name": "person"}]}


@pytest.fixture
def coco_images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"only its presence is checked when reading")
    return folder


@pytest.mark.parametrize("row, says", [
    ("img1.jpg,0,0,1e39,100", "beyond"),  # float32 infinity: a segfault in roi_align
    ("img1.jpg,0,0,3e38,100", "beyond"),  # finite in float32, Infinity in the results JSON
    ("img1.jpg,1000.00001,0,1000.00002,100", "zero or negative size"),  # equal once rounded to float32
])
def test_csv_coordinates_the_network_cannot_use_name_file_and_line(tmp_path, row, says):
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes

    path = _write(tmp_path / "boxes.csv", f"image,x0,y0,x1,y1\nimg0.jpg,1,1,5,5\n{row}\n")
    with pytest.raises(BoxFileError, match=says) as error:
        read_boxes(path)
    assert str(path) in str(error.value) and "line 3" in str(error.value)


@pytest.mark.parametrize("text, where", [
    ('[{"image_id": 1, "bbox": [0, 0, 1e39, 10], "score": 1, "category_id": 1}]', "record 0"),
    (json.dumps(_coco_document(bbox=(0, 0, 1e39, 10))), "annotations[0]"),
])
def test_json_box_files_with_overflowing_coordinates_name_the_record(tmp_path, text, where):
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes

    path = _write(tmp_path / "boxes.json", text)
    with pytest.raises(BoxFileError, match="bbox .* beyond \\+-16777216") as error:
        read_boxes(path)
    assert str(path) in str(error.value) and where in str(error.value)


def test_voc_box_files_with_overflowing_coordinates_name_the_object(tmp_path):
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes

    path = _write(tmp_path / "a.xml", "<annotation><filename>a.jpg</filename><object><name>person</name><bndbox>"
                                      "<xmin>1</xmin><ymin>1</ymin><xmax>1e39</xmax><ymax>9</ymax></bndbox></object>"
                                      "</annotation>")
    with pytest.raises(BoxFileError, match="object 0 .*beyond") as error:
        read_boxes(path)
    assert str(path) in str(error.value)


def test_the_predictor_refuses_coordinates_float32_cannot_hold(tiny_checkpoint, rgb_image):
    from hcviewer.inference import HypercolumnPredictor, InputError

    predictor = HypercolumnPredictor.from_checkpoint(tiny_checkpoint)
    predictor.set_image(rgb_image)
    for box, says in (([0, 0, 1e39, 100], "box 1 has a coordinate beyond"),
                      ([0, 0, 3e38, 100], "box 1 has a coordinate beyond"),
                      ([10.00000001, 0, 10.00000002, 50], "box 1 has zero or negative size")):
        with pytest.raises(InputError, match=says):
            predictor.predict([[10, 10, 50, 50], box])
    assert np.isfinite(predictor.predict([[10, 10, 50, 50]]).figure_ground).all()


def test_training_readers_refuse_coordinates_float32_cannot_hold(tmp_path, coco_images):
    from hcviewer.data.coco import read_coco
    from hcviewer.data.records import DataError

    path = _write(tmp_path / "train.json", json.dumps(_coco_document(bbox=(0, 0, 3e38, 10))))
    with pytest.raises(DataError, match=r"annotations\[0\] \(id 7\): bbox .*beyond") as error:
        read_coco(path, coco_images)
    assert str(path) in str(error.value)


# ----------------------------------------------------------------- unhashable ids, deep nesting
UNUSABLE_BOX_FILES = {
    "image id a list": (json.dumps({**_coco_document(), "images": [{"id": [1], "file_name": "a.jpg"}]}),
                        "images[0]: id must be a whole number or a string"),
    "category id an object": (json.dumps({**_coco_document(), "categories": [{"id": {"a": 1}, "name": "x"}]}),
                              "categories[0]: id must be a whole number, as COCO results need"),
    "annotation image id a list": (
        json.dumps({**_coco_document(), "annotations": [{"image_id": [1], "bbox": [1, 1, 2, 2], "category_id": 1}]}),
        "annotations[0]: image_id must be"),
    "detection image id an object": ('[{"image_id": {"a": 1}, "bbox": [0, 0, 1, 1], "score": 1, "category_id": 1}]',
                                     "record 0: image_id must be"),
    "detection category id a list": ('[{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1, "category_id": [1]}]',
                                     "record 0: category_id must be"),
    "deeply nested": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "odd polygon": (json.dumps(_coco_document(segmentation=[[1, 1, 5, 1, 5]])), "annotations[0] (id 7): the segmentation"),
    "crafted compressed RLE": (json.dumps(_coco_document(segmentation={"size": [20, 30], "counts": "ooooooo"})),
                               "annotations[0] (id 7): the segmentation has RLE 'counts'"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE_BOX_FILES))
def test_unusable_box_files_are_box_file_errors_naming_the_record(tmp_path, case):
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes

    text, says = UNUSABLE_BOX_FILES[case]
    path = _write(tmp_path / "boxes.json", text)
    with pytest.raises(BoxFileError) as error:
        read_boxes(path)
    assert str(path) in str(error.value) and says in str(error.value)


def test_a_csv_field_over_128_kb_is_a_box_file_error_naming_the_line(tmp_path):
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes

    path = _write(tmp_path / "boxes.csv", f"image,x0,y0,x1,y1,label\na.jpg,1,1,5,5,\"{'x' * 200_000}\"\n")
    with pytest.raises(BoxFileError, match="line 2") as error:
        read_boxes(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("document, says", [
    ({**_coco_document(), "images": [{"id": [1], "file_name": "a.jpg", "width": 30, "height": 20}]}, "images\\[0\\]: id must be a whole number or a string"),
    (_coco_document(height=math.inf), "images\\[0\\]: 'height' is inf"),
    (_coco_document(width="wide"), "images\\[0\\]: 'width'"),
    (_coco_document(width=200000, height=200000), "images\\[0\\] claims 200000 x 200000 pixels"),
    (_coco_document(segmentation=[[1, 1, 5, 1, 5]]), "annotations\\[0\\] \\(id 7\\) of image a.jpg: .*odd number"),
    (_coco_document(segmentation=[[3, 4]]), "annotations\\[0\\] \\(id 7\\) of image a.jpg: .*at least 3"),
    (_coco_document(segmentation={"size": [20, 30], "counts": "ooooooo"}), "annotations\\[0\\] \\(id 7\\)"),
    ({**_coco_document(), "categories": [{"id": 1, "name": "person", "keypoints": 5}]}, "categories\\[0\\]: 'keypoints'"),
    ({**_coco_document(), "categories": [{"id": 1, "name": "person", "keypoints": ["a"], "skeleton": [[1, 9]]}]},
     "categories\\[0\\]: 'skeleton'"),
])
def test_unusable_training_annotations_are_data_errors_naming_the_record(tmp_path, coco_images, document, says):
    from hcviewer.data.coco import read_coco
    from hcviewer.data.records import DataError

    path = _write(tmp_path / "train.json", json.dumps(document))
    with pytest.raises(DataError, match=says) as error:
        read_coco(path, coco_images)
    assert str(path) in str(error.value)


def test_polygons_of_fewer_than_3_points_beside_proper_ones_are_skipped(tmp_path, coco_images):
    """COCO-style data has such zero-area pieces (one in the shared pelota set): not an error."""
    from hcviewer.data.coco import read_coco

    square = [2, 2, 12, 2, 12, 10, 2, 10]
    path = _write(tmp_path / "train.json", json.dumps(_coco_document(segmentation=[square, [3, 4, 5, 6]])))
    mask = read_coco(path, coco_images).images[0].objects[0].mask.decode(20, 30)
    assert mask[3:9, 3:11].all() and mask.sum() < 150


def test_deeply_nested_training_files_are_data_errors(tmp_path, coco_images):
    from hcviewer.data.coco import read_coco
    from hcviewer.data.folder import read_mask_folder
    from hcviewer.data.records import DataError

    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(DataError, match="nested too deeply"):
        read_coco(_write(tmp_path / "train.json", deep), coco_images)
    with pytest.raises(DataError, match="nested too deeply"):
        read_mask_folder(_write(tmp_path / "boxes.json", deep))


# ------------------------------------------------------------------------- duplicate image ids
def test_duplicate_image_ids_are_refused_by_the_app_and_the_trainer_alike(tmp_path, coco_images):
    from hcviewer.annotation.annotation_file import AnnotationError
    from hcviewer.annotation.annotation_reader import read_annotation
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes
    from hcviewer.data.coco import read_coco
    from hcviewer.data.records import DataError

    document = _coco_document()
    document["images"].append({"id": 1, "file_name": "b.jpg", "width": 30, "height": 20})
    path = _write(tmp_path / "twice.json", json.dumps(document))
    with pytest.raises(BoxFileError) as app_error:
        read_boxes(path)
    with pytest.raises(DataError) as trainer_error:
        read_coco(path, coco_images)
    with pytest.raises(AnnotationError) as annotation_error:
        read_annotation(path)  # the last one silently won
    expected = f"{path}: images[1]: id 1 is used twice (also by images[0], 'a.jpg'); give each its own id"
    assert all(str(error.value) == expected for error in (app_error, trainer_error, annotation_error))


@pytest.mark.parametrize("annotation_change, says", [
    ({"image_id": 5}, "annotations[0] (id 7): image_id 5 is not in 'images'; add the image or fix the id"),
    ({"category_id": 3}, "annotations[0] (id 7): category_id 3 is not in 'categories' (ids [1]); "
                         "add the category or fix the id"),
    ({"bbox": [1, 1, 5]}, "annotations[0] (id 7): bbox must be four numbers [x, y, width, height], got [1, 1, 5]; "
                          "fix or remove the record"),
    ({"score": math.nan}, "annotations[0] (id 7): score must be a finite number, got nan; fix or remove the record"),
    ({"keypoints": [1, 2, math.inf]}, "annotations[0] (id 7): a keypoint value must be a finite number, got inf; "
                                      "fix or remove the record"),
])
def test_the_app_the_trainer_and_annotations_refuse_a_broken_coco_record_in_one_message(
        tmp_path, coco_images, annotation_change, says):
    """Three readers once gave three messages for each of these."""
    from hcviewer.annotation.annotation_file import AnnotationError
    from hcviewer.annotation.annotation_reader import read_annotation
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes
    from hcviewer.data.coco import read_coco
    from hcviewer.data.records import DataError

    document = _coco_document()
    document["annotations"][0].update(annotation_change)
    path = _write(tmp_path / "broken.json", json.dumps(document))
    for read, error_type in ((read_boxes, BoxFileError), (lambda p: read_coco(p, coco_images), DataError),
                             (read_annotation, AnnotationError)):
        with pytest.raises(error_type) as error:
            read(path)
        assert str(error.value) == f"{path}: {says}"


def test_merged_training_files_may_repeat_an_image_id_for_the_same_file(tmp_path, coco_images):
    from hcviewer.data.coco import read_coco

    first = _write(tmp_path / "instances.json", json.dumps(_coco_document()))
    second = _write(tmp_path / "keypoints.json", json.dumps(_coco_document()))
    assert len(read_coco([first, second], coco_images).images) == 1


# --------------------------------------------------------------------- reloading a box file
def test_reloading_thousands_of_boxes_adds_only_the_new_ones(tmp_path):
    import cv2

    from hcviewer.annotation.document import Project

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((400, 600, 3), np.uint8))
    corners = np.random.default_rng(0).uniform(0, 500, (3000, 2)).round(2)

    def box_file(name: str, extra: list) -> Path:
        document = _coco_document(file_name="a.png", width=600, height=400)
        document["annotations"] = [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [x, y, 20, 30]}
                                   for i, (x, y) in enumerate(corners.tolist() + extra)]
        return _write(tmp_path / name, json.dumps(document))

    project = Project(recovery_dir=tmp_path / "recovery")
    project.add_images([tmp_path / "a.png"])
    assert project.load_boxes(box_file("boxes.json", [])) == 3000
    assert project.load_boxes(box_file("boxes.json", [])) == 0
    assert project.load_boxes(box_file("more.json", [[550.5, 10.25]])) == 1
    boxes = project.images[0].boxes
    assert len(boxes) == 3001 and tuple(boxes[-1].xyxy) == (550.5, 10.25, 570.5, 40.25)


# ------------------------------------------------------- files that are not files, huge numbers
HUGE = "1" + "0" * 400  # a JSON whole number beyond a float: OverflowError wherever it was used


def _with_huge(document, placeholder: int = 123456789) -> str:
    return json.dumps(document).replace(str(placeholder), HUGE)


HUGE_NUMBER_FILES = {
    "bbox": _with_huge(_coco_document(bbox=(1, 1, 123456789, 5))),
    "score": _with_huge({**_coco_document(), "annotations": [{"id": 7, "image_id": 1, "category_id": 1,
                                                              "bbox": [1, 1, 5, 5], "score": 123456789}]}),
    "keypoints": _with_huge({**_coco_document(), "annotations": [{"id": 7, "image_id": 1, "category_id": 1,
                                                                  "bbox": [1, 1, 5, 5], "keypoints": [123456789, 2, 2]}]}),
    "height": _with_huge(_coco_document(height=123456789)),
    "detection score": _with_huge([{"image_id": 1, "bbox": [0, 0, 5, 5], "score": 123456789, "category_id": 1}]),
}


@pytest.mark.parametrize("case", sorted(HUGE_NUMBER_FILES))
def test_whole_numbers_beyond_a_float_are_refused_by_every_reader_naming_the_file(tmp_path, coco_images, case):
    from hcviewer.annotation.annotation_file import AnnotationError
    from hcviewer.annotation.annotation_reader import read_annotation
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes
    from hcviewer.data.coco import read_coco
    from hcviewer.data.records import DataError

    path = _write(tmp_path / "huge.json", HUGE_NUMBER_FILES[case])
    readers = [(read_boxes, BoxFileError)]
    if not case.startswith("detection"):
        readers += [(read_annotation, AnnotationError), (lambda p: read_coco(p, coco_images), DataError)]
    for read, error_type in readers:
        with pytest.raises(error_type) as error:
            read(path)
        assert str(error.value).startswith(f"{path}: not valid JSON")
        assert "the whole number 10000000000000000000... (401 digits) is beyond a 64-bit float" in str(error.value)


def _read_every_way(path: Path, coco_images: Path) -> list[str]:
    """The message of each reader given ``path``, which it must refuse."""
    from hcviewer.annotation.annotation_file import AnnotationError
    from hcviewer.annotation.annotation_reader import read_annotation
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes
    from hcviewer.data.coco import read_coco
    from hcviewer.data.records import DataError

    messages = []
    for read, error_type in ((read_boxes, BoxFileError), (read_annotation, AnnotationError),
                             (lambda p: read_coco(p, coco_images), DataError)):
        with pytest.raises(error_type) as error:
            read(path)
        messages.append(str(error.value))
    return messages


@pytest.mark.parametrize("name", ["boxes.json", "boxes.csv", "boxes.xml"])
def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path, coco_images, make_fifo, name):
    """A FIFO given as a box file hung predict, and the app ignoring Ctrl+C."""
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes

    path = make_fifo(name)
    readers = _read_every_way(path, coco_images) if name.endswith(".json") else []
    with pytest.raises(BoxFileError) as error:
        read_boxes(path)
    for message in [str(error.value), *readers]:
        assert message.startswith(f"{path}: ") and "it is a FIFO (named pipe), not a regular file" in message


def test_a_fifo_named_like_an_image_is_refused_at_once(make_fifo):
    from hcviewer.data.images import read_rgb
    from hcviewer.data.records import DataError
    from hcviewer.imageio import ImageReadError, read_image

    path = make_fifo("x.jpg")
    with pytest.raises(ImageReadError, match="it is a FIFO"):
        read_image(path)
    with pytest.raises(DataError, match="it is a FIFO"):
        read_rgb(path)


def test_a_box_file_linked_to_dev_zero_is_refused_unread(tmp_path, coco_images):
    """It was read until memory ran out (MemoryError traceback)."""
    path = tmp_path / "boxes.json"
    path.symlink_to("/dev/zero")
    for message in _read_every_way(path, coco_images):
        assert message.startswith(f"{path}: ") and "it is a device, not a regular file" in message


def test_an_input_file_over_the_size_limit_is_refused_unread(tmp_path, coco_images):
    from hcviewer.fileio import MAX_INPUT_BYTES

    path = tmp_path / "boxes.json"
    with path.open("wb") as handle:
        handle.truncate(MAX_INPUT_BYTES + 1)  # sparse: nothing is written, and nothing may be read
    for message in _read_every_way(path, coco_images):
        assert message.startswith(f"{path}: ") and "larger than 1 GiB" in message


@pytest.mark.parametrize("document, where", [
    ({**_coco_document(), "categories": [{"id": "person", "name": "person"}],
      "annotations": [{"id": 7, "image_id": 1, "category_id": "person", "bbox": [1, 1, 5, 5]}]}, "categories[0]"),
    ([{"image_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9, "category_id": "x"}], "record 0"),
])
def test_string_category_ids_are_refused_when_the_box_file_is_read(tmp_path, document, where):
    """They passed the reader; predict then stopped at the first image's results, after segmenting it."""
    from hcviewer.annotation.annotation_file import AnnotationError
    from hcviewer.annotation.annotation_reader import read_annotation
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes

    path = _write(tmp_path / "boxes.json", json.dumps(document))
    with pytest.raises(BoxFileError) as error:
        read_boxes(path)
    assert str(error.value).startswith(f"{path}: {where}: ") and "must be a whole number" in str(error.value)
    if isinstance(document, dict):
        with pytest.raises(AnnotationError, match=r"categories\[0\]: id must be a whole number"):
            read_annotation(path)


def test_duplicate_csv_header_columns_are_refused(tmp_path):
    """The last x0 silently won."""
    from hcviewer.annotation.boxfiles import BoxFileError, read_boxes

    path = _write(tmp_path / "boxes.csv", "image,x0,y0,x1,y1,label,X0\nimg0.jpg,1,1,5,5,person,3\n")
    with pytest.raises(BoxFileError) as error:
        read_boxes(path)
    assert str(error.value) == (f"{path}: line 1: the header names the column x0 more than once; "
                                "keep one of each")
