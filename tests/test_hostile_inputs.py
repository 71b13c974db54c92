"""Hostile inputs on the reader side (issue 10): crafted checkpoint headers and weights, box
coordinates that overflow float32, unhashable ids, deep nesting, broken polygons, oversized CSV
fields, duplicate image ids. Each is one clear error of the project's type naming the file and
the record, never another exception, an allocation of gigabytes, or silently wrong output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hcviewer.modeling import CheckpointError, load_checkpoint, read_checkpoint_info
from hcviewer.modeling import checkpoint as checkpoint_module
from hcviewer.modeling.checkpoint import HEADER_KEY


# -------------------------------------------------------------------------------- checkpoints
def _rewrite(source: Path, target: Path, header_text=None, edit_config=None, edit_state=None) -> Path:
    """Copy a checkpoint with its header (as text, or its config edited) and/or tensors changed."""
    with safe_open(str(source), framework="pt") as f:
        header = json.loads(f.metadata()[HEADER_KEY])
        state = {key: f.get_tensor(key) for key in f.keys()}
    if edit_config:
        edit_config(header["config"])
    if edit_state:
        edit_state(state)
    save_file(state, str(target), metadata={HEADER_KEY: header_text or json.dumps(header)})
    return target


@pytest.mark.parametrize("field, value", [
    ("grid_size", 400),
    ("grid_size", 0),
    ("grid_size", 2.5),
    ("output_size", 100000),
    ("max_image_side", 0),
    ("max_image_side", -640),
    ("class_names", [f"class {i}" for i in range(200_000)]),
    ("class_names", "person"),
    ("keypoint_names", ["x" * 10_000] * 17),
    ("part_names", [f"part {i}" for i in range(300)]),
    ("std", [0.0, 0.224, 0.225]),
    ("std", [math.inf, 0.224, 0.225]),
    ("mean", [math.nan, 0.456, 0.406]),
    ("skeleton", [[math.inf, 1]]),
    ("skeleton", [[0, 1]] * 5000),
    ("class_specific", "yes"),
])
def test_header_values_out_of_bounds_are_refused_from_the_header_naming_the_field(
        tiny_checkpoint, tmp_path, field, value):
    path = _rewrite(tiny_checkpoint, tmp_path / "crafted.safetensors",
                    edit_config=lambda config: config.update({field: value}))
    with pytest.raises(CheckpointError) as error:
        read_checkpoint_info(path)  # the header alone: nothing is built or allocated
    assert str(path) in str(error.value) and field in str(error.value)


@pytest.mark.parametrize("header_text, says", [
    ("[1, 2, 3]", "not an object"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (json.dumps({"format": "hcviewer-checkpoint", "format_version": 1, "config": 5}), "config"),
])
def test_malformed_headers_are_checkpoint_errors(tiny_checkpoint, tmp_path, header_text, says):
    path = _rewrite(tiny_checkpoint, tmp_path / "crafted.safetensors", header_text=header_text)
    with pytest.raises(CheckpointError, match=says) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_a_header_claiming_weights_the_file_lacks_is_refused_before_allocating(tiny_checkpoint, tmp_path, monkeypatch):
    """2000 class-specific classifier sets of 256 keypoints are within every single bound, but the
    file holds weights for one set: the real network (about 30 GB) is never built."""
    def many_sets(config):
        config.update(class_names=[f"class {i}" for i in range(2000)], class_specific=True,
                      keypoint_names=[f"k{i}" for i in range(256)], skeleton=[])

    path = _rewrite(tiny_checkpoint, tmp_path / "crafted.safetensors", edit_config=many_sets)
    built_on = []
    real_build = checkpoint_module._build
    monkeypatch.setattr(checkpoint_module, "_build",
                        lambda info, device: built_on.append(device.type) or real_build(info, device))
    with pytest.raises(CheckpointError, match="shape") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)
    assert built_on == ["meta"]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_infinite_weights_are_refused_at_load_naming_the_weight(tiny_checkpoint, tmp_path, bad):
    def poison(state):
        key = next(k for k in state if k.startswith("heads.figure_ground.classifiers."))
        state[key][0, 0, 0, 0] = bad

    path = _rewrite(tiny_checkpoint, tmp_path / "diverged.safetensors", edit_state=poison)
    with pytest.raises(CheckpointError, match="heads.figure_ground.classifiers.*NaN or infinite") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_a_valid_checkpoint_still_loads_after_the_checks(tiny_checkpoint):
    model, info = load_checkpoint(tiny_checkpoint)
    assert info.config.grid_size == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert next(model.parameters()).device.type == "cpu"
    assert np.isfinite(info.config.std).all()
