"""The progress of ``hcviewer predict``, kept beside its output so that a killed, crashed or
interrupted run continues where it stopped (Qt- and torch-free).

``OUT.partial.jsonl`` is locked by the run writing it (another run on the same OUT is refused,
naming the process). It is JSON Lines: the first line names the run's inputs (checkpoint, box
file, threshold, min. score); each further line is one finished image, written and flushed as
soon as it is done::

    {"image": "/abs/photo.jpg", "image_id": 7, "records": [COCO result, ...], "skipped": ["...", ...]}

At the end the records are assembled into OUT in the order of the images and the progress file
is deleted. A line cut short by a kill is dropped when the file is read back. Images that could
not be read are not recorded: a later run tries them again.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hcviewer.fileio import OutputError

SUFFIX = ".partial.jsonl"
FORMAT = "hcviewer-predict-progress/1"


class ProgressMismatch(ValueError):
    """A progress file that belongs to another run (or none where one is required)."""


@dataclass
class DoneImage:
    image: str  # absolute path
    image_id: int
    records: list[dict]  # COCO results of its boxes
    skipped: list[str] = field(default_factory=list)  # one message per box that was not segmented

    @property
    def key(self) -> tuple[str, int]:
        return self.image, self.image_id


def progress_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + SUFFIX)


def file_identity(path: str | os.PathLike) -> dict:
    """What tells a changed input apart: absolute path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def image_key(image_path: str | os.PathLike, image_id: int) -> tuple[str, int]:
    return str(Path(image_path).resolve()), int(image_id)


class ProgressFile:
    """Finished images of one run, read back from an earlier run's file and appended to as
    images finish. Use :meth:`open`."""

    def __init__(self, path: Path, inputs: dict, done: dict[tuple[str, int], DoneImage], handle) -> None:
        self.path = path
        self.inputs = inputs
        self.done = done
        self._handle = handle

    @classmethod
    def open(cls, path: str | os.PathLike, inputs: dict, mode: str = "auto") -> "ProgressFile":
        """``mode``: "auto" continues a file of the same inputs (and refuses one of other inputs),
        "resume" requires such a file, "restart" discards any. Raises ProgressMismatch, or
        OutputError when the file cannot be written."""
        path = Path(path)
        if mode == "resume" and not path.exists():
            raise ProgressMismatch(f"{path}: no progress to resume; run without --resume to start")
        handle = _open_locked(path)
        try:
            data = _read(path, handle)
            if mode == "restart" or not data:
                return cls._create(path, inputs, handle)
            header, done, good_bytes = _parse(data)
            if header is None or header.get("format") != FORMAT:
                raise ProgressMismatch(f"{path} is not a progress file of hcviewer predict; move it away, "
                                       "or pass --restart to replace it")
            if header.get("inputs") != inputs:
                changed = sorted(k for k in set(inputs) | set(header.get("inputs", {}))
                                 if header.get("inputs", {}).get(k) != inputs.get(k))
                raise ProgressMismatch(f"{path} holds the progress of a run with a different {', '.join(changed)}; "
                                       "run with the same inputs to continue it, or pass --restart to start over")
            try:
                handle.truncate(good_bytes)  # drop a line cut short by a kill
            except OSError as exc:
                raise _output_error(path, exc) from None
        except BaseException:
            handle.close()
            raise
        return cls(path, inputs, done, handle)

    @classmethod
    def _create(cls, path: Path, inputs: dict, handle) -> "ProgressFile":
        try:
            handle.truncate(0)
            handle.write((json.dumps({"format": FORMAT, "inputs": inputs}) + "\n").encode())
            handle.flush()
        except OSError as exc:
            raise _output_error(path, exc) from None
        return cls(path, inputs, {}, handle)

    def add(self, image: DoneImage) -> None:
        """Record a finished image; on disk (flushed) when this returns."""
        try:
            self._handle.write((json.dumps(asdict(image)) + "\n").encode())
            self._handle.flush()
        except OSError as exc:
            raise _output_error(self.path, exc) from None
        self.done[image.key] = image

    def finished(self, keys: list[tuple[str, int]]) -> list[DoneImage]:
        """The finished images among ``keys``, in that order."""
        return [self.done[k] for k in keys if k in self.done]

    def close(self) -> None:
        if not self._handle.closed:
            try:
                self._handle.close()
            except OSError:
                pass  # what could not be flushed is re-done on the next run

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)  # still locked: a run waiting to open it finds it gone
        self.close()


def _open_locked(path: Path):
    """The progress file opened to read and append (created when missing), locked for this run:
    two runs writing the same --out both recomputed every image. Raises ProgressMismatch naming
    the process that holds the lock, OutputError when it cannot be opened."""
    while True:
        try:
            handle = open(path, "a+b")
        except OSError as exc:
            raise _output_error(path, exc) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(handle)
            handle.close()
            raise ProgressMismatch(f"{path} is in use by another hcviewer predict writing the same --out "
                                   f"({holder}); wait for it to finish, or stop it, or choose another --out") from None
        if os.fstat(handle.fileno()).st_nlink:
            return handle
        handle.close()  # removed by the run that held it, which finished meanwhile: open the new one


def _lock_holder(handle) -> str:
    """'process PID' of the lock on an open file from the kernel's table (Linux), else a phrase."""
    stat = os.fstat(handle.fileno())
    file_id = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as locks:
            for fields in map(str.split, locks):
                if fields[1:2] == ["FLOCK"] and fields[5:6] == [file_id]:
                    return f"process {fields[4]}"
    except OSError:
        pass
    return "another process"


def _read(path: Path, handle) -> bytes:
    try:
        handle.seek(0)
        return handle.read()
    except OSError as exc:
        raise ProgressMismatch(f"{path}: cannot be read ({exc.strerror or exc}); move it away, "
                               "or pass --restart") from None


def _parse(data: bytes) -> tuple[dict | None, dict[tuple[str, int], DoneImage], int]:
    """(header, finished images, bytes up to the end of the last whole line)."""
    header, done, good = None, {}, 0
    for line in data.splitlines(keepends=True):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            break  # a line cut short: this and anything after it is redone
        if header is None:
            header = record
        else:
            try:
                image = DoneImage(str(record["image"]), int(record["image_id"]), list(record["records"]),
                                  [str(s) for s in record.get("skipped", [])])
            except (KeyError, TypeError, ValueError):
                break
            done[image.key] = image
        good += len(line)
    return header, done, good


def _output_error(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"cannot write the progress file {path}: {exc.strerror or exc}; "
                       "free disk space or choose another --out folder")
