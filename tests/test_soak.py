"""The app's soak test in its short form (benchmarks/soak_app.py --quick): the real window through
a whole session (30 images, segment all, taps, compare, undo/redo, save, reopen). Asserted here:
it completes and the saved annotation reopens with the same objects; its timings and memory are
the benchmark's to report (docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_soak_completes_and_the_saved_annotation_reopens_the_same(tmp_path):
    report_path = tmp_path / "soak.json"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak_app.py"), "--quick", "--json", str(report_path)],
                         capture_output=True, text=True, timeout=280, env=env, cwd=tmp_path)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    report = json.loads(report_path.read_text())
    assert [p["name"].split(" ")[0] for p in report["phases"]] == [
        "open", "segment", "accept", "toggle", "compare", "undo/redo", "save", "reopen"]
    assert report["saved_objects"] == report["reopened_objects"] == 2 * report["plan"]["images"]
    assert report["saved_accepted"] == report["reopened_accepted"] > 0
