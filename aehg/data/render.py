"""Dense training targets drawn on the training device from sparse targets (docs/design.md §3).

The data-loader workers build sparse targets (``build_targets(..., sparse=True)``): one
(channel, y, x) row per Gaussian and the loss mask as bits, about a hundredth of the bytes of the
dense maps. :func:`aehg.data.collate` concatenates the peak rows of a batch with a batch-index
column; once the batch is on the device, :func:`render_targets` draws every Gaussian of the batch
with one scatter per map set, giving exactly the ``"heatmaps"``, ``"link_heatmaps"`` and
``"mask"`` that ``build_targets(..., sparse=False)`` returns (same float32 patch, same
max-combination, same clipping at the borders).

Everything is tensor code without host synchronisation (no ``.item()``, no data-dependent
shapes), so the training step stays free of device waits.

Example:
    >>> spec = TargetSpec.from_config(cfg)
    >>> batch = render_targets(move_to_device(batch, device), spec)
    >>> batch["heatmaps"].shape
    torch.Size([32, 17, 128, 128])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from aehg.config import Config
from aehg.data.targets import SPARSE_KEYS, gaussian_patch

__all__ = ["TargetSpec", "render_heatmaps", "render_targets", "unpack_mask"]


@dataclass(frozen=True)
class TargetSpec:
    """What the sparse targets do not carry: the maps' sizes and the Gaussians' σ.

    Attributes:
        num_classes: C, channels of ``"heatmaps"``.
        num_link_classes: R, channels of ``"link_heatmaps"`` (0: none).
        height, width: H, W of the output maps.
        sigma: Gaussian standard deviation in output pixels.
    """

    num_classes: int
    num_link_classes: int
    height: int
    width: int
    sigma: float

    @classmethod
    def from_config(cls, cfg: Config) -> TargetSpec:
        """The targets of the datasets :func:`aehg.data.build_dataset` builds from ``cfg``
        (it checks the model's class counts against the data)."""
        size = int(cfg.data.output_size)
        return cls(int(cfg.model.num_classes), int(cfg.model.num_link_classes), size, size,
                   float(cfg.data.sigma))


@functools.lru_cache(maxsize=16)
def _device_patch(sigma: float, device: torch.device) -> torch.Tensor:
    # Cached per device: a fresh host-to-device copy at every step would stall the stream.
    return torch.from_numpy(gaussian_patch(sigma)).to(device)


def render_heatmaps(peaks: torch.Tensor, shape: Sequence[int],
                    patch: torch.Tensor) -> torch.Tensor:
    """Max-combined Gaussian patches, peak at each row's integer (y, x), in one scatter.

    Patch pixels outside the map are clipped; rows whose batch index or channel is outside
    ``shape`` are not drawn (they cannot come from targets built for ``shape``).

    Args:
        peaks: batch index, channel, y, x per Gaussian (any integer dtype).
        shape: (B, K, H, W) of the maps.
        patch: the Gaussian patch, peak at its centre (:func:`aehg.data.targets.gaussian_patch`),
            on the device of ``peaks``.

    Shapes:
        peaks: (P, 4); patch: (S, S), S odd -> (B, K, H, W) float32
    """
    if peaks.dim() != 2 or peaks.shape[1] != 4:
        raise ValueError(f"peaks: expected shape (P, 4) (batch, channel, y, x), got "
                         f"{tuple(peaks.shape)}")
    if patch.dim() != 2 or patch.shape[0] != patch.shape[1] or patch.shape[0] % 2 == 0:
        raise ValueError(f"patch: expected an odd square (S, S), got {tuple(patch.shape)}")
    b, k, h, w = (int(v) for v in shape)
    r = patch.shape[0] // 2
    size = b * k * h * w
    p = peaks.to(torch.int64)
    bi, ki, yi, xi = p.unbind(1)
    off = torch.arange(-r, r + 1, device=p.device)
    gy = yi[:, None, None] + off[None, :, None]                    # (P, S, 1)
    gx = xi[:, None, None] + off[None, None, :]                    # (P, 1, S)
    drawn = (bi >= 0) & (bi < b) & (ki >= 0) & (ki < k)
    inside = (gy >= 0) & (gy < h) & (gx >= 0) & (gx < w) & drawn[:, None, None]  # (P, S, S)
    # Clipped pixels go to one extra cell past the maps (a fixed shape: no boolean indexing).
    index = torch.where(inside, ((bi * k + ki) * h)[:, None, None] * w + gy * w + gx, size)
    values = torch.where(inside, patch.to(torch.float32), 0.0)
    out = torch.zeros(size + 1, dtype=torch.float32, device=p.device)
    out.scatter_reduce_(0, index.reshape(-1), values.reshape(-1), "amax")
    return out[:size].view(b, k, h, w)


def unpack_mask(bits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Loss masks from their bits (``np.packbits`` order: row-major, most significant first).

    Shapes:
        bits: (B, ceil(H·W / 8)) uint8 -> (B, H, W) float32
    """
    hw = int(height) * int(width)
    if bits.dim() != 2 or bits.shape[1] != math.ceil(hw / 8):
        raise ValueError(f"mask_bits: expected shape (B, {math.ceil(hw / 8)}) for {height}x"
                         f"{width} maps, got {tuple(bits.shape)}")
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=bits.device)
    flat = (bits.to(torch.uint8)[:, :, None] >> shifts) & 1         # (B, NB, 8)
    return flat.reshape(bits.shape[0], -1)[:, :hw].reshape(-1, int(height), int(width)).float()


def render_targets(batch: Mapping[str, Any], spec: TargetSpec) -> dict[str, Any]:
    """A batch with dense targets: the sparse keys (``"heat_peaks"``, ``"link_peaks"``,
    ``"mask_bits"``) replaced by the ``"heatmaps"``, ``"link_heatmaps"`` and ``"mask"`` that
    ``build_targets(..., sparse=False)`` gives, drawn on the device of the batch. A batch
    without sparse targets is returned as it is (as a new dict).

    Args:
        batch: collated (:func:`aehg.data.collate`) sparse or dense batch.
        spec: map sizes and σ the sparse targets were built with.

    Raises:
        ValueError: ``"mask_bits"`` does not fit ``spec``'s map size.

    Shapes:
        heat_peaks: (P, 4), link_peaks: (Q, 4) rows (batch, channel, y, x);
        mask_bits: (B, ceil(H·W / 8)) -> heatmaps: (B, C, H, W), link_heatmaps: (B, R, H, W),
        mask: (B, H, W) float32
    """
    out = {k: v for k, v in batch.items() if k not in SPARSE_KEYS}
    if "heat_peaks" not in batch:
        return out
    if "mask_bits" not in batch:
        raise ValueError("batch: has 'heat_peaks' but no 'mask_bits' (expected the sparse "
                         "targets of build_targets(..., sparse=True))")
    mask = unpack_mask(batch["mask_bits"], spec.height, spec.width)
    b = mask.shape[0]
    patch = _device_patch(float(spec.sigma), mask.device)
    out["heatmaps"] = render_heatmaps(batch["heat_peaks"],
                                      (b, spec.num_classes, spec.height, spec.width), patch)
    out["mask"] = mask
    if "link_peaks" in batch:
        out["link_heatmaps"] = render_heatmaps(
            batch["link_peaks"], (b, spec.num_link_classes, spec.height, spec.width), patch)
    return out
