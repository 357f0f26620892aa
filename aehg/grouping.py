"""Decoding heatmaps and tags into instances (DESIGN §4): :func:`group` for multi-part instances
(people) and :func:`decode_objects` for single-part instances (objects).

Both work on any heatmaps and tags (numpy arrays or torch tensors on any device) and return
:class:`Instances` in heatmap pixel coordinates (integer values are pixel centres).

Example:
    >>> out = model(images)[-1].objects                      # heatmaps (B, 17, H, W)
    >>> people = aehg.group(out.heatmaps, out.tags)          # list of Instances, one per image
    >>> people[0].to_image(meta[0]["transform"]).keypoints   # (N, 17, 3) in image pixels
"""

from __future__ import annotations

import math
import numbers
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

__all__ = ["COCO_PART_ORDER", "TIE_BREAK", "Instances", "decode_objects", "group"]

# Nose, eyes, ears, shoulders, hips, elbows, wrists, knees, ankles (COCO keypoint indices): the
# order of the AE code, well-localised parts first so that they seed the instances.
COCO_PART_ORDER = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)

# Scale (relative to ``tag_threshold``) of the score term of the matching cost; see ``_assign``.
TIE_BREAK = 1e-9


# --------------------------------------------------------------------------- Instances


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


# --------------------------------------------------------------------------- input checks


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _check_kernel(value: Any, name: str = "nms_kernel") -> int:
    k = _check_int(value, name, 1)
    if k % 2 == 0:
        raise ValueError(f"{name}: expected an odd window size, got {k}")
    return k


