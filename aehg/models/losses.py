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

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from aehg.config import LossConfig
from aehg.models.hourglass import StackOutput

__all__ = ["MultiStackLoss", "ae_loss", "box_loss", "heatmap_loss", "link_loss"]

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

    Positives (target exactly 1) are few, so their term is computed on gathered pixels; the
    negative term is dense but fused into few passes, and the gradient is formed in the forward
    so that the backward is one multiply.
    """

    @staticmethod
    def forward(ctx: Any, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                need_grad: bool) -> torch.Tensor:
        # The positives are gathered and scattered through flat views: on a non-contiguous
        # input (a channel slice of a channels_last head) reshape(-1) would be a copy and the
        # positives' gradient would be lost.
        pred, target, mask = pred.contiguous(), target.contiguous(), mask.contiguous()
        b = pred.shape[0]
        p = pred.clamp(_FOCAL_EPS, 1 - _FOCAL_EPS)
        m = mask[:, None].expand_as(pred)
        # Negative weight (1 − t)⁴ · mask; it is 0 at the positives themselves.
        w = torch.sub(1, target).square_().square_().mul_(m)
        log_neg = torch.neg(p).log1p_()                               # log(1 − p)
        pw = p * w
        neg = -(pw * p).mul_(log_neg).reshape(b, -1).sum(dim=1)

        flat = (target.reshape(-1) == 1).nonzero().squeeze(1)
        mw = m.reshape(-1)[flat]
        flat, mw = flat[mw > 0], mw[mw > 0]                        # masked positives: ignored
        per = pred[0].numel() if b else 1
        image = torch.div(flat, per, rounding_mode="floor")
        pp = p.reshape(-1)[flat]
        log_pos = pp.log()
        pos = torch.zeros(b, dtype=p.dtype, device=p.device)
        pos.index_add_(0, image, -log_pos * (1 - pp) ** 2 * mw)
        num_pos = torch.zeros(b, dtype=p.dtype, device=p.device).index_add_(0, image, mw)
        num_pos = num_pos.clamp(min=1)
        if need_grad:
            # d/dp of −log(1 − p) p² w = p w (p / (1 − p) − 2 log(1 − p))
            grad = torch.sub(1, p).reciprocal_().mul_(p).sub_(log_neg, alpha=2).mul_(pw)
            # d/dp of −log(p) (1 − p)² = −(1 − p)² / p + 2 (1 − p) log p
            grad.reshape(-1).index_add_(
                0, flat, (-(1 - pp) ** 2 / pp + 2 * (1 - pp) * log_pos) * mw)
            # The clamp passes gradients only inside [eps, 1 − eps] (inclusive, as torch.clamp).
            low, high = pred.aminmax() if pred.numel() else (p.new_ones(()), p.new_zeros(()))
            if low < _FOCAL_EPS or high > 1 - _FOCAL_EPS:
                grad.masked_fill_((pred < _FOCAL_EPS) | (pred > 1 - _FOCAL_EPS), 0.0)
            ctx.save_for_backward(grad, num_pos)
        return (pos + neg) / num_pos

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


def _gather_tags(tags: torch.Tensor, parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tags at the listed parts and their visibility.

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
                          means: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
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


def box_loss(sizes: torch.Tensor, box_index: torch.Tensor, box_size: torch.Tensor
             ) -> torch.Tensor:
    """L1 box-size loss at object centres: mean of ``|pred − target|`` over valid boxes and
    both of (w, h); 0 for an image without boxes.

    Args:
        sizes: predicted (w, h) maps.
        box_index: rows (flat centre y·W + x, valid).
        box_size: target (w, h) per row.

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
    ``"{term}"`` to its sum over stacks, and ``"total"`` to ``float(total)``.

    Raises:
        ValueError: a batch target is missing or its shape does not match the model outputs
            (the message names the key and both shapes).
    """

    def __init__(self, cfg: LossConfig | None = None) -> None:
        super().__init__()
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
        return t

    def stack_terms(self, out: StackOutput, targets: Mapping[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        """Unweighted per-image terms of one stack (targets already checked)."""
        obj = out.objects
        kind = self.cfg.heatmap
        terms = {"heatmap": heatmap_loss(obj.heatmaps, targets["heatmaps"], targets["mask"],
                                         kind)}
        inter = out.interactions
        if obj.tags.shape[2] == 0:  # no tags (E = 0): the heatmap term only
            return terms
        h, visible = _gather_tags(obj.tags, targets["parts"])
        means, weights, valid = _references(h, visible)
        terms["push"], terms["pull"] = _ae_terms(h, weights, means, valid, self.cfg.push_margin)
        if inter is not None and "links" in targets:
            terms["link_heatmap"] = heatmap_loss(inter.heatmaps, targets["link_heatmaps"],
                                                 targets["mask"], kind)
            terms["link"] = _link_from_references(inter.src, inter.dst, targets["links"],
                                                  means, valid)
        if obj.sizes is not None and "box_index" in targets:
            terms["box"] = box_loss(obj.sizes, targets["box_index"], targets["box_size"])
        return terms

    def forward(self, outputs: Sequence[StackOutput], batch: Mapping[str, Any]
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its breakdown. Shapes: see the class docstring and docs/design.md §1."""
        if isinstance(outputs, StackOutput):
            outputs = [outputs]
        if len(outputs) == 0:
            raise ValueError("outputs: expected at least one StackOutput")
        targets = self._check(outputs[0], batch)
        total = None
        breakdown: dict[str, float] = {}
        for s, out in enumerate(outputs):
            if out.objects.heatmaps.shape != outputs[0].objects.heatmaps.shape:
                raise ValueError(f"outputs[{s}]: heatmaps {tuple(out.objects.heatmaps.shape)} "
                                 f"differ from stack 0 {tuple(outputs[0].objects.heatmaps.shape)}")
            for name, value in self.stack_terms(out, targets).items():
                mean = value.mean()
                weighted = self.weights[name] * mean
                total = weighted if total is None else total + weighted
                v = float(mean.detach())
                breakdown[f"stack{s}/{name}"] = v
                breakdown[name] = breakdown.get(name, 0.0) + v
        breakdown["total"] = float(total.detach())
        return total, breakdown
