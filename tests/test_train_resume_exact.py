"""Stopping and continuing training never changes the result and never shows a traceback: Ctrl+C
mid-epoch continues from the next step, a crash from the last periodic save, changed data and
hostile resume states are refused with a message, and an output folder that cannot be written
is found before any training."""

from __future__ import annotations

import os
import pickle
import signal

import pytest
import torch
from safetensors import SafetensorError
from test_train_trainer import tiny_config

from hcviewer.data.synthetic import make_synthetic_dataset
from hcviewer.fileio import OutputError
from hcviewer.train import cli, trainer as trainer_module
from hcviewer.train.run_state import ResumeStateError, StopRequest, data_fingerprint, describe_data_change
from hcviewer.train.trainer import Trainer, TrainingInterrupted


@pytest.fixture(scope="module")
def scenes():
    return make_synthetic_dataset(6, seed=3, image_size=(96, 128))  # 3 steps per epoch of 2 images


@pytest.fixture(scope="module")
def straight(scenes, tmp_path_factory):
    """An uninterrupted run of 2 epochs: the weights and epoch rows every other run must match."""
    trainer = Trainer(tiny_config(epochs=2), scenes, None, tmp_path_factory.mktemp("straight"), progress=False)
    trainer.fit()
    return trainer


def count_steps(trainer: Trainer, monkeypatch, then=None) -> list[int]:
    """Count the trainer's steps; ``then(n)`` runs after the n-th one (1-based)."""
    steps = []
    original = trainer._step

    def step(samples):
        losses = original(samples)
        steps.append(len(steps) + 1)
        if then is not None:
            then(len(steps))
        return losses

    monkeypatch.setattr(trainer, "_step", step)
    return steps


def assert_same_weights(a: Trainer, b: Trainer) -> None:
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[name]), name


@pytest.mark.slow
def test_ctrl_c_mid_epoch_then_resume_gives_the_uninterrupted_result(scenes, straight, tmp_path, monkeypatch):
    first = Trainer(tiny_config(epochs=2), scenes, None, tmp_path, progress=False)
    # A real SIGINT during the 2nd step of epoch 2: the step is finished, then the run stops.
    count_steps(first, monkeypatch, then=lambda n: n == 5 and signal.raise_signal(signal.SIGINT))
    with pytest.raises(TrainingInterrupted, match="interrupted in epoch 2 after step 2 of 3"):
        first.fit()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler given back

    resumed = Trainer(tiny_config(epochs=2), scenes, None, tmp_path, progress=False)
    resumed.resume()
    assert (resumed.start_epoch, resumed.start_step) == (1, 2)
    steps = count_steps(resumed, monkeypatch)
    resumed.fit()
    assert steps == [1]  # only the step that was not done (30 -> 27 steps in the report)
    assert_same_weights(straight, resumed)
    assert resumed.history[-1].losses == straight.history[-1].losses  # the epoch's mean loss too


@pytest.mark.slow
def test_a_crash_mid_epoch_continues_from_the_last_periodic_save(scenes, straight, tmp_path, monkeypatch):
    first = Trainer(tiny_config(epochs=2), scenes, None, tmp_path, progress=False)
    first.resume_every_s = 0  # save after every step

    def crash(n: int) -> None:
        if n == 4:
            raise MemoryError("the machine ran out of memory")

    count_steps(first, monkeypatch, then=crash)
    with pytest.raises(MemoryError):
        first.fit()
    resumed = Trainer(tiny_config(epochs=2), scenes, None, tmp_path, progress=False)
    resumed.resume()
    # Step 4 (the first of epoch 2) ran but crashed before its save: it is done again.
    assert (resumed.start_epoch, resumed.start_step) == (1, 0)
    resumed.fit()
    assert_same_weights(straight, resumed)


