"""The shared layer of the decoders: input checks, NMS peaks, top-k, gathers, sub-pixel
positions (docs/design.md §4).

Every decoder (:func:`aehg.group`, :func:`aehg.decode_objects`, :func:`aehg.build_graph`)
checks its inputs with these functions and finds its candidates with :func:`find_peaks`.
Maps are float32 numpy arrays for host data (NMS by OpenCV's dilation) or tensors on their device
(``max_pool2d`` NMS and top-k there, only the candidates come back to the host).
"""

from __future__ import annotations

import math
import numbers
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "WORKSPACE",
    "SUBPIXEL_METHODS",
    "Peaks",
    "Workspace",
    "as_maps",
    "check_float",
    "check_int",
    "check_kernel",
    "device_of",
    "find_peaks",
    "gather",
    "object_inputs",
    "subpixel",
    "to_host",
]


# --------------------------------------------------------------------------- input checks


def check_int(value: Any, name: str, low: int) -> int:
    """``value`` as an int >= ``low``; a ValueError naming ``name`` otherwise (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def check_kernel(value: Any, name: str = "nms_kernel") -> int:
    """An odd window size >= 1, else a ValueError naming ``name``."""
    k = check_int(value, name, 1)
    if k % 2 == 0:
        raise ValueError(f"{name}: expected an odd window size, got {k}")
    return k


def check_float(value: Any, name: str, low: float = -math.inf, positive: bool = False) -> float:
    """A finite float >= ``low`` (or > 0 with ``positive``), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < low or (positive and v <= 0):
        bound = "> 0" if positive else f">= {low:g}"
        raise ValueError(f"{name}: expected a finite number {bound}, got {value!r}")
    return v


