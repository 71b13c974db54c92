"""Where the project is kept (Qt-free): its annotation file, saved and opened, and its autosave.

While there are unsaved changes the window calls ``autosave`` every few seconds: the project goes
to a recovery file (``~/.cache/hcviewer/recovery/<session>.json``, or ``$HCVIEWER_RECOVERY_DIR``)
which a clean ``close`` deletes. A recovery file whose process is gone is offered back at the next
start (``recovery_file``); the folder's rules (several processes, corrupt files) are in
``hcviewer.annotation.recovery``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hcviewer.annotation.annotation_file import Annotation, write_annotation
from hcviewer.annotation.annotation_reader import read_annotation
from hcviewer.annotation.recovery import (
    RecoverySession, default_recovery_dir, recovered_annotation_path, recovery_extra,
)

if TYPE_CHECKING:
    from hcviewer.annotation.document import Change, Project


@dataclass(frozen=True)
class SaveSnapshot:
    """What a save writes, and which state of the project it was taken from."""

    annotation: Annotation
    resets: int
    edits: int


class ProjectFile:
    """The project's annotation file (``path``, None until saved or opened) and its recovery
    file; it hears every change of the project to know what is unsaved."""

    def __init__(self, project: Project, recovery_dir: str | os.PathLike | None = None) -> None:
        self.project = project
        self.path: Path | None = None
        self._session = RecoverySession(Path(recovery_dir) if recovery_dir else default_recovery_dir())
        self._edits = 0  # annotating edits, undos and redos so far: a save knows if it is still current
        self._resets = 0  # annotations opened (or recovered) over the project
        project.add_listener(self._changed)

    def _changed(self, change: Change) -> None:
        if change.annotates:
            self._edits += 1
            self._session.modified = True
            self._session.autosaved = False
        elif change.kind == "reset":
            self._resets += 1
            self._session.modified = False

    @property
    def modified(self) -> bool:
        """Annotation edits since the last save (or load); boxes read from a file and model
        results alone are not (closing after only looking asks nothing)."""
        return self._session.modified

    # ------------------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike) -> str:
        """Write the annotation (COCO JSON + PNG mask folder) now; an OSError (naming the
        file) leaves the previous files. Returns what was written, for the user."""
        snapshot = self.snapshot()
        return self.mark_saved(path, snapshot, write_annotation(Path(path), snapshot.annotation))

    def snapshot(self) -> SaveSnapshot:
        """The annotation as it is now, to be written elsewhere (a background save): the
        document may change meanwhile, and ``mark_saved`` then tells what the file holds."""
        return SaveSnapshot(self.project.to_annotation(), self._resets, self._edits)

    def mark_saved(self, path: str | os.PathLike, snapshot: SaveSnapshot, written: list[Path]) -> str:
        """``snapshot`` was written to ``path``: it becomes the annotation's file, and the project
        is unmodified unless it was edited after the snapshot. Returns what was written, for the user."""
        if snapshot.resets == self._resets:  # else another annotation was opened meanwhile
            self.path = Path(path)
            if self._is_current(snapshot):
                self._session.modified = False
                self._session.remove_own()
        objects = sum(o.mask_rle is not None for image in snapshot.annotation.images for o in image.objects)
        return f"{objects} objects to {written[0]} (PNG masks in {written[1].name}/)"

    def _is_current(self, snapshot: SaveSnapshot) -> bool:
        """No annotating edit and no other annotation opened since ``snapshot`` was taken."""
        return (snapshot.resets, snapshot.edits) == (self._resets, self._edits)

    def open(self, path: str | os.PathLike) -> None:
        """Continue an annotation: its images, accepted masks and pending boxes replace the project."""
        annotation = read_annotation(path)
        self.project.reset(annotation)
        self.path = Path(path)

    # ------------------------------------------------------------------------------ recovery
    def autosave(self) -> Path | None:
        """Write the recovery file now when there are unsaved edits not yet autosaved. A failure
        (disk full) is not fatal: AnnotationWriteError says which file."""
        snapshot = self.autosave_snapshot()
        if snapshot is None:
            return None
        path = write_recovery(*snapshot)
        self.mark_autosaved(snapshot[1])
        return path

    def autosave_snapshot(self) -> tuple[Path, SaveSnapshot] | None:
        """What the recovery file should hold now (None: it holds the latest edits already), for
        ``write_recovery`` elsewhere (the saving thread) and then ``mark_autosaved``."""
        if not self._session.modified or self._session.autosaved:
            return None
        annotation = self.project.to_annotation(recovery_extra(self.path))
        return self._session.path, SaveSnapshot(annotation, self._resets, self._edits)

    def mark_autosaved(self, snapshot: SaveSnapshot) -> None:
        """``snapshot`` reached the recovery file: it holds the latest edits unless there were
        more since; a save that finished meanwhile left nothing to recover."""
        if self._is_current(snapshot):
            self._session.autosaved = True
        if not self._session.modified and not self._session.keep_on_close:
            self._session.remove_own()

    def recovery_file(self) -> Path | None:
        """The newest recovery file left by a process that is gone (a crash), else None."""
        return self._session.left_behind()

    def recover(self, path: str | os.PathLike) -> None:
        """Load a recovery file as the project (marked modified: it was never saved). The file
        becomes this process's autosave file until the edits are saved. RecoveryError (naming
        the file) when another process took it first, or when it cannot be read: it is then
        moved aside as ``.corrupt`` and the project is unchanged."""
        path = Path(path)
        claimed = self._session.claim(path)
        try:
            annotation = read_annotation(claimed)
            saved_to = recovered_annotation_path(annotation.extra)
            self.project.reset(annotation)
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:
            # A damaged file (truncated by a crash, edited by hand) must not come back at every start.
            raise self._session.set_aside(claimed, path, str(exc)) from None
        self.path = saved_to
        self._session.modified = True  # it was never saved ...
        self._session.autosaved = True  # ... and the claimed file holds it

    def discard_recovery(self, path: str | os.PathLike) -> None:
        Path(path).unlink(missing_ok=True)

    def interrupt(self) -> Path | None:
        """An exit that cannot ask about unsaved edits (Ctrl+C twice): write them to the recovery
        file now and keep it when the project closes, so that the next start offers them back.
        Returns the file (None when nothing is unsaved); AnnotationWriteError when it cannot be written."""
        if not self._session.modified:
            return None
        self._session.autosaved = False
        path = self.autosave()
        self._session.keep_on_close = True
        return path

    def close(self) -> None:
        """A clean exit: the recovery file goes (unless ``interrupt`` kept it)."""
        if not self._session.keep_on_close:
            self._session.remove_own()


def write_recovery(path: Path, snapshot: SaveSnapshot) -> Path:
    """Write an autosave snapshot (JSON only, no PNGs) to the recovery file ``path``; any thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_annotation(path, snapshot.annotation, png_masks=False)
    return path
