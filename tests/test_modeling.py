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
from hcviewer.modeling.heads import HypercolumnHead, forward_heads

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
def model_and_features() -> tuple[HypercolumnModel, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = _randomised(build_hypercolumn(tiny_person_config(grid_size=3, output_size=12)))
    image = torch.randn(1, 3, 80, 112, dtype=torch.float64)
    with torch.no_grad():
        return model, model.forward_trunk(image)


def explicit_hypercolumn(model: HypercolumnModel, features, rois, taps) -> torch.Tensor:
    """[N, sum of tap channels, S, S]: every tap's box features bilinearly upsampled to the
    output size and concatenated (paper section 3.1, done the slow way)."""
    s = model.config.output_size
    columns = []
    with torch.no_grad():
        for tap, feats in model.box_tap_features(features, rois, taps).items():
            columns.append(F.interpolate(feats, size=(s, s), mode="bilinear", align_corners=False))
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
    mixed = torch.einsum("nkcyx,kyx->ncyx", scores, head.grid_weights.double())
    return mixed + head.bias[sets][:, :, None, None]


@pytest.mark.parametrize("order", ["auto", "scores", "pixels", "columns"])
@pytest.mark.parametrize("task", ["figure_ground", "parts", "keypoints"])
def test_per_tap_form_equals_the_explicit_hypercolumn(model_and_features, task: str, order: str) -> None:
    model, features = model_and_features
    taps = model.taps
    head = model.heads[task]
    head.order = order
    try:
        with torch.no_grad():
            logits = model.forward_boxes(features, ROIS, tasks=(task,)).logits[task]
    finally:
        head.order = "auto"
    expected = explicit_logits(head, explicit_hypercolumn(model, features, ROIS, taps), taps)
    assert logits.shape == (3, model.config.task_channels(task), 12, 12)
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-6)


def test_single_classifier_equals_one_linear_classifier_on_the_hypercolumn() -> None:
    """K=1: the paper's statement verbatim, with no grid at all."""
    torch.manual_seed(0)
    model = _randomised(build_hypercolumn(tiny_person_config(grid_size=1, output_size=10, tasks=("figure_ground",))))
    image = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        features = model.forward_trunk(image)
        logits = model.forward_boxes(features, ROIS).logits["figure_ground"]
    head = model.heads["figure_ground"]
    hypercolumn = explicit_hypercolumn(model, features, ROIS, model.taps)
    weight = torch.cat([head.classifiers[t].weight[:, :, 0, 0] for t in model.taps], dim=1)  # [1, D]
    expected = torch.einsum("cd,ndyx->ncyx", weight, hypercolumn) + head.bias[0][:, None, None]
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("task", ["parts", "keypoints"])
def test_evaluation_orders_agree(model_and_features, task: str) -> None:
    model, features = model_and_features
    head = model.heads[task]
    box_features = model.box_tap_features(features, ROIS, model.taps)
    results = {}
    for order in ("scores", "pixels"):
        head.order = order
        with torch.no_grad():
            results[order] = head(box_features, return_contributions=True)
    head.order = "auto"
    torch.testing.assert_close(results["scores"][0], results["pixels"][0], rtol=1e-9, atol=1e-9)
    for tap in model.taps:
        torch.testing.assert_close(results["scores"][1][tap], results["pixels"][1][tap], rtol=1e-9, atol=1e-9)


def test_heads_of_one_call_in_different_orders_give_each_head_its_own_result(model_and_features) -> None:
    """One tap's heads split between the scores and per-pixel orders are put side by side in the
    heads' channel order; every head's logits and contributions are what it gives alone."""
    model, features = model_and_features
    box_features = model.box_tap_features(features, ROIS, model.taps)
    with torch.no_grad():
        alone = {task: head(box_features, return_contributions=True) for task, head in model.heads.items()}
        orders = dict(zip(model.heads, ("scores", "pixels", "scores", "pixels")))
        for task, order in orders.items():
            model.heads[task].order = order
        try:
            together = forward_heads(dict(model.heads), box_features, return_contributions=True)
        finally:
            for head in model.heads.values():
                head.order = "auto"
    assert len(set(orders.values())) == 2 and len(model.heads) >= 2
    for task, (logits, contributions) in together.items():
        torch.testing.assert_close(logits, alone[task][0], rtol=1e-9, atol=1e-9)
        for tap in model.taps:
            torch.testing.assert_close(contributions[tap], alone[task][1][tap], rtol=1e-9, atol=1e-9)


