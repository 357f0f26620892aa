"""Slots: several objects (links) per output pixel, matched to the ground truth in the loss
(docs/design.md "Slots").

A model with S_o object slots emits, per pixel and slot, the class heatmaps, a tag and a box
size; with S_r relation slots, per pixel and slot, the link heatmaps and a source and a
destination embedding (:class:`aehg.models.ObjectMaps`, :class:`aehg.models.InteractionMaps`,
slot-major channels). The targets list the objects (links) per pixel
(``object_groups``/``link_groups`` of :func:`aehg.data.build_targets`); at every listed pixel
the loss assigns them to slots by a minimum-cost matching on the per-slot loss
(:func:`assign_slots`: all S! permutations at once, on the device), draws each object's
(link's) Gaussian into its slot and applies the usual terms of :mod:`aehg.models.losses` to the
assigned slots; the other slots get the empty target (heat 0, no tag, link or box term).

A head with one slot keeps its targets as built (one value per pixel), so with 1 and 1 slots
:func:`slot_stack_terms` equals :meth:`aehg.models.MultiStackLoss.stack_terms`.

Everything is batched tensor code without host synchronisation (no ``.item()``, no boolean
indexing by data, no Python loop over pixels or groups).

Example:
    >>> slot = assign_slots(cost, members)      # cost (B, G, S, S), members (B, G, S) bool
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from aehg.config import LossConfig
from aehg.data.render import render_heatmaps
from aehg.models.hourglass import InteractionMaps, ObjectMaps, StackOutput
from aehg.models.losses import MultiStackLoss

__all__ = ["assign_slots", "check_slot_targets", "draw_slot_gaussians", "permutations",
           "slot_cost_heat", "slot_stack_terms", "uses_slots"]

_EPS = 1e-4


@functools.lru_cache(maxsize=32)
def _perm_table(s: int, device: torch.device | None) -> torch.Tensor:
    # Cached per device: a fresh host-to-device copy at every step would stall the stream.
    return torch.tensor(list(itertools.permutations(range(s))), dtype=torch.int64,
                        device=device)


def permutations(s: int, device: torch.device | None = None) -> torch.Tensor:
    """All permutations of ``range(s)``, identity first (do not modify the returned tensor).

    Shapes:
        -> (s!, s) int64
    """
    if not 1 <= s <= 6:
        raise ValueError(f"slots: expected 1..6 (all permutations are evaluated), got {s}")
    return _perm_table(int(s), None if device is None else torch.device(device))


def assign_slots(cost: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
    """Minimum-cost assignment of up to S members to S slots, for every group at once.

    ``cost[..., j, k]`` is the cost of putting member j in slot k; absent members (``members``
    False) cost nothing anywhere. All S! permutations are scored with one gather and the
    cheapest is taken (the first in :func:`permutations` order on ties, so an all-zero cost
    keeps member j in slot j). Equal to the Hungarian algorithm's optimum (S ≤ 6).

    Args:
        cost: per-group member × slot costs.
        members: which members are present (all when None).

    Returns:
        The slot of each member (absent members get the slot left to them by the permutation).

    Shapes:
        cost: (..., S, S); members: (..., S) -> (..., S) int64
    """
    if cost.dim() < 2 or cost.shape[-1] != cost.shape[-2]:
        raise ValueError(f"cost: expected shape (..., S, S), got {tuple(cost.shape)}")
    s = cost.shape[-1]
    perms = permutations(s, cost.device)                          # (P, S)
    if members is not None:
        if members.shape != cost.shape[:-1]:
            raise ValueError(f"members: expected shape {tuple(cost.shape[:-1])}, got "
                             f"{tuple(members.shape)}")
        cost = cost.masked_fill(~members[..., None], 0.0)
    index = perms.t().expand(*cost.shape[:-2], s, perms.shape[0])  # [j, p] = perms[p, j]
    total = cost.gather(-1, index).sum(dim=-2)                     # (..., P)
    return perms[total.argmin(dim=-1)]


def uses_slots(out: StackOutput) -> bool:
    """Whether a stack's maps have more than one slot per pixel in either head."""
    inter = out.interactions
    return out.objects.slots > 1 or (inter is not None and inter.slots > 1)


