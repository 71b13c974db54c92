"""Screenshots of the app for the README and docs/screenshots/, on the bundled demo and checkpoint.

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python scripts/take_screenshots.py [--out DIR]

Under a real X server (or Xvfb) the grabs include pop-up windows; with QT_QPA_PLATFORM=offscreen
they do not (the class picker shot then shows no picker). Writes brush_edit.png (a brush edit on
an accepted mask), polygon_edit.png (Edit polygon mode on it), accepted_colors.png (one colour per
object, with the legend), class_menu.png (Set class: the class picker, narrowed by typing),
shortcuts.png (Help > Keyboard shortcuts), click_correct.png (a Ctrl+click and a Shift+click on
the cup) and keypoint_threshold.png (the Min. keypoint score slider in use: the astronaut's
keypoints above it, a rocket box without keypoints), main.png (the astronaut with parts and
skeleton) and motorcycle.png (no person heads on a motorcycle).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtCore import QRectF, QSettings
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QApplication, QScrollArea

from hcviewer.app.defaults import DEFAULT_CHECKPOINT
from hcviewer.app.event_loop import run_until
from hcviewer.app.image_view import Mode
from hcviewer.app.main_window import MainWindow
from hcviewer.app.menus import show_shortcuts
from hcviewer.app.settings import AppSettings

COFFEE = 2  # the demo's third photo: a cup and a spoon
MOTORCYCLE = 3  # the demo's fourth photo: a motorcycle and a bench
ASTRONAUT = 0  # the demo's first photo


def wait(app: QApplication, condition) -> None:
    run_until(app, condition, poll_s=0.005)


def settle(app: QApplication, seconds: float = 0.5) -> None:
    """Let pending repaints happen before a grab."""
    wait(app, lambda end=time.perf_counter() + seconds: time.perf_counter() > end)


def save(pixmap: QPixmap, path: Path) -> None:
    """A PNG of at most 256 colours (a third of the size; the screenshots live in the repository)."""
    image = pixmap.toImage().convertToFormat(QImage.Format.Format_RGB888)
    rgb = Image.frombuffer("RGB", (image.width(), image.height()), bytes(image.constBits()), "raw", "RGB",
                           image.bytesPerLine())
    rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def grab_screen_area(app: QApplication, window) -> QPixmap:
    """The window's area of the screen: pop-up menus over it included."""
    frame = window.frameGeometry()
    return app.primaryScreen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    folder = tempfile.TemporaryDirectory()
    os.environ["HCVIEWER_RECOVERY_DIR"] = folder.name
    settings = AppSettings(QSettings(str(Path(folder.name) / "settings.ini"), QSettings.Format.IniFormat))
    window = MainWindow(args.checkpoint, "cpu", settings=settings, offer_recovery=False)
    window.ask_to_save = False
    window.resize(1500, 950)
    window.move(20, 20)
    window.show()
    window.files.open_demo()
    window.files.show_image(COFFEE)
    state = window.state
    wait(app, lambda: state.model_info is not None and state.image_index == COFFEE and state.image is not None
         and len(window.canvas.box_items) == 2)

    window.segmentation.segment_all()
    wait(app, lambda: len(state.views) == 2)
    window.annotation.accept_all()
    cup, spoon = sorted(window.canvas.box_items)
    scroll = next(w for w in window.findChildren(QScrollArea) if w.widget() is window.display_panel.parentWidget())
    scroll.ensureWidgetVisible(window.display_panel.accepted_legend)
    settle(app)
    save(window.grab(), args.out / "accepted_colors.png")

    window.canvas.select_box(cup)
    wait(app, lambda: cup in state.views and bool(state.views[cup].contributions))
    click_correct_shot(app, window, cup, args.out / "click_correct.png")
    window.annotation.set_mode(Mode.BRUSH_ADD)
    window.view.brush_radius = 11
    window.annotation.stroke_started()
    for t in np.linspace(0, 1, 30):  # a stroke over the cup's handle, which the model's mask misses
        window.annotation.stroke_point(225 + 45 * t, 232 + 18 * t)
    window.annotation.stroke_finished()
    window.annotation.set_mode(Mode.SELECT)
    settle(app)
    save(window.grab(), args.out / "brush_edit.png")
    polygon_shot(app, window, cup, args.out / "polygon_edit.png")

    window.canvas.select_box(spoon)
    window.annotation.show_class_menu()
    window.annotation.class_picker.filter.setText("sp")  # typed: the list narrows
    settle(app, 1.0)
    save(grab_screen_area(app, window), args.out / "class_menu.png")
    window.annotation.class_picker.hide()

    show_shortcuts(window)
    settle(app)
    save(window.shortcuts_dialog.grab(), args.out / "shortcuts.png")
    window.shortcuts_dialog.close()
    keypoint_threshold_shot(app, window, args.out / "keypoint_threshold.png")
    main_view_shots(app, window, args.out)
    window.close()
    print(f"wrote 9 screenshots to {args.out}")
    return 0


