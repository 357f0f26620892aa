"""Slots (docs/design.md "Slots"): matching, targets, loss and decoding with several objects
and links per pixel."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from aehg.checkpoint import load_checkpoint, load_model_weights, save_checkpoint
from aehg.config import ConfigError, LossConfig, ModelConfig
from aehg.data.loader import collate
from aehg.data.targets import build_targets, slot_groups
from aehg.decoding import build_graph, decode_objects
from aehg.models import MultiStackLoss, StackedHourglass, build_model
from aehg.models.hourglass import InteractionMaps, ObjectMaps, StackOutput
from aehg.models.slots import assign_slots, slot_stack_terms

C, R, E, H = 5, 4, 3, 16


@pytest.mark.parametrize("s", [1, 2, 3, 4, 6])
def test_assignment_equals_linear_sum_assignment(s):
    g = torch.Generator().manual_seed(s)
    cost = torch.rand(7, 5, s, s, generator=g, dtype=torch.float64)
    members = torch.rand(7, 5, s, generator=g) < 0.7
    slot = assign_slots(cost, members)
    assert slot.shape == (7, 5, s)
    for i, j in itertools.product(range(7), range(5)):
        rows = np.nonzero(members[i, j].numpy())[0]
        c = cost[i, j].numpy()[rows]
        r, k = linear_sum_assignment(c)
        got = slot[i, j].numpy()[rows]
        assert sorted(got.tolist()) == sorted(set(got.tolist()))          # distinct slots
        assert c[np.arange(len(rows)), got].sum() == pytest.approx(c[r, k].sum(), abs=1e-12)
    # No cost: every member stays in its own slot (identity first).
    assert assign_slots(torch.zeros(2, s, s)).tolist() == [list(range(s))] * 2


def test_slot_groups_against_a_loop():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4, 20)
    valid = rng.random(20) < 0.8
    groups, beyond = slot_groups(pixels, valid, 2)
    expect, seen, lost = [], {}, 0
    for i in range(20):
        if not valid[i]:
            continue
        if pixels[i] not in seen:
            seen[pixels[i]] = len(expect)
            expect.append([])
        if len(expect[seen[pixels[i]]]) < 2:
            expect[seen[pixels[i]]].append(i)
        else:
            lost += 1
    got = [[v for v in row if v >= 0] for row in groups.tolist() if row[0] >= 0]
    assert got == expect and beyond == lost


def _sample(rng, so, sr, n=7):
    cent = rng.integers(1, H - 1, (n, 2)).astype(float)
    cent[1] = cent[0]                       # two objects on one pixel (different classes)
    lab = rng.integers(0, C, n)
    lab[1] = (lab[0] + 1) % C
    parts = np.zeros((n, C, 3))
    parts[np.arange(n), lab, :2] = cent
    parts[np.arange(n), lab, 2] = 1
    wh = rng.uniform(1, 5, (n, 2))
    boxes = np.concatenate([cent - wh / 2, cent + wh / 2], 1)
    links = np.array([[0, 2, 1], [2, 0, 2], [0, 2, 0], [1, 3, 1], [3, 4, 3]])  # a reverse pair
    t, _ = build_targets(parts, (H, H), tag_per_class=False, boxes=boxes, links=links,
                         num_link_classes=R, object_slots=so, relation_slots=sr,
                         max_instances=9, max_links=8)
    return {k: torch.as_tensor(v) for k, v in t.items()}


def _random_output(so, sr, b, seed):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    obj = ObjectMaps(torch.sigmoid(rnd(b, so * C, H, H)).clamp(1e-4, 1 - 1e-4),
                     rnd(b, so, E, H, H), rnd(b, 2 * so, H, H) * 3, slots=so)
    inter = InteractionMaps(torch.sigmoid(rnd(b, sr * R, H, H)).clamp(1e-4, 1 - 1e-4),
                            rnd(b, sr * E, H, H), rnd(b, sr * E, H, H), slots=sr)
    return StackOutput(obj, inter)


@pytest.mark.parametrize("kind", ["focal", "mse"])
def test_one_slot_loss_equals_the_loss_without_slots(kind):
    rng = np.random.default_rng(1)
    batch = collate([_sample(rng, 1, 1) for _ in range(3)])
    loss = MultiStackLoss(LossConfig(heatmap=kind, push_margin=None))
    for seed in range(3):
        out = _random_output(1, 1, 3, seed)
        targets = loss._check(out, batch)
        want = loss.stack_terms(out, targets)
        got = slot_stack_terms(out, targets, loss.cfg)
        assert want.keys() == got.keys() == {"heatmap", "push", "pull", "link_heatmap",
                                             "link", "box"}
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=0)


def _distinct_sample(rng, so, sr, n=6):
    """Objects on distinct pixels and links on distinct pixels: no collision at all."""
    while True:
        cent = rng.integers(1, H - 1, (n, 2)).astype(float)
        links = np.array([[0, 1, 1], [2, 3, 0], [4, 5, 3], [1, 4, 2]])
        mid = np.floor((cent[links[:, 0]] + cent[links[:, 1]]) / 2)
        if len({tuple(c) for c in cent}) == n and len({tuple(m) for m in mid}) == len(mid):
            break
    lab = rng.integers(0, C, n)
    parts = np.zeros((n, C, 3))
    parts[np.arange(n), lab, :2] = cent
    parts[np.arange(n), lab, 2] = 1
    wh = rng.uniform(1, 5, (n, 2))
    t, _ = build_targets(parts, (H, H), tag_per_class=False,
                         boxes=np.concatenate([cent - wh / 2, cent + wh / 2], 1), links=links,
                         num_link_classes=R, object_slots=so, relation_slots=sr,
                         max_instances=8, max_links=6)
    return {k: torch.as_tensor(v) for k, v in t.items()}


@pytest.mark.parametrize("kind", ["focal", "mse"])
def test_two_slots_without_collisions_equal_one_slot(kind):
    """Independent check of the slot path (matching, drawing on the device, the rewritten
    indices): without collisions and with an empty second slot, every object and link is
    matched to slot 0 and the 2/2-slot terms equal the 1/1-slot terms of slot 0."""
    seeds = [np.random.default_rng(6 + i) for i in range(3)]
    one_batch = collate([_distinct_sample(g, 1, 1) for g in seeds])
    seeds = [np.random.default_rng(6 + i) for i in range(3)]
    two_batch = collate([_distinct_sample(g, 2, 2) for g in seeds])
    loss = MultiStackLoss(LossConfig(heatmap=kind))
    one = _random_output(1, 1, 3, 0)
    o, i = one.objects, one.interactions
    empty = 1e-4 if kind == "focal" else 0.0
    two = StackOutput(
        ObjectMaps(torch.cat([o.heatmaps, torch.full_like(o.heatmaps, empty)], 1),
                   torch.cat([o.tags, o.tags + 50], 1), torch.cat([o.sizes, o.sizes + 7], 1),
                   slots=2),
        InteractionMaps(torch.cat([i.heatmaps, torch.full_like(i.heatmaps, empty)], 1),
                        torch.cat([i.src, i.src + 50], 1), torch.cat([i.dst, i.dst - 50], 1),
                        slots=2))
    _, want = loss([one], one_batch)
    _, got = loss([two], two_batch)
    assert set(got) == set(want)
    for k in want:
        # The MSE term is a mean over all channels: the (empty, exact) second slot halves it.
        scale = 0.5 if kind == "mse" and "heatmap" in k else 1.0
        if k != "total":
            assert float(got[k]) == pytest.approx(scale * float(want[k]), abs=1e-6), k


def test_slot_loss_is_invariant_to_a_permutation_of_the_slots():
    rng = np.random.default_rng(2)
    batch = collate([_sample(rng, 3, 4) for _ in range(2)])
    loss = MultiStackLoss(LossConfig(heatmap="focal"))
    out = _random_output(3, 4, 2, 0)
    total, parts = loss([out], batch)
    perm_o, perm_r = [2, 0, 1], [3, 1, 0, 2]

    def permute(t, s, perm):
        return t.reshape(t.shape[0], s, -1, *t.shape[-2:])[:, perm].reshape(t.shape)

    o, i = out.objects, out.interactions
    swapped = StackOutput(
        ObjectMaps(permute(o.heatmaps, 3, perm_o), o.tags[:, perm_o],
                   permute(o.sizes, 3, perm_o), slots=3),
        InteractionMaps(permute(i.heatmaps, 4, perm_r), permute(i.src, 4, perm_r),
                        permute(i.dst, 4, perm_r), slots=4))
    total2, parts2 = loss([swapped], batch)
    assert set(parts) == set(parts2)
    for k in parts:
        assert float(parts2[k]) == pytest.approx(float(parts[k]), abs=1e-9), k
    # The matching puts the two objects of one pixel into two slots: their heat targets do
    # not collide, so a model placing them there reaches a lower heat loss than one slot can.
    assert total.dtype == torch.float64 and torch.isfinite(total)


def test_slot_model_trains_end_to_end_and_one_slot_checkpoints_load(tmp_path):
    rng = np.random.default_rng(3)
    torch.manual_seed(0)
    cfg = ModelConfig(num_stacks=2, channels=16, depth=2, num_classes=C, embedding_dim=E,
                      tag_per_class=False, num_link_classes=R, box_size=True,
                      heatmap_activation="sigmoid", object_slots=3, relation_slots=4)
    model = build_model(cfg)
    outs = model(torch.randn(2, 3, 64, 64))
    assert outs[-1].objects.heatmaps.shape == (2, 3 * C, H, H)
    assert outs[-1].objects.tags.shape == (2, 3, E, H, H)
    assert outs[-1].interactions.src.shape == (2, 4 * E, H, H)
    batch = collate([_sample(rng, 3, 4) for _ in range(2)])
    total, _ = MultiStackLoss(LossConfig(heatmap="focal"))(outs, batch)
    total.backward()
    assert all(p.grad is not None for p in model.heads.parameters())

    # 1/1 slots: the model of a config without slot fields, same keys and outputs.
    base = dict(num_stacks=1, channels=16, depth=2, num_classes=C, embedding_dim=E,
                tag_per_class=False, num_link_classes=R, box_size=True)
    old = StackedHourglass(**base).eval()
    save_checkpoint(tmp_path / "old.pt", {"model": old.state_dict()})
    new = build_model(ModelConfig(**base, object_slots=1, relation_slots=1)).eval()
    assert list(new.state_dict()) == list(old.state_dict())
    load_model_weights(new, load_checkpoint(tmp_path / "old.pt"))
    x = torch.randn(1, 3, 64, 64)
    a, b = old(x)[-1], new(x)[-1]
    for t1, t2 in zip((a.objects.heatmaps, a.objects.tags, a.interactions.src),
                      (b.objects.heatmaps, b.objects.tags, b.interactions.src), strict=True):
        assert torch.equal(t1, t2)
    with pytest.raises(ValueError, match="missing keys|shape"):
        load_model_weights(build_model(cfg), load_checkpoint(tmp_path / "old.pt"))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="model.object_slots"):
        ModelConfig(num_link_classes=2, object_slots=3).validate()  # tag_per_class True
    with pytest.raises(ConfigError, match="model.relation_slots.*1..6"):
        ModelConfig(tag_per_class=False, num_link_classes=2, relation_slots=7).validate()
    with pytest.raises(ConfigError, match="model.relation_slots"):
        ModelConfig(tag_per_class=False, relation_slots=2).validate()


def test_loss_error_names_missing_groups():
    rng = np.random.default_rng(4)
    batch = collate([_sample(rng, 1, 1)])
    with pytest.raises(ValueError, match="missing key 'slot_patch'.*3 object / 1 relation"):
        MultiStackLoss()([_random_output(3, 1, 1, 0)], batch)


def test_decoding_reads_every_slot():
    so, sr = 2, 2
    heat = np.zeros((so * C, H, H), np.float32)
    tags = np.zeros((so, 1, H, H), np.float32)
    sizes = np.zeros((2 * so, H, H), np.float32)
    # Two objects of class 1 on pixel (5, 5): slot 0 tag 1, box 2×2; slot 1 tag 5, box 4×6.
    heat[0 * C + 1, 5, 5] = heat[1 * C + 1, 5, 5] = 0.9
    tags[0, 0, 5, 5], tags[1, 0, 5, 5] = 1.0, 5.0
    sizes[0:2, 5, 5], sizes[2:4, 5, 5] = 2.0, (4.0, 6.0)
    # A third object (class 3, tag 9) elsewhere.
    heat[3, 10, 2] = 0.8
    tags[0, 0, 10, 2] = 9.0
    inst = decode_objects(heat, tags, sizes, slots=so)
    assert len(inst) == 3 and sorted(inst.tags[:, 0].tolist()) == [1.0, 5.0, 9.0]
    big = int(np.nonzero(inst.tags[:, 0] == 5.0)[0][0])
    assert inst.boxes[big].tolist() == [3.0, 2.0, 7.0, 8.0] and inst.labels[big] == 1
    # A→B in slot 0 (predicate 2) and B→A in slot 1 (predicate 0) on one pixel.
    lh = np.zeros((sr * R, H, H), np.float32)
    src = np.zeros((sr, H, H), np.float32)
    dst = np.zeros((sr, H, H), np.float32)
    lh[2, 7, 3] = lh[R + 0, 7, 3] = 0.7
    src[0, 7, 3], dst[0, 7, 3] = 1.0, 9.0
    src[1, 7, 3], dst[1, 7, 3] = 9.0, 1.0
    g = build_graph(inst, lh, src, dst, slots=sr)
    a = int(np.nonzero(inst.tags[:, 0] == 1.0)[0][0])
    c = int(np.nonzero(inst.tags[:, 0] == 9.0)[0][0])
    assert sorted((u, v, k) for u, v, k in g.edges(keys=True)) == sorted([(a, c, 2),
                                                                          (c, a, 0)])
    # With one slot the same pixel can hold only one of them.
    one = build_graph(inst, lh[:R], src[:1], dst[:1])
    assert one.number_of_edges() == 1
    with pytest.raises(ValueError, match="tags: expected shape"):
        decode_objects(heat, tags[:1], sizes, slots=so)


def test_targets_list_objects_and_links_per_pixel():
    parts = np.zeros((4, C, 3))
    centres = [(3, 3), (3, 3), (3, 3), (8, 1)]
    for n, (x, y) in enumerate(centres):
        parts[n, n % C] = (x, y, 1)
    links = np.array([[0, 3, 0], [3, 0, 1], [1, 3, 2]])   # all three share one midpoint
    t, _ = build_targets(parts, (H, H), tag_per_class=False, links=links,
                         num_link_classes=R, object_slots=2, relation_slots=2,
                         max_instances=5, max_links=4)
    assert t["object_groups"].tolist() == [[0, 1], [3, -1], [-1, -1], [-1, -1], [-1, -1]]
    assert t["link_groups"].tolist() == [[0, 1], [-1, -1], [-1, -1], [-1, -1]]
    assert t["slot_patch"].shape == (15, 15) and t["slot_patch"][7, 7] == 1.0   # σ = 2
    plain, _ = build_targets(parts, (H, H), tag_per_class=False, links=links,
                             num_link_classes=R, max_instances=5, max_links=4)
    assert set(plain) == set(t) - {"object_groups", "link_groups", "slot_patch"}
    with pytest.raises(ValueError, match="several visible parts"):
        build_targets(np.ones((1, 2, 3)), (H, H), object_slots=2)


def test_flip_test_keeps_the_slot_layout():
    from aehg.inference.maps import forward_maps

    torch.manual_seed(0)
    model = StackedHourglass(num_stacks=1, channels=16, depth=2, num_classes=C,
                             embedding_dim=E, tag_per_class=False, num_link_classes=R,
                             box_size=True, object_slots=2, relation_slots=3).eval()
    x = torch.randn(1, 3, 64, 64)
    perm = np.array([1, 0, 2, 3, 4])
    with torch.no_grad():
        plain = model(x)[-1]
        mirrored = model(x.flip(-1))[-1]
        out = forward_maps(model, x, None, True, perm)
    assert out.objects.slots == 2 and out.interactions.slots == 3
    assert out.objects.tags.shape == (1, 2, 2 * E, H, H)
    # Slot k of the merged maps: [E of the plain pass | E of the mirrored pass, flipped back].
    src = out.interactions.src.reshape(1, 3, 2 * E, H, H)
    torch.testing.assert_close(src[:, :, :E], plain.interactions.src.reshape(1, 3, E, H, H))
    torch.testing.assert_close(src[:, :, E:],
                               mirrored.interactions.src.reshape(1, 3, E, H, H).flip(-1))
    want = (plain.objects.heatmaps.reshape(1, 2, C, H, H)
            + mirrored.objects.heatmaps.flip(-1).reshape(1, 2, C, H, H)[:, :, perm]) / 2
    torch.testing.assert_close(out.objects.heatmaps, want.reshape(1, 2 * C, H, H))


def test_slot_loss_code_makes_no_host_synchronisation(monkeypatch):
    """No call of slots.py brings a tensor value to Python (each is a device sync on CUDA)."""
    import traceback

    from aehg.models import slots as slots_module

    calls = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "nonzero"):
        original = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=original, _name=name, **k):
            caller = traceback.extract_stack(limit=2)[0]
            if caller.filename == slots_module.__file__:
                calls.append((_name, caller.lineno))
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    rng = np.random.default_rng(5)
    batch = collate([_sample(rng, 3, 6) for _ in range(2)])
    loss = MultiStackLoss(LossConfig(heatmap="focal"))
    out = _random_output(3, 6, 2, 0)
    terms = slot_stack_terms(out, loss._check(out, batch), loss.cfg)
    assert len(terms) == 6 and calls == []
