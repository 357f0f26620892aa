"""Losses (docs/design.md §3): heatmaps, associative-embedding grouping, links, box sizes, all
stacks.

Every loss works on the whole batch at once with gathers, masks and broadcasting (no Python loop
over images, instances or parts) and returns one value per image, shape ``(B,)``;
:class:`MultiStackLoss` applies them to every stack's outputs, weights them by the config and
averages over the batch.

Example:
    >>> loss_fn = MultiStackLoss(LossConfig())
    >>> total, breakdown = loss_fn(model(batch["image"]), batch)
    >>> total.backward(); breakdown["stack0/pull"], breakdown["push"]
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from aehg.config import LossConfig
from aehg.models.hourglass import StackOutput

__all__ = ["MultiStackLoss", "ae_loss", "box_loss", "breakdown_floats", "heatmap_loss",
           "link_loss"]

_FOCAL_EPS = 1e-4


def _float(x: torch.Tensor) -> torch.Tensor:
    # Low-precision (AMP) inputs are reduced in float32.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_index(name: str, t: torch.Tensor, ndim: int, last: int) -> None:
    if not isinstance(t, torch.Tensor) or t.dim() != ndim or t.shape[-1] != last:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        dims = ", ".join(["…"] * (ndim - 1) + [str(last)])
        raise ValueError(f"{name}: expected an integer tensor of shape ({dims}), got {shape}")
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name}: expected an integer tensor, got dtype {t.dtype}")


def _check_range(name: str, index: torch.Tensor, valid: torch.Tensor, size: int) -> None:
    bad = valid & ((index < 0) | (index >= size))
    if bool(bad.any()):
        value = int(index[bad][0])
        raise ValueError(f"{name}: index {value} out of range [0, {size}) for the given maps")


# --------------------------------------------------------------------------- heatmaps


class _MaskedMSE(torch.autograd.Function):
    """``mean_{c,y,x} mask · (pred − target)²`` per image with a hand-written backward.

    Autograd's version of this elementwise chain makes about twice as many passes over the
    (large) heatmaps as needed; here the forward keeps ``mask · diff`` and the backward is one
    multiply.
    """

    @staticmethod
    def forward(ctx: Any, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:
        b = pred.shape[0]
        diff = pred - target
        masked = diff * mask[:, None]
        per_image = (masked.reshape(b, -1) * diff.reshape(b, -1)).sum(dim=1)
        scale = 1.0 / diff[0].numel() if b else 1.0
        ctx.scale = scale
        ctx.save_for_backward(masked)
        return per_image * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (masked,) = ctx.saved_tensors
        g = masked * (2 * ctx.scale * grad)[:, None, None, None]
        return (g if ctx.needs_input_grad[0] else None,
                -g if ctx.needs_input_grad[1] else None, None)


class _Focal(torch.autograd.Function):
    """CenterNet focal loss per image with a hand-written backward (see :func:`heatmap_loss`).

    No shape depends on the data (no host synchronisation, no gather of the positives). With
    ``d = p − 1`` at the positives (target exactly 1), ``d = p`` elsewhere, and ``u = |d|``,
    both terms take one form, ``−log(1 − u) · d² · W`` with ``W = mask`` at the positives and
    ``(1 − t)⁴ · mask`` elsewhere, so one dense pass of few fused ops computes both; and since
    ``du/dp = sign(d)``, the gradient ``(u / (1 − u) − 2 log(1 − u)) · W · d`` needs no sign
    flip. It is formed in the forward so that the backward is one multiply. At a positive with
    p < 0.5, log p is formed as ``log1p(−(1 − p))``: relative error up to 2⁻²⁴ / (p |log p|)
    in float32.
    """

    @staticmethod
    def forward(ctx: Any, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                need_grad: bool) -> torch.Tensor:
        b = pred.shape[0]
        p = pred.clamp(_FOCAL_EPS, 1 - _FOCAL_EPS)
        m = mask[:, None].expand_as(pred)
        positive = (target == 1).to(p.dtype)
        # (1 − t)⁴ is exactly 0 at the positives: adding 1 there gives the weight W.
        weight = torch.sub(1, target).square_().square_().add_(positive).mul_(m)
        d = p - positive
        u = d.abs()
        log_neg = torch.neg(u).log1p_()                               # log(1 − u)
        wd = weight * d
        per_image = -(wd * d).mul_(log_neg).reshape(b, -1).sum(dim=1)
        # Masked positives (W = 0 there) are ignored, in the count too.
        num_pos = (positive * m).reshape(b, -1).sum(dim=1).clamp(min=1)
        if need_grad:
            grad = torch.sub(1, u).reciprocal_().mul_(u).sub_(log_neg, alpha=2).mul_(wd)
            # The clamp passes gradients only inside [eps, 1 − eps] (inclusive, as torch.clamp).
            grad.masked_fill_(p != pred, 0.0)
            ctx.save_for_backward(grad, num_pos)
        return per_image / num_pos

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad, num_pos = ctx.saved_tensors
        return grad * (grad_out / num_pos)[:, None, None, None], None, None, None


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                 kind: Literal["mse", "focal"] = "mse") -> torch.Tensor:
    """Masked heatmap loss per image.

    ``"mse"``: ``mean_{c,y,x} mask · (pred − target)²`` (masked pixels count in the mean, as
    in the AE code). ``"focal"``: the CenterNet focal loss on probabilities (``pred`` already
    activated by a sigmoid, clamped to [1e-4, 1 − 1e-4]):
    ``−(Σ_pos mask log(p)(1 − p)² + Σ_neg mask (1 − t)⁴ log(1 − p) p²) / max(Σ_pos mask, 1)``
    with positives the pixels whose target is exactly 1; masked pixels contribute nothing.

    Args:
        pred: predicted heatmaps.
        target: target heatmaps.
        mask: 1 where the loss counts, 0 where it is ignored.
        kind: "mse" or "focal".

    Returns:
        Loss per image.

    Shapes:
        pred, target: (B, C, H, W); mask: (B, H, W) -> (B,)
    """
    if pred.dim() != 4 or target.shape != pred.shape:
        raise ValueError(f"heatmap_loss: pred and target must both be (B, C, H, W), got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    b, _, h, w = pred.shape
    if mask.shape != (b, h, w):
        raise ValueError(f"heatmap_loss: mask: expected shape {(b, h, w)}, got "
                         f"{tuple(mask.shape)}")
    pred = _float(pred)
    target = target.to(device=pred.device, dtype=pred.dtype)
    mask = mask.to(device=pred.device, dtype=pred.dtype)
    if kind == "mse":
        return _MaskedMSE.apply(pred, target, mask)
    if kind == "focal":
        # Targets are constants here: no gradient flows into them.
        # Inside Function.forward grad mode is off, so tell it whether a backward can follow
        # (no gradient is formed in validation).
        need_grad = torch.is_grad_enabled() and pred.requires_grad
        return _Focal.apply(pred, target.detach(), mask.detach(), need_grad)
    raise ValueError(f"heatmap_loss: kind: expected 'mse' or 'focal', got {kind!r}")


# --------------------------------------------------------------------------- grouping


def _gather_tags(tags: torch.Tensor, parts: torch.Tensor, check: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tags at the listed parts and their visibility (``check``: raise on an index outside the
    maps; :class:`MultiStackLoss` checks its targets once for all stacks instead).

    Shapes:
        tags: (B, C_t, E, H, W); parts: (B, N, C, 2) -> (B, N, C, E), (B, N, C) bool
    """
    if tags.dim() != 5:
        raise ValueError(f"tags: expected shape (B, C_t, E, H, W), got {tuple(tags.shape)}")
    _check_index("parts", parts, 4, 2)
    b, ct, e, h, w = tags.shape
    if parts.shape[0] != b:
        raise ValueError(f"parts: batch size {parts.shape[0]} does not match tags "
                         f"{tuple(tags.shape)}")
    parts = parts.to(tags.device)
    n, c = parts.shape[1:3]
    hw = h * w
    visible = parts[..., 1] > 0
    index = torch.where(visible, parts[..., 0], 0)
    if check:
        _check_range("parts", index, visible, ct * hw)
    # Index the (C_t, E, H·W) layout directly rather than permuting the whole tag map.
    chan = torch.div(index, hw, rounding_mode="floor")
    base = (chan * (e * hw) + (index - chan * hw)).reshape(b, n * c, 1)
    full = base + torch.arange(e, device=tags.device) * hw            # (B, N·C, E)
    gathered = tags.flatten(1).gather(1, full.reshape(b, n * c * e))
    return _float(gathered.reshape(b, n, c, e)), visible


