"""Inference: device choice and the feature-caching predictor (uses hcviewer.modeling)."""

from hcviewer.inference.device import DeviceChoice, choose_device
from hcviewer.inference.predictor import (
    HypercolumnPredictor,
    InputError,
    Prediction,
    check_boxes,
    paste_masks,
)

__all__ = ["DeviceChoice", "HypercolumnPredictor", "InputError", "Prediction", "check_boxes",
           "choose_device", "paste_masks"]
