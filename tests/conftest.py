"""Shared fixtures. Tests make their own small data; nothing here needs ../shared or a network.

Garbage collection runs on the GUI thread only, as in the app (``hcviewer.app.gui_gc``): automatic
collection is off for the whole session; a test that uses Qt gets the app's GUI-thread collector,
and every test ends with its widgets deleted and a full collection on the GUI thread. Otherwise a
collection triggered in a model worker thread could run the C++ destructor of an earlier test's
widget there and deadlock against the GUI thread (issue 10).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gc  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hcviewer.app.gui_gc import GuiThreadCollector, flush_deletions  # noqa: E402
from hcviewer.modeling import HypercolumnConfig, build_hypercolumn, save_checkpoint  # noqa: E402
from hcviewer.categories import COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    gc.disable()  # collections happen on the GUI thread: in the fixture below, or its collector
    # Ctrl+C as in a terminal, however the suite was started: a shell without job control starts
    # background commands (``pytest &``, as scripts/stress_tests.sh does) with SIGINT ignored,
    # which Python and every subprocess of the Ctrl+C tests would inherit.
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _collect_on_the_gui_thread(request: pytest.FixtureRequest):
    """Qt tests run with the app's GUI-thread collector; every test ends with the deferred
    deletions processed and a full collection, on the GUI (main) thread."""
    collector = None
    # A test that times its own collector runs it alone: a second one could collect first.
    if "qapp" in request.fixturenames and request.node.get_closest_marker("own_gui_collector") is None:
        request.getfixturevalue("qapp")
        collector = GuiThreadCollector()
        collector.start()
    yield
    if collector is not None:
        collector.stop()
        collector.deleteLater()
    flush_deletions()


FIFO_PATIENCE_S = 20


@pytest.fixture
def make_fifo(tmp_path):
    """``make_fifo(name)``: a FIFO (named pipe) in tmp_path that no one writes to. Opening one to
    read waits for a writer: a reader waiting FIFO_PATIENCE_S (or more) gets end of file (as if the
    file were empty), so a test of a reader that does not refuse FIFOs fails, not hangs."""
    made: list[Path] = []
    done = threading.Event()

    def release() -> None:
        while not done.wait(FIFO_PATIENCE_S):
            for path in made:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass  # no reader waiting on this one

    watchdog = threading.Thread(target=release, name="fifo-watchdog", daemon=True)
    watchdog.start()

    def make(name: str) -> Path:
        path = tmp_path / name
        os.mkfifo(path)
        made.append(path)
        return path

    yield make
    done.set()
    watchdog.join()


def tiny_person_config(**changes) -> HypercolumnConfig:
    """A small MobileNetV2 person model: all three tasks, 3x3 grid, random init."""
    params = dict(
        backbone="mobilenet_v2",
        grid_size=3,
        output_size=24,
        tasks=("figure_ground", "parts", "keypoints"),
        class_names=("person",),
        part_names=("head", "torso", "legs"),
        keypoint_names=COCO_PERSON_KEYPOINTS,
        skeleton=COCO_PERSON_SKELETON,
        max_image_side=256,
    )
    params.update(changes)
    return HypercolumnConfig(**params)


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A saved random-init checkpoint whose heads give non-trivial, box-dependent output."""
    torch.manual_seed(0)
    model = build_hypercolumn(tiny_person_config())
    with torch.no_grad():
        for head in model.heads.values():
            for conv in head.classifiers.values():
                conv.weight.normal_(std=0.2)
    return save_checkpoint(tmp_path / "tiny.safetensors", model, training={"note": "random init, tests"})


@pytest.fixture
def rgb_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    image[30:90, 50:110] = (220, 40, 40)  # a red square "object"
    return image


@pytest.fixture
def blank_window(qtbot, tmp_path, monkeypatch):
    """A main window with nothing open, its settings and recovery files under ``tmp_path``."""
    from PySide6.QtCore import QSettings

    from hcviewer.app.gui_gc import dispose
    from hcviewer.app.main_window import MainWindow
    from hcviewer.app.settings import AppSettings

    monkeypatch.setenv("HCVIEWER_RECOVERY_DIR", str(tmp_path / "recovery"))
    settings = AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(None, "cpu", settings=settings, offer_recovery=False)
    window.ask_to_save = False
    qtbot.addWidget(window)
    yield window
    dispose(window)
