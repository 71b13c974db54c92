"""The desktop app (PySide6 + pyqtgraph): views and controllers over ``hcviewer.annotation``."""

from hcviewer.app.qt_compat import protect_none_refcount

protect_none_refcount()
