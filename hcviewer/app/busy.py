"""The busy sign: while the window waits for long work (a photo decoding, the model computing an
image's features or segmenting), a busy cursor and, in the status bar, what it waits for with an
indeterminate progress bar. Shown only once the work has lasted ``BUSY_DELAY_MS``: short work
does not flicker. A 12000 x 9000 photo gave no sign for seconds (issue 22)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar

BUSY_DELAY_MS = 300  # work shorter than this shows no sign


class BusyIndicator(QObject):
    """Counts the running jobs of each kind; the sign names the latest job still running."""

    def __init__(self, status_bar: QStatusBar) -> None:
        super().__init__(status_bar)
        self.label = QLabel()
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # indeterminate: how long the work takes is not known
        self.bar.setMaximumWidth(120)
        self.bar.setTextVisible(False)
        # Permanent widgets: a status message (showMessage) would hide ordinary ones.
        status_bar.insertPermanentWidget(0, self.bar)
        status_bar.insertPermanentWidget(0, self.label)
        self._jobs: dict[str, tuple[str, int]] = {}  # kind -> (text, how many running)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._show)
        self._cursor = False  # whether this sign set the application's override cursor
        self._hide()

    @property
    def shown(self) -> bool:
        return self.bar.isVisibleTo(self.bar.parentWidget())

    def text(self) -> str:
        return self.label.text() if self.shown else ""

    def start(self, kind: str, text: str) -> None:
        """A job of ``kind`` started; ``text`` says what the window waits for ("Decoding photo…")."""
        _, running = self._jobs.pop(kind, ("", 0))
        self._jobs[kind] = (text, running + 1)  # the latest kind last
        if self.shown:
            self.label.setText(text)
        elif not self._timer.isActive():
            self._timer.start(BUSY_DELAY_MS)

    def finish(self, kind: str) -> None:
        """One job of ``kind`` ended (a kind with none running is ignored)."""
        text, running = self._jobs.get(kind, ("", 0))
        if running > 1:
            self._jobs[kind] = (text, running - 1)
        else:
            self.drop(kind)

    def drop(self, kind: str) -> None:
        """Every job of ``kind`` is over or no longer awaited (another image is shown)."""
        self._jobs.pop(kind, None)
        if not self._jobs:
            self._timer.stop()
            self._hide()
        elif self.shown:
            self.label.setText(self._latest())

    def clear(self) -> None:
        for kind in list(self._jobs):
            self.drop(kind)

    def watch_model(self, worker: QObject) -> None:
        """The sign while the model worker (``hcviewer.app.worker.ModelWorker``) computes an
        image's features; "segment" jobs, started by the caller of ``predict``, end with its answer
        or error. Bound methods: the worker thread's signals reach them queued, on this thread."""
        worker.featuresStarted.connect(self._features_started)
        worker.imageReady.connect(self._features_ended)
        worker.predicted.connect(self._predicted)
        worker.failed.connect(self._model_failed)

    def _features_started(self, _key: str) -> None:
        self.start("features", "Computing image features…")

    def _features_ended(self, _key: str, _seconds: float) -> None:
        self.finish("features")

    def _predicted(self, _result: object) -> None:
        self.finish("segment")

    def _model_failed(self, _message: str) -> None:
        self.drop("features")
        self.finish("segment")

    def _latest(self) -> str:
        return next(reversed(self._jobs.values()))[0]

    def _show(self) -> None:
        if not self._jobs:
            return
        self.label.setText(self._latest())
        self.label.setVisible(True)
        self.bar.setVisible(True)
        if not self._cursor:
            QGuiApplication.setOverrideCursor(Qt.CursorShape.BusyCursor)  # an arrow with a wait sign: clicks still work
            self._cursor = True

    def _hide(self) -> None:
        self.label.setVisible(False)
        self.bar.setVisible(False)
        if self._cursor:
            QGuiApplication.restoreOverrideCursor()
            self._cursor = False
