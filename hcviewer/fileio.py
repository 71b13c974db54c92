"""Files in and out, shared by the model, trainer and app.

Out: the content goes to a temporary file beside the target, which then replaces it, so a
crash, a full disk or a missing permission never leaves a half-written file and keeps the
previous one.

In: every input file is read by ``read_input_bytes`` (or ``_text``) and JSON parsed by
``loads_json``, so that what is not a readable regular file of a sane size, or JSON with a
number no reader can hold, is one error that the reader reports naming the file."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

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


# ------------------------------------------------------------------------------------ input
MAX_INPUT_BYTES = 2**30  # 2.4 times COCO's largest annotation file (instances_train2017.json, 448 MB)


class InputFileError(OSError):
    """An input that is not a regular file of at most ``MAX_INPUT_BYTES``; ``strerror`` says what
    it is and the fix, so that a reader's ``except OSError`` reports it naming the file."""

    def __str__(self) -> str:
        return str(self.strerror)


def open_input(path: str | os.PathLike) -> BinaryIO:
    """The file opened for reading in binary, once it is known to be a regular file (links
    followed): a FIFO would block the reader forever, a device such as /dev/zero never ends.
    Raises InputFileError for those, else the OSError of opening it (no such file, permission)."""
    # Non-blocking: opening a FIFO for reading waits for a writer; a regular file ignores the flag.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise InputFileError(errno.EINVAL, f"it is {_file_kind(mode)}, not a regular file; give the file itself")
    return os.fdopen(fd, "rb")


def read_input_bytes(path: str | os.PathLike, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The content of a regular input file of at most ``limit`` bytes (``open_input``'s errors;
    InputFileError when larger: a crafted sparse file of terabytes would exhaust memory)."""
    with open_input(path) as handle:
        too_large = os.fstat(handle.fileno()).st_size > limit
        data = b"" if too_large else handle.read(limit + 1)  # to the limit: the file may grow meanwhile
    if too_large or len(data) > limit:
        raise InputFileError(errno.EFBIG, f"it is larger than {limit / 2**30:g} GiB, more than hcviewer reads from "
                                          "one input file; split it")
    return data


def read_input_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """``read_input_bytes`` decoded (UnicodeDecodeError when it is not ``encoding``)."""
    return read_input_bytes(path).decode(encoding)


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` refusing whole numbers beyond a float (1 followed by 400 zeros raised
    OverflowError wherever a reader used it as a number), as a json.JSONDecodeError at the
    number, which every reader reports as it reports a syntax error. NaN, Infinity and 1e400
    (a float infinity) are left to the readers' checks of each field, which name the record."""
    try:
        return json.loads(text, parse_int=_json_int)
    except _UnusableNumber as exc:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        literal = exc.args[0]
        shown = literal if len(literal) <= 24 else f"{literal[:20]}... ({len(literal)} digits)"
        raise json.JSONDecodeError(f"the whole number {shown} is beyond a 64-bit float (about 1.8e308); "
                                   "write a number within it", text, max(text.find(literal), 0)) from None


class _UnusableNumber(ValueError):
    pass


def _json_int(literal: str) -> int:
    if len(literal.lstrip("-")) > 309:  # beyond a float (and int() refuses 4300 digits on its own terms)
        raise _UnusableNumber(literal)
    value = int(literal)
    try:
        float(value)
    except OverflowError:
        raise _UnusableNumber(literal) from None
    return value


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
    return next((name for test, name in kinds if test(mode)), "a special file")