def _references(h: torch.Tensor, visible: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference tags ``m_n`` (mean over visible parts), part counts and instance validity.

    Shapes:
        h: (B, N, C, E); visible: (B, N, C) -> m (B, N, E), weights (B, N, C), valid (B, N)
    """
    weights = visible.to(h.dtype)
    count = weights.sum(dim=2)                                        # K_n
    means = (h * weights[..., None]).sum(dim=2) / count.clamp(min=1)[..., None]
    return means, weights, count > 0


def _ae_terms(h: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, valid: torch.Tensor,
              margin: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    b, n, _, e = h.shape
    count = weights.sum(dim=2).clamp(min=1)
    valid_f = valid.to(h.dtype)
    num_valid = valid_f.sum(dim=1)

    sq = ((h - means[:, :, None]) ** 2).sum(dim=-1)                   # (B, N, C)
    pull_n = (sq * weights).sum(dim=2) / (count * e)
    pull = (pull_n * valid_f).sum(dim=1) / num_valid.clamp(min=1)

    d2 = ((means[:, :, None] - means[:, None]) ** 2).sum(dim=-1)      # (B, N, N)
    upper = torch.ones(n, n, dtype=torch.bool, device=h.device).triu(1)
    pairs = (valid[:, :, None] & valid[:, None, :] & upper).to(h.dtype)
    num_pairs = num_valid * (num_valid - 1) / 2
    if margin is None:
        push = 0.5 * (torch.exp(-d2) * pairs).sum(dim=(1, 2)) / num_pairs.clamp(min=1)
    else:
        # sqrt has an infinite derivative at 0 (coincident tags, the diagonal, padding rows):
        # take it only where d² > 0 so gradients stay finite.
        positive = d2 > 0
        dist = torch.where(positive, torch.where(positive, d2, 1.0).sqrt(), 0.0)
        hinge = torch.relu(margin - dist) ** 2
        push = (hinge * pairs).sum(dim=(1, 2)) / num_pairs.clamp(min=1)
    return push, pull


def ae_loss(tags: torch.Tensor, parts: torch.Tensor, margin: float | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Associative-embedding grouping loss (push, pull) per image, as in the AE training code.

    With ``h_k`` the tag of visible part k of instance n and ``m_n`` their mean, over the N
    instances with at least one visible part:
    ``pull = (1/N) Σ_n (1/K_n) Σ_k ‖h_k − m_n‖² / E`` and
    ``push = 0.5 · Σ_{n<n'} exp(−‖m_n − m_n'‖²) / (N(N−1)/2)`` (0 when N ≤ 1), or with a
    ``margin`` m: ``push = mean_{n<n'} max(0, m − ‖m_n − m_n'‖)²``.

    Args:
        tags: tag maps as the model emits them.
        parts: rows (flat index into C_t·H·W, visible) from :func:`aehg.data.build_targets`;
            rows with visible 0 are ignored.
        margin: None for the exp push, a positive number for the margin form.

    Returns:
        ``(push, pull)``, each per image.

    Shapes:
        tags: (B, C_t, E, H, W); parts: (B, N, C, 2) -> push (B,), pull (B,)
    """
    if margin is not None and not margin > 0:
        raise ValueError(f"margin: expected None or a positive number, got {margin}")
    h, visible = _gather_tags(tags, parts)
    means, weights, valid = _references(h, visible)
    return _ae_terms(h, weights, means, valid, margin)


# --------------------------------------------------------------------------- links


def _gather_pixels(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of ``maps`` at flat pixel indices. Shapes: (B, D, H, W), (B, L) -> (B, L, D)."""
    b, d = maps.shape[:2]
    idx = index[:, None, :].expand(b, d, index.shape[1])
    return _float(maps.flatten(2).gather(2, idx)).transpose(1, 2)


def _link_from_references(src: torch.Tensor, dst: torch.Tensor, links: torch.Tensor,
                          means: torch.Tensor, valid: torch.Tensor, check: bool = True
                          ) -> torch.Tensor:
    _check_index("links", links, 3, 5)
    b, e, h, w = src.shape
    if dst.shape != src.shape:
        raise ValueError(f"link_loss: src and dst must have the same shape, got "
                         f"{tuple(src.shape)} and {tuple(dst.shape)}")
    if links.shape[0] != b or means.shape[-1] != e:
        raise ValueError(f"link_loss: links {tuple(links.shape)} and tag dimension "
                         f"{means.shape[-1]} do not match src {tuple(src.shape)}")
    links = links.to(src.device)
    n = means.shape[1]
    ok = links[..., 4] > 0
    loc = torch.where(ok, links[..., 0], 0)
    s = torch.where(ok, links[..., 1], 0)
    d = torch.where(ok, links[..., 2], 0)
    if check:
        _check_range("links (location)", loc, ok, h * w)
        _check_range("links (src instance)", s, ok, n)
        _check_range("links (dst instance)", d, ok, n)
    if n == 0:  # no instance: (range-checked above) no valid link; a dummy row keeps shapes
        means = means.new_zeros(b, 1, e)
        valid = valid.new_zeros(b, 1)
    # A link counts only when both its instances have a reference tag.
    ok = ok & valid.gather(1, s) & valid.gather(1, d)
    ok_f = ok.to(means.dtype)
    m_src = means.gather(1, s[..., None].expand(-1, -1, e))          # (B, L, E)
    m_dst = means.gather(1, d[..., None].expand(-1, -1, e))
    err = (((_gather_pixels(src, loc) - m_src) ** 2).sum(dim=-1)
           + ((_gather_pixels(dst, loc) - m_dst) ** 2).sum(dim=-1)) / (2 * e)
    return (err * ok_f).sum(dim=1) / ok_f.sum(dim=1).clamp(min=1)


def link_loss(src: torch.Tensor, dst: torch.Tensor, links: torch.Tensor, tags: torch.Tensor,
              parts: torch.Tensor) -> torch.Tensor:
    """Pull each link's ``src``/``dst`` embeddings towards its instances' reference tags.

    For every valid link l (location p, source s, destination d) whose two instances have a
    visible part: ``err_l = (‖src[p] − m_s‖² + ‖dst[p] − m_d‖²) / (2E)`` with ``m_n`` the mean
    tag of instance n (as in :func:`ae_loss`); the loss is the mean of ``err_l`` over those
    links (0 when there are none). Gradients flow into both the link embeddings and the tags.

    Args:
        src: source-embedding map.
        dst: destination-embedding map.
        links: rows (flat location y·W + x, src row, dst row, class, valid).
        tags: tag maps.
        parts: part rows as for :func:`ae_loss`.

    Returns:
        Loss per image.

    Shapes:
        src, dst: (B, E, H, W); links: (B, L, 5); tags: (B, C_t, E, H, W);
        parts: (B, N, C, 2) -> (B,)
    """
    h, visible = _gather_tags(tags, parts)
    means, _, valid = _references(h, visible)
    return _link_from_references(src, dst, links, means, valid)


# --------------------------------------------------------------------------- boxes


def box_loss(sizes: torch.Tensor, box_index: torch.Tensor, box_size: torch.Tensor,
             check: bool = True) -> torch.Tensor:
    """L1 box-size loss at object centres: mean of ``|pred − target|`` over valid boxes and
    both of (w, h); 0 for an image without boxes.

    Args:
        sizes: predicted (w, h) maps.
        box_index: rows (flat centre y·W + x, valid).
        box_size: target (w, h) per row.
        check: raise on a centre outside the maps (:class:`MultiStackLoss` checks its targets
            once for all stacks instead).

    Returns:
        Loss per image.

    Shapes:
        sizes: (B, 2, H, W); box_index: (B, N, 2); box_size: (B, N, 2) -> (B,)
    """
    if sizes.dim() != 4 or sizes.shape[1] != 2:
        raise ValueError(f"sizes: expected shape (B, 2, H, W), got {tuple(sizes.shape)}")
    _check_index("box_index", box_index, 3, 2)
    if box_size.shape != box_index.shape or box_index.shape[0] != sizes.shape[0]:
        raise ValueError(f"box_loss: box_index {tuple(box_index.shape)} and box_size "
                         f"{tuple(box_size.shape)} must both be (B, N, 2) with B = "
                         f"{sizes.shape[0]}")
    box_index = box_index.to(sizes.device)
    ok = box_index[..., 1] > 0
    index = torch.where(ok, box_index[..., 0], 0)
    if check:
        _check_range("box_index", index, ok, sizes.shape[2] * sizes.shape[3])
    pred = _gather_pixels(sizes, index)                               # (B, N, 2)
    target = box_size.to(device=pred.device, dtype=pred.dtype)
    ok_f = ok.to(pred.dtype)
    l1 = (pred - target).abs().sum(dim=-1) * ok_f
    return l1.sum(dim=1) / (2 * ok_f.sum(dim=1).clamp(min=1))


# --------------------------------------------------------------------------- all stacks


def _shape_error(key: str, got: Sequence[int], what: str, expected: Sequence[int]) -> ValueError:
    return ValueError(f"batch[{key!r}] has shape {tuple(got)} but {what} has shape "
                      f"{tuple(expected)}")


class MultiStackLoss(nn.Module):
    """All losses on every stack, weighted by a :class:`aehg.config.LossConfig`.

    ``total = Σ_stacks Σ_terms weight · mean_over_batch(term)`` with the terms
    ``heatmap`` (object heatmaps, weight ``heatmap_weight``), ``push`` and ``pull``
    (:func:`ae_loss`; not for a model without tags, E = 0, which needs no ``parts`` either),
    and, when both the model and the batch have them, ``link_heatmap`` (interaction heatmaps,
    weight ``heatmap_weight``), ``link`` (:func:`link_loss`) and ``box`` (:func:`box_loss`);
    absent terms are skipped.

    Called as ``loss_fn(outputs, batch) -> (total, breakdown)``: ``total`` is a scalar tensor,
    ``breakdown`` maps ``"stack{s}/{term}"`` to the unweighted batch mean of a term at stack s,
    ``"{term}"`` to its sum over stacks, and ``"total"`` to the total, each a detached 0-dim
    tensor on the outputs' device: reading them is left to the caller, so that a training step
    need not wait for the device (:func:`breakdown_floats` reads them all in one transfer;
    ``float(v)`` reads one).

    The index targets (``parts``, ``links``, ``box_index``) are range-checked once per call for
    all stacks. By default an index outside the maps raises at once (one host synchronisation
    per call). With ``defer_checks=True`` (training) the call never synchronises: the rows with
    an index outside the maps are ignored and counted, and :meth:`take_target_errors` hands
    the counts over whenever the caller reads values anyway.

    Args:
        cfg: loss weights and kinds.
        defer_checks: count out-of-range index rows instead of raising at once.

    Raises:
        ValueError: a batch target is missing or its shape does not match the model outputs
            (the message names the key and both shapes); an index outside the maps (unless
            deferred; the message names the target and the index).
    """

    def __init__(self, cfg: LossConfig | None = None, *, defer_checks: bool = False) -> None:
        super().__init__()
        self.defer_checks = defer_checks
        # Deferred checks: per index target, the calls that had an out-of-range row (0-dim
        # int64 tensors on the device).
        self._target_errors: dict[str, torch.Tensor] = {}
        cfg = LossConfig() if cfg is None else cfg
        if not isinstance(cfg, LossConfig):
            raise TypeError(f"cfg: expected aehg.config.LossConfig, got {type(cfg).__name__}")
        cfg.validate()
        self.cfg = cfg
        self.weights = {"heatmap": cfg.heatmap_weight, "push": cfg.push_weight,
                        "pull": cfg.pull_weight, "link_heatmap": cfg.heatmap_weight,
                        "link": cfg.link_weight, "box": cfg.box_weight}

    @staticmethod
    def _get(batch: Mapping[str, Any], key: str, device: torch.device) -> torch.Tensor:
        if key not in batch:
            raise ValueError(f"batch: missing key {key!r} (needed by the loss)")
        return torch.as_tensor(batch[key], device=device)

    def _check(self, out: StackOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if out.objects.slots > 1 or getattr(out.interactions, "slots", 1) > 1:
            from aehg.models.slots import check_slot_targets  # slots imports this module
            t = check_slot_targets(out, batch)
            self._check_indices(out, t)
            return t
        obj = out.objects
        dev = obj.heatmaps.device
        b, c, h, w = obj.heatmaps.shape
        # A model without tags (E = 0, single-person pose) has no AE term and needs no parts.
        with_tags = obj.tags.shape[2] > 0
        t = {k: self._get(batch, k, dev)
             for k in (("heatmaps", "mask", "parts") if with_tags else ("heatmaps", "mask"))}
        if t["heatmaps"].shape != obj.heatmaps.shape:
            raise _shape_error("heatmaps", t["heatmaps"].shape, "the model's heatmaps",
                               obj.heatmaps.shape)
        if t["mask"].shape != (b, h, w):
            raise _shape_error("mask", t["mask"].shape, "(B, H, W) of the model's heatmaps",
                               (b, h, w))
        p = t.get("parts")
        if p is not None and (p.dim() != 4 or p.shape[0] != b or p.shape[2] != c
                              or p.shape[3] != 2):
            raise _shape_error("parts", p.shape, "(B, ·, C, 2) of the model's heatmaps",
                               (b, "N", c, 2))
        inter = out.interactions
        if inter is not None and "links" in batch:
            for k in ("link_heatmaps", "links"):
                t[k] = self._get(batch, k, dev)
            if t["link_heatmaps"].shape != inter.heatmaps.shape:
                raise _shape_error("link_heatmaps", t["link_heatmaps"].shape,
                                   "the model's interaction heatmaps", inter.heatmaps.shape)
            lk = t["links"]
            if lk.dim() != 3 or lk.shape[0] != b or lk.shape[2] != 5:
                raise _shape_error("links", lk.shape, "(B, L, 5) with B of the model outputs",
                                   (b, "L", 5))
        if obj.sizes is not None and "box_index" in batch:
            for k in ("box_index", "box_size"):
                t[k] = self._get(batch, k, dev)
                if t[k].dim() != 3 or t[k].shape[0] != b or t[k].shape[2] != 2:
                    raise _shape_error(k, t[k].shape, "(B, N, 2) with B of the model outputs",
                                       (b, "N", 2))
            if t["box_size"].shape != t["box_index"].shape:
                raise _shape_error("box_size", t["box_size"].shape, "batch['box_index']",
                                   t["box_index"].shape)
        self._check_indices(out, t)
        return t

    def _check_indices(self, out: StackOutput, t: dict[str, torch.Tensor]) -> None:
        """Range-check the index targets against stack 0's maps (all stacks share them).

        Eager: one host read for all targets, raising on the first bad one. Deferred: the bad
        rows are marked invalid in ``t`` (so no gather leaves the maps) and counted.
        """
        obj = out.objects
        h, w = obj.heatmaps.shape[2:]
        rows: list[tuple[str, str, torch.Tensor, torch.Tensor, int]] = []  # label, key, ...
        if "parts" in t:
            p = t["parts"]
            visible = p[..., 1] > 0
            rows.append(("parts", "parts", p[..., 0], visible, obj.tags.shape[1] * h * w))
        if "links" in t:
            lk = t["links"]
            ok = lk[..., 4] > 0
            n = t["parts"].shape[1] if "parts" in t else 0
            rows += [("links (location)", "links", lk[..., 0], ok, h * w),
                     ("links (src instance)", "links", lk[..., 1], ok, n),
                     ("links (dst instance)", "links", lk[..., 2], ok, n)]
        if "box_index" in t:
            bi = t["box_index"]
            rows.append(("box_index", "box_index", bi[..., 0], bi[..., 1] > 0, h * w))
        if not rows:
            return
        bad = [valid & ((index < 0) | (index >= size)) for _, _, index, valid, size in rows]
        if not self.defer_checks:
            flags = torch.stack([b.any() for b in bad]).tolist()
            for (label, _, index, valid, size), flag in zip(rows, flags, strict=True):
                if flag:
                    _check_range(label, index, valid, size)
            return
        per_key: dict[str, torch.Tensor] = {}
        for (_, key, *_), b in zip(rows, bad, strict=True):
            per_key[key] = b if key not in per_key else per_key[key] | b
        for key, b in per_key.items():
            # A bad row counts as absent: its valid flag (last column) becomes 0.
            t[key] = torch.where(b[..., None], torch.zeros_like(t[key]), t[key])
            count = b.any().to(torch.int64)
            prev = self._target_errors.get(key)
            self._target_errors[key] = count if prev is None else prev + count

    def take_target_errors(self) -> dict[str, torch.Tensor]:
        """The deferred range-check counts since the last call, and reset them.

        Returns:
            Per index target key (``"parts"``, ``"links"``, ``"box_index"``), the number of
            calls whose batch had a row with an index outside the maps (0-dim int64 tensors on
            the device; rows like that were ignored). Empty without ``defer_checks``.
        """
        errors, self._target_errors = self._target_errors, {}
        return errors

    def stack_terms(self, out: StackOutput, targets: Mapping[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        """Unweighted per-image terms of one stack (targets already checked)."""
        if out.objects.slots > 1 or getattr(out.interactions, "slots", 1) > 1:
            from aehg.models.slots import slot_stack_terms  # docs/design.md "Slots"
            return slot_stack_terms(out, targets, self.cfg, self.stack_terms)
        obj = out.objects
        kind = self.cfg.heatmap
        terms = {"heatmap": heatmap_loss(obj.heatmaps, targets["heatmaps"], targets["mask"],
                                         kind)}
        inter = out.interactions
        if obj.tags.shape[2] == 0:  # no tags (E = 0): the heatmap term only
            return terms
        # The index targets were range-checked once for all stacks (_check_indices).
        h, visible = _gather_tags(obj.tags, targets["parts"], check=False)
        means, weights, valid = _references(h, visible)
        terms["push"], terms["pull"] = _ae_terms(h, weights, means, valid, self.cfg.push_margin)
        if inter is not None and "links" in targets:
            terms["link_heatmap"] = heatmap_loss(inter.heatmaps, targets["link_heatmaps"],
                                                 targets["mask"], kind)
            terms["link"] = _link_from_references(inter.src, inter.dst, targets["links"],
                                                  means, valid, check=False)
        if obj.sizes is not None and "box_index" in targets:
            terms["box"] = box_loss(obj.sizes, targets["box_index"], targets["box_size"],
                                    check=False)
        return terms

    def forward(self, outputs: Sequence[StackOutput], batch: Mapping[str, Any]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its breakdown. Shapes: see the class docstring and docs/design.md §1."""
        if isinstance(outputs, StackOutput):
            outputs = [outputs]
        if len(outputs) == 0:
            raise ValueError("outputs: expected at least one StackOutput")
        targets = self._check(outputs[0], batch)
        total = None
        breakdown: dict[str, torch.Tensor] = {}
        for s, out in enumerate(outputs):
            if out.objects.heatmaps.shape != outputs[0].objects.heatmaps.shape:
                raise ValueError(f"outputs[{s}]: heatmaps {tuple(out.objects.heatmaps.shape)} "
                                 f"differ from stack 0 {tuple(outputs[0].objects.heatmaps.shape)}")
            for name, value in self.stack_terms(out, targets).items():
                mean = value.mean()
                weighted = self.weights[name] * mean
                total = weighted if total is None else total + weighted
                # Detached tensors: no host read here (see breakdown_floats).
                v = mean.detach()
                breakdown[f"stack{s}/{name}"] = v
                breakdown[name] = breakdown[name] + v if name in breakdown else v
        breakdown["total"] = total.detach()
        return total, breakdown


def breakdown_floats(breakdown: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    """The values of a :class:`MultiStackLoss` breakdown as floats, read in one transfer.

    Tensors are stacked (per device) and moved to the host together; plain numbers pass through.

    Args:
        breakdown: 0-dim tensors (or floats) by name.

    Returns:
        The same names with float values.
    """
    out: dict[str, float] = {}
    groups: dict[torch.device, list[str]] = {}
    for k, v in breakdown.items():
        if isinstance(v, torch.Tensor):
            groups.setdefault(v.device, []).append(k)
        else:
            out[k] = float(v)
    for names in groups.values():
        values = [breakdown[k].detach().reshape(()) for k in names]
        dtype = functools.reduce(torch.promote_types, (v.dtype for v in values))
        floats = torch.stack([v.to(dtype) for v in values]).tolist()
        out.update(zip(names, (float(f) for f in floats), strict=True))
    return {k: out[k] for k in breakdown}
