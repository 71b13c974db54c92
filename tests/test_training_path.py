"""The one forward path (sampling matrices, batch norm folded into the trunk, all heads of a tap
in one matmul) computes the same function and the same gradients as the plain formulation
(torchvision's roi_align, F.interpolate, the trunk's own layers, the explicit concatenated
hypercolumn), and the predictor's inference copy (batch norm folded into the weights) the same
function. Float64 throughout, so that "the same" means equal up to rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from conftest import tiny_person_config
from hcviewer.modeling import build_hypercolumn, inference_copy
from hcviewer.modeling.batch_norm import FoldingSequential
from hcviewer.modeling.box_sampling import box_axis_weights, sample_boxes
from test_modeling import explicit_hypercolumn, explicit_logits

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


@pytest.mark.parametrize(("roi_size", "output_size"), [(14, 50), (56, 50), (7, 7), (5, 12)])
def test_sampling_matrices_equal_roi_align_then_bilinear_resize(roi_size: int, output_size: int) -> None:
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
    sampled = sample_boxes(maps, rois[:, 0].long(), weights_y, weights_x).permute(0, 3, 1, 2)
    torch.testing.assert_close(sampled, expected, rtol=1e-12, atol=1e-12)
    pixel_major = sample_boxes(maps, rois[:, 0].long(), weights_y, weights_x, pixel_major=True)
    torch.testing.assert_close(pixel_major, expected.flatten(2).permute(2, 0, 1), rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(expected)
    (expected_grad,) = torch.autograd.grad(expected, features, grad)
    (sampled_grad,) = torch.autograd.grad(sampled, features, grad)
    torch.testing.assert_close(sampled_grad, expected_grad, rtol=1e-12, atol=1e-12)


def _plain_logits(model, images: list[torch.Tensor], rois: torch.Tensor, classes=None) -> dict[str, torch.Tensor]:
    """The plain formulation: the trunk's own layers (batch norm as its own layer), roi_align and
    F.interpolate, one linear classifier per grid cell on the concatenated hypercolumn."""
    unfolded = FoldingSequential.forward
    FoldingSequential.forward = torch.nn.Sequential.forward
    try:
        per_image = [model.backbone.body(image[None]) for image in images]
    finally:
        FoldingSequential.forward = unfolded
    features = {node: [f[node][0] for f in per_image] for node in per_image[0]}
    hypercolumn = explicit_hypercolumn(model, features, rois, model.taps)
    return {task: explicit_logits(model.heads[task], hypercolumn, model.taps, classes) for task in model.tasks}


@pytest.mark.parametrize("class_specific", [False, True])
def test_training_forward_and_gradients_equal_the_plain_formulation(class_specific: bool) -> None:
    changes = {"class_names": ("person", "dog", "cat"), "class_specific": True} if class_specific else {}
    model = _frozen_model(**changes)
    classes = torch.tensor([0, 2, 1, 1, 0, 2]) if class_specific else None
    images = list(torch.randn(2, 3, 112, 160, dtype=torch.float64))

    model.zero_grad()
    trained = model(images, ROIS, classes)
    _weighted_sum(trained).backward()
    training_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    reference = _plain_logits(model, images, ROIS, classes)
    _weighted_sum(reference).backward()
    reference_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    # The grid weights are float32 (grid.py), rounded differently per formulation: float32 tolerance.
    for task in model.tasks:
        torch.testing.assert_close(trained[task], reference[task], rtol=1e-6, atol=1e-6)
    assert training_grads.keys() == reference_grads.keys()
    assert any(name.startswith("backbone.box_top") for name in training_grads)  # the box-level tap trains
    scale = max(grad.abs().max().item() for grad in reference_grads.values())
    for name, grad in reference_grads.items():
        torch.testing.assert_close(training_grads[name], grad, rtol=1e-5, atol=1e-8 * scale)


def test_inference_copy_with_folded_weights_answers_like_the_model() -> None:
    model = _frozen_model().eval()
    copied = inference_copy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in copied.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the model keeps its layers
    images = [torch.randn(3, 112, 160, dtype=torch.float64)]
    rois = ROIS[ROIS[:, 0] == 0]
    with torch.no_grad():
        expected = _plain_logits(model, images, rois)
        answered = copied.forward_boxes(copied.backbone(images), rois, classifiers=copied.pixel_classifiers()).logits
    for task in model.tasks:
        torch.testing.assert_close(answered[task], expected[task], rtol=1e-6, atol=1e-6)


def test_images_of_different_sizes_are_cut_from_their_own_maps() -> None:
    """Each image's own map (no padding): the same as roi_align on that image alone."""
    torch.manual_seed(0)
    maps = [torch.randn(4, 13, 9, dtype=torch.float64), torch.randn(4, 6, 17, dtype=torch.float64)]
    rois = torch.tensor([[1, -3.0, 2.0, 70.0, 30.0], [0, 5.0, 1.0, 30.0, 50.0], [1, 40.0, 10.0, 60.0, 20.0],
                         [0, 0.0, 0.0, 36.0, 52.0]], dtype=torch.float64)
    weights_y, weights_x = box_axis_weights(rois, [m.shape[1:] for m in maps], 0.25, 7, 11)
    sampled = sample_boxes(maps, rois[:, 0].long(), weights_y, weights_x).permute(0, 3, 1, 2)
    for n, roi in enumerate(rois):
        alone = roi_align(maps[int(roi[0])][None], torch.cat([torch.zeros(1), roi[1:]])[None].double(), 7, 0.25, 2, True)
        expected = F.interpolate(alone, size=(11, 11), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(sampled[n], expected, rtol=1e-12, atol=1e-12)


def test_trainable_batch_norm_keeps_the_trunks_own_layers() -> None:
    model = build_hypercolumn(tiny_person_config()).train()  # batch norm in training mode
    norm = next(m for m in model.backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = norm.running_mean.clone()
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            model.backbone([torch.randn(3, 64, 96)])
        assert not torch.equal(norm.running_mean, before)  # batch statistics used and tracked
        before = norm.running_mean.clone()
