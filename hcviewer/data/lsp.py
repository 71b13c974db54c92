"""Leeds Sports Pose Extended (Johnson & Everingham, CVPR 2011) as COCO person keypoints.

Layout (as the data set ships)::

    root/
      joints.mat         'joints': 14 x 3 x N (x, y, visible flag) for N photos, in file order
      images/im00001.jpg photo i + 1 holds the person of column i

Each photo holds one person labelled with 14 joints. The 12 limb joints become COCO's; LSPet has
no box, so the box is the extent of the visible limb joints widened by margins measured on COCO
people (``BOX_MARGINS``), so that training boxes look like the boxes users draw. The people have
no mask: they train the keypoint head only (partial labels, as ``TargetSpec.trains_on`` reads
``mask=None``). LSPet scaled its photos so that the person is about 150 px long, far smaller than
a COCO person at the predictor's image size; ``read_lsp`` enlarges photo and joints by ``SCALE``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hcviewer.categories import COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON
from hcviewer.data.images import read_rgb, read_size
from hcviewer.data.records import AnnotatedDataset, DataError, ImageRecord, ObjectAnnotation
from hcviewer.fileio import read_input_bytes

CATEGORY = "person"
NUM_JOINTS = 14
# COCO index of LSPet's joints 0..11 (right ankle, right knee, right hip, left hip, left knee, left
# ankle, right wrist, right elbow, right shoulder, left shoulder, left elbow, left wrist). LSPet's
# neck and head top (12, 13) have no COCO keypoint (COCO's head is nose, eyes and ears, none of
# them at the neck or the crown), and LSPet has no face points: those 5 COCO keypoints stay
# unlabelled (v = 0), so they train nothing. Neck and head top only keep the head inside the box.
LIMB_TO_COCO = (16, 14, 12, 11, 13, 15, 10, 8, 6, 5, 7, 9)
HEAD_JOINTS = (12, 13)
COCO_LIMB_JOINTS = tuple(sorted(LIMB_TO_COCO))
# Ground-truth box beyond the extent of the labelled limb joints of COCO train people with >= 10
# labelled keypoints, as fractions of that extent's width (left, right) and height (top,
# bottom): medians of 279 people of coco-mini-train + coco-extra-train, measured by
# benchmarks/measure_keypoint_box_margins.py.
BOX_MARGINS = {"left": 0.154, "right": 0.166, "top": 0.285, "bottom": 0.102}
# Photo and joint enlargement: the median box height of those COCO people at the predictor's
# 640 px (their photo's long side at 640) over the median height of LSPet's derived boxes
# (same script, --lsp): 161 px / 130 px.
SCALE = 1.24


@dataclass
class ScaledImageRecord(ImageRecord):
    """A photo used at ``scale`` times its file's size: ``width`` and ``height`` are the
    enlarged size, as the boxes and keypoints are; ``file_size`` is the file's (width, height)."""

    scale: float = 1.0
    file_size: tuple[int, int] = (0, 0)

    def load_rgb(self) -> np.ndarray:
        import cv2

        rgb = read_rgb(self.path)
        if (rgb.shape[1], rgb.shape[0]) != self.file_size:
            raise DataError(f"{self.path}: image is {rgb.shape[1]}x{rgb.shape[0]} but was "
                            f"{self.file_size[0]}x{self.file_size[1]} when the data set was read; "
                            "was it replaced? Read the data set again")
        return cv2.resize(rgb, (self.width, self.height), interpolation=cv2.INTER_LINEAR)


def read_lsp(root: str | Path, limit: int | None = None, scale: float = SCALE,
             name: str | None = None) -> AnnotatedDataset:
    """Read an LSPet folder (layout in the module docstring): its first ``limit`` photos (all
    when None), photos and joints enlarged by ``scale``."""
    root = Path(root)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: not found; --lsp ROOT needs ROOT/joints.mat and ROOT/images "
                        "(the Leeds Sports Pose Extended layout)")
    joints = read_joints(root / "joints.mat")
    count = len(joints) if limit is None else min(limit, len(joints))
    records = [_record(images_dir / f"im{i + 1:05d}.jpg", i, joints[i], scale) for i in range(count)]
    return AnnotatedDataset(name or root.name, records, COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON)