def as_maps(x: Any, name: str, ranks: tuple[int, ...], expected: str,
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


def device_of(x: Any) -> torch.device | None:
    """The device for torch processing, or None for the numpy path (host data)."""
    if isinstance(x, torch.Tensor) and x.device.type != "cpu":
        return x.device
    return None


def object_inputs(heatmaps: Any, tags: Any
                  ) -> tuple[bool, list[np.ndarray | torch.Tensor],
                             list[np.ndarray | torch.Tensor], tuple[int, ...]]:
    """Check heatmaps and tags: (batched, per-image (C, H, W) heat, per-image (C_t, E, H, W)
    tags, (C, H, W))."""
    device = device_of(heatmaps)
    heat = as_maps(heatmaps, "heatmaps", (3, 4), "(C, H, W) or (B, C, H, W)", device)
    batched = heat.ndim == 4
    heat_shape = tuple(heat.shape)
    if batched:
        b, c, h, w = heat.shape
        exp = "(B, C, H, W) (E = 1) or (B, C, E, H, W), with tag channels C or 1"
        t = as_maps(tags, "tags", (4, 5), exp, device)
        if t.ndim == 4:
            t = t.reshape(t.shape[0], t.shape[1], 1, *t.shape[2:])
        ok = t.shape[0] == b and t.shape[1] in (c, 1) and tuple(t.shape[3:]) == (h, w)
    else:
        c, h, w = heat.shape
        exp = "(C, H, W) (E = 1) or (C, E, H, W), with tag channels C or 1"
        t = as_maps(tags, "tags", (3, 4), exp, device)
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
class Peaks:
    """Candidates of one image, sorted by channel, then score (decreasing), then pixel index."""

    channel: np.ndarray  # (n,) int64
    pixel: np.ndarray    # (n,) int64, y * W + x
    score: np.ndarray    # (n,) float32


class Workspace(threading.local):
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


WORKSPACE = Workspace()


_KERNELS: dict[int, np.ndarray] = {}


def _nms_peaks_numpy(heat: np.ndarray, kernel: int, threshold: float) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Flat indices over C·H·W and values of the pixels that are the max of their k×k window
    (max-pool equality) and above ``threshold``.

    The window max is OpenCV's dilation (an exact max; separable for a square window), in
    place on one copy of the maps stacked vertically with r = k // 2 rows of -inf after every
    channel, so that no window reaches into the next channel (the image border is neutral in
    ``cv2.dilate``). One buffer instead of the four of numpy passes: the decoder's later
    stages then find the maps still in cache (docs/design.md §4, speed).
    """
    c, h, w = heat.shape
    r = kernel // 2
    if r == 0:
        flat = np.flatnonzero(heat > threshold)
        return flat, heat.reshape(-1)[flat]
    hp = h + r
    ws = WORKSPACE
    buf = ws.get("nms0", c * hp * w).reshape(c, hp, w)
    buf[:, h:] = -np.inf
    buf[:, :h] = heat
    if kernel not in _KERNELS:
        _KERNELS[kernel] = np.ones((kernel, kernel), np.uint8)
    flat2d = buf.reshape(c * hp, w)
    win = cv2.dilate(flat2d, _KERNELS[kernel], dst=flat2d).reshape(c, hp, w)  # in place
    n = c * h * w
    mask = np.equal(win[:, :h], heat, out=ws.get("nms_eq", n, np.bool_).reshape(c, h, w))
    mask &= np.greater(heat, threshold, out=ws.get("nms_gt", n, np.bool_).reshape(c, h, w))
    flat = np.flatnonzero(mask)
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


def find_peaks(heat: np.ndarray | torch.Tensor, kernel: int, threshold: float, top_k: int,
               per_channel: bool) -> Peaks:
    """The best ``top_k`` NMS peaks above ``threshold`` (per channel, or in all channels)."""
    c, h, w = heat.shape
    if isinstance(heat, torch.Tensor):
        flat, vals = _nms_peaks_torch(heat, kernel, threshold, top_k, per_channel)
        by_pixel = (flat,)
    else:
        flat, vals = _nms_peaks_numpy(heat, kernel, threshold)
        by_pixel = ()  # ``flat`` is ascending and lexsort stable: ties keep the pixel order
    channel = flat // (h * w)
    if per_channel:
        order = np.lexsort((*by_pixel, -vals, channel))
        channel = channel[order]
        # Rank within the channel: position minus the channel's first position.
        starts = np.searchsorted(channel, channel, side="left")
        order = order[np.arange(order.size) - starts < top_k]
    else:
        order = np.lexsort((flat, -vals))[:top_k]
        order = order[np.lexsort((np.arange(order.size), channel[order]))]
    flat = flat[order]
    return Peaks(flat // (h * w), flat % (h * w), np.asarray(vals[order], np.float32))


def gather(maps: np.ndarray | torch.Tensor, channel: np.ndarray, pixel: np.ndarray
            ) -> np.ndarray:
    """maps (C, E, H, W) at (channel, :, pixel) → (n, E) float64 on the host."""
    c, e, h, w = maps.shape
    if isinstance(maps, torch.Tensor):
        dev = maps.device
        out = maps.reshape(c, e, h * w)[torch.from_numpy(channel).to(dev), :,
                                        torch.from_numpy(pixel).to(dev)]
        return out.cpu().numpy().astype(np.float64)
    return maps.reshape(c, e, h * w)[channel, :, pixel].astype(np.float64)


SUBPIXEL_METHODS = ("quarter", "quadratic")


def subpixel(heat: np.ndarray | torch.Tensor, channel: np.ndarray, pixel: np.ndarray,
             adjust: bool, method: str = "quarter") -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel positions of peaks (docs/design.md §4).

    ``"quarter"`` (the AE code's rule): the pixel centre moves a quarter pixel towards the
    higher neighbour, per axis; equal neighbours leave it unchanged. ``"quadratic"``: per
    axis, the vertex of the parabola through the log heat of the peak and its two neighbours
    (exact for a Gaussian peak; the per-axis Taylor step of DARK, Zhang et al. 2020), limited
    to half a pixel. At the border the missing neighbour is the pixel itself; the result is
    clamped to [0, W - 1] × [0, H - 1]. ``adjust`` False gives the pixel centres.

    Raises:
        ValueError: unknown ``method``.

    Shapes:
        heat: (C, H, W); channel, pixel: (N,) -> xs, ys: (N,) float32
    """
    if method not in SUBPIXEL_METHODS:
        raise ValueError(f"subpixel method: expected one of {list(SUBPIXEL_METHODS)}, "
                         f"got {method!r}")
    c, h, w = heat.shape
    y, x = pixel // w, pixel % w
    xs, ys = x.astype(np.float32), y.astype(np.float32)
    if not adjust or pixel.size == 0:
        return xs, ys
    base = channel * (h * w)
    centre = [base + y * w + x] if method == "quadratic" else []
    idx = np.concatenate([base + y * w + np.minimum(x + 1, w - 1),
                          base + y * w + np.maximum(x - 1, 0),
                          base + np.minimum(y + 1, h - 1) * w + x,
                          base + np.maximum(y - 1, 0) * w + x, *centre])
    if isinstance(heat, torch.Tensor):
        v = heat.reshape(-1)[torch.from_numpy(idx).to(heat.device)].cpu().numpy()
    else:
        v = heat.reshape(-1)[idx]
    v = v.reshape(len(idx) // pixel.size, -1)
    if method == "quarter":
        dx, dy = 0.25 * np.sign(v[0] - v[1]), 0.25 * np.sign(v[2] - v[3])
    else:
        # Heat <= 0 (linear maps) is floored so that its log stays finite and the step small.
        lv = np.log(np.maximum(v.astype(np.float64), 1e-12))
        dx = _parabola_vertex(lv[1], lv[4], lv[0])
        dy = _parabola_vertex(lv[3], lv[4], lv[2])
    # The method: np.clip's wrapper costs twice as much on a few hundred values.
    xs = (xs + dx).clip(0, w - 1).astype(np.float32)
    ys = (ys + dy).clip(0, h - 1).astype(np.float32)
    return xs, ys


def _parabola_vertex(before: np.ndarray, at: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Offset in [-0.5, 0.5] of the vertex of the parabola through (-1, before), (0, at),
    (1, after); 0 where the three points do not bend downwards (flat or not a maximum)."""
    bend = before - 2.0 * at + after
    safe = np.where(bend < -1e-9, bend, -1.0)
    return np.where(bend < -1e-9, np.clip((before - after) / (2.0 * safe), -0.5, 0.5), 0.0)


def to_host(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A numpy array on the host (tensors are copied from their device)."""
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else x
