"""The window's menus: every command with its shortcut, connected to the controller that runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QCheckBox, QDockWidget, QMenu

from hcviewer.annotation.exporters import FORMATS
from hcviewer.app.image_view import Mode
from hcviewer.app.shortcuts_dialog import COMMAND, ShortcutsDialog

if TYPE_CHECKING:
    from hcviewer.app.main_window import MainWindow


def add_action(window: "MainWindow", menu: QMenu, text: str, slot: Callable | None,
               shortcut: str | QKeySequence.StandardKey | None = None, checkable: bool = False) -> QAction:
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    action.setCheckable(checkable)
    if slot is not None:
        action.triggered.connect(slot)
    menu.addAction(action)
    return action


def build_menus(window: "MainWindow") -> None:
    """File, Edit, Segment, View and Help menus; sets the window's ``recent_menu``, ``undo_action``,
    ``redo_action``, ``mode_actions``, ``finish_polygon_action``, ``accept_action`` and ``reject_action``."""
    bar = window.menuBar()
    _file_menu(window, bar.addMenu("&File"))
    _edit_menu(window, bar.addMenu("&Edit"))
    _segment_menu(window, bar.addMenu("&Segment"))
    _view_menu(window, bar.addMenu("&View"))
    _help_menu(window, bar.addMenu("&Help"))


def _file_menu(window: "MainWindow", menu: QMenu) -> None:
    files, saving = window.files, window.saving
    add_action(window, menu, "Open images…", files.open_images_dialog, QKeySequence.StandardKey.Open)
    add_action(window, menu, "Open folder…", files.open_folder_dialog, "Ctrl+Shift+O")
    add_action(window, menu, "Open boxes…", files.open_boxes_dialog, "Ctrl+B")
    add_action(window, menu, "Open model…", window.segmentation.open_model_dialog, "Ctrl+M")
    window.recent_menu = menu.addMenu("Open recent")
    files.fill_recent_menu()
    menu.addSeparator()
    add_action(window, menu, "Open annotation…", saving.open_annotation_dialog, "Ctrl+Shift+A")
    # Written in the background: the window stays usable while a large photo's masks are encoded.
    add_action(window, menu, "Save annotation", lambda: saving.save_annotation(wait=False), QKeySequence.StandardKey.Save)
    add_action(window, menu, "Save annotation as…", lambda: saving.save_annotation_as(wait=False), "Ctrl+Shift+S")
    export = menu.addMenu("Export")
    for kind, text in FORMATS.items():
        add_action(window, export, f"{text}…", lambda _=False, k=kind: window.exporting.export_dialog(k))
    export.addSeparator()
    add_action(window, export, "Polygon tolerance…", window.exporting.ask_tolerance)
    menu.addSeparator()
    add_action(window, menu, "Quit", window.close, QKeySequence.StandardKey.Quit)


def _edit_menu(window: "MainWindow", menu: QMenu) -> None:
    annotation = window.annotation
    window.undo_action = add_action(window, menu, "Undo", annotation.undo, QKeySequence.StandardKey.Undo)
    window.redo_action = add_action(window, menu, "Redo", annotation.redo, "Ctrl+Shift+Z")
    for action, name in ((window.undo_action, "Undo"), (window.redo_action, "Redo")):
        action.setProperty(COMMAND, name)  # its text names the step: "Undo paint mask"
    menu.addSeparator()
    add_action(window, menu, "Set class of box…", annotation.show_class_menu, "C")
    add_action(window, menu, "Delete box", annotation.delete_selected, QKeySequence.StandardKey.Delete)
    for text, step, key in (("Select next box", 1, "Tab"), ("Select previous box", -1, "Shift+Tab")):
        action = add_action(window, menu, text, lambda _=False, s=step: window.canvas.select_next(s), key)
        # Only while the canvas has the focus: elsewhere Tab moves the focus, as in every window.
        action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        window.view.addAction(action)
    menu.addSeparator()
    modes = ((Mode.SELECT, "Select boxes", "V"), (Mode.DRAW, "Draw a new box", "D"),
             (Mode.BRUSH_ADD, "Brush: add to mask", "B"), (Mode.BRUSH_ERASE, "Brush: erase from mask", "E"),
             (Mode.POLYGON, "Edit polygon of mask", "P"))
    window.mode_actions = {
        mode: add_action(window, menu, text, lambda _=False, m=mode: annotation.set_mode(m), key, True)
        for mode, text, key in modes}
    window.finish_polygon_action = add_action(window, menu, "Finish polygon editing",
                                              lambda: annotation.set_mode(Mode.SELECT), "Return")
    window.finish_polygon_action.setEnabled(False)  # only while editing: Return stays the widgets' elsewhere
    add_action(window, menu, "Larger brush", lambda: annotation.scale_brush(1.25), "]")
    add_action(window, menu, "Smaller brush", lambda: annotation.scale_brush(0.8), "[")
    window.mode_actions[Mode.SELECT].setChecked(True)


def _segment_menu(window: "MainWindow", menu: QMenu) -> None:
    segmentation, annotation = window.segmentation, window.annotation
    add_action(window, menu, "Segment selected box", segmentation.segment_selected, "Space")
    add_action(window, menu, "Segment all boxes in image", segmentation.segment_all, "Ctrl+Return")
    add_action(window, menu, "Segment all images", segmentation.segment_all_images, "Ctrl+Shift+Return")
    add_action(window, menu, "Cancel", segmentation.cancel_batch, "Escape")
    menu.addSeparator()
    window.accept_action = add_action(window, menu, "Accept result", annotation.accept_selected, "A")
    window.reject_action = add_action(window, menu, "Reject result", annotation.reject_selected, "R")
    add_action(window, menu, "Accept all results in image", annotation.accept_all, "Shift+A")
    add_action(window, menu, "Accept all results in all images", annotation.accept_all_images, "Ctrl+Alt+A")
    window.accept_button.clicked.connect(annotation.accept_selected)
    window.reject_button.clicked.connect(annotation.reject_selected)
    menu.addSeparator()
    add_action(window, menu, "Compare tap subsets…", segmentation.open_compare, "Ctrl+K")
    window.layers.compare_button.clicked.connect(segmentation.open_compare)


def _view_menu(window: "MainWindow", menu: QMenu) -> None:
    files, panel = window.files, window.display_panel
    add_action(window, menu, "Fit image", window.view.fit, "F")
    add_action(window, menu, "Zoom 1:1 (actual pixels)", window.view.zoom_actual_pixels, "Ctrl+1")
    add_action(window, menu, "Next image", lambda: files.step_image(1), QKeySequence.StandardKey.MoveToNextPage)
    add_action(window, menu, "Previous image", lambda: files.step_image(-1), QKeySequence.StandardKey.MoveToPreviousPage)
    menu.addSeparator()
    toggles = (("Figure-ground mask", panel.show_mask), ("Parts", panel.show_parts),
               ("Keypoints", panel.show_keypoints), ("Ground truth", panel.show_gt),
               ("Selected box only", panel.selected_only))
    for key, (text, box) in enumerate(toggles, start=1):
        _mirror(add_action(window, menu, f"Show {text.lower()}", None, str(key), checkable=True), box)
    menu.addSeparator()
    for dock in window.findChildren(QDockWidget):
        menu.addAction(dock.toggleViewAction())


def _mirror(action: QAction, box: QCheckBox) -> None:
    """A checkable menu command that shows and sets a Display check box (also its enabled state)."""
    action.setChecked(box.isChecked())
    action.setEnabled(box.isEnabled())
    box.toggled.connect(action.setChecked)
    action.toggled.connect(box.setChecked)  # each stops the other: no signal when unchanged
    box.installEventFilter(_EnabledMirror(action, box))


class _EnabledMirror(QObject):
    """Disables the action when the check box is disabled (a task the checkpoint lacks)."""

    def __init__(self, action: QAction, box: QCheckBox) -> None:
        super().__init__(box)
        self.action = action

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt naming
        if event.type() == QEvent.Type.EnabledChange:
            self.action.setEnabled(watched.isEnabled())
        return False


def _help_menu(window: "MainWindow", menu: QMenu) -> None:
    add_action(window, menu, "Keyboard shortcuts", lambda: show_shortcuts(window), QKeySequence.StandardKey.HelpContents)


def show_shortcuts(window: "MainWindow") -> None:
    if window.shortcuts_dialog is None:
        window.shortcuts_dialog = ShortcutsDialog(window.menuBar(), window)
    window.shortcuts_dialog.show()
    window.shortcuts_dialog.raise_()
