"""The desktop app (PySide6 + pyqtgraph) and its Qt-free document, box readers and batch path."""

from hcviewer.app.qt_compat import protect_none_refcount

protect_none_refcount()
