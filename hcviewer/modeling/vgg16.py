"""VGG16 (Simonyan & Zisserman 2015) as a hypercolumn trunk: the paper's network (torchvision's
definition and ImageNet weights)."""

from __future__ import annotations

from functools import partial

from hcviewer.modeling.backbones import BackboneSpec, FlattenTop, TapSpec, torchvision_model

SPEC = BackboneSpec(
    name="vgg16",
    taps=(
        TapSpec("pool2", "9", 4, 128, 56),
        TapSpec("pool3", "16", 8, 256, 28),
        TapSpec("conv4_3", "22", 8, 512, 28),
        TapSpec("pool4", "23", 16, 512, 14),
        TapSpec("fc7", "29", 16, 4096, 7, box_level=True),
    ),
    default_taps=("pool2", "conv4_3", "fc7"),
    make_model=partial(torchvision_model, "vgg16", "VGG16_Weights"),
    make_box_top=lambda m: FlattenTop(m.classifier[:5]),  # fc6, relu, dropout, fc7, relu
)
