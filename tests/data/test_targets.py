"""Targets: hand-computed Gaussians, a naive dense reference, index lists, links, boxes, stats."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aehg.data.targets import TargetStats, build_targets, gaussian_radius


def _naive_heatmaps(points, num_channels, height, width, sigma):
    """Dense reference: max over points of exp(-d²/2σ²) inside the (2r+1)² patch."""
    r = gaussian_radius(sigma)
    out = np.zeros((num_channels, height, width))
    for ch, px, py in points:
        for y in range(height):
            for x in range(width):
                if abs(x - px) <= r and abs(y - py) <= r:
                    v = math.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * sigma * sigma))
                    out[ch, y, x] = max(out[ch, y, x], v)
    return out


def test_hand_computed_gaussian():
    sigma = 2.0
    parts = np.array([[[10.0, 12.0, 1.0]]])
    t, stats = build_targets(parts, (32, 40), sigma=sigma)
    hm = t["heatmaps"][0]
    assert hm.shape == (32, 40) and hm.dtype == np.float32
    assert hm[12, 10] == 1.0
    assert hm.max() == 1.0
    one = math.exp(-1.0 / (2 * sigma**2))
    for y, x in [(12, 11), (12, 9), (11, 10), (13, 10)]:
        assert hm[y, x] == pytest.approx(one, rel=1e-6)
    assert hm[13, 11] == pytest.approx(math.exp(-2.0 / (2 * sigma**2)), rel=1e-6)
    r = gaussian_radius(sigma)
    assert hm[12, 10 + r] > 0 and hm[12, 10 + r + 1] == 0
    # Nothing lost; one instance with one visible part.
    assert stats == TargetStats(instances=1, parts=1)


def test_rounding_half_up_and_subpixel():
    parts = np.array([[[10.4, 3.5, 1.0], [2.6, 7.49, 2.0]]])
    t, _ = build_targets(parts, (16, 16), sigma=1.0)
    assert t["heatmaps"][0, 4, 10] == 1.0
    assert t["heatmaps"][1, 7, 3] == 1.0
    assert t["parts"][0, 0].tolist() == [0 * 256 + 4 * 16 + 10, 1]
    assert t["parts"][0, 1].tolist() == [1 * 256 + 7 * 16 + 3, 1]


def test_matches_naive_dense_reference():
    rng = np.random.default_rng(0)
    n, c, h, w, sigma = 6, 3, 20, 24, 1.5
    parts = np.concatenate([rng.uniform(-3, 27, size=(n, c, 2)),
                            rng.integers(0, 3, size=(n, c, 1))], axis=-1)
    t, stats = build_targets(parts, (h, w), sigma=sigma, max_instances=4)
    points = []
    outside = 0
    usable = []
    for i in range(n):
        for ch in range(c):
            x, y, v = parts[i, ch]
            if v <= 0:
                continue
            px, py = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            if 0 <= px < w and 0 <= py < h:
                points.append((ch, px, py))
                usable.append(i)
            else:
                outside += 1
    np.testing.assert_allclose(t["heatmaps"], _naive_heatmaps(points, c, h, w, sigma),
                               rtol=1e-6, atol=1e-7)
    assert stats.parts_outside == outside > 0
    assert stats.parts == len(points) + outside
    assert stats.instances == len(set(usable))
    assert stats.instances_dropped == len({i for i in usable if i >= 4})


def test_max_combined_not_summed():
    parts = np.array([[[5.0, 5.0, 1.0]], [[7.0, 5.0, 1.0]]])
    t, _ = build_targets(parts, (12, 12), sigma=2.0)
    hm = t["heatmaps"][0]
    assert hm[5, 6] == pytest.approx(math.exp(-1 / 8), rel=1e-6)
    assert hm[5, 5] == 1.0 and hm[5, 7] == 1.0


def test_part_rows_flat_index_and_visibility():
    h, w = 8, 10
    parts = np.array([
        [[1.0, 2.0, 1.0], [3.0, 4.0, 0.0], [9.0, 7.0, 2.0]],
        [[-1.0, 2.0, 1.0], [12.0, 1.0, 1.0], [0.0, 0.0, 1.0]],
    ])
    t, stats = build_targets(parts, (h, w), max_instances=3)
    rows = t["parts"]
    assert rows.shape == (3, 3, 2) and rows.dtype == np.int64
    assert rows[0].tolist() == [[0 * 80 + 2 * w + 1, 1], [0, 0], [2 * 80 + 7 * w + 9, 1]]
    assert rows[1].tolist() == [[0, 0], [0, 0], [2 * 80, 1]]
    assert rows[2].tolist() == [[0, 0]] * 3
    # 2 + 3 visible parts, 2 of them (instance 1's first two) outside; both instances usable.
    assert stats == TargetStats(parts_outside=2, instances=2, parts=5)

    shared, _ = build_targets(parts, (h, w), max_instances=3, tag_per_class=False)
    assert shared["parts"][0].tolist() == [[2 * w + 1, 1], [0, 0], [7 * w + 9, 1]]


def test_instance_overflow_is_counted_and_still_drawn():
    parts = np.zeros((5, 1, 3))
    parts[:, 0] = [[1, 1, 1], [3, 3, 1], [5, 5, 1], [7, 7, 1], [9, 9, 0]]
    t, stats = build_targets(parts, (12, 12), max_instances=2)
    assert t["parts"].shape == (2, 1, 2)
    assert t["parts"][:, 0, 0].tolist() == [13, 39]
    # instances 2 and 3 have a visible part; instance 4 has none and is not counted
    assert stats.instances_dropped == 2
    assert stats == TargetStats(instances_dropped=2, instances=4, parts=4)
    assert t["heatmaps"][0, 7, 7] == 1.0


def test_mask_copied_and_checked():
    m = np.zeros((6, 7))
    m[2:4, 1:3] = 1
    t, _ = build_targets(np.zeros((0, 2, 3)), (6, 7), mask=m)
    assert t["mask"].dtype == np.float32
    np.testing.assert_array_equal(t["mask"], m)
    m[0, 0] = 5
    assert t["mask"][0, 0] == 0
    t, _ = build_targets(np.zeros((0, 2, 3)), (6, 7))
    assert (t["mask"] == 1).all() and (t["heatmaps"] == 0).all() and (t["parts"] == 0).all()
    with pytest.raises(ValueError, match=r"mask: expected shape \(6, 7\), got \(7, 6\)"):
        build_targets(np.zeros((0, 2, 3)), (6, 7), mask=np.ones((7, 6)))


def test_links_midpoint_lists_and_drops():
    h, w = 20, 30
    parts = np.zeros((4, 2, 3))
    parts[0] = [[2, 2, 1], [4, 4, 1]]      # centre (3, 3)
    parts[1] = [[10, 6, 1], [0, 0, 0]]     # centre (10, 6)
    parts[2] = [[0, 0, 0], [0, 0, 0]]      # no visible part
    parts[3] = [[20, 10, 1], [21, 10, 1]]  # centre (20.5, 10), beyond max_instances=3
    links = np.array([[0, 1, 1], [1, 0, 0], [0, 2, 0], [0, 3, 1], [0, 7, 0], [-1, 0, 0],
                      [1, 1, 0]])
    t, stats = build_targets(parts, (h, w), links=links, num_link_classes=2, max_instances=3,
                             max_links=2, sigma=1.0)
    # midpoint of (3, 3) and (10, 6) = (6.5, 4.5) floored -> (6, 4)
    rows = t["links"]
    assert rows.shape == (2, 5) and rows.dtype == np.int64
    assert rows.tolist() == [[4 * w + 6, 0, 1, 1, 1], [4 * w + 6, 1, 0, 0, 1]]
    # listed: links 0, 1 (and 6, beyond max_links=2); all others dropped
    assert stats.links_dropped == 5
    lh = t["link_heatmaps"]
    assert lh.shape == (2, h, w)
    assert lh[1, 4, 6] == 1.0 and lh[0, 4, 6] == 1.0
    # a link to the dropped instance 3 is still drawn: midpoint (11.75, 6.5) -> (11, 6)
    assert lh[1, 6, 11] == 1.0
    # the self-link of instance 1 (beyond max_links) is drawn at its centre
    assert lh[0, 6, 10] == 1.0
    assert stats.instances_dropped == 1
    # Instances 0, 1, 3 have visible parts (2 + 1 + 2), instance 2 none; 7 links given.
    assert stats == TargetStats(instances_dropped=1, links_dropped=5, instances=3, parts=5,
                                links=7)


def test_links_use_box_centres():
    parts = np.zeros((2, 3, 3))
    parts[0, 1] = [5, 5, 1]
    parts[1, 2] = [15, 9, 1]
    boxes = np.array([[2.0, 2.0, 8.0, 8.0], [12.0, 6.0, 18.0, 12.0]])
    t, stats = build_targets(parts, (16, 20), boxes=boxes, links=np.array([[1, 0, 2]]),
                             num_link_classes=3, tag_per_class=False)
    # box centres (5, 5) and (15, 9): midpoint (10, 7)
    assert t["links"][0].tolist() == [7 * 20 + 10, 1, 0, 2, 1]
    assert t["box_index"][:3].tolist() == [[5 * 20 + 5, 1], [9 * 20 + 15, 1], [0, 0]]
    np.testing.assert_allclose(t["box_size"][:2], [[6, 6], [6, 6]])
    assert t["parts"][1, 2].tolist() == [9 * 20 + 15, 1]
    assert stats == TargetStats(instances=2, parts=2, links=1)


def test_box_centre_outside_is_invalid():
    boxes = np.array([[-10.0, 0.0, -4.0, 4.0], [1.0, 1.0, 3.5, 2.0]])
    t, stats = build_targets(np.zeros((2, 1, 3)), (8, 8), boxes=boxes)
    assert t["box_index"][:2].tolist() == [[0, 0], [2 * 8 + 2, 1]]
    np.testing.assert_allclose(t["box_size"][:2], [[0, 0], [2.5, 1.0]])
    # No visible part: only the box centre inside the map makes instance 1 count.
    assert stats == TargetStats(instances=1)


def test_no_link_keys_without_link_classes():
    t, _ = build_targets(np.zeros((1, 1, 3)), (4, 4))
    assert set(t) == {"heatmaps", "mask", "parts"}
    t, _ = build_targets(np.zeros((1, 1, 3)), (4, 4), num_link_classes=2)
    assert t["links"].shape == (64, 5) and (t["links"] == 0).all()
    assert t["link_heatmaps"].shape == (2, 4, 4)


@pytest.mark.parametrize("kwargs, message", [
    ({"parts": np.zeros((2, 3))}, r"parts: expected an array of shape"),
    ({"parts": np.zeros((1, 2, 2))}, r"parts: expected an array of shape"),
    ({"parts": np.array([[[np.nan, 1.0, 1.0]]])}, r"parts: visible parts must have finite"),
    ({"output_size": (0, 4)}, r"output_size"),
    ({"sigma": 0.0}, r"sigma"),
    ({"mask": np.ones((3, 3))}, r"mask: expected shape \(8, 8\)"),
    ({"boxes": np.zeros((2, 4))}, r"boxes: expected 1 rows"),
    ({"boxes": np.array([[4.0, 0, 2, 3]])}, r"boxes: row 0 has x2 < x1"),
    ({"links": np.array([[0, 0, 0]])}, r"num_link_classes is 0"),
    ({"links": np.array([[0, 0, 3]]), "num_link_classes": 3}, r"link class must be in \[0, 3\)"),
])
def test_errors(kwargs, message):
    args = {"parts": np.array([[[1.0, 1.0, 1.0]]]), "output_size": (8, 8)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_targets(args.pop("parts"), args.pop("output_size"), **args)


def test_stats_add_and_dict():
    a = TargetStats(1, 2, 3)
    b = TargetStats(instances_dropped=4, parts_outside=0, links_dropped=1)
    assert (a + b).as_dict() == {"instances_dropped": 5, "parts_outside": 2,
                                 "links_dropped": 4, "instances": 0, "parts": 0, "links": 0}
    assert sum([a, b], TargetStats()) == a + b
    c = TargetStats(1, 2, 3, instances=10, parts=20, links=30)
    assert (c + c).as_dict() == {"instances_dropped": 2, "parts_outside": 4,
                                 "links_dropped": 6, "instances": 20, "parts": 40, "links": 60}
