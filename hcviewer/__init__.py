"""hcviewer: hypercolumn segmentation, part labelling and keypoints (Hariharan et al., CVPR 2015).

Sub-packages, with one-way imports:

- ``hcviewer.modeling``: the network, its configuration and its checkpoint format (torch only).
- ``hcviewer.inference``: the predictor that caches trunk features per image (uses modeling).
- ``hcviewer.data``: annotation readers, synthetic scenes, box-aligned targets (numpy/OpenCV).
- ``hcviewer.train``: the ``hcviewer-train`` command (uses data, modeling, inference).
- ``hcviewer.app``: the Qt desktop app ``hcviewer`` (uses inference, data).
"""

__version__ = "0.1.0"
