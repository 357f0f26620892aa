"""Single-person decoding: one instance per image, each joint at its heatmap's maximum
(docs/design.md §4).

The hourglass papers' single-person decoder: the argmax of every joint's heatmap, moved a
quarter pixel towards its higher neighbour (:func:`aehg.decoding.peaks.subpixel`, the same
adjustment as :func:`aehg.group`). No threshold and no grouping: the person is given (cropped
around its centre and scale), so every joint gets a position.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aehg.decoding.instances import Instances
from aehg.decoding.peaks import as_maps, device_of, subpixel, to_host

__all__ = ["MIN_JOINT_SCORE", "decode_single"]

# A joint's score is its peak heat, but at least this: every joint is placed, and Instances
# treat a part with score 0 as absent (it would not be mapped back to the picture).
MIN_JOINT_SCORE = 1e-6


def decode_single(heatmaps: Any, *, adjust: bool = True, subpixel_method: str = "quarter"
                  ) -> Instances | list[Instances]:
    """The person of each image: every joint at the maximum of its heatmap.

    Args:
        heatmaps: one image's maps or a batch (numpy arrays or tensors, any device).
        adjust: move each joint a quarter pixel towards the higher neighbour per axis (equal
            neighbours: no move; clamped to the map).
        subpixel_method: ``"quarter"`` (above) or ``"quadratic"`` (vertex of the log-heat
            parabola per axis, :func:`aehg.decoding.peaks.subpixel`).

    Returns:
        One :class:`Instances` per image (a list for a batch) with N = 1: ``keypoints`` x, y in
        heatmap pixels and the peak heat as score (at least :data:`MIN_JOINT_SCORE`), ``scores``
        the mean of the joint scores, ``tags`` empty (E = 0). Ties go to the first pixel in
        row-major order.

    Raises:
        ValueError: wrong rank, empty dimensions or non-finite values.

    Shapes:
        heatmaps: (C, H, W) -> Instances (1, C, 3); (B, C, H, W) -> list of B of them
    """
    heat = as_maps(heatmaps, "heatmaps", (3, 4), "(C, H, W) or (B, C, H, W)",
                   device_of(heatmaps))
    batched = heat.ndim == 4
    maps = heat if batched else heat[None]
    out = []
    for h in maps:
        c = h.shape[0]
        flat = h.reshape(c, -1)
        if isinstance(flat, torch.Tensor):
            best, pixel_t = flat.max(dim=1)
            value, pixel = to_host(best), to_host(pixel_t).astype(np.int64)
        else:
            pixel = flat.argmax(axis=1).astype(np.int64)
            value = flat[np.arange(c), pixel]
        channel = np.arange(c, dtype=np.int64)
        xs, ys = subpixel(h, channel, pixel, adjust, subpixel_method)
        score = np.maximum(np.asarray(value, np.float32), np.float32(MIN_JOINT_SCORE))
        keypoints = np.stack([xs, ys, score], axis=1)[None]
        out.append(Instances(keypoints, np.array([score.mean()], np.float32),
                             np.zeros((1, 0), np.float32)))
    return out if batched else out[0]
