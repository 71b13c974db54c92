"""The checkpoint format: round trips and one clear CheckpointError per kind of bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import tiny_person_config
from hcviewer.modeling import (
    CheckpointError,
    build_hypercolumn,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from hcviewer.modeling.checkpoint import HEADER_KEY


def _rewrite(source: Path, target: Path, edit_header=None, edit_state=None) -> Path:
    """Copy a checkpoint with its header and/or tensors changed."""
    with safe_open(str(source), framework="pt") as f:
        header = json.loads(f.metadata()[HEADER_KEY])
        state = {key: f.get_tensor(key) for key in f.keys()}
    if edit_header:
        edit_header(header)
    if edit_state:
        edit_state(state)
    save_file(state, str(target), metadata={HEADER_KEY: json.dumps(header)})
    return target


def test_round_trip_float32_is_exact(tiny_checkpoint: Path) -> None:
    model, info = load_checkpoint(tiny_checkpoint)
    assert info.path == tiny_checkpoint
    assert info.config == tiny_person_config(taps=("s4", "s8", "s16", "top"))
    assert info.training == {"note": "random init, tests"}
    assert info.weights_dtype == "float32"
    assert not model.training

    again = tiny_checkpoint.with_name("again.safetensors")
    save_checkpoint(again, model, training={"epochs": 3}, metrics={"mean_iou": 0.5})
    reloaded, info2 = load_checkpoint(again)
    assert info2.metrics == {"mean_iou": 0.5} and info2.training == {"epochs": 3}
    for (name, a), (name2, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert name == name2
        assert torch.equal(a, b), name


def test_round_trip_float16_halves_the_file_and_loads_as_float32(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model, _ = load_checkpoint(tiny_checkpoint)
    half = save_checkpoint(tmp_path / "half.safetensors", model, dtype=torch.float16)
    assert half.stat().st_size < 0.6 * tiny_checkpoint.stat().st_size
    reloaded, info = load_checkpoint(half)
    assert info.weights_dtype == "float16"
    for name, tensor in model.state_dict().items():
        loaded = reloaded.state_dict()[name]
        assert loaded.dtype == tensor.dtype, name
        if tensor.is_floating_point():
            torch.testing.assert_close(loaded, tensor.half().to(tensor.dtype), rtol=0, atol=0)
        else:
            assert torch.equal(loaded, tensor)


def test_save_is_atomic_and_leaves_no_temporary_files(tiny_checkpoint: Path) -> None:
    model, _ = load_checkpoint(tiny_checkpoint)
    save_checkpoint(tiny_checkpoint, model)  # overwrite in place
    assert [p.name for p in tiny_checkpoint.parent.iterdir()] == [tiny_checkpoint.name]


def test_read_info_reads_the_header_only(tiny_checkpoint: Path) -> None:
    info = read_checkpoint_info(tiny_checkpoint)
    assert info.config.tasks == ("figure_ground", "parts", "keypoints")
    assert info.config.keypoint_names[0] == "nose"


def _assert_names_file(exc: pytest.ExceptionInfo, path: Path, *words: str) -> None:
    message = str(exc.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.safetensors"
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    _assert_names_file(exc, path, "no such")


def test_truncated_file(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = tiny_checkpoint.read_bytes()
    for cut in (len(data) // 2, 100, 5):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(path)
        _assert_names_file(exc, path, "truncated")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 this is a zip", "épreuve ✓ not a model".encode()])
def test_not_a_safetensors_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint_info(path)
    _assert_names_file(exc, path, "not a readable safetensors")


def test_pickled_torch_file_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    _assert_names_file(exc, path)


def test_safetensors_without_header(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    _assert_names_file(exc, path, "without an hcviewer header")


def test_header_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path), metadata={HEADER_KEY: "{not json"})
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    _assert_names_file(exc, path, "not valid JSON")


def test_wrong_format_version(tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = _rewrite(tiny_checkpoint, tmp_path / "v99.safetensors",
                    edit_header=lambda h: h.update(format_version=99))
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint_info(path)
    _assert_names_file(exc, path, "version 99")


def test_other_format_name(tiny_checkpoint: Path, tmp_path: Path) -> None:
    path = _rewrite(tiny_checkpoint, tmp_path / "other.safetensors",
                    edit_header=lambda h: h.update(format="someone-elses-format"))
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint_info(path)
    _assert_names_file(exc, path, "someone-elses-format")


def test_invalid_configuration_in_header(tiny_checkpoint: Path, tmp_path: Path) -> None:
    def break_config(header):
        header["config"]["tasks"] = ["figure_ground", "depth"]

    path = _rewrite(tiny_checkpoint, tmp_path / "badconfig.safetensors", edit_header=break_config)
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint_info(path)
    _assert_names_file(exc, path, "configuration")

    def unknown_backbone(header):
        header["config"]["backbone"] = "resnet9000"

    path = _rewrite(tiny_checkpoint, tmp_path / "backbone.safetensors", edit_header=unknown_backbone)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    _assert_names_file(exc, path, "resnet9000")


def test_weights_that_do_not_match_the_header(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # The header says a 5x5 grid, the weights are for the saved 3x3 grid: shapes differ.
    path = _rewrite(tiny_checkpoint, tmp_path / "grid.safetensors",
                    edit_header=lambda h: h["config"].update(grid_size=5))
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    _assert_names_file(exc, path, "shape")

    # A head the header names but the weights lack.
    def drop_keypoints(state):
        for key in [k for k in state if k.startswith("heads.keypoints.")]:
            del state[key]

    path = _rewrite(tiny_checkpoint, tmp_path / "missing.safetensors", edit_state=drop_keypoints)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    _assert_names_file(exc, path, "missing", "heads.keypoints")

    # Weights of another backbone under this header.
    other = build_hypercolumn(tiny_person_config(backbone="alexnet"))
    alexnet_path = save_checkpoint(tmp_path / "alexnet.safetensors", other)
    path = _rewrite(alexnet_path, tmp_path / "swapped.safetensors",
                    edit_header=lambda h: h.update(config=read_checkpoint_info(tiny_checkpoint).config.to_dict()))
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    _assert_names_file(exc, path, "do not match")
