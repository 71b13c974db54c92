"""Settings remembered between runs (QSettings): recent files, last folder, display choices,
window geometry."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings

from hcviewer.app.overlays import COLOR_BY, DisplaySettings

ORGANIZATION = "hcviewer"
APPLICATION = "hcviewer"
MAX_RECENT = 10
BOOLEAN_CHOICES = ("show_mask", "show_parts", "show_keypoints", "show_gt", "selected_only", "refine_edges")


class AppSettings:
    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings or QSettings(ORGANIZATION, APPLICATION)

    # -- recent files ------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.q.value("recent_files", [])
        if isinstance(value, str):  # QSettings returns a lone string for a one-item list
            value = [value]
        return [str(v) for v in value or []]

    def add_recent(self, path: str) -> list[str]:
        recent = [path] + [p for p in self.recent_files() if p != path]
        recent = recent[:MAX_RECENT]
        self.q.setValue("recent_files", recent)
        return recent

    # -- simple values -----------------------------------------------------------------------
    def last_folder(self) -> str:
        return str(self.q.value("last_folder", ""))

    def set_last_folder(self, folder: str) -> None:
        self.q.setValue("last_folder", folder)

    def geometry(self) -> QByteArray | None:
        value = self.q.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    def window_state(self) -> QByteArray | None:
        value = self.q.value("window/state")
        return value if isinstance(value, QByteArray) else None

    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)

    def load_display(self, display: DisplaySettings) -> None:
        for name in ("opacity", "threshold", "keypoint_min_score"):
            display.__dict__[name] = float(self.q.value(f"display/{name}", getattr(display, name)))
        for name in BOOLEAN_CHOICES:
            value = self.q.value(f"display/{name}", getattr(display, name))
            display.__dict__[name] = value if isinstance(value, bool) else str(value).lower() == "true"
        color_by = str(self.q.value("display/color_by", display.color_by))
        display.color_by = color_by if color_by in COLOR_BY else display.color_by

    def save_display(self, display: DisplaySettings) -> None:
        for name in ("opacity", "threshold", "keypoint_min_score", *BOOLEAN_CHOICES, "color_by"):
            self.q.setValue(f"display/{name}", getattr(display, name))
        self.q.sync()
