"""aehg.group's default "layout" method: tag, confidence and a person's layout, strong
detections first, merges (docs/design.md §4), on hand-made cases built against each mechanism
and against the greedy method."""

from __future__ import annotations

import numpy as np
import pytest
from test_grouping import STANDING, peak_maps, render_people

from aehg.decoding import group, grouping
from aehg.decoding.grouping import refine_instances

SIZE = 128


def person_maps(people: list[tuple[tuple[float, float], float, float, list[float] | range]],
                size: int = SIZE) -> tuple[np.ndarray, np.ndarray, dict]:
    """Heatmaps (17, H, W) and tags (17, H, W) of standing people.

    Each person is (centre x, y; height in pixels; tag; its parts). A part is a Gaussian of
    σ = 2 with peak 1 at ``centre + height · STANDING[part]``; the tag map holds the person's
    tag where its Gaussian is above 1e-3 and 50 elsewhere.

    Returns:
        heat, tags, and {(person, part): (x, y)}.
    """
    yy, xx = np.mgrid[0:size, 0:size]
    heat = np.zeros((17, size, size), np.float32)
    tags = np.full((17, size, size), 50.0, np.float32)
    where = {}
    for i, (centre, height, tag, parts) in enumerate(people):
        for j in parts:
            x, y = np.asarray(centre) + height * STANDING[j]
            g = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)
            heat[j] = np.maximum(heat[j], g)
            tags[j][g > 1e-3] = tag
            where[i, j] = (x, y)
    return heat, tags, where


def f32(x) -> np.ndarray:
    return np.asarray(x, np.float32)


def parts_of(inst) -> list[list[int]]:
    """The present parts of each instance, sorted by first part."""
    return sorted(np.flatnonzero(kp[:, 2] > 0).tolist() for kp in inst.keypoints)


# --------------------------------------------------------------------------- layout


UPPER, LOWER = range(0, 11), range(11, 17)