def slot_cost_heat(p: torch.Tensor, kind: str) -> torch.Tensor:
    """Heatmap loss of a positive minus that of an empty target at one pixel value.

    ``"focal"``: ``−log(p)(1 − p)² + log(1 − p) p²``; ``"mse"``: ``(p − 1)² − p²``.
    """
    if kind == "focal":
        p = p.clamp(_EPS, 1 - _EPS)
        return -torch.log(p) * (1 - p) ** 2 + torch.log1p(-p) * p ** 2
    return (p - 1) ** 2 - p ** 2


def draw_slot_gaussians(shape: Sequence[int], centre: torch.Tensor, ok: torch.Tensor,
                        patch: torch.Tensor) -> torch.Tensor:
    """Max-combined Gaussians on the device (as :func:`aehg.data.build_targets` draws them).

    Args:
        shape: (B, K, H, W) of the target maps.
        centre: flat centre index k·H·W + y·W + x per row.
        ok: which rows are drawn.
        patch: the Gaussian patch (peak 1 at its centre).

    Shapes:
        centre, ok: (B, M); patch: (P, P) -> (B, K, H, W)
    """
    b, k, h, w = (int(v) for v in shape)
    hw = h * w
    chan = torch.div(centre, hw, rounding_mode="floor")
    pix = centre - chan * hw
    # Rows (image, channel, y, x) for the one drawing routine of the targets; rows not drawn
    # get image -1, which it skips (a fixed shape: no boolean indexing, no host sync).
    image = torch.arange(b, device=centre.device)[:, None].expand_as(centre)
    rows = torch.stack([torch.where(ok, image, -1), chan,
                        torch.div(pix, w, rounding_mode="floor"), pix % w], dim=-1)
    return render_heatmaps(rows.reshape(-1, 4), (b, k, h, w), patch.to(centre.device))