def test_a_second_ctrl_c_stops_at_once_but_never_inside_the_update():
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested  # the first only asks
        stop.updating = True
        signal.raise_signal(signal.SIGINT)  # waits for the update to end
        stop.updating = False
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_notices_changed_data(scenes, tmp_path):
    Trainer(tiny_config(epochs=1), scenes, None, tmp_path, progress=False).fit()
    grown = make_synthetic_dataset(7, seed=3, image_size=(96, 128))
    grown.images = grown.images[-1:] + grown.images[:-1]  # one image added in front
    with pytest.raises(ValueError, match=r"the data changed since this run started \(training images 6 -> 7\)"
                                         r".*--allow-changed-data"):
        Trainer(tiny_config(epochs=2), grown, None, tmp_path, progress=False).resume()
    allowed = Trainer(tiny_config(epochs=2), grown, None, tmp_path, progress=False)
    allowed.resume(allow_changed_data=True)
    assert allowed.start_epoch == 1

    reordered = make_synthetic_dataset(6, seed=3, image_size=(96, 128))
    reordered.images.reverse()
    change = describe_data_change(data_fingerprint(scenes, None), data_fingerprint(reordered, None))
    assert change == "training images 6 -> 6 (other images or order)"
    assert describe_data_change(data_fingerprint(scenes, scenes), data_fingerprint(scenes, scenes)) is None


class RunsCode:
    def __reduce__(self):
        return os.system, ("touch PWNED",)


@pytest.mark.parametrize("content", ["malicious", "garbage", "not a dict"])
def test_a_hostile_or_damaged_resume_state_is_refused_with_a_message(scenes, tmp_path, monkeypatch, content):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "resume.pt"
    if content == "malicious":
        torch.save({"model": RunsCode()}, path)
    elif content == "garbage":
        path.write_bytes(b"PK\x03\x04 not really a zip" * 10)
    else:
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    trainer = Trainer(tiny_config(epochs=1), scenes, None, tmp_path, progress=False)
    with pytest.raises(ResumeStateError) as refused:
        trainer.resume()
    message = str(refused.value)
    assert str(path) in message and "weights_only" not in message and "Unpickl" not in message
    assert not (tmp_path / "PWNED").exists()


def test_hcviewer_train_resume_refuses_a_malicious_state_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    common = ["--synthetic", "4", "--taps", "s8,top", "--grid", "2", "--image-size", "96", "--no-pretrained",
              "--device", "cpu", "--tasks", "figure_ground", "--val-fraction", "0"]
    assert cli.main(["train", *common, "--epochs", "1", "--out", str(out)]) == 0
    torch.save({"model": RunsCode()}, out / "resume.pt")
    capsys.readouterr()
    assert cli.main(["resume", "--out", str(out), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [err] = [line for line in err.splitlines() if "error" in line]
    assert err.startswith("hcviewer-train: error: ")
    assert "not a resume state written by hcviewer-train" in err and "weights_only" not in err
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------------------ output folder
def test_a_read_only_out_is_found_before_the_data_loads(tmp_path, monkeypatch, capsys):
    loaded = []
    monkeypatch.setattr(cli, "load_sources", lambda *args, **kwargs: loaded.append(args))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("hcviewer.fileio.tempfile.mkstemp", read_only)
    assert cli.main(["train", "--synthetic", "2", "--out", str(tmp_path / "run"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"hcviewer-train: error: cannot write the training outputs in {tmp_path / 'run'}: "
                   f"Permission denied in {tmp_path / 'run'}; choose a folder you can write to")
    assert loaded == []


def test_a_disk_that_fills_up_during_training_is_a_message(scenes, tmp_path, monkeypatch):
    def full(path, *args, **kwargs):
        raise SafetensorError(f'Error while serializing: I/O error: No space left on device (os error 28) '
                              f'at path "{path}.tmp"')

    monkeypatch.setattr(trainer_module, "save_checkpoint", full)
    trainer = Trainer(tiny_config(epochs=2), scenes, None, tmp_path, progress=False)
    with pytest.raises(OutputError) as failed:
        trainer.fit()
    assert str(failed.value) == (f"cannot write {tmp_path / 'last.safetensors'}: No space left on device. "
                                 "Nothing of this run is saved yet: free disk space (or choose another --out) "
                                 "and start it again")
    (tmp_path / "resume.pt").write_bytes(b"")  # a state of an earlier epoch
    with pytest.raises(OutputError, match=r"No space left on device\. resume\.pt keeps the last saved state: "
                                          r"free disk space, then continue with: hcviewer-train resume --out"):
        trainer.fit()
