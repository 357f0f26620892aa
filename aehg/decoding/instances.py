"""Decoded instances of one image: :class:`Instances` (docs/design.md §4).

Keypoints, scores, tags (and, for objects, labels and boxes) in heatmap pixels; integer values
are pixel centres (docs/design.md §7). :meth:`Instances.to_image` maps them back to the
picture through the inverse of a sample's ``meta["transform"]``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Instances"]


@dataclass
class Instances:
    """Decoded instances of one image, in heatmap pixels (integer values are pixel centres).

    Attributes:
        keypoints: x, y, score per part; score 0 (and x = y = 0) for an absent part, every
            present part has a score > 0.
        scores: instance scores, sorted in decreasing order by the decoders.
        tags: the instance embeddings (mean tag of the grouped parts).
        labels: class index per instance (objects), or None.
        boxes: x1, y1, x2, y2 per instance (objects with regressed sizes), or None.

    Shapes:
        keypoints: (N, C, 3) float32
        scores: (N,) float32
        tags: (N, E) float32
        labels: (N,) int64 or None
        boxes: (N, 4) float32 or None
    """

    keypoints: np.ndarray
    scores: np.ndarray
    tags: np.ndarray
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.tags = np.asarray(self.tags, dtype=np.float32)
        if self.keypoints.ndim != 3 or self.keypoints.shape[2] != 3:
            raise ValueError(f"Instances.keypoints: expected shape (N, C, 3), got "
                             f"{self.keypoints.shape}")
        n = self.keypoints.shape[0]
        if self.scores.shape != (n,):
            raise ValueError(f"Instances.scores: expected shape ({n},), got {self.scores.shape}")
        if self.tags.ndim != 2 or self.tags.shape[0] != n:
            raise ValueError(f"Instances.tags: expected shape ({n}, E), got {self.tags.shape}")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64)
            if self.labels.shape != (n,):
                raise ValueError(f"Instances.labels: expected shape ({n},), got "
                                 f"{self.labels.shape}")
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.float32)
            if self.boxes.shape != (n, 4):
                raise ValueError(f"Instances.boxes: expected shape ({n}, 4), got "
                                 f"{self.boxes.shape}")

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def num_parts(self) -> int:
        """C, the number of parts (classes) per instance."""
        return int(self.keypoints.shape[1])

    @property
    def embedding_dim(self) -> int:
        """E, the embedding dimension."""
        return int(self.tags.shape[1])

    def __getitem__(self, index: Any) -> Instances:
        """A subset (an int, slice, index array or boolean mask over N); always an Instances."""
        if isinstance(index, numbers.Integral):
            index = [int(index)]
        return Instances(self.keypoints[index], self.scores[index], self.tags[index],
                         None if self.labels is None else self.labels[index],
                         None if self.boxes is None else self.boxes[index])

    @classmethod
    def empty(cls, num_parts: int, embedding_dim: int, labels: bool = False,
              boxes: bool = False) -> Instances:
        """No instance, with the given C and E (and empty labels/boxes when asked)."""
        return cls(np.zeros((0, num_parts, 3), np.float32), np.zeros(0, np.float32),
                   np.zeros((0, embedding_dim), np.float32),
                   np.zeros(0, np.int64) if labels else None,
                   np.zeros((0, 4), np.float32) if boxes else None)

    def transform(self, matrix: np.ndarray) -> Instances:
        """Map present keypoints and boxes through the 2×3 affine ``matrix``.

        Absent parts stay (0, 0, 0); a box becomes the bounding box of its four mapped corners.
        Scores, tags and labels are copied.
        """
        m = _affine(matrix, "matrix")
        kp = self.keypoints.copy()
        present = kp[..., 2] > 0
        xy = kp[..., :2].astype(np.float64) @ m[:, :2].T + m[:, 2]
        kp[..., :2] = np.where(present[..., None], xy, 0.0)
        boxes = None
        if self.boxes is not None:
            b = self.boxes.astype(np.float64)
            corners = np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [0, 3]], b[:, [2, 3]]], 1)
            c = corners @ m[:, :2].T + m[:, 2]
            boxes = np.concatenate([c.min(1), c.max(1)], 1)
        return Instances(kp, self.scores.copy(), self.tags.copy(),
                         None if self.labels is None else self.labels.copy(), boxes)

    def to_image(self, transform: np.ndarray) -> Instances:
        """Bring heatmap coordinates back to the image: apply the inverse of ``transform``.

        Args:
            transform: the 2×3 affine from image pixels to heatmap pixels (a batch's
                ``meta[i]["transform"]``).
        """
        m = np.vstack([_affine(transform, "transform"), [0.0, 0.0, 1.0]])
        if abs(np.linalg.det(m)) < 1e-12:
            raise ValueError("transform: the affine is singular and cannot be inverted")
        return self.transform(np.linalg.inv(m)[:2])


def _affine(matrix: Any, name: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3) or not np.isfinite(m).all():
        raise ValueError(f"{name}: expected a finite 2×3 affine matrix, got shape {m.shape}")
    return m