def read_joints(path: Path) -> np.ndarray:
    """[N, 14, 3] float64 (x, y, visible flag) from an LSPet joints.mat."""
    from scipy.io import loadmat

    fix = "it must be LSPet's joints.mat, a MATLAB file holding 'joints' of 14 x 3 x N"
    try:
        content = loadmat(io.BytesIO(read_input_bytes(path)))
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); {fix}") from None
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... for broken files
        raise DataError(f"{path}: not a readable MATLAB file ({exc}); {fix}") from None
    joints = content.get("joints")
    if not isinstance(joints, np.ndarray) or joints.ndim != 3 or joints.shape[:2] != (NUM_JOINTS, 3) \
            or not np.issubdtype(joints.dtype, np.number) or joints.shape[2] == 0:
        found = f"'joints' of shape {joints.shape}" if isinstance(joints, np.ndarray) else "no 'joints'"
        raise DataError(f"{path}: has {found}; {fix} (the original LSP's 3 x 14 x 2000 is not read)")
    joints = np.transpose(joints, (2, 0, 1)).astype(np.float64)
    flags = joints[..., 2]
    if not np.isin(flags, (0, 1)).all() or not np.isfinite(joints[..., :2][flags == 1]).all():
        raise DataError(f"{path}: visible flags must be 0 or 1 and visible joints finite numbers; {fix}")
    return joints


def coco_keypoints(joints: np.ndarray) -> np.ndarray:
    """LSPet joints [14, 3] -> COCO keypoints [17, 3] (x, y, v). A visible joint (flag 1) is v = 2.
    An invisible one is unlabelled (v = 0), not COCO's "hidden" (v = 1): LSPet gives no position
    for it (99.6% of them lie outside their photo, most at x = 0), and v = 1 would train on it.
    COCO's face keypoints, which LSPet does not have, are v = -1: never labelled, so not absent
    either (``data.targets.keypoint_targets``)."""
    keypoints = np.zeros((len(COCO_PERSON_KEYPOINTS), 3), np.float32)
    keypoints[:, 2] = -1
    for lsp_index, coco_index in enumerate(LIMB_TO_COCO):
        x, y, visible = joints[lsp_index]
        keypoints[coco_index] = (x, y, 2) if visible == 1 else (0, 0, 0)
    return keypoints


def person_box(limb_points: np.ndarray, head_points: np.ndarray, width: float, height: float,
               margins: dict[str, float] = BOX_MARGINS) -> np.ndarray | None:
    """The box [x0, y0, x1, y1] of a person from its labelled limb joints [K, 2] (``BOX_MARGINS``
    around their extent), grown to hold its labelled neck and head top [M, 2] (a person upside
    down has the head below the margins), within the photo. None with under two limb joints."""
    if len(limb_points) < 2:
        return None
    x0, y0 = limb_points.min(0)
    x1, y1 = limb_points.max(0)
    extent_w, extent_h = x1 - x0, y1 - y0
    box = np.array([x0 - margins["left"] * extent_w, y0 - margins["top"] * extent_h,
                    x1 + margins["right"] * extent_w, y1 + margins["bottom"] * extent_h])
    if len(head_points):
        box[:2] = np.minimum(box[:2], head_points.min(0))
        box[2:] = np.maximum(box[2:], head_points.max(0))
    return np.clip(box, 0, [width, height, width, height]).astype(np.float32)


def _record(path: Path, index: int, joints: np.ndarray, scale: float) -> ScaledImageRecord:
    if not path.is_file():
        raise DataError(f"{path}: missing; joints.mat has a person for it (column {index + 1}); restore the "
                        "photo or the whole LSPet folder")
    file_height, file_width = read_size(path)
    width, height = max(1, round(file_width * scale)), max(1, round(file_height * scale))
    record = ScaledImageRecord(path.stem, width, height, path=path, scale=scale, file_size=(file_width, file_height))
    scaled = joints.copy()
    scaled[:, :2] *= scale
    visible = scaled[:, 2] == 1
    limbs = scaled[:len(LIMB_TO_COCO)][visible[:len(LIMB_TO_COCO)], :2]
    head = scaled[list(HEAD_JOINTS)][visible[list(HEAD_JOINTS)], :2]
    box = person_box(limbs, head, width, height)
    if box is not None:
        record.objects.append(ObjectAnnotation(box, CATEGORY, keypoints=coco_keypoints(scaled)))
    return record
