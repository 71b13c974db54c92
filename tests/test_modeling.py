"""The hypercolumn network: the efficient per-tap form equals the explicit hypercolumn.

Everything runs in float64 so that "equal" means equal up to rounding, not up to a loose
tolerance that could hide a wrong convention.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_person_config
from hcviewer.modeling import HypercolumnModel, build_hypercolumn, build_person_model
from hcviewer.modeling.grid import grid_interpolation_weights
from hcviewer.modeling.heads import HypercolumnHead

ROIS = torch.tensor(
    [
        [0, 4.0, 6.0, 90.0, 60.0],
        [0, -20.0, 10.0, 40.0, 70.0],  # partly outside the image
        [0, 30.5, 20.25, 31.5, 21.0],  # smaller than a pixel
    ],
    dtype=torch.float64,
)


def _randomised(model: HypercolumnModel) -> HypercolumnModel:
    """Non-trivial weights (the default init is near zero) in float64, eval mode."""
    torch.manual_seed(1)
    with torch.no_grad():
        for head in model.heads.values():
            head.bias.normal_()
            for conv in head.classifiers.values():
                conv.weight.normal_(std=0.3)
    return model.double().eval()


@pytest.fixture(scope="module")
def model_and_features() -> tuple[HypercolumnModel, dict[str, list[torch.Tensor]]]:
    torch.manual_seed(0)
    model = _randomised(build_hypercolumn(tiny_person_config(grid_size=3, output_size=12)))
    image = torch.randn(3, 80, 112, dtype=torch.float64)
    with torch.no_grad():
        return model, model.backbone([image])


def explicit_hypercolumn(model: HypercolumnModel, features, rois, taps) -> torch.Tensor:
    """[N, sum of tap channels, S, S]: every tap's box features, cut by torchvision's roi_align
    and bilinearly upsampled to the output size, concatenated (paper section 3.1, done the slow
    way); the box-level tap: the network's top on the box's roi_align cut, constant over the box."""
    from torchvision.ops import roi_align

    s = model.config.output_size
    columns = []
    for tap in taps:
        spec = model.backbone.tap_specs[tap]
        feature_map = torch.stack(features[spec.node]).contiguous()  # images of one size
        cut = roi_align(feature_map, rois, spec.roi_size, 1.0 / spec.stride, sampling_ratio=2, aligned=True)
        if spec.box_level:
            vector = torch.nn.Sequential.forward(model.backbone.box_top.head, cut).mean(dim=(2, 3))  # its own layers
            columns.append(vector[:, :, None, None].expand(-1, -1, s, s))
        else:
            columns.append(F.interpolate(cut, size=(s, s), mode="bilinear", align_corners=False))
    return torch.cat(columns, dim=1)


def explicit_logits(head: HypercolumnHead, hypercolumn: torch.Tensor, taps, set_index=None) -> torch.Tensor:
    """One linear classifier per grid cell on the concatenated hypercolumn, then the grid
    interpolation of those K*K score maps: [N, C, S, S]."""
    n = hypercolumn.shape[0]
    k2, c = head.grid_size**2, head.task_channels
    weight = torch.cat([head.classifiers[t].weight[:, :, 0, 0] for t in taps], dim=1)  # [K2*G*C, D]
    weight = weight.view(k2, head.num_sets, c, -1)
    sets = torch.zeros(n, dtype=torch.long) if set_index is None else set_index
    per_box = weight.permute(1, 0, 2, 3)[sets]  # [N, K2, C, D]
    scores = torch.einsum("nkcd,ndyx->nkcyx", per_box, hypercolumn)
    grid_weights = grid_interpolation_weights(head.grid_size, head.output_size).double()
    mixed = torch.einsum("nkcyx,kyx->ncyx", scores, grid_weights)
    return mixed + head.bias[sets][:, :, None, None]


@pytest.mark.parametrize("task", ["figure_ground", "parts", "keypoints"])
def test_per_tap_form_equals_the_explicit_hypercolumn(model_and_features, task: str) -> None:
    model, features = model_and_features
    taps = model.taps
    with torch.no_grad():
        logits = model.forward_boxes(features, ROIS).logits[task]
        prepared = model.forward_boxes(features, ROIS, classifiers=model.pixel_classifiers()).logits[task]
    with torch.no_grad():
        expected = explicit_logits(model.heads[task], explicit_hypercolumn(model, features, ROIS, taps), taps)
    assert logits.shape == (3, model.config.task_channels(task), 12, 12)
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(prepared, logits, rtol=1e-9, atol=1e-9)


def test_single_classifier_equals_one_linear_classifier_on_the_hypercolumn() -> None:
    """K=1: the paper's statement verbatim, with no grid at all."""
    torch.manual_seed(0)
    model = _randomised(build_hypercolumn(tiny_person_config(grid_size=1, output_size=10, tasks=("figure_ground",))))
    image = torch.randn(3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        features = model.backbone([image])
        logits = model.forward_boxes(features, ROIS).logits["figure_ground"]
    head = model.heads["figure_ground"]
    hypercolumn = explicit_hypercolumn(model, features, ROIS, model.taps)
    weight = torch.cat([head.classifiers[t].weight[:, :, 0, 0] for t in model.taps], dim=1)  # [1, D]
    expected = torch.einsum("cd,ndyx->ncyx", weight, hypercolumn) + head.bias[0][:, None, None]
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)


