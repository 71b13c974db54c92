"""The hypercolumn network (torch only; imports nothing else from hcviewer)."""

from hcviewer.modeling.backbones import BACKBONES, BackboneSpec, TapSpec, get_backbone_spec
from hcviewer.modeling.build import build_hypercolumn, build_person_model
from hcviewer.modeling.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from hcviewer.modeling.config import TASKS, HypercolumnConfig
from hcviewer.modeling.hypercolumn import BoxOutputs, HypercolumnModel, inference_copy
from hcviewer.modeling.keypoints import heatmaps_to_keypoints, keypoint_probabilities

__all__ = [
    "BACKBONES", "BackboneSpec", "BoxOutputs", "CheckpointError", "CheckpointInfo", "HypercolumnConfig",
    "HypercolumnModel", "TASKS", "inference_copy", "TapSpec", "build_hypercolumn", "build_person_model",
    "get_backbone_spec", "heatmaps_to_keypoints", "keypoint_probabilities", "load_checkpoint",
    "read_checkpoint_info", "save_checkpoint",
]
