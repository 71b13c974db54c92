"""The recovery folder (issue 10 item 12): corrupt or odd recovery files are moved aside once
with a message naming them, never offered again; several processes share the folder without
errors; temporary files left by a kill are cleaned; an interrupted exit keeps the edits."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from hcviewer.annotation import recovery
from hcviewer.annotation.document import Project
from hcviewer.annotation.recovery import STALE_TMP_SECONDS, RecoveryError

DEAD_PID = 999999999  # a process id that cannot be running


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "recovery"


def _crashed_session(tmp_path: Path, folder: Path, name: str = f"{DEAD_PID}-1.json") -> Path:
    """A recovery file as a crashed process leaves it: one image with one box."""
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((40, 60, 3), np.uint8))
    project = Project(recovery_dir=folder)
    project.add_images([image])
    project.add_box(0, np.array([1, 2, 30, 20]), "person")
    return project.file.autosave().rename(folder / name)


def _untouched_project(tmp_path: Path, folder: Path) -> Project:
    image = tmp_path / "mine.png"
    cv2.imwrite(str(image), np.zeros((40, 60, 3), np.uint8))
    project = Project(recovery_dir=folder)
    project.add_images([image])
    return project


def test_a_corrupt_recovery_file_is_moved_aside_with_a_message_and_not_offered_again(tmp_path, folder):
    crashed = _crashed_session(tmp_path, folder)
    crashed.write_text(crashed.read_text()[:40])  # truncated by the crash
    later = _untouched_project(tmp_path, folder)
    assert later.file.recovery_file() == crashed
    with pytest.raises(RecoveryError) as error:
        later.file.recover(crashed)
    aside = crashed.with_name(crashed.name + ".corrupt")
    assert str(crashed) in str(error.value) and str(aside) in str(error.value)
    assert aside.exists() and not crashed.exists()
    assert later.file.recovery_file() is None
    assert [d.path.name for d in later.images] == ["mine.png"] and not later.file.modified


def test_a_recovery_record_of_the_wrong_type_is_a_recovery_error(tmp_path, folder):
    crashed = _crashed_session(tmp_path, folder)
    coco = json.loads(crashed.read_text())
    coco["hcviewer"]["recovery"]["annotation_path"] = 5  # Path(5): a TypeError before
    crashed.write_text(json.dumps(coco))
    later = _untouched_project(tmp_path, folder)
    with pytest.raises(RecoveryError, match="annotation_path"):
        later.file.recover(crashed)
    assert later.file.recovery_file() is None and not later.file.modified


def test_a_recovered_file_is_kept_until_the_edits_are_saved(tmp_path, folder):
    crashed = _crashed_session(tmp_path, folder)
    later = Project(recovery_dir=folder)
    later.file.recover(crashed)
    assert not crashed.exists() and later.file.modified
    assert len(list(folder.glob("*.json"))) == 1  # now this process's autosave file
    later.file.save(tmp_path / "saved.json")
    assert not list(folder.glob("*.json"))


def test_a_file_taken_by_another_process_meanwhile_is_a_recovery_error(tmp_path, folder):
    crashed = _crashed_session(tmp_path, folder)
    later = Project(recovery_dir=folder)
    assert later.file.recovery_file() == crashed
    crashed.unlink()  # another hcviewer recovered it between the offer and the answer
    with pytest.raises(RecoveryError, match="another hcviewer"):
        later.file.recover(crashed)


def test_files_that_vanish_while_listing_are_skipped(tmp_path, folder, monkeypatch):
    crashed = _crashed_session(tmp_path, folder)
    listed = recovery._list
    monkeypatch.setattr(recovery, "_list", lambda where, pattern: listed(where, pattern) + [folder / f"{DEAD_PID}-2.json"])
    assert Project(recovery_dir=folder).file.recovery_file() == crashed


def test_two_processes_recovering_from_one_folder_race_without_errors(tmp_path, folder):
    """Two sessions offer and recover while crashed files keep appearing: every file is
    recovered exactly once; the loser of a race gets a RecoveryError, nothing else."""
    first = _crashed_session(tmp_path, folder)
    template = first.read_text()
    first.unlink()
    total = 150
    recovered: list[int] = []
    unexpected: list[BaseException] = []
    done = threading.Event()

    def crash_repeatedly() -> None:
        for i in range(total):
            tmp = folder / f".{DEAD_PID}-{i + 10}.json.x.tmp"
            tmp.write_text(template)
            os.replace(tmp, folder / f"{DEAD_PID}-{i + 10}.json")
        done.set()

    def recover_repeatedly() -> None:
        session = Project(recovery_dir=folder).file
        while True:
            try:
                path = session.recovery_file()
                if path is None:
                    if done.is_set():
                        return
                    continue
                session.recover(path)
                recovered.append(int(path.stem.split("-")[1]))
                session.close()  # the recovered file (claimed under this session's name) goes
            except RecoveryError as exc:
                if "another hcviewer" not in str(exc):
                    unexpected.append(exc)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                unexpected.append(exc)
                return

    threads = [threading.Thread(target=crash_repeatedly)] + [threading.Thread(target=recover_repeatedly) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert unexpected == []
    assert sorted(recovered) == list(range(10, total + 10))
    assert not list(folder.glob("*.json")) and not list(folder.glob("*.corrupt"))


def test_old_temporary_files_of_killed_writes_are_removed(tmp_path, folder):
    folder.mkdir()
    old = folder / f".{DEAD_PID}-1.json.abc123.tmp"
    fresh = folder / ".12345-1.json.def456.tmp"  # perhaps being written right now
    for path in (old, fresh):
        path.write_text("{")
    stale = time.time() - STALE_TMP_SECONDS - 60
    os.utime(old, (stale, stale))
    assert Project(recovery_dir=folder).file.recovery_file() is None
    assert not old.exists() and fresh.exists()


def test_an_interrupted_exit_keeps_the_edits_for_the_next_start(tmp_path, folder):
    project = _untouched_project(tmp_path, folder)
    assert project.file.interrupt() is None  # nothing unsaved: nothing kept
    project.add_box(0, np.array([1, 2, 30, 20]), "person")
    kept = project.file.interrupt()
    project.file.close()
    assert kept.exists()
    dead = kept.rename(kept.with_name(f"{DEAD_PID}-{kept.name.split('-', 1)[1]}"))  # as after the exit
    later = Project(recovery_dir=folder)
    assert later.file.recovery_file() == dead
    later.file.recover(dead)
    assert [len(d.boxes) for d in later.images] == [1]
