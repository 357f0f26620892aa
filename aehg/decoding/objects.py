"""Single-part instances (objects) from class heatmaps: :func:`decode_objects`, and the known
objects of sgcls / predcls read off the maps: :func:`read_objects` (docs/design.md §4)."""

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

__all__ = ["decode_objects", "read_objects"]


def decode_objects(heatmaps: np.ndarray | torch.Tensor, tags: np.ndarray | torch.Tensor,
                   sizes: np.ndarray | torch.Tensor | None = None, *, nms_kernel: int = 3,
                   top_k: int = 100, detection_threshold: float = 0.1, slots: int = 1
                   ) -> Instances | list[Instances]:
    """Single-part instances (objects): every peak of a class heatmap is an instance.

    Peaks are NMS maxima (``nms_kernel`` window) above ``detection_threshold``; the best
    ``top_k`` over all classes are kept (ties: lower class, then lower pixel index). Each
    instance has its class as ``labels``, the peak heat as score, the centre (quarter-pixel
    adjusted like :func:`group`) in ``keypoints[n, label]`` (all other parts absent), the tag
    of its class's tag channel (or of the shared channel when C_t = 1), and, when ``sizes`` is
    given, the box ``(cx - w/2, cy - h/2, cx + w/2, cy + h/2)`` with w, h read at the peak
    pixel (negative sizes count as 0).

    With S = ``slots`` > 1 (docs/design.md "Slots") the maps hold S slots, slot-major: every
    (slot, class) heatmap channel is searched, so each occupied slot of a pixel gives its own
    instance, whose tag and box size are read in that slot (ties: lower slot first).

    Shapes:
        heatmaps: (S·C, H, W) or (B, S·C, H, W)
        tags: (C_t, H, W) or (C_t, E, H, W); batched with a leading B; C_t = C or 1 (S = 1),
        C_t = S (S > 1)
        sizes: (2·S, H, W) or (B, 2·S, H, W): box width, height in heatmap pixels
        keypoints: (N, C, 3), scores, labels: (N,), tags: (N, E), boxes: (N, 4) per image

    Returns:
        An Instances (with labels, and boxes when sizes are given), or a list for batches.

    Raises:
        ValueError: wrong rank or shapes, NaN/infinite values, invalid parameters.
    """
    nms_kernel = check_kernel(nms_kernel)
    top_k = check_int(top_k, "top_k", 1)
    detection_threshold = check_float(detection_threshold, "detection_threshold", 0.0)
    slots = check_int(slots, "slots", 1)
    if slots == 1:
        batched, heats, tag_maps, (c, h, w) = object_inputs(heatmaps, tags)
    else:
        batched, heats, tag_maps, (c, h, w) = _slot_inputs(heatmaps, tags, slots)
    size_maps: list[Any] = [None] * len(heats)
    if sizes is not None:
        exp = f"(B, {2 * slots}, H, W)" if batched else f"({2 * slots}, H, W)"
        s = as_maps(sizes, "sizes", (4 if batched else 3,), exp, device_of(heatmaps))
        if not batched:
            s = s[None]
        if s.shape[0] != len(heats) or tuple(s.shape[1:]) != (2 * slots, h, w):
            raise ValueError(f"sizes: expected shape {exp} matching heatmaps "
                             f"{(len(heats), c, h, w) if batched else (c, h, w)}, got "
                             f"{tuple(np.shape(sizes))}")
        size_maps = list(s)
    out = []
    for heat, tag, size in zip(heats, tag_maps, size_maps, strict=True):
        peaks = find_peaks(heat, nms_kernel, detection_threshold, top_k, per_channel=False)
        # Decreasing score over all classes (the peaks come sorted by class).
        order = np.lexsort((peaks.pixel, peaks.channel, -peaks.score))
        chan, pixel, score = peaks.channel[order], peaks.pixel[order], peaks.score[order]
        slot, label = chan // c, chan % c
        n = label.size
        if slots > 1:
            emb = gather(tag, slot, pixel)
        else:
            emb = gather(tag, label if tag.shape[0] == c else np.zeros_like(label), pixel)
        xs, ys = subpixel(heat, chan, pixel, adjust=True)
        kp = np.zeros((n, c, 3), np.float32)
        kp[np.arange(n), label] = np.stack([xs, ys, score], 1)
        boxes = None
        if size is not None:
            wh = np.maximum(gather(size.reshape(slots, 2, h, w), slot, pixel), 0.0)
            half = wh / 2
            boxes = np.stack([xs - half[:, 0], ys - half[:, 1], xs + half[:, 0],
                              ys + half[:, 1]], 1)
        out.append(Instances(kp, score, emb, label, boxes))
    return out if batched else out[0]


