"""Grouping part detections into instances by their tags: :func:`group` (associative
embedding, docs/design.md §4).

Example:
    >>> out = model(images)[-1].objects                      # heatmaps (B, 17, H, W)
    >>> people = aehg.group(out.heatmaps, out.tags)          # list of Instances, one per image
    >>> people[0].to_image(meta[0]["transform"]).keypoints   # (N, 17, 3) in image pixels
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from aehg.decoding.instances import Instances
from aehg.decoding.peaks import (
    WORKSPACE,
    Peaks,
    check_float,
    check_int,
    check_kernel,
    find_peaks,
    gather,
    object_inputs,
    subpixel,
    to_host,
)
from aehg.keypoints import COCO_PART_ORDER

__all__ = ["TIE_BREAK", "group"]

# Scale (relative to ``tag_threshold``) of the score term of the matching cost; see ``_assign``.
TIE_BREAK = 1e-9


# --------------------------------------------------------------------------- matching


def _assign(dist: np.ndarray, tag_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Match candidates (columns, sorted by decreasing score) to instances (rows).

    A candidate either joins an instance at cost ``d`` (its tag distance to the instance's mean
    tag, only when ``d < tag_threshold``) or starts a new instance at cost ``tag_threshold``.
    The matching minimises the total cost, i.e. ``linear_sum_assignment`` on

        cost[m, k] = d[m, k] - tag_threshold - TIE_BREAK * tag_threshold * (K - k) / K
                         if d[m, k] < tag_threshold, else 0

    where 0 means "not matched". The last term only breaks ties of the distance sum (sums
    within ~1e-9·tag_threshold of each other): then the higher-scoring candidates join.

    Shapes:
        dist: (M, K) float64

    Returns:
        (instance indices, candidate indices) of the accepted pairs.
    """
    ok = dist < tag_threshold
    if not ok.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if ok.sum(0).max() == 1 and ok.sum(1).max() == 1:
        # No conflict: every admissible pair is in the (unique) optimum.
        rows, cols = np.nonzero(ok)
        return rows, cols
    rows = np.flatnonzero(ok.any(1))
    cols = np.flatnonzero(ok.any(0))
    sub_ok = ok[np.ix_(rows, cols)]
    k = dist.shape[1]
    bonus = (TIE_BREAK * tag_threshold / k) * (k - cols)
    cost = np.where(sub_ok, dist[np.ix_(rows, cols)] - tag_threshold - bonus, 0.0)
    r, c = linear_sum_assignment(cost)
    keep = sub_ok[r, c]
    return rows[r[keep]], cols[c[keep]]


