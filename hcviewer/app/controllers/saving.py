"""Saving: the annotation (save, save as, open to continue), the autosave every few seconds,
recovery after a crash, and the question on closing with unsaved edits."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox

from hcviewer.annotation.annotation_file import write_annotation
from hcviewer.annotation.boxfiles import BoxFileError
from hcviewer.annotation.project_file import SaveSnapshot, write_recovery

if TYPE_CHECKING:
    from hcviewer.app.main_window import MainWindow

AUTOSAVE_MS = 5000  # unsaved edits reach the recovery file within this time


class SavingController(QObject):
    _written = Signal(object)  # (then, future) of a save or autosave, emitted from the saving thread

    def __init__(self, window: "MainWindow") -> None:
        super().__init__(window)  # a QObject of the GUI thread: worker signals reach it queued
        self.window = window
        self.project = window.project
        self._autosave_failed = False
        # Saves are written in one background thread, in order: a large photo's mask PNGs take
        # seconds to encode, which froze the window.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hcviewer-save")
        self._running: dict[Future, tuple[Path, SaveSnapshot]] = {}  # in the order they were asked for
        self._written.connect(self._deliver, Qt.ConnectionType.QueuedConnection)
        self._autosave_running = False
        self.autosave_timer = QTimer(window)
        self.autosave_timer.setInterval(AUTOSAVE_MS)
        self.autosave_timer.timeout.connect(self.autosave)
        self.autosave_timer.start()

    # ------------------------------------------------------------------------------ annotation
    def save_annotation(self, wait: bool = False) -> bool:
        path = self.project.file.path
        return self.save_to(path, wait) if path else self.save_annotation_as(wait)

    def save_annotation_as(self, wait: bool = False) -> bool:
        path, _ = QFileDialog.getSaveFileName(self.window, "Save annotation", str(self.proposed_path()),
                                              "COCO annotation (*.json)")
        return bool(path) and self.save_to(path, wait)

    def proposed_path(self) -> Path:
        """Where Save as… starts: the annotation's own file, else beside the images, named after
        their folder (a folder that cannot be written, like the demo's: the last folder used)."""
        if self.project.file.path is not None:
            return self.project.file.path
        folder = Path(self.project.images[0].path).parent if self.project.images else None
        if folder is None or not os.access(folder, os.W_OK):
            return Path(self.window.settings.last_folder() or Path.home()) / "annotation.json"
        return folder / f"{folder.name or 'images'}-annotation.json"

    @property
    def saving(self) -> bool:
        """A save is being written."""
        return bool(self._running)

    def save_to(self, path: str | os.PathLike, wait: bool = True) -> bool:
        """Write the annotation as it is now to ``path``, in the saving thread; edits made
        meanwhile keep the project modified. ``wait``: until written, returning whether it was (a
        failure is a message either way); else at once, True."""
        snapshot = self.project.file.snapshot()
        future = self._write(self._finish, write_annotation, Path(path), snapshot.annotation)
        self._running[future] = (Path(path), snapshot)  # before its answer: that is queued to this thread
        if wait:
            return self.finish_saves()
        self.window.statusBar().showMessage(f"Saving {Path(path).name}…")
        return True

    def wait_for_writes(self) -> None:
        """Until the saving thread has written everything asked of it (saves and autosaves)."""
        self._writer.submit(lambda: None).result()

    def finish_saves(self) -> bool:
        """Wait for the saves being written and take their outcome; whether all succeeded."""
        return all([self._finish(future) for future in list(self._running)])

    def _write(self, then: Callable[[Future], object], write: Callable[..., object], *args: object) -> Future:
        """``write(*args)`` in the saving thread; ``then(future)`` on the GUI thread afterwards."""
        future = self._writer.submit(write, *args)
        future.add_done_callback(lambda done: self._announce(then, done))
        return future

    def _announce(self, then: Callable[[Future], object], future: Future) -> None:
        try:
            self._written.emit((then, future))
        except RuntimeError:  # the window is gone: it finished its writes before closing
            pass

    def _deliver(self, item: tuple[Callable[[Future], object], Future]) -> None:
        then, future = item
        then(future)

    def _finish(self, future: Future) -> bool:
        if future not in self._running:  # taken already (finish_saves came first)
            return True
        path, snapshot = self._running[future]
        try:
            written = future.result()
        except OSError as exc:  # AnnotationWriteError names the file and keeps the previous one
            self.window.show_message(str(exc), "Save")
            return False
        finally:
            del self._running[future]
        message = self.project.file.mark_saved(path, snapshot, written)
        self.window.files.remember_recent(str(path))
        self.window.statusBar().showMessage(f"Saved {message}", 8000)
        return True

    def open_annotation_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Open annotation", self.window.files.dialog_folder(),
                                              "COCO annotation (*.json)")
        if path:
            self.window.settings.set_last_folder(str(Path(path).parent))
            self.open_annotation(path)

    def open_annotation(self, path: str | os.PathLike) -> None:
        try:
            self.project.file.open(path)
        except (BoxFileError, OSError, ValueError) as exc:
            self.window.show_message(str(exc), "Annotation")
            return
        self.window.file_model.refresh()
        if self.project.images:
            self.window.files.show_image(0)

    # ------------------------------------------------------------------------------ recovery
    def autosave(self) -> None:
        """Unsaved edits to the recovery file, written in the saving thread (a large project's
        JSON took the GUI thread up to a second every few seconds)."""
        if self._autosave_running:
            return
        snapshot = self.project.file.autosave_snapshot()
        if snapshot is None:
            return
        self._autosave_running = True
        self._write(lambda done: self._autosave_written(snapshot[1], done), write_recovery, *snapshot)

    def _autosave_written(self, snapshot: SaveSnapshot, future: Future) -> None:
        self._autosave_running = False
        try:
            future.result()
        except OSError as exc:
            if not self._autosave_failed:  # said once, not every few seconds
                self._autosave_failed = True
                self.window.show_message(f"Autosave failed: {exc}", "Autosave")
            return
        self.project.file.mark_autosaved(snapshot)

    def offer_recovery(self) -> None:
        """After a crash the autosave file is still there: offer to restore it."""
        recovery = self.project.file.recovery_file()
        if recovery is None:
            return
        answer = QMessageBox.question(
            self.window, "Recover unsaved work",
            f"hcviewer did not close cleanly last time. Restore the unsaved annotation from {recovery}?")
        if answer == QMessageBox.StandardButton.Yes:
            try:
                self.project.file.recover(recovery)
            except (OSError, ValueError) as exc:
                self.window.show_message(str(exc), "Recover")
                return
            if self.project.images:
                self.window.files.show_image(0)
        else:
            self.project.file.discard_recovery(recovery)

    def confirm_close(self) -> bool:
        """Unsaved edits: save, discard or stay (the recovery file is deleted on a clean exit)."""
        self.finish_saves()  # a save still being written may leave nothing to ask about
        if not (self.window.ask_to_save and self.project.file.modified):
            return True
        buttons = QMessageBox.StandardButton
        answer = QMessageBox.question(self.window, "Unsaved annotation", "Save the annotation before closing?",
                                      buttons.Save | buttons.Discard | buttons.Cancel, buttons.Save)
        if answer == buttons.Save:
            return self.save_annotation(wait=True)
        return answer == buttons.Discard

    def stop(self) -> None:
        """A clean exit: saves and autosaves still being written finish, no more autosaves, and
        the recovery file goes (unless a double Ctrl+C kept it: ``Project.interrupt``)."""
        self.autosave_timer.stop()
        self.finish_saves()
        self._writer.shutdown()
        self.project.file.close()
