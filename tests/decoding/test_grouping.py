"""aehg.group / aehg.decode_objects / aehg.Instances against rendered synthetic maps, brute force
and naive reference implementations written here."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

import aehg
import aehg.decoding.grouping as grouping
import aehg.decoding.peaks as peaks
from aehg.decoding import COCO_PART_ORDER, Instances, decode_objects, group
from aehg.decoding.grouping import METHODS, _assign

# --------------------------------------------------------------------------- rendering


def _lattice_tags(rng: np.random.Generator, n: int, e: int, spacing: float = 1.5) -> np.ndarray:
    """n distinct points of a lattice with the given spacing in E dimensions (min distance =
    spacing)."""
    side = max(2, math.ceil(n ** (1.0 / e)))
    if side ** e > 1_000_000:
        side = 2
    idx = rng.choice(side ** e, n, replace=False)
    return np.stack(np.unravel_index(idx, (side,) * e), 1).astype(np.float64) * spacing


# A standing person facing the camera, COCO's 17 parts, x and y in units of its height, centred.
STANDING = np.array([
    (0.0, 0.06), (0.02, 0.045), (-0.02, 0.045), (0.045, 0.055), (-0.045, 0.055),
    (0.11, 0.18), (-0.11, 0.18), (0.15, 0.36), (-0.15, 0.36), (0.16, 0.52), (-0.16, 0.52),
    (0.07, 0.53), (-0.07, 0.53), (0.075, 0.75), (-0.075, 0.75), (0.08, 0.96), (-0.08, 0.96),
]) - (0.0, 0.5)


def render_people(rng: np.random.Generator, n: int, c: int, e: int, size: int = 128,
                  sigma: float = 1.5, amplitude: np.ndarray | None = None,
                  tag_noise: float = 0.05):
    """Well-separated people: every part channel has the n people's parts at least ~8 px apart.

    With C = 17 the parts follow COCO's layout (``STANDING``, 0.8 cell high, jittered by 3 %
    of the cell), so that COCO's pose prior finds them plausible; for other C they lie anywhere
    in the middle half of the person's cell. Part positions have a sub-pixel offset of
    0.05..0.4 px on each axis (so the quarter-pixel adjustment lands within 0.25 px). Around
    each part (radius 5, nearest part wins) the tag map holds the person's tag (plus small
    noise); elsewhere it holds far random values.

    Returns:
        heat (C, H, W), tags (C, E, H, W), positions (n, C, 2) x, y, person tags (n, E).
    """
    g = max(1, math.ceil(math.sqrt(n)))
    step = size / g
    cells = rng.permutation(g * g)[:n]
    centre = np.stack([(cells % g + 0.5) * step, (cells // g + 0.5) * step], 1)
    if c == 17:
        offset = 0.8 * STANDING[None] + rng.uniform(-0.03, 0.03, (n, c, 2))
    else:
        offset = rng.uniform(-0.25, 0.25, (n, c, 2))
    base = np.rint(centre[:, None] + offset * step)
    base = np.clip(base, 1, size - 2)
    delta = rng.uniform(0.05, 0.4, (n, c, 2)) * rng.choice([-1.0, 1.0], (n, c, 2))
    pos = base + delta
    ptags = _lattice_tags(rng, n, e) + rng.normal(0, 1, e)
    if amplitude is None:
        amplitude = np.ones((n, c))
    heat = np.zeros((c, size, size), np.float32)
    tags = (rng.normal(0, 5, (c, e, size, size)) + 50).astype(np.float32)
    owner_dist = np.full((c, size, size), np.inf)
    r = 6
    for i, j in itertools.product(range(n), range(c)):  # rendering only
        x0, y0 = int(base[i, j, 0]), int(base[i, j, 1])
        ys, xs = np.mgrid[max(0, y0 - r):min(size, y0 + r + 1),
                          max(0, x0 - r):min(size, x0 + r + 1)]
        d2 = (xs - pos[i, j, 0]) ** 2 + (ys - pos[i, j, 1]) ** 2
        g_ = amplitude[i, j] * np.exp(-d2 / (2 * sigma ** 2))
        heat[j, ys, xs] = np.maximum(heat[j, ys, xs], g_)
        near = (d2 <= 25) & (d2 < owner_dist[j, ys, xs])
        owner_dist[j, ys[near], xs[near]] = d2[near]
        noise = rng.normal(0, tag_noise, (e, int(near.sum())))
        tags[j][:, ys[near], xs[near]] = ptags[i][:, None] + noise
    return heat, tags, pos, ptags


def match_people(inst: Instances, ptags: np.ndarray) -> np.ndarray:
    """Person index of each instance (nearest person tag)."""
    d = np.linalg.norm(inst.tags[:, None, :].astype(np.float64) - ptags[None], axis=-1)
    return d.argmin(1)


def peak_maps(size: int, c: int, e: int, peaks) -> tuple[np.ndarray, np.ndarray]:
    """Single-pixel peaks: (part, x, y, score, tag vector)."""
    heat = np.zeros((c, size, size), np.float32)
    tags = np.full((c, e, size, size), 100.0, np.float32)
    for part, x, y, score, tag in peaks:
        heat[part, y, x] = score
        tags[part, :, y, x] = tag
    return heat, tags


# --------------------------------------------------------------------------- synthetic people


CASES = [(n, c, e) for n in (1, 10, 30, 45) for c in (5, 17, 21) for e in (1, 2, 8)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n,c,e", CASES)
def test_recovers_well_separated_people(n, c, e, method):
    rng = np.random.default_rng(1000 * n + 10 * c + e)
    heat, tags, pos, ptags = render_people(rng, n, c, e)
    maps = tags[:, 0] if e == 1 else tags
    inst = group(heat, maps, max_instances=50, top_k=50, method=method)
    assert len(inst) == n
    assert inst.keypoints.shape == (n, c, 3) and inst.tags.shape == (n, e)
    who = match_people(inst, ptags)
    assert sorted(who.tolist()) == list(range(n))  # one instance per person
    assert (inst.keypoints[:, :, 2] > 0.5).all()  # every part found
    err = np.abs(inst.keypoints[:, :, :2] - pos[who]).max()
    assert err <= 0.25  # and in the right instance (same-part neighbours are >= 8 px away)
    assert np.all(np.diff(inst.scores) <= 0)
    np.testing.assert_allclose(inst.scores, inst.keypoints[:, :, 2].mean(1), rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_crowd_beyond_30_is_not_capped_while_matching(method):
    rng = np.random.default_rng(7)
    heat, tags, pos, ptags = render_people(rng, 45, 17, 1)
    inst = group(heat, tags[:, 0], top_k=50, max_instances=None, method=method)
    assert len(inst) == 45
    # The default max_instances keeps the 30 best of the same 45 complete people.
    assert len(group(heat, tags[:, 0], top_k=50, method=method)) == 30


@pytest.mark.parametrize("method", METHODS)
def test_max_instances_keeps_the_best_scores(method):
    rng = np.random.default_rng(3)
    amp = np.repeat(np.linspace(1.0, 0.4, 8)[:, None], 5, 1)
    heat, tags, pos, ptags = render_people(rng, 8, 5, 1, amplitude=amp)
    inst = group(heat, tags[:, 0], max_instances=3, refine=False, method=method)
    assert len(inst) == 3
    assert sorted(match_people(inst, ptags).tolist()) == [0, 1, 2]
    assert len(group(heat, tags[:, 0], max_instances=0, method=method)) == 0


# --------------------------------------------------------------------------- matching


def _key(dist, tau, rows, cols):
    """(sum of d - tau over the pairs, -sum of the candidates' score ranks K - k)."""
    k = dist.shape[1]
    return (float(sum(dist[r, c] - tau for r, c in zip(rows, cols, strict=True))),
            -sum(k - c for c in cols))


def _brute_force(dist, tau):
    m, k = dist.shape
    best = None
    for choice in itertools.product(range(-1, m), repeat=k):
        used = [x for x in choice if x >= 0]
        if len(used) != len(set(used)):
            continue
        pairs = [(x, col) for col, x in enumerate(choice) if x >= 0]
        if any(dist[x, col] >= tau for x, col in pairs):
            continue
        key = _key(dist, tau, [p[0] for p in pairs], [p[1] for p in pairs])
        if best is None or key < best:
            best = key
    return best


@pytest.mark.parametrize("seed", range(60))
def test_assignment_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    m, k = rng.integers(1, 5, 2)
    tau = float(rng.choice([0.5, 1.0, 1.5]))
    if seed % 2:
        dist = rng.integers(0, 13, (m, k)) / 8.0  # many exact ties
    else:
        dist = rng.uniform(0, 2, (m, k))
    rows, cols = _assign(dist, tau)
    assert len(set(rows.tolist())) == rows.size and len(set(cols.tolist())) == cols.size
    assert (dist[rows, cols] < tau).all()
    assert _key(dist, tau, rows, cols) == _brute_force(dist, tau)


def test_greedy_tag_distance_decides_not_the_score():
    # method="greedy": two people seeded by part 0 (tags 0.0 and 0.45); part 1 candidates are
    # nearest to them by tag (0.02, 0.44) but their scores favour the crossed assignment; with
    # the reference decoders' round(d) * 100 - score cost all four distances round to 0 and the
    # score decides. (The layout method's cost weighs both: tests/decoding/
    # test_grouping_layout.py::test_confidence_separates_close_tags.)
    heat, tags = peak_maps(32, 2, 1, [
        (0, 5, 5, 0.9, [0.0]), (0, 25, 5, 0.9, [0.45]),
        (1, 5, 25, 0.3, [0.44]), (1, 25, 25, 0.95, [0.02]),
    ])
    inst = group(heat, tags, refine=False, adjust=False, method="greedy")
    assert len(inst) == 2
    for person in inst:
        tag0 = tags[0, 0, int(person.keypoints[0, 0, 1]), int(person.keypoints[0, 0, 0])]
        tag1 = tags[1, 0, int(person.keypoints[0, 1, 1]), int(person.keypoints[0, 1, 0])]
        assert abs(tag0 - tag1) < 0.05


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("flip", [False, True])
def test_score_breaks_exact_tag_ties(flip, method):
    # Two part-1 candidates with the same tag distance to the one instance: the higher
    # score joins, whatever the pixel order; the other starts an instance of its own.
    strong, weak = ((20, 20), (5, 5)) if flip else ((5, 5), (20, 20))
    heat, tags = peak_maps(32, 2, 1, [
        (0, 12, 12, 0.9, [0.0]),
        (1, *strong, 0.75, [0.3]), (1, *weak, 0.375, [0.3]),
    ])
    inst = group(heat, tags, refine=False, adjust=False, method=method)
    assert len(inst) == 2
    np.testing.assert_array_equal(inst.keypoints[0, 1], [*strong, 0.75])
    np.testing.assert_array_equal(inst.keypoints[1], [[0, 0, 0], [*weak, 0.375]])


def test_greedy_part_order_decides_which_parts_seed():
    # Tags 0.0 (part 0), 0.9 (part 1), 1.7 (part 2): in the order 0, 1, 2 parts 0 and 1 form
    # one instance (mean 0.45, part 2 is 1.25 away); in the order 2, 1, 0 parts 2 and 1 do.
    heat, tags = peak_maps(16, 3, 1, [(0, 2, 2, 0.9, [0.0]), (1, 8, 8, 0.8, [0.9]),
                                      (2, 13, 13, 0.7, [1.7])])
    forward = group(heat, tags, refine=False, method="greedy")
    backward = group(heat, tags, refine=False, part_order=[2, 1, 0], method="greedy")
    assert sorted((kp[:, 2] > 0).tolist() for kp in forward.keypoints) == \
        [[False, False, True], [True, True, False]]
    assert sorted((kp[:, 2] > 0).tolist() for kp in backward.keypoints) == \
        [[False, True, True], [True, False, False]]


def test_default_part_order():
    np.testing.assert_array_equal(grouping._part_order(None, 17), COCO_PART_ORDER)
    assert COCO_PART_ORDER[:9] == (0, 1, 2, 3, 4, 5, 6, 11, 12)  # face, shoulders, hips first
    np.testing.assert_array_equal(grouping._part_order(None, 5), range(5))
    for bad in ([0, 1, 2, 3], [0, 0, 1, 2, 3], [1, 2, 3, 4, 5], [0.0, 1, 2, 3, 4]):
        with pytest.raises(ValueError, match="part_order"):
            grouping._part_order(bad, 5)


# --------------------------------------------------------------------------- adjust, refine


def test_quarter_pixel_adjustment():
    heat = np.zeros((1, 7, 7), np.float32)
    heat[0, 3, 3] = 1.0
    heat[0, 3, 4] = 0.5   # right neighbour higher → x + 0.25
    heat[0, 2, 3] = 0.25  # upper neighbour higher → y - 0.25
    tags = np.zeros((1, 7, 7), np.float32)
    kp = group(heat, tags, nms_kernel=3).keypoints
    np.testing.assert_allclose(kp[0, 0], [3.25, 2.75, 1.0])
    np.testing.assert_allclose(group(heat, tags, adjust=False).keypoints[0, 0], [3, 3, 1])
    # Equal neighbours: no shift; at the border the result is clamped into the map.
    heat = np.zeros((1, 5, 5), np.float32)
    heat[0, 0, 2] = 1.0
    heat[0, 1, 2] = 0.5
    kp = group(heat, np.zeros((1, 5, 5)), nms_kernel=3).keypoints
    np.testing.assert_allclose(kp[0, 0], [2.0, 0.0, 1.0])  # -0.25 clamped to 0
    heat = np.zeros((1, 5, 5), np.float32)
    heat[0, 4, 0] = 1.0
    heat[0, 3, 0] = 0.5
    heat[0, 4, 1] = 0.25
    kp = group(heat, np.zeros((1, 5, 5)), nms_kernel=3).keypoints
    np.testing.assert_allclose(kp[0, 0], [0.0, 4.0, 1.0])  # -0.25 and 4.25 clamped
    heat[0, 4, 0] = 0.2  # an inner neighbour is now higher: refine-style moves inwards
    kp = peaks.subpixel(heat, np.array([0]), np.array([4 * 5 + 0]), True)
    np.testing.assert_allclose(np.concatenate(kp), [0.25, 3.75])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("e", [1, 2])
def test_refine_recovers_weak_parts(e, method):
    rng = np.random.default_rng(11 + e)
    n, c = 12, 17
    amp = np.where(rng.random((n, c)) < 0.25, 0.05, 1.0)
    amp[:, 0] = 1.0  # every person keeps a detectable part
    heat, tags, pos, ptags = render_people(rng, n, c, e, amplitude=amp)
    maps = tags[:, 0] if e == 1 else tags
    plain = group(heat, maps, refine=False, method=method)
    refined = group(heat, maps, method=method)
    assert len(plain) == len(refined) == n
    weak = amp < 0.1
    who = match_people(plain, ptags)
    np.testing.assert_array_equal(plain.keypoints[:, :, 2] == 0, weak[who])
    np.testing.assert_array_equal(match_people(refined, ptags), who)
    assert (refined.keypoints[:, :, 2] > 0).all()
    assert np.abs(refined.keypoints[:, :, :2] - pos[who]).max() <= 0.25
    filled = refined.keypoints[:, :, 2][weak[who]]
    assert ((filled > 0.03) & (filled <= 0.05)).all()
    # Present parts, scores and tags do not change.
    present = ~weak[who]
    np.testing.assert_array_equal(refined.keypoints[present], plain.keypoints[present])
    np.testing.assert_array_equal(refined.scores, plain.scores)
    np.testing.assert_array_equal(refined.tags, plain.tags)


def _naive_refine(inst: Instances, heat: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """Pixel (x, y, heat) per instance and missing part, by a loop over every pixel."""
    c, h, w = heat.shape
    out = inst.keypoints.copy()
    for i, part in zip(*np.nonzero(inst.keypoints[:, :, 2] == 0), strict=True):
        t = tags[part if tags.shape[0] == c else 0]
        m = inst.tags[i]
        best, arg = -np.inf, None
        for y, x in itertools.product(range(h), range(w)):
            d = np.sqrt(np.sum((t[:, y, x] - m) ** 2, dtype=np.float32), dtype=np.float32)
            v = heat[part, y, x] - np.round(d)
            if v > best:
                best, arg = v, (x, y)
        x, y = arg
        if heat[part, y, x] > 0:
            out[i, part] = (x, y, heat[part, y, x])
    return out


@pytest.mark.parametrize("seed", range(6))
def test_refine_equals_naive_loop(seed):
    rng = np.random.default_rng(seed)
    c, e, h, w = 4, int(rng.integers(1, 4)), 9, 11
    heat = rng.uniform(-0.2, 1.0, (c, h, w)).astype(np.float32)
    tags = rng.normal(0, 2, (c if seed % 2 else 1, e, h, w)).astype(np.float32)
    plain = group(heat, tags, refine=False, adjust=False, detection_threshold=0.6,
                  tag_threshold=1.5, nms_kernel=3)
    refined = group(heat, tags, adjust=False, detection_threshold=0.6, tag_threshold=1.5,
                    nms_kernel=3)
    assert (plain.keypoints[:, :, 2] == 0).any()
    np.testing.assert_array_equal(refined.keypoints, _naive_refine(plain, heat, tags))


# --------------------------------------------------------------------------- objects


def render_objects(rng: np.random.Generator, n: int, c: int, e: int, size: int = 64,
                   shared: bool = True):
    """Objects at well-separated integer centres: heat peak 0.5..1, tags, box sizes."""
    g = math.ceil(math.sqrt(n))
    step = size / g
    cells = rng.permutation(g * g)[:n]
    cx = np.rint((cells % g + 0.5) * step).astype(int)
    cy = np.rint((cells // g + 0.5) * step).astype(int)
    labels = rng.integers(0, c, n)
    scores = rng.uniform(0.5, 1.0, n).astype(np.float32)
    otags = _lattice_tags(rng, n, e, spacing=2.0)
    wh = rng.uniform(1, 20, (n, 2)).astype(np.float32)
    heat = np.zeros((c, size, size), np.float32)
    tags = rng.normal(0, 5, (1 if shared else c, e, size, size)).astype(np.float32)
    sizes = np.zeros((2, size, size), np.float32)
    for i in range(n):
        heat[labels[i], cy[i], cx[i]] = scores[i]
        heat[labels[i], cy[i], cx[i] + 1] = scores[i] / 2  # centre at + 0.25
        tags[0 if shared else labels[i], :, cy[i], cx[i]] = otags[i]
        sizes[:, cy[i], cx[i]] = wh[i]
    centre = np.stack([cx + 0.25, cy], 1)
    boxes = np.concatenate([centre - wh / 2, centre + wh / 2], 1)
    return heat, tags, sizes, dict(labels=labels, scores=scores, tags=otags, centre=centre,
                                   boxes=boxes)


@pytest.mark.parametrize("shared", [True, False])
def test_decode_objects(shared):
    rng = np.random.default_rng(5)
    heat, tags, sizes, gt = render_objects(rng, 20, 6, 8, shared=shared)
    objs = decode_objects(heat, tags, sizes)
    order = np.argsort(-gt["scores"], kind="stable")
    assert len(objs) == 20
    np.testing.assert_array_equal(objs.labels, gt["labels"][order])
    np.testing.assert_allclose(objs.scores, gt["scores"][order])
    np.testing.assert_allclose(objs.tags, gt["tags"][order], atol=1e-5)
    np.testing.assert_allclose(objs.boxes, gt["boxes"][order], atol=1e-5)
    kp = objs.keypoints
    assert kp.shape == (20, 6, 3)
    np.testing.assert_allclose(kp[np.arange(20), objs.labels, :2], gt["centre"][order])
    assert ((kp[:, :, 2] > 0).sum(1) == 1).all()
    # top_k counts objects over all classes; without sizes there are no boxes.
    few = decode_objects(heat, tags, top_k=5)
    assert few.boxes is None and len(few) == 5
    np.testing.assert_array_equal(few.labels, objs.labels[:5])


def test_decode_objects_batched_and_negative_sizes():
    rng = np.random.default_rng(6)
    a = render_objects(rng, 5, 3, 2)
    b = render_objects(rng, 7, 3, 2)
    heat, tags, sizes = (np.stack([x, y]) for x, y in zip(a[:3], b[:3], strict=True))
    sizes[1] *= -1
    out = decode_objects(heat, tags, sizes)
    assert [len(o) for o in out] == [5, 7]
    single = decode_objects(a[0], a[1], a[2])
    np.testing.assert_array_equal(out[0].boxes, single.boxes)
    np.testing.assert_array_equal(out[1].boxes[:, :2], out[1].boxes[:, 2:])  # size 0


# --------------------------------------------------------------------------- Instances


def test_instances_transform_and_to_image():
    kp = np.array([[[4.0, 2.0, 0.9], [0.0, 0.0, 0.0]]], np.float32)
    inst = Instances(kp, np.array([0.45]), np.array([[1.5]]), np.array([1]),
                     np.array([[1.0, 1.0, 3.0, 2.0]]))
    m = np.array([[2.0, 0.0, 1.0], [0.0, 4.0, -1.0]])
    out = inst.transform(m)
    np.testing.assert_allclose(out.keypoints, [[[9.0, 7.0, 0.9], [0.0, 0.0, 0.0]]])
    np.testing.assert_allclose(out.boxes, [[3.0, 3.0, 7.0, 7.0]])
    back = out.to_image(m)
    np.testing.assert_allclose(back.keypoints, kp, atol=1e-6)
    np.testing.assert_allclose(back.boxes, inst.boxes, atol=1e-6)
    assert back.labels.tolist() == [1] and back.tags.tolist() == [[1.5]]
    # A 90° rotation: the box becomes the bounds of its rotated corners.
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
    np.testing.assert_allclose(inst.transform(rot).boxes, [[-2.0, 1.0, -1.0, 3.0]])
    with pytest.raises(ValueError, match="singular"):
        inst.to_image(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2×3"):
        inst.transform(np.eye(3))


def test_instances_validation_and_indexing():
    inst = Instances.empty(17, 2)
    assert len(inst) == 0 and inst.num_parts == 17 and inst.embedding_dim == 2
    with pytest.raises(ValueError, match=r"Instances.scores: expected shape \(1,\)"):
        Instances(np.zeros((1, 3, 3)), np.zeros(2), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="Instances.keypoints"):
        Instances(np.zeros((1, 3, 2)), np.zeros(1), np.zeros((1, 1)))
    rng = np.random.default_rng(0)
    heat, tags, *_ = render_people(rng, 4, 5, 1)
    people = group(heat, tags[:, 0])
    one = people[1]
    assert len(one) == 1 and one.keypoints[0].tolist() == people.keypoints[1].tolist()
    assert len(people[people.scores > 10]) == 0


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_per_image_and_torch_inputs(method):
    rng = np.random.default_rng(2)
    imgs = [render_people(rng, n, 17, 2) for n in (3, 0, 9)]
    heat = np.stack([i[0] for i in imgs])
    tags = np.stack([i[1] for i in imgs])
    batched = group(heat, tags, method=method)
    assert isinstance(batched, list) and [len(b) for b in batched] == [3, 0, 9]
    for b, (h, t, *_) in zip(batched, imgs, strict=True):
        single = group(h, t, method=method)
        for field in ("keypoints", "scores", "tags"):
            np.testing.assert_array_equal(getattr(b, field), getattr(single, field))
    from_torch = group(torch.from_numpy(heat).double(), torch.from_numpy(tags), method=method)
    for a, b in zip(from_torch, batched, strict=True):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
    # The model layout with one tag map shared by all parts (B, 1, E, H, W) works too.
    shared = tags[:, :1].copy()
    for j in range(17):
        near = np.broadcast_to((heat[:, j] > 0.01)[:, None, None], shared.shape)
        shared[near] = np.broadcast_to(tags[:, j:j + 1], shared.shape)[near]
    out = group(heat, shared, method=method)
    for a, b in zip(out, batched, strict=True):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


def _force_device_path(monkeypatch):
    """Make the decoders take their torch (accelerator) path for CPU tensors."""
    import aehg.decoding.objects as objects

    for module in (peaks, objects):
        monkeypatch.setattr(module, "device_of", lambda x: torch.device("cpu"))


def test_device_path_matches_numpy_path(monkeypatch):
    """The torch path (used for tensors on accelerators) gives the numpy path's results."""
    rng = np.random.default_rng(4)
    heat, tags, *_ = render_people(rng, 6, 17, 1, size=48)
    heat += rng.uniform(0, 0.3, heat.shape).astype(np.float32)  # many noise peaks
    ref_people = group(heat, tags, top_k=10)
    obj = render_objects(rng, 9, 4, 3)
    ref_objs = decode_objects(*obj[:3], top_k=6)
    _force_device_path(monkeypatch)
    people = group(torch.from_numpy(heat), torch.from_numpy(tags), top_k=10)
    objs = decode_objects(*(torch.from_numpy(x) for x in obj[:3]), top_k=6)
    for a, b in ((people, ref_people), (objs, ref_objs)):
        for field in ("keypoints", "scores", "tags", "labels", "boxes"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("heat_shape,tag_shape,match", [
    ((17, 8, 8, 1, 1), (17, 8, 8), r"heatmaps: expected shape \(C, H, W\) or \(B, C, H, W\)"),
    ((8, 8), (8, 8), r"heatmaps: expected shape"),
    ((17, 8, 8), (17, 8, 9), r"tags: expected shape \(C, H, W\) \(E = 1\) or \(C, E, H, W\)"),
    ((17, 8, 8), (5, 8, 8), r"tags: expected shape .* matching heatmaps \(17, 8, 8\)"),
    ((17, 8, 8), (17, 2, 2, 8, 8), r"tags: expected shape"),
    ((2, 17, 8, 8), (3, 17, 8, 8), r"tags: expected shape \(B, C, H, W\)"),
    ((0, 8, 8), (0, 8, 8), r"heatmaps: expected shape .* non-empty"),
])
def test_bad_shapes_raise(heat_shape, tag_shape, match):
    with pytest.raises(ValueError, match=match):
        group(np.zeros(heat_shape), np.zeros(tag_shape))


@pytest.mark.parametrize("which,value", [("heatmaps", np.nan), ("tags", np.inf),
                                         ("heatmaps", -np.inf), ("tags", 1e300)])
def test_non_finite_values_raise(which, value):
    heat, tags = np.zeros((3, 6, 6)), np.zeros((3, 2, 6, 6))
    {"heatmaps": heat, "tags": tags}[which].flat[7] = value
    with pytest.raises(ValueError, match=f"{which}: contains NaN or infinite values"):
        group(heat, tags)
    with pytest.raises(ValueError, match=f"{which}: contains NaN"):
        decode_objects(heat, tags)
    with pytest.raises(ValueError, match="sizes: contains NaN"):
        decode_objects(np.zeros((3, 6, 6)), np.zeros((1, 2, 6, 6)),
                       np.full((2, 6, 6), np.nan))


@pytest.mark.parametrize("kwargs,match", [
    (dict(nms_kernel=4), "nms_kernel: expected an odd"), (dict(nms_kernel=0), "nms_kernel"),
    (dict(top_k=0), "top_k"), (dict(detection_threshold=-0.1), "detection_threshold"),
    (dict(detection_threshold=float("nan")), "detection_threshold"),
    (dict(tag_threshold=0.0), "tag_threshold"), (dict(tag_threshold=float("inf")),
                                                 "tag_threshold"),
    (dict(max_instances=-1), "max_instances"), (dict(top_k=2.5), "top_k"),
    (dict(method="hungarian"), "method: expected one of 'layout', 'greedy', got 'hungarian'"),
    (dict(spatial_weight=-0.1), "spatial_weight"), (dict(confidence_weight=None),
                                                    "confidence_weight"),
    (dict(strong_ratio=1.5), r"strong_ratio: expected a number in \[0, 1\], got 1.5"),
    (dict(hold_duplicates="yes"), "hold_duplicates: expected a bool, got 'yes'"),
    (dict(merge_ratio=float("nan")), "merge_ratio"),
    (dict(pose_prior="mpii"), "pose_prior: expected a PosePrior, 'auto', 'coco' or 'flat', "
                              "got 'mpii'"),
    (dict(pose_prior="coco"), "pose_prior: 'coco' describes 17 parts, the heatmaps have C = 3"),
])
def test_bad_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        group(np.zeros((3, 6, 6)), np.zeros((3, 6, 6)), **kwargs)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match=r"sizes: expected shape \(2, H, W\)"):
        decode_objects(np.zeros((3, 6, 6)), np.zeros((3, 6, 6)), np.zeros((2, 6, 5)))
    with pytest.raises(ValueError, match=r"sizes: expected shape \(B, 2, H, W\)"):
        decode_objects(np.zeros((1, 3, 6, 6)), np.zeros((1, 3, 6, 6)), np.zeros((2, 6, 6)))


def test_exported_from_package():
    assert aehg.group is group and aehg.decode_objects is decode_objects
    assert aehg.Instances is Instances


def test_peaks_match_scipy_maximum_filter():
    rng = np.random.default_rng(9)
    for _ in range(50):
        c, h, w = rng.integers(1, 4), rng.integers(1, 15), rng.integers(1, 15)
        k = int(rng.choice([1, 3, 5, 7]))
        x = rng.random((c, h, w)).astype(np.float32)
        if rng.random() < 0.5:
            x = np.round(x * 3).astype(np.float32)  # plateaus
        flat, vals = peaks._nms_peaks_numpy(x, k, 0.2)
        ref = ndimage.maximum_filter(x, size=(1, k, k), mode="constant", cval=-np.inf)
        np.testing.assert_array_equal(flat, np.flatnonzero((ref == x) & (x > 0.2)))
        np.testing.assert_array_equal(vals, x.reshape(-1)[flat])


def test_peaks_match_scipy_maximum_filter_on_large_maps():
    # Maps large enough for OpenCV to split the in-place dilation into stripes (on threads).
    rng = np.random.default_rng(10)
    for k in (3, 5, 7):
        x = np.round(rng.random((9, 150, 170)) * 4).astype(np.float32)  # many plateaus
        flat, _ = peaks._nms_peaks_numpy(x, k, 0.2)
        ref = ndimage.maximum_filter(x, size=(1, k, k), mode="constant", cval=-np.inf)
        np.testing.assert_array_equal(flat, np.flatnonzero((ref == x) & (x > 0.2)))


def test_refine_in_chunks_equals_one_pass(monkeypatch):
    rng = np.random.default_rng(12)
    amp = np.where(rng.random((12, 17)) < 0.3, 0.05, 1.0)
    amp[:, 0] = 1.0
    heat, tags, *_ = render_people(rng, 12, 17, 2, size=64, amplitude=amp)
    whole = group(heat, tags)
    monkeypatch.setattr(grouping, "_REFINE_CHUNK", 2 * 64 * 64)  # two instances per pass
    chunked = group(heat, tags)
    np.testing.assert_array_equal(chunked.keypoints, whole.keypoints)


def test_device_path_on_small_random_maps(monkeypatch):
    rng = np.random.default_rng(13)
    cases = []
    for _ in range(40):
        c, e, h, w = (int(v) for v in rng.integers(1, 7, 4))
        kw = dict(nms_kernel=int(rng.choice([1, 3, 5])), top_k=int(rng.integers(1, 5)),
                  detection_threshold=float(rng.uniform(0, 0.8)))
        cases.append((rng.random((c, h, w), np.float32),
                      rng.normal(0, 1, (c, e, h, w)).astype(np.float32), kw))
    ref = [(group(hm, tg, **kw), decode_objects(hm, tg, **kw)) for hm, tg, kw in cases]
    _force_device_path(monkeypatch)
    for (hm, tg, kw), (people, objs) in zip(cases, ref, strict=True):
        hm_t, tg_t = torch.from_numpy(hm), torch.from_numpy(tg)
        np.testing.assert_array_equal(group(hm_t, tg_t, **kw).keypoints, people.keypoints)
        np.testing.assert_array_equal(decode_objects(hm_t, tg_t, **kw).keypoints, objs.keypoints)


def test_empty_batch():
    assert group(np.zeros((0, 17, 8, 8)), np.zeros((0, 17, 8, 8))) == []
    assert decode_objects(np.zeros((0, 3, 8, 8)), np.zeros((0, 1, 2, 8, 8))) == []
