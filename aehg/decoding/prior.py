"""The spatial layout of a person for grouping: :class:`PosePrior` (docs/design.md §4).

For every pair of parts (p, q) a prior holds the mean and the standard deviation of
``log(|x_p − x_q| / s)``, the log distance between the two parts in units of the person's
scale s (``sqrt(area)`` of a COCO annotation, the scale of COCO's OKS). A decoder never knows s:
it estimates it from the parts an instance already has and then asks how far a candidate part
should be from each of them (:func:`aehg.group`, method "layout").

* :meth:`PosePrior.coco` is the prior shipped for COCO's 17 person keypoints. It was fitted with
  :meth:`PosePrior.from_coco` on ``tests/data/coco_kp_ccby/person_keypoints_ccby.json`` (44
  people, COCO CC BY 4.0 annotations), not on the development set the grouping is measured on
  (``tests/data/coco_kp_dev``); ``tests/decoding/test_prior.py`` refits it and compares.
* :meth:`PosePrior.flat` knows nothing about the keypoint set: every pair has the same mean and a
  broad deviation, so it only says that the parts of one person lie within a region of the
  person's size. It is the default for keypoint sets other than COCO's.
* :meth:`PosePrior.fit` / :meth:`PosePrior.from_coco` learn a prior from training annotations;
  :meth:`PosePrior.save` / :meth:`PosePrior.load` keep it as a small JSON file.

Example:
    >>> prior = PosePrior.from_coco("data/coco/annotations/person_keypoints_train2017.json")
    >>> prior.save("outputs/coco_prior.json")
    >>> people = aehg.group(heat, tags, pose_prior=PosePrior.load("outputs/coco_prior.json"))
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aehg.io import read_json, write_json

__all__ = ["FLAT_STD", "MIN_STD", "PosePrior"]

# Deviation of the flat prior: a factor e^0.7 ≈ 2 between a pair's distance and the person's
# scale is one standard deviation (COCO's learned pairs have 0.15 to 0.8, mean 0.41).
FLAT_STD = 0.7
# Floor of a fitted deviation: a pair seen in few people must not become a hard constraint.
MIN_STD = 0.2
# Floor of a normalised distance before the log (1 % of the scale): coincident parts (one
# hidden behind the other) must not dominate a pair's statistics.
MIN_DISTANCE = 0.01
FORMAT = "aehg.PosePrior/1"


@dataclass(frozen=True)
class PosePrior:
    """Mean and deviation of the log distance between parts, relative to the person's scale.

    Attributes:
        mean: mean of ``log(distance / scale)`` per pair of parts; the diagonal is 0 and unused.
        std: its standard deviation (>= ``MIN_STD`` off the diagonal); the diagonal is 1 and
            unused.

    Shapes:
        mean: (C, C) float64, symmetric
        std: (C, C) float64, symmetric
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean = np.array(self.mean, dtype=np.float64)
        std = np.array(self.std, dtype=np.float64)
        if mean.ndim != 2 or mean.shape[0] != mean.shape[1] or mean.shape[0] < 1:
            raise ValueError(f"PosePrior.mean: expected shape (C, C), got {mean.shape}")
        if std.shape != mean.shape:
            raise ValueError(f"PosePrior.std: expected shape {mean.shape} like the mean, got "
                             f"{std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError("PosePrior: expected finite mean and std values")
        off = ~np.eye(mean.shape[0], dtype=bool)
        if (std[off] <= 0).any():
            raise ValueError("PosePrior.std: expected values > 0 off the diagonal")
        if not (np.allclose(mean, mean.T) and np.allclose(std, std.T)):
            raise ValueError("PosePrior: expected symmetric mean and std (pairs are unordered)")
        np.fill_diagonal(mean, 0.0)
        np.fill_diagonal(std, 1.0)
        mean.setflags(write=False)
        std.setflags(write=False)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def num_parts(self) -> int:
        """C, the number of parts."""
        return int(self.mean.shape[0])

    # ------------------------------------------------------------------ construction

    @classmethod
    def flat(cls, num_parts: int, std: float = FLAT_STD) -> PosePrior:
        """The prior that knows nothing about the parts: mean 0 and ``std`` for every pair."""
        if isinstance(num_parts, bool) or not isinstance(num_parts, int) or num_parts < 1:
            raise ValueError(f"num_parts: expected an integer >= 1, got {num_parts!r}")
        if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
            raise ValueError(f"std: expected a finite number > 0, got {std!r}")
        return cls(np.zeros((num_parts, num_parts)), np.full((num_parts, num_parts), std))

    @classmethod
    def coco(cls) -> PosePrior:
        """The prior of COCO's 17 person keypoints shipped with the library (see the module)."""
        return cls(np.asarray(COCO_MEAN), np.asarray(COCO_STD))

    @classmethod
    def fit(cls, keypoints: np.ndarray, scales: np.ndarray, min_std: float = MIN_STD,
            min_count: int = 2) -> PosePrior:
        """Fit a prior on annotated people.

        A pair of parts counts in a person when both are labelled (v > 0). Pairs labelled
        together in fewer than ``min_count`` people get the flat prior's deviation and the mean
        of the fitted pairs. Deviations are floored at ``min_std``.

        Args:
            keypoints: x, y, v per person and part (any pixel frame).
            scales: each person's scale in the same pixels (``sqrt(area)`` for COCO).
            min_std: floor of a pair's deviation.
            min_count: people needed to fit a pair.

        Shapes:
            keypoints: (N, C, 3), scales: (N,)
        """
        kp = np.asarray(keypoints, dtype=np.float64)
        s = np.asarray(scales, dtype=np.float64).reshape(-1)
        if kp.ndim != 3 or kp.shape[2] != 3 or kp.shape[1] < 1:
            raise ValueError(f"keypoints: expected shape (N, C, 3), got {kp.shape}")
        if s.shape[0] != kp.shape[0]:
            raise ValueError(f"scales: expected {kp.shape[0]} values (one per person), got "
                             f"{s.shape[0]}")
        if not (np.isfinite(s).all() and (s > 0).all()):
            raise ValueError("scales: expected finite values > 0")
        c = kp.shape[1]
        lab = kp[:, :, 2] > 0
        both = lab[:, :, None] & lab[:, None, :]
        dist = np.linalg.norm(kp[:, :, None, :2] - kp[:, None, :, :2], axis=-1)
        logd = np.log(np.maximum(dist / s[:, None, None], MIN_DISTANCE))
        count = both.sum(0)
        mean = np.where(both, logd, 0.0).sum(0) / np.maximum(count, 1)
        var = np.where(both, (logd - mean) ** 2, 0.0).sum(0) / np.maximum(count - 1, 1)
        std = np.maximum(np.sqrt(var), min_std)
        off = ~np.eye(c, dtype=bool)
        fitted = (count >= max(min_count, 2)) & off
        fill = mean[fitted].mean() if fitted.any() else 0.0
        mean = np.where(fitted, mean, fill)
        std = np.where(fitted, std, max(FLAT_STD, min_std))
        return cls(mean, std)

    @classmethod
    def from_coco(cls, annotations: str | os.PathLike[str] | Mapping[str, Any],
                  **kwargs: Any) -> PosePrior:
        """Fit a prior on the non-crowd people with keypoints of a COCO keypoints JSON.

        A person's scale is ``sqrt(area)``, or ``sqrt(w·h)`` of its bbox when the area is
        missing or 0; people with neither are skipped. ``kwargs`` go to :meth:`fit`.

        Raises:
            ValueError: naming the file (or "annotations") and the annotation id when an
                annotation has no usable keypoints, or when no person can be used.
        """
        where = "annotations" if isinstance(annotations, Mapping) else str(annotations)
        data = (annotations if isinstance(annotations, Mapping)
                else read_json(annotations, "COCO keypoint annotation"))
        if not isinstance(data, Mapping) or "annotations" not in data:
            raise ValueError(f"{where}: expected a COCO JSON with 'annotations'")
        rows, scales = [], []
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0) or not ann.get("num_keypoints", 0):
                continue
            kp = ann.get("keypoints")
            if not isinstance(kp, list) or len(kp) % 3 or not kp:
                raise ValueError(f"{where}: annotation {ann.get('id')!r}: expected 'keypoints' "
                                 f"as a list of x, y, v triples")
            area = float(ann.get("area") or 0.0)
            if area <= 0 and len(ann.get("bbox") or ()) == 4:
                area = float(ann["bbox"][2]) * float(ann["bbox"][3])
            if area > 0:
                rows.append(kp)
                scales.append(math.sqrt(area))
        if not rows:
            raise ValueError(f"{where}: no non-crowd person with keypoints and an area or bbox")
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"{where}: annotations have different keypoint counts")
        kp = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1, 3)
        return cls.fit(kp, np.asarray(scales), **kwargs)

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``format``, ``num_parts``, ``mean``, ``std``)."""
        return {"format": FORMAT, "num_parts": self.num_parts,
                "mean": np.round(self.mean, 6).tolist(), "std": np.round(self.std, 6).tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "pose prior") -> PosePrior:
        """The prior of :meth:`to_dict`; errors name ``where`` and the key."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"{where}: format: expected {FORMAT!r}, got {got!r}")
        for key in ("mean", "std"):
            if key not in data:
                raise ValueError(f"{where}: {key}: missing")
        try:
            return cls(np.asarray(data["mean"], np.float64), np.asarray(data["std"], np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the prior as JSON (atomically)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PosePrior:
        """Read a prior written by :meth:`save`."""
        return cls.from_dict(read_json(path, "pose prior"), str(path))


# COCO's 17 person keypoints, fitted by PosePrior.from_coco on
# tests/data/coco_kp_ccby/person_keypoints_ccby.json (rounded to 3 decimals).
COCO_MEAN: tuple[tuple[float, ...], ...] = (
    (0.000, -2.568, -2.468, -1.674, -1.627, -0.848, -0.973, -0.202, -0.518, -0.068, -0.363,
     -0.020, -0.034, 0.108, 0.157, 0.500, 0.467),
    (-2.568, 0.000, -2.209, -1.957, -1.341, -0.780, -0.839, -0.149, -0.397, 0.002, -0.259, 0.045,
     0.027, 0.172, 0.223, 0.542, 0.500),
    (-2.468, -2.209, 0.000, -1.303, -1.969, -0.732, -0.796, -0.191, -0.306, -0.085, -0.231,
     0.023, 0.051, 0.165, 0.212, 0.550, 0.485),
    (-1.674, -1.957, -1.303, 0.000, -1.037, -0.999, -0.812, -0.282, -0.336, -0.042, -0.143,
     0.042, 0.052, 0.138, 0.199, 0.525, 0.459),
    (-1.627, -1.341, -1.969, -1.037, 0.000, -0.675, -1.020, -0.188, -0.409, -0.105, -0.304,
     0.014, 0.010, 0.175, 0.147, 0.557, 0.401),
    (-0.848, -0.780, -0.732, -0.999, -0.675, 0.000, -0.774, -0.823, -0.412, -0.496, -0.367,
     -0.352, -0.235, -0.073, 0.019, 0.380, 0.358),
    (-0.973, -0.839, -0.796, -0.812, -1.020, -0.774, 0.000, -0.392, -0.950, -0.155, -0.667,
     -0.231, -0.344, 0.020, -0.039, 0.423, 0.349),
    (-0.202, -0.149, -0.191, -0.282, -0.188, -0.823, -0.392, 0.000, -0.432, -1.139, -0.366,
     -0.884, -0.485, -0.417, -0.090, 0.149, 0.206),
    (-0.518, -0.397, -0.306, -0.336, -0.409, -0.412, -0.950, -0.432, 0.000, -0.410, -1.099,
     -0.541, -0.848, -0.227, -0.364, 0.250, 0.166),
    (-0.068, 0.002, -0.085, -0.042, -0.105, -0.496, -0.155, -1.139, -0.410, 0.000, -0.382,
     -1.036, -0.533, -0.493, -0.245, -0.135, 0.058),
    (-0.363, -0.259, -0.231, -0.143, -0.304, -0.367, -0.667, -0.366, -1.099, -0.382, 0.000,
     -0.644, -0.960, -0.323, -0.414, 0.227, 0.125),
    (-0.020, 0.045, 0.023, 0.042, 0.014, -0.352, -0.231, -0.884, -0.541, -1.036, -0.644, 0.000,
     -1.160, -0.721, -0.526, -0.035, -0.063),
    (-0.034, 0.027, 0.051, 0.052, 0.010, -0.235, -0.344, -0.485, -0.848, -0.533, -0.960, -1.160,
     0.000, -0.506, -0.656, 0.002, -0.066),
    (0.108, 0.172, 0.165, 0.138, 0.175, -0.073, 0.020, -0.417, -0.227, -0.493, -0.323, -0.721,
     -0.506, 0.000, -1.279, -0.594, -0.531),
    (0.157, 0.223, 0.212, 0.199, 0.147, 0.019, -0.039, -0.090, -0.364, -0.245, -0.414, -0.526,
     -0.656, -1.279, 0.000, -0.464, -0.641),
    (0.500, 0.542, 0.550, 0.525, 0.557, 0.380, 0.423, 0.149, 0.250, -0.135, 0.227, -0.035, 0.002,
     -0.594, -0.464, 0.000, -1.182),
    (0.467, 0.500, 0.485, 0.459, 0.401, 0.358, 0.349, 0.206, 0.166, 0.058, 0.125, -0.063, -0.066,
     -0.531, -0.641, -1.182, 0.000),
)
COCO_STD: tuple[tuple[float, ...], ...] = (
    (1.000, 0.511, 0.548, 0.430, 0.520, 0.536, 0.496, 0.469, 0.461, 0.405, 0.586, 0.302, 0.279,
     0.381, 0.475, 0.200, 0.226),
    (0.511, 1.000, 0.699, 0.433, 0.542, 0.513, 0.519, 0.471, 0.454, 0.379, 0.615, 0.309, 0.296,
     0.382, 0.467, 0.200, 0.235),
    (0.548, 0.699, 1.000, 0.456, 0.549, 0.580, 0.443, 0.518, 0.380, 0.586, 0.555, 0.350, 0.309,
     0.249, 0.457, 0.200, 0.236),
    (0.430, 0.433, 0.456, 1.000, 0.456, 0.520, 0.574, 0.421, 0.534, 0.386, 0.508, 0.311, 0.308,
     0.363, 0.500, 0.200, 0.253),
    (0.520, 0.542, 0.549, 0.456, 1.000, 0.522, 0.493, 0.481, 0.400, 0.619, 0.517, 0.340, 0.304,
     0.251, 0.497, 0.200, 0.251),
    (0.536, 0.513, 0.580, 0.520, 0.522, 1.000, 0.525, 0.407, 0.379, 0.334, 0.683, 0.287, 0.325,
     0.384, 0.502, 0.212, 0.284),
    (0.496, 0.519, 0.443, 0.574, 0.493, 0.525, 1.000, 0.385, 0.331, 0.386, 0.360, 0.262, 0.226,
     0.293, 0.390, 0.200, 0.223),
    (0.469, 0.471, 0.518, 0.421, 0.481, 0.407, 0.385, 1.000, 0.476, 0.441, 0.533, 0.377, 0.296,
     0.710, 0.342, 0.349, 0.320),
    (0.461, 0.454, 0.380, 0.534, 0.400, 0.379, 0.331, 0.476, 1.000, 0.795, 0.448, 0.529, 0.459,
     0.485, 0.548, 0.314, 0.313),
    (0.405, 0.379, 0.586, 0.386, 0.619, 0.334, 0.386, 0.441, 0.795, 1.000, 0.688, 0.736, 0.586,
     0.373, 0.508, 0.809, 0.343),
    (0.586, 0.615, 0.555, 0.508, 0.517, 0.683, 0.360, 0.533, 0.448, 0.688, 1.000, 0.703, 0.817,
     0.483, 0.506, 0.203, 0.264),
    (0.302, 0.309, 0.350, 0.311, 0.340, 0.287, 0.262, 0.377, 0.529, 0.736, 0.703, 1.000, 0.416,
     0.352, 0.376, 0.237, 0.406),
    (0.279, 0.296, 0.309, 0.308, 0.304, 0.325, 0.226, 0.296, 0.459, 0.586, 0.817, 0.416, 1.000,
     0.230, 0.422, 0.309, 0.265),
    (0.381, 0.382, 0.249, 0.363, 0.251, 0.384, 0.293, 0.710, 0.485, 0.373, 0.483, 0.352, 0.230,
     1.000, 0.431, 0.212, 0.276),
    (0.475, 0.467, 0.457, 0.500, 0.497, 0.502, 0.390, 0.342, 0.548, 0.508, 0.506, 0.376, 0.422,
     0.431, 1.000, 0.282, 0.202),
    (0.200, 0.200, 0.200, 0.200, 0.200, 0.212, 0.200, 0.349, 0.314, 0.809, 0.203, 0.237, 0.309,
     0.212, 0.282, 1.000, 0.625),
    (0.226, 0.235, 0.236, 0.253, 0.251, 0.284, 0.223, 0.320, 0.313, 0.343, 0.264, 0.406, 0.265,
     0.276, 0.202, 0.625, 1.000),
)
