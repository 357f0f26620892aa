"""PCKh: the MPII single-person pose metric (docs/design.md §6).

A joint is correct when its distance to the ground truth, divided by the person's head-size
normaliser, is at most the threshold: ``‖pred − gt‖ / normalize ≤ t`` (0.5 by default, 0.1
too). The conventions are the official ``evaluatePCKh.m`` / ``computePCK.m`` ones:

* the normaliser is per person: ``normalize`` of the hourglass code's h5 files, i.e.
  ``0.6 · ‖head box diagonal‖`` (``SC_BIAS``) of the .mat;
* a joint counts when it is annotated (coordinates other than (0, 0), where the hourglass
  code's h5 files store a missing joint); occluded joints (``visible`` = 0) count, as in the
  official evaluation and in the hourglass code's "all" figure; ``visible_only=True`` gives its
  "visible" figure instead;
* per joint: correct / counted over the people; per group (Head = upper neck and head top,
  Shoulder, Elbow, Wrist, Hip, Knee, Ankle): the mean of its two joints' values (the official
  table's columns);
* Mean: correct / counted pooled over the 14 joints other than pelvis and thorax (the official
  "total", which leaves those two out).

The hourglass code's own ``mpii_eval`` differs in two details: it compares with a strict
``<`` and its total pools all 16 joints.

Example:
    >>> m = pckh(pred_xy, ann.part, ann.normalize)       # {"PCKh@0.5": 0.91, …}
    >>> print(pckh_table(m))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aehg.data.mpii import MPII_JOINT_NAMES, NUM_JOINTS, MpiiAnnotations, MpiiDataset

__all__ = ["PCKH_GROUPS", "PCKH_MEAN_EXCLUDED", "pckh", "pckh_table", "score_single_pose",
           "single_pose_results"]

# The official table's columns: (name, the two joints averaged).
PCKH_GROUPS: tuple[tuple[str, tuple[int, int]], ...] = (
    ("Head", (8, 9)), ("Shoulder", (12, 13)), ("Elbow", (11, 14)), ("Wrist", (10, 15)),
    ("Hip", (2, 3)), ("Knee", (1, 4)), ("Ankle", (0, 5)),
)
# Pelvis and thorax: not in the official Mean.
PCKH_MEAN_EXCLUDED: tuple[int, ...] = (6, 7)


def _key(t: float) -> str:
    return f"PCKh@{t:g}"


def pckh(pred: Any, gt: Any, normalize: Any, *, visible: Any = None,
         thresholds: Sequence[float] = (0.5, 0.1), visible_only: bool = False
         ) -> dict[str, float]:
    """PCKh per threshold: the Mean, the seven groups and the 16 joints.

    Args:
        pred: predicted joints x, y (original pixels).
        gt: ground-truth joints x, y; (0, 0) = not annotated (not counted).
        normalize: each person's head-size normaliser (> 0 for every person with a counted
            joint).
        visible: 1 for visible joints (needed with ``visible_only``).
        thresholds: the PCKh thresholds t (a joint is correct when distance / normalize ≤ t).
        visible_only: count only annotated joints that are visible.

    Returns:
        Fractions: ``"PCKh@0.5"`` (the Mean), ``"PCKh@0.5/Head"`` … ``"PCKh@0.5/Ankle"``,
        ``"PCKh@0.5/r_ankle"`` … per joint (NaN for a joint or group never counted), the same
        for every threshold, and ``"joints"``, the number of counted joints.

    Raises:
        ValueError: shapes other than (N, 16, 2) / (N,) / (N, 16), non-finite values, a
            threshold <= 0, or a counted person whose normaliser is not > 0 (names the row).

    Shapes:
        pred, gt: (N, 16, 2); normalize: (N,); visible: (N, 16)
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    normalize = np.asarray(normalize, dtype=np.float64).reshape(-1)
    n = gt.shape[0] if gt.ndim == 3 else -1
    if gt.shape != (n, NUM_JOINTS, 2) or pred.shape != gt.shape:
        raise ValueError(f"pred, gt: expected shape (N, {NUM_JOINTS}, 2) each (the MPII joints), "
                         f"got {pred.shape} and {gt.shape}")
    if normalize.shape != (n,):
        raise ValueError(f"normalize: expected ({n},) (one per person), got {normalize.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(gt).all()):
        raise ValueError("pred, gt: expected finite coordinates")
    if any(not t > 0 for t in thresholds) or not thresholds:
        raise ValueError(f"thresholds: expected positive values, got {list(thresholds)}")
    counted = (gt != 0).any(axis=-1)
    if visible_only:
        if visible is None:
            raise ValueError("visible: needed with visible_only=True")
        vis = np.asarray(visible, dtype=np.float64)
        if vis.shape != (n, NUM_JOINTS):
            raise ValueError(f"visible: expected ({n}, {NUM_JOINTS}), got {vis.shape}")
        counted &= vis > 0
    bad = np.flatnonzero(counted.any(axis=1) & ~(np.isfinite(normalize) & (normalize > 0)))
    if bad.size:
        raise ValueError(f"normalize: row {int(bad[0])} has annotated joints but normaliser "
                         f"{normalize[bad[0]]} (expected > 0)")
    safe = np.where(normalize > 0, normalize, 1.0)
    dist = np.linalg.norm(pred - gt, axis=-1) / safe[:, None]          # (N, 16)
    count = counted.sum(axis=0)                                          # (16,)
    in_mean = np.ones(NUM_JOINTS, dtype=bool)
    in_mean[list(PCKH_MEAN_EXCLUDED)] = False
    out: dict[str, float] = {}
    for t in thresholds:
        correct = (counted & (dist <= t)).sum(axis=0)                    # (16,)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_joint = np.where(count > 0, correct / np.maximum(count, 1), np.nan)
        total = int(count[in_mean].sum())
        key = _key(t)
        out[key] = float(correct[in_mean].sum() / total) if total else float("nan")
        for name, (a, b) in PCKH_GROUPS:
            values = [v for v in (per_joint[a], per_joint[b]) if not np.isnan(v)]
            out[f"{key}/{name}"] = float(np.mean(values)) if values else float("nan")
        for j, name in enumerate(MPII_JOINT_NAMES):
            out[f"{key}/{name}"] = float(per_joint[j])
    out["joints"] = int(count[in_mean].sum())
    return out


def pckh_table(metrics: dict[str, float], thresholds: Sequence[float] | None = None) -> str:
    """The standard MPII table (percent): one row per threshold, the seven groups and Mean."""
    if thresholds is None:
        thresholds = [float(k.split("@")[1]) for k in metrics
                      if k.startswith("PCKh@") and "/" not in k]
    names = [g for g, _ in PCKH_GROUPS] + ["Mean"]
    width = max(len(n) for n in names) + 1
    lines = ["PCKh  " + "".join(f"{n:>{width}}" for n in names)]
    for t in thresholds:
        key = _key(t)
        values = [metrics[f"{key}/{g}"] for g, _ in PCKH_GROUPS] + [metrics[key]]
        lines.append(f"@{t:<4g} " + "".join(f"{100 * v:>{width}.1f}" for v in values))
    if "joints" in metrics:
        lines.append(f"({metrics['joints']} joints counted; Mean without pelvis and thorax)")
    return "\n".join(lines)


def score_single_pose(predictions: Sequence[Any], dataset: MpiiDataset, *,
                      thresholds: Sequence[float] = (0.5, 0.1), verbose: bool = False
                      ) -> dict[str, float]:
    """PCKh of single-person predictions (``image_id`` = annotation row) against the dataset's
    ground truth; prints :func:`pckh_table` when ``verbose``.

    Raises:
        ValueError: a prediction without exactly one person of 16 joints.
    """
    ann = dataset.annotations
    rows, xy = [], []
    for p in predictions:
        kp = np.asarray(p.keypoints)
        if kp.shape != (1, NUM_JOINTS, 3):
            raise ValueError(f"predictions: row {p.image_id} of {ann.path}: expected one person "
                             f"with {NUM_JOINTS} joints (1, {NUM_JOINTS}, 3), got {kp.shape}")
        rows.append(int(p.image_id))
        xy.append(kp[0, :, :2])
    index = np.asarray(rows, dtype=np.int64)
    out = pckh(np.stack(xy), ann.part[index], ann.normalize[index], thresholds=thresholds)
    if verbose:
        print(pckh_table(out, thresholds))
    return out


def single_pose_results(predictions: Sequence[Any], annotations: MpiiAnnotations
                        ) -> list[dict[str, Any]]:
    """Predictions as JSON rows: ``row``, ``imgname``, ``center``, ``scale`` and ``keypoints``
    ``[x, y, score] · 16`` in original pixels (``Prediction.image_id`` is the row)."""
    out = []
    for p in predictions:
        row = int(p.image_id)
        kp = np.asarray(p.keypoints, dtype=np.float64)[0]
        out.append({"row": row, "imgname": annotations.imgname[row],
                    "center": [float(v) for v in annotations.center[row]],
                    "scale": float(annotations.scale[row]),
                    "keypoints": [round(float(v), 2) for v in kp.reshape(-1)]})
    return out