def _gather_flat(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of ``maps`` at flat indices c·H·W + y·W + x (any trailing shape), detached, float.

    Indexed by (image, channel, y, x) rather than through a flat view, so that a
    channels_last map is not copied.

    Shapes:
        maps: (B, K, H, W); index: (B, ...) -> (B, ...)
    """
    b, _, h, w = maps.shape
    hw = h * w
    chan = torch.div(index, hw, rounding_mode="floor")
    pix = index - chan * hw
    image = torch.arange(b, device=index.device).reshape(b, *([1] * (index.dim() - 1)))
    return maps.detach()[image, chan, torch.div(pix, w, rounding_mode="floor"),
                         pix % w].float()


def _gather_vec(maps: torch.Tensor, slot: torch.Tensor, pixel: torch.Tensor, e: int
                ) -> torch.Tensor:
    """Vectors of a slot-major (B, S·E, H, W) map at (slot, pixel), or of a (B, S, E, H, W) map.

    Shapes:
        slot, pixel: (B, ...) -> (B, ..., E)
    """
    b, h, w = maps.shape[0], maps.shape[-2], maps.shape[-1]
    index = (slot * (e * h * w) + pixel)[..., None] + torch.arange(e, device=maps.device) * (h * w)
    return _gather_flat(maps.reshape(b, -1, h, w), index)


def _object_rows(parts: torch.Tensor, hw: int) -> tuple[torch.Tensor, torch.Tensor,
                                                        torch.Tensor]:
    """Per object row: listed, class (its visible channel) and pixel y·W + x (single-part)."""
    vis = parts[..., 1] > 0                                       # (B, N, C)
    valid = vis.any(dim=-1)
    cls = vis.to(torch.int64).argmax(dim=-1)
    pixel = (torch.where(vis, parts[..., 0], 0).sum(dim=-1)) % hw
    return valid, cls, pixel


def _slot_of_rows(groups: torch.Tensor, slot: torch.Tensor, rows: int) -> torch.Tensor:
    """Scatter each group member's slot to its row; rows not listed get −1.

    Shapes:
        groups, slot: (B, G, S) -> (B, rows) int64
    """
    b = groups.shape[0]
    member = groups >= 0
    where = torch.where(member, groups, rows).reshape(b, -1)
    out = torch.full((b, rows + 1), -1, dtype=torch.int64, device=groups.device)
    out.scatter_(1, where, torch.where(member, slot, -1).reshape(b, -1))
    return out[:, :rows]


def _group_take(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Per group member the row's value (row 0 for padding). (B, N, ...) → (B, G, S, ...)."""
    b, g, s = groups.shape
    idx = groups.clamp(min=0).reshape(b, g * s)
    if values.dim() == 2:
        return values.gather(1, idx).reshape(b, g, s)
    tail = values.shape[2:]
    idx = idx.reshape(b, g * s, *([1] * len(tail))).expand(b, g * s, *tail)
    return values.gather(1, idx).reshape(b, g, s, *tail)


def _object_refs(tags: torch.Tensor, parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference tag (mean over visible parts) per object row, and whether it has one.

    Shapes:
        tags: (B, C_t, E, H, W); parts: (B, N, C, 2) flat over C_t·H·W -> (B, N, E), (B, N)
    """
    b, ct, e, h, w = tags.shape
    hw = h * w
    vis = parts[..., 1] > 0
    index = torch.where(vis, parts[..., 0], 0)
    chan = torch.div(index, hw, rounding_mode="floor")
    vec = _gather_vec(tags.detach(), chan, index - chan * hw, e)   # (B, N, C, E)
    wgt = vis.to(vec.dtype)[..., None]
    count = wgt.sum(dim=2)
    return (vec * wgt).sum(dim=2) / count.clamp(min=1), count[..., 0] > 0


def _shape_error(key: str, got: Sequence[int], what: str, expected: Sequence[Any]
                 ) -> ValueError:
    return ValueError(f"batch[{key!r}] has shape {tuple(got)} but {what} has shape "
                      f"{tuple(expected)}")


def check_slot_targets(out: StackOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The batch targets a model with slots needs, as tensors on its device, shapes checked.

    Raises:
        ValueError: a target is missing or its shape does not match the maps (the message
            names the key and both shapes).
    """
    obj = out.objects
    dev = obj.heatmaps.device
    b, sc, h, w = obj.heatmaps.shape
    so = obj.slots
    c = sc // so
    inter = out.interactions

    def get(key: str) -> torch.Tensor:
        if key not in batch:
            raise ValueError(f"batch: missing key {key!r}, needed by the loss of a model with "
                             f"{so} object / {getattr(inter, 'slots', 1)} relation slots "
                             f"(build the targets with object_slots / relation_slots)")
        return torch.as_tensor(batch[key], device=dev)

    keys = ["heatmaps", "mask", "parts"]
    with_links = inter is not None and "links" in batch
    if with_links:
        keys += ["link_heatmaps", "links"]
    if so > 1 or (with_links and inter.slots > 1):
        keys.append("slot_patch")
    if so > 1:
        keys.append("object_groups")
    if with_links and inter.slots > 1:
        keys.append("link_groups")
    if obj.sizes is not None and "box_index" in batch:
        keys += ["box_index", "box_size"]
    t = {k: get(k) for k in keys}
    if t["heatmaps"].shape != (b, c, h, w):
        raise _shape_error("heatmaps", t["heatmaps"].shape,
                           f"one slot of the model's heatmaps ({so} slots)", (b, c, h, w))
    if t["mask"].shape != (b, h, w):
        raise _shape_error("mask", t["mask"].shape, "(B, H, W) of the model's heatmaps",
                           (b, h, w))
    p = t["parts"]
    if p.dim() != 4 or p.shape[0] != b or p.shape[2] != c or p.shape[3] != 2:
        raise _shape_error("parts", p.shape, "(B, ·, C, 2) of the model's heatmaps",
                           (b, "N", c, 2))
    if so > 1 and tuple(t["object_groups"].shape) != (b, p.shape[1], so):
        raise _shape_error("object_groups", t["object_groups"].shape,
                           "(B, max_instances, object slots)", (b, p.shape[1], so))
    if with_links:
        r = inter.heatmaps.shape[1] // inter.slots
        if t["link_heatmaps"].shape != (b, r, h, w):
            raise _shape_error("link_heatmaps", t["link_heatmaps"].shape,
                               "one slot of the model's interaction heatmaps", (b, r, h, w))
        lk = t["links"]
        if lk.dim() != 3 or lk.shape[0] != b or lk.shape[2] != 5:
            raise _shape_error("links", lk.shape, "(B, L, 5) with B of the model outputs",
                               (b, "L", 5))
        if inter.slots > 1 and tuple(t["link_groups"].shape) != (b, lk.shape[1], inter.slots):
            raise _shape_error("link_groups", t["link_groups"].shape,
                               "(B, max_links, relation slots)", (b, lk.shape[1], inter.slots))
    if "slot_patch" in t:
        sp = t["slot_patch"]
        if sp.dim() != 3 or sp.shape[0] != b or sp.shape[1] != sp.shape[2] or sp.shape[1] % 2 == 0:
            raise _shape_error("slot_patch", sp.shape, "(B, P, P) with P odd", (b, "P", "P"))
    for k in ("box_index", "box_size"):
        if k in t and (t[k].dim() != 3 or t[k].shape[0] != b or t[k].shape[2] != 2):
            raise _shape_error(k, t[k].shape, "(B, N, 2) with B of the model outputs",
                               (b, "N", 2))
    if "box_size" in t and t["box_size"].shape != t["box_index"].shape:
        raise _shape_error("box_size", t["box_size"].shape, "batch['box_index']",
                           t["box_index"].shape)
    return t


def slot_stack_terms(out: StackOutput, targets: Mapping[str, torch.Tensor],
                     cfg: LossConfig | None = None,
                     terms_fn: Callable[[StackOutput, dict[str, torch.Tensor]],
                                        dict[str, torch.Tensor]] | None = None
                     ) -> dict[str, torch.Tensor]:
    """Unweighted per-image terms of one stack of a model with slots.

    The terms and their definitions are those of
    :meth:`aehg.models.MultiStackLoss.stack_terms`, applied after the matching: per listed
    pixel, object j goes to slot k minimising ``Σ_j w_heat · (ℓ⁺ − ℓ⁰)(p[k, c_j]) +
    w_box · |size[k] − size_j|₁ / 2`` (ℓ⁺, ℓ⁰ the heatmap loss of a positive and of an empty
    target at the centre pixel, :func:`slot_cost_heat`), and link j to relation slot k
    minimising ``Σ_j w_heat · (ℓ⁺ − ℓ⁰)(p[k, r_j]) + w_link · (‖src[k] − m_s‖² +
    ‖dst[k] − m_d‖²) / 2E`` with the matched object tags m. Costs use detached maps.

    The matched problem is then rewritten without slots (each slot's maps stacked along H,
    indices and targets shifted to the assigned slot) and handed to ``terms_fn``, the
    one-slot terms of :meth:`aehg.models.MultiStackLoss.stack_terms`, so the terms are
    computed by the same code with and without slots.

    Args:
        out: one stack's maps.
        targets: from :func:`check_slot_targets` (index targets range-checked by the caller).
        cfg: loss weights and kinds (defaults when None).
        terms_fn: the one-slot terms (``MultiStackLoss(cfg).stack_terms`` when None).

    Shapes:
        per term: (B,)
    """
    cfg = LossConfig() if cfg is None else cfg
    kind = cfg.heatmap
    obj = out.objects
    b, sc, h, w = obj.heatmaps.shape
    hw = h * w
    so = obj.slots
    c = sc // so
    parts = targets["parts"]
    n = parts.shape[1]
    with_boxes = obj.sizes is not None and "box_index" in targets

    # ------------------------------------------------------------ objects: matching
    if so == 1:
        obj_parts = parts
        heat_target = targets["heatmaps"]
        slot_of = torch.zeros(b, n, dtype=torch.int64, device=parts.device)
    else:
        groups = targets["object_groups"]
        members = groups >= 0
        valid, cls, pixel = _object_rows(parts, hw)
        g_cls, g_pix = _group_take(cls, groups), _group_take(pixel, groups)   # (B, G, S)
        k = torch.arange(so, device=groups.device)
        # Heat of class c_j at the member's pixel in every slot k: (B, G, S_member, S_slot).
        index = k * (c * hw) + (g_cls * hw + g_pix)[..., None]
        cost = cfg.heatmap_weight * slot_cost_heat(_gather_flat(obj.heatmaps, index), kind)
        if with_boxes:
            size = _gather_vec(obj.sizes.detach(), k.expand(*g_pix.shape, so),
                               g_pix[..., None].expand(*g_pix.shape, so), 2)
            want = _group_take(targets["box_size"].float(), groups)          # (B, G, S, 2)
            cost = cost + cfg.box_weight * (size - want[..., None, :]).abs().sum(-1) / 2
        slot_of = _slot_of_rows(groups, assign_slots(cost, members), n)
        ok = valid & (slot_of >= 0)
        heat_target = draw_slot_gaussians(
            obj.heatmaps.shape, slot_of.clamp(min=0) * (c * hw) + cls * hw + pixel, ok,
            targets["slot_patch"][0])
        # One part per object: its tag is read in its slot's tag map (C_t = S_o).
        obj_parts = torch.stack([torch.where(ok, slot_of * hw + pixel, 0), ok.long()],
                                dim=-1)[:, :, None]
    # The matched problem, written as one without slots: the heat targets cover all slots,
    # object k's tag is read in tag map k (C_t = S_o), and the box sizes and link embeddings
    # of slot k become rows k·H … (k+1)·H − 1 of one map, so that the flat index
    # k·H·W + y·W + x addresses pixel (x, y) of slot k.
    flat = dict(targets)
    flat["heatmaps"], flat["parts"] = heat_target, obj_parts
    sizes = obj.sizes
    if so > 1 and with_boxes:
        sizes = sizes.reshape(b, so, 2, h, w).transpose(1, 2).reshape(b, 2, so * h, w)
        box_index = targets["box_index"]
        bslot = slot_of[:, : box_index.shape[1]]
        bok = (box_index[..., 1] > 0) & (bslot >= 0)
        flat["box_index"] = torch.stack(
            [torch.where(bok, bslot * hw + box_index[..., 0] % hw, 0), bok.long()], dim=-1)
    flat_objects = ObjectMaps(obj.heatmaps, obj.tags, sizes)

    # ------------------------------------------------------------ links
    inter = out.interactions
    flat_inter = None
    if inter is not None:
        flat_inter = InteractionMaps(inter.heatmaps, inter.src, inter.dst)
    if inter is not None and "links" in targets and inter.slots > 1:
        links = targets["links"]
        sr = inter.slots
        r = inter.heatmaps.shape[1] // sr
        e = inter.src.shape[1] // sr
        groups = targets["link_groups"]
        members = groups >= 0
        loc, s_row, d_row, lcls = (links[..., i] for i in range(4))
        lvalid = links[..., 4] > 0
        refs, has_ref = _object_refs(obj.tags, obj_parts)                    # (B, N, E)
        nn_ = refs.shape[1]
        s_idx, d_idx = s_row.clamp(0, nn_ - 1), d_row.clamp(0, nn_ - 1)
        m_s = refs.gather(1, s_idx[..., None].expand(-1, -1, refs.shape[2]))
        m_d = refs.gather(1, d_idx[..., None].expand(-1, -1, refs.shape[2]))
        both = has_ref.gather(1, s_idx) & has_ref.gather(1, d_idx)
        g_loc, g_cls = _group_take(loc, groups), _group_take(lcls, groups)
        k = torch.arange(sr, device=groups.device)
        index = k * (r * hw) + (g_cls * hw + g_loc)[..., None]
        cost = cfg.heatmap_weight * slot_cost_heat(_gather_flat(inter.heatmaps, index), kind)
        kk = k.expand(*g_loc.shape, sr)
        ll = g_loc[..., None].expand(*g_loc.shape, sr)
        vs = _gather_vec(inter.src.detach(), kk, ll, e)                     # (B, G, S, S, E)
        vd = _gather_vec(inter.dst.detach(), kk, ll, e)
        gs, gd = _group_take(m_s, groups), _group_take(m_d, groups)         # (B, G, S, E)
        emb = (((vs - gs[..., None, :]) ** 2).sum(-1)
               + ((vd - gd[..., None, :]) ** 2).sum(-1)) / (2 * e)
        emb = emb * _group_take(both, groups)[..., None].to(emb.dtype)
        cost = cost + cfg.link_weight * emb
        slot_l = _slot_of_rows(groups, assign_slots(cost, members), links.shape[1])
        lok = lvalid & (slot_l >= 0)
        flat["link_heatmaps"] = draw_slot_gaussians(
            inter.heatmaps.shape, slot_l.clamp(min=0) * (r * hw) + lcls * hw + loc, lok,
            targets["slot_patch"][0])
        flat_inter = InteractionMaps(
            inter.heatmaps,
            inter.src.reshape(b, sr, e, h, w).transpose(1, 2).reshape(b, e, sr * h, w),
            inter.dst.reshape(b, sr, e, h, w).transpose(1, 2).reshape(b, e, sr * h, w))
        flat["links"] = torch.stack([torch.where(lok, slot_l * hw + loc, 0), s_row, d_row,
                                     lcls, lok.long()], dim=-1)
    if terms_fn is None:
        terms_fn = MultiStackLoss(cfg).stack_terms
    return terms_fn(StackOutput(flat_objects, flat_inter), flat)
