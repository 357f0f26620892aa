"""Training targets at output resolution, independent of any dataset format (docs/design.md §3).

:func:`build_targets` turns the instances of one image — parts as ``(N, C, 3)`` arrays of
x, y, visible in output-map pixel coordinates, optional boxes and links — into the arrays the
losses consume: Gaussian heatmaps, the loss mask, part index lists for tag gathering, link heatmaps
and link lists, and box sizes at object centres. Everything is vectorised over instances; what
does not fit (more than ``max_instances`` instances, parts outside the map, links beyond
``max_links`` or naming an unusable instance) is counted in a :class:`TargetStats`, with the totals
it is a fraction of, never dropped silently.

Example:
    >>> parts = np.array([[[10.0, 12.0, 2.0], [14.0, 12.0, 0.0]]])    # 1 person, 2 parts
    >>> targets, stats = build_targets(parts, (64, 64), sigma=2.0)
    >>> targets["heatmaps"].shape, targets["parts"][0, 0].tolist()
    ((2, 64, 64), [778, 1])

With ``sparse=True`` the heatmaps are not drawn: the targets hold the Gaussians' peaks and the
bit-packed loss mask instead (about 100 times fewer bytes to load and copy), which
:func:`aehg.data.render.render_targets` turns into the same dense maps on the training device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DENSE_KEYS", "PEAK_KEYS", "SPARSE_KEYS", "TargetStats", "build_targets",
           "gaussian_patch", "gaussian_radius", "slot_groups"]

# Sparse targets (``build_targets(..., sparse=True)``) and the dense ones they replace. Peak lists
# are ragged (one row per drawn Gaussian): collate concatenates them with a batch-index column.
PEAK_KEYS = ("heat_peaks", "link_peaks")
SPARSE_KEYS = (*PEAK_KEYS, "mask_bits")
DENSE_KEYS = ("heatmaps", "link_heatmaps", "mask")


@dataclass
class TargetStats:
    """Counts of what did not fit into the targets, and of what was given; add them up over a
    dataset. Each ``*_dropped`` / ``*_outside`` count has its total next to it, so that
    ``instances_dropped / instances`` etc. are the fractions lost.

    Attributes:
        instances_dropped: instances beyond ``max_instances`` that carried a visible part inside
            the map or a box centre inside the map (their parts still appear in the heatmaps,
            but they have no row in the index lists).
        parts_outside: visible parts whose rounded location falls outside the map.
        links_dropped: links not listed: beyond ``max_links``, or naming an instance that is out
            of range, dropped, or has no visible part inside the map, or whose location falls
            outside the map.
        instances: instances with a visible part inside the map or a box centre inside the map
            (those that could have a row: the total ``instances_dropped`` is part of).
        parts: visible parts, inside the map or not (the total of ``parts_outside``).
        links: links given (the total of ``links_dropped``); 0 when no link targets are built.
    """

    # The totals come after the original counts so that positional construction still works.
    instances_dropped: int = 0
    parts_outside: int = 0
    links_dropped: int = 0
    instances: int = 0
    parts: int = 0
    links: int = 0

    def __add__(self, other: TargetStats) -> TargetStats:
        if not isinstance(other, TargetStats):
            return NotImplemented
        return TargetStats(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (for logging)."""
        return {k: int(v) for k, v in asdict(self).items()}


def gaussian_radius(sigma: float) -> int:
    """Half-size of the drawn Gaussian patch: ``ceil(3σ) + 1`` (the AE code's 6σ+3 patch)."""
    return int(math.ceil(3.0 * sigma)) + 1


def _round(v: np.ndarray) -> np.ndarray:
    # Half-up rounding (np.round rounds half to even, which would bias .5 locations).
    return np.floor(v + 0.5).astype(np.int64)