def _match(peaks: Peaks, tags: np.ndarray, part_order: np.ndarray, num_parts: int,
           tag_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Group candidates into instances, one part at a time in ``part_order``.

    Returns:
        members (M, C) int64: candidate index per part, -1 when absent; and the instance mean
        tags (M, E) float64.
    """
    n, e = tags.shape
    bounds = np.searchsorted(peaks.channel, np.arange(num_parts + 1))
    members = np.full((n, num_parts), -1, np.int64)
    tag_sum = np.zeros((n, e))
    count = np.zeros(n)
    mean = np.zeros((n, e))
    m = 0
    for part in part_order:
        s, t = bounds[part], bounds[part + 1]
        if s == t:
            continue
        cand = tags[s:t]
        new = np.arange(t - s)
        if m:
            if e == 1:
                dist = np.abs(mean[:m, 0:1] - cand[None, :, 0])
            else:
                dist = np.sqrt(((mean[:m, None, :] - cand[None]) ** 2).sum(-1))
            inst, col = _assign(dist, tag_threshold)
            if inst.size:
                members[inst, part] = s + col
                tag_sum[inst] += cand[col]
                count[inst] += 1
                mean[inst] = tag_sum[inst] / count[inst, None]
                taken = np.zeros(t - s, bool)
                taken[col] = True
                new = new[~taken]
        k = new.size
        members[m:m + k, part] = s + new
        tag_sum[m:m + k] = cand[new]
        mean[m:m + k] = cand[new]
        count[m:m + k] = 1
        m += k
    return members[:m], mean[:m]


_REFINE_CHUNK = 1 << 20  # pixels × instances per refinement pass


def _refine(keypoints: np.ndarray, means: np.ndarray, heat: np.ndarray, tags: np.ndarray,
            adjust: bool) -> None:
    """Fill missing parts in place: argmax over pixels of ``heat - rint(|tag - mean tag|)``.

    ``rint`` rounds half to even (``np.round``, as in the AE code); distances are computed in
    float32; the first pixel wins ties; a part is filled only when the heat at the chosen pixel
    is > 0. Vectorised over the instances missing a part (one pass set per part).

    Shapes:
        keypoints: (N, C, 3), means: (N, E), heat: (C, H, W), tags: (C_t, E, H, W)
    """
    c, h, w = heat.shape
    e = tags.shape[1]
    missing = keypoints[:, :, 2] == 0
    mean32 = means.astype(np.float32)
    flat_heat = heat.reshape(c, h * w)
    flat_tags = tags.reshape(tags.shape[0], e, h * w)
    who_all, part_all, best_all = [], [], []
    rows = max(1, _REFINE_CHUNK // (h * w))  # instances per pass: bounded scratch memory
    chunks = [(part, who[i:i + rows]) for part in np.flatnonzero(missing.any(0))
              for who in [np.flatnonzero(missing[:, part])] for i in range(0, who.size, rows)]
    for part, who in chunks:
        t = flat_tags[part if flat_tags.shape[0] == c else 0]
        m = mean32[who]
        size = who.size * h * w
        buf = WORKSPACE.get("refine0", size).reshape(who.size, h * w)
        np.subtract(t[0], m[:, 0:1], out=buf)
        if e == 1:
            np.abs(buf, out=buf)
        else:
            np.square(buf, out=buf)
            diff = WORKSPACE.get("refine1", size).reshape(who.size, h * w)
            for j in range(1, e):  # a handful of embedding dimensions
                np.subtract(t[j], m[:, j:j + 1], out=diff)
                np.square(diff, out=diff)
                buf += diff
            np.sqrt(buf, out=buf)
        np.rint(buf, out=buf)
        np.subtract(flat_heat[part], buf, out=buf)
        who_all.append(who)
        part_all.append(np.full(who.size, part))
        best_all.append(buf.argmax(1))
    if not who_all:
        return
    who, part, best = (np.concatenate(v) for v in (who_all, part_all, best_all))
    val = flat_heat[part, best]
    fill = val > 0
    who, part, best, val = who[fill], part[fill], best[fill], val[fill]
    xs, ys = subpixel(heat, part, best, adjust)
    keypoints[who, part] = np.stack([xs, ys, val], 1)


# --------------------------------------------------------------------------- public API


def group(heatmaps: np.ndarray | torch.Tensor, tags: np.ndarray | torch.Tensor, *,
          nms_kernel: int = 5, top_k: int = 30, detection_threshold: float = 0.1,
          tag_threshold: float = 1.0, max_instances: int | None = 30,
          part_order: tuple[int, ...] | list[int] | None = None, adjust: bool = True,
          refine: bool = True) -> Instances | list[Instances]:
    """Group part detections into instances by their tags (docs/design.md §4).

    1. Candidates: pixels equal to the max of their ``nms_kernel`` window with a heat >
       ``detection_threshold``, the best ``top_k`` per part (ties: lower pixel index first).
    2. Parts are visited in ``part_order``; the first part's candidates seed instances; each
       later part's candidates are matched to the existing instances by the L2 distance of
       their tag to each instance's mean tag with ``scipy.optimize.linear_sum_assignment`` on
       the cost of ``_assign``: a candidate joins an instance at cost ``d`` when ``d <
       tag_threshold`` or starts a new instance at cost ``tag_threshold``; the total is
       minimised, and the detection score (through its rank) only breaks ties. No cap on the
       number of instances while matching.
    3. Coordinates move a quarter pixel towards the higher neighbour (``adjust``).
    4. Instance score = mean over the C parts of the grouped part scores (absent = 0); the best
       ``max_instances`` are kept, sorted by decreasing score (ties: creation order).
    5. ``refine``: each missing part of a kept instance becomes the argmax over pixels of
       ``heat - rint(|tag - mean tag|)`` (``np.rint``: halves round to even, as the AE
       code's ``np.round``), filled only when the heat there is > 0. Present parts never
       change, and neither do scores and tags.

    Args:
        heatmaps: part heatmaps (activated).
        tags: per-part tags (or one tag map shared by all parts, C_t = 1).
        nms_kernel: odd NMS window size.
        top_k: candidates per part.
        detection_threshold: minimum heat (>= 0) of a candidate.
        tag_threshold: maximum tag distance (exclusive) for joining an instance.
        max_instances: instances kept per image (None: all).
        part_order: permutation of 0…C-1; default COCO order for C = 17, else 0…C-1.
        adjust: quarter-pixel adjustment.
        refine: fill missing parts.

    Shapes:
        heatmaps: (C, H, W) or (B, C, H, W)
        tags: (C_t, H, W) or (C_t, E, H, W); batched (B, C_t, H, W) or (B, C_t, E, H, W)
        keypoints: (N, C, 3), scores: (N,), tags: (N, E) in each returned Instances

    Returns:
        An Instances, or a list of them (one per image) for batched input.

    Raises:
        ValueError: wrong rank or shapes, NaN/infinite values, invalid parameters.
    """
    nms_kernel = check_kernel(nms_kernel)
    top_k = check_int(top_k, "top_k", 1)
    detection_threshold = check_float(detection_threshold, "detection_threshold", 0.0)
    tag_threshold = check_float(tag_threshold, "tag_threshold", positive=True)
    if max_instances is not None:
        max_instances = check_int(max_instances, "max_instances", 0)
    batched, heats, tag_maps, (c, _, _) = object_inputs(heatmaps, tags)
    order = _part_order(part_order, c)
    out = []
    for heat, tag in zip(heats, tag_maps, strict=True):
        peaks = find_peaks(heat, nms_kernel, detection_threshold, top_k, per_channel=True)
        cand_tags = gather(tag, peaks.channel if tag.shape[0] == c else
                            np.zeros_like(peaks.channel), peaks.pixel)
        members, means = _match(peaks, cand_tags, order, c, tag_threshold)
        xs, ys = subpixel(heat, peaks.channel, peaks.pixel, adjust)
        kp = np.zeros((members.shape[0], c, 3), np.float32)
        present = members >= 0
        sel = members[present]
        kp[present] = np.stack([xs[sel], ys[sel], peaks.score[sel]], 1)
        scores = kp[:, :, 2].mean(1, dtype=np.float64)
        keep = np.argsort(-scores, kind="stable")[:max_instances]
        kp, scores, means = kp[keep], scores[keep], means[keep]
        if refine and kp.shape[0] and (kp[:, :, 2] == 0).any():
            _refine(kp, means, to_host(heat), to_host(tag), adjust)
        out.append(Instances(kp, scores, means))
    return out if batched else out[0]


def _part_order(part_order: Any, c: int) -> np.ndarray:
    if part_order is None:
        return np.asarray(COCO_PART_ORDER if c == 17 else range(c), np.int64)
    try:
        order = np.asarray(part_order)
    except (TypeError, ValueError):
        order = np.zeros(0)
    if (order.ndim != 1 or order.dtype.kind not in "iu"
            or sorted(order.tolist()) != list(range(c))):
        raise ValueError(f"part_order: expected a permutation of 0..{c - 1} (C = {c} parts), "
                         f"got {part_order!r}")
    return order.astype(np.int64)
