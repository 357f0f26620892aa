"""The COCO person keypoint set in one place: names, skeleton, flip map, OKS sigmas and the
decoding part order (docs/design.md §5).

Data (flip augmentation, default sigmas), evaluation (COCOeval sigmas), inference (flip test)
and drawing read these constants; other keypoint sets describe themselves in their dataset's
``categories`` (``keypoints``, ``skeleton``, optional ``flip_map``) or in the config.
"""

from __future__ import annotations

__all__ = [
    "COCO_FLIP_MAP",
    "COCO_KEYPOINT_NAMES",
    "COCO_OKS_SIGMAS",
    "COCO_PART_ORDER",
    "COCO_SKELETON",
]

COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")

# 0-based part pairs: the 1-based ``skeleton`` of COCO's person category, minus 1.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))

# Left/right swap of a horizontal flip: part c of a flipped image is part COCO_FLIP_MAP[c].
COCO_FLIP_MAP: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

# COCOeval's per-keypoint OKS sigmas (pycocotools' defaults for the 17 parts).
COCO_OKS_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
    0.087, 0.087, 0.089, 0.089)

# Grouping order of the AE code: nose, eyes, ears, shoulders, hips, elbows, wrists, knees,
# ankles — well-localised parts first, so that they seed the instances.
COCO_PART_ORDER: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)
