"""The app's life cycle (issue 10). Qt objects die on the GUI thread only: garbage cycles that
hold Qt objects are collected by the GUI-thread collector, never by a worker thread that happens
to allocate, and a closed window is deleted with everything it opened."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import shiboken6
from PySide6.QtCore import QObject, QSettings
from PySide6.QtWidgets import QMessageBox, QWidget

from hcviewer.app.gui_gc import GuiThreadCollector, dispose, flush_deletions, install_gui_gc
from hcviewer.app.main_window import MainWindow
from hcviewer.app.settings import AppSettings


class _Cycle:
    """A reference cycle holding a QObject; records the thread that finally frees it."""

    def __init__(self, deaths: list[str]) -> None:
        self.me = self
        self.qobject = QObject()
        self.deaths = deaths

    def __del__(self) -> None:
        self.deaths.append(threading.current_thread().name)


def _allocate_in_worker() -> list:
    """Allocate enough containers in a worker thread to cross every generation's threshold
    many times; returns some of them, kept alive (so that a collection is due afterwards)."""
    kept: list = []

    def work() -> None:
        for _ in range(20):
            junk = [[] for _ in range(50_000)]
            del junk
        kept.extend([] for _ in range(10 * gc.get_threshold()[0]))

    worker = threading.Thread(target=work, name="worker")
    worker.start()
    worker.join()
    return kept


@pytest.fixture
def automatic_gc():
    """Automatic collection on, as in a plain Python process (the test session turns it off)."""
    gc.enable()
    yield
    gc.disable()


def test_cycles_holding_qt_objects_die_on_the_gui_thread(qtbot, automatic_gc):
    collector = GuiThreadCollector(interval_ms=10)
    collector.start()
    try:
        assert not gc.isenabled()
        deaths: list[str] = []
        _Cycle(deaths)
        kept = _allocate_in_worker()
        assert deaths == []  # the worker's allocations collected nothing
        qtbot.waitUntil(lambda: bool(deaths), timeout=10000)  # the GUI timer collects
        del kept
        assert deaths == [threading.main_thread().name]
    finally:
        collector.stop()
        collector.deleteLater()
    assert gc.isenabled()  # stop gives automatic collection back


def test_install_gui_gc_collects_until_the_app_quits(qapp, automatic_gc):
    collector = install_gui_gc(qapp, interval_ms=10)
    assert collector.active and not gc.isenabled()
    qapp.aboutToQuit.emit()
    assert not collector.active and gc.isenabled()


def test_dispose_deletes_a_widget_and_its_children_now(qtbot):
    window = QWidget()
    child = QWidget(window)
    window.show()
    dispose(window)
    assert not shiboken6.isValid(window) and not shiboken6.isValid(child)
    dispose(window)  # already deleted: nothing to do, no error


@pytest.mark.slow
def test_a_closed_main_window_is_deleted_with_its_windows_on_the_gui_thread(qtbot, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HCVIEWER_RECOVERY_DIR", str(tmp_path / "recovery"))
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(tiny_checkpoint, "cpu", settings=settings, offer_recovery=False)
    window.show()
    qtbot.waitUntil(lambda: window.state.model_info is not None, timeout=60000)
    window.show_message("a non-modal message box")
    window.segmentation.open_compare()
    widgets = [window, window.view, window.segmentation.compare_window, *window.findChildren(QMessageBox)]
    assert len(widgets) == 4
    alive = weakref.ref(window)
    dispose(window)
    assert not any(shiboken6.isValid(w) for w in widgets)
    del window, widgets
    flush_deletions()
    assert alive() is None  # no reference cycle or connection keeps the window's Python side
