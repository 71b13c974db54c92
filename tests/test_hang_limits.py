"""A hanging test fails fast and shows where it hangs (issue 10): the project's pytest settings
(pytest-timeout and faulthandler, pyproject.toml) run on deliberately hanging tests in a
subprocess, with only the durations shortened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

HANGS = '''
import ctypes
import threading


def test_waits_forever():
    threading.Event().wait()


def test_holds_the_gil_forever():
    # A C call that keeps the GIL, as a Qt destructor waiting for a mutex that the GUI thread
    # holds while it waits for the GIL (the deadlock of issue 10): no Python thread can run.
    ctypes.PyDLL(None).sleep(3600)
'''


def _run_hanging_test(tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_hangs.py").write_text(HANGS)
    command = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider",
               "-o", "timeout=3", "-o", "faulthandler_timeout=6", f"{tmp_path / 'test_hangs.py'}::{name}"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_a_test_that_waits_forever_fails_with_the_stacks(tmp_path):
    run = _run_hanging_test(tmp_path, "test_waits_forever")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Timeout" in output and "in test_waits_forever" in output


def test_a_deadlock_holding_the_gil_ends_the_run_with_the_stacks(request, tmp_path):
    # pytest-timeout's thread needs the GIL; only faulthandler's C watchdog can end this hang.
    if not request.config.getini("faulthandler_exit_on_timeout"):
        pytest.skip("pyproject.toml does not set faulthandler_exit_on_timeout: a GIL deadlock would hang CI")
    run = _run_hanging_test(tmp_path, "test_holds_the_gil_forever")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Timeout" in output and "in test_holds_the_gil_forever" in output
