"""The training formulation (sampling matrices, batch norm folded into the trunk, all heads of a
tap in one matmul) computes the same function and the same gradients as the inference
formulation (roi_align, F.interpolate, the trunk's own layers). Float64 throughout, so that
"the same" means equal up to rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from conftest import tiny_person_config
from hcviewer.modeling import build_hypercolumn
from hcviewer.modeling.backbones import AveragePoolTop, fold_batch_norm
from hcviewer.modeling.box_sampling import box_axis_weights, sample_boxes, sample_boxes_each
from hcviewer.modeling.heads import HypercolumnHead

ROIS = torch.tensor(
    [
        [0, 4.0, 6.0, 90.0, 60.0],
        [1, -20.0, 10.0, 40.0, 70.0],  # partly outside the image
        [0, 30.5, 20.25, 31.5, 21.0],  # smaller than a pixel
        [1, 0.0, 0.0, 160.0, 112.0],  # the whole image
        [0, 150.0, 100.0, 190.0, 130.0],  # mostly outside
        [1, 50.0, 40.0, 120.0, 100.0],
    ],
    dtype=torch.float64,
)


def _frozen_model(**changes):
    """A float64 model in training mode with frozen batch norm (as the trainer runs it), its
    batch-norm statistics and head weights randomised so that every term matters."""
    torch.manual_seed(0)
    model = build_hypercolumn(tiny_person_config(grid_size=3, output_size=20, **changes)).double().train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
        for head in model.heads.values():
            head.bias.normal_()
            for conv in head.classifiers.values():
                conv.weight.normal_(std=0.1)
    return model


def _weighted_sum(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """A loss that weighs every output value differently."""
    return sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outputs.values())


@pytest.mark.parametrize("sample", [sample_boxes, sample_boxes_each])
@pytest.mark.parametrize(("roi_size", "output_size"), [(14, 50), (56, 50), (7, 7), (5, 12)])
def test_sampling_matrices_equal_roi_align_then_bilinear_resize(roi_size: int, output_size: int, sample) -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 5, 30, 23, dtype=torch.float64, requires_grad=True)
    n = 40
    corner = torch.rand(n, 2, dtype=torch.float64) * torch.tensor([23 * 4 * 1.2, 30 * 4 * 1.2]) - 10
    size = torch.rand(n, 2, dtype=torch.float64) * 60 + 0.5
    rois = torch.cat([torch.randint(0, 2, (n, 1)).double(), corner, corner + size], dim=1)
    expected = roi_align(features, rois, roi_size, 0.25, 2, True)
    if output_size != roi_size:
        expected = F.interpolate(expected, size=(output_size, output_size), mode="bilinear", align_corners=False)
    weights_y, weights_x = box_axis_weights(rois, [(30, 23), (30, 23)], 0.25, roi_size, output_size)
    maps = list(features.contiguous(memory_format=torch.channels_last).unbind(0))  # as the trunk returns them
    sampled = sample(maps, rois[:, 0].long(), weights_y, weights_x).permute(0, 3, 1, 2)
    torch.testing.assert_close(sampled, expected, rtol=1e-12, atol=1e-12)
    pixel_major = sample(maps, rois[:, 0].long(), weights_y, weights_x, pixel_major=True)
    torch.testing.assert_close(pixel_major, expected.flatten(2).permute(2, 0, 1), rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, features, grad)
    (sampled_grad,) = torch.autograd.grad(sampled, features, grad)
    torch.testing.assert_close(sampled_grad, expected_grad, rtol=1e-12, atol=1e-12)


def test_training_forward_and_gradients_equal_the_inference_formulation() -> None:
    model = _frozen_model()
    images = torch.randn(2, 3, 112, 160, dtype=torch.float64)
    assert model.backbone._folded_body() is not None  # batch norm frozen: the folded trunk runs

    model.zero_grad()
    trained = model(images, ROIS)  # gradients enabled: the training formulation
    _weighted_sum(trained).backward()
    training_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    features = model.backbone.body(images)  # the trunk's own layers
    box_features = model.box_tap_features(features, ROIS, model.taps, sampled=False)  # roi_align
    reference = {task: model.heads[task](box_features)[0] for task in model.tasks}  # one head at a time
    _weighted_sum(reference).backward()
    reference_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    # The heads' grid weights are float32 buffers (the scores and pixels orders round them
    # differently), so float32 rounding is the tolerance.
    for task in model.tasks:
        torch.testing.assert_close(trained[task], reference[task], rtol=1e-6, atol=1e-6)
    assert training_grads.keys() == reference_grads.keys()
    assert any(name.startswith("backbone.box_top") for name in training_grads)  # the box-level tap trains
    scale = max(grad.abs().max().item() for grad in reference_grads.values())
    for name, grad in reference_grads.items():
        torch.testing.assert_close(training_grads[name], grad, rtol=1e-5, atol=1e-8 * scale)


@pytest.mark.parametrize("sample", [sample_boxes, sample_boxes_each])
def test_images_of_different_sizes_are_cut_from_their_own_maps(sample) -> None:
    """Each image's own map (no padding): the same as roi_align on that image alone."""
    torch.manual_seed(0)
    maps = [torch.randn(4, 13, 9, dtype=torch.float64), torch.randn(4, 6, 17, dtype=torch.float64)]
    rois = torch.tensor([[1, -3.0, 2.0, 70.0, 30.0], [0, 5.0, 1.0, 30.0, 50.0], [1, 40.0, 10.0, 60.0, 20.0],
                         [0, 0.0, 0.0, 36.0, 52.0]], dtype=torch.float64)
    weights_y, weights_x = box_axis_weights(rois, [m.shape[1:] for m in maps], 0.25, 7, 11)
    sampled = sample(maps, rois[:, 0].long(), weights_y, weights_x).permute(0, 3, 1, 2)
    for n, roi in enumerate(rois):
        alone = roi_align(maps[int(roi[0])][None], torch.cat([torch.zeros(1), roi[1:]])[None].double(), 7, 0.25, 2, True)
        expected = F.interpolate(alone, size=(11, 11), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(sampled[n], expected, rtol=1e-12, atol=1e-12)


def _trained_with_order(model, images: torch.Tensor, rois: torch.Tensor, order: str, image_sizes=None):
    """Training outputs and every parameter's gradient with the heads' per-pixel family forced
    to one order (``pixels`` or ``columns``)."""
    for head in model.heads.values():
        head.order = order
    model.zero_grad()
    logits = model(images, rois, image_sizes=image_sizes)
    _weighted_sum(logits).backward()
    for head in model.heads.values():
        head.order = "auto"
    return ({task: v.detach() for task, v in logits.items()},
            {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("boxes", [6, 70])  # 70: three groups of box_sampling.GROUP_SIZE
def test_columns_order_trains_as_the_pixels_order(boxes: int) -> None:
    """The columns order (classify between the x and y resampling) gives the pixels order's
    outputs and gradients: for boxes partly outside, smaller than a pixel, of images of
    different sizes, and in several groups."""
    model = _frozen_model()
    images = torch.zeros(2, 3, 112, 160, dtype=torch.float64)
    images[0, :, :96, :160] = torch.randn(3, 96, 160, dtype=torch.float64)
    images[1, :, :112, :128] = torch.randn(3, 112, 128, dtype=torch.float64)
    generator = torch.Generator().manual_seed(boxes)
    extra = torch.rand(max(0, boxes - len(ROIS)), 4, generator=generator, dtype=torch.float64) * 180 - 20
    extra = torch.cat([torch.randint(0, 2, (len(extra), 1), generator=generator).double(),
                       torch.minimum(extra[:, :2], extra[:, 2:]), torch.maximum(extra[:, :2], extra[:, 2:]) + 1], 1)
    rois = torch.cat([ROIS, extra])[:boxes]
    sizes = [(96, 160), (112, 128)]
    by_pixels, pixel_grads = _trained_with_order(model, images, rois, "pixels", sizes)
    by_columns, column_grads = _trained_with_order(model, images, rois, "columns", sizes)
    for task in model.tasks:
        torch.testing.assert_close(by_columns[task], by_pixels[task], rtol=1e-10, atol=1e-10)
    assert column_grads.keys() == pixel_grads.keys()
    for name, grad in pixel_grads.items():
        torch.testing.assert_close(column_grads[name], grad, rtol=1e-9, atol=1e-12)


def test_columns_order_in_inference_equals_the_pixels_order() -> None:
    """The predictor's path (boxes cut at the tap's size, then upsampled): the columns order
    upsamples along x, classifies per column, then upsamples along y with the grid rows."""
    model = _frozen_model().eval()
    with torch.no_grad():
        features = model.forward_trunk(torch.randn(2, 3, 112, 160, dtype=torch.float64))
        outputs = {}
        for order in ("pixels", "columns"):
            for head in model.heads.values():
                head.order = order
            outputs[order] = model.forward_boxes(features, ROIS, return_contributions=True)
    for task in model.tasks:
        torch.testing.assert_close(outputs["columns"].logits[task], outputs["pixels"].logits[task], rtol=1e-10, atol=1e-10)
        for tap in ("s4", "s8", "s16"):
            torch.testing.assert_close(outputs["columns"].contributions[task][tap],
                                       outputs["pixels"].contributions[task][tap], rtol=1e-10, atol=1e-10)


def test_training_picks_the_columns_order_for_wide_taps_with_small_crops() -> None:
    """MobileNetV2's stride-16 tap (96 channels, 14 x 14 cut) in the columns order; the
    stride-4 and stride-8 taps (24 and 32 channels, 56 and 28 px cuts) per pixel."""
    from hcviewer.modeling.heads import per_pixel_order

    model = build_hypercolumn(tiny_person_config(grid_size=5, output_size=50))
    heads = list(model.heads.values())
    orders = {tap: per_pixel_order(heads, tap, model.backbone.tap_specs[tap].roi_size) for tap in ("s4", "s8", "s16")}
    assert orders == {"s4": "pixels", "s8": "pixels", "s16": "columns"}
    heads[0].order = "pixels"  # a head's own order overrides the cost
    assert per_pixel_order(heads, "s16", 14) == "pixels"


def test_trunk_on_each_image_equals_the_model_on_that_image_alone() -> None:
    model = _frozen_model()
    images = torch.zeros(2, 3, 112, 160, dtype=torch.float64)
    images[0, :, :96, :160] = torch.randn(3, 96, 160, dtype=torch.float64)
    images[1, :, :112, :128] = torch.randn(3, 112, 128, dtype=torch.float64)
    rois = ROIS.clone()
    logits = model(images, rois, image_sizes=[(96, 160), (112, 128)])
    for i, (h, w) in enumerate([(96, 160), (112, 128)]):
        mine = rois[:, 0] == i
        alone = rois[mine].clone()
        alone[:, 0] = 0
        with torch.no_grad():
            expected = model.forward_boxes(model.backbone.body(images[i:i + 1, :, :h, :w]), alone).logits
        for task in model.tasks:
            torch.testing.assert_close(logits[task][mine].detach(), expected[task], rtol=1e-6, atol=1e-6)


def test_class_specific_heads_train_the_same_way() -> None:
    """Class-specific heads evaluate every tap in the scores order (from roi_align features)."""
    model = _frozen_model(class_names=("person", "dog", "cat"), class_specific=True)
    images = torch.randn(2, 3, 112, 160, dtype=torch.float64)
    classes = torch.tensor([0, 2, 1, 1, 0, 2])
    trained = model(images, ROIS, classes)
    with torch.no_grad():
        reference = model.forward_boxes(model.backbone.body(images), ROIS, classes).logits
    for task in model.tasks:
        torch.testing.assert_close(trained[task].detach(), reference[task], rtol=1e-6, atol=1e-6)


def test_box_level_vector_is_computed_after_the_conv_on_the_whole_map() -> None:
    model = _frozen_model()
    top: AveragePoolTop = model.backbone.box_top
    assert top.is_affine_before_activation()
    spec = model.backbone.tap_specs["top"]
    feature_map = torch.randn(2, 320, 4, 5, dtype=torch.float64)
    weights_y, weights_x = box_axis_weights(ROIS, [(4, 5), (4, 5)], 1 / spec.stride, spec.roi_size, spec.roi_size)
    sampled = top.forward_sampled(list(feature_map), lambda m: sample_boxes(m, ROIS[:, 0].long(), weights_y, weights_x))
    expected = top.head(roi_align(feature_map, ROIS, spec.roi_size, 1 / spec.stride, 2, True)).mean(dim=(2, 3))
    torch.testing.assert_close(sampled, expected, rtol=1e-10, atol=1e-10)
    top.head[1].train()  # batch statistics: no longer an affine map, the box path is kept
    assert not top.is_affine_before_activation()


def test_box_level_top_as_one_matrix_product_equals_its_layers_and_follows_their_updates() -> None:
    model = _frozen_model()
    top: AveragePoolTop = model.backbone.box_top
    pooled = torch.randn(3, 320, 7, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    pooled.requires_grad_(True)
    expected = top.head(pooled).mean(dim=(2, 3))  # conv, batch norm (running statistics), ReLU6
    got = top(pooled)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [pooled, top.head[0].weight, top.head[1].weight], grad)
    got_grads = torch.autograd.grad(got, [pooled, top.head[0].weight, top.head[1].weight], grad)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        top(pooled)  # the folded weights are cached now
        top.head[0].weight.mul_(2.0)
        top.head[1].running_mean.add_(0.5)
        torch.testing.assert_close(top(pooled), top.head(pooled).mean(dim=(2, 3)), rtol=1e-10, atol=1e-10)


def test_folded_trunk_shares_the_parameters_and_follows_their_updates() -> None:
    model = _frozen_model()
    keys = set(model.state_dict())
    images = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    folded = model.backbone._folded_body()
    with torch.no_grad():
        first_conv = next(m for m in model.backbone.body.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.weight.mul_(1.5)  # what an optimizer step does
        expected = model.backbone.body(images)
        actual = folded(images)
    assert set(model.state_dict()) == keys  # no second copy of any parameter
    assert {name for name, _ in model.named_parameters()} == {k for k in keys if "running" not in k
                                                              and "num_batches" not in k}
    for node, value in expected.items():
        torch.testing.assert_close(actual[node], value, rtol=1e-10, atol=1e-10)


def test_trainable_batch_norm_keeps_the_trunks_own_layers() -> None:
    model = build_hypercolumn(tiny_person_config()).train()  # batch norm in training mode
    norm = next(m for m in model.backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = norm.running_mean.clone()
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            model.backbone(torch.randn(2, 3, 64, 96))
        assert not torch.equal(norm.running_mean, before)  # batch statistics used and tracked
        before = norm.running_mean.clone()
    assert fold_batch_norm(build_hypercolumn(tiny_person_config(backbone="alexnet")).backbone.body) is None


def test_heads_sharing_a_matmul_equal_each_head_alone() -> None:
    """(Alone, a narrow head may pick the scores order: float32 grid-weight rounding.)"""
    model = _frozen_model()
    with torch.no_grad():
        features = model.forward_trunk(torch.randn(2, 3, 112, 160, dtype=torch.float64))
        together = model.forward_boxes(features, ROIS, return_contributions=True)
        for task in model.tasks:
            head: HypercolumnHead = model.heads[task]
            alone, contributions = head(model.box_tap_features(features, ROIS, model.taps), return_contributions=True)
            torch.testing.assert_close(together.logits[task], alone, rtol=1e-6, atol=1e-6)
            for tap in model.taps:
                torch.testing.assert_close(together.contributions[task][tap], contributions[tap], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_box_cuts_equal_torchvision_roi_align_and_interpolate(channels_last: bool) -> None:
    """The predictor's cut (sampling matrices at the tap's size) and its pixel-major upsampling
    (two matrix products) give roi_align's and F.interpolate's values for a batched map."""
    from hcviewer.modeling.box_features import pixel_major_features

    model = _frozen_model().eval()
    torch.manual_seed(1)
    spec = model.backbone.tap_specs["s4"]
    features = torch.randn(2, spec.channels, 28, 40, dtype=torch.float64)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        cut = model.backbone.tap_box_features({spec.node: features}, ROIS, "s4")
        expected = roi_align(features.contiguous(), ROIS, spec.roi_size, 1 / spec.stride, 2, True)
        torch.testing.assert_close(cut, expected, rtol=1e-12, atol=1e-12)
        upsampled = F.interpolate(expected, size=(50, 50), mode="bilinear", align_corners=False)
        torch.testing.assert_close(pixel_major_features(cut, 50), upsampled.flatten(2).permute(2, 0, 1),
                                   rtol=1e-12, atol=1e-12)
