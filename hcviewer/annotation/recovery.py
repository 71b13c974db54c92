"""Autosave files and crash recovery (Qt-free): the recovery folder shared by every hcviewer.

Each process autosaves its unsaved edits to its own file in the folder
(``~/.cache/hcviewer/recovery/``, or ``$HCVIEWER_RECOVERY_DIR``), named ``<pid>-<time ns>.json``;
a clean exit deletes it. A file whose process is gone was left by a crash (or an interrupted
exit) and is offered back at the next start.

Several hcviewer processes may share the folder at once, so every step tolerates files that
vanish between listing and reading (another process recovered or discarded them), and recovering
*claims* a file by renaming it to the claiming process's own name before reading it: exactly one
process gets it, and the recovered edits stay on disk until they are saved. A file that cannot be
read is moved aside as ``<name>.corrupt`` (kept for the user, never offered again), and the
temporary files of writes interrupted by a kill are removed once they are old.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

RECOVERY_ENV = "HCVIEWER_RECOVERY_DIR"
STALE_TMP_SECONDS = 600  # a write in progress takes well under a second; older .tmp files are leftovers


class RecoveryError(ValueError):
    """A recovery file that cannot be restored; the message names it and what became of it."""


def default_recovery_dir() -> Path:
    return Path(os.environ.get(RECOVERY_ENV) or Path.home() / ".cache" / "hcviewer" / "recovery")


def recovery_extra(annotation_path: Path | None) -> dict:
    """What a recovery file holds besides the annotation (under the key ``hcviewer``)."""
    return {"recovery": {"pid": os.getpid(), "annotation_path": str(annotation_path or ""), "saved_at": time.time()}}


def recovered_annotation_path(extra: dict) -> Path | None:
    """The annotation file the recovered edits belong to (None: never saved); ValueError when
    the recovery record is not what ``recovery_extra`` writes."""
    record = extra.get("recovery", {})
    saved_to = record.get("annotation_path", "") if isinstance(record, dict) else None
    if not isinstance(saved_to, str):
        raise ValueError(f"its 'recovery' record is not an object with a text 'annotation_path': {record!r:.200}")
    return Path(saved_to) if saved_to else None


@dataclass
class RecoverySession:
    """This process's autosave file; ``modified`` is set by edits and cleared by saves,
    ``autosaved`` once the file holds the latest edits, ``keep_on_close`` after an interrupted exit."""

    folder: Path
    path: Path = field(init=False)
    modified: bool = False
    autosaved: bool = True
    keep_on_close: bool = False

    def __post_init__(self) -> None:
        self.path = self.folder / f"{os.getpid()}-{time.time_ns()}.json"

    def left_behind(self) -> Path | None:
        """The newest recovery file of a process that is gone, else None; stale temporary
        files are removed on the way."""
        self._remove_stale_tmp()
        candidates = []
        for path in _list(self.folder, "*.json"):
            modified = _mtime(path)
            if modified is not None and path != self.path and not _process_alive(_pid_of(path)):
                candidates.append((modified, path))
        return max(candidates)[1] if candidates else None

    def claim(self, path: Path) -> Path:
        """Make ``path`` this process's autosave file (an atomic rename: one process wins)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, self.path)
        except FileNotFoundError:
            raise RecoveryError(f"The recovery file {path} is gone: another hcviewer recovered or "
                                "discarded it meanwhile.") from None
        except OSError as exc:
            raise RecoveryError(f"Cannot take the recovery file {path}: {exc.strerror or exc}. Check the "
                                f"permissions of {self.folder}.") from None
        return self.path

    def set_aside(self, claimed: Path, original: Path, reason: str) -> RecoveryError:
        """A claimed file that could not be read goes to ``<original name>.corrupt``; returns
        the error that tells the user."""
        aside = original.with_name(original.name + ".corrupt")
        try:
            os.replace(claimed, aside)
        except OSError as exc:
            return RecoveryError(f"The recovery file {original} cannot be restored ({reason}), and it could not "
                                 f"be moved aside ({exc.strerror or exc}).")
        return RecoveryError(f"The recovery file {original} cannot be restored ({reason}). It was moved to "
                             f"{aside} and will not be offered again.")

    def remove_own(self) -> None:
        self.path.unlink(missing_ok=True)
        self.autosaved = True

    def _remove_stale_tmp(self) -> None:
        now = time.time()
        for path in _list(self.folder, ".*.tmp"):
            modified = _mtime(path)
            if modified is not None and now - modified > STALE_TMP_SECONDS:
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass  # not ours to remove (permissions): harmless, it is never offered


def _list(folder: Path, pattern: str) -> list[Path]:
    try:
        return list(folder.glob(pattern))
    except OSError:  # the folder is missing or unreadable: nothing to offer
        return []


def _mtime(path: Path) -> float | None:
    """Modification time, None when the file vanished (another process took it)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _pid_of(path: Path) -> int | None:
    """The process that wrote a recovery file (its name starts with the pid)."""
    head = path.stem.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _process_alive(pid: int | None) -> bool:
    if pid is None or pid == 0:
        return False
    if pid == os.getpid():
        return True  # another project in this process (tests, a second window)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False  # not a process id at all
    return True
