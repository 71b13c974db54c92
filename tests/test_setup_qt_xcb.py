"""scripts/check_qt_xcb.sh (run by scripts/setup_env.sh): the libraries Qt's xcb plugin cannot
find are installed with apt-get as root, or named with the exact apt-get command. Runs the real
script against stand-ins for ldd, id, apt-get and the environment's python."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_qt_xcb.sh"
MISSING = ("libxcb-icccm.so.4", "libxkbcommon-x11.so.0", "libxcb-cursor.so.0", "libX11-xcb.so.1")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _executable(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path):
    """A fake machine: bin/ with ldd, id and apt-get stand-ins; venv/bin/python naming a plugin."""
    bin_dir, venv = tmp_path / "bin", tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    plugin = tmp_path / "libqxcb.so"
    plugin.write_bytes(b"")
    _executable(venv / "bin" / "python", f"echo {plugin}\n")
    lines = "".join(f"\techo '\t{name} => not found'\n" for name in MISSING)
    _executable(bin_dir / "ldd", f"if [ ! -f {tmp_path}/installed ]; then\n{lines}fi\necho '\tlibc.so.6 => /lib/libc.so.6'\n")
    _executable(bin_dir / "apt-get", f'echo "$@" >> {tmp_path}/apt.log\n'
                                     f'case "$1" in install) touch {tmp_path}/installed;; esac\n')

    def run(uid: int, apt_fails: bool = False) -> subprocess.CompletedProcess:
        _executable(bin_dir / "id", f"echo {uid}\n")
        if apt_fails:  # e.g. no network
            _executable(bin_dir / "apt-get", f'echo "$@" >> {tmp_path}/apt.log\nexit 100\n')
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        return subprocess.run(["bash", str(SCRIPT), str(venv)], capture_output=True, text=True, env=env, timeout=60)

    run.log = tmp_path / "apt.log"
    run.installed = tmp_path / "installed"
    return run


PACKAGES = "libx11-xcb1 libxcb-cursor0 libxcb-icccm4 libxkbcommon-x11-0"


def test_a_user_is_told_the_exact_apt_command_and_setup_stops(machine):
    """It exited 0, so 'setup_env.sh && hcviewer' still reached Qt's abort (exit 134)."""
    result = machine(uid=1000)
    assert result.returncode == 1
    assert f"sudo apt-get install {PACKAGES}" in result.stderr
    assert "libxcb-icccm.so.4" in result.stderr and not machine.log.exists()


def test_root_whose_install_fails_is_told_the_command_and_setup_stops(machine):
    result = machine(uid=0, apt_fails=True)
    assert result.returncode == 1
    assert f"sudo apt-get install {PACKAGES}" in result.stderr and "update" in machine.log.read_text()


def test_root_installs_the_missing_libraries(machine):
    result = machine(uid=0)
    assert result.returncode == 0
    assert f"install -y -qq {PACKAGES}" in machine.log.read_text()
    assert "cannot load" not in result.stderr


def test_nothing_is_said_when_the_plugin_loads(machine):
    machine.installed.touch()
    result = machine(uid=1000)
    assert result.returncode == 0 and result.stderr == "" and not machine.log.exists()


def test_setup_env_runs_the_check_and_stops_when_it_fails():
    setup = (REPO / "scripts" / "setup_env.sh").read_text()
    assert "set -euo pipefail" in setup
    assert '\nbash "$repo/scripts/check_qt_xcb.sh" "$venv"\n' in setup  # no "|| true": its failure ends setup
