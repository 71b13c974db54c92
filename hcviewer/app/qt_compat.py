"""Work around a reference-count bug of PySide6 6.12.0 on Python < 3.12.

PySide6 6.12.0 drops references to ``None``, ``True`` and ``False`` while the event loop runs
(measured: one reference to ``None`` per round in which a view asks a Python item model for its
data, more with pyqtgraph items); on Python 3.11 these singletons are reference counted, so after
a few thousand events the interpreter aborts with "Fatal Python error: none_dealloc" (or
bool_dealloc). PySide6 6.11 does not have the bug, and Python 3.12+ makes these objects immortal
(PEP 683). Here we do what 3.12 does: give them a reference count so large that it can never
reach zero. They are never deallocated anyway; only their counters change.
"""

from __future__ import annotations

import ctypes
import sys
from importlib import metadata

_IMMORTAL = 1 << 40


def protect_none_refcount() -> bool:
    """Apply the workaround where needed; returns whether it was applied."""
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    try:
        version = metadata.version("PySide6_Essentials")
    except metadata.PackageNotFoundError:
        return False
    if not version.startswith("6.12."):
        return False
    for singleton in (None, True, False):
        # ob_refcnt is the first field of every CPython object (Py_ssize_t).
        refcount = ctypes.c_ssize_t.from_address(id(singleton))
        if refcount.value < _IMMORTAL:
            refcount.value += _IMMORTAL
    return True