def test_auto_order_picks_pixels_for_thin_taps_and_scores_for_the_box_vector(model_and_features) -> None:
    model, _ = model_and_features
    head = model.heads["keypoints"]  # 17 channels x 9 grid cells
    assert head.evaluation_order("s4", 56) == "pixels"  # 24 channels: cheaper per pixel
    assert head.evaluation_order("top", 1) == "scores"  # 1280 channels at 1x1: classify once


def test_tap_subset_is_bias_plus_those_contributions(model_and_features) -> None:
    model, features = model_and_features
    with torch.no_grad():
        full = model.forward_boxes(features, ROIS, return_contributions=True)
        subset = model.forward_boxes(features, ROIS, taps=("s8", "top"))
    for task in model.tasks:
        contributions = full.contributions[task]
        assert set(contributions) == set(model.taps)
        bias = full.bias[task]
        assert bias.shape == (3, model.config.task_channels(task), 1, 1)
        torch.testing.assert_close(full.logits[task], bias + sum(contributions.values()), rtol=1e-9, atol=1e-9)
        expected = bias + contributions["s8"] + contributions["top"]
        torch.testing.assert_close(subset.logits[task], expected, rtol=1e-9, atol=1e-9)


def test_unknown_or_empty_tap_selection_is_rejected(model_and_features) -> None:
    model, features = model_and_features
    with pytest.raises(ValueError, match="unknown taps.*fc7"):
        model.forward_boxes(features, ROIS, taps=("fc7",))
    with pytest.raises(ValueError, match="at least one tap"):
        model.forward_boxes(features, ROIS, taps=())
    with pytest.raises(ValueError, match="no \\['keypoints'\\] head"):
        build_hypercolumn(tiny_person_config(tasks=("figure_ground",))).check_tasks(("keypoints",))


def test_class_specific_head_uses_each_boxs_classifier_set() -> None:
    torch.manual_seed(0)
    classes = ("person", "dog", "cat")
    model = _randomised(build_hypercolumn(tiny_person_config(
        class_names=classes, class_specific=True, tasks=("figure_ground", "parts"), output_size=10)))
    image = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        features = model.forward_trunk(image)
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
    images = torch.randn(2, 3, 64, 64)
    rois = torch.tensor([[0, 2.0, 2.0, 40.0, 50.0], [1, 10.0, 5.0, 60.0, 60.0]])
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


def test_results_do_not_depend_on_which_tasks_share_a_call(model_and_features) -> None:
    """Heads share upsampled tap features within a call, which can change a head's evaluation
    order; the answer must not change, and logits come back in the requested task order."""
    model, features = model_and_features
    with torch.no_grad():
        together = model.forward_boxes(features, ROIS, tasks=("figure_ground", "keypoints", "parts")).logits
        assert list(together) == ["figure_ground", "keypoints", "parts"]
        for task in model.tasks:
            alone = model.forward_boxes(features, ROIS, tasks=(task,)).logits[task]
            torch.testing.assert_close(together[task], alone, rtol=1e-9, atol=1e-9)


def test_cost_model_counts_shared_upsampling_as_free() -> None:
    # One channel, a 28-channel tap at 28 x 28: near the break-even point of the two orders, where
    # features another head already upsampled tip the choice.
    head = HypercolumnHead({"tap": 28}, 1, 5, 50)
    assert head.evaluation_order("tap", 28, upsampled=False) == "scores"
    assert head.evaluation_order("tap", 28, upsampled=True) == "pixels"


def test_cost_model_lets_a_narrow_head_join_a_per_pixel_matmul_that_runs_anyway() -> None:
    head = HypercolumnHead({"tap": 96}, 1, 5, 50)  # one channel of a 96-channel 14 x 14 tap
    assert head.evaluation_order("tap", 14, upsampled=True) == "scores"  # alone: its own matmul
    assert head.evaluation_order("tap", 14, upsampled=True, shared_matmul=True) == "pixels"