def click_correct_shot(app: QApplication, window: MainWindow, cup: int, path: Path) -> None:
    """click_correct.png: a Ctrl+click on the spoon (which the model's mask of the cup takes in) and
    a Shift+click on its handle, then undone (the next shots start from the model's mask)."""
    for x, y, positive in ((365, 292, False), (228, 300, True)):
        window.clicks.click(cup, x, y, positive)
        wait(app, lambda: not window.clicks.waiting())
    settle(app)
    save(window.grab(), path)
    while window.project.history.undo_name() in ("click to add", "click to remove"):
        window.annotation.undo()


def polygon_shot(app: QApplication, window: MainWindow, box_id: int, path: Path) -> None:
    """Edit polygon mode (P) on the box's accepted mask, zoomed to the box, after its topmost
    vertex was dragged 12 px up (the mask follows; the vertex stays selected)."""
    window.annotation.set_mode(Mode.POLYGON)
    editor = window.annotation.polygons
    ring = max(range(len(editor.polygons)), key=lambda r: len(editor.polygons[r].points))
    top = int(np.argmin(editor.polygons[ring].points[:, 1]))
    editor.drag_vertex(ring, top, editor.polygons[ring].points[top] - (0, 12), start=True, finish=True)
    x0, y0, x1, y1 = (float(v) for v in window.current_document().box(box_id).xyxy)
    window.view.viewbox.setRange(QRectF(x0, y0, x1 - x0, y1 - y0), padding=0.15)
    settle(app)
    save(window.grab(), path)
    window.annotation.set_mode(Mode.SELECT)
    window.view.fit()


def keypoint_threshold_shot(app: QApplication, window: MainWindow, path: Path, threshold: int = 6) -> None:
    """The astronaut with her keypoints scoring at least ``threshold`` hundredths, and a rocket box
    segmented without keypoints (the person keypoint head does not apply to rockets)."""
    state = window.state
    window.files.show_image(ASTRONAUT)
    wait(app, lambda: state.image_index == ASTRONAUT and state.image is not None and len(window.canvas.box_items) == 1)
    window.project.add_box(ASTRONAUT, np.array([360.0, 0.0, 512.0, 150.0]), "rocket")  # the model behind her
    window.segmentation.segment_all()
    wait(app, lambda: len(state.views) == 2)
    person = next(b.id for b in window.current_document().boxes if b.label == "person")
    window.canvas.select_box(person)
    wait(app, lambda: person in window.canvas.overlays and bool(state.views[person].contributions))
    window.display_panel.keypoint_score.setValue(threshold)
    scroll = next(w for w in window.findChildren(QScrollArea) if w.widget() is window.display_panel.parentWidget())
    scroll.ensureWidgetVisible(window.display_panel.keypoint_score_label)
    settle(app, 1.0)
    save(window.grab(), path)


def main_view_shots(app: QApplication, window: MainWindow, out: Path) -> None:
    """main.png: the astronaut segmented with her part colour map and skeleton; motorcycle.png:
    the motorcycle and bench segmented, with neither parts nor keypoints (person heads only)."""
    state = window.state
    for index, name in ((ASTRONAUT, "main.png"), (MOTORCYCLE, "motorcycle.png")):
        window.files.show_image(index)
        wait(app, lambda: state.image_index == index and state.image is not None and len(window.canvas.box_items) > 0)
        window.segmentation.segment_all()
        wait(app, lambda: len(state.views) == len(window.canvas.box_items))
        first = min(window.canvas.box_items)
        window.canvas.select_box(first)
        wait(app, lambda: first in window.canvas.overlays and bool(state.views[first].contributions))
        settle(app, 1.0)
        save(window.grab(), out / name)


if __name__ == "__main__":
    sys.exit(main())
