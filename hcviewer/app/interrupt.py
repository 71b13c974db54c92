"""Ctrl+C in the terminal closes the app as its window's close button does.

Python runs a signal handler only between bytecodes of the main thread. While Qt's event loop
waits in C++ no Python runs, so by default a SIGINT surfaces seconds later as a KeyboardInterrupt
inside whatever Python callback comes next (the autosave timer): a traceback, and the app keeps
running. Here the interpreter's signal wakeup fd is one end of a socket pair watched by a
QSocketNotifier: a signal wakes the event loop at once, the notifier's slot lets Python run the
handler, and the handler only posts the close to the event loop:

- the first Ctrl+C closes the window as its close button does (unsaved edits: the usual
  Save / Discard / Cancel question);
- another Ctrl+C while that close is still in progress (the question is open) quits without
  asking; the unsaved edits are kept in the recovery file, which the next start offers back.
"""

from __future__ import annotations

import signal
import socket
import sys

from PySide6.QtCore import QObject, QSocketNotifier, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow


class InterruptHandler(QObject):
    """Owns the SIGINT handler and the wakeup socket pair while installed (GUI thread only).

    ``window`` is the main window: a QMainWindow with ``project`` (the document) and
    ``ask_to_save`` (the close question)."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__(window)
        self._window = window
        self._closing = False
        self._installed = False
        self._reader, self._writer = socket.socketpair()
        for end in (self._reader, self._writer):
            end.setblocking(False)
        self._notifier = QSocketNotifier(self._reader.fileno(), QSocketNotifier.Type.Read, self)
        self._notifier.activated.connect(self._drain)
        self._previous_handler = None
        self._previous_wakeup_fd = -1
        self.interrupts = 0

    def install(self) -> None:
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous_handler = signal.signal(signal.SIGINT, self._on_signal)
        self._installed = True

    def uninstall(self) -> None:
        if not self._installed:
            return
        self._installed = False
        signal.signal(signal.SIGINT, self._previous_handler)
        signal.set_wakeup_fd(self._previous_wakeup_fd)
        self._notifier.setEnabled(False)
        self._reader.close()
        self._writer.close()

    def _drain(self) -> None:
        """The wakeup bytes (one per signal); reading them is what lets the handler run."""
        try:
            while self._reader.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _on_signal(self, signum: int, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.interrupts += 1
        # Runs between two bytecodes of whatever the GUI thread was doing: only post the work.
        QTimer.singleShot(0, self._quit_now if self._closing else self._close)

    def _close(self) -> None:
        """As the window's close button: it may ask about unsaved edits (a nested event loop)."""
        self._closing = True
        try:
            self._window.close()
        finally:
            self._closing = False

    def _quit_now(self) -> None:
        """A second Ctrl+C: keep the unsaved edits in the recovery file and close without asking."""
        window = self._window
        window.saving.wait_for_writes()  # an autosave of older edits must not land after these
        try:
            kept = window.project.file.interrupt()
        except OSError as exc:
            print(f"hcviewer: cannot quit at once: the unsaved edits could not be kept ({exc}). "
                  "Answer the question in the window.", file=sys.stderr)
            return
        if kept is not None:
            print(f"hcviewer: quitting; the unsaved edits are kept in {kept} and offered back at the next start.",
                  file=sys.stderr)
        window.ask_to_save = False
        question = QApplication.activeModalWidget()
        if question is not None:
            question.close()  # the pending close returns (as Cancel); the close below asks nothing
        QTimer.singleShot(0, window.close)


def quit_on_interrupt(window: QMainWindow) -> InterruptHandler:
    """Install the Ctrl+C handler for ``window`` until the application quits."""
    handler = InterruptHandler(window)
    handler.install()
    QApplication.instance().aboutToQuit.connect(handler.uninstall)
    return handler
