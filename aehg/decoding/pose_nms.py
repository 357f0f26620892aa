"""Non-maximum suppression of whole poses by object keypoint similarity (docs/design.md §4).

Bottom-up grouping can return one person twice (two tag clusters for one body, or the same
parts claimed by two instances); OKS-NMS drops the lower-scored of two poses that are nearly
the same, as HigherHRNet and mmpose do after grouping.
"""

from __future__ import annotations

import numpy as np

from aehg.decoding.instances import Instances
from aehg.keypoints import COCO_OKS_SIGMAS

__all__ = ["oks_matrix", "oks_nms"]


def _sigmas(num_parts: int, sigmas: np.ndarray | None) -> np.ndarray:
    if sigmas is not None:
        out = np.asarray(sigmas, dtype=np.float64)
        if out.shape != (num_parts,) or not (out > 0).all():
            raise ValueError(f"sigmas: expected {num_parts} positive values, got {out.shape}")
        return out
    if num_parts == len(COCO_OKS_SIGMAS):
        return np.asarray(COCO_OKS_SIGMAS, dtype=np.float64)
    return np.full(num_parts, 0.0625)


def oks_matrix(keypoints: np.ndarray, sigmas: np.ndarray | None = None) -> np.ndarray:
    """Pairwise OKS of poses, COCO's formula with the mean of the two poses' areas.

    ``oks[a, b]`` = mean over the parts present in both of ``exp(-d² / (2 · s · (2σ)²))``,
    where ``s`` is the mean of the two poses' areas (the bounding box of their present parts,
    at least 1) and ``d`` the distance between the parts; 0 when they share no part.

    Shapes:
        keypoints: (N, C, 3) x, y, score (score 0 = absent) -> (N, N)
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    n, c = kp.shape[:2]
    var = (2.0 * _sigmas(c, sigmas)) ** 2
    present = kp[:, :, 2] > 0
    lo = np.where(present[..., None], kp[:, :, :2], np.inf).min(1)
    hi = np.where(present[..., None], kp[:, :, :2], -np.inf).max(1)
    area = np.where(present.any(1), np.prod(np.maximum(hi - lo, 0.0), 1), 0.0)
    area = np.maximum(area, 1.0)
    d2 = ((kp[:, None, :, :2] - kp[None, :, :, :2]) ** 2).sum(-1)             # (N, N, C)
    scale = (area[:, None] + area[None, :]) / 2.0
    sim = np.exp(-d2 / (2.0 * scale[..., None] * var))
    both = present[:, None] & present[None, :]
    count = both.sum(-1)
    return np.where(count > 0, (sim * both).sum(-1) / np.maximum(count, 1), 0.0)


def oks_nms(instances: Instances, threshold: float = 0.9,
            sigmas: np.ndarray | None = None) -> Instances:
    """Keep the poses whose OKS with every higher-scored kept pose is ≤ ``threshold``.

    Args:
        instances: poses of one image (any coordinates: OKS is scale-relative), sorted or not.
        threshold: OKS above which the lower-scored pose is dropped.
        sigmas: per-part OKS sigmas (None: COCO's for 17 parts, else 0.0625 each).

    Returns:
        The kept instances, in decreasing score order.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold: expected a value in (0, 1], got {threshold}")
    order = np.argsort(-instances.scores, kind="stable")
    inst = instances[order]
    n = len(inst)
    if n < 2:
        return inst
    over = oks_matrix(inst.keypoints, sigmas) > threshold
    keep = np.ones(n, bool)
    for i in range(n):  # greedy by score; N is the people of one image (tens at most)
        if keep[i]:
            keep[i + 1:] &= ~over[i, i + 1:]
    return inst[keep]