def test_tap_subset_is_bias_plus_those_contributions(model_and_features) -> None:
    model, features = model_and_features
    with torch.no_grad():
        full = model.forward_boxes(features, ROIS, return_contributions=True)
        subset = model.forward_boxes(features, ROIS, taps=("s8", "top"))
    for task in model.tasks:
        contributions = full.contributions[task]
        assert set(contributions) == set(model.taps)
        bias = full.bias[task]
        assert bias.shape == (3, model.config.task_channels(task))
        bias = bias[:, :, None, None]
        torch.testing.assert_close(full.logits[task], bias + sum(contributions.values()), rtol=1e-9, atol=1e-9)
        expected = bias + contributions["s8"] + contributions["top"]
        torch.testing.assert_close(subset.logits[task], expected, rtol=1e-9, atol=1e-9)


def test_unknown_or_empty_tap_selection_is_rejected(model_and_features) -> None:
    model, features = model_and_features
    with pytest.raises(ValueError, match="unknown taps.*fc7"):
        model.forward_boxes(features, ROIS, taps=("fc7",))
    with pytest.raises(ValueError, match="at least one tap"):
        model.forward_boxes(features, ROIS, taps=())


def test_class_specific_head_uses_each_boxs_classifier_set() -> None:
    torch.manual_seed(0)
    classes = ("person", "dog", "cat")
    model = _randomised(build_hypercolumn(tiny_person_config(
        class_names=classes, class_specific=True, tasks=("figure_ground", "parts"), output_size=10)))
    image = torch.randn(3, 64, 96, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        features = model.backbone([image])
        logits = model.forward_boxes(features, ROIS, class_index=labels).logits
        with pytest.raises(ValueError, match="class index"):
            model.forward_boxes(features, ROIS)
    for task in ("figure_ground", "parts"):
        head = model.heads[task]
        hypercolumn = explicit_hypercolumn(model, features, ROIS, model.taps)
        torch.testing.assert_close(logits[task], explicit_logits(head, hypercolumn, model.taps, labels))
        # And each box really depends on its own label: relabelling changes the output.
        with torch.no_grad():
            other = model.forward_boxes(features, ROIS, class_index=torch.tensor([0, 1, 2])).logits[task]
        assert not torch.allclose(other, logits[task])


def test_forward_is_trunk_then_boxes_and_trains() -> None:
    torch.manual_seed(0)
    model = build_hypercolumn(tiny_person_config(output_size=8))
    images = [torch.randn(3, 64, 64), torch.randn(3, 48, 64)]
    rois = torch.tensor([[0, 2.0, 2.0, 40.0, 50.0], [1, 10.0, 5.0, 60.0, 45.0]])
    out = model(images, rois)
    assert {task: tuple(v.shape) for task, v in out.items()} == {
        "figure_ground": (2, 1, 8, 8), "parts": (2, 4, 8, 8), "keypoints": (2, 17, 8, 8)}
    loss = sum(v.square().mean() for v in out.values())
    loss.backward()
    for head in model.heads.values():
        assert all(conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
                   for conv in head.classifiers.values())
    # Box 1 reads image 1 only: changing image 0 leaves it unchanged.
    model.eval()
    with torch.no_grad():
        before = model(images, rois)["keypoints"]
        images[0] += 1.0
        after = model(images, rois)["keypoints"]
    torch.testing.assert_close(before[1], after[1])
    assert not torch.allclose(before[0], after[0])


def test_config_round_trips_and_validates() -> None:
    config = tiny_person_config(taps=("s4", "top"))
    assert type(config).from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="tasks"):
        tiny_person_config(tasks=("depth",))
    with pytest.raises(ValueError, match="part_names"):
        tiny_person_config(part_names=())
    with pytest.raises(ValueError, match="skeleton"):
        tiny_person_config(skeleton=((0, 99),))
    with pytest.raises(ValueError, match="unknown configuration keys"):
        type(config).from_dict({**config.to_dict(), "colour": "red"})


def test_model_fills_in_default_taps_and_rejects_bad_ones() -> None:
    model = build_person_model(grid_size=2)
    assert model.taps == ("s4", "s8", "s16", "top")
    assert model.config.taps == model.taps  # the checkpoint records the taps actually used
    assert model.tasks == ("figure_ground", "keypoints")
    with pytest.raises(KeyError, match="unknown tap 'pool5'"):
        build_hypercolumn(tiny_person_config(taps=("s4", "pool5")))
    with pytest.raises(ValueError, match="repeat"):
        build_hypercolumn(tiny_person_config(taps=("s4", "s4")))
