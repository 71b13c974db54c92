"""The Qt-free project document: edits, one undo/redo stack, listeners, box files, batch results,
annotation round trip, autosave and crash recovery."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hcviewer.annotation.annotation_file import encode_mask
from hcviewer.annotation.batch import ImageResult
from hcviewer.annotation.boxfiles import BoxFileError
from hcviewer.annotation.document import Change, Project


def _image(folder: Path, name: str, h: int = 40, w: int = 60) -> Path:
    cv2.imwrite(str(folder / name), np.zeros((h, w, 3), np.uint8))
    return folder / name


def _coco(folder: Path, boxes: dict[str, list[list[float]]], polygon: bool = False) -> Path:
    images, annotations = [], []
    for image_id, (name, image_boxes) in enumerate(boxes.items(), start=1):
        images.append({"id": image_id, "file_name": name, "width": 60, "height": 40})
        for x0, y0, x1, y1 in image_boxes:
            record = {"id": len(annotations) + 1, "image_id": image_id, "category_id": 5,
                      "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0}
            if polygon:
                record["segmentation"] = [[x0, y0, x1, y0, x1, y1, x0, y1]]
            annotations.append(record)
    path = folder / "boxes.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 5, "name": "person"}]}))
    return path


def _mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((40, 60), bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.fixture
def project(tmp_path: Path) -> Project:
    project = Project(recovery_dir=tmp_path / "recovery")
    project.add_images([_image(tmp_path, "a.png"), _image(tmp_path, "b.png")])
    return project


def _boxes(project: Project, index: int = 0) -> list[tuple]:
    return [(tuple(b.xyxy), b.label, b.accepted, b.rejected) for b in project.images[index].boxes]


def test_every_edit_is_undone_and_redone_in_order(project):
    states = [_boxes(project)]
    box_id = project.add_box(0, np.array([1, 2, 30, 20]), "person")
    states.append(_boxes(project))
    project.move_box(0, box_id, np.array([2, 3, 31, 21]))
    states.append(_boxes(project))
    project.set_label(0, box_id, "cat")
    states.append(_boxes(project))
    project.accept(0, box_id, _mask(5, 15, 5, 25))
    states.append(_boxes(project))
    project.reject(0, box_id)
    states.append(_boxes(project))
    project.delete_box(0, box_id)
    states.append(_boxes(project))
    assert states[-1] == [] and states[3] == [((2, 3, 31, 21), "cat", False, False)]
    for expected in reversed(states[:-1]):
        project.undo()
        assert _boxes(project) == expected
    assert not project.history.can_undo()
    for expected in states[1:]:
        project.redo()
        assert _boxes(project) == expected
    assert not project.history.can_redo()


def test_a_new_edit_clears_redo_and_edits_are_named(project):
    box_id = project.add_box(0, np.array([1, 2, 30, 20]), "person")
    project.set_label(0, box_id, "cat")
    assert project.history.undo_name() == "set class"
    project.undo()
    assert project.history.redo_name() == "set class"
    project.move_box(0, box_id, np.array([0, 0, 10, 10]))
    assert not project.history.can_redo() and project.history.undo_name() == "move box"


def test_model_results_are_on_the_same_stack_and_a_refresh_is_not_an_edit(project):
    box_id = project.add_box(0, np.array([1, 2, 30, 20]), "person")
    first, again = np.full((4, 4), 0.7), np.full((4, 4), 0.7)
    project.set_result(0, box_id, first, view="drawn")
    assert project.history.undo_name() == "segment box" and project.images[0].box(box_id).result.view == "drawn"
    project.set_result(0, box_id, again)  # the same box segmented again (e.g. on revisiting the image)
    assert project.history.undo_name() == "segment box" and project.images[0].box(box_id).result.figure_ground is again
    project.undo()
    assert project.images[0].box(box_id).result is None
    project.redo()
    assert project.images[0].box(box_id).result.figure_ground is first


def test_a_result_arriving_after_an_undo_keeps_the_users_redo(project):
    segmented = project.add_box(0, np.array([1, 2, 30, 20]), "person")
    accepted = project.add_box(0, np.array([30, 5, 55, 35]), "person")
    project.accept(0, accepted, _mask(10, 30, 35, 50))
    project.undo()  # the accept, while the other box's result is on its way
    project.set_result(0, segmented, np.full((4, 4), 0.7))
    assert project.history.redo_name() == "accept"
    project.redo()
    assert project.images[0].box(accepted).accepted
    project.undo()
    project.undo()  # the result's step: undone like any other
    assert project.images[0].box(segmented).result is None and project.history.redo_name() == "segment box"


def test_moving_a_box_drops_its_result_but_keeps_its_accepted_mask(project):
    box_id = project.add_box(0, np.array([1, 2, 30, 20]), "person")
    project.set_result(0, box_id, np.ones((4, 4)), keypoints=np.ones((2, 3)))
    project.accept(0, box_id, _mask(5, 15, 5, 25))
    box = project.images[0].box(box_id)
    assert box.keypoints.shape == (2, 3)  # the result's keypoints go with the accepted mask
    project.move_box(0, box_id, np.array([0, 0, 20, 20]))
    box = project.images[0].box(box_id)
    assert box.result is None and np.array_equal(box.mask, _mask(5, 15, 5, 25))


def test_accepting_several_masks_names_the_step_in_words(project):
    one = project.add_box(0, np.array([1, 2, 30, 20]), "person")
    two = project.add_box(0, np.array([5, 5, 25, 25]), "person")
    project.accept_many(0, {one: _mask(5, 15, 5, 25)})
    assert project.history.undo_name() == "accept 1 mask"  # it said "accept 1 masks"
    project.accept_many(0, {one: _mask(5, 15, 5, 25), two: _mask(6, 16, 6, 20)})
    assert project.history.undo_name() == "accept 2 masks"


def test_listeners_hear_which_images_changed(project):
    heard: list[Change] = []
    project.add_listener(heard.append)
    box_id = project.add_box(1, np.array([1, 2, 30, 20]), "person")
    project.undo()
    project.redo()
    project.image_failed(0, "broken")
    assert [(c.kind, c.indices) for c in heard] == [("edit", (1,)), ("undo", (1,)), ("redo", (1,)), ("status", (0,))]
    project.set_label(1, box_id, "person")  # no change: no edit, nobody told
    assert len(heard) == 4 and project.history.undo_name() == "add box"


def test_status_per_image(project):
    assert project.images[0].status == ""
    ids = [project.add_box(0, np.array([1, 2, 30, 20]), "person") for _ in range(3)]
    assert project.images[0].status == "3 boxes"
    project.set_result(0, ids[0], np.ones((4, 4)))
    assert project.images[0].status == "segmented 1/3"
    project.accept(0, ids[1], _mask(1, 5, 1, 5))
    assert project.images[0].status == "segmented 2/3, 1 accepted"
    project.reject(0, ids[0])
    project.reject(0, ids[2])
    assert project.images[0].status == "done: 1 accepted"
    project.image_failed(1, "cannot decode b.png")
    assert project.images[1].status == "error: cannot decode b.png"


def test_box_files_add_boxes_by_image_name_once(project, tmp_path):
    path = _coco(tmp_path, {"a.png": [[1, 1, 20, 20], [5, 5, 40, 30]], "b.png": [[0, 0, 10, 10]], "c.png": []})
    assert project.load_boxes(path) == 3
    assert [len(d.boxes) for d in project.images] == [2, 1]
    assert project.images[0].boxes[0].label == "person" and project.images[0].boxes[0].score is None
    assert project.load_boxes(path) == 0  # opening the same file again adds nothing
    project.undo()
    assert [len(d.boxes) for d in project.images] == [0, 0]
    assert project.category_ids == {"person": 5}


def test_a_box_file_for_other_images_says_so(project, tmp_path):
    path = _coco(tmp_path, {"zebra.png": [[1, 1, 20, 20]]})
    with pytest.raises(BoxFileError, match=r"boxes\.json: none of the boxes in it \(1 box\) belongs to the open images"):
        project.load_boxes(path)


def test_a_box_file_alone_opens_the_images_it_names(tmp_path):
    _image(tmp_path, "a.png")
    project = Project(recovery_dir=tmp_path / "recovery")
    project.load_boxes(_coco(tmp_path, {"a.png": [[1, 1, 20, 20]], "missing.png": [[1, 1, 5, 5]]}))
    assert [d.path.name for d in project.images] == ["a.png"] and len(project.images[0].boxes) == 1


def test_ground_truth_masks_decode_when_the_image_is_read_and_survive_undo(project, tmp_path):
    project.load_boxes(_coco(tmp_path, {"a.png": [[10, 5, 30, 25]]}, polygon=True))
    box = project.images[0].boxes[0]
    assert box.gt_mask is None  # the image size is not known yet
    project.image_loaded(0, (40, 60))
    assert box.gt_mask.shape == (40, 60) and box.gt_mask[10:20, 15:25].all() and not box.gt_mask[30:].any()
    project.move_box(0, box.id, np.array([0, 0, 30, 30]))
    project.undo()
    assert project.images[0].boxes[0].gt_mask is not None
    project.image_loaded(1, (40, 60))  # another image shown: the first one's masks are let go
    assert project.images[0].boxes[0].gt_mask is None


def test_batch_items_and_results_are_one_undoable_edit(project):
    kept = project.add_box(0, np.array([1, 2, 30, 20]), "person")
    moved = project.add_box(0, np.array([5, 5, 25, 25]), "person")
    accepted = project.add_box(1, np.array([5, 5, 25, 25]), "person")
    project.accept(1, accepted, _mask(5, 10, 5, 10))
    items = project.batch_items()
    assert [(item.image_path.name, item.image_id, len(item.boxes)) for item in items] == [("a.png", 0, 2)]
    project.move_box(0, moved, np.array([0, 0, 10, 10]))  # while the batch runs
    rles = [encode_mask(_mask(3, 9, 3, 9)), encode_mask(_mask(6, 20, 6, 20))]
    count = project.apply_batch_results([ImageResult(Path("a.png"), 0, items[0].boxes, rles, [0.9, 0.8],
                                                     np.zeros((2, 17, 3)))])
    assert count == 1 and project.history.undo_name() == "segment 1 image"
    results = {b.id: b.result for b in project.images[0].boxes}
    assert results[kept].mask_rle == rles[0] and results[kept].score == 0.9
    assert results[kept].keypoints.shape == (17, 3)
    assert results[moved] is None  # moved since: its result would be for the old box
    project.undo()
    assert project.images[0].box(kept).result is None


def test_batch_items_leave_out_hidden_detections_and_errors_mark_the_image(project, tmp_path):
    (tmp_path / "boxes.csv").write_text("image,x0,y0,x1,y1,label,score\na.png,1,1,20,20,person,0.9\n"
                                        "a.png,2,2,30,30,person,0.2\n")
    project.load_boxes(tmp_path / "boxes.csv")
    (item,) = project.batch_items(min_score=0.5)
    assert item.boxes.tolist() == [[1, 1, 20, 20]]
    project.apply_batch_results([ImageResult(Path("a.png"), 0, item.boxes, [], [], None, error="a.png: corrupt")])
    assert project.images[0].status == "error: a.png: corrupt"


def test_save_and_load_continue_the_work(project, tmp_path):
    first = project.add_box(0, np.array([1, 2, 30, 20]), "person")
    project.add_box(0, np.array([5, 5, 25, 25]), "cat")
    third = project.add_box(1, np.array([2, 2, 12, 12]), "person")
    project.accept(0, first, _mask(5, 15, 5, 25))
    project.reject(1, third)
    assert project.file.modified
    written = project.file.save(tmp_path / "out.json")
    assert "1 objects" in written and not project.file.modified and project.file.path == tmp_path / "out.json"

    again = Project(recovery_dir=tmp_path / "recovery")
    again.file.open(tmp_path / "out.json")
    assert [d.path for d in again.images] == [d.path for d in project.images]
    assert [(b.label, b.accepted, b.rejected) for d in again.images for b in d.boxes] == [
        ("person", True, False), ("cat", False, False), ("person", False, True)]
    assert np.array_equal(again.images[0].boxes[0].mask, _mask(5, 15, 5, 25))
    assert not again.history.can_undo() and not again.file.modified


def test_autosave_only_with_unsaved_edits_and_a_clean_close_removes_it(project, tmp_path):
    assert project.file.autosave() is None  # nothing edited
    project.add_box(0, np.array([1, 2, 30, 20]), "person")
    path = project.file.autosave()
    assert path.parent == tmp_path / "recovery" and path.exists()
    assert project.file.autosave() is None  # nothing new since
    assert project.file.recovery_file() is None  # this process is alive: not a crash
    project.file.close()
    assert not path.exists()


def test_a_crashed_session_is_recovered(project, tmp_path):
    box_id = project.add_box(0, np.array([1, 2, 30, 20]), "person")
    project.accept(0, box_id, _mask(5, 15, 5, 25))
    path = project.file.autosave()
    crashed = path.with_name("999999999-1.json")  # a process id that cannot be running
    path.rename(crashed)

    later = Project(recovery_dir=tmp_path / "recovery")
    assert later.file.recovery_file() == crashed
    later.file.recover(crashed)
    assert not crashed.exists() and later.file.modified
    assert [d.path.name for d in later.images] == ["a.png", "b.png"]
    assert np.array_equal(later.images[0].boxes[0].mask, _mask(5, 15, 5, 25))
    assert later.file.recovery_file() is None


def test_saving_removes_the_recovery_file(project):
    project.add_box(0, np.array([1, 2, 30, 20]), "person")
    path = project.file.autosave()
    project.file.save(path.parent.parent / "saved.json")
    assert not path.exists()


def test_reading_boxes_and_segmenting_leave_nothing_unsaved(project, tmp_path):
    project.load_boxes(_coco(tmp_path, {"a.png": [[1, 1, 20, 20]]}))
    box_id = project.images[0].boxes[0].id
    project.set_result(0, box_id, np.ones((4, 4)))
    assert not project.file.modified and project.file.autosave() is None and project.history.can_undo()
    project.set_label(0, box_id, "cat")
    assert project.file.modified


def test_results_for_many_boxes_are_one_edit_and_one_notification(project):
    from hcviewer.annotation.document import ModelResult

    ids = [project.add_box(0, np.array([1, 2, 30, 20]) + i, "person") for i in range(3)]
    heard: list[Change] = []
    project.add_listener(heard.append)
    project.set_results(0, {i: ModelResult(figure_ground=np.ones((4, 4))) for i in ids})
    assert len(heard) == 1 and project.history.undo_name() == "segment 3 boxes"
    project.undo()
    assert all(b.result is None for b in project.images[0].boxes)


def test_the_oldest_undo_steps_are_dropped_beyond_the_limit(project, monkeypatch):
    from hcviewer.annotation import history

    monkeypatch.setattr(history, "MAX_UNDO", 3)
    box_id = project.add_box(0, np.array([1, 2, 30, 20]), "a")
    for label in "bcd":
        project.set_label(0, box_id, label)
    while project.history.can_undo():
        project.undo()
    assert project.images[0].box(box_id).label == "a"  # the add box step is gone; the box stays