def _draw_gaussians(num_channels: int, height: int, width: int, channels: np.ndarray,
                    xs: np.ndarray, ys: np.ndarray, sigma: float) -> np.ndarray:
    """Max-combined Gaussians, peak 1 at integer ``(xs, ys)`` in ``channels``; all (P,) int."""
    out = np.zeros(num_channels * height * width, dtype=np.float32)
    if len(xs) == 0:
        return out.reshape(num_channels, height, width)
    r = gaussian_radius(sigma)
    off = np.arange(-r, r + 1)
    patch = gaussian_patch(sigma)
    gx = xs[:, None, None] + off[None, None, :]                  # (P, 1, S)
    gy = ys[:, None, None] + off[None, :, None]                  # (P, S, 1)
    inside = (gx >= 0) & (gx < width) & (gy >= 0) & (gy < height)  # (P, S, S)
    flat = channels[:, None, None] * (height * width) + gy * width + gx
    values = np.broadcast_to(patch, inside.shape)
    np.maximum.at(out, flat[inside], values[inside])
    return out.reshape(num_channels, height, width)


def _peaks(channels: np.ndarray, ys: np.ndarray, xs: np.ndarray, dtype: type) -> np.ndarray:
    """The Gaussians :func:`_draw_gaussians` would draw, one (channel, y, x) row each."""
    return np.stack([channels, ys, xs], axis=1).astype(dtype).reshape(-1, 3)


def _pack_mask(mask: np.ndarray) -> np.ndarray:
    """A 0/1 (H, W) mask as bits, row-major, most significant bit first (``np.packbits``)."""
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask: sparse targets need a mask of 0s and 1s (packed as bits), got "
                         f"values in [{float(mask.min())}, {float(mask.max())}]")
    return np.packbits(mask.reshape(-1) > 0)


def gaussian_patch(sigma: float) -> np.ndarray:
    """The drawn Gaussian patch, peak exactly 1 at its centre; (2r + 1, 2r + 1) float32 with
    r = :func:`gaussian_radius`."""
    r = gaussian_radius(sigma)
    off = np.arange(-r, r + 1)
    patch = np.exp(-(off[:, None] ** 2 + off[None, :] ** 2) / (2.0 * sigma * sigma))
    return patch.astype(np.float32)


def slot_groups(pixels: np.ndarray, valid: np.ndarray, slots: int) -> tuple[np.ndarray, int]:
    """Rows sharing a pixel, listed per pixel (docs/design.md "Slots").

    Group g lists, in row order, the first ``slots`` valid rows whose pixel is the g-th
    distinct pixel (numbered by first row); −1 pads. Rows beyond ``slots`` at a pixel are not
    listed.

    Returns:
        ``(groups, beyond)``: the listing and the number of valid rows not listed.

    Shapes:
        pixels, valid: (M,) -> groups (M, slots) int64
    """
    m = len(pixels)
    groups = np.full((m, slots), -1, dtype=np.int64)
    rows = np.nonzero(valid)[0]
    if rows.size == 0:
        return groups, 0
    pix = pixels[rows]
    order = np.argsort(pix, kind="stable")                       # by pixel, then row
    sp, sr = pix[order], rows[order]
    start = np.r_[True, sp[1:] != sp[:-1]]
    run = np.cumsum(start) - 1                                   # distinct-pixel index
    first = np.nonzero(start)[0]
    rank = np.arange(len(sp)) - first[run]
    # Number the groups by their first row so that the listing follows the rows' order.
    gid = np.empty(len(first), dtype=np.int64)
    gid[np.argsort(sr[first], kind="stable")] = np.arange(len(first))
    fits = rank < slots
    groups[gid[run[fits]], rank[fits]] = sr[fits]
    return groups, int((~fits).sum())