@pytest.mark.parametrize("part_order", [None, list(range(16, -1, -1))])
@pytest.mark.parametrize("gap", [0.3, 0.6, 0.9])
def test_close_tags_far_bodies_are_two_people(gap, part_order):
    # A head and arms on the left (tag 0) and a pair of legs 60 px to the right (tag `gap`,
    # closer than tag_threshold = 1): the greedy method gives the legs to the only instance
    # that lacks them, in either part order; the layout refuses them where they lie.
    heat, tags, where = person_maps([((30.37, 40.23), 60.0, 0.0, UPPER),
                                     ((95.13, 70.41), 60.0, gap, LOWER)])
    greedy = group(heat, tags, refine=False, method="greedy", part_order=part_order)
    assert parts_of(greedy) == [list(range(17))]
    layout = group(heat, tags, refine=False, part_order=part_order)
    assert parts_of(layout) == [list(UPPER), list(LOWER)]
    for kp in layout.keypoints:
        person = 0 if kp[0, 2] > 0 else 1
        for j in np.flatnonzero(kp[:, 2] > 0):
            assert np.abs(kp[j, :2] - where[person, j]).max() <= 0.5
    # The spatial cost is what separates them: without it the tags alone decide.
    alone = group(heat, tags, refine=False, spatial_weight=0.0, part_order=part_order)
    assert parts_of(alone) == [list(range(17))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crowd_where_every_candidate_has_three_instances_within_tau(seed):
    # 12 people overlapping on a 4 × 3 grid, tags 1 apart in a random order and τ = 1.5: each
    # candidate is within τ of its own person and of the two with the next tags, so every
    # step after the first goes through the assignment of conflicting pairs. Reference: the
    # rendered parts, each decoded part must be one of its own person's.
    rng = np.random.default_rng(seed)
    tags = rng.permutation(12).astype(float)
    people = [((20 + 30 * (i % 4) + rng.uniform(-3, 3), 24 + 40 * (i // 4) + rng.uniform(-3, 3)),
               44.0, tags[i], range(17)) for i in range(12)]
    heat, tag_maps, where = person_maps(people)
    inst = group(heat, tag_maps, tag_threshold=1.5, refine=False)
    assert len(inst) == 12
    truth = np.array([[where[i, j] for j in range(17)] for i in range(12)])  # (12, 17, 2)
    for kp in inst.keypoints:
        assert (kp[:, 2] > 0).all()
        d = np.linalg.norm(kp[None, :, :2] - truth, axis=2)  # (12, 17)
        owner = d.argmin(0)
        assert d.min(0).max() < 1.0 and (owner == owner[0]).all()


def test_weak_peaks_far_away_do_not_seed_a_person():
    # A person without a nose (tag 0.2) and a weak nose peak far away with the same tag. In
    # one tier the weak nose seeds the instance that the person's parts then join; strong
    # detections first, the person is grouped before the weak nose is looked at.
    heat, tags, where = person_maps([((60.37, 60.23), 70.0, 0.2, range(1, 17))])
    heat[0, 110, 12] = 0.15
    tags[0, 110, 12] = 0.2
    layout = group(heat, tags, refine=False)
    assert parts_of(layout) == [[0], list(range(1, 17))]
    person = layout.keypoints[int(np.argmax(layout.keypoints[:, 1, 2]))]
    np.testing.assert_array_equal(person[0], [0, 0, 0])
    one_tier = group(heat, tags, refine=False, strong_ratio=0.0)
    assert [0] not in parts_of(one_tier)  # the weak nose is in the person's instance


def test_merge_rejoins_a_part_whose_tag_is_off():
    # The left eye's tag (1.05) is beyond tag_threshold from the nose that seeds the person
    # (0.0), so it starts an instance of its own; every other part (0.5) joins the nose. The
    # two instances have disjoint parts, mean tags 0.47 and 1.05 (< merge_ratio · τ = 0.8
    # apart) and a plausible union: one person.
    heat, tags, _ = person_maps([((60.37, 60.23), 70.0, 0.5, range(17))])
    for part, tag in ((0, 0.0), (1, 1.05)):
        tags[part][tags[part] != 50.0] = tag
    assert parts_of(group(heat, tags, refine=False)) == [list(range(17))]
    assert parts_of(group(heat, tags, refine=False, merge_ratio=0.0)) == [[0] + list(
        range(2, 17)), [1]]


# --------------------------------------------------------------------------- the cost


def test_confidence_separates_close_tags():
    # One instance (part 0, tag 0.0) and two strong part-1 candidates: tag 0.2 with heat 0.5,
    # tag -0.3 with heat 0.95. The greedy method takes the closer tag; the layout's cost
    # (d/τ)² + 0.5 · (1 − heat · instance heat) is 0.04 + 0.275 against 0.09 + 0.0725, so the
    # confident one joins, as round(d)·100 − heat of the reference decoders has it (both
    # distances round to 0), while a clearly closer tag still wins (next case).
    heat, tags = peak_maps(32, 2, 1, [(0, 5, 5, 0.9, [0.0]),
                                      (1, 5, 25, 0.5, [0.2]), (1, 25, 25, 0.95, [-0.3])])
    greedy = group(heat, tags, refine=False, adjust=False, method="greedy")
    layout = group(heat, tags, refine=False, adjust=False)
    np.testing.assert_array_equal(greedy.keypoints[0], f32([[5, 5, 0.9], [5, 25, 0.5]]))
    np.testing.assert_array_equal(layout.keypoints[0], f32([[5, 5, 0.9], [25, 25, 0.95]]))
    np.testing.assert_array_equal(layout.keypoints[1], f32([[0, 0, 0], [5, 25, 0.5]]))
    # Without the confidence term the closer tag joins, as in the greedy method.
    plain = group(heat, tags, refine=False, adjust=False, confidence_weight=0.0)
    np.testing.assert_array_equal(plain.keypoints[0], f32([[5, 5, 0.9], [5, 25, 0.5]]))
    # Tag 0.05 against -0.6: 0.0025 + 0.275 against 0.36 + 0.0725: the tag wins.
    heat, tags = peak_maps(32, 2, 1, [(0, 5, 5, 0.9, [0.0]),
                                      (1, 5, 25, 0.5, [0.05]), (1, 25, 25, 0.95, [-0.6])])
    layout = group(heat, tags, refine=False, adjust=False)
    np.testing.assert_array_equal(layout.keypoints[0], f32([[5, 5, 0.9], [5, 25, 0.5]]))


# --------------------------------------------------------------------------- determinism


def noisy_crowd(seed: int, n: int = 12, tag_noise: float = 0.3, heat_noise: float = 0.03):
    """render_people with noisy tags and heatmap noise: many conflicts and weak peaks."""
    rng = np.random.default_rng(seed)
    heat, tags, *_ = render_people(rng, n, 17, 1, tag_noise=tag_noise)
    heat = np.maximum(heat + rng.normal(0, heat_noise, heat.shape), 0).astype(np.float32)
    return heat, tags[:, 0]


def test_deterministic_and_batched_equals_per_image():
    images = [noisy_crowd(seed) for seed in range(3)]
    heat = np.stack([h for h, _ in images])
    tags = np.stack([t for _, t in images])
    first = group(heat, tags)
    again = group(heat, tags)
    for a, b, (h, t) in zip(first, again, images, strict=True):
        single = group(h, t)
        for field in ("keypoints", "scores", "tags"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            np.testing.assert_array_equal(getattr(a, field), getattr(single, field))
    assert all(len(a) > 12 for a in first)  # noise peaks make instances of their own


# --------------------------------------------------------------------------- refine_instances


@pytest.mark.parametrize("method", ["layout", "greedy"])
def test_refine_instances_is_groups_refinement(method):
    rng = np.random.default_rng(21)
    amp = np.where(rng.random((8, 17)) < 0.3, 0.05, 1.0)
    amp[:, 0] = 1.0
    heat, tags, *_ = render_people(rng, 8, 17, 2, amplitude=amp)
    plain = group(heat, tags, refine=False, method=method)
    before = plain.keypoints.copy()
    assert (before[:, :, 2] == 0).sum() > 10
    refined = refine_instances(plain, heat, tags)
    np.testing.assert_array_equal(refined.keypoints, group(heat, tags, method=method).keypoints)
    np.testing.assert_array_equal(plain.keypoints, before)  # the input is not changed
    with pytest.raises(ValueError, match=r"instances: expected C = 17 parts and E = 1 tag dims "
                                         r"like the maps, got 17 and 2"):
        refine_instances(plain, heat, tags[:, :1])
    with pytest.raises(ValueError, match=r"heatmaps: expected one image \(C, H, W\)"):
        refine_instances(plain, heat[None], tags[None])


# --------------------------------------------------------------------------- step internals


def test_dirty_flag_is_set_whenever_a_row_is_dirty(monkeypatch):
    # Full steps skip the dirty-row checks of the scale statistics while _Groups.maybe_dirty is
    # False, so it must never be False while a row is dirty. Reference: the dirty array itself,
    # at every full step, on inputs where clear steps (rows left dirty) come before full ones
    # (weak tiers, noise peaks, held duplicates, verify's re-matching).
    checked = []
    spatial = grouping._Groups.spatial

    def checking(self, part, rows, cand):
        dirty = bool(self.dirty[:self.m].any())
        assert self.maybe_dirty or not dirty
        checked.append(dirty)
        return spatial(self, part, rows, cand)

    monkeypatch.setattr(grouping._Groups, "spatial", checking)
    for seed in range(4):
        rng = np.random.default_rng(40 + seed)
        amp = np.where(rng.random((9, 17)) < 0.3, 0.3, 1.0)  # weak parts: a second tier
        heat, tags, *_ = render_people(rng, 9, 17, 1 + seed % 2, amplitude=amp, tag_noise=0.2)
        heat = np.clip(heat + rng.normal(0, 0.04, heat.shape), 0, 1).astype(np.float32)
        group(heat, tags[:, 0] if seed % 2 == 0 else tags)
    assert True in checked and False in checked  # both cases were exercised
