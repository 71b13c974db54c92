"""The app's life cycle (issue 10). Qt objects die on the GUI thread only: garbage cycles that
hold Qt objects are collected by the GUI-thread collector, never by a worker thread that happens
to allocate, and a closed window is deleted with everything it opened. Ctrl+C in the terminal
closes the app as its close button does."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import threading
import weakref

import cv2
import numpy as np

import pytest
import shiboken6
from PySide6.QtCore import QObject, QSettings, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from hcviewer.annotation.document import Project
from hcviewer.app import main_window
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


@pytest.mark.own_gui_collector  # it counts its collector's collections: the fixture's must not take them
def test_while_a_model_loads_nothing_is_collected_then_its_objects_are_frozen(qtbot, tiny_checkpoint, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("HCVIEWER_RECOVERY_DIR", str(tmp_path / "recovery"))
    collector = GuiThreadCollector(interval_ms=10)
    collector.start()
    held = []
    real_collect_due = collector.collect_due

    def recording() -> int:  # what each tick did while the worker loaded the model
        found = real_collect_due()
        if window is not None:
            held.append((window.state.model_info is None, collector.collections))
        return found

    window = None
    collector._timer.timeout.disconnect()
    collector._timer.timeout.connect(recording)
    try:
        gc.unfreeze()
        settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
        window = MainWindow(tiny_checkpoint, "cpu", settings=settings, offer_recovery=False)
        window.ask_to_save = False
        qtbot.waitUntil(lambda: window.state.model_info is not None, timeout=120000)
        loading = [count for is_loading, count in held if is_loading]
        assert loading and loading[-1] == loading[0]  # ticks while loading collected nothing
        assert gc.get_freeze_count() > 0  # the model's and torch's objects: never walked again
        before = collector.collections
        young = [[] for _ in range(10 * gc.get_threshold()[0])]  # kept alive: a collection is due
        qtbot.waitUntil(lambda: collector.collections > before, timeout=10000)  # collecting again
        del young
        dispose(window)
        assert gc.get_freeze_count() == 0  # teardown collects the frozen objects too
    finally:
        if window is not None:
            dispose(window)
        collector.stop()
        collector.deleteLater()


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


def _run_app_with(monkeypatch, tmp_path, checkpoint, step) -> tuple[int, list[str]]:
    """``run_app`` on one image; ``step(window)`` is called every 50 ms on the GUI thread once
    the image is shown, until the app quits. A SIGINT that reaches the test's own handler
    (not the app's) is recorded and closes the windows, so that the test fails, not hangs."""
    monkeypatch.setenv("HCVIEWER_RECOVERY_DIR", str(tmp_path / "recovery"))
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    monkeypatch.setattr(main_window, "AppSettings", lambda: settings)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((120, 160, 3), np.uint8))
    missed: list[str] = []

    def not_handled_by_the_app(signum, frame) -> None:
        missed.append("SIGINT reached the test's handler, not the app's")
        for window in QApplication.topLevelWidgets():
            if isinstance(window, MainWindow):
                window.ask_to_save = False
        QTimer.singleShot(0, lambda: QApplication.exit(1))

    def poll() -> None:
        window = next((w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()), None)
        if window is not None and window.state.image is not None:
            step(window)

    poller = QTimer()
    poller.timeout.connect(poll)
    previous = signal.signal(signal.SIGINT, not_handled_by_the_app)
    try:
        poller.start(50)
        args = argparse.Namespace(paths=[str(image)], boxes=None, checkpoint=str(checkpoint), device="cpu",
                                  mirror=True)
        status = main_window.run_app(args)
    finally:
        poller.stop()
        assert signal.getsignal(signal.SIGINT) is not_handled_by_the_app  # the app gave SIGINT back
        signal.signal(signal.SIGINT, previous)
    assert not any(isinstance(w, MainWindow) for w in QApplication.topLevelWidgets())  # deleted on return
    return status, missed


def _interrupt_from_another_thread() -> None:
    """A SIGINT that arrives while the GUI thread sleeps in Qt's event loop, as from a terminal."""
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()


@pytest.mark.slow
def test_ctrl_c_closes_the_app_as_its_close_button_does(qtbot, tiny_checkpoint, tmp_path, monkeypatch):
    seen = {}

    def interrupt_once(window: MainWindow) -> None:
        if not seen:
            app = QApplication.instance()
            seen["collecting"] = any(c.active for c in app.findChildren(GuiThreadCollector))
            _interrupt_from_another_thread()

    status, missed = _run_app_with(monkeypatch, tmp_path, tiny_checkpoint, interrupt_once)
    assert status == 0 and missed == []
    assert seen["collecting"]  # the app collects garbage on the GUI thread


@pytest.mark.slow
def test_ctrl_c_twice_at_the_save_question_quits_keeping_the_edits(qtbot, tiny_checkpoint, tmp_path, monkeypatch):
    seen: dict = {}

    def edit_then_interrupt_twice(window: MainWindow) -> None:
        if "edited" not in seen:
            seen["edited"] = window.project.add_box(0, np.array([10, 10, 50, 50]), "person")
            _interrupt_from_another_thread()  # the close asks: Save, Discard or Cancel?
            return
        question = QApplication.activeModalWidget()
        if question is not None and "question" not in seen:
            seen["question"] = question.text()
            _interrupt_from_another_thread()  # again, while the question is open

    status, missed = _run_app_with(monkeypatch, tmp_path, tiny_checkpoint, edit_then_interrupt_twice)
    assert status == 0 and missed == []
    assert "Save the annotation" in seen["question"]
    kept = list((tmp_path / "recovery").glob("*.json"))
    assert len(kept) == 1
    recovered = Project(recovery_dir=tmp_path / "other")
    recovered.file.recover(kept[0])
    assert [len(d.boxes) for d in recovered.images] == [1]
