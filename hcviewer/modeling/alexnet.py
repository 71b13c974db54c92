"""AlexNet (Krizhevsky et al. 2012) as a hypercolumn trunk (torchvision's definition and
ImageNet weights)."""

from __future__ import annotations

from functools import partial

from hcviewer.modeling.backbones import BackboneSpec, FlattenTop, TapSpec, torchvision_model

SPEC = BackboneSpec(
    name="alexnet",
    taps=(
        TapSpec("pool2", "5", 16, 192, 14),
        TapSpec("conv4", "9", 16, 256, 14),
        TapSpec("fc7", "11", 16, 4096, 6, box_level=True),
    ),
    default_taps=("pool2", "conv4", "fc7"),
    make_model=partial(torchvision_model, "alexnet", "AlexNet_Weights"),
    make_box_top=lambda m: FlattenTop(m.classifier[:6]),  # dropout, fc6, relu, dropout, fc7, relu
)