def _check_array(name: str, a: np.ndarray, ndim: int, last: int | None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim or (last is not None and a.shape[-1] != last):
        want = ", ".join(["…"] * (ndim - 1) + [str(last) if last is not None else "…"])
        raise ValueError(f"{name}: expected an array of shape ({want}), got {a.shape}")
    return a


def build_targets(
    parts: np.ndarray,
    output_size: tuple[int, int],
    *,
    sigma: float = 2.0,
    max_instances: int = 30,
    tag_per_class: bool = True,
    mask: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    links: np.ndarray | None = None,
    num_link_classes: int = 0,
    max_links: int = 64,
    object_slots: int = 1,
    relation_slots: int = 1,
    sparse: bool = False,
) -> tuple[dict[str, np.ndarray], TargetStats]:
    """Build the training targets of one image.

    A part is used when its visibility is > 0 and its rounded location ``floor(x + 0.5)``,
    ``floor(y + 0.5)`` lies in the map. Heatmaps get the parts of *all* instances (a person
    beyond ``max_instances`` is still a correct detection); the index lists keep the first
    ``max_instances`` instances, row n being input instance n. An instance's centre is its box
    centre when boxes are given, else the mean of its visible parts (unrounded); a link's
    location is the midpoint of its two instances' centres, floored to the grid. A link is listed
    when both instances have a row and a visible part in the map and its location is in the map
    (the first ``max_links`` such links); its Gaussian is drawn whenever its location is in the
    map.

    Args:
        parts: x, y, visibility per instance and part, in output-map pixels (integer = pixel
            centre); visibility > 0 means annotated.
        output_size: (H, W) of the output maps.
        sigma: Gaussian standard deviation in output pixels.
        max_instances: rows of the part / box index lists.
        tag_per_class: flat part indices over C·H·W (one tag map per class) when True, over
            1·H·W (one shared tag map) when False.
        mask: 1 where the heatmap loss counts, 0 where it is ignored (crowds, people without
            annotated parts); ones when None.
        boxes: object boxes x1, y1, x2, y2 in output pixels.
        links: src instance, dst instance, link class per link.
        num_link_classes: R; link targets are built only when > 0.
        max_links: rows of the link list.
        object_slots, relation_slots: S_o, S_r slots per pixel of the model's maps; with more
            than one, the objects (links) are also listed per pixel for the loss's slot
            matching (``"object_groups"``, ``"link_groups"``) together with the Gaussian patch
            (``"slot_patch"``) the loss draws per slot; listed objects (links) beyond the
            slots of their pixel are in no group (:class:`aehg.data.RelationDataset` counts
            them). Each instance has at most one visible part with ``object_slots`` > 1.
        sparse: instead of ``"heatmaps"``, ``"link_heatmaps"`` and ``"mask"``, return what
            :func:`aehg.data.render.render_targets` draws them from on the device:
            ``"heat_peaks"`` and ``"link_peaks"``, one (channel, y, x) row per Gaussian in
            drawing order, and ``"mask_bits"``, the mask's bits (it must hold only 0s and 1s).
            Everything else is the same.

    Returns:
        ``(targets, stats)``: ``targets`` maps ``"heatmaps"``, ``"mask"``, ``"parts"`` and, when
        ``num_link_classes > 0``, ``"link_heatmaps"`` and ``"links"``, and, when boxes are given,
        ``"box_index"`` and ``"box_size"`` to numpy arrays (with ``sparse``: ``"heat_peaks"``,
        ``"mask_bits"``, ``"parts"`` and ``"link_peaks"``, ``"links"``, ...); ``stats`` counts
        what did not fit and the instances, parts and links it is out of.

    Raises:
        ValueError: an argument has the wrong shape or values (non-finite visible part or box,
            inverted box, link class out of range, links given with ``num_link_classes == 0``,
            a mask of other values than 0 and 1 with ``sparse``).

    Shapes:
        parts: (N, C, 3); mask: (H, W); boxes: (N, 4); links: (M, 3)
        -> heatmaps: (C, H, W) float32; mask: (H, W) float32;
        parts: (max_instances, C, 2) int64 rows (flat index c·H·W + y·W + x, visible);
        link_heatmaps: (R, H, W) float32;
        links: (max_links, 5) int64 rows (flat location y·W + x, src row, dst row, class, valid);
        box_index: (max_instances, 2) int64 rows (flat centre y·W + x, valid);
        box_size: (max_instances, 2) float32 (w, h);
        object_groups: (max_instances, S_o) int64 rows of the objects per pixel, −1 padded;
        link_groups: (max_links, S_r) int64 rows of the listed links per pixel, −1 padded;
        slot_patch: (2r + 1, 2r + 1) float32;
        sparse: heat_peaks: (P, 3), link_peaks: (Q, 3) int16 (int32 when C, R, H or W exceeds
        32767); mask_bits: (ceil(H·W / 8),) uint8.
    """
    parts = _check_array("parts", parts, 3, 3).astype(np.float64, copy=False)
    try:
        height, width = (int(s) for s in output_size)
    except (TypeError, ValueError):
        raise ValueError(f"output_size: expected (H, W), got {output_size!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"output_size: expected positive (H, W), got {output_size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma: expected a positive value, got {sigma}")
    if max_instances < 1 or max_links < 1:
        raise ValueError(f"max_instances, max_links: expected >= 1, got {max_instances}, "
                         f"{max_links}")
    if num_link_classes < 0:
        raise ValueError(f"num_link_classes: expected >= 0, got {num_link_classes}")
    if not (1 <= object_slots <= 6 and 1 <= relation_slots <= 6):
        raise ValueError(f"object_slots, relation_slots: expected 1..6, got {object_slots}, "
                         f"{relation_slots}")
    n, c = parts.shape[:2]
    hw = height * width
    stats = TargetStats()

    # ---------------------------------------------------------------- parts and heatmaps
    visible = parts[..., 2] > 0                                          # (N, C)
    if not np.isfinite(parts[..., :2][visible]).all():
        raise ValueError("parts: visible parts must have finite x, y coordinates")
    xy = np.where(visible[..., None], parts[..., :2], 0.0)
    ix, iy = _round(xy[..., 0]), _round(xy[..., 1])
    inside = visible & (ix >= 0) & (ix < width) & (iy >= 0) & (iy < height)
    stats.parts_outside = int((visible & ~inside).sum())
    stats.parts = int(visible.sum())

    inst, chan = np.nonzero(inside)
    peak_dtype = np.int16 if max(c, num_link_classes, height, width) <= 2**15 - 1 else np.int32
    if sparse:
        heat = _peaks(chan, iy[inside], ix[inside], peak_dtype)
    else:
        heat = _draw_gaussians(c, height, width, chan, ix[inside], iy[inside], sigma)

    keep = min(n, max_instances)
    part_rows = np.zeros((max_instances, c, 2), dtype=np.int64)
    tag_chan = np.arange(c)[None, :] if tag_per_class else np.zeros((1, c), dtype=np.int64)
    flat = tag_chan * hw + iy * width + ix
    part_rows[:keep, :, 0] = np.where(inside, flat, 0)[:keep]
    part_rows[:keep, :, 1] = inside[:keep]
    has_part = inside.any(axis=1)                                        # (N,)

    if mask is None:
        loss_mask = np.ones((height, width), dtype=np.float32)
    else:
        mask = np.asarray(mask)
        if mask.shape != (height, width):
            raise ValueError(f"mask: expected shape ({height}, {width}), got {mask.shape}")
        loss_mask = mask.astype(np.float32, copy=True)

    targets: dict[str, np.ndarray]
    if sparse:
        targets = {"heat_peaks": heat, "mask_bits": _pack_mask(loss_mask), "parts": part_rows}
    else:
        targets = {"heatmaps": heat, "mask": loss_mask, "parts": part_rows}
    beyond = np.arange(n) >= max_instances
    if object_slots > 1 or relation_slots > 1:
        targets["slot_patch"] = gaussian_patch(sigma)
    if object_slots > 1:
        many = inside.sum(axis=1) > 1
        if many.any():
            raise ValueError(f"parts: instance {int(np.nonzero(many)[0][0])} has several "
                             f"visible parts; object_slots > 1 needs single-part instances")
        pixel = np.where(inside, iy * width + ix, 0).sum(axis=1)[:keep]
        rows_pixel = np.zeros(max_instances, dtype=np.int64)
        rows_pixel[:keep] = pixel
        rows_valid = np.zeros(max_instances, dtype=bool)
        rows_valid[:keep] = inside[:keep].any(axis=1)
        targets["object_groups"], _ = slot_groups(rows_pixel, rows_valid, object_slots)

    # ---------------------------------------------------------------- boxes
    centres = None
    box_inside = np.zeros(n, dtype=bool)
    if boxes is not None:
        boxes = _check_array("boxes", boxes, 2, 4).astype(np.float64, copy=False)
        if boxes.shape[0] != n:
            raise ValueError(f"boxes: expected {n} rows (one per instance of parts), "
                             f"got {boxes.shape[0]}")
        if not np.isfinite(boxes).all():
            raise ValueError("boxes: expected finite x1, y1, x2, y2")
        size = boxes[:, 2:] - boxes[:, :2]
        if (size < 0).any():
            bad = int(np.nonzero((size < 0).any(axis=1))[0][0])
            raise ValueError(f"boxes: row {bad} has x2 < x1 or y2 < y1: {boxes[bad].tolist()}")
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
        bx, by = _round(centres[:, 0]), _round(centres[:, 1])
        box_inside = (bx >= 0) & (bx < width) & (by >= 0) & (by < height)
        box_index = np.zeros((max_instances, 2), dtype=np.int64)
        box_size = np.zeros((max_instances, 2), dtype=np.float32)
        box_index[:keep, 0] = np.where(box_inside, by * width + bx, 0)[:keep]
        box_index[:keep, 1] = box_inside[:keep]
        box_size[:keep] = np.where(box_inside[:, None], size, 0.0)[:keep]
        targets["box_index"] = box_index
        targets["box_size"] = box_size
    usable = has_part | box_inside
    stats.instances_dropped = int((beyond & usable).sum())
    stats.instances = int(usable.sum())

    # ---------------------------------------------------------------- links
    if links is not None:
        links = np.asarray(links)
        if links.size == 0:
            links = np.zeros((0, 3), dtype=np.int64)
        links = _check_array("links", links, 2, 3)
        if not np.issubdtype(links.dtype, np.integer):
            if not (np.isfinite(links).all() and (links == np.round(links)).all()):
                raise ValueError("links: expected integer src, dst, class")
            links = links.astype(np.int64)
        if len(links) and num_link_classes == 0:
            raise ValueError(f"links: {len(links)} links given but num_link_classes is 0")
        bad = (links[:, 2] < 0) | (links[:, 2] >= num_link_classes)
        if bad.any():
            raise ValueError(f"links: link class must be in [0, {num_link_classes}), got "
                             f"{int(links[bad, 2][0])}")
    if num_link_classes > 0:
        if links is None:
            links = np.zeros((0, 3), dtype=np.int64)
        if centres is None:
            count = visible.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                centres = xy.sum(axis=1) / count[:, None]                # NaN when no part
        src, dst, cls = links[:, 0], links[:, 1], links[:, 2]
        # Out-of-range instance indices point at an extra row with no centre and no tag.
        in_range = (src >= 0) & (src < n) & (dst >= 0) & (dst < n)
        s, d = np.where(in_range, src, n), np.where(in_range, dst, n)
        centres = np.concatenate([centres, np.full((1, 2), np.nan)])
        taggable = np.append(has_part & ~beyond, False)
        mid = (centres[s] + centres[d]) / 2.0                            # (M, 2)
        located = np.isfinite(mid).all(axis=1)
        lx = np.floor(np.where(located, mid[:, 0], -1)).astype(np.int64)
        ly = np.floor(np.where(located, mid[:, 1], -1)).astype(np.int64)
        located &= (lx >= 0) & (lx < width) & (ly >= 0) & (ly < height)
        if sparse:
            targets["link_peaks"] = _peaks(cls[located], ly[located], lx[located], peak_dtype)
        else:
            targets["link_heatmaps"] = _draw_gaussians(num_link_classes, height, width,
                                                       cls[located], lx[located], ly[located],
                                                       sigma)
        listed = located & taggable[s] & taggable[d]
        order = np.nonzero(listed)[0][:max_links]
        link_rows = np.zeros((max_links, 5), dtype=np.int64)
        link_rows[: len(order)] = np.stack(
            [ly[order] * width + lx[order], src[order], dst[order], cls[order],
             np.ones(len(order), dtype=np.int64)], axis=1)
        targets["links"] = link_rows
        if relation_slots > 1:
            targets["link_groups"], _ = slot_groups(link_rows[:, 0], link_rows[:, 4] > 0,
                                                    relation_slots)
        stats.links_dropped = int(len(links) - len(order))
        stats.links = int(len(links))
    return targets, stats