def read_objects(heatmaps: np.ndarray | torch.Tensor, tags: np.ndarray | torch.Tensor,
                 boxes: np.ndarray, *, labels: np.ndarray | None = None, slots: int = 1
                 ) -> Instances:
    """Known objects (sgcls / predcls, docs/design.md §2 "Tasks") read off one image's maps.

    Object n is the given box n, in the given order (not sorted by score). Its centre is the
    box centre, read at the rounded pixel (half-up, clamped into the map). Without ``labels``
    (sgcls) its class is the argmax over classes (and slots) of the heatmaps there and its
    score that heat; with ``labels`` (predcls) the class is given and the score is 1. Its tag
    is read at the centre in its class's tag channel (or the shared one), with slots in the
    slot where its class scores highest.

    Args:
        heatmaps, tags: one image's maps, as for :func:`decode_objects`.
        boxes: x1, y1, x2, y2 in heatmap pixels.
        labels: the given classes (predcls), or None (sgcls: predicted).
        slots: S, the object slots of the maps.

    Returns:
        Instances with ``labels`` and ``boxes`` (the given boxes); a present part's score is at
        least 1e-6 (score 0 marks an absent part), the instance score is the raw heat.

    Raises:
        ValueError: batched or mis-shaped maps, boxes not (N, 4) or not finite, labels of
            another length or outside the classes.

    Shapes:
        heatmaps: (S·C, H, W); tags: (C_t, E, H, W) (S = 1) or (S, E, H, W); boxes: (N, 4)
        -> keypoints (N, C, 3), scores, labels (N,), tags (N, E), boxes (N, 4)
    """
    slots = check_int(slots, "slots", 1)
    if np.ndim(heatmaps) != 3:
        raise ValueError(f"heatmaps: expected one image's maps (S·C, H, W), got shape "
                         f"{tuple(np.shape(heatmaps))}")
    if slots == 1:
        _, heats, tag_maps, (c, h, w) = object_inputs(heatmaps, tags)
    else:
        _, heats, tag_maps, (c, h, w) = _slot_inputs(heatmaps, tags, slots)
    heat, tag = heats[0], tag_maps[0]
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4 or not np.isfinite(b).all():
        raise ValueError(f"boxes: expected finite (N, 4) x1, y1, x2, y2, got shape {b.shape}")
    n = len(b)
    cx, cy = (b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0
    ix = np.clip(np.floor(cx + 0.5), 0, w - 1).astype(np.int64)
    iy = np.clip(np.floor(cy + 0.5), 0, h - 1).astype(np.int64)
    pixel = iy * w + ix
    flat = heat.reshape(slots * c, h * w)
    if isinstance(flat, torch.Tensor):
        at = flat[:, torch.from_numpy(pixel).to(flat.device)].float().cpu().numpy()
    else:
        at = flat[:, pixel]
    at = np.asarray(at, np.float64).reshape(slots, c, n)           # (S, C, N)
    if labels is None:
        best = at.max(axis=0)                                        # (C, N)
        label = best.argmax(axis=0)
        score = best[label, np.arange(n)]
    else:
        label = np.asarray(labels)
        if label.shape != (n,) or (n and not np.issubdtype(label.dtype, np.integer)):
            raise ValueError(f"labels: expected {n} integer classes (one per box), got "
                             f"{label.dtype} {label.shape}")
        label = label.astype(np.int64)
        if n and (label.min() < 0 or label.max() >= c):
            raise ValueError(f"labels: expected classes in 0..{c - 1}, got {label.tolist()}")
        score = np.ones(n)
    slot = at[:, label, np.arange(n)].argmax(axis=0) if n else np.zeros(0, np.int64)
    if slots > 1:
        emb = gather(tag, slot, pixel)
    else:
        emb = gather(tag, label if tag.shape[0] == c else np.zeros_like(label), pixel)
    kp = np.zeros((n, c, 3), np.float32)
    kp[np.arange(n), label] = np.stack([cx, cy, np.maximum(score, 1e-6)], 1)
    return Instances(kp, score, emb.reshape(n, -1), label, b)


def _slot_inputs(heatmaps: Any, tags: Any, slots: int
                 ) -> tuple[bool, list[Any], list[Any], tuple[int, int, int]]:
    """Check slot maps: (batched, per-image (S·C, H, W) heat, per-image (S, E, H, W) tags,
    (C, H, W) of one slot)."""
    device = device_of(heatmaps)
    heat = as_maps(heatmaps, "heatmaps", (3, 4), "(S·C, H, W) or (B, S·C, H, W)", device)
    batched = heat.ndim == 4
    if not batched:
        heat = heat[None]
    b, sc, h, w = heat.shape
    exp = f"(B, {slots}, E, H, W)" if batched else f"({slots}, E, H, W)"
    t = as_maps(tags, "tags", (5 if batched else 4,), exp, device)
    if not batched:
        t = t[None]
    if sc % slots or t.shape[0] != b or t.shape[1] != slots or t.shape[2] == 0 \
            or tuple(t.shape[3:]) != (h, w):
        raise ValueError(f"tags: expected shape {exp} matching heatmaps {tuple(heat.shape)} "
                         f"with {slots} slots (heatmap channels a multiple of the slots), got "
                         f"{tuple(np.shape(tags))}")
    return batched, list(heat), list(t), (sc // slots, h, w)
