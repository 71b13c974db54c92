"""Atomic file writes shared by the model, trainer and app: the content goes to a temporary
file beside the target, which then replaces it, so a crash, a full disk or a missing permission
never leaves a half-written file and keeps the previous one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


class OutputError(OSError):
    """A file that could not be written; the previous file is unchanged."""

    def __str__(self) -> str:
        return str(self.args[0])


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp_path)`` fills a temporary file next to ``path``, which then replaces it.
    Errors propagate unchanged; the temporary file is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """JSON (numpy values as plain numbers and lists), atomically. Raises OutputError naming the
    file, with the fix, when it cannot be written."""
    try:
        return write_text_atomic(path, json.dumps(obj, default=_json_default))
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}; the previous file, if any, is unchanged. "
                          "Choose a folder you can write to, or free disk space") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def check_writable(folder: str | os.PathLike, what: str) -> None:
    """Raise OutputError unless a file can be created, written and synced in ``folder``: tried
    with a small temporary file (then removed) before long work, so that a read-only or full
    target is found out at once, not after the work. ``what`` names the output in the message."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputError(f"cannot write {what}: the folder {folder} does not exist; create it or choose another")
    try:
        fd, probe = tempfile.mkstemp(prefix=".hcviewer-probe.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write {what}: {exc.strerror or exc} in {folder}; "
                          "choose a folder you can write to") from None
    try:
        os.write(fd, b"\0" * 4096)  # one block: a full disk fails here or at the sync
        os.fsync(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {what}: {exc.strerror or exc} in {folder}; "
                          "free disk space or choose another folder") from None
    finally:
        os.close(fd)
        Path(probe).unlink(missing_ok=True)
