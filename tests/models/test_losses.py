"""Losses against naive per-image / per-instance loops written from the formulas of
docs/design.md §3."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aehg.config import LossConfig
from aehg.data.targets import build_targets
from aehg.models import InteractionMaps, ObjectMaps, StackedHourglass, StackOutput
from aehg.models.losses import (
    MultiStackLoss,
    ae_loss,
    box_loss,
    breakdown_floats,
    heatmap_loss,
    link_loss,
)

# --------------------------------------------------------------------------- helpers


def _random_parts(gen, b, n, c, h, w, tag_per_class, p_visible=0.6, p_empty=0.2):
    """Rows (flat index, visible); invisible rows carry garbage indices that must be ignored."""
    pix = torch.randint(0, h * w, (b, n, c), generator=gen)
    chan = torch.arange(c)[None, None, :] if tag_per_class else torch.zeros(1, 1, c).long()
    index = chan * h * w + pix
    visible = torch.rand(b, n, c, generator=gen) < p_visible
    visible &= torch.rand(b, n, 1, generator=gen) >= p_empty
    garbage = torch.randint(-5, 10**6, (b, n, c), generator=gen)
    index = torch.where(visible, index, garbage)
    return torch.stack([index, visible.long()], dim=-1)


def _tag_at(tags_b, index, h, w):
    ct, pix = divmod(int(index), h * w)
    y, x = divmod(pix, w)
    return tags_b[ct, :, y, x]


def _naive_references(tags_b, parts_b, h, w):
    """{instance: (reference tag, list of part tags)} for instances with a visible part."""
    refs = {}
    for n in range(parts_b.shape[0]):
        hs = [_tag_at(tags_b, idx, h, w) for idx, v in parts_b[n].tolist() if v > 0]
        if hs:
            stacked = torch.stack(hs)
            refs[n] = (stacked.mean(dim=0), stacked)
    return refs


def _naive_ae(tags, parts, margin=None):
    b, _, e, h, w = tags.shape
    push, pull = [], []
    for i in range(b):
        refs = _naive_references(tags[i], parts[i], h, w)
        p = torch.zeros((), dtype=tags.dtype)
        for m, hs in refs.values():
            p = p + ((hs - m) ** 2).sum(dim=1).mean() / e
        num = len(refs)
        pull.append(p / num if num else p)
        means = [m for m, _ in refs.values()]
        s = torch.zeros((), dtype=tags.dtype)
        for a in range(num):
            for c in range(a + 1, num):
                d2 = ((means[a] - means[c]) ** 2).sum()
                if margin is None:
                    s = s + torch.exp(-d2)
                else:
                    dist = torch.sqrt(d2) if d2 > 0 else torch.zeros_like(d2)
                    s = s + torch.clamp(margin - dist, min=0) ** 2
        pairs = num * (num - 1) / 2
        if num <= 1:
            push.append(torch.zeros((), dtype=tags.dtype))
        else:
            push.append((0.5 if margin is None else 1.0) * s / pairs)
    return torch.stack(push), torch.stack(pull)


def _naive_link(src, dst, links, tags, parts):
    b, e, h, w = src.shape
    out = []
    for i in range(b):
        refs = _naive_references(tags[i], parts[i], h, w)
        errs = []
        for loc, s, d, _, ok in links[i].tolist():
            if not ok or s not in refs or d not in refs:
                continue
            y, x = divmod(loc, w)
            errs.append((((src[i, :, y, x] - refs[s][0]) ** 2).sum()
                         + ((dst[i, :, y, x] - refs[d][0]) ** 2).sum()) / (2 * e))
        out.append(torch.stack(errs).mean() if errs else torch.zeros((), dtype=src.dtype))
    return torch.stack(out)


def _naive_focal(pred, target, mask):
    """CenterNet _neg_loss per image, written with autograd ops, plus the mask."""
    p = pred.clamp(1e-4, 1 - 1e-4)
    m = mask[:, None]
    pos = (target == 1).to(pred.dtype) * m
    neg = (target < 1).to(pred.dtype) * (1 - target) ** 4 * m
    pos_loss = (torch.log(p) * (1 - p) ** 2 * pos).sum(dim=(1, 2, 3))
    neg_loss = (torch.log(1 - p) * p ** 2 * neg).sum(dim=(1, 2, 3))
    return -(pos_loss + neg_loss) / pos.sum(dim=(1, 2, 3)).clamp(min=1)


# --------------------------------------------------------------------------- AE loss


@pytest.mark.parametrize("n", [0, 1, 2, 7, 30])
@pytest.mark.parametrize("e", [1, 2, 8])
@pytest.mark.parametrize("tag_per_class", [True, False])
def test_ae_loss_matches_naive_loop(n, e, tag_per_class):
    gen = torch.Generator().manual_seed(100 * n + 10 * e + tag_per_class)
    for b in (1, 4):
        c, h, w = 5, 6, 7
        ct = c if tag_per_class else 1
        tags = torch.randn(b, ct, e, h, w, generator=gen, dtype=torch.float64) * 0.7
        parts = _random_parts(gen, b, n, c, h, w, tag_per_class)
        for margin in (None, 1.5):
            push, pull = ae_loss(tags, parts, margin=margin)
            ref_push, ref_pull = _naive_ae(tags, parts, margin=margin)
            assert push.shape == pull.shape == (b,)
            torch.testing.assert_close(push, ref_push, rtol=0, atol=1e-6)
            torch.testing.assert_close(pull, ref_pull, rtol=0, atol=1e-6)


def test_ae_loss_is_nontrivial_on_a_hand_case():
    # Two instances, E = 1: tags {1, 3} -> m = 2, pull = 1; tag {0} -> m = 0, pull = 0.
    tags = torch.zeros(1, 2, 1, 1, 4, dtype=torch.float64)
    tags[0, 0, 0, 0] = torch.tensor([1.0, 3.0, 0.0, 9.0], dtype=torch.float64)
    parts = torch.tensor([[[[0, 1], [1, 1]], [[2, 1], [3, 0]]]])
    push, pull = ae_loss(tags, parts)
    assert pull.item() == pytest.approx(0.5 * (1.0 + 0.0))
    assert push.item() == pytest.approx(0.5 * math.exp(-4.0))
    push_m, _ = ae_loss(tags, parts, margin=3.0)
    assert push_m.item() == pytest.approx(1.0)


@pytest.mark.parametrize("margin", [None, 1.0])
@pytest.mark.parametrize("case", ["no_instances", "one_instance", "all_invisible",
                                  "coincident"])
def test_ae_loss_degenerate_cases_have_zero_push_and_finite_gradients(margin, case):
    b, c, e, h, w = 2, 3, 2, 4, 4
    tags = torch.randn(b, c, e, h, w, dtype=torch.float64, requires_grad=True)
    if case == "no_instances":
        parts = torch.zeros(b, 0, c, 2, dtype=torch.long)
    elif case == "one_instance":
        parts = torch.tensor([[[0, 1], [16 + 5, 1], [0, 0]]]).expand(b, 1, c, 2).clone()
        parts = torch.cat([parts, torch.zeros(b, 4, c, 2, dtype=torch.long)], dim=1)
    elif case == "all_invisible":
        parts = torch.zeros(b, 5, c, 2, dtype=torch.long)
    else:  # two instances reading the very same pixel: identical references, d = 0
        parts = torch.tensor([[[[3, 1], [0, 0], [0, 0]], [[3, 1], [0, 0], [0, 0]]]])
        parts = parts.expand(b, 2, c, 2).clone()
    push, pull = ae_loss(tags, parts, margin=margin)
    if case == "coincident":
        expected = 0.5 if margin is None else margin ** 2
        torch.testing.assert_close(push, torch.full((b,), expected, dtype=torch.float64))
    else:
        assert (push == 0).all()
    if case != "one_instance":
        assert (pull == 0).all()
    (push.sum() + pull.sum()).backward()
    assert torch.isfinite(tags.grad).all()


def test_ae_loss_gradients_match_naive_loop():
    gen = torch.Generator().manual_seed(3)
    tags = torch.randn(3, 4, 2, 5, 5, generator=gen, dtype=torch.float64)
    parts = _random_parts(gen, 3, 7, 4, 5, 5, True)
    for margin in (None, 0.8):
        t1 = tags.clone().requires_grad_()
        t2 = tags.clone().requires_grad_()
        push, pull = ae_loss(t1, parts, margin=margin)
        (push.sum() + 2 * pull.sum()).backward()
        rpush, rpull = _naive_ae(t2, parts, margin=margin)
        (rpush.sum() + 2 * rpull.sum()).backward()
        torch.testing.assert_close(t1.grad, t2.grad, rtol=0, atol=1e-9)


def test_ae_loss_reads_the_tag_at_the_target_location():
    # Tag value encodes (class, y, x); the part rows come from build_targets.
    c, h, w = 3, 8, 10
    cc, yy, xx = torch.meshgrid(torch.arange(c), torch.arange(h), torch.arange(w),
                                indexing="ij")
    code = (cc * 1000 + yy * 100 + xx).double()
    tags = code[None, :, None].repeat(1, 1, 2, 1, 1)          # (1, C, E=2, H, W)
    parts = np.array([[[2.2, 3.0, 1.0], [7.0, 5.4, 1.0], [0.0, 0.0, 0.0]]])
    t, _ = build_targets(parts, (h, w), max_instances=2)
    idx = torch.from_numpy(t["parts"])[None]
    # pull = mean squared deviation from the mean of the two read tags
    a, bb = 0 * 1000 + 3 * 100 + 2, 1 * 1000 + 5 * 100 + 7
    _, pull = ae_loss(tags, idx)
    assert pull.item() == pytest.approx(0.5 * ((a - bb) / 2) ** 2 * 2 / 1)

    shared_tags = code[:1][None, :, None]                        # (1, 1, 1, H, W)
    t, _ = build_targets(parts, (h, w), max_instances=2, tag_per_class=False)
    _, pull = ae_loss(shared_tags, torch.from_numpy(t["parts"])[None])
    a, bb = 3 * 100 + 2, 5 * 100 + 7
    assert pull.item() == pytest.approx(((a - bb) / 2) ** 2)


def test_ae_loss_errors():
    tags = torch.zeros(2, 3, 1, 4, 4)
    with pytest.raises(ValueError, match=r"tags: expected shape \(B, C_t, E, H, W\)"):
        ae_loss(tags[:, 0], torch.zeros(2, 1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"parts: expected an integer tensor"):
        ae_loss(tags, torch.zeros(2, 1, 3, 2))
    with pytest.raises(ValueError, match=r"parts: batch size 1 does not match"):
        ae_loss(tags, torch.zeros(1, 1, 3, 2, dtype=torch.long))
    bad = torch.tensor([[[[48, 1], [0, 0], [0, 0]]]]).expand(2, 1, 3, 2)
    with pytest.raises(ValueError, match=r"parts: index 48 out of range \[0, 48\)"):
        ae_loss(tags, bad)
    with pytest.raises(ValueError, match=r"margin"):
        ae_loss(tags, torch.zeros(2, 1, 3, 2, dtype=torch.long), margin=0.0)


# --------------------------------------------------------------------------- link loss


@pytest.mark.parametrize("e", [1, 2, 8])
@pytest.mark.parametrize("n", [0, 1, 7])
def test_link_loss_matches_naive_loop(e, n):
    gen = torch.Generator().manual_seed(7 * e + n)
    b, c, h, w, num_links = 3, 4, 5, 6, 9
    tags = torch.randn(b, 1, e, h, w, generator=gen, dtype=torch.float64)
    parts = _random_parts(gen, b, n, c, h, w, tag_per_class=False)
    src = torch.randn(b, e, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    dst = torch.randn(b, e, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    valid = (torch.rand(b, num_links, generator=gen) < 0.7).long() if n else \
        torch.zeros(b, num_links, dtype=torch.long)
    links = torch.stack([torch.randint(0, h * w, (b, num_links), generator=gen),
                         torch.randint(0, max(n, 1), (b, num_links), generator=gen),
                         torch.randint(0, max(n, 1), (b, num_links), generator=gen),
                         torch.randint(0, 3, (b, num_links), generator=gen), valid], dim=-1)
    got = link_loss(src, dst, links, tags, parts)
    ref = _naive_link(src, dst, links, tags, parts)
    assert got.shape == (b,)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)
    if n == 7:
        assert (got > 0).any()
    got.sum().backward()
    assert torch.isfinite(src.grad).all() and torch.isfinite(dst.grad).all()


def test_link_loss_errors():
    src = torch.zeros(1, 1, 4, 4)
    tags = torch.zeros(1, 1, 1, 4, 4)
    parts = torch.tensor([[[[1, 1]]]])
    with pytest.raises(ValueError, match=r"links \(src instance\): index 3 out of range"):
        link_loss(src, src, torch.tensor([[[0, 3, 0, 0, 1]]]), tags, parts)
    with pytest.raises(ValueError, match=r"links \(location\): index 16 out of range"):
        link_loss(src, src, torch.tensor([[[16, 0, 0, 0, 1]]]), tags, parts)
    # invalid rows may hold anything
    assert link_loss(src, src, torch.tensor([[[99, 9, -9, 0, 0]]]), tags, parts).item() == 0


# --------------------------------------------------------------------------- heatmaps


def _heat_case(gen, b=2, c=3, h=6, w=7):
    target = torch.rand(b, c, h, w, generator=gen, dtype=torch.float64) * 0.9
    target[:, :, 2, 3] = 1.0
    target[1, 0, 4, 5] = 1.0
    pred = (torch.rand(b, c, h, w, generator=gen, dtype=torch.float64) * 0.98 + 0.01)
    mask = (torch.rand(b, h, w, generator=gen) < 0.8).double()
    mask[0, 2, 3] = 0.0                      # one masked positive
    return pred, target, mask


def test_heatmap_mse_matches_formula_and_gradcheck():
    gen = torch.Generator().manual_seed(0)
    pred, target, mask = _heat_case(gen)
    got = heatmap_loss(pred, target, mask, "mse")
    ref = torch.stack([((pred[i] - target[i]) ** 2 * mask[i]).mean() for i in range(2)])
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    assert torch.autograd.gradcheck(
        lambda p: heatmap_loss(p, target, mask, "mse"), (pred.clone().requires_grad_(),))


def test_heatmap_focal_matches_centernet_and_gradcheck():
    gen = torch.Generator().manual_seed(1)
    pred, target, mask = _heat_case(gen)
    got = heatmap_loss(pred, target, mask, "focal")
    torch.testing.assert_close(got, _naive_focal(pred, target, mask), rtol=1e-10, atol=0)
    assert (got > 0).all()
    assert torch.autograd.gradcheck(
        lambda p: heatmap_loss(p, target, mask, "focal"), (pred.clone().requires_grad_(),))
    # outside [1e-4, 1 - 1e-4] the clamp stops the gradient, as torch.clamp does
    edge = pred.clone()
    edge[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 1e-6], dtype=torch.float64)
    p1, p2 = edge.clone().requires_grad_(), edge.clone().requires_grad_()
    heatmap_loss(p1, target, mask, "focal").sum().backward()
    _naive_focal(p2, target, mask).sum().backward()
    torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(heatmap_loss(edge, target, mask, "focal"),
                               _naive_focal(edge, target, mask), rtol=1e-10, atol=0)


@pytest.mark.parametrize("kind", ["mse", "focal"])
def test_heatmap_loss_on_channels_last_slices_matches_naive(kind):
    # The model's heatmaps are channel slices of a channels_last head output: non-contiguous.
    gen = torch.Generator().manual_seed(2)
    pred, target, mask = _heat_case(gen)
    c = pred.shape[1]
    head = torch.cat([pred, torch.rand(pred.shape, generator=gen, dtype=pred.dtype)], 1)
    head = head.contiguous(memory_format=torch.channels_last).requires_grad_()
    view = head[:, :c]
    assert not view.is_contiguous()
    heatmap_loss(view, target, mask, kind).sum().backward()
    ref = pred.clone().requires_grad_()
    naive = _naive_focal(ref, target, mask) if kind == "focal" else torch.stack(
        [((ref[i] - target[i]) ** 2 * mask[i]).mean() for i in range(ref.shape[0])])
    naive.sum().backward()
    torch.testing.assert_close(head.grad[:, :c], ref.grad, rtol=1e-9, atol=1e-12)
    assert (head.grad[:, c:] == 0).all()


def test_focal_without_positives_is_normalised_by_one():
    pred = torch.full((1, 1, 2, 2), 0.5, dtype=torch.float64)
    target = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    got = heatmap_loss(pred, target, torch.ones(1, 2, 2, dtype=torch.float64), "focal")
    assert got.item() == pytest.approx(-4 * math.log(0.5) * 0.25)


@pytest.mark.parametrize("kind", ["mse", "focal"])
def test_masked_pixels_contribute_nothing(kind):
    gen = torch.Generator().manual_seed(2)
    pred, target, mask = _heat_case(gen)
    # the mask broadcasts over channels: redraw every channel at each image's masked pixels
    changed = pred.clone()
    noise = torch.rand(pred.shape, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    masked = (mask == 0)[:, None].expand_as(pred)
    changed[masked] = noise[masked]
    assert not torch.equal(changed, pred)
    torch.testing.assert_close(heatmap_loss(changed, target, mask, kind),
                               heatmap_loss(pred, target, mask, kind), rtol=1e-12, atol=0)
    p = changed.clone().requires_grad_()
    heatmap_loss(p, target, mask, kind).sum().backward()
    assert (p.grad[masked] == 0).all() and (p.grad[~masked] != 0).any()


def test_heatmap_loss_errors():
    x = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"mask: expected shape \(1, 3, 3\)"):
        heatmap_loss(x, x, torch.ones(1, 3, 4))
    with pytest.raises(ValueError, match=r"kind: expected 'mse' or 'focal'"):
        heatmap_loss(x, x, torch.ones(1, 3, 3), "l1")


# --------------------------------------------------------------------------- boxes


def test_box_loss_matches_naive_loop():
    gen = torch.Generator().manual_seed(4)
    b, n, h, w = 3, 5, 6, 7
    sizes = torch.randn(b, 2, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    index = torch.stack([torch.randint(0, h * w, (b, n), generator=gen),
                         (torch.rand(b, n, generator=gen) < 0.6).long()], dim=-1)
    index[2, :, 1] = 0
    target = torch.rand(b, n, 2, generator=gen, dtype=torch.float64) * 10
    got = box_loss(sizes, index, target)
    ref = []
    for i in range(b):
        errs = [(sizes[i, :, loc // w, loc % w] - target[i, j]).abs()
                for j, (loc, ok) in enumerate(index[i].tolist()) if ok]
        ref.append(torch.cat(errs).mean() if errs else torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(got, torch.stack(ref), rtol=0, atol=1e-12)
    assert got[2] == 0
    got.sum().backward()
    assert torch.isfinite(sizes.grad).all()


# --------------------------------------------------------------------------- all stacks


def _outputs_and_batch(gen, stacks=3, b=2, c=4, e=2, h=8, w=8, r=3, n=5, boxes=True,
                       links=True, tag_per_class=True, dtype=torch.float64):
    outs = []
    for _ in range(stacks):
        obj = ObjectMaps(
            heatmaps=(torch.rand(b, c, h, w, generator=gen, dtype=dtype) * 0.9 + 0.05
                      ).requires_grad_(),
            tags=torch.randn(b, c if tag_per_class else 1, e, h, w, generator=gen,
                             dtype=dtype).requires_grad_(),
            sizes=torch.randn(b, 2, h, w, generator=gen, dtype=dtype).requires_grad_()
            if boxes else None)
        inter = InteractionMaps(
            heatmaps=(torch.rand(b, r, h, w, generator=gen, dtype=dtype) * 0.9 + 0.05
                      ).requires_grad_(),
            src=torch.randn(b, e, h, w, generator=gen, dtype=dtype).requires_grad_(),
            dst=torch.randn(b, e, h, w, generator=gen, dtype=dtype).requires_grad_(),
        ) if links else None
        outs.append(StackOutput(objects=obj, interactions=inter))
    target = torch.rand(b, c, h, w, generator=gen) * 0.9
    target[:, :, 1, 1] = 1
    link_target = torch.rand(b, r, h, w, generator=gen) * 0.9
    link_target[:, :, 2, 2] = 1
    batch = {
        "heatmaps": target, "mask": (torch.rand(b, h, w, generator=gen) < 0.9).float(),
        "parts": _random_parts(gen, b, n, c, h, w, tag_per_class),
        "link_heatmaps": link_target,
        "links": torch.stack([torch.randint(0, h * w, (b, 6), generator=gen),
                              torch.randint(0, n, (b, 6), generator=gen),
                              torch.randint(0, n, (b, 6), generator=gen),
                              torch.randint(0, r, (b, 6), generator=gen),
                              torch.ones(b, 6, dtype=torch.long)], dim=-1),
        "box_index": torch.stack([torch.randint(0, h * w, (b, n), generator=gen),
                                  torch.ones(b, n, dtype=torch.long)], dim=-1),
        "box_size": torch.rand(b, n, 2, generator=gen) * 5,
    }
    return outs, batch


@pytest.mark.parametrize("kind", ["mse", "focal"])
@pytest.mark.parametrize("margin", [None, 1.0])
def test_multistack_is_sum_of_single_stacks_and_weighted_terms(kind, margin):
    gen = torch.Generator().manual_seed(5)
    outs, batch = _outputs_and_batch(gen)
    cfg = LossConfig(heatmap=kind, push_margin=margin, heatmap_weight=1.5, push_weight=0.2,
                     pull_weight=0.3, link_weight=0.4, box_weight=0.5)
    loss_fn = MultiStackLoss(cfg)
    total, breakdown = loss_fn(outs, batch)
    singles = [loss_fn([o], batch)[0] for o in outs]
    torch.testing.assert_close(total, sum(singles), rtol=1e-12, atol=0)

    manual = torch.zeros((), dtype=torch.float64)
    for s, o in enumerate(outs):
        obj, inter = o.objects, o.interactions
        push, pull = ae_loss(obj.tags, batch["parts"], margin=margin)
        terms = {
            "heatmap": (1.5, heatmap_loss(obj.heatmaps, batch["heatmaps"], batch["mask"], kind)),
            "push": (0.2, push), "pull": (0.3, pull),
            "link_heatmap": (1.5, heatmap_loss(inter.heatmaps, batch["link_heatmaps"],
                                               batch["mask"], kind)),
            "link": (0.4, link_loss(inter.src, inter.dst, batch["links"], obj.tags,
                                    batch["parts"])),
            "box": (0.5, box_loss(obj.sizes, batch["box_index"], batch["box_size"])),
        }
        for name, (weight, value) in terms.items():
            manual = manual + weight * value.mean()
            assert breakdown[f"stack{s}/{name}"] == pytest.approx(value.mean().item())
            assert value.mean().item() != 0
    torch.testing.assert_close(total, manual, rtol=1e-12, atol=0)
    for name in ("heatmap", "push", "pull", "link_heatmap", "link", "box"):
        assert breakdown[name] == pytest.approx(
            sum(breakdown[f"stack{s}/{name}"] for s in range(3)))
    assert breakdown["total"] == pytest.approx(total.item())

    total.backward()
    for o in outs:
        for t in (o.objects.heatmaps, o.objects.tags, o.objects.sizes, o.interactions.heatmaps,
                  o.interactions.src, o.interactions.dst):
            assert t.grad is not None and torch.isfinite(t.grad).all()


def test_multistack_skips_absent_terms():
    gen = torch.Generator().manual_seed(6)
    outs, batch = _outputs_and_batch(gen, stacks=2, boxes=False, links=False)
    total, breakdown = MultiStackLoss()(outs, batch)
    assert set(breakdown) == {f"stack{s}/{k}" for s in range(2)
                              for k in ("heatmap", "push", "pull")} | {
        "heatmap", "push", "pull", "total"}
    outs, batch = _outputs_and_batch(gen, stacks=1)
    for key in ("links", "link_heatmaps", "box_index", "box_size"):
        del batch[key]
    _, breakdown = MultiStackLoss()(outs, batch)
    assert "link" not in breakdown and "box" not in breakdown
    assert torch.isfinite(total)


def test_multistack_empty_images_give_finite_gradients():
    gen = torch.Generator().manual_seed(8)
    outs, batch = _outputs_and_batch(gen, stacks=2, n=3)
    batch["parts"] = torch.zeros_like(batch["parts"])
    batch["links"][..., 4] = 0
    batch["box_index"][..., 1] = 0
    for margin in (None, 0.5):
        for o in outs:
            o.objects.tags.grad = None
        total, breakdown = MultiStackLoss(LossConfig(push_margin=margin))(outs, batch)
        assert breakdown["push"] == breakdown["pull"] == breakdown["link"] == 0
        total.backward()
        for o in outs:
            assert torch.isfinite(o.objects.tags.grad).all()


@pytest.mark.parametrize("key, shape, message", [
    ("heatmaps", (2, 4, 8, 9), r"batch\['heatmaps'\] has shape \(2, 4, 8, 9\) but the "
                               r"model's heatmaps has shape \(2, 4, 8, 8\)"),
    ("mask", (2, 8, 9), r"batch\['mask'\] has shape \(2, 8, 9\) .*\(2, 8, 8\)"),
    ("parts", (2, 5, 3, 2), r"batch\['parts'\] has shape \(2, 5, 3, 2\) .*\(2, 'N', 4, 2\)"),
    ("link_heatmaps", (2, 2, 8, 8), r"batch\['link_heatmaps'\] has shape \(2, 2, 8, 8\) but "
                                    r"the model's interaction heatmaps has shape \(2, 3, 8, 8\)"),
    ("links", (2, 6, 4), r"batch\['links'\] has shape \(2, 6, 4\)"),
    ("box_index", (1, 5, 2), r"batch\['box_index'\] has shape \(1, 5, 2\)"),
])
def test_multistack_shape_errors_name_key_and_shapes(key, shape, message):
    gen = torch.Generator().manual_seed(9)
    outs, batch = _outputs_and_batch(gen, stacks=1)
    dtype = batch[key].dtype
    batch[key] = torch.zeros(shape, dtype=dtype)
    with pytest.raises(ValueError, match=message):
        MultiStackLoss()(outs, batch)


def test_multistack_missing_key_and_bad_config():
    gen = torch.Generator().manual_seed(10)
    outs, batch = _outputs_and_batch(gen, stacks=1)
    del batch["parts"]
    with pytest.raises(ValueError, match=r"batch: missing key 'parts'"):
        MultiStackLoss()(outs, batch)
    with pytest.raises(TypeError, match=r"LossConfig"):
        MultiStackLoss({"heatmap": "mse"})


def test_multistack_with_model_and_built_targets():
    torch.manual_seed(0)
    model = StackedHourglass(num_stacks=2, channels=16, depth=2, num_classes=3,
                             embedding_dim=2, tag_per_class=False, num_link_classes=2,
                             box_size=True, heatmap_activation="sigmoid")
    rng = np.random.default_rng(0)
    per_image = []
    for _ in range(2):
        centres = rng.uniform(2, 14, size=(4, 2))
        parts = np.zeros((4, 3, 3))
        labels = rng.integers(0, 3, size=4)
        parts[np.arange(4), labels, :2] = centres
        parts[np.arange(4), labels, 2] = 1
        boxes = np.concatenate([centres - 2, centres + 2], axis=1)
        t, _ = build_targets(parts, (16, 16), tag_per_class=False, boxes=boxes,
                             links=np.array([[0, 1, 0], [2, 3, 1]]), num_link_classes=2,
                             max_instances=6, max_links=4)
        per_image.append(t)
    batch = {k: torch.from_numpy(np.stack([t[k] for t in per_image])) for k in per_image[0]}
    outs = model(torch.randn(2, 3, 64, 64))
    total, breakdown = MultiStackLoss(LossConfig(heatmap="focal"))(outs, batch)
    assert {"stack1/link", "stack1/box", "stack1/link_heatmap"} <= set(breakdown)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# --------------------------------------------------------------------------- host reads


def test_breakdown_is_detached_tensors_read_in_one_transfer(monkeypatch):
    gen = torch.Generator().manual_seed(11)
    outs, batch = _outputs_and_batch(gen, stacks=2)
    total, breakdown = MultiStackLoss()(outs, batch)
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad
               for v in breakdown.values())
    calls = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda t: calls.append(1) or tolist(t))
    floats = breakdown_floats({**breakdown, "extra": 2.5})
    assert len(calls) == 1
    assert list(floats) == [*breakdown, "extra"] and floats["extra"] == 2.5
    for k, v in breakdown.items():
        assert floats[k] == v.item() and isinstance(floats[k], float)
    assert floats["total"] == total.item()
    assert floats["heatmap"] == pytest.approx(floats["stack0/heatmap"] + floats["stack1/heatmap"],
                                              rel=1e-12)


@pytest.mark.parametrize("kind", ["mse", "focal"])
def test_loss_and_backward_read_nothing_from_the_device(monkeypatch, kind):
    # With deferred checks nothing is brought to the host: no item/bool/float/int/tolist, no
    # nonzero (a data-dependent shape), forward and backward alike.
    gen = torch.Generator().manual_seed(12)
    outs, batch = _outputs_and_batch(gen, stacks=2)
    loss_fn = MultiStackLoss(LossConfig(heatmap=kind), defer_checks=True)
    calls = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "nonzero"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name)
                            or _real(*a, **k))
    monkeypatch.setattr(torch, "nonzero", lambda *a, **k: calls.append("torch.nonzero"))
    total, _ = loss_fn(outs, batch)
    total.backward()
    monkeypatch.undo()
    assert calls == []
    assert all(v.dim() == 0 for v in loss_fn.take_target_errors().values())


def test_deferred_range_checks_ignore_and_count_bad_rows():
    gen = torch.Generator().manual_seed(13)
    outs, batch = _outputs_and_batch(gen, stacks=2, c=4, h=8, w=8, n=5)
    bad = {k: v.clone() for k, v in batch.items()}
    bad["parts"][0, 1, 2] = torch.tensor([4 * 64, 1])        # one past C_t·H·W, visible
    bad["links"][1, 3, 2] = 5                               # dst instance N (rows 0..4)
    # The reference: the same rows left out by hand (not visible / not valid).
    ref = {k: v.clone() for k, v in batch.items()}
    ref["parts"][0, 1, 2] = torch.tensor([0, 0])
    ref["links"][1, 3] = 0
    with pytest.raises(ValueError, match=r"parts: index 256 out of range \[0, 256\)"):
        MultiStackLoss()(outs, bad)
    deferred = MultiStackLoss(defer_checks=True)
    total, breakdown = deferred(outs, bad)
    want, want_breakdown = MultiStackLoss()(outs, ref)
    torch.testing.assert_close(total, want, rtol=1e-12, atol=0)
    assert breakdown_floats(breakdown) == pytest.approx(breakdown_floats(want_breakdown),
                                                        rel=1e-12)
    deferred(outs, bad)
    deferred(outs, batch)
    errors = {k: int(v) for k, v in deferred.take_target_errors().items()}
    assert errors == {"parts": 2, "links": 2, "box_index": 0}
    assert {k: int(v) for k, v in deferred.take_target_errors().items()} == {}   # reset
    bad = {k: v.clone() for k, v in batch.items()}
    bad["links"][0, 0, 0] = 64                              # location H·W
    with pytest.raises(ValueError, match=r"links \(location\): index 64 out of range"):
        MultiStackLoss()(outs, bad)
