"""Python's cyclic garbage collector runs on the GUI thread only.

Why: automatic collection runs in whichever thread happens to allocate when a generation's
threshold is crossed. When that is the model worker (building a model allocates a lot) and the
garbage holds a dead Qt object (a closed dialog, an earlier window, a graphics item), the object's
C++ destructor runs in the worker; it can wait for a Qt mutex that the GUI thread holds while the
GUI thread waits for the GIL, and the app freezes (issue 10). So ``GuiThreadCollector`` turns
automatic collection off and collects from a QTimer, which fires on the GUI thread, using the
interpreter's own generation thresholds (the pydev/pyqtgraph ``GarbageCollector`` recipe).

Reference counting still frees non-cyclic garbage at once, in any thread; only cycles wait for the
timer. While a model loads the timer collects nothing (``hold_collections``), and once it has
loaded the objects of torch and the model are frozen out of every later collection
(``freeze_long_lived``): collecting them froze the window for half a second, twice.
``flush_deletions`` is for teardown: it runs the pending ``deleteLater`` deletions and a full
collection, on the GUI thread, now.
"""

from __future__ import annotations

import gc

import shiboken6
from PySide6.QtCore import QCoreApplication, QEvent, QObject, QThread, QTimer
from PySide6.QtWidgets import QWidget

COLLECT_INTERVAL_MS = 100  # often enough that each collection stays small (a tick costs microseconds)
_collections_held = False  # while a model loads (see hold_collections)


class GuiThreadCollector(QObject):
    """Disables automatic collection while started; collects due generations on a GUI timer.

    Create and start it on the GUI thread (the thread of the QApplication), e.g. in ``run_app``;
    ``stop`` gives automatic collection back."""

    def __init__(self, interval_ms: int = COLLECT_INTERVAL_MS, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        self._was_enabled = gc.isenabled()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.collect_due)
        self.collections = 0  # timer ticks that collected something (for tests and the soak benchmark)

    def start(self) -> None:
        _require_gui_thread()
        self._thresholds = gc.get_threshold()
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        if self._was_enabled:
            gc.enable()

    @property
    def active(self) -> bool:
        return self._timer.isActive()

    def collect_due(self) -> int:
        """Collect the oldest generation whose count passed its threshold (as automatic
        collection would have); returns the number of unreachable objects found."""
        counts = gc.get_count()
        generation = -1
        for index, (count, threshold) in enumerate(zip(counts, self._thresholds)):
            if threshold <= 0 or count <= threshold:
                break
            generation = index
        if generation < 0 or _collections_held:
            return 0
        self.collections += 1
        return gc.collect(generation)


def install_gui_gc(app: QCoreApplication, interval_ms: int = COLLECT_INTERVAL_MS) -> GuiThreadCollector:
    """Start a ``GuiThreadCollector`` owned by ``app``; it stops (and automatic collection comes
    back) when the event loop is about to quit."""
    collector = GuiThreadCollector(interval_ms, parent=app)
    collector.start()
    app.aboutToQuit.connect(collector.stop)
    app.aboutToQuit.connect(collector.deleteLater)  # run_app may run again in this process (tests)
    return collector


def hold_collections() -> None:
    """A model starts loading in the worker: no collection until ``freeze_long_lived`` (or
    ``release_collections``). Importing torch and building the model allocate a few million
    objects between two ticks of the collector, and collecting them, young as they are, froze the
    GUI thread for 0.4-0.6 s (benchmarks/soak_app.py); frozen when the model is ready, they are
    never walked at all.
    """
    global _collections_held
    _collections_held = True


def release_collections() -> None:
    """Collections as usual again (a model failed to load)."""
    global _collections_held
    _collections_held = False


def freeze_long_lived() -> None:
    """A model has loaded: move every object tracked now into the collector's permanent
    generation (``gc.freeze``), which later collections do not traverse, so that no full
    collection walks torch's and the model's objects (one took 0.6 s during *Segment all images*);
    then collections as usual. Garbage that exists at this moment is never collected (a small
    leak, never a destructor running in a worker thread)."""
    gc.freeze()
    release_collections()


def dispose(widget: QWidget) -> None:
    """Close a widget and delete it (and its children) on the GUI thread now; a widget that is
    already deleted is left alone."""
    if shiboken6.isValid(widget):
        widget.close()
        widget.deleteLater()
    flush_deletions()


def flush_deletions() -> int:
    """Run pending ``deleteLater`` deletions, then a full collection, on the GUI thread now;
    returns the number of unreachable objects collected. Objects frozen by ``freeze_long_lived``
    are collected too (a window is being torn down: its model's objects may be garbage now)."""
    _require_gui_thread()
    gc.unfreeze()
    if QCoreApplication.instance() is None:
        return gc.collect()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    found = gc.collect()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # what the collection released
    return found


def _require_gui_thread() -> None:
    app = QCoreApplication.instance()
    if app is not None and QThread.currentThread() is not app.thread():
        raise RuntimeError("garbage collection of Qt objects must run on the GUI thread")
