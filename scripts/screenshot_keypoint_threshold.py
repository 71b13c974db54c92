"""Screenshot of the keypoint score threshold in use (docs/screenshots/keypoint_threshold.png):
the demo's astronaut with her keypoints above the threshold, a rocket box beside her segmented
without keypoints (the person keypoint head does not apply to rockets), and the Display panel's
Min. keypoint score slider.

    xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot_keypoint_threshold.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication, QScrollArea

sys.path.insert(0, str(Path(__file__).resolve().parent))
from take_screenshots import save, settle, wait  # noqa: E402 - the shared grab helpers

from hcviewer.app.defaults import DEFAULT_CHECKPOINT  # noqa: E402
from hcviewer.app.main_window import MainWindow  # noqa: E402
from hcviewer.app.settings import AppSettings  # noqa: E402

ASTRONAUT = 0  # the demo's first photo
ROCKET_BOX = np.array([360.0, 0.0, 512.0, 150.0])  # the rocket model behind her shoulder
THRESHOLD = 6  # the slider, in hundredths


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
    state = window.state
    wait(app, lambda: state.model_info is not None and state.image_index == ASTRONAUT and state.image is not None
         and len(window.canvas.box_items) == 1)
    window.project.add_box(ASTRONAUT, ROCKET_BOX, "rocket")
    wait(app, lambda: len(window.canvas.box_items) == 2)
    window.segmentation.segment_all()
    wait(app, lambda: len(state.views) == 2)
    person = next(b.id for b in window.current_document().boxes if b.label == "person")
    window.canvas.select_box(person)
    wait(app, lambda: person in window.canvas.overlays and bool(state.views[person].contributions))
    window.display_panel.keypoint_score.setValue(THRESHOLD)
    scroll = next(w for w in window.findChildren(QScrollArea) if w.widget() is window.display_panel.parentWidget())
    scroll.ensureWidgetVisible(window.display_panel.keypoint_score_label)
    settle(app, 1.0)
    scores = state.views[person].keypoints[:, 2]
    save(window.grab(), args.out / "keypoint_threshold.png")
    print(f"wrote {args.out / 'keypoint_threshold.png'}: {int((scores >= THRESHOLD / 100).sum())} of "
          f"{len(scores)} keypoints at or above {THRESHOLD / 100:.2f}")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
