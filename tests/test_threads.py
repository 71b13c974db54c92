"""The CPU thread policy: who decides the count, and every command applies it before it works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hcviewer.threads import ThreadsError, apply_thread_policy, decide_threads

REPO = Path(__file__).resolve().parents[1]
# A count no test run uses by itself (tests run with OMP_NUM_THREADS=1 or the core count).
ODD = 3


@pytest.fixture(autouse=True)
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for name in ("HCVIEWER_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)


def test_the_flag_wins_then_hcviewer_threads_then_omp_num_threads_then_the_default():
    environ = {"HCVIEWER_THREADS": "2", "OMP_NUM_THREADS": "5"}
    assert decide_threads(4, environ, cores=8) == decide_threads(4, {}, cores=8)
    assert (decide_threads(4, environ, cores=8).threads, decide_threads(4, environ).source) == (4, "--threads")
    assert (decide_threads(None, environ, cores=8).threads, decide_threads(None, environ).source) == (2, "HCVIEWER_THREADS")
    omp = decide_threads(None, {"OMP_NUM_THREADS": "5,2", "HCVIEWER_THREADS": " "}, cores=8)
    assert (omp.threads, omp.source) == (5, "OMP_NUM_THREADS")  # nested OpenMP list: torch gets the first
    default = decide_threads(None, {}, cores=8)
    assert default.source == "default" and 1 <= default.threads <= 8


@pytest.mark.parametrize("environ", [{"HCVIEWER_THREADS": "0"}, {"HCVIEWER_THREADS": "many"},
                                     {"OMP_NUM_THREADS": "-1"}])
def test_a_bad_count_names_where_it_came_from(environ):
    [name] = environ
    with pytest.raises(ThreadsError, match=f"{name} must be a whole number of threads >= 1"):
        decide_threads(None, environ)


def test_applied_in_process_sets_torch_threads(monkeypatch):
    assert apply_thread_policy(ODD).describe() == f"{ODD} CPU threads (--threads)"
    assert torch.get_num_threads() == ODD
    monkeypatch.setenv("HCVIEWER_THREADS", "2")
    apply_thread_policy()
    assert torch.get_num_threads() == 2


def test_applied_before_torch_loads_it_reaches_torch_and_openmp():
    # torch caps OMP_NUM_THREADS at the core count: ask for 1, not torch's default on a multi-core machine
    code = ("import os, sys\nfrom hcviewer.threads import apply_thread_policy\napply_thread_policy(1)\n"
            "assert 'torch' not in sys.modules\nimport torch, threading\n"
            "seen = []\nt = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))\nt.start(); t.join()\n"
            "print(torch.get_num_threads(), seen[0], os.environ['OMP_NUM_THREADS'], os.environ['OMP_WAIT_POLICY'],"
            " os.environ.get('GOMP_SPINCOUNT', '-'))")
    openmp = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    env = {k: v for k, v in __import__("os").environ.items() if k not in openmp}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "1", "PASSIVE", "-"]  # worker threads too (the app computes in one)
    trainer = subprocess.run([sys.executable, "-c", code.replace("apply_thread_policy(1)", "apply_thread_policy(1, True)")],
                             capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert trainer.returncode == 0, trainer.stderr
    assert trainer.stdout.split() == ["1", "1", "1", "PASSIVE", "1000"]  # the trainer's threads spin briefly first


def test_a_users_wait_policy_is_kept(monkeypatch):
    """A user who chose how OpenMP waits keeps it: the trainer sets no spin count that would
    override it."""
    for name in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)  # (restored afterwards, whatever the policy sets)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.delitem(sys.modules, "torch")  # as before torch loads: only the environment is set
    apply_thread_policy(1, short_spin=True)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")
    apply_thread_policy(1, short_spin=True)
    assert os.environ["GOMP_SPINCOUNT"] == "5"


# ------------------------------------------------------------------------------ entry points
def test_hcviewer_app_applies_the_flag_and_the_environment(monkeypatch):
    import types

    from hcviewer.app.cli import main

    seen = []
    module = types.ModuleType("hcviewer.app.main_window")
    module.run_app = lambda args: seen.append(torch.get_num_threads()) or 0
    monkeypatch.setitem(sys.modules, "hcviewer.app.main_window", module)
    assert main(["--threads", str(ODD)]) == 0
    monkeypatch.setenv("HCVIEWER_THREADS", "2")
    assert main([]) == 0
    assert seen == [ODD, 2]


def test_hcviewer_refuses_a_bad_thread_count(monkeypatch, capsys):
    from hcviewer.app.cli import main

    assert main(["--threads", "0"]) == 2
    assert "--threads must be a whole number of threads >= 1" in capsys.readouterr().err
    monkeypatch.setenv("HCVIEWER_THREADS", "lots")
    assert main([]) == 2  # before the window opens
    err = capsys.readouterr().err
    assert err.startswith("hcviewer: error: HCVIEWER_THREADS must be") and "Traceback" not in err


def test_hcviewer_predict_applies_the_flag(tmp_path, tiny_checkpoint, rgb_image):
    import json

    import cv2

    from hcviewer.app.cli import main

    cv2.imwrite(str(tmp_path / "a.png"), rgb_image)
    (tmp_path / "boxes.csv").write_text("image,x0,y0,x1,y1\na.png,10,10,60,60\n")
    assert main(["predict", str(tmp_path / "a.png"), "--boxes", str(tmp_path / "boxes.csv"), "--out",
                 str(tmp_path / "out.json"), "--checkpoint", str(tiny_checkpoint), "--threads", str(ODD)]) == 0
    assert torch.get_num_threads() == ODD and len(json.loads((tmp_path / "out.json").read_text())) == 1


@pytest.mark.parametrize("argv", [["train", "--synthetic", "2", "--out", "OUT"], ["resume", "--out", "OUT"],
                                  ["eval", "--synthetic", "2"], ["ablate", "--synthetic", "2", "--out", "OUT"]])
def test_every_hcviewer_train_command_applies_the_flag_before_it_runs(argv, monkeypatch, tmp_path):
    from hcviewer.train import cli

    seen = []
    monkeypatch.setitem(cli.COMMANDS, argv[0], lambda args: seen.append(torch.get_num_threads()) or 0)
    argv = [str(tmp_path) if a == "OUT" else a for a in argv]
    assert cli.main([*argv, "--threads", str(ODD)]) == 0
    monkeypatch.setenv("HCVIEWER_THREADS", "2")
    assert cli.main(argv) == 0
    assert seen == [ODD, 2]


def test_hcviewer_train_lets_its_threads_spin_briefly_before_torch_loads():
    code = ("import os, sys\nfrom hcviewer.train import cli\n"
            "cli.COMMANDS['eval'] = lambda args: print(os.environ.get('GOMP_SPINCOUNT')) or 0\n"
            "sys.exit(cli.main(['eval', '--synthetic', '2']))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    # (set in the environment only while torch was not loaded yet: afterwards the policy leaves it)
    assert done.stdout.split()[-1:] == ["1000"]


def test_hcviewer_train_refuses_a_bad_thread_count(monkeypatch, capsys):
    from hcviewer.train import cli

    with pytest.raises(SystemExit) as exited:  # argparse's usage error
        cli.main(["eval", "--synthetic", "2", "--threads", "none"])
    assert exited.value.code == 2 and "--threads must be a whole number" in capsys.readouterr().err
    monkeypatch.setenv("HCVIEWER_THREADS", "0")
    assert cli.main(["eval", "--synthetic", "2"]) == 2
    assert capsys.readouterr().err.startswith("hcviewer-train: error: HCVIEWER_THREADS must be a whole number")
