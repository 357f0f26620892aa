"""Single-part instances (objects) from class heatmaps: :func:`decode_objects`
(docs/design.md §4)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from aehg.decoding.instances import Instances
from aehg.decoding.peaks import (
    as_maps,
    check_float,
    check_int,
    check_kernel,
    device_of,
    find_peaks,
    gather,
    object_inputs,
    subpixel,
)

__all__ = ["decode_objects"]


def decode_objects(heatmaps: np.ndarray | torch.Tensor, tags: np.ndarray | torch.Tensor,
                   sizes: np.ndarray | torch.Tensor | None = None, *, nms_kernel: int = 3,
                   top_k: int = 100, detection_threshold: float = 0.1
                   ) -> Instances | list[Instances]:
    """Single-part instances (objects): every peak of a class heatmap is an instance.

    Peaks are NMS maxima (``nms_kernel`` window) above ``detection_threshold``; the best
    ``top_k`` over all classes are kept (ties: lower class, then lower pixel index). Each
    instance has its class as ``labels``, the peak heat as score, the centre (quarter-pixel
    adjusted like :func:`group`) in ``keypoints[n, label]`` (all other parts absent), the tag
    of its class's tag channel (or of the shared channel when C_t = 1), and, when ``sizes`` is
    given, the box ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)`` with w, h read at the peak
    pixel (negative sizes count as 0).

    Shapes:
        heatmaps: (C, H, W) or (B, C, H, W)
        tags: (C_t, H, W) or (C_t, E, H, W); batched with a leading B; C_t = C or 1
        sizes: (2, H, W) or (B, 2, H, W): box width, height in heatmap pixels
        keypoints: (N, C, 3), scores, labels: (N,), tags: (N, E), boxes: (N, 4) per image

    Returns:
        An Instances (with labels, and boxes when sizes are given), or a list for batches.

    Raises:
        ValueError: wrong rank or shapes, NaN/infinite values, invalid parameters.
    """
    nms_kernel = check_kernel(nms_kernel)
    top_k = check_int(top_k, "top_k", 1)
    detection_threshold = check_float(detection_threshold, "detection_threshold", 0.0)
    batched, heats, tag_maps, (c, h, w) = object_inputs(heatmaps, tags)
    size_maps: list[Any] = [None] * len(heats)
    if sizes is not None:
        exp = "(B, 2, H, W)" if batched else "(2, H, W)"
        s = as_maps(sizes, "sizes", (4 if batched else 3,), exp, device_of(heatmaps))
        if not batched:
            s = s[None]
        if s.shape[0] != len(heats) or tuple(s.shape[1:]) != (2, h, w):
            raise ValueError(f"sizes: expected shape {exp} matching heatmaps "
                             f"{(len(heats), c, h, w) if batched else (c, h, w)}, got "
                             f"{tuple(np.shape(sizes))}")
        size_maps = list(s)
    out = []
    for heat, tag, size in zip(heats, tag_maps, size_maps, strict=True):
        peaks = find_peaks(heat, nms_kernel, detection_threshold, top_k, per_channel=False)
        # Decreasing score over all classes (the peaks come sorted by class).
        order = np.lexsort((peaks.pixel, peaks.channel, -peaks.score))
        label, pixel, score = peaks.channel[order], peaks.pixel[order], peaks.score[order]
        n = label.size
        emb = gather(tag, label if tag.shape[0] == c else np.zeros_like(label), pixel)
        xs, ys = subpixel(heat, label, pixel, adjust=True)
        kp = np.zeros((n, c, 3), np.float32)
        kp[np.arange(n), label] = np.stack([xs, ys, score], 1)
        boxes = None
        if size is not None:
            wh = np.maximum(gather(size[None], np.zeros_like(label), pixel), 0.0)
            half = wh / 2
            boxes = np.stack([xs - half[:, 0], ys - half[:, 1], xs + half[:, 0],
                              ys + half[:, 1]], 1)
        out.append(Instances(kp, score, emb, label, boxes))
    return out if batched else out[0]