def _check_float(value: Any, name: str, low: float = -math.inf, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < low or (positive and v <= 0):
        bound = "> 0" if positive else f">= {low:g}"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return v


def _maps(x: Any, name: str, ranks: tuple[int, ...], expected: str,
          device: torch.device | None = None) -> np.ndarray | torch.Tensor:
    """float32 maps: a numpy array for host data, a tensor on ``device`` otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if device is None and x.device.type == "cpu":
            t = x.to(torch.float32).contiguous()
            arr = t.numpy()
        else:
            arr = x.to(device=device if device is not None else x.device,
                       dtype=torch.float32).contiguous()
    else:
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # reported below as non-finite
                arr = np.ascontiguousarray(x, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: expected a numeric array of shape {expected} ({exc})"
                             ) from exc
        if device is not None:
            arr = torch.from_numpy(arr).to(device)
    if arr.ndim not in ranks:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(arr.shape)}")
    if any(s == 0 for s in arr.shape[-2:]) or (arr.ndim >= 3 and arr.shape[-3] == 0):
        raise ValueError(f"{name}: expected shape {expected} with non-empty dimensions, got "
                         f"{tuple(arr.shape)}")
    finite = (bool(torch.isfinite(arr).all()) if isinstance(arr, torch.Tensor)
              else bool(np.isfinite(arr).all()))
    if not finite:
        raise ValueError(f"{name}: contains NaN or infinite values (or values beyond float32 "
                         f"range); expected finite {expected}")
    return arr


def _device_of(x: Any) -> torch.device | None:
    """The device for torch processing, or None for the numpy path (host data)."""
    if isinstance(x, torch.Tensor) and x.device.type != "cpu":
        return x.device
    return None


def _object_inputs(heatmaps: Any, tags: Any
                   ) -> tuple[bool, list[np.ndarray | torch.Tensor],
                              list[np.ndarray | torch.Tensor], tuple[int, ...]]:
    """Check heatmaps and tags: (batched, per-image (C, H, W) heat, per-image (C_t, E, H, W)
    tags, (C, H, W))."""
    device = _device_of(heatmaps)
    heat = _maps(heatmaps, "heatmaps", (3, 4), "(C, H, W) or (B, C, H, W)", device)
    batched = heat.ndim == 4
    heat_shape = tuple(heat.shape)
    if batched:
        b, c, h, w = heat.shape
        exp = "(B, C, H, W) (E = 1) or (B, C, E, H, W), with tag channels C or 1"
        t = _maps(tags, "tags", (4, 5), exp, device)
        if t.ndim == 4:
            t = t.reshape(t.shape[0], t.shape[1], 1, *t.shape[2:])
        ok = t.shape[0] == b and t.shape[1] in (c, 1) and tuple(t.shape[3:]) == (h, w)
    else:
        c, h, w = heat.shape
        exp = "(C, H, W) (E = 1) or (C, E, H, W), with tag channels C or 1"
        t = _maps(tags, "tags", (3, 4), exp, device)
        if t.ndim == 3:
            t = t.reshape(t.shape[0], 1, *t.shape[1:])
        ok = t.shape[0] in (c, 1) and tuple(t.shape[2:]) == (h, w)
        heat, t = heat[None], t[None]
    if not ok or t.shape[2] == 0:
        raise ValueError(f"tags: expected shape {exp} matching heatmaps {heat_shape}, got "
                         f"{tuple(np.shape(tags))}")
    return batched, list(heat), list(t), heat_shape[-3:]


# --------------------------------------------------------------------------- peaks


@dataclass
class _Peaks:
    """Candidates of one image, sorted by channel, then score (decreasing), then pixel index."""

    channel: np.ndarray  # (n,) int64
    pixel: np.ndarray    # (n,) int64, y * W + x
    score: np.ndarray    # (n,) float32


class _Workspace(threading.local):
    """Per-thread reusable scratch buffers.

    Fresh multi-megabyte numpy arrays cost page faults on every call (about as much as the NMS
    arithmetic itself), so the decoders keep their big temporaries here between calls.
    """

    def __init__(self) -> None:
        self.buffers: dict[tuple[str, str], np.ndarray] = {}

    max_bytes = 16 << 20  # larger buffers are not kept

    def get(self, name: str, size: int, dtype: type = np.float32) -> np.ndarray:
        key = (name, np.dtype(dtype).str)
        buf = self.buffers.get(key)
        if buf is None or buf.size < size:
            buf = np.empty(max(size, 1), dtype)
            if buf.nbytes <= self.max_bytes:
                self.buffers[key] = buf
        return buf[:size]


_WORKSPACE = _Workspace()


def _window_max(a: np.ndarray, k: int, stride: int, b1: np.ndarray, b2: np.ndarray
                ) -> np.ndarray:
    """Running max over k elements spaced ``stride`` apart: out[i] = max a[i + j * stride],
    0 <= j < k, of a flat array (beyond the end counts as -inf).

    Doubling takes about log2 k passes instead of k - 1, each one numpy call between two
    buffers ``b1``, ``b2`` (an overlapping in-place ufunc would make numpy copy). Returns the
    buffer holding the result (``a`` itself when k = 1).
    """
    n = a.shape[0]
    steps = []
    p = 1
    while 2 * p <= k:
        steps.append(p)
        p *= 2
    if k > p:
        steps.append(k - p)  # two overlapping windows of length p cover k
    src, dst = a, b1
    for step in steps:
        s = step * stride
        if s >= n:
            continue
        np.maximum(src[:-s], src[s:], out=dst[:-s])
        dst[-s:] = src[-s:]
        src, dst = dst, (b2 if dst is b1 else b1)
    return src


def _nms_peaks_numpy(heat: np.ndarray, kernel: int, threshold: float) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Flat indices over C·H·W and values of the pixels that are the max of their k×k window
    (max-pool equality) and above ``threshold``.

    The window max is separable and computed on one flat copy of the maps laid out with
    r = k // 2 columns of -inf after every row, r rows of -inf above and below every channel and
    r leading -inf values: then a horizontal shift is a flat shift by 1 and a vertical one a flat
    shift by a row, so every pass is a single contiguous numpy call.
    """
    c, h, w = heat.shape
    r = kernel // 2
    if r == 0:
        flat = np.flatnonzero(heat > threshold)
        return flat, heat.reshape(-1)[flat]
    hp, wp = h + 2 * r, w + r
    n = r + c * hp * wp
    ws = _WORKSPACE
    buf, b1, b2, b3 = (ws.get(name, n) for name in ("nms0", "nms1", "nms2", "nms3"))
    buf[:r] = -np.inf
    pad = buf[r:].reshape(c, hp, wp)
    pad[:, :r] = -np.inf
    pad[:, h + r:] = -np.inf
    pad[:, r:h + r, w:] = -np.inf
    pad[:, r:h + r, :w] = heat
    # win[i] = max over buf[i + dy * wp + dx], 0 <= dx, dy < k: the window whose top-left
    # corner is i, i.e. the window centred on buf[i + off].
    hwin = _window_max(buf, kernel, 1, b1, b2)
    win = _window_max(hwin, kernel, wp, b3, b2 if hwin is b1 else b1)
    off = r * wp + r
    m = n - off
    mask = np.equal(win[:m], buf[off:], out=ws.get("nms_eq", m, np.bool_))
    mask &= np.greater(buf[off:], threshold, out=ws.get("nms_gt", m, np.bool_))
    q = np.flatnonzero(mask) + (off - r)  # index into pad (c, hp, wp)
    ch, rem = np.divmod(q, hp * wp)
    y, x = np.divmod(rem, wp)
    flat = (ch * h + (y - r)) * w + x
    return flat, heat.reshape(-1)[flat]


def _nms_peaks_torch(heat: torch.Tensor, kernel: int, threshold: float, top_k: int,
                     per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """The same peaks on the tensor's device, reduced there to the top_k (per channel)."""
    c, h, w = heat.shape
    pooled = F.max_pool2d(heat[None], kernel, stride=1, padding=kernel // 2)[0]
    keep = (pooled == heat) & (heat > threshold)
    masked = heat.masked_fill(~keep, -math.inf)
    if per_channel:
        vals, idx = masked.reshape(c, h * w).topk(min(top_k, h * w), dim=1)
        idx = idx + torch.arange(c, device=heat.device)[:, None] * (h * w)
    else:
        vals, idx = masked.reshape(-1).topk(min(top_k, c * h * w))
    vals, idx = vals.reshape(-1).cpu().numpy(), idx.reshape(-1).cpu().numpy()
    ok = vals > threshold
    return idx[ok].astype(np.int64), vals[ok]


def _peaks(heat: np.ndarray | torch.Tensor, kernel: int, threshold: float, top_k: int,
           per_channel: bool) -> _Peaks:
    """The best ``top_k`` NMS peaks above ``threshold`` (per channel, or in all channels)."""
    c, h, w = heat.shape
    if isinstance(heat, torch.Tensor):
        flat, vals = _nms_peaks_torch(heat, kernel, threshold, top_k, per_channel)
    else:
        flat, vals = _nms_peaks_numpy(heat, kernel, threshold)
    channel = flat // (h * w)
    if per_channel:
        order = np.lexsort((flat, -vals, channel))
        channel = channel[order]
        # Rank within the channel: position minus the channel's first position.
        starts = np.searchsorted(channel, channel, side="left")
        order = order[np.arange(order.size) - starts < top_k]
    else:
        order = np.lexsort((flat, -vals))[:top_k]
        order = order[np.lexsort((np.arange(order.size), channel[order]))]
    flat = flat[order]
    return _Peaks(flat // (h * w), flat % (h * w), np.asarray(vals[order], np.float32))


def _gather(maps: np.ndarray | torch.Tensor, channel: np.ndarray, pixel: np.ndarray
            ) -> np.ndarray:
    """maps (C, E, H, W) at (channel, :, pixel) → (n, E) float64 on the host."""
    c, e, h, w = maps.shape
    if isinstance(maps, torch.Tensor):
        dev = maps.device
        out = maps.reshape(c, e, h * w)[torch.from_numpy(channel).to(dev), :,
                                        torch.from_numpy(pixel).to(dev)]
        return out.cpu().numpy().astype(np.float64)
    return maps.reshape(c, e, h * w)[channel, :, pixel].astype(np.float64)


def _subpixel(heat: np.ndarray | torch.Tensor, channel: np.ndarray, pixel: np.ndarray,
              adjust: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres moved a quarter pixel towards the higher neighbour (per axis).

    Equal neighbours leave the coordinate unchanged; at the border the missing neighbour is the
    pixel itself, and the result is clamped to [0, W - 1] × [0, H - 1].
    """
    c, h, w = heat.shape
    y, x = pixel // w, pixel % w
    xs, ys = x.astype(np.float32), y.astype(np.float32)
    if not adjust or pixel.size == 0:
        return xs, ys
    base = channel * (h * w)
    idx = np.concatenate([base + y * w + np.minimum(x + 1, w - 1),
                          base + y * w + np.maximum(x - 1, 0),
                          base + np.minimum(y + 1, h - 1) * w + x,
                          base + np.maximum(y - 1, 0) * w + x])
    if isinstance(heat, torch.Tensor):
        v = heat.reshape(-1)[torch.from_numpy(idx).to(heat.device)].cpu().numpy()
    else:
        v = heat.reshape(-1)[idx]
    v = v.reshape(4, -1)
    xs = np.clip(xs + 0.25 * np.sign(v[0] - v[1]), 0, w - 1).astype(np.float32)
    ys = np.clip(ys + 0.25 * np.sign(v[2] - v[3]), 0, h - 1).astype(np.float32)
    return xs, ys


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


def _match(peaks: _Peaks, tags: np.ndarray, part_order: np.ndarray, num_parts: int,
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
        buf = _WORKSPACE.get("refine0", size).reshape(who.size, h * w)
        np.subtract(t[0], m[:, 0:1], out=buf)
        if e == 1:
            np.abs(buf, out=buf)
        else:
            np.square(buf, out=buf)
            diff = _WORKSPACE.get("refine1", size).reshape(who.size, h * w)
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
    xs, ys = _subpixel(heat, part, best, adjust)
    keypoints[who, part] = np.stack([xs, ys, val], 1)


def _host(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x


# --------------------------------------------------------------------------- public API


def group(heatmaps: np.ndarray | torch.Tensor, tags: np.ndarray | torch.Tensor, *,
          nms_kernel: int = 5, top_k: int = 30, detection_threshold: float = 0.1,
          tag_threshold: float = 1.0, max_instances: int | None = 30,
          part_order: tuple[int, ...] | list[int] | None = None, adjust: bool = True,
          refine: bool = True) -> Instances | list[Instances]:
    """Group part detections into instances by their tags (associative embedding, DESIGN §4).

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
       ``heat - round(|tag - mean tag|)`` (half-up rounding), filled only when the heat
       there is > 0. Present parts never change, and neither do scores and tags.

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
    nms_kernel = _check_kernel(nms_kernel)
    top_k = _check_int(top_k, "top_k", 1)
    detection_threshold = _check_float(detection_threshold, "detection_threshold", 0.0)
    tag_threshold = _check_float(tag_threshold, "tag_threshold", positive=True)
    if max_instances is not None:
        max_instances = _check_int(max_instances, "max_instances", 0)
    batched, heats, tag_maps, (c, _, _) = _object_inputs(heatmaps, tags)
    order = _part_order(part_order, c)
    out = []
    for heat, tag in zip(heats, tag_maps, strict=True):
        peaks = _peaks(heat, nms_kernel, detection_threshold, top_k, per_channel=True)
        cand_tags = _gather(tag, peaks.channel if tag.shape[0] == c else
                            np.zeros_like(peaks.channel), peaks.pixel)
        members, means = _match(peaks, cand_tags, order, c, tag_threshold)
        xs, ys = _subpixel(heat, peaks.channel, peaks.pixel, adjust)
        kp = np.zeros((members.shape[0], c, 3), np.float32)
        present = members >= 0
        sel = members[present]
        kp[present] = np.stack([xs[sel], ys[sel], peaks.score[sel]], 1)
        scores = kp[:, :, 2].mean(1, dtype=np.float64)
        keep = np.argsort(-scores, kind="stable")[:max_instances]
        kp, scores, means = kp[keep], scores[keep], means[keep]
        if refine and kp.shape[0] and (kp[:, :, 2] == 0).any():
            _refine(kp, means, _host(heat), _host(tag), adjust)
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
    nms_kernel = _check_kernel(nms_kernel)
    top_k = _check_int(top_k, "top_k", 1)
    detection_threshold = _check_float(detection_threshold, "detection_threshold", 0.0)
    batched, heats, tag_maps, (c, h, w) = _object_inputs(heatmaps, tags)
    size_maps: list[Any] = [None] * len(heats)
    if sizes is not None:
        exp = "(B, 2, H, W)" if batched else "(2, H, W)"
        s = _maps(sizes, "sizes", (4 if batched else 3,), exp, _device_of(heatmaps))
        if not batched:
            s = s[None]
        if s.shape[0] != len(heats) or tuple(s.shape[1:]) != (2, h, w):
            raise ValueError(f"sizes: expected shape {exp} matching heatmaps "
                             f"{(len(heats), c, h, w) if batched else (c, h, w)}, got "
                             f"{tuple(np.shape(sizes))}")
        size_maps = list(s)
    out = []
    for heat, tag, size in zip(heats, tag_maps, size_maps, strict=True):
        peaks = _peaks(heat, nms_kernel, detection_threshold, top_k, per_channel=False)
        # Decreasing score over all classes (the peaks come sorted by class).
        order = np.lexsort((peaks.pixel, peaks.channel, -peaks.score))
        label, pixel, score = peaks.channel[order], peaks.pixel[order], peaks.score[order]
        n = label.size
        emb = _gather(tag, label if tag.shape[0] == c else np.zeros_like(label), pixel)
        xs, ys = _subpixel(heat, label, pixel, adjust=True)
        kp = np.zeros((n, c, 3), np.float32)
        kp[np.arange(n), label] = np.stack([xs, ys, score], 1)
        boxes = None
        if size is not None:
            wh = np.maximum(_gather(size[None], np.zeros_like(label), pixel), 0.0)
            half = wh / 2
            boxes = np.stack([xs - half[:, 0], ys - half[:, 1], xs + half[:, 0],
                              ys + half[:, 1]], 1)
        out.append(Instances(kp, score, emb, label, boxes))
    return out if batched else out[0]
