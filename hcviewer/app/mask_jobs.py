"""Large masks made off the GUI thread: accepting or painting an object of a 12000 x 9000
photo draws and encodes tens of millions of pixels (a second or more), which froze the window.
``MaskJobs.submit(job, then)`` runs ``job()`` (numpy and OpenCV only: no Qt object may be
touched there) in one background thread and calls ``then(result)`` on the GUI thread."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, Signal

from hcviewer.annotation.annotation_file import encode_mask
from hcviewer.annotation.mask_crops import MaskCrop

SYNC_PIXELS = 1_000_000  # masks of boxes up to this many pixels are made at once, on the GUI thread


class MaskJobs(QObject):
    _finished = Signal(object)  # (then, future), emitted from the pool thread

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hcviewer-masks")
        # Queued even when emitted on the GUI thread (a job done before add_done_callback runs its
        # callback at once): ``then`` always runs later, from the event loop, never inside submit.
        self._finished.connect(self._deliver, Qt.ConnectionType.QueuedConnection)
        self.failed: Callable[[str], None] = print  # set by the owner: how an error reaches the user

    def submit(self, job: Callable[[], Any], then: Callable[[Any], None]) -> None:
        future = self._pool.submit(job)
        future.add_done_callback(lambda done: self._announce(then, done))

    def _announce(self, then: Callable[[Any], None], future: Future) -> None:
        try:
            self._finished.emit((then, future))
        except RuntimeError:  # the window was closed meanwhile: nothing to deliver to
            pass

    def _deliver(self, item: tuple[Callable[[Any], None], Future]) -> None:
        then, future = item
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.failed(f"Could not make the mask: {error}")
            return
        then(future.result())

    def shutdown(self) -> None:
        """Drop jobs not started; the one running finishes in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def encoded_crop(crop: MaskCrop) -> tuple[MaskCrop, dict]:
    """A crop and its compressed RLE: the answer of the jobs that make an object's mask, so the
    encoding runs in the mask thread too."""
    return crop, encode_mask(crop)
